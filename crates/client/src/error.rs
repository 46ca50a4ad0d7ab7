//! Errors of the client core, each saying what a user can act on.

use std::net::SocketAddr;

use whatsap2p_link::LinkError;
use whatsap2p_proto::directory::CloseCode;
use whatsap2p_proto::{Number, PublicKey};

/// Errors of the client core.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The profile folder is unusable.
    #[error("profile {path}: {source}")]
    Profile {
        /// The path involved.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Another process uses this profile.
    #[error("profile {0} is in use by another whatsap2p process")]
    ProfileLocked(std::path::PathBuf),
    /// The profile database failed.
    #[error("profile database: {0}")]
    Store(#[from] rusqlite::Error),
    /// The identity file is damaged.
    #[error("identity file {0} is damaged (expected 64 bytes)")]
    BadIdentity(std::path::PathBuf),
    /// The directory server presented a key other than the one pinned for it.
    #[error(
        "SERVER KEY CHANGED for {server}: pinned {pinned}, presented {presented}. Refusing to connect: \
         this may be an impostor. If the server really changed its key, remove it from the profile's pins."
    )]
    ServerKeyChanged {
        /// The server address.
        server: String,
        /// The pinned key.
        pinned: PublicKey,
        /// What it presented.
        presented: PublicKey,
    },
    /// The addresses given for the directory are pinned to different keys: they are not the
    /// addresses of one directory.
    #[error(
        "the directory addresses given are pinned to different server keys ({pins}): they are not one \
         directory. Give the addresses of one directory only."
    )]
    NotOneDirectory {
        /// Each address with its pinned key.
        pins: String,
    },
    /// The directory cannot be reached, and this profile never reached it: nothing says it is the
    /// right address, so the client does not wait for it.
    #[error(
        "cannot reach the directory ({reason}). This profile has never been registered with it, so \
         whatsap2p does not wait for it: check the address, and that the server runs, and start again."
    )]
    NeverReached {
        /// What each attempt met.
        reason: String,
    },
    /// A version 2 directory refused this client, in words only (for example: the number belongs
    /// to another key).
    #[error("the directory refused us: {0}")]
    Refused(String),
    /// The directory ended the session with a code, which says what to do.
    #[error("{}", closed_text(number, *code, reason))]
    Closed {
        /// Our number.
        number: Number,
        /// Why, for the client to act on.
        code: CloseCode,
        /// Why, in the directory's words.
        reason: String,
    },
    /// The directory session is down.
    #[error("not connected to the directory")]
    NotConnected,
    /// The directory answered with an error.
    #[error("directory: {0}")]
    Directory(String),
    /// The user is not online.
    #[error("{0} is offline")]
    Offline(Number),
    /// Nobody ever registered the number.
    #[error("{0} is not a whatsap2p user")]
    UnknownNumber(Number),
    /// A contact's key differs from the one pinned at first contact.
    #[error(
        "KEY CHANGED for {number}: pinned {pinned}, now {presented}. Refusing: this may be an impostor. \
         If {number} really has a new key, remove and re-add the contact."
    )]
    KeyChanged {
        /// The contact.
        number: Number,
        /// Pinned key.
        pinned: PublicKey,
        /// Key presented now.
        presented: PublicKey,
    },
    /// A peer did not prove it is who the directory says.
    #[error("peer at {addr} is not {number}: {reason}")]
    PeerIdentity {
        /// Who we expected.
        number: Number,
        /// Where we connected.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The other side speaks no protocol version we do: one of the two must upgrade.
    #[error("{context}: {source}")]
    Version {
        /// Who: "directory 10.0.0.1:7000", "456 at 10.0.0.2:40000".
        context: String,
        /// Both sides' versions.
        source: whatsap2p_proto::version::NoCommonVersion,
    },
    /// A peer's hello asks for something we do not serve (a directory session, say).
    #[error("peer {addr} sent an unsupported hello {hello}")]
    UnsupportedHello {
        /// Where it connected from.
        addr: SocketAddr,
        /// What it sent, for people.
        hello: String,
    },
    /// A message could not be written to a peer: the link is gone (it is redialed when needed).
    #[error("sending to {peer}: {source}")]
    LinkLost {
        /// The peer.
        peer: Number,
        /// What happened to the link.
        source: crate::link::WriteError,
    },
    /// No message or file with this id in that conversation.
    #[error("no message {0} in this conversation")]
    UnknownMessage(whatsap2p_proto::MessageId),
    /// The text is too long for one message.
    #[error("message of {0} bytes is over the {max} byte limit", max = whatsap2p_proto::MAX_TEXT_LEN)]
    TextTooLong(usize),
    /// You cannot message yourself.
    #[error("that is your own number")]
    OwnNumber,
    /// An operation did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The link to a peer or the directory failed.
    #[error("{context}: {source}")]
    Link {
        /// What was being done.
        context: String,
        /// The link error.
        source: LinkError,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A group operation is not possible.
    #[error("{0}")]
    Group(String),
    /// The client is shutting down.
    #[error("client is shutting down")]
    ShuttingDown,
}

/// What a user is told when the directory ends a session for `code`. Built from the code, not
/// from the directory's words (those come only with a code this version does not know).
fn closed_text(number: &Number, code: CloseCode, reason: &str) -> String {
    match code {
        CloseCode::NumberTaken => format!(
            "the directory refused us: number {number} is registered to another key. A directory binds \
             a number to the identity key of the profile that registered it first, and this profile has \
             another key (a new profile makes a new key). If {number} is yours, start whatsap2p with the \
             profile that registered it (--profile DIR); otherwise choose another number."
        ),
        CloseCode::Replaced => format!(
            "another copy of this profile connected to the directory as {number}; this one stopped \
             talking to the directory (it does not reconnect, so the two do not take the number from \
             each other in turn). Messages go to the other copy; quit this one."
        ),
        CloseCode::StoreUnavailable => {
            "the directory cannot record our session right now (its store is unreachable)".to_owned()
        }
        CloseCode::Shutdown => "this instance of the directory is shutting down".to_owned(),
        _ => format!("the directory closed the session (code {}): {reason}", code.code()),
    }
}

impl ClientError {
    pub(crate) fn link(context: impl Into<String>) -> impl FnOnce(LinkError) -> Self {
        let context = context.into();
        move |source| Self::Link { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
