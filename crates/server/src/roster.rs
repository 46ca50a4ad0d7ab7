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
//! session. Every session is in it from the end of its handshake to its end, so the server's
//! shutdown goes through it too ([`Roster::close`]).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use whatsap2p_proto::Number;

use crate::mailbox::{Ending, Sender};
use crate::store::{Owner, SessionId};

/// The open sessions of this instance.
///
/// Every held session has an entry here, so it is kept small: keyed by a keyed hash of the
/// number (not a copy of it) and the session. Two numbers with the same 64-bit hash and session id
/// cannot both be open: session ids are unique here.
#[derive(Default)]
pub struct Roster {
    // A std lock: held only for a map operation, never across an await.
    members: Mutex<Members>,
    hasher: RandomState,
}

#[derive(Default)]
struct Members {
    open: BTreeMap<(u64, SessionId), Sender>,
    /// The server shuts down: a session that joins now is ended at once.
    closed: bool,
}

impl Roster {
    fn key(&self, number: &Number) -> u64 {
        self.hasher.hash_one(number)
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `session` of `number` is open; `end` ends it.
    pub fn join(&self, number: &Number, session: SessionId, end: Sender) {
        let key = (self.key(number), session);
        let mut members = self.members();
        if members.closed {
            end.end(Ending::Shutdown);
        }
        members.open.insert(key, end);
    }

    /// `session` of `number` closed.
    pub fn leave(&self, number: &Number, session: SessionId) {
        let key = (self.key(number), session);
        self.members().open.remove(&key);
    }

    /// The server shuts down: ends every session, and any that joins from now on.
    pub fn close(&self) {
        let mut members = self.members();
        members.closed = true;
        for end in members.open.values() {
            end.end(Ending::Shutdown);
        }
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.members().open.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `replaced` lost `number` to a newer session: ends it if it lives on instance `here`.
    /// Returns whether it did.
    pub fn replaced(&self, number: &Number, replaced: Owner, here: u64) -> bool {
        if replaced.instance != here {
            return false;
        }
        let key = (self.key(number), replaced.session);
        self.members().open.get(&key).map(|s| s.end(Ending::Replaced)).is_some()
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
        assert_eq!(
            old_rx.recv().now_or_never().map(|r| r.err()),
            Some(Some(Ending::Replaced)),
            "told to end"
        );
        assert!(new_rx.recv().now_or_never().is_none(), "still waiting");
        r.leave(&n, 1);
        assert!(!r.replaced(&n, Owner { instance: HERE, session: 1 }, HERE), "gone");
        r.leave(&n, 2);
        assert!(r.is_empty());
    }

    #[test]
    fn given_a_closed_roster_then_every_session_ends_and_so_does_one_that_joins_later() {
        let r = Roster::default();
        let ((a, a_rx), (b, b_rx)) = (mailbox(), mailbox());
        r.join(&Number::new("123").expect("n"), 1, a);
        r.close();
        r.join(&Number::new("456").expect("n"), 2, b);
        for rx in [a_rx, b_rx] {
            assert_eq!(rx.recv().now_or_never().map(|r| r.err()), Some(Some(Ending::Shutdown)));
        }
    }
}
