//! The client's session with the directory.
//!
//! A directory may have several addresses (the user gives several, or a host name that resolves to
//! several instances); they are one directory, with one key (see `register.rs`). [`start`] makes
//! the first attempt: a round over every address, in the order given, until one registers. A task
//! then owns the session: it sends the heartbeats, matches answers to requests by id, and forwards
//! presence pushes. Callers talk to it through a cloneable [`DirectoryHandle`], which stays valid
//! across reconnections.
//!
//! **When the session ends**, the task acts on why:
//! - lost (the connection failed or went silent, the instance shut down, its store is down, or a
//!   code this version does not know): a round at once over every address, the lost one last, so
//!   a client moves to another instance without a pause and the user sees only that it
//!   reconnected (if it takes over a second, or the directory has one address only, the user is
//!   told the directory is lost first), and rounds follow with backoff (0.2 s doubling to 5 s)
//!   until one registers. Watches are restored on every new
//!   session, and the outbox is kicked;
//! - replaced (another copy of this profile registered): it stops, and says so; reconnecting
//!   would replace the other copy in turn, for ever;
//! - the number is bound to another key: it stops, and says so (final until a person acts).
//!
//! Refusals a person must hear of (the directory's key changed, no protocol version in common,
//! refusals in words from a version 2 directory) are said once each while the rounds go on.
//!
//! # Layout
//! - `address.rs`: [`ServerAddr`], and the order a round tries addresses in.
//! - `register.rs`: one attempt: dial, handshake, key check and pin, registration.
//! - `session.rs`: driving one registered session.
//!
//! Version 3 directories (sessions that agreed on version 3; they send `Reachability` right after
//! the handshake) also introduce peers and hand out relay tickets ([`DirectoryHandle::introduce`],
//! [`DirectoryHandle::relay`]); [`DirectoryHandle::reach`] says what the current session offers,
//! and nothing of version 3 is ever sent on a session that did not agree on it.

mod address;
mod register;
mod session;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use whatsap2p_proto::directory::{CloseCode, Location, LookupIntent};
use whatsap2p_proto::nat::{Candidate, NatKind, ProbeToken, RelayReason, MAX_CANDIDATES};
use whatsap2p_proto::version;
use whatsap2p_proto::{Number, PublicKey};

pub use address::{AddrError, ServerAddr};
pub(crate) use register::Params;
pub use register::Registered;

use crate::config::Timeouts;
use crate::profile::Identity;
use crate::store::Store;
use crate::ClientError;

/// Requests waiting in the session task's queue; a full queue makes callers wait, not fail.
const REQUEST_QUEUE: usize = 256;

/// How long a lost session may take to move to another address of the directory before the user
/// is told it is lost: a failover that takes less is only a reconnection.
const FAILOVER_GRACE: Duration = Duration::from_secs(1);

/// First and longest pause between rounds of reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// What the directory knows about a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupAnswer {
    /// Who.
    pub number: Number,
    /// The identity key bound to it, if it ever registered.
    pub key: Option<PublicKey>,
    /// Where it listens, if online.
    pub online: Option<Location>,
}

/// What a version 3 directory offers for reaching clients behind NATs: said in `Reachability`,
/// with its addresses made concrete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    /// What our UDP probes carry.
    pub token: ProbeToken,
    /// The directory's UDP port for probes, if it has one.
    pub probe: Option<SocketAddr>,
    /// The relay (TCP, and UDP probes on the same port number), if there is one.
    pub relay: Option<SocketAddr>,
}

impl Reach {
    pub(crate) fn new(
        server: SocketAddr,
        token: ProbeToken,
        udp_port: Option<u16>,
        relay: Option<SocketAddr>,
    ) -> Self {
        Self {
            token,
            probe: udp_port.map(|port| SocketAddr::new(server.ip(), port)),
            relay: relay.map(|r| concrete(r, server)),
        }
    }
}

/// `addr`, with an unspecified IP taken as the one we reached the directory at.
pub(crate) fn concrete(addr: SocketAddr, server: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(server.ip(), addr.port())
    } else {
        addr
    }
}

