//! The whatsap2p client core, shared by every user interface (menu, JSON lines, later a TUI).
//!
//! A [`Client`] owns a profile (identity keys, contacts, pinned keys), a session with the directory
//! server, a listener for peers and the direct links to them. A UI calls its methods and reads its
//! [`Event`]s; nothing here prints.
//!
//! # Layout
//! Each subsystem owns its state behind a handle with methods; [`Client`] composes them, and none
//! reaches into another's fields.
//! - [`client`]: [`Client`], which starts, composes and stops the subsystems; [`event`]: the
//!   [`Event`]s a user interface shows; [`config`]: [`ClientConfig`] and its [`Timeouts`].
//! - [`profile`]: the profile folder, its lock and the identity keys.
//! - [`store`]: the SQLite database, split by what it stores (contacts and pins, messages and the
//!   outbox, files, groups), with a reading connection for the conversation list and history pages.
//! - [`directory`]: the session with the directory server (register, lookups, heartbeats,
//!   reconnection); `presence`: what it last pushed about each watched number.
//! - [`transport`]: the byte streams links run over (TCP, QUIC on our UDP socket, the relay);
//!   [`handshake`]: the handshake steps (hello, identity proofs) for peers and the directory.
//! - `reach`: how peers reach us: the UDP socket, probes and our NAT's kind, our candidates,
//!   punches.
//! - [`link`]: one live link per peer: dialing (every path raced), accepting, reading and writing,
//!   its [`Path`] and the move from the relay to a direct path; what arrives goes to its owner
//!   through `inbound` (texts to `inbox`, receipts to the outbox, files, groups).
//! - [`outbox`]: messages and receipts waiting for their recipient, and the per-peer couriers.
//! - [`transfer`]: files over the peer link, both directions: offer, accept, chunks under flow
//!   control, verify, resume; `partial`: the file a transfer is received into.
//! - `shown`: texts stored but not yet shown to the user, shown again after a crash.
//! - [`groups`]: group conversations: signed membership, fan-out on live links and the outbox.
//! - `requests`: message requests: who may reach the user, and what strangers sent, held.
//! - [`display`]: text from peers made safe for a terminal.
//! - [`error`]: the error type, [`ClientError`]; `clock`: the wall clock the store records.

#![forbid(unsafe_code)]

pub mod client;
mod clock;
pub mod config;
pub mod directory;
pub mod display;
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
mod reach;
mod requests;
mod shown;
pub mod store;
pub mod transfer;
pub mod transport;

pub use client::{Client, ClientStats};
pub use config::{ClientConfig, StorageLimits, Timeouts};
pub use error::ClientError;
pub use event::{ContactStatus, Event, Presence, SendOutcome};
pub use groups::{Change, Group};
pub use link::{reason_text, Path};
pub use reach::describe as describe_nat;
pub use store::{
    Chat, ChatItem, Contact, Conversation, FileRecord, FileState, MessageState, Request, RequestItem,
    StoredFile, StoredMessage,
};
pub use whatsap2p_proto::group::{GroupId, GroupState};
pub use whatsap2p_proto::nat::{NatKind, RelayReason, Transport};
pub use whatsap2p_proto::peer::FileFailCode;
pub use whatsap2p_proto::{MessageId, Number, PublicKey};
