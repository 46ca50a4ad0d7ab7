//! What a conversation view reads: the conversation list and pages of a conversation's history,
//! texts and files together, each found through an index from its cursor; and marking a text read.
//!
//! The message path writes no index for these (each would cost it a page in the WAL per message):
//! [`index`], run with each checkpoint (about once a second), files new rows into `chat_items`,
//! `unread` and `chats` (see `schema.rs`), and readers add the rows not filed yet, read straight
//! from `messages` and `files` by rowid.

use std::path::PathBuf;

use rusqlite::{params, OptionalExtension, Row};
use whatsap2p_proto::group::{GroupId, SignedGroupState};
use whatsap2p_proto::{MessageId, Number};

use super::{row_to_message, Store, StoredMessage};
use crate::ClientError;

/// A conversation: with one peer, or in a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Chat {
    /// One to one.
    Peer(Number),
    /// A group.
    Group(GroupId),
}

impl Chat {
    /// The chat a key of the `chats` table names (a number, or `g:` and a group id; see
    /// `schema.rs`).
    fn from_key(key: &str) -> Option<Self> {
        match key.strip_prefix("g:") {
            Some(group) => group.parse().ok().map(Chat::Group),
            None => Number::new(key).ok().map(Chat::Peer),
        }
    }
}

/// Where a file transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileState {
    /// Outgoing, not delivered yet.
    Pending,
    /// Outgoing, held by the receiver as a message request; offered again once accepted.
    Held,
    /// Outgoing, the receiver verified and kept it.
    Sent,
    /// Outgoing, given up on.
    Failed,
    /// Incoming, verified and saved.
    Received,
    /// Cancelled by a user, on this side or the other: given up for good, nothing kept.
    Cancelled,
}

impl FileState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Held => "held",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Received => "received",
            Self::Cancelled => "cancelled",
        }
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "held" => Self::Held,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => Self::Received,
        }
    }
}

/// A file sent or received, as a conversation shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// The transfer's id.
    pub id: MessageId,
    /// The other side.
    pub peer: Number,
    /// Sent by us.
    pub outgoing: bool,
    /// The name offered (sent) or given (received).
    pub name: String,
    /// Sender: the file sent. Receiver: where it was saved.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Media type, e.g. `image/png`.
    pub media_type: String,
    /// Where it stands.
    pub state: FileState,
    /// Our clock when it was queued or saved.
    pub at_ms: u64,
}

/// One item of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatItem {
    /// A text.
    Text(StoredMessage),
    /// A file.
    File(StoredFile),
}

impl ChatItem {
    /// Its id (a cursor for the page before it).
    pub fn id(&self) -> MessageId {
        match self {
            ChatItem::Text(m) => m.id,
            ChatItem::File(f) => f.id,
        }
    }

    /// Where it sorts in its conversation: our clock when it was stored.
    pub fn at_ms(&self) -> u64 {
        match self {
            ChatItem::Text(m) => m.received_at_ms.unwrap_or(m.sent_at_ms),
            ChatItem::File(f) => f.at_ms,
        }
    }
}

/// A line of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// With whom.
    pub chat: Chat,
    /// The group's name (for a group).
    pub name: Option<String>,
    /// The latest text or file (none for a group without messages yet).
    pub last: Option<ChatItem>,
    /// Texts received and not marked read.
    pub unread: u64,
    /// When the latest item was stored (0 without one).
    pub last_activity_ms: u64,
}

const MESSAGE_COLUMNS: &str =
    "peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id, update_body";
const FILE_COLUMNS: &str = "id, peer, outgoing, name, path, size, media_type, state, created_at_ms";

/// Kinds of `chat_items` and `chats` rows.
const RECEIVED: i64 = 0;
const SENT: i64 = 1;
const FILE: i64 = 2;

/// Reads a file row; `None` for one that no longer parses (edited by hand), which is skipped.
fn row_to_file(r: &Row<'_>) -> Result<Option<StoredFile>, rusqlite::Error> {
    let (id, peer): (String, String) = (r.get(0)?, r.get(1)?);
    let (Ok(id), Ok(peer)) = (id.parse::<MessageId>(), Number::new(&peer)) else { return Ok(None) };
    Ok(Some(StoredFile {
        id,
        peer,
        outgoing: r.get(2)?,
        name: r.get(3)?,
        path: PathBuf::from(r.get::<_, String>(4)?),
        size: r.get::<_, i64>(5)? as u64,
        media_type: r.get(6)?,
        state: FileState::parse(&r.get::<_, String>(7)?),
        at_ms: r.get::<_, i64>(8)? as u64,
    }))
}