/// Where a peer may be reached, as the directory introduced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introduction {
    /// Its candidates (at most [`MAX_CANDIDATES`]).
    pub candidates: Vec<Candidate>,
    /// What its NAT does.
    pub nat: NatKind,
}

/// A relay ticket for a link with a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayOffer {
    /// The relay (made concrete).
    pub relay: SocketAddr,
    /// The sealed ticket, opaque to us.
    pub ticket: Vec<u8>,
    /// Why the link is relayed.
    pub reason: RelayReason,
}

enum Request {
    Lookup { number: Number, intent: LookupIntent, reply: oneshot::Sender<Result<LookupAnswer, ClientError>> },
    Watch { numbers: Vec<Number> },
    Logout { done: oneshot::Sender<()> },
    Announce { candidates: Vec<Candidate>, nat: NatKind },
    Introduce { number: Number, reply: oneshot::Sender<Result<Introduction, ClientError>> },
    Relay { number: Number, reason: RelayReason, reply: oneshot::Sender<Result<RelayOffer, ClientError>> },
}

impl Request {
    /// Answers a request that needs a session while there is none (keeping what the next one needs).
    fn refuse(self, watched: &mut HashSet<Number>) {
        match self {
            Request::Lookup { reply, .. } => drop(reply.send(Err(ClientError::NotConnected))),
            Request::Introduce { reply, .. } => drop(reply.send(Err(ClientError::NotConnected))),
            Request::Relay { reply, .. } => drop(reply.send(Err(ClientError::NotConnected))),
            Request::Watch { numbers } => watched.extend(numbers),
            // Announced again on the next session.
            Request::Announce { .. } | Request::Logout { .. } => {}
        }
    }
}

/// What the session task shows its handles: the current session's version and published address.
#[derive(Default)]
struct Current {
    /// The protocol version of the session; 0 while there is none.
    version: AtomicU16,
    /// Where the directory publishes us, once registered (kept while reconnecting).
    published: Mutex<Option<SocketAddr>>,
}

impl Current {
    /// `session` is the current one.
    fn set(&self, session: &Registered) {
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.published);
        self.version.store(session.version, Ordering::Relaxed);
    }
}

/// Cheap handle to the session task.
#[derive(Clone)]
pub struct DirectoryHandle {
    tx: mpsc::Sender<Request>,
    request_timeout: Duration,
    current: Arc<Current>,
    reach: watch::Receiver<Option<Reach>>,
}

impl DirectoryHandle {
    /// Asks where `number` is and which key owns it.
    pub async fn lookup(&self, number: &Number, intent: LookupIntent) -> Result<LookupAnswer, ClientError> {
        let (reply, rx) = oneshot::channel();
        let req = Request::Lookup { number: number.clone(), intent, reply };
        self.ask(req, rx, "directory lookup").await
    }

