//! The profile database's tables, indexes and triggers, and the one-time upgrades of older files.

use rusqlite::Connection;

/// Bumped when an upgrade step is added to [`upgrade`].
const VERSION: i64 = 1;

pub(super) const SCHEMA: &str = "
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

/// The conversation list (see `chats.rs`): one row per peer and per group with history, kept up
/// to date by triggers in the very transaction that adds or reads a message, so listing the
/// conversations reads one small table, whatever the history's length.
const CHATS: &str = "
CREATE TABLE IF NOT EXISTS chats (
    chat TEXT PRIMARY KEY,
    last_at_ms INTEGER NOT NULL,
    last_kind INTEGER NOT NULL,
    last_rowid INTEGER NOT NULL,
    unread INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS chats_on_message AFTER INSERT ON messages WHEN NEW.update_body IS NULL
BEGIN
    INSERT INTO chats (chat, last_at_ms, last_kind, last_rowid, unread)
    VALUES (CASE WHEN NEW.group_id IS NULL THEN NEW.peer ELSE 'g:' || NEW.group_id END,
            COALESCE(NEW.received_at_ms, NEW.sent_at_ms), 0, NEW.rowid,
            NEW.outgoing = 0 AND NEW.state = 'received')
    ON CONFLICT (chat) DO UPDATE SET
        unread = unread + excluded.unread,
        last_kind = CASE WHEN excluded.last_at_ms >= last_at_ms THEN 0 ELSE last_kind END,
        last_rowid = CASE WHEN excluded.last_at_ms >= last_at_ms THEN excluded.last_rowid ELSE last_rowid END,
        last_at_ms = MAX(last_at_ms, excluded.last_at_ms);
END;
CREATE TRIGGER IF NOT EXISTS chats_on_read AFTER UPDATE OF state ON messages
WHEN OLD.outgoing = 0 AND OLD.state = 'received' AND NEW.state <> 'received'
BEGIN
    UPDATE chats SET unread = unread - 1
    WHERE chat = CASE WHEN NEW.group_id IS NULL THEN NEW.peer ELSE 'g:' || NEW.group_id END;
END;
CREATE TRIGGER IF NOT EXISTS chats_on_file AFTER INSERT ON files
BEGIN
    INSERT INTO chats (chat, last_at_ms, last_kind, last_rowid, unread)
    VALUES (NEW.peer, NEW.created_at_ms, 1, NEW.rowid, 0)
    ON CONFLICT (chat) DO UPDATE SET
        last_kind = CASE WHEN excluded.last_at_ms >= last_at_ms THEN 1 ELSE last_kind END,
        last_rowid = CASE WHEN excluded.last_at_ms >= last_at_ms THEN excluded.last_rowid ELSE last_rowid END,
        last_at_ms = MAX(last_at_ms, excluded.last_at_ms);
END;
-- A page of a conversation, newest first from a cursor: without these, a long history is sorted
-- whole on every page.
CREATE INDEX IF NOT EXISTS messages_chat
    ON messages(peer, COALESCE(received_at_ms, sent_at_ms), id) WHERE group_id IS NULL;
CREATE INDEX IF NOT EXISTS messages_group_chat
    ON messages(group_id, COALESCE(received_at_ms, sent_at_ms), id) WHERE group_id IS NOT NULL AND update_body IS NULL;
CREATE INDEX IF NOT EXISTS files_chat ON files(peer, created_at_ms, id);
-- Marking a message read finds it by id alone: only unread ones are indexed, so the index stays small.
CREATE INDEX IF NOT EXISTS messages_unread ON messages(id) WHERE outgoing = 0 AND state = 'received';
";

/// Fills the conversation list of a file written before it existed.
const FILL_CHATS: &str = "
INSERT OR REPLACE INTO chats (chat, last_at_ms, last_kind, last_rowid, unread)
SELECT chat, MAX(at), 0, rowid, SUM(unread) FROM (
    SELECT CASE WHEN group_id IS NULL THEN peer ELSE 'g:' || group_id END AS chat,
           COALESCE(received_at_ms, sent_at_ms) AS at, rowid,
           outgoing = 0 AND state = 'received' AS unread
    FROM messages WHERE update_body IS NULL
) GROUP BY chat;
INSERT INTO chats (chat, last_at_ms, last_kind, last_rowid, unread)
SELECT * FROM (SELECT peer, MAX(created_at_ms), 1, rowid, 0 FROM files GROUP BY peer) WHERE true
ON CONFLICT (chat) DO UPDATE SET
    last_kind = CASE WHEN excluded.last_at_ms >= last_at_ms THEN 1 ELSE last_kind END,
    last_rowid = CASE WHEN excluded.last_at_ms >= last_at_ms THEN excluded.last_rowid ELSE last_rowid END,
    last_at_ms = MAX(last_at_ms, excluded.last_at_ms);
";

/// Creates what is missing and brings an older file up to date, in one transaction.
pub(super) fn upgrade(conn: &Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    tx.execute_batch(CHATS)?;
    if version < 1 {
        tx.execute_batch(FILL_CHATS)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()
}
