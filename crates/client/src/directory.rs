//! The client's session with the directory server.
//!
//! [`connect`] dials, runs the initiator side of the handshake (pinning the server's key on first use
//! and refusing a changed one), proves our identity and registers. A task then owns the session: it
//! sends the heartbeats, matches answers to requests by id, forwards presence pushes, and when the
//! session is lost reconnects with backoff, re-registers and re-watches by itself. Callers talk to it
//! through a cloneable [`DirectoryHandle`], which stays valid across reconnections.
//!
//! Version 3 directories (those that send `Reachability` after the handshake) also introduce peers
//! and hand out relay tickets ([`DirectoryHandle::introduce`], [`DirectoryHandle::relay`]); the
//! session says what the current server offers through [`DirectoryHandle::reach`], and nothing of
//! version 3 is ever sent to a server that did not offer it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use whatsap2p_link::{LinkError, SessionReader, SessionWriter};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, Location, LookupIntent, ServerToClient, MAX_WATCH_BATCH};
use whatsap2p_proto::handshake::{Purpose, ServerHello};
use whatsap2p_proto::nat::{Candidate, NatKind, ProbeToken, RelayReason, MAX_CANDIDATES};
use whatsap2p_proto::{Number, PublicKey, PROTOCOL_VERSION};

use crate::config::Timeouts;
use crate::handshake::{self, Answer};
use crate::profile::Identity;
use crate::store::Store;
use crate::transport::{self, PeerStream};
use crate::ClientError;

