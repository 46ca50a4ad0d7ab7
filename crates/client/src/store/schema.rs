//! The profile database's tables and indexes, created (or completed, in an older file) at open.

use rusqlite::Connection;

/// The schema's version, kept in `PRAGMA user_version`: 2 added contact names, message requests,
/// blocked numbers and settings.
const VERSION: i64 = 2;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contacts (
    number TEXT PRIMARY KEY,
    key BLOB,
    added_at_ms INTEGER NOT NULL,
    name TEXT
);
-- Message requests: per number whose messages are held, when its first one came. Its items, in the
-- order they came: `kind` 0 a text, 1 a file offer (name, size, media type; no content), 2 a group
-- invitation (`body`: the signed state), 3 a text to the group of a held invitation (`sender` may then
-- be another member than `peer`). See `requests.rs`.
CREATE TABLE IF NOT EXISTS requests (
    peer TEXT PRIMARY KEY,
    first_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS request_items (
    seq INTEGER PRIMARY KEY,
    peer TEXT NOT NULL,
    sender TEXT NOT NULL,
    kind INTEGER NOT NULL,
    id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    sent_at_ms INTEGER NOT NULL DEFAULT 0,
    text TEXT NOT NULL DEFAULT '',
    group_id TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    media_type TEXT NOT NULL DEFAULT '',
    body BLOB,
    UNIQUE (sender, kind, id)
);
CREATE INDEX IF NOT EXISTS request_items_peer ON request_items(peer, seq);
CREATE INDEX IF NOT EXISTS request_items_group ON request_items(group_id) WHERE group_id IS NOT NULL;
-- Numbers whose messages are dropped, answered as an unanswered request would be.
CREATE TABLE IF NOT EXISTS blocked (
    number TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
-- The user's settings (`read_receipts`: '0' or '1').
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
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

/// What a conversation view reads, filed by `chats::index` in batches (with each checkpoint, about
/// once a second, on a blocking thread) instead of by each message's own commit: every index the message path
/// writes costs it a page in the WAL per message (measured at 5 to 10 µs a commit each). Rows past
/// the `chat_progress` marks are not indexed yet; readers take them from `messages` and `files`
/// directly (a second's worth at most).
const CHATS: &str = "
CREATE TABLE IF NOT EXISTS chat_progress (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    messages INTEGER NOT NULL,
    files INTEGER NOT NULL
);
INSERT OR IGNORE INTO chat_progress (one, messages, files) VALUES (1, 0, 0);
-- Every text and file of each conversation in order: `chat` is a number, or 'g:' and a group id;
-- `kind` 0 a text received, 1 a text sent, 2 a file; `row` its rowid. A group text sent to several
-- members is here once.
CREATE TABLE IF NOT EXISTS chat_items (
    chat TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    row INTEGER NOT NULL,
    PRIMARY KEY (chat, at_ms, id, kind)
) WITHOUT ROWID;
-- Texts received and not read yet, by id: what marking one read looks up.
CREATE TABLE IF NOT EXISTS unread (
    id TEXT NOT NULL,
    row INTEGER NOT NULL,
    chat TEXT NOT NULL,
    PRIMARY KEY (id, row)
) WITHOUT ROWID;
-- One line per conversation: its latest item and how many texts are unread.
CREATE TABLE IF NOT EXISTS chats (
    chat TEXT PRIMARY KEY,
    last_at_ms INTEGER NOT NULL,
    last_kind INTEGER NOT NULL,
    last_row INTEGER NOT NULL,
    unread INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

/// Creates what is missing, in one transaction. (An older file's history is filed by the first
/// checkpoint, like any new message.)
pub(super) fn upgrade(conn: &Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(SCHEMA)?;
    // A file from before contact names: `CREATE TABLE IF NOT EXISTS` left its contacts as they were.
    let has_name: bool =
        tx.query_row("SELECT COUNT(*) FROM pragma_table_info('contacts') WHERE name = 'name'", [], |r| {
            r.get(0)
        })?;
    if !has_name {
        tx.execute_batch("ALTER TABLE contacts ADD COLUMN name TEXT")?;
    }
    tx.execute_batch(CHATS)?;
    super::shown::upgrade(&tx)?;
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()
}
