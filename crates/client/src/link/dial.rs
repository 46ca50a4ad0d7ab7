//! Dialing a peer by every path at once (Happy Eyeballs), the first whose Noise handshake completes
//! winning.
//!
//! At once: TCP to the address the directory publishes and, when the directory speaks version 3,
//! an `Introduce`. Its answer lists the peer's candidates (and tells the peer, which starts
//! punching towards ours): TCP to each TCP one at once, QUIC to each UDP one, the LAN ones first,
//! [`QUIC_STAGGER`] apart. When the two NATs' kinds say punching cannot work, the relay is asked for
//! at once; otherwise after [`PUNCH_BOUND`] without a winner. Every attempt ends in its own time
//! (connect and handshake timeouts), and when one wins the others are dropped, which closes their
//! streams. The identity checks are the same on every path: the responder must prove `expected`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tracing::debug;
use whatsap2p_proto::nat::{Candidate, RelayReason, Source, Transport};
use whatsap2p_proto::version::Versions;
use whatsap2p_proto::{Number, PublicKey};

use super::path::{relay_reason, Path};
use crate::config::Timeouts;
use crate::directory::{DirectoryHandle, RelayOffer};
use crate::handshake::Linked;
use crate::profile::Identity;
use crate::reach::Reachability;
use crate::transport::{self, PeerStream};
use crate::ClientError;

/// How long the direct paths have before the relay is asked for (when punching may work): enough
/// for a punch's QUIC handshake to be retransmitted a few times.
pub const PUNCH_BOUND: Duration = Duration::from_millis(2500);
/// Delay between the QUIC attempts to successive UDP candidates, so the likeliest (LAN) is not
/// crowded out and a NAT is not flooded.
pub const QUIC_STAGGER: Duration = Duration::from_millis(50);
/// How long one QUIC attempt may take to connect (its Noise handshake then has its own timeout).
pub const QUIC_CONNECT: Duration = Duration::from_secs(4);

/// Whether the relay may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Any path: direct ones first, then the relay.
    Any,
    /// Direct paths only (a relayed link trying to go direct).
    DirectOnly,
}

/// What a dial needs from the client.
pub(crate) struct Dialer<'a> {
    pub(crate) me: &'a Number,
    pub(crate) identity: &'a Identity,
    pub(crate) directory: &'a DirectoryHandle,
    pub(crate) reach: &'a Reachability,
    pub(crate) timeouts: &'a Timeouts,
    pub(crate) versions: Versions,
}

/// A completed handshake: the session, which way it goes, and the address at the other end.
pub(crate) type Won = (Linked<PeerStream>, Path, SocketAddr);

type Attempt<'a> = BoxFuture<'a, Result<Won, ClientError>>;

