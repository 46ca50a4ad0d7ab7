//! The version 3 sessions of this instance that another client may be introduced to: how to push
//! them a message (their presence-push queue), and where they may be reached (what they announced,
//! their registered TCP address, the UDP address their probes came from).
//!
//! An introduction or a relay offer reaches the other side through this map only, so both sides
//! must be sessions of this instance: a directory of several instances introduces its users when
//! they are on the same instance, and answers an `Error` otherwise (`docs/operators.md`). Entries
//! are made after the handshake of a v3 session and removed when it ends, so the map is bounded by
//! the connection cap; an entry's candidates are bounded by [`MAX_CANDIDATES`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use whatsap2p_proto::directory::ServerToClient;
use whatsap2p_proto::nat::{Candidate, NatKind, ProbeToken, Source, Transport, MAX_CANDIDATES};
use whatsap2p_proto::Number;

use crate::mailbox::{Refused, Sender};
use crate::probes::Probes;
use crate::store::SessionId;

/// One reachable session.
struct Entry {
    session: SessionId,
    push: Sender,
    token: ProbeToken,
    /// What the client announced (each [`Source::Local`]).
    announced: Vec<Candidate>,
    nat: NatKind,
    /// Where it registered (the address peers are given).
    tcp: Option<SocketAddr>,
}

/// Where a session may be reached, as the directory gives it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reachable {
    /// At most [`MAX_CANDIDATES`]: what the directory observed first, then what it announced.
    pub candidates: Vec<Candidate>,
    /// What its NAT does, as it says.
    pub nat: NatKind,
}

/// Why a message could not be pushed to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// No version 3 session of the number on this instance.
    Absent,
    /// Its queue is full: it is not keeping up.
    Busy,
}

/// This instance's reachable sessions by number.
#[derive(Default)]
pub struct Meetings {
    // A std lock: held for one map operation, never across an await.
    by_number: Mutex<HashMap<Number, Entry>>,
}

impl Meetings {
    fn map(&self) -> MutexGuard<'_, HashMap<Number, Entry>> {
        self.by_number.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `session` of `number` may be introduced from now on (it replaces an older session's entry).
    pub fn join(&self, number: &Number, session: SessionId, push: Sender, token: ProbeToken) {
        let entry =
            Entry { session, push, token, announced: Vec::new(), nat: NatKind::Unmeasured, tcp: None };
        self.map().insert(number.clone(), entry);
    }

    /// The session registered at `tcp`.
    pub fn registered(&self, number: &Number, session: SessionId, tcp: SocketAddr) {
        if let Some(e) = self.map().get_mut(number).filter(|e| e.session == session) {
            e.tcp = Some(tcp);
        }
    }

    /// The session announced `candidates` (already checked: at most [`MAX_CANDIDATES`], local).
    pub fn announced(&self, number: &Number, session: SessionId, candidates: Vec<Candidate>, nat: NatKind) {
        if let Some(e) = self.map().get_mut(number).filter(|e| e.session == session) {
            e.announced = candidates;
            e.nat = nat;
        }
    }

    /// The session ended (a newer session's entry stays).
    pub fn leave(&self, number: &Number, session: SessionId) {
        let mut map = self.map();
        if map.get(number).is_some_and(|e| e.session == session) {
            map.remove(number);
        }
    }

    /// Where `number` may be reached, if it is a reachable session here.
    pub fn reachable(&self, number: &Number, probes: &Probes) -> Option<Reachable> {
        let map = self.map();
        let e = map.get(number)?;
        let mut candidates = Vec::with_capacity(MAX_CANDIDATES);
        if let Some(addr) = probes.observed(&e.token) {
            candidates.push(Candidate { transport: Transport::Udp, addr, source: Source::Observed });
        }
        if let Some(addr) = e.tcp {
            candidates.push(Candidate { transport: Transport::Tcp, addr, source: Source::Observed });
        }
        for c in &e.announced {
            if candidates.len() == MAX_CANDIDATES {
                break;
            }
            if !candidates.iter().any(|o| o.transport == c.transport && o.addr == c.addr) {
                candidates.push(*c);
            }
        }
        Some(Reachable { candidates, nat: e.nat })
    }

    /// Pushes `msg` to `number`'s session, without waiting.
    pub fn push(&self, number: &Number, msg: ServerToClient) -> Result<(), Unreachable> {
        let push = self.map().get(number).map(|e| e.push.clone()).ok_or(Unreachable::Absent)?;
        push.try_send(Arc::new(msg)).map_err(|e| match e {
            Refused::Full => Unreachable::Busy,
            Refused::Closed => Unreachable::Absent,
        })
    }

    /// Reachable sessions.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::mailbox;
    use whatsap2p_relay::RelayKeys;

    fn local(addr: &str, transport: Transport) -> Candidate {
        Candidate { transport, addr: addr.parse().expect("addr"), source: Source::Local }
    }

    #[test]
    fn given_a_session_then_its_observed_candidates_come_first_and_the_whole_is_capped() {
        let (meetings, probes) = (Meetings::default(), Probes::default());
        let token = probes.issue(&RelayKeys::derive(&[3; 32]));
        let n = Number::new("5550001").expect("n");
        let (tx, _rx) = mailbox();
        meetings.join(&n, 1, tx, token);
        meetings.registered(&n, 1, "203.0.113.5:4000".parse().expect("addr"));
        let udp: SocketAddr = "203.0.113.5:5000".parse().expect("addr");
        assert!(probes.record(&token, udp));
        let mut announced: Vec<Candidate> = (0..MAX_CANDIDATES as u16)
            .map(|i| local(&format!("10.0.0.2:{}", 6000 + i), Transport::Udp))
            .collect();
        // The registered address announced again: not given twice.
        announced[0] = local("203.0.113.5:4000", Transport::Tcp);
        meetings.announced(&n, 1, announced, NatKind::Cone);
        let r = meetings.reachable(&n, &probes).expect("reachable");
        assert_eq!(r.nat, NatKind::Cone);
        assert_eq!(r.candidates.len(), MAX_CANDIDATES);
        assert_eq!(
            r.candidates[0],
            Candidate { transport: Transport::Udp, addr: udp, source: Source::Observed }
        );
        assert_eq!(r.candidates[1].source, Source::Observed);
        assert_eq!(r.candidates.iter().filter(|c| c.addr.port() == 4000).count(), 1);
    }

    #[test]
    fn given_a_replaced_session_then_the_old_one_leaving_keeps_the_new_entry() {
        let (meetings, probes) = (Meetings::default(), Probes::default());
        let keys = RelayKeys::derive(&[3; 32]);
        let n = Number::new("5550001").expect("n");
        let (old, _a) = mailbox();
        let (new, rx) = mailbox();
        meetings.join(&n, 1, old, probes.issue(&keys));
        meetings.join(&n, 2, new, probes.issue(&keys));
        meetings.leave(&n, 1);
        assert!(meetings.reachable(&n, &probes).is_some());
        meetings.push(&n, ServerToClient::HeartbeatAck).expect("pushed");
        assert_eq!(*rx.try_recv().expect("the new session's"), ServerToClient::HeartbeatAck);
        meetings.leave(&n, 2);
        assert_eq!(meetings.push(&n, ServerToClient::HeartbeatAck), Err(Unreachable::Absent));
        assert!(meetings.is_empty());
    }
}
