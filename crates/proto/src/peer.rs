//! Messages on a direct link between two clients, after the handshake.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::WireEnum;

/// A message id: a ULID, so ids are unique without coordination and sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh id for a message created now.
    pub fn new() -> Self {
        Self(ulid::Ulid::new().to_bytes())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", ulid::Ulid::from_bytes(self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(ulid::Ulid::from_string(s)?.to_bytes()))
    }
}

/// Client ↔ client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PeerMessage {
    /// A text message; the receiver answers [`PeerMessage::Ack`] once it has it.
    Text {
        /// Unique id, chosen by the sender.
        id: MessageId,
        /// Sender's clock, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// At most [`crate::MAX_TEXT_LEN`] bytes.
        text: String,
    },
    /// The receiver has the message with this id (or, answering [`PeerMessage::Read`], the read
    /// receipt for it).
    Ack {
        /// The acknowledged message.
        id: MessageId,
    },
    /// The user has seen the message with this id. Answered with [`PeerMessage::Ack`].
    Read {
        /// The message that was read.
        id: MessageId,
    },
}

impl WireEnum for PeerMessage {
    const KNOWN_VARIANTS: u32 = 3;
}
