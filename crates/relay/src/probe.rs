//! UDP address probes, answered by the directory and by the relay alike: a `ProbeRequest` whose
//! token passes the caller's check gets a `ProbeReply` with the address it came from, sent there.
//!
//! Anyone can send a datagram with a forged source address, so a probe answer is a reflection
//! towards whoever the sender pretends to be. What bounds the abuse:
//! - no answer without a valid token (the directory: a live session's; a relay: one the directory
//!   made, checked by its MAC, see [`crate::keys`]), so a reflector needs a real session first;
//! - one answer per request, never larger than the request for an IPv4 source and at most 4 bytes
//!   larger for an IPv6 one (the reply carries the nonce and an address where the request carried
//!   the nonce and a 16-byte token): no amplification worth the name;
//! - at most [`PROBES_PER_SOURCE`] answers a second to one source IP, and answers to at most
//!   [`MAX_SOURCES`] source IPs a second;
//! - datagrams over [`MAX_DATAGRAM_LEN`] are not even read in full.
//!
//! Probes with tokens that fail the check are counted and logged through a [`LogThrottle`], never a
//! line each.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use whatsap2p_proto::nat::{decode_datagram, encode_datagram, Datagram, ProbeToken, MAX_DATAGRAM_LEN};

use crate::throttle::LogThrottle;
use crate::Observer;

/// Most probe answers a second to one source IP. Generous: a NAT-kind check is a few probes per
/// client, and a carrier NAT puts many clients behind one IP.
pub const PROBES_PER_SOURCE: u32 = 50;

/// Most source IPs answered within one second; probes from further IPs that second get no answer.
/// Bounds the memory the per-source count takes (about 40 bytes a source).
pub const MAX_SOURCES: usize = 16_384;

/// The window of [`PROBES_PER_SOURCE`] and [`MAX_SOURCES`].
const WINDOW: Duration = Duration::from_secs(1);

/// What became of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeOutcome {
    /// A probe with a valid token: answered.
    Answered,
    /// A probe whose token failed the check: no answer.
    UnknownToken,
    /// A probe over the per-source limits: no answer.
    Limited,
    /// Not a probe (a reply, a punch, QUIC, garbage, oversized): no answer.
    Ignored,
}

/// Answers per source IP in the current window.
#[derive(Debug, Default)]
struct SourceLimit {
    window: Option<Instant>,
    counts: HashMap<IpAddr, u32>,
}

impl SourceLimit {
    /// Whether `ip` may have one more answer at `now`.
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < WINDOW => {}
            _ => {
                self.window = Some(now);
                // A new window forgets the old one whole: O(1) a second, and never more than
                // MAX_SOURCES entries.
                self.counts.clear();
            }
        }
        if !self.counts.contains_key(&ip) && self.counts.len() >= MAX_SOURCES {
            return false;
        }
        let n = self.counts.entry(ip).or_insert(0);
        if *n >= PROBES_PER_SOURCE {
            return false;
        }
        *n += 1;
        true
    }
}

/// The answering of probes, without the socket: bytes in, bytes out.
#[derive(Debug, Default)]
pub struct ProbeDesk {
    limit: SourceLimit,
    unknown: LogThrottle,
}

impl ProbeDesk {
    /// What to do with `datagram` from `from` at `now`: the outcome and, when answered, the reply's
    /// bytes. `check` says whether a token is valid (and may record the source: it is called only
    /// for a probe within the limits).
    pub fn answer(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
        check: impl FnOnce(&ProbeToken, SocketAddr) -> bool,
    ) -> (ProbeOutcome, Option<Vec<u8>>) {
        let Ok(Datagram::ProbeRequest { token, nonce }) = decode_datagram(datagram) else {
            return (ProbeOutcome::Ignored, None);
        };
        // A dual-stack socket sees IPv4 sources as `::ffff:a.b.c.d`: the client knows itself as
        // a.b.c.d.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        if !self.limit.allow(from.ip(), now) {
            return (ProbeOutcome::Limited, None);
        }
        if !check(&token, from) {
            if let Some(n) = self.unknown.note(now) {
                info!(
                    "Ignored {n} UDP probe(s) with an unknown token (latest from {}/{})",
                    from.ip(),
                    from.port()
                );
            }
            return (ProbeOutcome::UnknownToken, None);
        }
        match encode_datagram(&Datagram::ProbeReply { nonce, observed: from }) {
            Ok(reply) => (ProbeOutcome::Answered, Some(reply)),
            Err(_) => (ProbeOutcome::Ignored, None),
        }
    }
}