/// Requests waiting in the session task's queue; a full queue makes callers wait, not fail.
const REQUEST_QUEUE: usize = 256;

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
    fn new(server: SocketAddr, token: ProbeToken, udp_port: Option<u16>, relay: Option<SocketAddr>) -> Self {
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

/// Cheap handle to the session task.
#[derive(Clone)]
pub struct DirectoryHandle {
    tx: mpsc::Sender<Request>,
    request_timeout: Duration,
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
    /// when the server is older than version 3.
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
}

/// A registered session, ready to be driven by the session task (see [`connect`]).
pub struct Registered {
    /// The address the directory publishes for our listener.
    pub published: SocketAddr,
    /// The server's key (pinned).
    pub server_key: PublicKey,
    /// How often to send heartbeats: a third of the server's timeout, at most the configured interval.
    heartbeat: Duration,
    /// What a version 3 server offers (its `Reachability`); `None` from an older one.
    pub reach: Option<Reach>,
    reader: SessionReader<PeerStream>,
    writer: Writer,
}

type Writer = SessionWriter<PeerStream>;

/// Dials the directory, authenticates both ways and registers `listen`.
pub async fn connect(
    server: SocketAddr,
    number: &Number,
    identity: &Identity,
    listen: SocketAddr,
    store: &Store,
    timeouts: &Timeouts,
) -> Result<Registered, ClientError> {
    let what = format!("directory {server}");
    let stream = transport::dial(server, timeouts.connect, "connecting to the directory").await?;
    let context = &what;
    let check = |answer: Answer| async move {
        let server_hello: ServerHello = decode_struct(&answer.payload)
            .map_err(|e| ClientError::link(format!("handshake with {context}"))(e.into()))?;
        if server_hello.version != PROTOCOL_VERSION {
            return Err(ClientError::Directory(format!(
                "server speaks protocol version {}",
                server_hello.version
            )));
        }
        let server_key = answer.remote_static.ok_or(ClientError::Directory("no server key".into()))?;
        check_server_pin(store, &server.to_string(), server_key).await?;
        let heartbeat = (Duration::from_millis(server_hello.heartbeat_timeout_ms) / 3)
            .clamp(Duration::from_millis(100), timeouts.heartbeat);
        Ok((server_key, heartbeat))
    };
    let handshake = handshake::initiate(stream, identity, number, Purpose::Directory, &what, check);
    let ((server_key, heartbeat), session) = tokio::time::timeout(timeouts.handshake, handshake)
        .await
        .map_err(|_| ClientError::Timeout("directory handshake"))??;
    let (mut reader, mut writer) = session.split();
    writer
        .send_msg(&ClientToServer::Register { listen })
        .await
        .map_err(ClientError::link(format!("registering with {what}")))?;
    // A version 3 server says what it offers for NAT traversal right after the handshake, so
    // before it answers the registration.
    let mut reach = None;
    let registered = async {
        loop {
            let answer = reader.recv_msg::<ServerToClient>().await;
            match answer.map_err(ClientError::link(format!("registering with {what}")))? {
                Some(ServerToClient::Registered { listen }) => return Ok(listen),
                Some(ServerToClient::Reachability { token, udp_port, relay }) => {
                    reach = Some(Reach::new(server, token, udp_port, relay));
                }
                Some(ServerToClient::Refused { reason }) => return Err(ClientError::Refused(reason)),
                Some(other) => {
                    return Err(ClientError::Directory(format!(
                        "unexpected answer to registration: {other:?}"
                    )))
                }
                None => {
                    return Err(ClientError::Directory(
                        "server closed the connection during registration".into(),
                    ))
                }
            }
        }
    };
    let published = tokio::time::timeout(timeouts.request, registered)
        .await
        .map_err(|_| ClientError::Timeout("registration"))??;
    Ok(Registered { published, server_key, heartbeat, reach, reader, writer })
}

async fn check_server_pin(store: &Store, server: &str, presented: PublicKey) -> Result<(), ClientError> {
    match store.server_pin(server).await? {
        Some(pinned) if pinned != presented => {
            Err(ClientError::ServerKeyChanged { server: server.to_owned(), pinned, presented })
        }
        Some(_) => Ok(()),
        None => store.pin_server(server, &presented).await,
    }
}

/// What the session task tells the rest of the client.
#[derive(Debug)]
pub(crate) enum Note {
    /// A watched number's status (at watch time and on every change).
    Presence { number: Number, online: Option<Location> },
    /// The session ended unexpectedly; the task is reconnecting.
    Lost { reason: String },
    /// The session is back: registered and watching again.
    Reconnected,
    /// Reconnecting fails for a reason a person must know (the server's key changed, the number
    /// is refused); said once per reason.
    Refused { reason: String },
    /// (v3) `from` is trying to reach us now on these paths: punch towards them.
    Introduced { from: Number, intro: Introduction },
    /// (v3) `from` asked for a relayed link with us: connect to the relay with this ticket.
    RelayOffered { from: Number, offer: RelayOffer },
}

/// What the session task needs to reconnect on its own.
pub(crate) struct Params {
    pub(crate) server: SocketAddr,
    pub(crate) number: Number,
    pub(crate) identity: Identity,
    pub(crate) listen: SocketAddr,
    pub(crate) store: Store,
    pub(crate) timeouts: Timeouts,
}

/// First and longest pause between reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Spawns the session task and returns its handle. The task reconnects (with backoff) whenever the
/// session is lost, re-registers and re-watches, and reports through `notes`.
pub(crate) fn spawn(
    first: Registered,
    params: Params,
    notes: mpsc::Sender<Note>,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> DirectoryHandle {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let (reach_tx, reach) = watch::channel(first.reach);
    let handle = DirectoryHandle { tx, request_timeout: params.timeouts.request, reach };
    tracker.spawn(supervise(first, params, rx, notes, reach_tx, cancel));
    handle
}

async fn supervise(
    first: Registered,
    params: Params,
    mut rx: mpsc::Receiver<Request>,
    notes: mpsc::Sender<Note>,
    reach: watch::Sender<Option<Reach>>,
    cancel: CancellationToken,
) {
    let mut watched: HashSet<Number> = HashSet::new();
    let mut session = Some(first);
    loop {
        if let Some(s) = session.take() {
            reach.send_replace(s.reach);
            let server = params.server;
            match run(s, server, &mut rx, &mut watched, &notes, &reach, &cancel).await {
                None => return,
                Some(reason) => {
                    reach.send_replace(None);
                    warn!("directory session lost: {reason}; reconnecting");
                    let _ = notes.send(Note::Lost { reason }).await;
                }
            }
        }
        let mut backoff = RECONNECT_MIN;
        let mut told: Option<String> = None;
        while session.is_none() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                req = rx.recv() => match req {
                    None => return,
                    Some(Request::Logout { done }) => { let _ = done.send(()); return; }
                    Some(Request::Lookup { reply, .. }) => { let _ = reply.send(Err(ClientError::NotConnected)); }
                    Some(Request::Introduce { reply, .. }) => { let _ = reply.send(Err(ClientError::NotConnected)); }
                    Some(Request::Relay { reply, .. }) => { let _ = reply.send(Err(ClientError::NotConnected)); }
                    Some(Request::Announce { .. }) => {}
                    Some(Request::Watch { numbers }) => watched.extend(numbers),
                },
                _ = tokio::time::sleep(backoff) => {
                    let p = &params;
                    match connect(p.server, &p.number, &p.identity, p.listen, &p.store, &p.timeouts).await {
                        Ok(s) => {
                            info!("directory session restored");
                            let _ = notes.send(Note::Reconnected).await;
                            session = Some(s);
                        }
                        Err(e) => {
                            debug!("reconnecting to the directory failed: {e}");
                            if matches!(e, ClientError::ServerKeyChanged { .. } | ClientError::Refused(_)) {
                                let reason = e.to_string();
                                if told.as_ref() != Some(&reason) {
                                    warn!("{reason}");
                                    let _ = notes.send(Note::Refused { reason: reason.clone() }).await;
                                    told = Some(reason);
                                }
                            }
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                        }
                    }
                }
            }
        }
    }
}

