//! A session's part in reaching clients behind NATs (protocol version 3, `docs/protocol.md`
//! section 8): its probe token and `Reachability`, its announced candidates, and the introductions
//! and relay offers it asks for.
//!
//! Only version 3 sessions take part: a version 2 session is never sent anything new, and is never
//! introduced to anyone (it is not in [`crate::meetings`]). Both sides of an introduction or a relay
//! offer are sessions of this instance (see [`crate::meetings`] for why).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use whatsap2p_proto::directory::ServerToClient;
use whatsap2p_proto::nat::{Candidate, NatKind, RelayReason, RelayTicket, Source, MAX_CANDIDATES};
use whatsap2p_proto::version::V3;
use whatsap2p_proto::{Number, WireNumber};

use super::{invalid_number, now_ms, short, Online};
use crate::meetings::Unreachable;
use crate::metrics::Meeting;
use crate::sources::SourceAddr;

/// Most introductions and relay requests one session may ask for in [`MEETING_WINDOW`]. A client
/// asks once per peer it links to (and its upgrades back off from 1 s to 5 min), so this leaves
/// room for a client that opens many links at once, and bounds what one client can make the
/// directory push to others.
pub const MAX_MEETINGS: u32 = 60;

/// The window of [`MAX_MEETINGS`].
pub const MEETING_WINDOW: Duration = Duration::from_secs(60);

/// How many requests a session made in the current window.
#[derive(Debug, Default)]
pub(super) struct MeetingRate {
    window: Option<Instant>,
    count: u32,
}

impl MeetingRate {
    /// Whether one more may go at `now`.
    fn allow(&mut self, now: Instant) -> bool {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < MEETING_WINDOW => {}
            _ => {
                self.window = Some(now);
                self.count = 0;
            }
        }
        self.count += 1;
        self.count <= MAX_MEETINGS
    }
}

