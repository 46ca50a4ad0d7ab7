//! Messages on a direct link between two clients, after the handshake.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::WireEnum;

/// A message id: a ULID, so ids are unique without coordination and sort by creation time. On the
/// wire the ULID's 128 bits as 16 raw bytes, big-endian; in text (and in test vectors) its
/// 26-character form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.collect_str(self);
        }
        crate::text::hex_array::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            return text.parse().map_err(serde::de::Error::custom);
        }
        crate::text::hex_array::deserialize(d).map(Self)
    }
}

/// Monotonic within this process: two ids made in the same millisecond still sort in creation order.
static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);

impl MessageId {
    /// A fresh id for a message created now, greater than every id this process made before.
    pub fn new() -> Self {
        let mut guard = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
        let generator = guard.get_or_insert_with(ulid::Generator::new);
        // The generator fails only after 2^80 ids in one millisecond.
        let ulid = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
        Self(ulid.to_bytes())
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
    /// The sender proposes a file. Answered with [`PeerMessage::FileAccept`] or
    /// [`PeerMessage::FileRefuse`].
    FileOffer {
        /// The transfer's id.
        id: MessageId,
        /// The file's name as the sender has it (the receiver makes it safe).
        name: String,
        /// Size in bytes.
        size: u64,
        /// Media type the sender detected, e.g. `image/jpeg`.
        media_type: String,
        /// BLAKE3 hash of the whole file.
        #[serde(with = "crate::text::hex_array")]
        blake3: [u8; 32],
    },
    /// Send from `offset` (what the receiver already holds from an earlier attempt).
    FileAccept {
        /// The transfer.
        id: MessageId,
        /// First byte wanted.
        offset: u64,
    },
    /// The receiver does not want the file.
    FileRefuse {
        /// The transfer.
        id: MessageId,
        /// Why, for people.
        reason: String,
    },
    /// Bytes `offset..offset + data.len()` of the file. Chunks come in order.
    FileChunk {
        /// The transfer.
        id: MessageId,
        /// Where `data` starts.
        offset: u64,
        /// At most [`FILE_CHUNK_LEN`] bytes.
        #[serde(with = "crate::text::hex_bytes")]
        data: Vec<u8>,
    },
    /// Flow control: the receiver has written this many bytes; the sender may run [`FILE_WINDOW`]
    /// bytes ahead of it.
    FileProgress {
        /// The transfer.
        id: MessageId,
        /// Bytes safely written so far.
        received: u64,
    },
    /// The receiver verified the hash and kept the file.
    FileReceived {
        /// The transfer.
        id: MessageId,
    },
    /// The transfer failed on the side that sends this; the partial file is kept for a resume only
    /// when the bytes so far can still be right.
    FileFailed {
        /// The transfer.
        id: MessageId,
        /// Why, for people.
        reason: String,
    },
    /// A text to a group, sent by a member to each other member.
    GroupText {
        /// The group.
        group: crate::group::GroupId,
        /// Unique id, chosen by the sender (the same for every member).
        id: MessageId,
        /// Sender's clock, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// At most [`crate::MAX_TEXT_LEN`] bytes.
        text: String,
    },
    /// A group's new membership, signed by whoever changed it. Answered with [`PeerMessage::Ack`].
    GroupUpdate {
        /// This delivery's id (for the acknowledgement).
        id: MessageId,
        /// The signed state.
        update: crate::group::SignedGroupState,
    },
    /// The transfer failed on the side that sends this, with a reason the other side acts on (see
    /// [`FileFailCode::is_final`]). Replaces [`PeerMessage::FileFailed`], which older peers send:
    /// a receiver takes that one as retryable whatever its text says.
    FileAbort {
        /// The transfer.
        id: MessageId,
        /// Why, for the other side to act on.
        code: FileFailCode,
        /// Why, for people.
        reason: String,
    },
    /// The receiver holds `id` (a [`PeerMessage::Text`], a [`PeerMessage::GroupText`], a
    /// [`PeerMessage::GroupUpdate`] inviting it, or a [`PeerMessage::FileOffer`]) as a message
    /// request: the sender is not its contact, and its user has not accepted it yet. The sender
    /// keeps the message as `pending` and writes it again only once told [`PeerMessage::Accepted`].
    /// The answer in place of `Ack` (for an offer: in place of `FileAccept`).
    Pending {
        /// The message, invitation or transfer held.
        id: MessageId,
    },
    /// The receiver's user accepted this side's request: write again everything held as
    /// `pending` for the receiver (texts, group changes, file offers). Answered with
    /// [`PeerMessage::Ack`].
    Accepted {
        /// This notice's id (for the acknowledgement).
        id: MessageId,
    },
}

/// Why a file transfer stopped, as [`PeerMessage::FileAbort`] carries it: one varint on the wire.
/// A code from a newer version decodes as [`FileFailCode::Unknown`] and is taken as retryable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileFailCode {
    /// 0. The bytes received do not hash to the offered hash: final.
    HashMismatch,
    /// 1. More bytes came than the offered size: final.
    TooManyBytes,
    /// 2. The file changed on the sender's disk since it was offered: final.
    SourceChanged,
    /// 3. The receiver already runs this transfer, or as many as it takes: retry later.
    Busy,
    /// 4. The other side made no progress for too long: retry.
    Stalled,
    /// 5. The receiver cannot write or place the file (a full disk, say): retry.
    Disk,
    /// 6. The link closed under the transfer: retry.
    LinkClosed,
    /// 7. The other side broke the transfer's rules (flow control, chunk order): retry.
    Protocol,
    /// 8. The sender gave up on this attempt: the receiver keeps what it has for a resume.
    SenderGaveUp,
    /// 9. A user cancelled the transfer, on the side that sends this: final. The receiver drops
    ///    what it has, and a receiver that cancelled refuses the file if it is offered again.
    Cancelled,
    /// A code this version does not know (the number on the wire).
    Unknown(u32),
}

