//! Who holds each number, and where it is online: the directory's only volatile state.
//!
//! A number has at most one session in the whole directory. Its entry names that session, the
//! [`Owner`], from the end of the handshake on ([`PresenceStore::take_over`], which replaces
//! whichever session held the number), and carries the address of the number's latest `Register`:
//! the number is online while its entry has one. Only the owner renews, registers or deletes the
//! entry, so a session that ends late, or was replaced, never takes the number offline.
//!
//! Behind a trait so several directory instances can share it (in Redis, see
//! [`crate::redis_store`]) while the sessions stay unchanged. Every change is a [`Change`]. The
//! memory store hands it back to the caller, which applies it in this process at once; a shared
//! store publishes it, and every instance (the one that made it too) applies it when its [`Feed`]
//! delivers it, so all of them see the changes of one number in the order the store made them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;

use async_trait::async_trait;
use tokio::sync::mpsc;
use whatsap2p_proto::directory::Location;
use whatsap2p_proto::{Number, PublicKey};

pub use crate::store::{Owner, SessionId, StoreError};

/// The session that holds a number, and where the number is online.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The number's identity key.
    pub key: PublicKey,
    /// Where its client listens, and since when: the latest `Register` of any session of the
    /// number. `None`: the number is not online (its session has not registered).
    pub location: Option<Location>,
    /// The session that holds the number.
    pub owner: Owner,
}

/// A change of who holds a number or where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new session, `owner`, holds `number` (its handshake is done); its location, if any, is
    /// unchanged. `replaced` held it until now: that session must end, wherever it lives.
    Taken {
        /// Whose.
        number: Number,
        /// The new session.
        owner: Owner,
        /// The session it replaced.
        replaced: Option<Owner>,
    },
    /// `number` is online at `entry.location` (it registered, or moved).
    Online {
        /// Who.
        number: Number,
        /// Where, and which session.
        entry: PresenceEntry,
    },
    /// `number` went offline (its session ended, or its entry expired).
    Offline {
        /// Who.
        number: Number,
        /// Its key, when the store knows it without asking (an expired entry is gone).
        key: Option<PublicKey>,
    },
    /// Changes may have been lost (the subscription to a shared store was down): every watched
    /// number's presence is sent again. A replaced session finds out at its next heartbeat.
    Missed,
}

/// What a session's heartbeat found in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The entry is the session's own and lives on.
    Renewed,
    /// There is no entry (it expired while the store was out of reach, or the store lost it): the
    /// session should put it back ([`PresenceStore::set_online`]).
    Missing,
    /// Another session holds the number now: this one was replaced.
    Replaced,
}

/// A change for the caller to apply here, or `None` when there is none or the store delivers it
/// through its [`Feed`].
pub type Applied = Option<Change>;

/// What a write on behalf of a session found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// The session holds the number; the write is done.
    Yes(Applied),
    /// Another session holds the number now: this one was replaced, and wrote nothing.
    Replaced,
}

/// Changes made through a shared store by any instance, delivered to this one, and the store's own
/// upkeep (health checks, reconnection); [`crate::run`] drives both until shutdown.
pub struct Feed {
    /// Every change, in the store's order. Bounded: a dispatcher that falls behind loses changes
    /// (counted), and sessions find out at their next heartbeat ([`Renewal`]).
    pub changes: mpsc::Receiver<Change>,
    /// Runs for as long as the directory does.
    pub upkeep: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Where presence lives.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// `owner`'s session of `number` starts: it holds the number from now on, in place of any
    /// other, and keeps the number's location, if any. `key` is the number's identity key.
    async fn take_over(&self, number: &Number, owner: Owner, key: PublicKey) -> Result<Applied, StoreError>;
    /// `entry.owner` registers `number` at `entry.location` (or, with `None`, puts back an entry
    /// the store lost), if it still holds the number or nobody does.
    async fn set_online(&self, number: &Number, entry: &PresenceEntry) -> Result<Held, StoreError>;
    /// Keeps `owner`'s entry for `number` alive (a heartbeat).
    async fn renew(&self, number: &Number, owner: Owner) -> Result<Renewal, StoreError>;
    /// `owner`'s session ended: removes the entry if it is still `owner`'s (the number is then
    /// offline, and the change says so if it was online).
    async fn set_offline(&self, number: &Number, owner: Owner, key: PublicKey)
        -> Result<Applied, StoreError>;
    /// The entry for `number`, if a session holds it.
    async fn get(&self, number: &Number) -> Result<Option<PresenceEntry>, StoreError>;
    /// The same when the store can tell without waiting (memory), else `None`: a lookup answered
    /// from memory then costs no future of its own.
    fn get_now(&self, _number: &Number) -> Option<Option<PresenceEntry>> {
        None
    }
}

/// Shards of [`MemoryPresence`]. Every lookup takes a read lock, and taking even a read lock
/// writes to the lock: with one lock, the cores answering lookups would pass its cache line back
/// and forth on every one. A power of two.
const SHARDS: usize = 64;

/// One shard's map. Its hash is keyed with a random seed of its own (numbers are picked by whoever
/// registers them, so they must not be able to collide on purpose), and fast: every lookup hashes.
type Shard = HashMap<Number, PresenceEntry, foldhash::fast::RandomState>;

