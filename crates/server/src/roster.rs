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

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use whatsap2p_proto::Number;

use crate::store::{Owner, SessionId};

/// One open session.
struct Member {
    session: SessionId,
    end: CancellationToken,
    /// Has sent `Register` at least once.
    registering: bool,
}

/// The open sessions of this instance.
#[derive(Default)]
pub struct Roster {
    // A std lock: held only for a map operation, never across an await. Nearly every number has
    // one session, so a small Vec per number.
    by_number: Mutex<HashMap<Number, Vec<Member>>>,
}

impl Roster {
    /// `session` of `number` is open; `end` cancels it.
    pub fn join(&self, number: &Number, session: SessionId, end: CancellationToken) {
        let mut map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(number.clone()).or_default().push(Member { session, end, registering: false });
    }

    /// `session` of `number` is about to register: from now on only a change naming it as the
    /// replaced owner ends it.
    pub fn registering(&self, number: &Number, session: SessionId) {
        let mut map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get_mut(number).and_then(|v| v.iter_mut().find(|m| m.session == session)) {
            m.registering = true;
        }
    }

    /// `session` of `number` closed.
    pub fn leave(&self, number: &Number, session: SessionId) {
        let mut map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sessions) = map.get_mut(number) {
            sessions.retain(|m| m.session != session);
            if sessions.is_empty() {
                map.remove(number);
            }
        }
    }

    /// `owner` now holds `number`'s presence, taken from `replaced`; `here` is this instance. Ends
    /// the sessions here that this replaces (see the module's rule); returns how many.
    pub fn owned_by(&self, number: &Number, owner: Owner, replaced: Option<Owner>, here: u64) -> usize {
        let keep = (owner.instance == here).then_some(owner.session);
        let old = replaced.filter(|o| o.instance == here).map(|o| o.session);
        let map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sessions) = map.get(number) else { return 0 };
        let mut ended = 0;
        for m in sessions {
            let ends = Some(m.session) == old || (!m.registering && Some(m.session) != keep);
            if ends && !m.end.is_cancelled() {
                m.end.cancel();
                ended += 1;
            }
        }
        ended
    }

    /// Ends `session` of `number` if it is open here; returns whether it was.
    pub fn end(&self, number: &Number, session: SessionId) -> bool {
        let map = self.by_number.lock().unwrap_or_else(|p| p.into_inner());
        let member = map.get(number).and_then(|v| v.iter().find(|m| m.session == session));
        member.map(|m| m.end.cancel()).is_some()
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
        r.leave(&n, 1);
        r.leave(&n, 3);
        assert!(r.end(&n, 2));
        assert!(!r.end(&n, 3));
        r.leave(&n, 2);
        assert!(r.by_number.lock().expect("lock").is_empty());
    }
}
