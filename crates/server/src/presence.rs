//! Who is online, where: the directory's only volatile state.
//!
//! Behind a trait so several directory instances can later share presence (in Redis) while the
//! sessions stay unchanged. Entries carry the id of the session that made them, so a stale session
//! ending cannot take a newer session of the same number offline.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use whatsap2p_proto::directory::Location;
use whatsap2p_proto::{Number, PublicKey};

/// A unique id for one directory session (per server process).
pub type SessionId = u64;

/// One online user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The user's identity key.
    pub key: PublicKey,
    /// Where its client listens, and since when.
    pub location: Location,
    /// The session that registered it.
    pub session: SessionId,
}

/// Where presence lives.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Marks `number` online, replacing any older entry.
    async fn set_online(&self, number: &Number, entry: PresenceEntry);
    /// Marks `number` offline if its entry still belongs to `session`; returns whether it did.
    async fn set_offline(&self, number: &Number, session: SessionId) -> bool;
    /// The entry for `number`, if online.
    async fn get(&self, number: &Number) -> Option<PresenceEntry>;
    /// How many users are online.
    async fn count(&self) -> usize;
}

/// Presence in this process's memory.
#[derive(Default)]
pub struct MemoryPresence {
    // A std lock: held only for a map operation, never across an await.
    online: RwLock<HashMap<Number, PresenceEntry>>,
}

impl MemoryPresence {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn set_online(&self, number: &Number, entry: PresenceEntry) {
        let mut map = self.online.write().unwrap_or_else(|p| p.into_inner());
        map.insert(number.clone(), entry);
    }

    async fn set_offline(&self, number: &Number, session: SessionId) -> bool {
        let mut map = self.online.write().unwrap_or_else(|p| p.into_inner());
        match map.get(number) {
            Some(e) if e.session == session => {
                map.remove(number);
                true
            }
            _ => false,
        }
    }

    async fn get(&self, number: &Number) -> Option<PresenceEntry> {
        self.online.read().unwrap_or_else(|p| p.into_inner()).get(number).cloned()
    }

    async fn count(&self) -> usize {
        self.online.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(session: SessionId) -> PresenceEntry {
        PresenceEntry {
            key: PublicKey([1; 32]),
            location: Location { addr: "127.0.0.1:1".parse().expect("addr"), since_unix_ms: 0 },
            session,
        }
    }

    #[tokio::test]
    async fn given_newer_session_then_stale_session_cannot_take_it_offline() {
        let p = MemoryPresence::new();
        let n = Number::new("123").expect("n");
        p.set_online(&n, entry(1)).await;
        p.set_online(&n, entry(2)).await;
        assert!(!p.set_offline(&n, 1).await);
        assert_eq!(p.get(&n).await.map(|e| e.session), Some(2));
        assert!(p.set_offline(&n, 2).await);
        assert_eq!(p.get(&n).await, None);
    }
}
