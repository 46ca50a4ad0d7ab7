//! Who is online, where: the directory's only volatile state.
//!
//! Behind a trait so several directory instances can share presence (in Redis, see
//! [`crate::redis_store`]) while the sessions stay unchanged. Every entry names its [`Owner`], the
//! session that registered it; only that session renews or deletes it.
//!
//! Every change is a [`Change`]. The memory store hands it back to the caller, which applies it in
//! this process at once; a shared store publishes it, and every instance (the one that made it
//! too) applies it when its [`Feed`] delivers it, so all of them see the changes of one number in
//! the order the store made them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;

use async_trait::async_trait;
use tokio::sync::mpsc;
use whatsap2p_proto::directory::Location;
use whatsap2p_proto::{Number, PublicKey};

pub use crate::store::{Owner, SessionId, StoreError};

/// One online user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The user's identity key.
    pub key: PublicKey,
    /// Where its client listens, and since when.
    pub location: Location,
    /// The session that registered it.
    pub owner: Owner,
}

/// A change of someone's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `number` is online at `entry` (it came online or moved). `replaced` owned the number's
    /// presence until now: that session must end, wherever it lives.
    Online {
        /// Who.
        number: Number,
        /// Where, and which session.
        entry: PresenceEntry,
        /// The session this one replaced, if another held the number.
        replaced: Option<Owner>,
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
    /// session should register it again.
    Missing,
    /// Another session owns the number now: this one was replaced.
    Replaced,
}

/// What [`PresenceStore::set_online`] and [`PresenceStore::set_offline`] leave to the caller.
pub type Applied = Option<Change>;

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
    /// Marks `number` online at `entry`, replacing any older entry. Returns the change for the
    /// caller to apply here, or `None` when the store delivers it through its [`Feed`].
    async fn set_online(&self, number: &Number, entry: &PresenceEntry) -> Result<Applied, StoreError>;
    /// Keeps `owner`'s entry for `number` alive (a heartbeat).
    async fn renew(&self, number: &Number, owner: Owner) -> Result<Renewal, StoreError>;
    /// Marks `number` offline if its entry still belongs to `owner`. Returns the change as
    /// [`PresenceStore::set_online`] does; `None` too when the entry was not `owner`'s.
    async fn set_offline(&self, number: &Number, owner: Owner, key: PublicKey)
        -> Result<Applied, StoreError>;
    /// The entry for `number`, if online.
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

/// Presence in this process's memory.
pub struct MemoryPresence {
    // std locks: held only for a map operation, never across an await.
    shards: Box<[RwLock<HashMap<Number, PresenceEntry>>]>,
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
    fn shard(&self, number: &Number) -> &RwLock<HashMap<Number, PresenceEntry>> {
        let tail = number.as_str().bytes().rev().take(3).fold(0usize, |h, b| h * 10 + usize::from(b));
        &self.shards[tail & (SHARDS - 1)]
    }

    /// How many users are online.
    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn set_online(&self, number: &Number, entry: &PresenceEntry) -> Result<Applied, StoreError> {
        let old = {
            let mut map = self.shard(number).write().unwrap_or_else(|p| p.into_inner());
            map.insert(number.clone(), entry.clone())
        };
        let replaced = old.map(|o| o.owner).filter(|o| *o != entry.owner);
        Ok(Some(Change::Online { number: number.clone(), entry: entry.clone(), replaced }))
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
                map.remove(number);
                Ok(Some(Change::Offline { number: number.clone(), key: Some(key) }))
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

    fn entry(session: SessionId) -> PresenceEntry {
        PresenceEntry {
            key: PublicKey([1; 32]),
            location: Location { addr: "127.0.0.1:1".parse().expect("addr"), since_unix_ms: 0 },
            owner: Owner { instance: 7, session },
        }
    }

    #[tokio::test]
    async fn given_newer_session_then_stale_session_cannot_take_it_offline() {
        let p = MemoryPresence::new();
        let n = Number::new("123").expect("n");
        let key = PublicKey([1; 32]);
        p.set_online(&n, &entry(1)).await.expect("set");
        let change = p.set_online(&n, &entry(2)).await.expect("set");
        assert!(
            matches!(change, Some(Change::Online { replaced: Some(o), .. }) if o == entry(1).owner),
            "{change:?}"
        );
        assert_eq!(p.renew(&n, entry(1).owner).await.expect("renew"), Renewal::Replaced);
        assert_eq!(p.set_offline(&n, entry(1).owner, key).await.expect("offline"), None);
        assert_eq!(p.get(&n).await.expect("get").map(|e| e.owner.session), Some(2));
        assert!(p.set_offline(&n, entry(2).owner, key).await.expect("offline").is_some());
        assert_eq!(p.get(&n).await.expect("get"), None);
        assert_eq!(p.renew(&n, entry(2).owner).await.expect("renew"), Renewal::Missing);
    }

    #[tokio::test]
    async fn given_same_session_registering_again_then_it_replaces_nobody() {
        let p = MemoryPresence::new();
        let n = Number::new("123").expect("n");
        p.set_online(&n, &entry(1)).await.expect("set");
        let change = p.set_online(&n, &entry(1)).await.expect("set");
        assert!(matches!(change, Some(Change::Online { replaced: None, .. })), "{change:?}");
    }
}
