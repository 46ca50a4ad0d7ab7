//! The profile's database: contacts with their pinned identity keys, and pinned server keys.
//!
//! SQLite in WAL mode. Long calls run on a blocking thread; the short statements of a message's
//! path run on the calling task when the connection is free (see `Store::quick`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, OptionalExtension};
use whatsap2p_proto::group::{GroupId, SignedGroupState};
use whatsap2p_proto::{MessageId, Number, PublicKey};

use crate::ClientError;

/// Most messages held for one group (and from one sender) until the group's membership arrives.
const MAX_HELD_PER_GROUP: i64 = 1000;

/// A saved contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Their number.
    pub number: Number,
    /// Their identity key, pinned the first time we saw it (trust on first use).
    pub key: Option<PublicKey>,
}

/// Handle to the profile database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<rusqlite::Connection>>,
    /// Something was written since the last checkpoint (see [`Store::checkpoint`]).
    dirty: Arc<AtomicBool>,
}

/// SQLite checkpoints the WAL by itself only past this many pages (40 MiB): a safety net, since
/// [`Store::checkpoint`] does it on a blocking thread long before. Its own default, 1 000 pages,
/// would run a checkpoint, fsyncs included, inside whichever commit crosses it, which may be a
/// short statement running on an async task.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contacts (
    number TEXT PRIMARY KEY,
    key BLOB,
    added_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS server_pins (
    server TEXT PRIMARY KEY,
    key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    peer TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER,
    state TEXT NOT NULL,
    receipt_pending INTEGER NOT NULL DEFAULT 0,
    group_id TEXT,
    update_body BLOB,
    PRIMARY KEY (peer, outgoing, id)
);
CREATE INDEX IF NOT EXISTS messages_group ON messages(group_id, id) WHERE group_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS held_group_texts (
    peer TEXT NOT NULL,
    id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, id)
);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    state BLOB NOT NULL,
    left_group INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    peer TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    blake3 TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
-- What a courier reads on every send: without these it walks the peer's whole history. (They
-- replace two earlier indexes by state alone; every index is one more page written per message.)
DROP INDEX IF EXISTS messages_unfinished;
DROP INDEX IF EXISTS messages_receipts;
CREATE INDEX IF NOT EXISTS messages_outbox ON messages(peer) WHERE outgoing = 1 AND state IN ('queued', 'sent');
CREATE INDEX IF NOT EXISTS messages_receipts_due ON messages(peer) WHERE outgoing = 0 AND receipt_pending = 1;
";

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

/// Where a message stands. Outgoing: queued → sent → delivered → read (or failed). Incoming:
/// received → read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// Stored in the outbox, not yet written to the recipient.
    Queued,
    /// Written to the recipient, no receipt yet.
    Sent,
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

impl Store {
    /// Opens (creating) `path`.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode, NORMAL loses nothing when the process dies (SIGKILL included); only a power
        // loss can take the last commits. FULL would fsync every message, several times.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The profile's lock file already keeps other processes out: holding SQLite's locks for
        // the connection's life saves the file-lock system calls of every transaction.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), dirty: Arc::new(AtomicBool::new(false)) })
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