/// Presence in this process's memory.
pub struct MemoryPresence {
    // std locks: held only for a map operation, never across an await.
    shards: Box<[RwLock<Shard>]>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::default()).collect() }
    }
}

impl MemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shard of `number`: from its last digits, which spread numbers well and cost nothing to
    /// read. Someone who picks numbers to land in one shard only gets back the single lock: each
    /// shard's map keeps its own keyed hash against collisions.
    fn shard(&self, number: &Number) -> &RwLock<Shard> {
        let tail = number.as_bytes().iter().rev().take(3).fold(0usize, |h, &b| h * 10 + usize::from(b));
        &self.shards[tail & (SHARDS - 1)]
    }

    /// How many users are online.
    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn take_over(&self, number: &Number, owner: Owner, key: PublicKey) -> Result<Applied, StoreError> {
        let mut map = self.shard(number).write().unwrap_or_else(|p| p.into_inner());
        let old = map.get(number).map(|e| (e.owner, e.location));
        let location = old.and_then(|(_, l)| l);
        map.insert(number.clone(), PresenceEntry { key, location, owner });
        let replaced = old.map(|(o, _)| o).filter(|o| *o != owner);
        Ok(Some(Change::Taken { number: number.clone(), owner, replaced }))
    }

    async fn set_online(&self, number: &Number, entry: &PresenceEntry) -> Result<Held, StoreError> {
        let mut map = self.shard(number).write().unwrap_or_else(|p| p.into_inner());
        if map.get(number).is_some_and(|e| e.owner != entry.owner) {
            return Ok(Held::Replaced);
        }
        map.insert(number.clone(), entry.clone());
        let online = entry.location.is_some();
        Ok(Held::Yes(online.then(|| Change::Online { number: number.clone(), entry: entry.clone() })))
    }

    async fn renew(&self, number: &Number, owner: Owner) -> Result<Renewal, StoreError> {
        let map = self.shard(number).read().unwrap_or_else(|p| p.into_inner());
        Ok(match map.get(number) {
            Some(e) if e.owner == owner => Renewal::Renewed,
            Some(_) => Renewal::Replaced,
            None => Renewal::Missing,
        })
    }

    async fn set_offline(
        &self,
        number: &Number,
        owner: Owner,
        key: PublicKey,
    ) -> Result<Applied, StoreError> {
        let mut map = self.shard(number).write().unwrap_or_else(|p| p.into_inner());
        match map.get(number) {
            Some(e) if e.owner == owner => {
                let was_online = e.location.is_some();
                map.remove(number);
                Ok(was_online.then(|| Change::Offline { number: number.clone(), key: Some(key) }))
            }
            _ => Ok(None),
        }
    }

    async fn get(&self, number: &Number) -> Result<Option<PresenceEntry>, StoreError> {
        Ok(self.shard(number).read().unwrap_or_else(|p| p.into_inner()).get(number).cloned())
    }

    fn get_now(&self, number: &Number) -> Option<Option<PresenceEntry>> {
        Some(self.shard(number).read().unwrap_or_else(|p| p.into_inner()).get(number).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: PublicKey = PublicKey([1; 32]);

    fn owner(session: SessionId) -> Owner {
        Owner { instance: 7, session }
    }

    fn at(session: SessionId, port: u16) -> PresenceEntry {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        PresenceEntry { key: KEY, location: Some(Location { addr, since_unix_ms: 0 }), owner: owner(session) }
    }

    #[tokio::test]
    async fn given_a_newer_session_then_it_keeps_the_address_and_the_old_one_can_neither_register_nor_leave()
    {
        let p = MemoryPresence::new();
        let n = Number::new("123").expect("n");
        p.take_over(&n, owner(1), KEY).await.expect("take");
        assert!(matches!(p.set_online(&n, &at(1, 1001)).await.expect("set"), Held::Yes(Some(_))));
        let taken = p.take_over(&n, owner(2), KEY).await.expect("take");
        assert_eq!(
            taken,
            Some(Change::Taken { number: n.clone(), owner: owner(2), replaced: Some(owner(1)) })
        );
        // Still online where session 1 registered, now under session 2.
        let e = p.get(&n).await.expect("get").expect("held");
        assert_eq!((e.owner, e.location), (owner(2), at(1, 1001).location));
        assert_eq!(p.renew(&n, owner(1)).await.expect("renew"), Renewal::Replaced);
        assert_eq!(p.set_online(&n, &at(1, 1002)).await.expect("set"), Held::Replaced);
        assert_eq!(p.set_offline(&n, owner(1), KEY).await.expect("offline"), None);
        assert!(p.set_offline(&n, owner(2), KEY).await.expect("offline").is_some());
        assert_eq!(p.get(&n).await.expect("get"), None);
        assert_eq!(p.renew(&n, owner(2)).await.expect("renew"), Renewal::Missing);
    }

    #[tokio::test]
    async fn given_a_session_that_never_registered_then_its_end_announces_nothing() {
        let p = MemoryPresence::new();
        let n = Number::new("123").expect("n");
        let taken = p.take_over(&n, owner(1), KEY).await.expect("take");
        assert_eq!(taken, Some(Change::Taken { number: n.clone(), owner: owner(1), replaced: None }));
        assert_eq!(p.get(&n).await.expect("get").map(|e| e.location), Some(None));
        assert_eq!(p.set_offline(&n, owner(1), KEY).await.expect("offline"), None);
    }
}
