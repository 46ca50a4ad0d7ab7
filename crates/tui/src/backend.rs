//! What the terminal UI needs from a messenger: the [`Backend`] trait and the plain data it returns.
//!
//! The UI never calls a backend from its draw loop: `calls` runs each call on its own task and hands
//! the answer back as an `Outcome`. Everything a messenger decides (who is online, what was read,
//! how a message travels) stays behind this trait; the UI only asks and renders. Besides these calls
//! the UI reads the client core's stream of [`Event`](whatsap2p_client::Event)s.
//!
//! [`crate::client_backend`] implements it for the real [`whatsap2p_client::Client`]; the tests
//! implement it with a mock.

use std::future::Future;
use std::path::{Path, PathBuf};

use whatsap2p_client::{
    Change, ClientError, Group, GroupId, MessageId, MessageState, Number, Presence, PublicKey,
};

/// One conversation: with a number, or in a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chat {
    /// With one other user.
    Peer(Number),
    /// In a group.
    Group(GroupId),
}

/// How our link to a contact travels, where it is known (the NAT work fills it in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// A direct connection.
    Direct,
    /// Through a relay.
    Relayed,
}

/// Whether the other side of a conversation is online, as the directory last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Online {
    /// Online now.
    Yes,
    /// Offline.
    No,
    /// Not known yet (or a group, which has no single status).
    Unknown,
}

/// A line of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// Which conversation.
    pub chat: Chat,
    /// What to call it: the group's name, or the number.
    pub name: String,
    /// The other side's status (always [`Online::Unknown`] for a group).
    pub online: Online,
    /// How the link travels, where known.
    pub route: Option<Route>,
    /// Received messages not read yet.
    pub unread: u32,
    /// The most recent message, if any.
    pub last: Option<Entry>,
    /// When something last happened in it (ms since the Unix epoch; 0: never).
    pub last_activity_ms: u64,
    /// A group we left or were removed from.
    pub left: bool,
}

/// A file, sent or received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Its name (as offered, or as saved).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Sender: the file being sent. Receiver: where it was saved (empty until it is).
    pub path: PathBuf,
    /// Media type, e.g. `image/png`.
    pub media_type: String,
    /// Width and height, when known to be an image.
    pub dimensions: Option<(u32, u32)>,
}

impl FileInfo {
    /// Whether to draw it as a picture: an image with a place on disk (a file still on its way in,
    /// or one whose transfer was cancelled, has none).
    pub fn is_photo(&self) -> bool {
        !self.path.as_os_str().is_empty()
            && (self.dimensions.is_some() || self.media_type.starts_with("image/"))
    }
}

/// What a message holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A text.
    Text(String),
    /// A photo or another file.
    File(FileInfo),
}

/// One message of a conversation, as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its id.
    pub id: MessageId,
    /// Who wrote it; `None` for us.
    pub from: Option<Number>,
    /// When (ms since the Unix epoch): our clock when received, the sender's when we sent it.
    pub at_ms: u64,
    /// The text or file.
    pub body: Body,
    /// Where it stands (receipts for ours, read or not for theirs).
    pub state: MessageState,
}

/// Which page of a conversation's history to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageAt {
    /// The most recent messages.
    Latest,
    /// The messages just older than this one.
    Before(MessageId),
    /// The messages just newer than this one.
    After(MessageId),
}

/// A page of history, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The messages.
    pub entries: Vec<Entry>,
    /// More messages exist beyond this page, in the direction asked (older for `Latest` and
    /// `Before`, newer for `After`).
    pub more: bool,
}

/// What adding a contact did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    /// False when the number was a contact already.
    pub new: bool,
    /// The key pinned for it, if it ever registered.
    pub key: Option<PublicKey>,
}

/// What to do about a number that is not a contact and wrote to us (or may again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Drop its message request; it is not told.
    Ignore,
    /// Drop its request and show nothing it sends again; it is not told.
    Block,
    /// Let it write again (as a message request).
    Unblock,
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The client core refused or failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The client core cannot do this yet.
    #[error("{0} is not supported by this client yet")]
    Unsupported(&'static str),
}

/// Every call the UI makes. Futures are `Send` so each call can run on its own task.
pub trait Backend: Send + Sync + 'static {
    /// Every conversation, most recent activity first.
    fn conversations(&self) -> impl Future<Output = Result<Vec<Conversation>, BackendError>> + Send;

    /// A page of at most `limit` messages of `chat`, oldest first.
    fn history_page(
        &self,
        chat: &Chat,
        at: PageAt,
        limit: usize,
    ) -> impl Future<Output = Result<Page, BackendError>> + Send;

    /// Sends a text; the answer is the message as stored (sent or queued).
    fn send_text(&self, chat: &Chat, text: &str) -> impl Future<Output = Result<Entry, BackendError>> + Send;

    /// Sends a photo or any file; the answer is the message as stored (its transfer then reports
    /// progress as events).
    fn send_file(&self, chat: &Chat, path: &Path)
        -> impl Future<Output = Result<Entry, BackendError>> + Send;

    /// The user has seen these received messages: mark them read and tell their senders.
    fn mark_read(&self, ids: &[MessageId]) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// These received texts, each by its sender, have been drawn (in their conversation or the
    /// list of conversations): after a crash they are not shown again. Nothing by default.
    fn shown(&self, _texts: &[(Number, MessageId)]) {}

    /// Sends again, as events, the texts received before this start and never drawn. Nothing by
    /// default.
    fn replay_unshown(&self) {}

    /// Adds a contact.
    fn add_contact(&self, number: &Number) -> impl Future<Output = Result<Added, BackendError>> + Send;

    /// Is `number` online, and where?
    fn ping(&self, number: &Number) -> impl Future<Output = Result<Presence, BackendError>> + Send;

    /// Every contact with its status.
    fn contacts(&self) -> impl Future<Output = Result<Vec<Presence>, BackendError>> + Send;

    /// The numbers whose message requests wait (held before this start too). None by default.
    fn message_requests(&self) -> impl Future<Output = Result<Vec<Number>, BackendError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Ignores `number`'s message request, or blocks or unblocks it. Returns false when there was
    /// nothing to change (blocked or unblocked already).
    fn answer_request(
        &self,
        number: &Number,
        answer: Answer,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Creates a group of contacts.
    fn group_create(
        &self,
        name: &str,
        members: &[Number],
    ) -> impl Future<Output = Result<Group, BackendError>> + Send;

    /// Adds or removes a member (admins only).
    fn group_change(
        &self,
        id: GroupId,
        who: &Number,
        change: Change,
    ) -> impl Future<Output = Result<Group, BackendError>> + Send;

    /// Leaves a group.
    fn group_leave(&self, id: GroupId) -> impl Future<Output = Result<Group, BackendError>> + Send;

    /// Stops sending or receiving a file, for good.
    fn cancel_transfer(&self, id: MessageId) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Tells the directory we leave and stops.
    fn logout(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized;
}