    async fn ask<T>(
        &self,
        req: Request,
        rx: oneshot::Receiver<Result<T, ClientError>>,
        what: &'static str,
    ) -> Result<T, ClientError> {
        self.tx.send(req).await.map_err(|_| ClientError::NotConnected)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(ClientError::Timeout(what)),
            Ok(Err(_)) => Err(ClientError::NotConnected),
            Ok(Ok(answer)) => answer,
        }
    }

    /// What the current session's server offers for NAT traversal: `None` while disconnected, or
    /// when the session is older than version 3.
    pub fn reach(&self) -> Option<Reach> {
        *self.reach.borrow()
    }

    /// Follows [`DirectoryHandle::reach`]: changes on every new session.
    pub(crate) fn reach_changes(&self) -> watch::Receiver<Option<Reach>> {
        self.reach.clone()
    }

    /// Tells a version 3 directory where we may be reached (at most [`MAX_CANDIDATES`] are sent).
    pub(crate) async fn announce(&self, mut candidates: Vec<Candidate>, nat: NatKind) {
        if self.reach().is_none() {
            return;
        }
        candidates.truncate(MAX_CANDIDATES);
        let _ = self.tx.send(Request::Announce { candidates, nat }).await;
    }

    /// Asks a version 3 directory to introduce us to `number` (which is told at once, and starts
    /// punching towards us).
    pub(crate) async fn introduce(&self, number: &Number) -> Result<Introduction, ClientError> {
        if self.reach().is_none() {
            return Err(ClientError::NotConnected);
        }
        let (reply, rx) = oneshot::channel();
        self.ask(Request::Introduce { number: number.clone(), reply }, rx, "introduction").await
    }

    /// Asks a version 3 directory for a relay ticket to `number` (which gets the same ticket).
    pub(crate) async fn relay(
        &self,
        number: &Number,
        reason: RelayReason,
    ) -> Result<RelayOffer, ClientError> {
        if self.reach().is_none() {
            return Err(ClientError::NotConnected);
        }
        let (reply, rx) = oneshot::channel();
        self.ask(Request::Relay { number: number.clone(), reason, reply }, rx, "relay request").await
    }

    /// Asks for presence pushes about `numbers` (kept across reconnections).
    pub async fn watch(&self, numbers: Vec<Number>) {
        let _ = self.tx.send(Request::Watch { numbers }).await;
    }

    /// Tells the server we leave, and waits (briefly) until it is written.
    pub async fn logout(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Logout { done }).await.is_ok() {
            let _ = tokio::time::timeout(self.request_timeout, rx).await;
        }
    }

    /// The protocol version the current session agreed, `None` while there is no session. What a
    /// later version adds to the directory's messages is sent only when this says it may.
    pub fn version(&self) -> Option<u16> {
        Some(self.current.version.load(Ordering::Relaxed)).filter(|v| *v != 0)
    }

    /// Where the directory publishes us; `None` until the first registration.
    pub fn published(&self) -> Option<SocketAddr> {
        *self.current.published.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Dials the one directory address `server`, authenticates both ways (pinning its key under that
/// address), and registers `listen`, speaking this code's versions. (A client tries every address
/// of its directory: see [`start`].)
pub async fn connect(
    server: SocketAddr,
    number: &Number,
    identity: &Identity,
    listen: SocketAddr,
    store: &Store,
    timeouts: &Timeouts,
) -> Result<Registered, ClientError> {
    let params = Params {
        servers: vec![server.into()],
        number: number.clone(),
        identity: identity.clone(),
        listen,
        store: store.clone(),
        timeouts: timeouts.clone(),
        versions: version::SPOKEN,
    };
    let (targets, _) = address::targets(&params.servers, None, timeouts.connect).await;
    let target = targets.first().ok_or(ClientError::NotConnected)?;
    register::register(target, &params).await
}

/// What the session task tells the rest of the client.
#[derive(Debug)]
pub(crate) enum Note {
    /// A watched number's status (at watch time and on every change).
    Presence { number: Number, online: Option<Location> },
    /// No session, and none could be made at once; the task keeps trying with backoff. Also the
    /// first note of a client that started while its directory was unreachable.
    Lost { reason: String },
    /// A session again: registered and watching again (after `Lost`, or at once on another address).
    Reconnected,
    /// Reconnecting fails for a reason a person must know (the server's key changed, no version in
    /// common, the number is refused); said once per reason.
    Refused { reason: String },
    /// Another copy of this profile registered: the task has stopped talking to the directory.
    Replaced { reason: String },
    /// (v3) `from` is trying to reach us now on these paths: punch towards them.
    Introduced { from: Number, intro: Introduction },
    /// (v3) `from` asked for a relayed link with us: connect to the relay with this ticket.
    RelayOffered { from: Number, offer: RelayOffer },
}

/// How a round of attempts ended.
pub(crate) enum Round {
    /// A session (boxed: a round's other outcomes are small).
    Registered(Box<Registered>),
    /// A refusal that ends the trying: the number is bound to another key (or, at once, replaced).
    Final(ClientError),
    /// Nothing registered: errors a person must hear of, and what every attempt met.
    Failed { loud: Vec<ClientError>, reason: String },
}

/// Whether an attempt's error ends the trying, must be said, or is passing.
enum Weight {
    Final,
    Loud,
    Passing,
}

fn weigh(e: &ClientError) -> Weight {
    match e {
        ClientError::Closed { code: CloseCode::NumberTaken | CloseCode::Replaced, .. } => Weight::Final,
        ClientError::ServerKeyChanged { .. }
        | ClientError::NotOneDirectory { .. }
        | ClientError::Version { .. }
        | ClientError::Refused(_)
        | ClientError::Directory(_)
        | ClientError::Limited { .. } => Weight::Loud,
        _ => Weight::Passing,
    }
}

/// One round: every address of the directory once, in the order given, `last` (the address just
/// lost) at the end, until one registers.
pub(crate) async fn round(p: &Params, last: Option<SocketAddr>) -> Round {
    let (targets, mut reasons) = address::targets(&p.servers, last, p.timeouts.connect).await;
    let mut loud = Vec::new();
    for target in &targets {
        match register::register(target, p).await {
            Ok(session) => return Round::Registered(Box::new(session)),
            Err(e) => {
                debug!("registering at {} failed: {e}", target.addr);
                let text = e.to_string();
                let at = target.addr.to_string();
                reasons.push(if text.contains(&at) { text } else { format!("{at}: {text}") });
                match weigh(&e) {
                    Weight::Final => return Round::Final(e),
                    Weight::Loud => loud.push(e),
                    Weight::Passing => {}
                }
            }
        }
    }
    if targets.is_empty() && reasons.is_empty() {
        reasons.push("no address to try".into());
    }
    Round::Failed { loud, reason: reasons.join("; ") }
}

/// The key pinned for the directory at `servers`, if this profile ever reached it.
pub(crate) async fn pinned_key(
    store: &Store,
    servers: &[ServerAddr],
) -> Result<Option<PublicKey>, ClientError> {
    let pins = store.server_pins(servers.iter().map(ToString::to_string).collect()).await?;
    register::directory_key(&pins)
}

/// How the session task begins.
pub(crate) enum Begin {
    /// With this session.
    Online(Box<Registered>),
    /// Without one (the directory was unreachable at start): it says why, then keeps trying.
    Offline { reason: String },
}

/// Spawns the session task and returns its handle.
pub(crate) fn spawn(
    begin: Begin,
    params: Params,
    notes: mpsc::Sender<Note>,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> DirectoryHandle {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let current = Arc::new(Current::default());
    let first_reach = match &begin {
        Begin::Online(s) => {
            current.set(s);
            s.reach
        }
        Begin::Offline { .. } => None,
    };
    let (reach_tx, reach) = watch::channel(first_reach);
    let handle =
        DirectoryHandle { tx, request_timeout: params.timeouts.request, current: current.clone(), reach };
    let task = Task { params, rx, notes, cancel, current, reach: reach_tx, watched: HashSet::new() };
    tracker.spawn(task.supervise(begin));
    handle
}

/// The session task's state.
struct Task {
    params: Params,
    rx: mpsc::Receiver<Request>,
    notes: mpsc::Sender<Note>,
    cancel: CancellationToken,
    current: Arc<Current>,
    /// What the current session offers for NAT traversal.
    reach: watch::Sender<Option<Reach>>,
    /// Numbers watched, restored on every new session.
    watched: HashSet<Number>,
}

impl Task {
    async fn note(&self, note: Note) {
        let _ = self.notes.send(note).await;
    }

    async fn supervise(mut self, begin: Begin) {
        let mut session = match begin {
            Begin::Online(s) => s,
            Begin::Offline { reason } => {
                self.note(Note::Lost { reason }).await;
                match self.seek(None).await {
                    Some(s) => s,
                    None => return,
                }
            }
        };
        loop {
            let last = session.target.addr;
            self.current.set(&session);
            self.reach.send_replace(session.reach);
            let ended = session::run(
                *session,
                &mut self.rx,
                &mut self.watched,
                &self.notes,
                &self.reach,
                &self.cancel,
            )
            .await;
            self.current.version.store(0, Ordering::Relaxed);
            self.reach.send_replace(None);
            let reason = match ended {
                session::Ended::Stop => return,
                session::Ended::Closed(code, reason) => {
                    let e = ClientError::Closed { number: self.params.number.clone(), code, reason };
                    if matches!(weigh(&e), Weight::Final) {
                        return self.stop(e).await;
                    }
                    e.to_string()
                }
                session::Ended::Lost(reason) => reason,
            };
            warn!("directory session at {last} lost: {reason}; reconnecting");
            session = match self.seek(Some((last, reason))).await {
                Some(s) => s,
                None => return,
            };
        }
    }

    /// Rounds until a session: the first at once after a session at `lost` ended (that address
    /// last), then with backoff (without `lost`, the first after a pause too). Says the directory is lost unless another address takes the
    /// client back within [`FAILOVER_GRACE`] (at once when there is no other address), and says
    /// when it is back. `None` after logout, shutdown or a final refusal.
    async fn seek(&mut self, lost: Option<(SocketAddr, String)>) -> Option<Box<Registered>> {
        let mut backoff = RECONNECT_MIN;
        let (mut last, mut unsaid) = match lost {
            Some((addr, reason)) => (Some(addr), Some(reason)),
            // A start without the directory: its first round just failed.
            None => {
                self.serving(tokio::time::sleep(backoff)).await?;
                backoff *= 2;
                (None, None)
            }
        };
        let mut told: HashSet<String> = HashSet::new();
        loop {
            let outcome = {
                let attempt = round(&self.params, last.take());
                tokio::pin!(attempt);
                let grace = if unsaid.is_some() && self.can_move() { FAILOVER_GRACE } else { Duration::ZERO };
                let quick = tokio::time::timeout(grace, &mut attempt);
                match serve(&mut self.rx, &mut self.watched, &self.cancel, quick).await? {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        if let Some(reason) = unsaid.take() {
                            self.note(Note::Lost { reason }).await;
                        }
                        serve(&mut self.rx, &mut self.watched, &self.cancel, &mut attempt).await?
                    }
                }
            };
            match outcome {
                Round::Registered(s) => {
                    info!("directory session at {} (protocol version {})", s.target.addr, s.version);
                    self.current.set(&s);
                    self.note(Note::Reconnected).await;
                    return Some(s);
                }
                Round::Final(e) => {
                    self.stop(e).await;
                    return None;
                }
                Round::Failed { loud, reason } => {
                    debug!("no directory address took us: {reason}");
                    // A limit says when it will take us: no sooner.
                    if let Some(after) = loud.iter().filter_map(ClientError::retry_after).min() {
                        backoff = backoff.max(after);
                    }
                    for e in loud {
                        let text = e.to_string();
                        if told.insert(text.clone()) {
                            warn!("{text}");
                            self.note(Note::Refused { reason: text }).await;
                        }
                    }
                    if let Some(reason) = unsaid.take() {
                        self.note(Note::Lost { reason }).await;
                    }
                }
            }
            self.serving(tokio::time::sleep(backoff)).await?;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    /// Whether the directory may have another address to move to.
    fn can_move(&self) -> bool {
        let servers = &self.params.servers;
        servers.len() > 1 || servers.iter().any(ServerAddr::is_name)
    }

    /// Answers requests while `fut` runs; `None` if logout or shutdown came first.
    async fn serving<T>(&mut self, fut: impl Future<Output = T>) -> Option<T> {
        serve(&mut self.rx, &mut self.watched, &self.cancel, fut).await
    }

    /// Stops talking to the directory for `e` (replaced, or the number is taken): says so, then
    /// answers requests with `NotConnected` until logout or shutdown.
    async fn stop(&mut self, e: ClientError) {
        let reason = e.to_string();
        warn!("{reason}");
        let replaced = matches!(e, ClientError::Closed { code: CloseCode::Replaced, .. });
        self.note(if replaced { Note::Replaced { reason } } else { Note::Refused { reason } }).await;
        self.serving(std::future::pending::<()>()).await;
    }
}

/// Answers requests (there is no session: lookups fail, watches are kept for the next one) while
/// `fut` runs; `None` if logout or shutdown came first.
async fn serve<T>(
    rx: &mut mpsc::Receiver<Request>,
    watched: &mut HashSet<Number>,
    cancel: &CancellationToken,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            done = &mut fut => return Some(done),
            req = rx.recv() => match req {
                None => return None,
                Some(Request::Logout { done }) => { let _ = done.send(()); return None; }
                Some(other) => other.refuse(watched),
            },
        }
    }
}
