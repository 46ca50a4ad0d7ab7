//! The sessions open on this instance, by number, so that one can be ended when another session
//! of its number replaces it (one session per number across the directory).
//!
//! The rule, applied to every [`crate::presence::Change::Online`] in the order the store made them:
//! the session that owned the number's presence before ends, wherever it lives; and so does every
//! session of the number that has not started registering. A session that is registering is
//! spared: its own change comes later and ends the other one. So two sessions registering at once
//! on two instances end with exactly the one the store ordered last, on every instance alike.
//!
//! A session is ended through its cancellation token; it tells its client why and closes itself.
//! The roster only holds the token (a pointer), not the session.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use whatsap2p_proto::Number;

use crate::store::{Owner, SessionId};

/// One open session.
struct Member {
    end: CancellationToken,
    /// Has sent `Register` at least once.
    registering: bool,
}

/// The open sessions of this instance.
///
/// Every held session has an entry here, so it is kept small: keyed by a keyed hash of the
/// number (not a copy of it) and the session, in one ordered map, so the sessions of a number are
/// one range. Two numbers with the same 64-bit hash would count as one here (a registration of one
/// would end the idle sessions of the other): with the hash keyed at random per process, about one
/// chance in 10^11 with 20 000 sessions, and nobody can aim for it.
#[derive(Default)]
pub struct Roster {
    // A std lock: held only for a map operation, never across an await.
    members: Mutex<BTreeMap<(u64, SessionId), Member>>,
    hasher: RandomState,
}

impl Roster {
    fn key(&self, number: &Number) -> u64 {
        self.hasher.hash_one(number)
    }

    /// `session` of `number` is open; `end` cancels it.
    pub fn join(&self, number: &Number, session: SessionId, end: CancellationToken) {
        let key = (self.key(number), session);
        let mut map = self.members.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, Member { end, registering: false });
    }

    /// `session` of `number` is about to register: from now on only a change naming it as the
    /// replaced owner ends it.
    pub fn registering(&self, number: &Number, session: SessionId) {
        let key = (self.key(number), session);
        let mut map = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get_mut(&key) {
            m.registering = true;
        }
    }

    /// `session` of `number` closed.
    pub fn leave(&self, number: &Number, session: SessionId) {
        let key = (self.key(number), session);
        self.members.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    /// `owner` now holds `number`'s presence, taken from `replaced`; `here` is this instance. Ends
    /// the sessions here that this replaces (see the module's rule); returns how many.
    pub fn owned_by(&self, number: &Number, owner: Owner, replaced: Option<Owner>, here: u64) -> usize {
        let keep = (owner.instance == here).then_some(owner.session);
        let old = replaced.filter(|o| o.instance == here).map(|o| o.session);
        let h = self.key(number);
        let map = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = 0;
        for (&(_, session), m) in map.range((h, SessionId::MIN)..=(h, SessionId::MAX)) {
            let ends = Some(session) == old || (!m.registering && Some(session) != keep);
            if ends && !m.end.is_cancelled() {
                m.end.cancel();
                ended += 1;
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: u64 = 7;

    fn owner(instance: u64, session: SessionId) -> Owner {
        Owner { instance, session }
    }

    #[test]
    fn given_a_registration_elsewhere_then_idle_and_replaced_sessions_end_and_a_registering_one_stays() {
        let r = Roster::default();
        let n = Number::new("123").expect("n");
        let (idle, old, racing) =
            (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
        r.join(&n, 1, idle.clone());
        r.join(&n, 2, old.clone());
        r.join(&n, 3, racing.clone());
        r.registering(&n, 2);
        r.registering(&n, 3);
        // Another instance's session 9 registered, replacing nobody: only the idle session ends.
        assert_eq!(r.owned_by(&n, owner(1, 9), None, HERE), 1);
        assert!(idle.is_cancelled() && !old.is_cancelled() && !racing.is_cancelled());
        // Then our session 3 registered after it, replacing it: nothing here ends.
        assert_eq!(r.owned_by(&n, owner(HERE, 3), Some(owner(1, 9)), HERE), 0);
        // Then another instance took it from session 3.
        assert_eq!(r.owned_by(&n, owner(1, 10), Some(owner(HERE, 3)), HERE), 1);
        assert!(racing.is_cancelled() && !old.is_cancelled());
        for session in [1, 2, 3] {
            r.leave(&n, session);
        }
        assert!(r.members.lock().expect("lock").is_empty());
    }
}
