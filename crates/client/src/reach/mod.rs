//! How peers reach us, and how we find out: the UDP socket and its QUIC endpoint, our candidates,
//! our NAT's kind, and the punches that open our NAT for a peer that wants us.
//!
//! When a version 3 directory session starts (its `Reachability`), [`Reachability::refresh`] lists
//! our interfaces, probes the directory's UDP port and the relay's from our one socket, classifies
//! the NAT ([`NatKind`]) and announces our LAN candidates with it. The same happens on every
//! reconnection and when our addresses change: the interface list is read every
//! [`INTERFACE_POLL`] (one system call) and probes go out only when it changed. A change also bumps
//! [`Reachability::network_changes`], which restarts the links' bounded attempts to go direct.
//!
//! # Layout
//! - `local`: interfaces, LAN candidates, "is this on my LAN?", the NAT kind from two answers.

mod local;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use whatsap2p_proto::nat::{decode_datagram, encode_datagram, Datagram, NatKind};
use whatsap2p_proto::Number;

use crate::directory::{DirectoryHandle, Reach};
use crate::transport::quic::Quic;
use crate::transport::udp::{Received, SharedSocket};
use crate::ClientError;

pub(crate) use local::Interface;

/// How often the interface list is read to notice a new network (a laptop that moved, a new
/// address). Reading it is one cheap system call; nothing goes on the network unless it changed.
pub const INTERFACE_POLL: Duration = Duration::from_secs(30);
/// A probe is sent this many times at most (UDP loses packets; a NAT may drop the first while it
/// makes its mapping)...
pub const PROBE_TRIES: u32 = 5;
/// ... this long apart: a probe that gets no answer costs a second in all.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// When punches go out towards a peer that asked for us, from the `Introduced` on: the first at
/// once, then a few more over about two seconds, so the asker's QUIC packets find our NAT open
/// whenever they come (and a lost punch is made up for).
pub const PUNCH_SCHEDULE: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(150),
    Duration::from_millis(350),
    Duration::from_millis(750),
    Duration::from_millis(1500),
];
/// Introductions being punched for at once; more are dropped (the directory already rate-limits
/// them per asker, this bounds what all askers together make us send).
pub const MAX_PUNCHING: usize = 16;
/// A client whose probes got no answer probes again when it matters (a peer asks for us, a relayed
/// link tries to go direct), at most this often.
pub const REPROBE_MIN: Duration = Duration::from_secs(5);
/// Probes waiting for their answer at once (each side's two probes per refresh, and refreshes do
/// not overlap: a bound for safety).
const MAX_PROBES: usize = 16;

/// What we know about our reachability.
#[derive(Clone, Debug)]
struct Known {
    nat: NatKind,
    interfaces: Vec<Interface>,
}

struct Inner {
    socket: Arc<SharedSocket>,
    quic: Quic,
    tcp: SocketAddr,
    udp: SocketAddr,
    known: Mutex<Known>,
    probes: Mutex<HashMap<u64, oneshot::Sender<SocketAddr>>>,
    punching: Arc<Semaphore>,
    network: watch::Sender<u64>,
    /// When the last refresh started.
    refreshed: Mutex<Option<tokio::time::Instant>>,
}

/// The client's UDP side and what it knows of its network. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reachability(Arc<Inner>);

impl Reachability {
    /// Binds the UDP socket beside the TCP listener at `tcp` (at `udp_port`, 0 for any) and starts its
    /// QUIC endpoint; `tracker` runs the task that reads our datagrams until `cancel`.
    pub(crate) fn start(
        tcp: SocketAddr,
        udp_port: u16,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, ClientError> {
        let std_socket = crate::transport::bind_udp(tcp, udp_port)?;
        std_socket.set_nonblocking(true).map_err(ClientError::io("setting up UDP"))?;
        let udp = std_socket.local_addr().map_err(ClientError::io("reading the UDP address"))?;
        let (socket, ours) = SharedSocket::new(std_socket).map_err(ClientError::io("setting up UDP"))?;
        let quic = Quic::new(socket.clone())?;
        let (network, _) = watch::channel(0);
        let known = Known { nat: NatKind::Unmeasured, interfaces: local::interfaces() };
        let reach = Self(Arc::new(Inner {
            socket,
            quic,
            tcp,
            udp,
            known: Mutex::new(known),
            probes: Mutex::default(),
            punching: Arc::new(Semaphore::new(MAX_PUNCHING)),
            network,
            refreshed: Mutex::default(),
        }));
        tracker.spawn(reach.clone().read_datagrams(ours, cancel));
        Ok(reach)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The QUIC endpoint.
    pub(crate) fn quic(&self) -> &Quic {
        &self.0.quic
    }

    /// Our UDP socket's address.
    pub(crate) fn udp_addr(&self) -> SocketAddr {
        self.0.udp
    }

    /// What our NAT does, as last measured.
    pub(crate) fn nat(&self) -> NatKind {
        self.known().nat
    }

    /// Whether `ip` is on one of our LANs.
    pub(crate) fn on_lan(&self, ip: IpAddr) -> bool {
        local::on_lan(ip, &self.known().interfaces)
    }

    /// Bumped whenever our network changes (new addresses, a new NAT kind).
    pub(crate) fn network_changes(&self) -> watch::Receiver<u64> {
        self.0.network.subscribe()
    }

    /// Refreshes when the last measure found no working UDP (or none was made) and the last
    /// refresh is at least [`REPROBE_MIN`] old: UDP may have been unblocked since.
    pub(crate) async fn refresh_if_stale(&self, directory: &DirectoryHandle, reach: Reach) {
        if !matches!(self.nat(), NatKind::NoUdp | NatKind::Unmeasured) {
            return;
        }
        let last = *self.0.refreshed.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < REPROBE_MIN) {
            return;
        }
        self.refresh(directory, reach).await;
    }

    /// Lists our interfaces, probes, classifies and announces, for the directory session `reach`.
    pub(crate) async fn refresh(&self, directory: &DirectoryHandle, reach: Reach) {
        *self.0.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        let interfaces = local::interfaces();
        let (first, second) =
            tokio::join!(self.probe_at(reach.probe, reach.token), self.probe_at(reach.relay, reach.token));
        let asked = reach.probe.is_some() || reach.relay.is_some();
        let nat = local::classify(self.0.udp, &interfaces, asked, first, second);
        let candidates = local::candidates(self.0.tcp, self.0.udp, &interfaces);
        let changed = {
            let mut known = self.known();
            let changed = known.nat != nat || known.interfaces != interfaces;
            *known = Known { nat, interfaces };
            changed
        };
        match first.or(second) {
            Some(public) => info!("NAT: {} (public UDP address {public})", describe(nat)),
            None => info!("NAT: {}", describe(nat)),
        }
        directory.announce(candidates, nat).await;
        if changed {
            self.0.network.send_modify(|n| *n += 1);
        }
    }

    /// Keeps our reachability current until `cancel`: on every new directory session, and when
    /// the interface list changes.
    pub(crate) async fn follow(self, directory: DirectoryHandle, cancel: CancellationToken) {
        let mut sessions = directory.reach_changes();
        // The first session's refresh is done at start; later ones when the session changes.
        sessions.mark_unchanged();
        let mut poll = tokio::time::interval(INTERFACE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = sessions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = poll.tick() => {
                    if local::interfaces() == self.known().interfaces {
                        continue;
                    }
                    info!("our network addresses changed");
                }
            }
            let current = *sessions.borrow_and_update();
            if let Some(reach) = current {
                self.refresh(&directory, reach).await;
            }
        }
    }