/// A text or file as the index files it: where it sorts, and where its row is.
#[derive(Clone, Debug)]
struct Entry {
    chat: String,
    at: i64,
    id: String,
    kind: i64,
    row: i64,
    /// A text received and not read yet.
    unread: bool,
}

impl Entry {
    fn order(&self) -> (i64, &str, i64) {
        (self.at, &self.id, self.kind)
    }
}

/// The key of a conversation in the index tables.
fn chat_key(peer: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("g:{g}"),
        None => peer.to_owned(),
    }
}

fn key_of(chat: &Chat) -> String {
    match chat {
        Chat::Peer(n) => n.to_string(),
        Chat::Group(g) => format!("g:{g}"),
    }
}

/// How far `index` got: the last rowid of `messages` and of `files` it filed.
fn progress(c: &rusqlite::Connection) -> Result<(i64, i64), rusqlite::Error> {
    c.prepare_cached("SELECT messages, files FROM chat_progress WHERE one = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map(|p| p.unwrap_or((0, 0)))
}

/// Most rows one [`index`] pass files, so it holds the writing connection a few milliseconds at
/// most; the checkpoint runs passes until none is left, letting the message path in between.
const MAX_FILED_PER_PASS: i64 = 1000;

/// Texts and files past `progress`, in the order they were stored (group changes are no part of
/// a conversation), at most `limit` rows of each table; with the last rowid looked at in each.
fn unfiled_up_to(
    c: &rusqlite::Connection,
    (messages, files): (i64, i64),
    limit: i64,
) -> Result<(Vec<Entry>, (i64, i64)), rusqlite::Error> {
    let (mut out, mut last) = (Vec::new(), (messages, files));
    let mut stmt = c.prepare_cached(
        "SELECT rowid, peer, outgoing, id, group_id, COALESCE(received_at_ms, sent_at_ms), state = 'received',
                update_body IS NOT NULL
         FROM messages WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![messages, limit])?;
    while let Some(r) = rows.next()? {
        last.0 = r.get(0)?;
        if r.get::<_, bool>(7)? {
            continue;
        }
        let (peer, outgoing, group): (String, bool, Option<String>) = (r.get(1)?, r.get(2)?, r.get(4)?);
        out.push(Entry {
            chat: chat_key(&peer, group.as_deref()),
            at: r.get(5)?,
            id: r.get(3)?,
            kind: if outgoing { SENT } else { RECEIVED },
            row: last.0,
            unread: !outgoing && r.get::<_, bool>(6)?,
        });
    }
    let mut stmt = c.prepare_cached(
        "SELECT rowid, peer, id, created_at_ms FROM files WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![files, limit])?;
    while let Some(r) = rows.next()? {
        last.1 = r.get(0)?;
        out.push(Entry {
            chat: r.get(1)?,
            at: r.get(3)?,
            id: r.get(2)?,
            kind: FILE,
            row: last.1,
            unread: false,
        });
    }
    Ok((out, last))
}

/// Every text and file past `progress`: what readers add to what is filed.
fn unfiled(c: &rusqlite::Connection, progress: (i64, i64)) -> Result<Vec<Entry>, rusqlite::Error> {
    Ok(unfiled_up_to(c, progress, i64::MAX)?.0)
}

/// Files what `messages` and `files` got since the last pass (up to [`MAX_FILED_PER_PASS`] rows
/// of each), in one transaction. Returns whether rows are left for the next pass.
pub(super) fn index(c: &rusqlite::Connection) -> Result<bool, rusqlite::Error> {
    let tx = c.unchecked_transaction()?;
    let from = progress(&tx)?;
    let (entries, to) = unfiled_up_to(&tx, from, MAX_FILED_PER_PASS)?;
    {
        let mut item = tx.prepare_cached(
            "INSERT OR IGNORE INTO chat_items (chat, at_ms, id, kind, row) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut unread =
            tx.prepare_cached("INSERT OR IGNORE INTO unread (id, row, chat) VALUES (?1, ?2, ?3)")?;
        let mut line = tx.prepare_cached(
            "INSERT INTO chats (chat, last_at_ms, last_kind, last_row, unread) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (chat) DO UPDATE SET
                 unread = unread + excluded.unread,
                 last_kind = CASE WHEN excluded.last_at_ms >= last_at_ms THEN excluded.last_kind ELSE last_kind END,
                 last_row = CASE WHEN excluded.last_at_ms >= last_at_ms THEN excluded.last_row ELSE last_row END,
                 last_at_ms = MAX(last_at_ms, excluded.last_at_ms)",
        )?;
        for e in &entries {
            item.execute(params![e.chat, e.at, e.id, e.kind, e.row])?;
            let counted = e.unread && unread.execute(params![e.id, e.row, e.chat])? == 1;
            line.execute(params![e.chat, e.at, e.kind, e.row, counted as i64])?;
        }
    }
    tx.execute("UPDATE chat_progress SET messages = ?1, files = ?2 WHERE one = 1", params![to.0, to.1])?;
    tx.commit()?;
    let full = |done: i64, before: i64| done - before >= MAX_FILED_PER_PASS;
    Ok(full(to.0, from.0) || full(to.1, from.1))
}

/// The text or file at `row`.
fn item(c: &rusqlite::Connection, kind: i64, row: i64) -> Result<Option<ChatItem>, rusqlite::Error> {
    if kind == FILE {
        let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE rowid = ?1");
        let file = c.prepare_cached(&sql)?.query_row(params![row], row_to_file).optional()?;
        return Ok(file.flatten().map(ChatItem::File));
    }
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE rowid = ?1");
    let text = c.prepare_cached(&sql)?.query_row(params![row], row_to_message).optional()?;
    Ok(text.flatten().map(ChatItem::Text))
}

/// Where the item `id` of `chat` sorts, if the chat has it.
fn cursor_of(c: &rusqlite::Connection, chat: &Chat, id: &str) -> Result<Option<i64>, rusqlite::Error> {
    let text = match chat {
        Chat::Peer(n) => c
            .prepare_cached(
                "SELECT COALESCE(received_at_ms, sent_at_ms) FROM messages
                 WHERE peer = ?1 AND outgoing IN (0, 1) AND id = ?2 AND group_id IS NULL",
            )?
            .query_row(params![n.as_str(), id], |r| r.get(0))
            .optional()?,
        Chat::Group(g) => c
            .prepare_cached(
                "SELECT COALESCE(received_at_ms, sent_at_ms) FROM messages INDEXED BY messages_group
                 WHERE group_id = ?1 AND id = ?2 LIMIT 1",
            )?
            .query_row(params![g.to_string(), id], |r| r.get(0))
            .optional()?,
    };
    match (text, chat) {
        (Some(at), _) => Ok(Some(at)),
        (None, Chat::Peer(n)) => c
            .prepare_cached("SELECT created_at_ms FROM files WHERE id = ?1 AND peer = ?2")?
            .query_row(params![id, n.as_str()], |r| r.get(0))
            .optional(),
        (None, Chat::Group(_)) => Ok(None),
    }
}

/// Which way a page goes from its cursor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// The items just older than the cursor.
    Before,
    /// The items just newer than the cursor.
    After,
}

/// The `limit` items of `chat` nearest the cursor `(at, id)` on its `way` side, oldest first;
/// texts only when `texts_only`. Filed items come from `chat_items` through its key (a range of
/// it, in key order either way), the others from the rows not filed yet.
fn page(
    c: &rusqlite::Connection,
    chat: &Chat,
    (at, id): (i64, &str),
    way: Way,
    limit: usize,
    texts_only: bool,
) -> Result<Vec<ChatItem>, rusqlite::Error> {
    let key = key_of(chat);
    let last_kind = if texts_only { SENT } else { FILE };
    let sql = match way {
        Way::Before => {
            "SELECT at_ms, id, kind, row FROM chat_items
             WHERE chat = ?1 AND (at_ms, id) < (?2, ?3) AND kind <= ?4 ORDER BY at_ms DESC, id DESC LIMIT ?5"
        }
        Way::After => {
            "SELECT at_ms, id, kind, row FROM chat_items
             WHERE chat = ?1 AND (at_ms, id) > (?2, ?3) AND kind <= ?4 ORDER BY at_ms, id LIMIT ?5"
        }
    };
    let mut entries: Vec<Entry> = c
        .prepare_cached(sql)?
        .query_map(params![key, at, id, last_kind, limit as i64], |r| {
            Ok(Entry {
                chat: String::new(),
                at: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                row: r.get(3)?,
                unread: false,
            })
        })?
        .collect::<Result<_, _>>()?;
    let fresh = unfiled(c, progress(c)?)?;
    let beyond = |e: &Entry| match way {
        Way::Before => (e.at, e.id.as_str()) < (at, id),
        Way::After => (e.at, e.id.as_str()) > (at, id),
    };
    entries.extend(fresh.into_iter().filter(|e| e.chat == key && e.kind <= last_kind && beyond(e)));
    // Nearest the cursor first; a group text sent to several members once.
    entries.sort_by(|a, b| match way {
        Way::Before => b.order().cmp(&a.order()),
        Way::After => a.order().cmp(&b.order()),
    });
    entries.dedup_by(|a, b| a.order() == b.order());
    entries.truncate(limit);
    if way == Way::Before {
        entries.reverse();
    }
    let mut items = Vec::with_capacity(entries.len());
    for e in &entries {
        if let Some(item) = item(c, e.kind, e.row)? {
            items.push(item);
        }
    }
    Ok(items)
}

/// Runs `f` in one read transaction, so what is filed and what is not come from one snapshot.
fn snapshot<T>(
    c: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    let tx = c.unchecked_transaction()?;
    let out = f(&tx)?;
    tx.finish()?;
    Ok(out)
}

impl Store {
    /// Files new texts and files into the conversation index (see `schema.rs`), as the periodic
    /// checkpoint does.
    #[cfg(test)]
    pub(crate) async fn index_chats(&self) -> Result<bool, ClientError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || index(&conn.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|_| ClientError::ShuttingDown)?
            .map_err(ClientError::Store)
    }

    /// The last `limit` texts with `peer`, oldest first.
    pub async fn history(&self, peer: &Number, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        self.texts(Chat::Peer(peer.clone()), limit).await
    }

    /// The last `limit` texts of a group, oldest first (each text once, whatever its fan-out).
    pub async fn group_history(
        &self,
        group: GroupId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        self.texts(Chat::Group(group), limit).await
    }

    async fn texts(&self, chat: Chat, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        let items = self
            .read(move |c| snapshot(c, |c| page(c, &chat, (i64::MAX, ""), Way::Before, limit, true)))
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|item| match item {
                ChatItem::Text(m) => Some(m),
                ChatItem::File(_) => None,
            })
            .collect())
    }

    /// A page of `chat`: the `limit` items before `before` (the newest without it), oldest first.
    /// Texts and, with a peer, files. An id the chat does not have gives
    /// [`ClientError::UnknownMessage`].
    pub async fn history_page(
        &self,
        chat: &Chat,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatItem>, ClientError> {
        match before {
            Some(id) => self.page_from(chat, id, Way::Before, limit).await,
            None => {
                let chat = chat.clone();
                self.read(move |c| snapshot(c, |c| page(c, &chat, (i64::MAX, ""), Way::Before, limit, false)))
                    .await
            }
        }
    }

    /// A page of `chat`: the `limit` items after `after`, oldest first (texts and, with a peer,
    /// files). An id the chat does not have gives [`ClientError::UnknownMessage`].
    pub async fn history_after(
        &self,
        chat: &Chat,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<ChatItem>, ClientError> {
        self.page_from(chat, after, Way::After, limit).await
    }

    /// The page on the `way` side of item `id` of `chat`.
    async fn page_from(
        &self,
        chat: &Chat,
        id: MessageId,
        way: Way,
        limit: usize,
    ) -> Result<Vec<ChatItem>, ClientError> {
        let chat = chat.clone();
        let page = self
            .read(move |c| {
                snapshot(c, |c| {
                    let cursor = id.to_string();
                    match cursor_of(c, &chat, &cursor)? {
                        Some(at) => page(c, &chat, (at, &cursor), way, limit, false).map(Some),
                        None => Ok(None),
                    }
                })
            })
            .await?;
        page.ok_or(ClientError::UnknownMessage(id))
    }

    /// Every conversation, the most recent first: each peer and group with history, then the
    /// groups without any yet.
    pub async fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        self.read(|c| snapshot(c, conversations)).await
    }

    /// Marks an incoming text read and, with `receipt`, schedules its read receipt; returns its
    /// sender, or `None` if no unread incoming text has that id.
    pub async fn mark_read(&self, id: MessageId, receipt: bool) -> Result<Option<Number>, ClientError> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            let (filed, _) = progress(&tx)?;
            let indexed: Vec<(i64, String)> = tx
                .prepare_cached("SELECT row, chat FROM unread WHERE id = ?1")?
                .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let fresh: Vec<i64> = tx
                .prepare_cached(
                    "SELECT rowid FROM messages WHERE rowid > ?1 AND outgoing = 0 AND id = ?2 AND state = 'received'",
                )?
                .query_map(params![filed, id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut sender = None;
            {
                let mut read = tx.prepare_cached(
                    "UPDATE messages SET state = 'read', receipt_pending = ?2
                     WHERE rowid = ?1 AND outgoing = 0 AND state = 'received' RETURNING peer",
                )?;
                let mut counted = tx.prepare_cached("UPDATE chats SET unread = unread - 1 WHERE chat = ?1")?;
                for (row, chat) in &indexed {
                    if let Some(peer) = read.query_row(params![row, receipt], |r| r.get::<_, String>(0)).optional()? {
                        counted.execute(params![chat])?;
                        sender.get_or_insert(peer);
                    }
                }
                for row in &fresh {
                    if let Some(peer) = read.query_row(params![row, receipt], |r| r.get::<_, String>(0)).optional()? {
                        sender.get_or_insert(peer);
                    }
                }
            }
            tx.execute("DELETE FROM unread WHERE id = ?1", params![id])?;
            tx.commit()?;
            Ok(sender.and_then(|p| Number::new(&p).ok()))
        })
        .await
    }
}

