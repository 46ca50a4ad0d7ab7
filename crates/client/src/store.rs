//! The profile's database: contacts with their pinned identity keys, and pinned server keys.
//!
//! SQLite in WAL mode; every call runs on a blocking thread so the async tasks never wait on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, OptionalExtension};
use whatsap2p_proto::{Number, PublicKey};

use crate::ClientError;

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
}

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
";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, ClientError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().unwrap_or_else(|p| p.into_inner())))
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
}