impl FileFailCode {
    /// Whether retrying cannot help: the transfer is over for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::HashMismatch | Self::TooManyBytes | Self::SourceChanged | Self::Cancelled)
    }

    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            Self::HashMismatch => 0,
            Self::TooManyBytes => 1,
            Self::SourceChanged => 2,
            Self::Busy => 3,
            Self::Stalled => 4,
            Self::Disk => 5,
            Self::LinkClosed => 6,
            Self::Protocol => 7,
            Self::SenderGaveUp => 8,
            Self::Cancelled => 9,
            Self::Unknown(code) => code,
        }
    }

    /// The code a number on the wire stands for.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Self::HashMismatch,
            1 => Self::TooManyBytes,
            2 => Self::SourceChanged,
            3 => Self::Busy,
            4 => Self::Stalled,
            5 => Self::Disk,
            6 => Self::LinkClosed,
            7 => Self::Protocol,
            8 => Self::SenderGaveUp,
            9 => Self::Cancelled,
            other => Self::Unknown(other),
        }
    }
}

impl Serialize for FileFailCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.code())
    }
}

impl<'de> Deserialize<'de> for FileFailCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(Self::from_code)
    }
}

/// Largest file chunk: one chunk and its envelope fit in one frame.
pub const FILE_CHUNK_LEN: usize = 64 * 1024 - 1024;

/// How far (bytes) a sender may run ahead of what the receiver confirmed.
pub const FILE_WINDOW: u64 = 8 * 1024 * 1024;

/// Longest file name a sender may offer, in bytes.
pub const MAX_FILE_NAME_LEN: usize = 4096;

impl WireEnum for PeerMessage {
    const KNOWN_VARIANTS: u32 = 15;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_ids_made_in_a_burst_then_they_sort_in_creation_order() {
        let ids: Vec<MessageId> = (0..1000).map(|_| MessageId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let text = ids[0].to_string();
        assert_eq!(text.parse::<MessageId>().ok(), Some(ids[0]));
    }

    #[test]
    fn given_a_file_abort_then_its_bytes_are_kind_12_id_code_and_reason() {
        let id = MessageId([7; 16]);
        let m = PeerMessage::FileAbort { id, code: FileFailCode::Busy, reason: "busy".into() };
        let mut want = vec![12];
        want.extend_from_slice(&[7; 16]);
        want.extend_from_slice(&[3, 4]);
        want.extend_from_slice(b"busy");
        assert_eq!(crate::encode(&m).expect("encode"), want);
    }

    #[test]
    fn given_pending_and_accepted_then_their_bytes_are_kinds_13_and_14_and_the_id() {
        let id = MessageId([9; 16]);
        let mut want = vec![13];
        want.extend_from_slice(&[9; 16]);
        assert_eq!(crate::encode(&PeerMessage::Pending { id }).expect("encode"), want);
        want[0] = 14;
        assert_eq!(crate::encode(&PeerMessage::Accepted { id }).expect("encode"), want);
    }

    #[test]
    fn given_an_unknown_fail_code_then_it_decodes_as_unknown_retryable_and_encodes_back() {
        // Kind 12, the id, code 300 (varint ac 02), an empty reason.
        let mut bytes = vec![12];
        bytes.extend_from_slice(&[1; 16]);
        bytes.extend_from_slice(&[0xac, 0x02, 0]);
        let m: PeerMessage = crate::decode(&bytes).expect("decode");
        let PeerMessage::FileAbort { code, .. } = &m else { panic!("{m:?}") };
        assert_eq!(*code, FileFailCode::Unknown(300));
        assert!(!code.is_final());
        assert_eq!(crate::encode(&m).expect("encode"), bytes);
        for known in 0..10 {
            assert_eq!(FileFailCode::from_code(known).code(), known);
            assert!(!matches!(FileFailCode::from_code(known), FileFailCode::Unknown(_)));
        }
    }
}