    /// Asks the probe port at `to` what address it sees us at (retransmitting a few times).
    async fn probe_at(
        &self,
        to: Option<SocketAddr>,
        token: whatsap2p_proto::nat::ProbeToken,
    ) -> Option<SocketAddr> {
        let to = to?;
        let nonce: u64 = rand::random();
        let (reply, mut answer) = oneshot::channel();
        {
            let mut probes = self.0.probes.lock().unwrap_or_else(|p| p.into_inner());
            if probes.len() >= MAX_PROBES {
                return None;
            }
            probes.insert(nonce, reply);
        }
        let bytes = encode_datagram(&Datagram::ProbeRequest { token, nonce }).ok()?;
        let mut seen = None;
        for _ in 0..PROBE_TRIES {
            if let Err(e) = self.0.socket.send_ours(to, &bytes) {
                debug!("probe to {to} not sent: {e}");
            }
            if let Ok(Ok(addr)) = tokio::time::timeout(PROBE_INTERVAL, &mut answer).await {
                seen = Some(addr);
                break;
            }
        }
        self.0.probes.lock().unwrap_or_else(|p| p.into_inner()).remove(&nonce);
        if seen.is_none() {
            debug!("no answer to our UDP probes from {to}");
        }
        seen
    }

    /// `from` asked the directory for us: sends punches towards its UDP candidates over
    /// [`PUNCH_SCHEDULE`], so its packets find our NAT open.
    pub(crate) fn punch(
        &self,
        from: &Number,
        targets: Vec<SocketAddr>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) {
        if targets.is_empty() {
            return;
        }
        let Ok(permit) = self.0.punching.clone().try_acquire_owned() else {
            return warn!("not punching towards {from}: {MAX_PUNCHING} introductions under way");
        };
        debug!("punching towards {from} at {targets:?}");
        let socket = self.0.socket.clone();
        tracker.spawn(async move {
            let start = tokio::time::Instant::now();
            for at in PUNCH_SCHEDULE {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(start + at) => {}
                }
                let Ok(bytes) = encode_datagram(&Datagram::Punch { nonce: rand::random() }) else { return };
                for to in &targets {
                    let _ = socket.send_ours(*to, &bytes);
                }
            }
            drop(permit);
        });
    }

    /// Reads our datagrams until `cancel`: probe answers go to their probe; punches only open NATs.
    async fn read_datagrams(self, mut ours: mpsc::Receiver<Received>, cancel: CancellationToken) {
        loop {
            let (bytes, from) = tokio::select! {
                _ = cancel.cancelled() => break,
                got = ours.recv() => match got { Some(g) => g, None => break },
            };
            match decode_datagram(&bytes) {
                Ok(Datagram::ProbeReply { nonce, observed }) => {
                    let waiting = self.0.probes.lock().unwrap_or_else(|p| p.into_inner()).remove(&nonce);
                    if let Some(reply) = waiting {
                        let _ = reply.send(observed);
                    }
                }
                Ok(Datagram::Punch { .. }) => debug!("punch from {from}"),
                Ok(other) => debug!("ignoring {other:?} from {from}"),
                Err(e) => debug!("ignoring a bad datagram from {from}: {e}"),
            }
        }
        self.0.quic.close();
    }
}

/// A NAT kind, for people.
pub fn describe(nat: NatKind) -> &'static str {
    match nat {
        NatKind::Open => "none (public address)",
        NatKind::Cone => "cone (punching works)",
        NatKind::Symmetric => "symmetric (a new port per destination: peers may need the relay)",
        NatKind::NoUdp => "UDP blocked (peers may need the relay)",
        _ => "not measured",
    }
}