impl Dialer<'_> {
    /// Races every path to `to` (whose key must be `expected`), starting with TCP to `published`
    /// when there is one.
    pub(crate) async fn race(
        &self,
        to: &Number,
        expected: PublicKey,
        published: Option<SocketAddr>,
        mode: Mode,
    ) -> Result<Won, ClientError> {
        let mut attempts: FuturesUnordered<Attempt<'_>> = FuturesUnordered::new();
        let mut tried: HashSet<(Transport, SocketAddr)> = HashSet::new();
        if let Some(addr) = published.filter(|a| !a.ip().is_unspecified()) {
            tried.insert((Transport::Tcp, addr));
            attempts.push(self.tcp(to, expected, addr).boxed());
        }
        let v3 = self.directory.reach().is_some();
        let mut intro =
            v3.then(|| self.directory.introduce(to).boxed()).into_iter().collect::<FuturesUnordered<_>>();
        let mut relay: FuturesUnordered<BoxFuture<'_, Result<RelayOffer, ClientError>>> =
            FuturesUnordered::new();
        let mut relay_asked = !(v3 && mode == Mode::Any);
        let punch_bound = tokio::time::sleep(PUNCH_BOUND);
        tokio::pin!(punch_bound);
        let mut errors: Vec<ClientError> = Vec::new();
        loop {
            if attempts.is_empty() && intro.is_empty() && relay.is_empty() && relay_asked {
                return Err(pick(errors));
            }
            tokio::select! {
                Some(done) = attempts.next() => match done {
                    Ok(won) => return Ok(won),
                    // Someone on a path proved another identity (or a key that is not the
                    // pinned one): said at once, as a direct dial always did, rather than hidden
                    // behind the other paths' timeouts.
                    Err(e) if serious(&e) => return Err(e),
                    Err(e) => {
                        debug!("a path to {to} failed: {e}");
                        errors.push(e);
                        // Nothing direct left to wait for: no point waiting for the bound.
                        if attempts.is_empty() && intro.is_empty() && !relay_asked {
                            relay_asked = true;
                            relay.push(self.directory.relay(to, RelayReason::PunchTimedOut).boxed());
                        }
                    }
                },
                Some(answer) = intro.next() => match answer {
                    Ok(introduction) => {
                        let theirs = introduction.nat;
                        for attempt in self.candidates(to, expected, &introduction.candidates, &mut tried) {
                            attempts.push(attempt);
                        }
                        let mine = self.reach.nat();
                        if !relay_asked && !mine.can_punch(theirs) {
                            relay_asked = true;
                            relay.push(self.directory.relay(to, relay_reason(mine, theirs)).boxed());
                        }
                    }
                    Err(e) => errors.push(e),
                },
                Some(offer) = relay.next() => match offer {
                    Ok(offer) => attempts.push(self.relayed(to, expected, offer).boxed()),
                    Err(e) => errors.push(e),
                },
                _ = &mut punch_bound, if !relay_asked => {
                    relay_asked = true;
                    relay.push(self.directory.relay(to, RelayReason::PunchTimedOut).boxed());
                }
            }
        }
    }

    /// Attempts for the candidates not tried yet: TCP at once, QUIC staggered, LAN ones first.
    fn candidates<'s>(
        &'s self,
        to: &'s Number,
        expected: PublicKey,
        candidates: &[Candidate],
        tried: &mut HashSet<(Transport, SocketAddr)>,
    ) -> Vec<Attempt<'s>> {
        let udp_family = self.reach.udp_addr().is_ipv4();
        let mut fresh: Vec<Candidate> = candidates
            .iter()
            .filter(|c| !c.addr.ip().is_unspecified() && c.addr.port() != 0)
            .filter(|c| tried.insert((c.transport, c.addr)))
            .copied()
            .collect();
        fresh.sort_by_key(|c| (c.source != Source::Local, !self.reach.on_lan(c.addr.ip())));
        let mut out = Vec::new();
        let mut stagger = Duration::ZERO;
        for c in fresh {
            match c.transport {
                Transport::Tcp => out.push(self.tcp(to, expected, c.addr).boxed()),
                Transport::Udp if c.addr.is_ipv4() == udp_family => {
                    out.push(self.quic(to, expected, c.addr, stagger).boxed());
                    stagger += QUIC_STAGGER;
                }
                _ => {}
            }
        }
        out
    }

    async fn tcp(&self, to: &Number, expected: PublicKey, addr: SocketAddr) -> Result<Won, ClientError> {
        let dial = || transport::dial(addr, self.timeouts.connect, "connecting to the peer");
        let stream = dial().await?;
        let path = Path::direct(Transport::Tcp, self.reach.on_lan(addr.ip()));
        self.handshake(stream, dial, to, expected, addr, path).await
    }

    async fn quic(
        &self,
        to: &Number,
        expected: PublicKey,
        addr: SocketAddr,
        after: Duration,
    ) -> Result<Won, ClientError> {
        tokio::time::sleep(after).await;
        let dial = || self.reach.quic().dial(addr, QUIC_CONNECT);
        let stream = dial().await?;
        let path = Path::direct(Transport::Udp, self.reach.on_lan(addr.ip()));
        self.handshake(stream, dial, to, expected, addr, path).await
    }

    async fn relayed(&self, to: &Number, expected: PublicKey, offer: RelayOffer) -> Result<Won, ClientError> {
        let pairing = transport::relay::RELAY_PAIRING_ASKER;
        let stream = transport::relay::connect(offer.relay, &offer.ticket, self.timeouts, pairing).await?;
        // A ticket pairs once: no second connection for a version 2 retry (a peer the directory
        // offered the relay to speaks version 3 anyway).
        let no_redial = || async { Err(ClientError::Timeout("a second relayed connection")) };
        let path = Path::Relayed { reason: offer.reason };
        self.handshake(stream, no_redial, to, expected, offer.relay, path).await
    }

    /// The initiator's handshake over `stream` (and `redial`, for the version 2 retry).
    async fn handshake<D, DF>(
        &self,
        stream: PeerStream,
        redial: D,
        to: &Number,
        expected: PublicKey,
        addr: SocketAddr,
        path: Path,
    ) -> Result<Won, ClientError>
    where
        D: FnOnce() -> DF,
        DF: std::future::Future<Output = Result<PeerStream, ClientError>>,
    {
        let (identity, me, versions) = (self.identity, self.me, self.versions);
        let handshake =
            crate::handshake::dial_peer(stream, redial, identity, me, to, expected, addr, versions);
        let linked = tokio::time::timeout(self.timeouts.handshake, handshake)
            .await
            .map_err(|_| ClientError::Timeout("peer handshake"))??;
        Ok((linked, path, addr))
    }
}

/// An error a person must act on: an identity refused.
fn serious(e: &ClientError) -> bool {
    matches!(e, ClientError::PeerIdentity { .. } | ClientError::KeyChanged { .. })
}

/// The error to report when every path failed: the first path's (serious ones end the race at
/// once, see [`Dialer::race`]).
fn pick(errors: Vec<ClientError>) -> ClientError {
    errors.into_iter().next().unwrap_or(ClientError::Timeout("connecting to the peer"))
}