/// The conversation list: the `chats` lines, brought up to date with what is not filed yet.
fn conversations(c: &rusqlite::Connection) -> Result<Vec<Conversation>, rusqlite::Error> {
    let mut names = std::collections::HashMap::new();
    let mut stmt = c.prepare_cached("SELECT state FROM groups ORDER BY rowid")?;
    for body in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
        if let Ok(signed) = postcard::from_bytes::<SignedGroupState>(&body?) {
            names.insert(signed.state.id, signed.state.name);
        }
    }
    // chat → (latest entry, unread)
    let mut lines: std::collections::HashMap<String, (Entry, i64)> = std::collections::HashMap::new();
    let mut stmt = c.prepare_cached("SELECT chat, last_at_ms, last_kind, last_row, unread FROM chats")?;
    let rows = stmt.query_map([], |r| {
        let chat: String = r.get(0)?;
        let last = Entry {
            chat: chat.clone(),
            at: r.get(1)?,
            id: String::new(),
            kind: r.get(2)?,
            row: r.get(3)?,
            unread: false,
        };
        Ok((chat, (last, r.get::<_, i64>(4)?)))
    })?;
    for row in rows {
        let (chat, line) = row?;
        lines.insert(chat, line);
    }
    for e in unfiled(c, progress(c)?)? {
        let unread = i64::from(e.unread);
        match lines.get_mut(&e.chat) {
            Some((last, count)) => {
                *count += unread;
                if e.at >= last.at {
                    *last = e;
                }
            }
            None => {
                lines.insert(e.chat.clone(), (e, unread));
            }
        }
    }
    let mut lines: Vec<(Entry, i64)> = lines.into_values().collect();
    lines.sort_by(|(a, _), (b, _)| b.at.cmp(&a.at).then_with(|| a.chat.cmp(&b.chat)));
    let mut out = Vec::with_capacity(lines.len() + names.len());
    for (last, unread) in lines {
        let Some(chat) = Chat::from_key(&last.chat) else { continue };
        let name = match &chat {
            Chat::Group(g) => names.remove(g),
            Chat::Peer(_) => None,
        };
        out.push(Conversation {
            chat,
            name,
            last: item(c, last.kind, last.row)?,
            unread: unread.max(0) as u64,
            last_activity_ms: last.at.max(0) as u64,
        });
    }
    let mut quiet: Vec<(GroupId, String)> = names.into_iter().collect();
    quiet.sort();
    out.extend(quiet.into_iter().map(|(id, name)| Conversation {
        chat: Chat::Group(id),
        name: Some(name),
        last: None,
        unread: 0,
        last_activity_ms: 0,
    }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileRecord, OutgoingText};

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        (dir, store)
    }

    fn file(peer: &Number, name: &str) -> FileRecord {
        FileRecord {
            id: MessageId::new(),
            peer: peer.clone(),
            outgoing: true,
            path: PathBuf::from(format!("/tmp/{name}")),
            name: name.into(),
            size: 3,
            media_type: "image/png".into(),
            blake3: [0; 32],
        }
    }

    fn ids(items: &[ChatItem]) -> Vec<MessageId> {
        items.iter().map(ChatItem::id).collect()
    }

    /// Texts and files in the order they were stored, with distinct clock readings (the
    /// conversation orders by our clock, then by id). The first three are filed into the
    /// conversation index, the others not yet: what a screen reads must take both.
    async fn history_of_texts_and_files(store: &Store, peer: &Number) -> Vec<MessageId> {
        let mut all = Vec::new();
        for i in 0..7u64 {
            if i == 3 {
                store.index_chats().await.expect("index");
            }
            let id = MessageId::new();
            if i % 3 == 2 {
                let f = FileRecord { id, ..file(peer, &format!("f{i}.png")) };
                store.insert_file(&f, "pending").await.expect("file");
            } else if i % 2 == 0 {
                assert!(store.store_incoming(peer, id, &format!("in {i}"), i, None).await.expect("in"));
            } else {
                let t = OutgoingText {
                    id,
                    text: format!("out {i}"),
                    sent_at_ms: crate::clock::now_ms(),
                    group: None,
                };
                store.queue_outgoing(peer, t).await.expect("out");
            }
            all.push(id);
            // Each item on a clock reading of its own.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        all
    }

    #[tokio::test]
    async fn given_texts_and_files_then_pages_walk_back_through_both_oldest_first_within_a_page() {
        let (_dir, store) = open();
        let peer = n("456");
        let all = history_of_texts_and_files(&store, &peer).await;
        let chat = Chat::Peer(peer.clone());
        let newest = store.history_page(&chat, None, 3).await.expect("page");
        assert_eq!(ids(&newest), all[4..7]);
        assert!(
            matches!(newest[1], ChatItem::File(ref f) if f.name == "f5.png" && f.state == FileState::Pending)
        );
        let before = store.history_page(&chat, Some(newest[0].id()), 3).await.expect("page");
        assert_eq!(ids(&before), all[1..4]);
        let first = store.history_page(&chat, Some(before[0].id()), 3).await.expect("page");
        assert_eq!(ids(&first), all[0..1]);
        assert!(store.history_page(&chat, Some(first[0].id()), 3).await.expect("page").is_empty());
        // The texts-only history (the JSON `history` answer) is unchanged: no files in it.
        let texts: Vec<MessageId> =
            store.history(&peer, 10).await.expect("history").iter().map(|m| m.id).collect();
        assert_eq!(texts, [all[0], all[1], all[3], all[4], all[6]]);
        let unknown = store.history_page(&chat, Some(MessageId::new()), 3).await;
        assert!(matches!(unknown, Err(ClientError::UnknownMessage(_))), "{unknown:?}");
    }

    #[tokio::test]
    async fn given_texts_and_files_then_pages_walk_forward_through_both_from_a_cursor() {
        let (_dir, store) = open();
        let peer = n("456");
        let all = history_of_texts_and_files(&store, &peer).await;
        let chat = Chat::Peer(peer.clone());
        // From a filed item into the ones not filed yet, and on to the end.
        let after = store.history_after(&chat, all[1], 3).await.expect("page");
        assert_eq!(ids(&after), all[2..5]);
        assert!(matches!(after[0], ChatItem::File(ref f) if f.name == "f2.png"));
        let next = store.history_after(&chat, after[2].id(), 3).await.expect("page");
        assert_eq!(ids(&next), all[5..7]);
        assert!(store.history_after(&chat, all[6], 3).await.expect("page").is_empty());
        // Filed or not, the same pages.
        store.index_chats().await.expect("index");
        assert_eq!(ids(&store.history_after(&chat, all[1], 3).await.expect("page")), all[2..5]);
        assert_eq!(ids(&store.history_page(&chat, Some(all[5]), 3).await.expect("page")), all[2..5]);
        let unknown = store.history_after(&chat, MessageId::new(), 3).await;
        assert!(matches!(unknown, Err(ClientError::UnknownMessage(_))), "{unknown:?}");
        // Another conversation's item is no cursor here.
        let elsewhere = store.history_after(&Chat::Peer(n("789")), all[1], 3).await;
        assert!(matches!(elsewhere, Err(ClientError::UnknownMessage(_))), "{elsewhere:?}");
    }

    #[tokio::test]
    async fn given_conversations_then_the_list_has_the_last_item_unread_counts_and_quiet_groups_last() {
        let (_dir, store) = open();
        let (alice, bob) = (n("111"), n("222"));
        let read_me = MessageId::new();
        store.store_incoming(&alice, read_me, "one", 1, None).await.expect("in");
        store.store_incoming(&alice, MessageId::new(), "two", 2, None).await.expect("in");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let photo = file(&bob, "cat.png");
        store.insert_file(&photo, "pending").await.expect("file");
        // A group with a text (copies to two members count once) and one without any.
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let me = n("100");
        let state = |id: GroupId, name: &str| whatsap2p_proto::group::GroupState {
            id,
            name: name.into(),
            members: [me.clone(), alice.clone(), bob.clone()].into(),
            admins: [me.clone()].into(),
            version: 1,
        };
        let (family, quiet) = (GroupId([1; 16]), GroupId([2; 16]));
        store.save_group(&state(family, "Family").sign(me.clone(), &key), false).await.expect("group");
        store.save_group(&state(quiet, "Quiet").sign(me.clone(), &key), false).await.expect("group");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let to_group = OutgoingText {
            id: MessageId::new(),
            text: "hi all".into(),
            sent_at_ms: crate::clock::now_ms(),
            group: Some(family),
        };
        let flights = vec![(alice.clone(), Default::default()), (bob.clone(), Default::default())];
        store.take_owed_fanout(flights, vec![], to_group.clone()).await.expect("fan-out");

        let list = store.conversations().await.expect("list");
        let chats: Vec<&Chat> = list.iter().map(|c| &c.chat).collect();
        assert_eq!(
            chats,
            [&Chat::Group(family), &Chat::Peer(bob.clone()), &Chat::Peer(alice.clone()), &Chat::Group(quiet)]
        );
        assert!(
            matches!(&list[0].last, Some(ChatItem::Text(m)) if m.id == to_group.id && m.text == "hi all")
        );
        assert_eq!(list[0].name.as_deref(), Some("Family"));
        assert!(matches!(&list[1].last, Some(ChatItem::File(f)) if f.id == photo.id));
        assert!(matches!(&list[2].last, Some(ChatItem::Text(m)) if m.text == "two"));
        assert_eq!(list.iter().map(|c| c.unread).collect::<Vec<_>>(), [0, 0, 2, 0]);
        assert_eq!((list[3].name.as_deref(), list[3].last_activity_ms), (Some("Quiet"), 0));
        // Filed or not, the list says the same.
        store.index_chats().await.expect("index");
        assert_eq!(store.conversations().await.expect("list"), list);
        // Reading a message counts down its conversation; reading it again changes nothing.
        assert_eq!(store.mark_read(read_me, true).await.expect("read"), Some(alice.clone()));
        assert_eq!(store.mark_read(read_me, true).await.expect("read"), None);
        let list = store.conversations().await.expect("list");
        assert_eq!(list[2].unread, 1);
        // A message not filed yet is found too.
        let fresh = MessageId::new();
        store.store_incoming(&alice, fresh, "three", 3, None).await.expect("in");
        assert_eq!(store.conversations().await.expect("list")[0].unread, 2);
        assert_eq!(store.mark_read(fresh, true).await.expect("read"), Some(alice.clone()));
        store.index_chats().await.expect("index");
        assert_eq!(store.conversations().await.expect("list")[0].unread, 1);
        // The group's history shows the fanned-out text once.
        let page = store.history_page(&Chat::Group(family), None, 10).await.expect("page");
        assert_eq!(ids(&page), [to_group.id]);
    }

    #[tokio::test]
    async fn given_a_database_from_before_the_conversation_list_then_it_is_listed_and_filed_at_the_first_checkpoint(
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite");
        {
            let old = rusqlite::Connection::open(&path).expect("open");
            old.execute_batch(super::super::schema::SCHEMA).expect("old schema");
            old.execute(
                "INSERT INTO messages (peer, outgoing, id, text, sent_at_ms, received_at_ms, state)
                 VALUES ('111', 0, ?1, 'old', 5, 7, 'received')",
                params![MessageId::new().to_string()],
            )
            .expect("old message");
        }
        let store = Store::open(&path).expect("upgrade");
        for filed in [false, true] {
            if filed {
                store.checkpoint().await.expect("checkpoint");
            }
            let list = store.conversations().await.expect("list");
            assert_eq!(list.len(), 1, "filed: {filed}");
            assert_eq!(
                (&list[0].chat, list[0].unread, list[0].last_activity_ms),
                (&Chat::Peer(n("111")), 1, 7)
            );
        }
        let filed: i64 = store
            .read(|c| c.query_row("SELECT COUNT(*) FROM chat_items", [], |r| r.get(0)))
            .await
            .expect("count");
        assert_eq!(filed, 1, "the first checkpoint files an older history");
    }

    /// A long backlog is filed a bounded batch at a time, and reads are whole at every step.
    #[tokio::test]
    async fn given_a_backlog_then_each_pass_files_a_bounded_batch_and_reads_stay_whole() {
        let (_dir, store) = open();
        let peer = n("456");
        let backlog = 2 * MAX_FILED_PER_PASS as usize + 10;
        for i in 0..backlog {
            store.store_incoming(&peer, MessageId::new(), "x", i as u64, None).await.expect("in");
        }
        let mut passes = 0;
        loop {
            let list = store.conversations().await.expect("list");
            assert_eq!(list[0].unread as usize, backlog, "after {passes} passes");
            let page = store.history_page(&Chat::Peer(peer.clone()), None, 5).await.expect("page");
            assert_eq!(page.len(), 5);
            passes += 1;
            if !store.index_chats().await.expect("index") {
                break;
            }
        }
        assert_eq!(passes, 3, "2 full passes and the rest");
    }

    /// A screen's reads go through their own connection: a write transaction that holds the
    /// writing connection (a long one, here held open on purpose) does not hold them up, and they
    /// see the last commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn given_a_write_in_progress_then_the_list_and_history_are_read_meanwhile() {
        let (_dir, store) = open();
        let peer = n("456");
        store.store_incoming(&peer, MessageId::new(), "before", 1, None).await.expect("in");
        let (started, writing) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let late = peer.clone();
        let write = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .with(move |c| {
                        let tx = c.unchecked_transaction()?;
                        tx.execute(
                            "INSERT INTO messages (peer, outgoing, id, text, sent_at_ms, received_at_ms, state)
                             VALUES (?1, 0, ?2, 'during', 2, 2, 'received')",
                            params![late.as_str(), MessageId::new().to_string()],
                        )?;
                        let _ = started.send(());
                        let _ = released.recv();
                        tx.commit()
                    })
                    .await
            }
        });
        writing.await.expect("the write started");
        let within = std::time::Duration::from_secs(5);
        let list =
            tokio::time::timeout(within, store.conversations()).await.expect("the list waited for the write");
        let texts = tokio::time::timeout(within, store.history(&peer, 10))
            .await
            .expect("history waited for the write");
        assert_eq!(list.expect("list")[0].unread, 1, "the uncommitted message is not seen");
        assert_eq!(texts.expect("history").len(), 1);
        release.send(()).expect("releasing the write");
        write.await.expect("write task").expect("write");
        assert_eq!(store.history(&peer, 10).await.expect("history").len(), 2, "the commit is seen");
    }

    /// What a conversation view asks must not grow with the history: each query finds its rows
    /// through a key (SQLite's plan says SCAN for a walk over a whole table, TEMP B-TREE for a sort).
    #[tokio::test]
    async fn given_the_view_queries_then_each_one_searches_a_key_and_scans_no_table() {
        let (_dir, store) = open();
        let plans = store
            .read(|c| {
                let queries = [
                    "SELECT at_ms, id, kind, row FROM chat_items
                     WHERE chat = '1' AND (at_ms, id) < (5, 'x') AND kind <= 2 ORDER BY at_ms DESC, id DESC LIMIT 50",
                    "SELECT at_ms, id, kind, row FROM chat_items
                     WHERE chat = '1' AND (at_ms, id) > (5, 'x') AND kind <= 2 ORDER BY at_ms, id LIMIT 50",
                    "SELECT rowid FROM messages WHERE rowid > 5 AND update_body IS NULL ORDER BY rowid",
                    "SELECT rowid FROM files WHERE rowid > 5 ORDER BY rowid",
                    "SELECT row, chat FROM unread WHERE id = 'x'",
                    "SELECT rowid FROM messages WHERE rowid > 5 AND outgoing = 0 AND id = 'x' AND state = 'received'",
                    "UPDATE messages SET state = 'read' WHERE rowid = 5 AND outgoing = 0 AND state = 'received'",
                    "SELECT COALESCE(received_at_ms, sent_at_ms) FROM messages
                     WHERE peer = '1' AND outgoing IN (0, 1) AND id = 'x' AND group_id IS NULL",
                    "SELECT COALESCE(received_at_ms, sent_at_ms) FROM messages INDEXED BY messages_group
                     WHERE group_id = 'g' AND id = 'x' LIMIT 1",
                    "SELECT created_at_ms FROM files WHERE id = 'x' AND peer = '1'",
                    "SELECT text FROM messages WHERE rowid = 5",
                ];
                let mut plans = Vec::new();
                for q in queries {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {q}"))?;
                    let steps: Vec<String> = stmt.query_map([], |r| r.get(3))?.collect::<Result<_, _>>()?;
                    plans.push(format!("{}: {q}", steps.join("; ")));
                }
                Ok(plans)
            })
            .await
            .expect("plans");
        for plan in plans {
            assert!(
                plan.contains("SEARCH") && !plan.contains("SCAN") && !plan.contains("TEMP B-TREE"),
                "{plan}"
            );
        }
    }
}
