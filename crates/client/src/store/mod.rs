//! The profile's database, split by what it stores behind one [`Store`] handle.
//!
//! SQLite in WAL mode, with two connections: one that writes (long calls on a blocking thread,
//! the short statements of a message's path on the calling task when the connection is free, see
//! `Store::quick`), and one that only reads, for what a user interface shows (history pages, the
//! conversation list, contacts), which therefore never waits behind the message path's writes.
//!
//! # Layout
//! - `schema.rs`: tables, indexes, the triggers that keep the conversation list, upgrades.
//! - `contacts.rs`: contacts and pinned keys, blocked numbers, settings; `messages.rs`: the outbox,
//!   texts received, read receipts; `files.rs`: file transfers; `groups.rs`: group states and held
//!   texts; `requests.rs`: message requests from strangers.
//! - `chats.rs`: what a conversation view reads: the conversation list and history pages.
//! - `shown.rs`: which received texts the user has been shown (the rest are shown at start).

mod chats;
mod contacts;
mod files;
mod groups;
mod messages;
mod requests;
mod schema;
mod shown;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::OpenFlags;
use whatsap2p_proto::group::GroupId;
use whatsap2p_proto::{MessageId, Number, PublicKey};

pub use chats::{Chat, ChatItem, Conversation, FileState, StoredFile};
pub use contacts::Contact;
pub(crate) use contacts::Standing;
pub(crate) use requests::{Held, Hold};
pub use requests::{Request, RequestItem, MAX_HELD_ITEMS, MAX_ITEMS_PER_REQUEST, REQUEST_TTL_MS};

use crate::ClientError;

/// Handle to the profile database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Every write, and the reads of the message path.
    conn: Arc<Mutex<rusqlite::Connection>>,
    /// Reads for a user interface: under WAL they see the last commit and never wait for a writer.
    read: Arc<Mutex<rusqlite::Connection>>,
    /// Something was written since the last checkpoint (see [`Store::checkpoint`]).
    dirty: Arc<AtomicBool>,
}

/// SQLite checkpoints the WAL by itself only past this many pages (40 MiB): a safety net, since
/// [`Store::checkpoint`] does it on a blocking thread long before. Its own default, 1 000 pages,
/// would run a checkpoint, fsyncs included, inside whichever commit crosses it, which may be a
/// short statement running on an async task.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// A file sent or received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// The transfer's id.
    pub id: MessageId,
    /// The other side.
    pub peer: Number,
    /// Sent by us.
    pub outgoing: bool,
    /// Sender: the file to send. Receiver: where it was saved.
    pub path: std::path::PathBuf,
    /// The name offered (sender) or given (receiver).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type, e.g. `image/png`.
    pub media_type: String,
    /// BLAKE3 of the content.
    pub blake3: [u8; 32],
}

/// Where a message stands. Outgoing: queued → sent → delivered → read (or failed), with pending
/// between sent and delivered while the recipient holds it as a message request. Incoming:
/// received → read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// Stored in the outbox, not yet written to the recipient.
    Queued,
    /// Written to the recipient, no receipt yet.
    Sent,
    /// The recipient holds it as a message request (we are not its contact); it is written again
    /// once the request is accepted.
    Pending,
    /// The recipient has it.
    Delivered,
    /// The recipient (or, for incoming, we) saw it.
    Read,
    /// Given up on: the recipient's key no longer matches.
    Failed,
    /// Incoming, not yet shown as read.
    Received,
}

impl MessageState {
    /// The stored (and JSON) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Received => "received",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "sent" => Self::Sent,
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "failed" => Self::Failed,
            _ => Self::Received,
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// The other side of the conversation.
    pub peer: Number,
    /// Sent by us.
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// The sender's clock when written.
    pub sent_at_ms: u64,
    /// Our clock when received (incoming only).
    pub received_at_ms: Option<u64>,
    /// Where it stands.
    pub state: MessageState,
    /// The group it was sent to, if any.
    pub group: Option<GroupId>,
    /// For a group membership change waiting in the outbox: the encoded signed state.
    pub update: Option<Vec<u8>>,
}

/// A text entering the outbox.
#[derive(Clone, Debug)]
pub struct OutgoingText {
    /// Its id.
    pub id: MessageId,
    /// The text.
    pub text: String,
    /// Our clock when written.
    pub sent_at_ms: u64,
    /// The group it goes to, if any.
    pub group: Option<GroupId>,
}

