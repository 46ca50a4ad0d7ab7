//! The sessions open on this instance, so that one can be ended when a newer session of its
//! number replaces it (one session per number across the directory).
//!
//! Which session a new one replaced is decided by the store, in one atomic step
//! ([`crate::presence::PresenceStore::take_over`]), and travels with the change to every instance;
//! the instance where that session lives ends it. Two sessions starting at once on two instances
//! so end with exactly the one the store ordered last, on every instance alike.
//!
//! A session is ended through its push queue ([`crate::mailbox::Sender::end`]); it tells its
//! client why and closes itself. The roster only holds the queue's sender (a pointer), not the
//! session.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use whatsap2p_proto::Number;

use crate::mailbox::Sender;
use crate::store::{Owner, SessionId};

/// The open sessions of this instance.
///
/// Every held session has an entry here, so it is kept small: keyed by a keyed hash of the
/// number (not a copy of it) and the session. Two numbers with the same 64-bit hash and session id
/// cannot both be open: session ids are unique here.
#[derive(Default)]
pub struct Roster {
    // A std lock: held only for a map operation, never across an await.
    members: Mutex<BTreeMap<(u64, SessionId), Sender>>,
    hasher: RandomState,
}

impl Roster {
    fn key(&self, number: &Number) -> u64 {
        self.hasher.hash_one(number)
    }

    /// `session` of `number` is open; `end` ends it.
    pub fn join(&self, number: &Number, session: SessionId, end: Sender) {
        let key = (self.key(number), session);
        self.members.lock().unwrap_or_else(|p| p.into_inner()).insert(key, end);
    }

    /// `session` of `number` closed.
    pub fn leave(&self, number: &Number, session: SessionId) {
        let key = (self.key(number), session);
        self.members.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    /// `replaced` lost `number` to a newer session: ends it if it lives on instance `here`.
    /// Returns whether it did.
    pub fn replaced(&self, number: &Number, replaced: Owner, here: u64) -> bool {
        if replaced.instance != here {
            return false;
        }
        let key = (self.key(number), replaced.session);
        let map = self.members.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).map(Sender::end).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::mailbox;
    use futures::FutureExt;

    const HERE: u64 = 7;

    #[test]
    fn given_a_replaced_session_then_only_it_ends_and_only_on_its_own_instance() {
        let r = Roster::default();
        let n = Number::new("123").expect("n");
        let ((old, old_rx), (new, new_rx)) = (mailbox(), mailbox());
        r.join(&n, 1, old);
        r.join(&n, 2, new);
        assert!(
            !r.replaced(&n, Owner { instance: HERE + 1, session: 1 }, HERE),
            "another instance's session 1"
        );
        assert!(r.replaced(&n, Owner { instance: HERE, session: 1 }, HERE));
        assert!(matches!(old_rx.recv().now_or_never(), Some(None)), "told to end");
        assert!(new_rx.recv().now_or_never().is_none(), "still waiting");
        r.leave(&n, 1);
        assert!(!r.replaced(&n, Owner { instance: HERE, session: 1 }, HERE), "gone");
        r.leave(&n, 2);
        assert!(r.members.lock().expect("lock").is_empty());
    }
}
