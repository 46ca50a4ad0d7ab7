//! Contacts with their names and pinned identity keys, blocked numbers, the user's settings, and the
//! pinned keys of directory servers.

use rusqlite::{params, OptionalExtension};
use whatsap2p_proto::{Number, PublicKey};

use super::{key_from, now_ms, Store};
use crate::ClientError;

/// A saved contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Their number.
    pub number: Number,
    /// Their identity key, pinned the first time we saw it (trust on first use).
    pub key: Option<PublicKey>,
    /// The name the user gave them, if any.
    pub name: Option<String>,
}

/// Who a number is to us, which decides what becomes of its messages (see `requests.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// A contact, or a number we wrote to first: its messages are taken.
    Known,
    /// Anyone else: its messages are held as a request.
    Stranger,
    /// Blocked: its messages are dropped, answered as an unanswered request would be.
    Blocked,
}

impl Store {
    /// Adds a contact (with `name`, which also renames one already there); returns false if it was
    /// already there.
    pub async fn add_contact(&self, number: &Number, name: Option<&str>) -> Result<bool, ClientError> {
        let (n, name) = (number.to_string(), name.map(str::to_owned));
        self.with(move |c| {
            let new = c.execute(
                "INSERT OR IGNORE INTO contacts (number, key, added_at_ms, name) VALUES (?1, NULL, ?2, ?3)",
                params![n, now_ms(), name],
            )? == 1;
            if !new && name.is_some() {
                c.execute("UPDATE contacts SET name = ?2 WHERE number = ?1", params![n, name])?;
            }
            Ok(new)
        })
        .await
    }

    /// Gives a contact a name (`None`: none); false if the number is not a contact.
    pub async fn rename_contact(&self, number: &Number, name: Option<&str>) -> Result<bool, ClientError> {
        let (n, name) = (number.to_string(), name.map(str::to_owned));
        self.with(move |c| {
            c.execute("UPDATE contacts SET name = ?2 WHERE number = ?1", params![n, name])
                .map(|rows| rows == 1)
        })
        .await
    }

    /// Removes a contact, and the key pinned for it; false if the number was not a contact.
    pub async fn remove_contact(&self, number: &Number) -> Result<bool, ClientError> {
        let n = number.to_string();
        self.with(move |c| {
            c.execute("DELETE FROM contacts WHERE number = ?1", params![n]).map(|rows| rows == 1)
        })
        .await
    }

    /// All contacts, in the order they were added (from the reading connection).
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT number, key, name FROM contacts ORDER BY added_at_ms, number")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?, r.get::<_, Option<String>>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (number, key, name) = row?;
                // A row that no longer parses (edited by hand) is skipped, not fatal.
                if let Ok(number) = Number::new(&number) {
                    out.push(Contact { number, key: key_from(key), name });
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
            let row: Option<(Option<Vec<u8>>, Option<String>)> = c
                .query_row("SELECT key, name FROM contacts WHERE number = ?1", params![n.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(row.map(|(k, name)| Contact { number: n, key: key_from(k), name }))
        })
        .await
    }

    /// Whether `number` is blocked, a contact or a number we wrote to first (a text or a file of
    /// our own to it), or a stranger.
    pub(crate) async fn standing(&self, number: &Number) -> Result<Standing, ClientError> {
        let n = number.to_string();
        self.quick(move |c| {
            c.prepare_cached(
                "SELECT CASE
                     WHEN EXISTS (SELECT 1 FROM blocked WHERE number = ?1) THEN 2
                     WHEN EXISTS (SELECT 1 FROM contacts WHERE number = ?1)
                       OR EXISTS (SELECT 1 FROM messages WHERE peer = ?1 AND outgoing = 1
                                  AND group_id IS NULL AND update_body IS NULL)
                       OR EXISTS (SELECT 1 FROM files WHERE peer = ?1 AND outgoing = 1) THEN 0
                     ELSE 1 END",
            )?
            .query_row(params![n], |r| r.get::<_, i64>(0))
            .map(|s| match s {
                0 => Standing::Known,
                2 => Standing::Blocked,
                _ => Standing::Stranger,
            })
        })
        .await
    }

    /// Blocks or unblocks `number`; returns whether that changed anything.
    pub(crate) async fn set_blocked(&self, number: &Number, blocked: bool) -> Result<bool, ClientError> {
        let n = number.to_string();
        self.with(move |c| {
            let rows = if blocked {
                c.execute(
                    "INSERT OR IGNORE INTO blocked (number, at_ms) VALUES (?1, ?2)",
                    params![n, now_ms()],
                )?
            } else {
                c.execute("DELETE FROM blocked WHERE number = ?1", params![n])?
            };
            Ok(rows == 1)
        })
        .await
    }

    /// The numbers blocked, in the order they were blocked.
    pub async fn blocked(&self) -> Result<Vec<Number>, ClientError> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT number FROM blocked ORDER BY at_ms, number")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                if let Ok(n) = Number::new(&row?) {
                    out.push(n);
                }
            }
            Ok(out)
        })
        .await
    }

    /// A setting's stored value, if the user set it.
    pub(crate) async fn setting(&self, key: &'static str) -> Result<Option<String>, ClientError> {
        self.with(move |c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", params![key], |r| r.get(0)).optional()
        })
        .await
    }

    /// Stores a setting.
    pub(crate) async fn set_setting(&self, key: &'static str, value: String) -> Result<(), ClientError> {
        self.with(move |c| {
            c.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)", params![key, value])
                .map(|_| ())
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

    /// The keys pinned for these directory addresses (by their text), for those that have one.
    pub async fn server_pins(&self, servers: Vec<String>) -> Result<Vec<(String, PublicKey)>, ClientError> {
        self.with(move |c| {
            let mut query = c.prepare_cached("SELECT key FROM server_pins WHERE server = ?1")?;
            let mut pins = Vec::new();
            for s in servers {
                let k: Option<Vec<u8>> = query.query_row(params![s], |r| r.get(0)).optional()?;
                if let Some(key) = key_from(k) {
                    pins.push((s, key));
                }
            }
            Ok(pins)
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
