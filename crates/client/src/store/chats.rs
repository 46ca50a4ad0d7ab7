//! What a conversation view reads, on the reading connection: the conversation list (from the
//! `chats` table the triggers keep) and pages of a conversation's history, texts and files
//! together, each page found through an index from its cursor.

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
    /// Outgoing, the receiver verified and kept it.
    Sent,
    /// Outgoing, given up on.
    Failed,
    /// Incoming, verified and saved.
    Received,
}

impl FileState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Received => "received",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
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

/// The newest texts of a chat before the cursor `(at, id)`, newest first: for a group, each text
/// once, whatever its fan-out (the copies of one are next to each other in the index).
fn texts_before(
    c: &rusqlite::Connection,
    chat: &Chat,
    (at, id): (i64, &str),
    limit: usize,
) -> Result<Vec<StoredMessage>, rusqlite::Error> {
    const AT: &str = "COALESCE(received_at_ms, sent_at_ms)";
    let (sql, key) = match chat {
        Chat::Peer(n) => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_chat
                 WHERE peer = ?1 AND group_id IS NULL AND ({AT}, id) < (?2, ?3) ORDER BY {AT} DESC, id DESC"
            ),
            n.to_string(),
        ),
        Chat::Group(g) => (
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages INDEXED BY messages_group_chat
                 WHERE group_id = ?1 AND update_body IS NULL AND ({AT}, id) < (?2, ?3) ORDER BY {AT} DESC, id DESC"
            ),
            g.to_string(),
        ),
    };
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![key, at, id])?;
    let mut out: Vec<StoredMessage> = Vec::with_capacity(limit);
    while out.len() < limit {
        let Some(row) = rows.next()? else { break };
        let Some(m) = row_to_message(row)? else { continue };
        if out.last().is_some_and(|last| last.id == m.id && last.outgoing == m.outgoing) {
            continue;
        }
        out.push(m);
    }
    Ok(out)
}

/// The newest files exchanged with `peer` before the cursor, newest first.
fn files_before(
    c: &rusqlite::Connection,
    peer: &Number,
    (at, id): (i64, &str),
    limit: usize,
) -> Result<Vec<StoredFile>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files INDEXED BY files_chat
         WHERE peer = ?1 AND (created_at_ms, id) < (?2, ?3) ORDER BY created_at_ms DESC, id DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![peer.as_str(), at, id, limit as i64], row_to_file)?;
    rows.filter_map(|r| r.transpose()).collect()
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

/// The conversation's latest item, from its `chats` row.
fn last_item(c: &rusqlite::Connection, kind: i64, rowid: i64) -> Result<Option<ChatItem>, rusqlite::Error> {
    if kind == 1 {
        let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE rowid = ?1");
        let file = c.prepare_cached(&sql)?.query_row(params![rowid], row_to_file).optional()?;
        return Ok(file.flatten().map(ChatItem::File));
    }
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE rowid = ?1");
    let text = c.prepare_cached(&sql)?.query_row(params![rowid], row_to_message).optional()?;
    Ok(text.flatten().map(ChatItem::Text))
}

impl Store {
    /// The last `limit` texts with `peer`, oldest first.
    pub async fn history(&self, peer: &Number, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        let chat = Chat::Peer(peer.clone());
        let mut texts = self.read(move |c| texts_before(c, &chat, (i64::MAX, ""), limit)).await?;
        texts.reverse();
        Ok(texts)
    }

    /// The last `limit` texts of a group, oldest first (each text once, whatever its fan-out).
    pub async fn group_history(
        &self,
        group: GroupId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        let chat = Chat::Group(group);
        let mut texts = self.read(move |c| texts_before(c, &chat, (i64::MAX, ""), limit)).await?;
        texts.reverse();
        Ok(texts)
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
        let chat = chat.clone();
        let page = self
            .read(move |c| {
                let id = before.map(|b| b.to_string()).unwrap_or_default();
                let at = match before {
                    None => i64::MAX,
                    Some(_) => match cursor_of(c, &chat, &id)? {
                        Some(at) => at,
                        None => return Ok(None),
                    },
                };
                let mut items: Vec<ChatItem> =
                    texts_before(c, &chat, (at, &id), limit)?.into_iter().map(ChatItem::Text).collect();
                if let Chat::Peer(peer) = &chat {
                    items.extend(files_before(c, peer, (at, &id), limit)?.into_iter().map(ChatItem::File));
                }
                // Newest first, as both lists came: the `limit` newest, then oldest first.
                items.sort_by_key(|item| std::cmp::Reverse((item.at_ms(), item.id())));
                items.truncate(limit);
                items.reverse();
                Ok(Some(items))
            })
            .await?;
        page.ok_or_else(|| ClientError::UnknownMessage(before.unwrap_or_default()))
    }

