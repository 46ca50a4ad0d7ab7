//! Which identity key owns each number: bound at first registration, checked ever after.
//!
//! Durable (SQLite under the data dir, or Redis with persistence, see [`crate::redis_store`]), so a
//! restart does not open a window for hijacking. A binding is made once and never overwritten.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use whatsap2p_proto::{Number, PublicKey};

pub use crate::store::StoreError;

/// Outcome of presenting a key for a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The number was free and is now bound to the key.
    New,
    /// The number was already bound to this key.
    Matches,
    /// The number belongs to another key; the claim is refused.
    Conflict {
        /// The key that owns the number.
        owner: PublicKey,
    },
}

/// Where number → key bindings live.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Binds `number` to `key` if free, or checks that it already is.
    async fn claim(&self, number: &Number, key: &PublicKey) -> Result<Binding, StoreError>;
    /// The key bound to `number`, if any.
    async fn key_of(&self, number: &Number) -> Result<Option<PublicKey>, StoreError>;
}

/// Bindings in a SQLite file.
pub struct SqliteIdentities {
    // rusqlite's Connection is not Sync; every use runs on a blocking thread, briefly.
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl SqliteIdentities {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bindings (
                number TEXT PRIMARY KEY,
                key BLOB NOT NULL,
                bound_at_ms INTEGER NOT NULL
            )",
        )?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Task)?
        .map_err(StoreError::Db)
    }
}

fn to_key(bytes: Vec<u8>) -> Option<PublicKey> {
    PublicKey::try_from(bytes.as_slice()).ok()
}

#[async_trait]
impl IdentityStore for SqliteIdentities {
    async fn claim(&self, number: &Number, key: &PublicKey) -> Result<Binding, StoreError> {
        let (number, key) = (number.to_string(), *key);
        self.with_conn(move |c| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let inserted = c.execute(
                "INSERT OR IGNORE INTO bindings (number, key, bound_at_ms) VALUES (?1, ?2, ?3)",
                params![number, key.0.as_slice(), now],
            )?;
            if inserted == 1 {
                return Ok(Binding::New);
            }
            let owner: Vec<u8> =
                c.query_row("SELECT key FROM bindings WHERE number = ?1", params![number], |r| r.get(0))?;
            Ok(match to_key(owner) {
                Some(owner) if owner == key => Binding::Matches,
                Some(owner) => Binding::Conflict { owner },
                // A corrupt row binds the number to no usable key: refuse rather than rebind.
                None => Binding::Conflict { owner: PublicKey([0; 32]) },
            })
        })
        .await
    }

    async fn key_of(&self, number: &Number) -> Result<Option<PublicKey>, StoreError> {
        let number = number.to_string();
        self.with_conn(move |c| {
            let key: Option<Vec<u8>> = c
                .query_row("SELECT key FROM bindings WHERE number = ?1", params![number], |r| r.get(0))
                .optional()?;
            Ok(key.and_then(to_key))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_bound_number_then_other_key_conflicts_even_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ids.sqlite");
        let n = Number::new("123").expect("n");
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        {
            let s = SqliteIdentities::open(&path).expect("open");
            assert_eq!(s.claim(&n, &a).await.expect("claim"), Binding::New);
            assert_eq!(s.claim(&n, &a).await.expect("claim"), Binding::Matches);
        }
        let s = SqliteIdentities::open(&path).expect("reopen");
        assert_eq!(s.claim(&n, &b).await.expect("claim"), Binding::Conflict { owner: a });
        assert_eq!(s.key_of(&n).await.expect("key"), Some(a));
    }
}