    /// Moves what the WAL holds into the database file, on a blocking thread, if anything was
    /// written since the last time: the client calls it every second, so the short statements
    /// that run on async tasks never carry a checkpoint.
    pub(crate) async fn checkpoint(&self) -> Result<(), ClientError> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        })
        .await
        .map_err(|_| ClientError::ShuttingDown)?
        .map_err(ClientError::Store)
    }

    /// Adds a contact; returns false if it was already there.
    pub async fn add_contact(&self, number: &Number) -> Result<bool, ClientError> {
        let n = number.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO contacts (number, key, added_at_ms) VALUES (?1, NULL, ?2)",
                params![n, now_ms()],
            )
            .map(|rows| rows == 1)
        })
        .await
    }

    /// All contacts, in the order they were added.
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT number, key FROM contacts ORDER BY added_at_ms, number")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (number, key) = row?;
                // A row that no longer parses (edited by hand) is skipped, not fatal.
                if let Ok(number) = Number::new(&number) {
                    out.push(Contact { number, key: key_from(key) });
                }
            }
            Ok(out)
        })
        .await
    }

    /// The contact, if saved.
    pub async fn contact(&self, number: &Number) -> Result<Option<Contact>, ClientError> {
        let n = number.clone();
        self.with(move |c| {
            let key: Option<Option<Vec<u8>>> = c
                .query_row("SELECT key FROM contacts WHERE number = ?1", params![n.as_str()], |r| r.get(0))
                .optional()?;
            Ok(key.map(|k| Contact { number: n, key: key_from(k) }))
        })
        .await
    }

    /// Pins `key` for a contact that has none yet.
    pub async fn pin_contact_key(&self, number: &Number, key: &PublicKey) -> Result<(), ClientError> {
        let (n, k) = (number.to_string(), *key);
        self.with(move |c| {
            c.execute(
                "UPDATE contacts SET key = ?2 WHERE number = ?1 AND key IS NULL",
                params![n, k.0.as_slice()],
            )
            .map(|_| ())
        })
        .await
    }

    /// Checks `presented` against the key pinned for a contact, pinning it on first use. A number
    /// that is not a contact has no pin and passes.
    pub async fn check_pin(&self, number: &Number, presented: PublicKey) -> Result<(), ClientError> {
        let Some(contact) = self.contact(number).await? else { return Ok(()) };
        match contact.key {
            Some(pinned) if pinned != presented => {
                let err = ClientError::KeyChanged { number: number.clone(), pinned, presented };
                tracing::warn!("{err}");
                Err(err)
            }
            Some(_) => Ok(()),
            None => self.pin_contact_key(number, &presented).await,
        }
    }

    /// The key pinned for a directory server.
    pub async fn server_pin(&self, server: &str) -> Result<Option<PublicKey>, ClientError> {
        let s = server.to_owned();
        self.with(move |c| {
            let k: Option<Vec<u8>> = c
                .query_row("SELECT key FROM server_pins WHERE server = ?1", params![s], |r| r.get(0))
                .optional()?;
            Ok(key_from(k))
        })
        .await
    }

    /// Pins a directory server's key.
    pub async fn pin_server(&self, server: &str, key: &PublicKey) -> Result<(), ClientError> {
        let (s, k) = (server.to_owned(), *key);
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO server_pins (server, key) VALUES (?1, ?2)",
                params![s, k.0.as_slice()],
            )
            .map(|_| ())
        })
        .await
    }

    /// Puts a message in the outbox.
    pub async fn queue_outgoing(&self, to: &Number, text: OutgoingText) -> Result<(), ClientError> {
        let to = to.to_string();
        self.quick(move |c| insert_outgoing(c, &to, &text, MessageState::Queued)).await
    }

    /// One trip for a courier about to write to `peer`: reads what is owed, leaves out the texts in
    /// `in_flight` (written on this link and not overdue), marks the rest `sent`, and adds `new` (if
    /// any) as the last, already `sent`, all in one transaction.
    pub(crate) async fn take_owed(
        &self,
        peer: &Number,
        new: Option<OutgoingText>,
        in_flight: HashSet<MessageId>,
    ) -> Result<Owed, ClientError> {
        let peer = peer.clone();
        self.quick(move |c| {
            let tx = c.unchecked_transaction()?;
            let owed = take_owed(&tx, &peer, new.as_ref(), &in_flight)?;
            tx.commit()?;
            Ok(owed)
        })
        .await
    }

    /// A group text in one transaction for every member: for each of `direct` (with what is in
    /// flight on its link), what [`Store::take_owed`] would return with the text as `new`; for each
    /// of `queued`, the text goes in the outbox as `queued`.
    pub(crate) async fn take_owed_fanout(
        &self,
        direct: Vec<(Number, HashSet<MessageId>)>,
        queued: Vec<Number>,
        text: OutgoingText,
    ) -> Result<Vec<Owed>, ClientError> {
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            let mut owed = Vec::with_capacity(direct.len());
            for (peer, in_flight) in &direct {
                owed.push(take_owed(&tx, peer, Some(&text), in_flight)?);
            }
            for peer in &queued {
                insert_outgoing(&tx, peer.as_str(), &text, MessageState::Queued)?;
            }
            tx.commit()?;
            Ok(owed)
        })
        .await
    }

    /// Puts a group membership change for `to` in the outbox (not part of any history).
    pub async fn queue_group_update(
        &self,
        to: &Number,
        id: MessageId,
        update: &SignedGroupState,
    ) -> Result<(), ClientError> {
        let body = postcard::to_allocvec(update).map_err(|e| ClientError::Group(e.to_string()))?;
        let (to, id, group) = (to.to_string(), id.to_string(), update.state.id.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO messages (peer, outgoing, id, text, sent_at_ms, state, group_id, update_body)
                 VALUES (?1, 1, ?2, '', ?3, 'queued', ?4, ?5)",
                params![to, id, now_ms(), group, body],
            )
            .map(|_| ())
        })
        .await
    }

    /// Saves a group's state (and whether we are out of it).
    pub async fn save_group(&self, update: &SignedGroupState, left: bool) -> Result<(), ClientError> {
        let body = postcard::to_allocvec(update).map_err(|e| ClientError::Group(e.to_string()))?;
        let id = update.state.id.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO groups (id, state, left_group) VALUES (?1, ?2, ?3)",
                params![id, body, left],
            )
            .map(|_| ())
        })
        .await
    }

    /// A group's latest signed state and whether we are out of it.
    pub async fn group(&self, id: GroupId) -> Result<Option<(SignedGroupState, bool)>, ClientError> {
        let id = id.to_string();
        let row: Option<(Vec<u8>, bool)> = self
            .with(move |c| {
                c.query_row("SELECT state, left_group FROM groups WHERE id = ?1", params![id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .await?;
        Ok(row.and_then(|(body, left)| postcard::from_bytes(&body).ok().map(|s| (s, left))))
    }

    /// Every group we know, with whether we are out of it.
    pub async fn groups(&self) -> Result<Vec<(SignedGroupState, bool)>, ClientError> {
        let rows: Vec<(Vec<u8>, bool)> = self
            .with(|c| {
                let mut stmt = c.prepare("SELECT state, left_group FROM groups ORDER BY rowid")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(b, left)| postcard::from_bytes(&b).ok().map(|s| (s, left)))
            .collect())
    }

    /// Keeps a message to a group we do not know yet (its invitation is still on its way from another
    /// member). Returns false when too many are held for that group already.
    pub async fn hold_group_text(
        &self,
        from: &Number,
        group: GroupId,
        id: MessageId,
        text: &str,
        sent_at_ms: u64,
    ) -> Result<bool, ClientError> {
        let (from, group, id, text) = (from.to_string(), group.to_string(), id.to_string(), text.to_owned());
        self.with(move |c| {
            // Bounded per group and per sender: random group ids cannot fill the disk either.
            let (per_group, per_sender): (i64, i64) = c.query_row(
                "SELECT (SELECT COUNT(*) FROM held_group_texts WHERE group_id = ?1),
                        (SELECT COUNT(*) FROM held_group_texts WHERE peer = ?2)",
                params![group, from],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if per_group >= MAX_HELD_PER_GROUP || per_sender >= MAX_HELD_PER_GROUP {
                return Ok(false);
            }
            c.execute(
                "INSERT OR IGNORE INTO held_group_texts (peer, id, group_id, text, sent_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![from, id, group, text, sent_at_ms as i64],
            )?;
            Ok(true)
        })
        .await
    }

    /// Takes the messages held for `group`, oldest first.
    pub async fn take_held_group_texts(
        &self,
        group: GroupId,
    ) -> Result<Vec<(Number, MessageId, String, u64)>, ClientError> {
        let group = group.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT peer, id, text, sent_at_ms FROM held_group_texts WHERE group_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![group], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (peer, id, text, at) = row?;
                if let (Ok(peer), Ok(id)) = (Number::new(&peer), id.parse()) {
                    out.push((peer, id, text, at as u64));
                }
            }
            c.execute("DELETE FROM held_group_texts WHERE group_id = ?1", params![group])?;
            Ok(out)
        })
        .await
    }

    /// The last `limit` messages of a group, oldest first (each message once, whatever its fan-out).
    pub async fn group_history(
        &self,
        group: GroupId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        let group = group.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT * FROM (SELECT peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id, update_body
                 FROM messages WHERE group_id = ?1 AND update_body IS NULL GROUP BY outgoing, id
                 ORDER BY COALESCE(received_at_ms, sent_at_ms) DESC, id DESC LIMIT ?2)
                 ORDER BY COALESCE(received_at_ms, sent_at_ms), id",
            )?;
            let rows = stmt.query_map(params![group, limit as i64], row_to_message)?;
            rows.filter_map(|r| r.transpose()).collect()
        })
        .await
    }

    /// Stores a received message; false if this sender's id was already stored (a retry).
    pub async fn store_incoming(
        &self,
        from: &Number,
        id: MessageId,
        text: &str,
        sent_at_ms: u64,
        group: Option<GroupId>,
    ) -> Result<bool, ClientError> {
        let (from, id, text, group) =
            (from.to_string(), id.to_string(), text.to_owned(), group.map(|g| g.to_string()));
        self.quick(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO messages (peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, 'received', ?6)",
            )?
            .execute(params![from, id, text, sent_at_ms as i64, now_ms(), group])
            .map(|n| n == 1)
        })
        .await
    }

    /// Moves an outgoing message to `state` if that is forward from where it is; returns whether a
    /// message (not a group change riding the outbox) moved.
    pub async fn advance_outgoing(
        &self,
        to: &Number,
        id: MessageId,
        state: MessageState,
    ) -> Result<bool, ClientError> {
        let from_states = match state {
            MessageState::Sent => "('queued')",
            MessageState::Delivered => "('queued', 'sent')",
            MessageState::Read => "('queued', 'sent', 'delivered')",
            MessageState::Failed => "('queued', 'sent')",
            MessageState::Queued | MessageState::Received => return Ok(false),
        };
        let (to, id) = (to.to_string(), id.to_string());
        let sql = format!(
            "UPDATE messages SET state = ?3 WHERE peer = ?1 AND outgoing = 1 AND id = ?2 AND state IN {from_states}
             RETURNING update_body IS NULL"
        );
        // Group membership changes move too, but only messages a person wrote count as moved.
        self.quick(move |c| {
            c.prepare_cached(&sql)?
                .query_row(params![to, id, state.as_str()], |r| r.get::<_, bool>(0))
                .optional()
                .map(|v| v == Some(true))
        })
        .await
    }

    /// The outbox for one peer: messages not yet confirmed, oldest first.
    pub async fn unconfirmed(&self, to: &Number) -> Result<Vec<StoredMessage>, ClientError> {
        let to = to.to_string();
        self.with(move |c| unconfirmed(c, &to)).await
    }

    /// Whether anything waits to go to `peer`: unconfirmed messages or read receipts.
    pub async fn has_owed(&self, peer: &Number) -> Result<bool, ClientError> {
        let peer = peer.to_string();
        self.quick(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages INDEXED BY messages_outbox
                               WHERE peer = ?1 AND outgoing = 1 AND state IN ('queued', 'sent'))
                     OR EXISTS (SELECT 1 FROM messages INDEXED BY messages_receipts_due
                               WHERE peer = ?1 AND outgoing = 0 AND receipt_pending = 1)",
            )?
            .query_row(params![peer], |r| r.get(0))
        })
        .await
    }

    /// Peers with something to deliver: unconfirmed messages or read receipts.
    pub async fn peers_with_work(&self) -> Result<Vec<Number>, ClientError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT peer FROM messages INDEXED BY messages_outbox WHERE outgoing = 1 AND state IN ('queued', 'sent')
                 UNION
                 SELECT peer FROM messages INDEXED BY messages_receipts_due WHERE outgoing = 0 AND receipt_pending = 1",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for r in rows {
                if let Ok(n) = Number::new(&r?) {
                    out.push(n);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Marks an incoming message read and schedules its receipt; returns its sender, or `None` if no
    /// unread incoming message has that id.
    pub async fn mark_read(&self, id: MessageId) -> Result<Option<Number>, ClientError> {
        let id = id.to_string();
        self.with(move |c| {
            let peer: Option<String> = c
                .query_row(
                    "UPDATE messages SET state = 'read', receipt_pending = 1
                     WHERE outgoing = 0 AND id = ?1 AND state = 'received' RETURNING peer",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(peer.and_then(|p| Number::new(&p).ok()))
        })
        .await
    }

    /// Read receipts waiting to go to `peer`.
    pub async fn pending_receipts(&self, peer: &Number) -> Result<Vec<MessageId>, ClientError> {
        let peer = peer.to_string();
        self.with(move |c| pending_receipts(c, &peer)).await
    }

    /// The peer acknowledged our read receipt for its message `id`; returns whether one was pending.
    pub async fn receipt_delivered(&self, peer: &Number, id: MessageId) -> Result<bool, ClientError> {
        let (peer, id) = (peer.to_string(), id.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE messages SET receipt_pending = 0 WHERE peer = ?1 AND outgoing = 0 AND id = ?2 AND receipt_pending = 1",
                params![peer, id],
            )
            .map(|n| n == 1)
        })
        .await
    }

    /// The last `limit` messages with `peer`, oldest first.
    pub async fn history(&self, peer: &Number, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        let peer = peer.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT * FROM (SELECT peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id, update_body
                 FROM messages WHERE peer = ?1 AND group_id IS NULL ORDER BY COALESCE(received_at_ms, sent_at_ms) DESC, id DESC LIMIT ?2)
                 ORDER BY COALESCE(received_at_ms, sent_at_ms), id",
            )?;
            let rows = stmt.query_map(params![peer, limit as i64], row_to_message)?;
            rows.filter_map(|r| r.transpose()).collect()
        })
        .await
    }

    /// Records a file (`pending` for one to send, `received` for one saved).
    pub async fn insert_file(&self, f: &FileRecord, state: &'static str) -> Result<(), ClientError> {
        let f = f.clone();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO files (id, peer, outgoing, path, name, size, media_type, blake3, state, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    f.id.to_string(),
                    f.peer.as_str(),
                    f.outgoing,
                    f.path.to_string_lossy(),
                    f.name,
                    f.size as i64,
                    f.media_type,
                    hex::encode(f.blake3),
                    state,
                    now_ms()
                ],
            )
            .map(|_| ())
        })
        .await
    }

    /// Sets a file's state (`sent`, `failed`).
    pub async fn set_file_state(&self, id: MessageId, state: &'static str) -> Result<(), ClientError> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute("UPDATE files SET state = ?2 WHERE id = ?1", params![id, state]).map(|_| ())
        })
        .await
    }

    /// True if we already saved the file `id` from `peer` (a retry of a finished transfer).
    pub async fn has_received_file(&self, peer: &Number, id: MessageId) -> Result<bool, ClientError> {
        let (peer, id) = (peer.to_string(), id.to_string());
        self.with(move |c| {
            c.query_row(
                "SELECT 1 FROM files WHERE id = ?1 AND peer = ?2 AND outgoing = 0 AND state = 'received'",
                params![id, peer],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
        .await
    }

    /// Outgoing files not yet received, oldest first: what to resume after a restart.
    pub async fn pending_files(&self) -> Result<Vec<FileRecord>, ClientError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, peer, path, name, size, media_type, blake3 FROM files
                 WHERE outgoing = 1 AND state = 'pending' ORDER BY created_at_ms, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, peer, path, name, size, media_type, hash) = row?;
                let mut blake3 = [0u8; 32];
                let parsed =
                    (id.parse::<MessageId>(), Number::new(&peer), hex::decode_to_slice(&hash, &mut blake3));
                if let (Ok(id), Ok(peer), Ok(())) = parsed {
                    out.push(FileRecord {
                        id,
                        peer,
                        outgoing: true,
                        path: path.into(),
                        name,
                        size: size as u64,
                        media_type,
                        blake3,
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}

/// What [`Store::take_owed`] does, inside the caller's transaction.
fn take_owed(
    tx: &rusqlite::Connection,
    number: &Number,
    new: Option<&OutgoingText>,
    in_flight: &HashSet<MessageId>,
) -> Result<Owed, rusqlite::Error> {
    let peer = number.as_str();
    let unconfirmed = unconfirmed(tx, peer)?;
    let awaiting = !unconfirmed.is_empty() || new.is_some();
    let mut owed = Owed { awaiting, ..Owed::default() };
    let mut mark = tx.prepare_cached(
        "UPDATE messages SET state = 'sent' WHERE peer = ?1 AND outgoing = 1 AND id = ?2 AND state = 'queued'",
    )?;
    for m in unconfirmed {
        if in_flight.contains(&m.id) {
            owed.in_flight.push(m.id);
            continue;
        }
        if m.state == MessageState::Queued {
            mark.execute(params![peer, m.id.to_string()])?;
            if m.update.is_none() {
                owed.newly_sent.push((m.id, m.group));
            }
        }
        owed.texts.push(m);
    }
    // The newest of all: written last, so it goes in as `sent` at once.
    if let Some(new) = new {
        insert_outgoing(tx, peer, new, MessageState::Sent)?;
        owed.newly_sent.push((new.id, new.group));
        owed.texts.push(StoredMessage {
            id: new.id,
            peer: number.clone(),
            outgoing: true,
            text: new.text.clone(),
            sent_at_ms: new.sent_at_ms,
            received_at_ms: None,
            state: MessageState::Sent,
            group: new.group,
            update: None,
        });
    }
    owed.receipts = pending_receipts(tx, peer)?;
    Ok(owed)
}

fn insert_outgoing(
    c: &rusqlite::Connection,
    to: &str,
    m: &OutgoingText,
    state: MessageState,
) -> Result<(), rusqlite::Error> {
    c.prepare_cached(
        "INSERT INTO messages (peer, outgoing, id, text, sent_at_ms, state, group_id)
         VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        to,
        m.id.to_string(),
        m.text,
        m.sent_at_ms as i64,
        state.as_str(),
        m.group.map(|g| g.to_string())
    ])
    .map(|_| ())
}

fn unconfirmed(c: &rusqlite::Connection, to: &str) -> Result<Vec<StoredMessage>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id, update_body
         FROM messages INDEXED BY messages_outbox
         WHERE peer = ?1 AND outgoing = 1 AND state IN ('queued', 'sent') ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![to], row_to_message)?;
    rows.filter_map(|r| r.transpose()).collect()
}

fn pending_receipts(c: &rusqlite::Connection, peer: &str) -> Result<Vec<MessageId>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT id FROM messages INDEXED BY messages_receipts_due
         WHERE peer = ?1 AND outgoing = 0 AND receipt_pending = 1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![peer], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(id) = r?.parse() {
            out.push(id);
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    #[tokio::test]
    async fn given_outbox_then_states_only_move_forward_and_acks_are_scoped_to_the_peer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        let (a, b) = (MessageId::new(), MessageId::new());
        store.queue_outgoing(&n("456"), text(a, "one")).await.expect("queue");
        store.queue_outgoing(&n("456"), text(b, "two")).await.expect("queue");
        let ids: Vec<_> = store.unconfirmed(&n("456")).await.expect("outbox").iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![a, b]);
        // Another peer acknowledging our id changes nothing.
        assert!(!store.advance_outgoing(&n("789"), a, MessageState::Delivered).await.expect("ack"));
        assert!(store.advance_outgoing(&n("456"), a, MessageState::Delivered).await.expect("ack"));
        assert!(!store.advance_outgoing(&n("456"), a, MessageState::Sent).await.expect("back"));
        assert_eq!(store.unconfirmed(&n("456")).await.expect("outbox").len(), 1);
        assert_eq!(store.peers_with_work().await.expect("work"), vec![n("456")]);
    }

    fn text(id: MessageId, text: &str) -> OutgoingText {
        OutgoingText { id, text: text.into(), sent_at_ms: 1, group: None }
    }

    #[tokio::test]
    async fn given_texts_in_flight_then_take_owed_marks_only_the_rest_sent_and_forgets_confirmed_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        let peer = n("456");
        assert!(!store.has_owed(&peer).await.expect("owed"));
        let (a, b) = (MessageId::new(), MessageId::new());
        let owed = store.take_owed(&peer, Some(text(a, "one")), HashSet::new()).await.expect("take");
        assert_eq!(owed.texts.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a]);
        assert_eq!(owed.newly_sent, vec![(a, None)]);
        assert!(owed.awaiting && owed.in_flight.is_empty());
        // `a` is on the wire: the next send writes only `b`, and says `a` is still in flight.
        let owed = store.take_owed(&peer, Some(text(b, "two")), HashSet::from([a])).await.expect("take");
        assert_eq!(owed.texts.iter().map(|m| m.id).collect::<Vec<_>>(), vec![b]);
        assert_eq!(owed.newly_sent, vec![(b, None)]);
        assert_eq!(owed.in_flight, vec![a]);
        // Sent but unacknowledged texts are still owed (a new link writes them again).
        assert!(store.has_owed(&peer).await.expect("owed"));
        let owed = store.take_owed(&peer, None, HashSet::new()).await.expect("take");
        assert_eq!(owed.texts.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a, b]);
        assert!(owed.newly_sent.is_empty(), "already sent: not reported again");
        for id in [a, b] {
            assert!(store.advance_outgoing(&peer, id, MessageState::Delivered).await.expect("ack"));
        }
        let owed = store.take_owed(&peer, None, HashSet::from([a, b])).await.expect("take");
        assert!(!owed.awaiting && owed.in_flight.is_empty() && owed.texts.is_empty());
        assert!(!store.has_owed(&peer).await.expect("owed"));
    }

    #[tokio::test]
    async fn given_writes_then_one_checkpoint_runs_and_the_data_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite");
        let store = Store::open(&path).expect("open");
        let id = MessageId::new();
        store.queue_outgoing(&n("456"), text(id, "kept")).await.expect("queue");
        assert!(store.dirty.load(Ordering::Relaxed), "a write marks the store");
        store.checkpoint().await.expect("checkpoint");
        assert!(!store.dirty.load(Ordering::Relaxed), "a checkpoint clears the mark");
        store.checkpoint().await.expect("nothing to do");
        drop(store);
        let store = Store::open(&path).expect("reopen");
        let ids: Vec<_> = store.unconfirmed(&n("456")).await.expect("outbox").iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![id]);
    }

    #[tokio::test]
    async fn given_same_incoming_id_twice_then_stored_once_and_read_receipt_scheduled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        let id = MessageId::new();
        assert!(store.store_incoming(&n("123"), id, "hi", 5, None).await.expect("store"));
        assert!(!store.store_incoming(&n("123"), id, "hi", 5, None).await.expect("store"));
        assert_eq!(store.history(&n("123"), 10).await.expect("history").len(), 1);
        assert_eq!(store.mark_read(id).await.expect("read"), Some(n("123")));
        assert_eq!(store.mark_read(id).await.expect("read"), None);
        assert_eq!(store.pending_receipts(&n("123")).await.expect("receipts"), vec![id]);
        assert_eq!(store.peers_with_work().await.expect("work"), vec![n("123")]);
        assert!(store.has_owed(&n("123")).await.expect("owed"));
        assert!(store.receipt_delivered(&n("123"), id).await.expect("ack"));
        assert!(store.pending_receipts(&n("123")).await.expect("receipts").is_empty());
    }
}
