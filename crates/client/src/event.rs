//! What a client tells its user interface: [`Event`]s, and the answers of some of its methods.

use std::net::SocketAddr;
use std::path::PathBuf;

use whatsap2p_proto::group::GroupId;
use whatsap2p_proto::peer::FileFailCode;
use whatsap2p_proto::{MessageId, Number, PublicKey};

use crate::groups::Group;
use crate::link::Path;
use crate::store::RequestItem;

/// Something the user should see.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message arrived.
    Message {
        /// Its id.
        id: MessageId,
        /// The sender (its key was checked).
        from: Number,
        /// The text.
        text: String,
        /// The sender's clock at sending.
        sent_at_ms: u64,
        /// The group it was sent to, if any.
        group: Option<GroupId>,
    },
    /// A group was created with us in it, or changed (we may have been removed: `left`).
    Group(Group),
    /// The recipient confirmed it has the message.
    Delivered {
        /// The message.
        id: MessageId,
        /// The recipient.
        to: Number,
    },
    /// The recipient holds the message (or file, or one member's copy of a group message) as a
    /// message request: we are not its contact. It is delivered once the recipient accepts.
    Pending {
        /// The message or file.
        id: MessageId,
        /// The recipient.
        to: Number,
    },
    /// Someone who is not a contact sent something, held as a message request until the user
    /// accepts, ignores or blocks the number.
    Request {
        /// The number (for a text to the group of a held invitation: the one who invited us).
        from: Number,
        /// What it sent.
        item: RequestItem,
    },
    /// A queued message (or one member's copy of a group message) is being written to the recipient.
    Sent {
        /// The message.
        id: MessageId,
        /// The recipient.
        to: Number,
        /// The group, for a group message.
        group: Option<GroupId>,
    },
    /// The recipient has seen the message.
    Read {
        /// The message.
        id: MessageId,
        /// Who read it.
        by: Number,
    },
    /// A message will never be delivered (the recipient's key changed, say); it stays in history.
    Failed {
        /// The message.
        id: MessageId,
        /// The recipient.
        to: Number,
        /// Why.
        reason: String,
    },
    /// A watched number (a contact, or someone we wrote to) came online or went offline.
    Presence {
        /// Who.
        number: Number,
        /// Where it listens, if online.
        online: Option<SocketAddr>,
    },
    /// The link to a peer now goes another way (the first link, a move from the relay to a direct
    /// path, …).
    Path {
        /// The peer.
        number: Number,
        /// Which way the link goes now.
        path: Path,
    },
    /// A security-relevant refusal nobody asked about (a peer with the wrong key, say).
    Warning {
        /// What happened.
        message: String,
    },
    /// The directory session ended unexpectedly and no address of the directory took the client
    /// back at once (or, first, the client started while its directory was unreachable); the
    /// client keeps trying by itself, with backoff.
    DirectoryLost {
        /// Why.
        reason: String,
    },
    /// The directory session is back: after [`Event::DirectoryLost`], or at once on another
    /// address of the directory after the session was lost.
    Reconnected,
    /// Another copy of this profile registered with the directory (the number's one session is
    /// now the other copy's): this client stopped talking to the directory and does not
    /// reconnect (it would take the number back, and the two would take it from each other for
    /// ever). Peers can no longer find it; existing links go on until idle.
    Replaced {
        /// What happened, for people.
        message: String,
    },
    /// Bytes of a file on its way (at most a few reports per second): for an outgoing file, what
    /// the receiver has written; for an incoming one, what we have written.
    Progress {
        /// The transfer.
        id: MessageId,
        /// The other side.
        peer: Number,
        /// True when we are sending.
        outgoing: bool,
        /// Bytes confirmed so far.
        bytes: u64,
        /// The file's size.
        total: u64,
    },
    /// A file is on its way to us: an offer was accepted (again, for each attempt after an
    /// interruption). [`Event::Progress`] follows, then [`Event::FileReceived`] or
    /// [`Event::FileFailed`].
    FileIncoming {
        /// The transfer.
        id: MessageId,
        /// The sender.
        from: Number,
        /// The name offered, made safe (the saved file may get a number added).
        name: String,
        /// Size in bytes.
        size: u64,
        /// Media type the sender announced.
        media_type: String,
        /// Where this attempt starts (non-zero when it resumes).
        resumed_from: u64,
    },
    /// The receiver verified and kept a file we sent.
    FileSent {
        /// The transfer.
        id: MessageId,
        /// The receiver.
        to: Number,
        /// Where the last attempt started (non-zero when it resumed).
        resumed_from: u64,
    },
    /// A file arrived, verified, and was saved.
    FileReceived {
        /// The transfer.
        id: MessageId,
        /// The sender.
        from: Number,
        /// The (safe) name it was saved under.
        name: String,
        /// Where it was saved.
        path: PathBuf,
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the content (verified).
        blake3: [u8; 32],
        /// Media type sniffed from the content (what the sender announced is not trusted).
        media_type: String,
        /// Width and height, when the content is an image.
        dimensions: Option<(u32, u32)>,
        /// Where the last attempt started (non-zero when it resumed).
        resumed_from: u64,
    },
    /// A file transfer failed for good (refused, wrong hash, cancelled, …), or an incoming attempt
    /// failed (the sender retries, unless `code` is final).
    FileFailed {
        /// The transfer.
        id: MessageId,
        /// The other side.
        peer: Number,
        /// True when we were sending.
        outgoing: bool,
        /// Why, for people.
        reason: String,
        /// Why, to act on, when the transfer's rules name it (none for a refused offer or a
        /// peer that cannot be reached; see [`FileFailCode::is_final`]).
        code: Option<FileFailCode>,
    },
}

/// What became of a sent message right away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Written to the recipient; a receipt follows.
    Sent,
    /// Kept in the outbox; delivered when the recipient is reachable.
    Queued {
        /// Why it could not go now.
        reason: String,
    },
}

/// A number's status as the directory sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// Who.
    pub number: Number,
    /// Where it listens, if online.
    pub online: Option<SocketAddr>,
    /// Its identity key, if it ever registered.
    pub key: Option<PublicKey>,
    /// Which way our live link to it goes, if we have one.
    pub path: Option<Path>,
}

/// A contact, its name and its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactStatus {
    /// Who.
    pub number: Number,
    /// Where it listens, if online.
    pub online: Option<SocketAddr>,
    /// Its pinned identity key, if any.
    pub key: Option<PublicKey>,
    /// The name the user gave it.
    pub name: Option<String>,
    /// Which way our live link to it goes, if we have one.
    pub path: Option<Path>,
}
