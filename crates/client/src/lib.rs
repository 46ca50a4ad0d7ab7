//! The whatsap2p client core, shared by every user interface (menu, JSON lines, later a TUI).
//!
//! A [`Client`] owns a profile (identity keys, contacts, pinned keys), a session with the directory
//! server, a listener for peers and the direct links to them. A UI calls its methods and reads its
//! [`Event`]s; nothing here prints.
//!
//! # Layout
//! - [`profile`]: the profile folder, its lock and the identity keys.
//! - [`store`]: contacts, pinned keys, history (with the outbox), files and groups in SQLite, and
//!   the conversation list and history pages a user interface reads.
//! - [`directory`]: the session with the directory server (register, lookups, heartbeats).
//! - [`peer`]: direct links: dialing, accepting, the identity checks on both sides, and the per-link
//!   task that sends, receives and acknowledges messages.
//! - [`outbox`]: messages and receipts waiting for their recipient, and the per-peer couriers.
//! - [`transfer`]: files over the peer link: offer, accept, chunks under flow control, verify, resume.
//! - `partial`: the file a transfer is received into: aligned writes, hashed as written.
//! - [`safe_name`]: file names from peers made safe for the downloads folder.
//! - [`groups`]: group conversations: signed membership, fan-out through the outbox.
//! - [`client`]: [`Client`], which ties them together, and [`Event`].
//! - [`error`]: the error type, [`ClientError`].

#![forbid(unsafe_code)]

pub mod client;
mod clock;
pub mod config;
pub mod directory;
pub mod error;
pub mod event;
pub mod groups;
pub mod handshake;
mod inbound;
mod inbox;
pub mod link;
pub mod outbox;
mod partial;
mod presence;
pub mod profile;
pub mod safe_name;
pub mod store;
pub mod transfer;
pub mod transport;

pub use client::{Client, ClientStats};
pub use config::{ClientConfig, Timeouts};
pub use error::ClientError;
pub use event::{ContactStatus, Event, Presence, SendOutcome};
pub use groups::{Change, Group};
pub use store::{
    Chat, ChatItem, Conversation, FileRecord, FileState, MessageState, StoredFile, StoredMessage,
};
pub use whatsap2p_proto::group::{GroupId, GroupState};
pub use whatsap2p_proto::{MessageId, Number, PublicKey};
