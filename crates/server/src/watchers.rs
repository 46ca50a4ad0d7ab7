//! Presence subscriptions: which sessions want to hear when a number comes online or goes offline.
//!
//! Pushes go through each session's bounded queue ([`crate::mailbox`]) with `try_send`: a session that does not keep up
//! loses pushes (counted in the metrics and logged) instead of slowing the session that changed state. A client that
//! misses one still has `Lookup` to ask.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::warn;
use whatsap2p_proto::directory::ServerToClient;
use whatsap2p_proto::Number;

use crate::mailbox::{Refused, Sender};
use crate::store::SessionId;

/// One presence push, shared by every session it goes to: a queue slot is a pointer, not a copy.
pub type Push = Arc<ServerToClient>;

/// The subscriptions of every session in this process.
#[derive(Default)]
pub struct Watchers {
    by_number: Mutex<HashMap<Number, HashMap<SessionId, Sender>>>,
}

impl Watchers {
    /// `session` wants pushes about `number`.
    pub fn watch(&self, number: &Number, session: SessionId, tx: &Sender) {
        let mut map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(number.clone()).or_default().insert(session, tx.clone());
    }

    /// Forgets `session`'s subscriptions to `numbers` (when it ends).
    pub fn unwatch<'a>(&self, session: SessionId, numbers: impl IntoIterator<Item = &'a Number>) {
        let mut map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
        for n in numbers {
            if let Some(watchers) = map.get_mut(n) {
                watchers.remove(&session);
                if watchers.is_empty() {
                    map.remove(n);
                }
            }
        }
    }

    /// Every number some session here watches.
    pub fn numbers(&self) -> Vec<Number> {
        self.by_number.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Whether any session here watches `number`.
    pub fn is_watched(&self, number: &Number) -> bool {
        self.by_number.lock().unwrap_or_else(|p| p.into_inner()).contains_key(number)
    }

    /// Queues `msg` for every session watching `number`; returns how many pushes were dropped
    /// because a queue was full (the caller counts them).
    pub fn notify(&self, number: &Number, msg: ServerToClient) -> u64 {
        let targets: Vec<Sender> = {
            let map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
            map.get(number).map(|w| w.values().cloned().collect()).unwrap_or_default()
        };
        if targets.is_empty() {
            return 0;
        }
        let msg = Arc::new(msg);
        let mut dropped = 0;
        for tx in targets {
            if let Err(Refused::Full) = tx.try_send(msg.clone()) {
                dropped += 1;
                warn!("a watcher of {number} is not keeping up: presence push dropped");
            }
        }
        dropped
    }
}