/// What a courier writes next (see [`Store::take_owed`]).
#[derive(Default)]
pub(crate) struct Owed {
    /// Texts and group changes to write now, oldest first, all marked `sent`.
    pub texts: Vec<StoredMessage>,
    /// The texts among them (and their groups) that were `queued` until now: each is reported as sent.
    pub newly_sent: Vec<(MessageId, Option<GroupId>)>,
    /// The texts left out as in flight that are still unconfirmed.
    pub in_flight: Vec<MessageId>,
    /// Read receipts to write.
    pub receipts: Vec<MessageId>,
    /// Whether any message still waits for an acknowledgement.
    pub awaiting: bool,
}

/// The clock as SQLite stores it.
fn now_ms() -> i64 {
    crate::clock::now_ms() as i64
}

fn key_from(bytes: Option<Vec<u8>>) -> Option<PublicKey> {
    bytes.and_then(|b| PublicKey::try_from(b.as_slice()).ok())
}

/// Opens a connection to the profile database. On Unix through SQLite's `unix-excl` file layer:
/// the process takes the file's lock once and keeps it (the profile's own lock already keeps other
/// processes out), and the WAL index lives in the process's memory, shared by its connections.
/// Per transaction that saves the file-lock system calls the default layer makes on the database
/// and its shared-memory file (a `strace -c` of 186 000 commits: 838 000 `fcntl` calls with the
/// default layer, 38 with this one), which `locking_mode = EXCLUSIVE` used to save, and which would
/// otherwise be the price of the second, reading connection (5 to 10 µs a commit here).
fn open_connection(path: &Path, flags: OpenFlags) -> Result<rusqlite::Connection, rusqlite::Error> {
    #[cfg(unix)]
    return rusqlite::Connection::open_with_flags_and_vfs(path, flags, "unix-excl");
    #[cfg(not(unix))]
    return rusqlite::Connection::open_with_flags(path, flags);
}

impl Store {
    /// Opens (creating or upgrading) `path`.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let conn = open_connection(path, OpenFlags::default())?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode, NORMAL loses nothing when the process dies (SIGKILL included); only a power
        // loss can take the last commits. FULL would fsync every message, several times.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        schema::upgrade(&conn)?;
        let read = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        read.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            read: Arc::new(Mutex::new(read)),
            // History from before the conversation index gets filed at the first checkpoint.
            dirty: Arc::new(AtomicBool::new(true)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, ClientError> {
        self.dirty.store(true, Ordering::Relaxed);
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|_| ClientError::ShuttingDown)?
            .map_err(ClientError::Store)
    }

    /// Runs a short statement on the calling task when the connection is free: a message's path is
    /// a few such statements, and a round trip through the blocking pool costs two thread switches
    /// each, more than the statement itself (WAL, no fsync). Waits on a blocking thread when another
    /// call holds the connection, so a long query never stalls the async task.
    async fn quick<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, ClientError> {
        if let Ok(conn) = self.conn.try_lock() {
            self.dirty.store(true, Ordering::Relaxed);
            return f(&conn).map_err(ClientError::Store);
        }
        self.with(f).await
    }

    /// Runs a read on the reading connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, ClientError> {
        let conn = self.read.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|_| ClientError::ShuttingDown)?
            .map_err(ClientError::Store)
    }

    /// Files new rows into the conversation index and moves what the WAL holds into the database
    /// file, on a blocking thread, if anything was written since the last time: the client calls
    /// it every second, so the short statements that run on async tasks carry neither.
    pub(crate) async fn checkpoint(&self) -> Result<(), ClientError> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let lock = || conn.lock().unwrap_or_else(|p| p.into_inner());
            // The conversation index catches up in the same trip (see `chats.rs`), a bounded pass
            // at a time: the message path gets the connection between two passes.
            while chats::index(&lock())? {}
            lock().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        })
        .await
        .map_err(|_| ClientError::ShuttingDown)?
        .map_err(ClientError::Store)
    }
}

/// Reads a row; `None` for a row that no longer parses (edited by hand), which is skipped.
fn row_to_message(r: &rusqlite::Row<'_>) -> Result<Option<StoredMessage>, rusqlite::Error> {
    let peer: String = r.get(0)?;
    let id: String = r.get(2)?;
    let state: String = r.get(6)?;
    let (Ok(peer), Ok(id)) = (Number::new(&peer), id.parse::<MessageId>()) else { return Ok(None) };
    Ok(Some(StoredMessage {
        id,
        peer,
        outgoing: r.get::<_, i64>(1)? == 1,
        text: r.get(3)?,
        sent_at_ms: r.get::<_, i64>(4)? as u64,
        received_at_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        state: MessageState::parse(&state),
        group: r.get::<_, Option<String>>(7)?.and_then(|g| g.parse().ok()),
        update: r.get(8)?,
    }))
}