/// A request waiting for its answer, by kind.
enum Waiting {
    Lookup(oneshot::Sender<Result<LookupAnswer, ClientError>>),
    Introduce(oneshot::Sender<Result<Introduction, ClientError>>),
    Relay(oneshot::Sender<Result<RelayOffer, ClientError>>),
}

impl Waiting {
    fn fail(self, e: ClientError) {
        match self {
            Waiting::Lookup(r) => drop(r.send(Err(e))),
            Waiting::Introduce(r) => drop(r.send(Err(e))),
            Waiting::Relay(r) => drop(r.send(Err(e))),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Waiting::Lookup(r) => r.is_closed(),
            Waiting::Introduce(r) => r.is_closed(),
            Waiting::Relay(r) => r.is_closed(),
        }
    }
}

type Pending = HashMap<u32, Waiting>;

async fn send_watch(writer: &mut Writer, numbers: Vec<Number>) -> Result<(), LinkError> {
    for chunk in numbers.chunks(MAX_WATCH_BATCH) {
        writer.send_msg(&ClientToServer::Watch { numbers: chunk.iter().map(Into::into).collect() }).await?;
    }
    Ok(())
}

/// Drives one session; returns why it was lost, or `None` after logout or shutdown.
async fn run(
    session: Registered,
    server: SocketAddr,
    rx: &mut mpsc::Receiver<Request>,
    watched: &mut HashSet<Number>,
    notes: &mpsc::Sender<Note>,
    reach: &watch::Sender<Option<Reach>>,
    cancel: &CancellationToken,
) -> Option<String> {
    let Registered { mut reader, mut writer, heartbeat, .. } = session;
    let mut pending: Pending = HashMap::new();
    let mut next_req: u32 = 0;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let lost = 'session: {
        if !watched.is_empty() {
            if let Err(e) = send_watch(&mut writer, watched.iter().cloned().collect()).await {
                break 'session e.to_string();
            }
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = writer.close().await;
                    return None;
                }
                req = rx.recv() => match req {
                    None => return None,
                    Some(Request::Logout { done }) => {
                        let _ = writer.send_msg(&ClientToServer::Logout).await;
                        let _ = writer.close().await;
                        let _ = done.send(());
                        return None;
                    }
                    Some(Request::Lookup { number, intent, reply }) => {
                        next_req = next_req.wrapping_add(1);
                        pending.insert(next_req, Waiting::Lookup(reply));
                        let lookup = ClientToServer::Lookup { req: next_req, number: number.into(), intent };
                        if let Err(e) = writer.send_msg(&lookup).await {
                            break e.to_string();
                        }
                    }
                    Some(Request::Introduce { number, reply }) => {
                        next_req = next_req.wrapping_add(1);
                        pending.insert(next_req, Waiting::Introduce(reply));
                        let ask = ClientToServer::Introduce { req: next_req, number: number.into() };
                        if let Err(e) = writer.send_msg(&ask).await {
                            break e.to_string();
                        }
                    }
                    Some(Request::Relay { number, reason, reply }) => {
                        next_req = next_req.wrapping_add(1);
                        pending.insert(next_req, Waiting::Relay(reply));
                        let ask = ClientToServer::RelayRequest { req: next_req, number: number.into(), reason };
                        if let Err(e) = writer.send_msg(&ask).await {
                            break e.to_string();
                        }
                    }
                    Some(Request::Announce { candidates, nat }) => {
                        if let Err(e) = writer.send_msg(&ClientToServer::Announce { candidates, nat }).await {
                            break e.to_string();
                        }
                    }
                    Some(Request::Watch { numbers }) => {
                        let new: Vec<Number> = numbers.into_iter().filter(|n| watched.insert(n.clone())).collect();
                        if !new.is_empty() {
                            if let Err(e) = send_watch(&mut writer, new).await {
                                break e.to_string();
                            }
                        }
                    }
                },
                msg = reader.recv_msg::<ServerToClient>() => {
                    last_heard = tokio::time::Instant::now();
                    match msg {
                        Ok(Some(ServerToClient::LookupResult { req, number, key, online })) => {
                            if let Some(Waiting::Lookup(reply)) = pending.remove(&req) {
                                let _ = reply.send(Ok(LookupAnswer { number, key, online }));
                            }
                        }
                        Ok(Some(ServerToClient::Introduction { req, candidates, nat, .. })) => {
                            if let Some(Waiting::Introduce(reply)) = pending.remove(&req) {
                                let _ = reply.send(Ok(Introduction { candidates: capped(candidates), nat }));
                            }
                        }
                        Ok(Some(ServerToClient::RelayOffer { req: Some(req), relay, ticket, reason, .. })) => {
                            if let Some(Waiting::Relay(reply)) = pending.remove(&req) {
                                let _ = reply.send(Ok(RelayOffer { relay: concrete(relay, server), ticket, reason }));
                            }
                        }
                        Ok(Some(ServerToClient::RelayOffer { req: None, number, relay, ticket, reason })) => {
                            let offer = RelayOffer { relay: concrete(relay, server), ticket, reason };
                            let _ = notes.send(Note::RelayOffered { from: number, offer }).await;
                        }
                        Ok(Some(ServerToClient::Introduced { from, candidates, nat })) => {
                            let intro = Introduction { candidates: capped(candidates), nat };
                            let _ = notes.send(Note::Introduced { from, intro }).await;
                        }
                        Ok(Some(ServerToClient::Reachability { token, udp_port, relay })) => {
                            reach.send_replace(Some(Reach::new(server, token, udp_port, relay)));
                        }
                        Ok(Some(ServerToClient::Presence { number, online, .. })) => {
                            let _ = notes.send(Note::Presence { number, online }).await;
                        }
                        Ok(Some(ServerToClient::Error { req: Some(req), message })) => {
                            if let Some(waiting) = pending.remove(&req) {
                                waiting.fail(ClientError::Directory(message));
                            }
                        }
                        Ok(Some(ServerToClient::Refused { reason })) => break format!("refused: {reason}"),
                        Ok(Some(other)) => debug!("directory says {other:?}"),
                        Ok(None) => break "the server closed the connection".to_owned(),
                        Err(e) => break e.to_string(),
                    }
                }
                _ = ticker.tick() => {
                    // Three silent heartbeats: the server or the path is gone even if TCP has not noticed.
                    if last_heard.elapsed() > heartbeat * 3 {
                        break format!("no answer from the server for {:?}", last_heard.elapsed());
                    }
                    pending.retain(|_, reply| !reply.is_closed());
                    if let Err(e) = writer.send_msg(&ClientToServer::Heartbeat).await {
                        break e.to_string();
                    }
                }
            }
        }
    };
    for (_, waiting) in pending.drain() {
        waiting.fail(ClientError::NotConnected);
    }
    Some(lost)
}

/// At most [`MAX_CANDIDATES`] of what a directory sends: it never sends more, and a broken one
/// cannot make us try more.
fn capped(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.truncate(MAX_CANDIDATES);
    candidates
}