/// Answers probes on `socket` until `cancel`. `check` as in [`ProbeDesk::answer`].
pub async fn serve(
    socket: UdpSocket,
    mut check: impl FnMut(&ProbeToken, SocketAddr) -> bool + Send,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) {
    let mut desk = ProbeDesk::default();
    // One byte more than the largest datagram of ours: a longer one shows as longer and is refused
    // (the kernel cuts the rest).
    let mut buf = [0u8; MAX_DATAGRAM_LEN + 1];
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // An ICMP error for an earlier answer, say: nothing to do but not spin on it.
                    debug!("probe socket: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (outcome, reply) = desk.answer(&buf[..n], from, Instant::now(), &mut check);
        observer.probe(outcome);
        if let Some(reply) = reply {
            if let Err(e) = socket.send_to(&reply, from).await {
                debug!("probe answer to {from}: {e}");
            }
        }
    }
    let unsaid = desk.unknown.unsaid();
    if unsaid > 0 {
        info!("Ignored {unsaid} more UDP probe(s) with an unknown token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsap2p_proto::nat::Datagram;

    fn probe(token: ProbeToken, nonce: u64) -> Vec<u8> {
        encode_datagram(&Datagram::ProbeRequest { token, nonce }).expect("encode")
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_valid_probe_then_the_reply_carries_the_source_and_is_no_larger_than_the_request() {
        let mut desk = ProbeDesk::default();
        let now = Instant::now();
        for (from, nonce, extra) in [
            ("203.0.113.7:40000", 1u64, 0usize),
            ("203.0.113.7:40000", u64::MAX, 0),
            ("[::ffff:203.0.113.7]:1", 1, 0),
            ("[2001:db8::7]:65535", 1, 4),
            ("[2001:db8::7]:65535", u64::MAX, 4),
        ] {
            let from: SocketAddr = from.parse().expect("addr");
            let request = probe([3; 16], nonce);
            let (outcome, reply) = desk.answer(&request, from, now, |t, _| *t == [3; 16]);
            assert_eq!(outcome, ProbeOutcome::Answered);
            let reply = reply.expect("a reply");
            let observed = SocketAddr::new(from.ip().to_canonical(), from.port());
            assert_eq!(decode_datagram(&reply), Ok(Datagram::ProbeReply { nonce, observed }));
            assert!(reply.len() <= request.len() + extra, "{from}: {} > {}", reply.len(), request.len());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn given_bad_tokens_or_other_datagrams_then_no_reply() {
        let mut desk = ProbeDesk::default();
        let (now, from) = (Instant::now(), "198.51.100.1:5".parse().expect("addr"));
        let never = |_: &ProbeToken, _| false;
        assert_eq!(desk.answer(&probe([1; 16], 1), from, now, never), (ProbeOutcome::UnknownToken, None));
        let punch = encode_datagram(&Datagram::Punch { nonce: 1 }).expect("encode");
        let always = |_: &ProbeToken, _| true;
        assert_eq!(desk.answer(&punch, from, now, always), (ProbeOutcome::Ignored, None));
        assert_eq!(desk.answer(&[0xc0, 0, 0, 1], from, now, always), (ProbeOutcome::Ignored, None), "QUIC");
        let mut long = probe([1; 16], 1);
        long.resize(MAX_DATAGRAM_LEN + 1, 0);
        assert_eq!(desk.answer(&long, from, now, always), (ProbeOutcome::Ignored, None));
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_flood_from_one_source_then_answers_stop_at_the_limit_until_the_next_second() {
        let mut desk = ProbeDesk::default();
        let (start, from) = (Instant::now(), "198.51.100.1:5".parse().expect("addr"));
        let other: SocketAddr = "198.51.100.2:5".parse().expect("addr");
        let ok = |_: &ProbeToken, _| true;
        for _ in 0..PROBES_PER_SOURCE {
            assert_eq!(desk.answer(&probe([1; 16], 1), from, start, ok).0, ProbeOutcome::Answered);
        }
        assert_eq!(desk.answer(&probe([1; 16], 1), from, start, ok).0, ProbeOutcome::Limited);
        assert_eq!(
            desk.answer(&probe([1; 16], 1), other, start, ok).0,
            ProbeOutcome::Answered,
            "others go on"
        );
        let later = start + WINDOW;
        assert_eq!(desk.answer(&probe([1; 16], 1), from, later, ok).0, ProbeOutcome::Answered);
    }

    #[tokio::test(start_paused = true)]
    async fn given_too_many_sources_in_one_second_then_new_ones_wait_for_the_next() {
        let mut limit = SourceLimit::default();
        let now = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            assert!(limit.allow(IpAddr::from(i.to_be_bytes()), now));
        }
        assert!(!limit.allow(IpAddr::from([255, 255, 255, 255]), now));
        assert!(limit.allow(IpAddr::from(0u32.to_be_bytes()), now), "a known source still counts");
        assert!(limit.allow(IpAddr::from([255, 255, 255, 255]), now + WINDOW));
        assert_eq!(limit.counts.len(), 1);
    }
}
