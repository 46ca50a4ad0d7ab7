//! Contacts with their pinned identity keys, and the pinned keys of directory servers.

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
}

impl Store {
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

    /// All contacts, in the order they were added (from the reading connection).
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        self.read(|c| {
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