impl Online<'_> {
    /// For a version 3 session: gives it its probe token, makes it reachable for introductions,
    /// and returns the `Reachability` to send it; `None` for older sessions.
    pub(super) fn reachability(&mut self) -> Option<ServerToClient> {
        if self.version < V3 {
            return None;
        }
        let dir = self.dir;
        let token = *self.token.get_or_insert_with(|| dir.probes.issue(&dir.relay_keys));
        let push = self.push.0.clone();
        dir.meetings.join(&self.number, self.session, push, token);
        Some(ServerToClient::Reachability { token, udp_port: dir.udp_port(), relay: dir.config.relay })
    }

    /// Sends a version 3 session its `Reachability` (see [`Online::reachability`]).
    pub(super) async fn send_reachability(&mut self) -> Result<(), whatsap2p_link::LinkError> {
        match self.reachability() {
            Some(msg) => self.writer.send_msg(&msg).await,
            None => Ok(()),
        }
    }

    /// The client says where it may be reached: at most [`MAX_CANDIDATES`], each local (the
    /// directory adds what it observed; a client cannot claim to be observed anywhere).
    pub(super) fn announce(&mut self, candidates: Vec<Candidate>, nat: NatKind) -> Option<ServerToClient> {
        if self.token.is_none() {
            return Some(unsupported());
        }
        if candidates.len() > MAX_CANDIDATES {
            warn!("Refusing {}'s announcement of {} candidates", self.number, candidates.len());
            let message = format!("announce at most {MAX_CANDIDATES} candidates, not {}", candidates.len());
            return Some(ServerToClient::Error { req: None, message });
        }
        if candidates.iter().any(|c| c.source != Source::Local) {
            let message = "announced candidates are local ones; the directory adds what it observes".into();
            return Some(ServerToClient::Error { req: None, message });
        }
        // Nothing a peer should ever send packets to: no port, no host, a group, or (from a client
        // that is not itself on loopback) the peer's own machine.
        let on_loopback = self.addr.ip().is_loopback();
        let unusable = |c: &Candidate| {
            let ip = c.addr.ip();
            c.addr.port() == 0
                || ip.is_unspecified()
                || ip.is_multicast()
                || (ip.is_loopback() && !on_loopback)
        };
        if let Some(bad) = candidates.iter().find(|c| unusable(c)) {
            warn!("Refusing {}'s announcement of {}", self.number, bad.addr);
            let message = format!("{} is not an address peers can reach", bad.addr);
            return Some(ServerToClient::Error { req: None, message });
        }
        info!("{} announced {} candidates, NAT {nat:?}", self.number, candidates.len());
        self.dir.meetings.announced(&self.number, self.session, candidates, nat);
        None
    }

    /// The other side of a meeting `req` asks for: a number that is a reachable session here, not
    /// this one, within the session's rate and the directory's lookup limits. `Err`: the answer.
    ///
    /// An introduction or a relay offer tells whether `wanted` is online (and where) just as a
    /// `Lookup` does, so it counts as one: against the lookups per second, checked before the
    /// number is read as for a lookup, and against the distinct numbers per day. Otherwise a
    /// client could enumerate who is online around those limits, 60 numbers a minute.
    fn meet(&mut self, req: u32, wanted: &WireNumber) -> Result<Number, ServerToClient> {
        let error = |message: String| ServerToClient::Error { req: Some(req), message: short(message) };
        if self.token.is_none() {
            return Err(unsupported_for(req));
        }
        if !self.meetings.allow(Instant::now()) {
            self.dir.metrics.met(Meeting::Limited);
            return Err(error(format!(
                "at most {MAX_MEETINGS} introductions and relay requests a minute; try later"
            )));
        }
        let (dir, source) = (self.dir, SourceAddr::from(self.addr.ip()));
        dir.limits.lookup_rate(&self.asker, source).map_err(|l| self.limited(Some(req), l))?;
        let wanted = Number::try_from(wanted).map_err(|e| error(invalid_number(wanted, &e)))?;
        if wanted == self.number {
            return Err(error("that is this session's own number".into()));
        }
        dir.limits
            .distinct(&mut self.asker, &wanted, Instant::now())
            .map_err(|l| self.limited(Some(req), l))?;
        Ok(wanted)
    }

    /// `Introduce`: pushes the other side our candidates and answers with theirs.
    pub(super) fn introduce(&mut self, req: u32, wanted: WireNumber) -> ServerToClient {
        let wanted = match self.meet(req, &wanted) {
            Ok(n) => n,
            Err(e) => return e,
        };
        let dir = self.dir;
        let (Some(theirs), Some(ours)) =
            (dir.meetings.reachable(&wanted, &dir.probes), dir.meetings.reachable(&self.number, &dir.probes))
        else {
            return self.unreachable(req, &wanted, Unreachable::Absent);
        };
        let introduced = ServerToClient::Introduced {
            from: self.number.clone(),
            candidates: ours.candidates,
            nat: ours.nat,
        };
        if let Err(why) = dir.meetings.push(&wanted, introduced) {
            return self.unreachable(req, &wanted, why);
        }
        info!("Introduced {} to {wanted}", self.number);
        dir.metrics.met(Meeting::Introduced);
        ServerToClient::Introduction { req, number: wanted, candidates: theirs.candidates, nat: theirs.nat }
    }

    /// `RelayRequest`: seals one ticket for the pair and gives it to both sides.
    pub(super) fn relay_request(
        &mut self,
        req: u32,
        wanted: WireNumber,
        reason: RelayReason,
    ) -> ServerToClient {
        let wanted = match self.meet(req, &wanted) {
            Ok(n) => n,
            Err(e) => return e,
        };
        let dir = self.dir;
        let Some(relay) = dir.config.relay else {
            dir.metrics.met(Meeting::Unreachable);
            return ServerToClient::Error { req: Some(req), message: "this directory has no relay".into() };
        };
        let lifetime = dir.config.ticket_lifetime.as_millis() as u64;
        let ticket = RelayTicket {
            a: self.number.clone(),
            b: wanted.clone(),
            expires_unix_ms: now_ms().saturating_add(lifetime),
            nonce: rand::random(),
        };
        let ticket = match dir.relay_keys.seal(&ticket) {
            Ok(sealed) => sealed,
            Err(e) => return ServerToClient::Error { req: Some(req), message: short(e.to_string()) },
        };
        let offer = ServerToClient::RelayOffer {
            req: None,
            number: self.number.clone(),
            relay,
            ticket: ticket.clone(),
            reason,
        };
        if let Err(why) = dir.meetings.push(&wanted, offer) {
            return self.unreachable(req, &wanted, why);
        }
        info!("Relay offered to {} and {wanted} ({reason:?})", self.number);
        dir.metrics.met(Meeting::RelayOffered);
        ServerToClient::RelayOffer { req: Some(req), number: wanted, relay, ticket, reason }
    }

    fn unreachable(&self, req: u32, wanted: &Number, why: Unreachable) -> ServerToClient {
        self.dir.metrics.met(Meeting::Unreachable);
        let message = match why {
            Unreachable::Absent => format!(
                "{wanted} cannot be introduced: offline, on an older version, or on another instance of the directory"
            ),
            Unreachable::Busy => format!("{wanted} is not keeping up; try later"),
        };
        info!("Not introducing {} to {wanted}: {why:?}", self.number);
        ServerToClient::Error { req: Some(req), message: short(message) }
    }

    /// Leaves the meetings and the probe map (the session ends).
    pub(super) fn leave_meetings(&mut self) {
        if let Some(token) = self.token.take() {
            self.dir.meetings.leave(&self.number, self.session);
            self.dir.probes.forget(&token);
        }
    }
}

/// The answer to a version 3 request on a session that did not agree on version 3.
fn unsupported() -> ServerToClient {
    ServerToClient::Error { req: None, message: "unsupported request".into() }
}

fn unsupported_for(req: u32) -> ServerToClient {
    ServerToClient::Error {
        req: Some(req),
        message: "unsupported request: this session is not version 3".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_session_asking_too_often_then_refused_until_the_window_ends() {
        let mut rate = MeetingRate::default();
        let start = Instant::now();
        for _ in 0..MAX_MEETINGS {
            assert!(rate.allow(start));
        }
        assert!(!rate.allow(start + MEETING_WINDOW / 2));
        assert!(rate.allow(start + MEETING_WINDOW));
    }
}