    /// Every conversation, the most recent first: each peer and group with history, then the
    /// groups without any yet.
    pub async fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        self.read(|c| {
            let mut names = std::collections::HashMap::new();
            let mut stmt = c.prepare_cached("SELECT state FROM groups ORDER BY rowid")?;
            for body in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
                if let Ok(signed) = postcard::from_bytes::<SignedGroupState>(&body?) {
                    names.insert(signed.state.id, signed.state.name);
                }
            }
            let mut out = Vec::new();
            let mut stmt = c.prepare_cached(
                "SELECT chat, last_at_ms, last_kind, last_rowid, unread FROM chats ORDER BY last_at_ms DESC, chat",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)?))
            })?;
            for row in rows {
                let (key, at, kind, rowid, unread) = row?;
                let Some(chat) = Chat::from_key(&key) else { continue };
                let name = match &chat {
                    Chat::Group(g) => names.remove(g),
                    Chat::Peer(_) => None,
                };
                out.push(Conversation {
                    chat,
                    name,
                    last: last_item(c, kind, rowid)?,
                    unread: unread.max(0) as u64,
                    last_activity_ms: at.max(0) as u64,
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
        })
        .await
    }
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
    /// conversation orders by our clock, then by id).
    async fn history_of_texts_and_files(store: &Store, peer: &Number) -> Vec<MessageId> {
        let mut all = Vec::new();
        for i in 0..7u64 {
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
        // Reading a message counts down its conversation; reading it again changes nothing.
        assert_eq!(store.mark_read(read_me).await.expect("read"), Some(alice.clone()));
        assert_eq!(store.mark_read(read_me).await.expect("read"), None);
        let list = store.conversations().await.expect("list");
        assert_eq!(list[2].unread, 1);
        // The group's history shows the fanned-out text once.
        let page = store.history_page(&Chat::Group(family), None, 10).await.expect("page");
        assert_eq!(ids(&page), [to_group.id]);
    }

    #[tokio::test]
    async fn given_a_database_from_before_the_conversation_list_then_opening_it_fills_the_list() {
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
        let list = store.conversations().await.expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!((&list[0].chat, list[0].unread, list[0].last_activity_ms), (&Chat::Peer(n("111")), 1, 7));
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
    /// through an index (SQLite's plan says SCAN for a walk over a whole table).
    #[tokio::test]
    async fn given_the_view_queries_then_each_one_searches_an_index_and_scans_no_table() {
        let (_dir, store) = open();
        let plans = store
            .read(|c| {
                let queries = [
                    "SELECT id FROM messages INDEXED BY messages_chat WHERE peer = '1' AND group_id IS NULL
                     AND (COALESCE(received_at_ms, sent_at_ms), id) < (5, 'x')
                     ORDER BY COALESCE(received_at_ms, sent_at_ms) DESC, id DESC",
                    "SELECT id FROM messages INDEXED BY messages_group_chat WHERE group_id = 'g' AND update_body IS NULL
                     AND (COALESCE(received_at_ms, sent_at_ms), id) < (5, 'x')
                     ORDER BY COALESCE(received_at_ms, sent_at_ms) DESC, id DESC",
                    "SELECT id FROM files INDEXED BY files_chat WHERE peer = '1' AND (created_at_ms, id) < (5, 'x')
                     ORDER BY created_at_ms DESC, id DESC",
                    "UPDATE messages SET state = 'read', receipt_pending = 1
                     WHERE outgoing = 0 AND id = 'x' AND state = 'received'",
                ];
                let mut plans = Vec::new();
                for q in queries {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {q}"))?;
                    let steps: Vec<String> = stmt.query_map([], |r| r.get(3))?.collect::<Result<_, _>>()?;
                    plans.push(steps.join("; "));
                }
                Ok(plans)
            })
            .await
            .expect("plans");
        for plan in plans {
            assert!(
                plan.contains("USING") && !plan.contains("SCAN") && !plan.contains("TEMP B-TREE"),
                "{plan}"
            );
        }
    }
}
