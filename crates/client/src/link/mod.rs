//! Direct links between clients: establishing them, keeping one per peer, and handing what arrives
//! on them to its owner.
//!
//! Dialing: look the number up, check the key the directory gives against the contact's pinned key,
//! race every path to it (`dial.rs`: TCP, QUIC through punched NATs, the relay), and require the
//! responder to prove that key in the handshake. Accepting: require the initiator's proof, then ask
//! the directory whether that key owns the number it claims, and check the pin. Either way the link
//! runs over a [`PeerStream`] (see `transport`): whatever the transport, a stream a peer opened to
//! us (TCP, QUIC, or the relay after an offer) goes through `Links::adopt`.
//!
//! Each link knows its [`Path`]; a change of a peer's path is an [`Event::Path`]. A relayed link we
//! dialed keeps trying to go direct (`upgrade.rs`); when a direct link to the same peer comes (ours
//! or the peer's), it takes the relayed one's place: the old one is *retired* — nothing new is
//! written on it, what was queued is written, its write side is closed (the end of its stream is
//! the marker) — and the new link's reader waits (bounded) until the old one's reader has read to
//! the end, so everything sent on the old path is handled before anything from the new one. What
//! was not acknowledged on the old link goes out again on the new one (the receiver deduplicates),
//! and a file transfer's attempt fails as "link closed" and resumes on the new link.
//!
//! Each link runs two tasks: a writer fed by a bounded queue (`write.rs`), and a reader (`read.rs`)
//! that hands every message to the link's `LinkOwner` (the client's subsystems, composed in
//! `inbound.rs`) and writes the owner's replies. Reading and writing never wait on each other. A
//! peer has a slot here only while a link to it is alive or being dialed: the slot goes when the
//! link ends, so a peer that merely connected once costs nothing after.
//!
//! # Layout
//! - `handle.rs`: `LinkHandle`, what the rest of the client writes through, and [`WriteError`].
//! - `read.rs`, `write.rs`: the two tasks of a link.
//! - `admission.rs`: how many peers may handshake at once, in all and from one source.
//! - `dial.rs`: racing the paths to a peer; `path.rs`: [`Path`]; `upgrade.rs`: a relayed link
//!   going direct.

mod admission;
mod dial;
mod handle;
mod path;
mod read;
mod upgrade;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};
use whatsap2p_proto::chunk::ChunkView;
use whatsap2p_proto::directory::LookupIntent;
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::version::Versions;
use whatsap2p_proto::{Number, PublicKey};

use admission::{Admission, Turned};
pub use admission::{FREE_HANDSHAKES, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE};
pub(crate) use handle::LinkHandle;
pub use handle::WriteError;
pub use path::{reason_text, Path};

use crate::config::Timeouts;
use crate::directory::DirectoryHandle;
use crate::event::Event;
use crate::handshake::{Accepted, Linked};
use crate::presence::PresenceCache;
use crate::profile::Identity;
use crate::reach::Reachability;
use crate::store::Store;
use crate::transport::{PeerListener, PeerStream};
use crate::ClientError;

/// Most peer connections accepted at once (handshaking or linked).
pub const MAX_PEER_CONNECTIONS: usize = 1024;

/// What a link's reader does after handing a message to its owner.
// Moved once per message: boxing the reply would cost an allocation on every acknowledgement.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Verdict {
    /// Nothing to answer.
    Done,
    /// Write this back.
    Reply(PeerMessage),
    /// The peer broke the rules (or we are going away): drop the link. The text is for the log.
    Close(String),
}

/// Who a link hands what arrives on it to: the client's subsystems, composed in `inbound.rs`. The
/// link knows nothing of messages, files or groups; this is its one way to the rest of the client.
pub(crate) trait LinkOwner: Send + Sync {
    /// A message arrived on `link`.
    fn message<'a>(&'a self, link: &'a LinkHandle, msg: PeerMessage) -> BoxFuture<'a, Verdict>;
    /// File bytes arrived on `link`, decrypted into `frame`: the owner may take the buffer along,
    /// leaving another in its place. Returns what to write back, if anything.
    fn chunk(&self, link: &LinkHandle, chunk: ChunkView, frame: &mut Vec<u8>) -> Option<PeerMessage>;
    /// Whether `link` carries a transfer, so its reader keeps a frame-sized buffer.
    fn carries_bulk(&self, link: &LinkHandle) -> bool;
    /// `link` ended (its slot is already given back).
    fn closed(&self, link: &LinkHandle);
}

/// The link to one peer, or `None`; locked while it is dialed, so one dial serves every caller.
type Slot = Arc<tokio::sync::Mutex<Option<LinkHandle>>>;

/// What [`Links`] needs from the rest of the client.
pub(crate) struct LinkParts {
    pub(crate) me: Number,
    pub(crate) identity: Identity,
    pub(crate) directory: DirectoryHandle,
    pub(crate) store: Store,
    pub(crate) presence: PresenceCache,
    pub(crate) reach: Reachability,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) timeouts: Timeouts,
    /// The protocol versions links may use.
    pub(crate) versions: Versions,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

struct Inner {
    parts: LinkParts,
    /// One async slot per peer with a link (or a dial) under way, so dialing one peer never
    /// waits on another.
    slots: Mutex<HashMap<Number, Slot>>,
    /// Set once the subsystems exist (they need `Links` themselves); taken at shutdown, which
    /// ends the reference cycle between them.
    owner: Mutex<Option<Arc<dyn LinkOwner>>>,
    /// Places for accepted connections (TCP, QUIC and relayed alike).
    permits: Arc<Semaphore>,
    /// Places for connections still handshaking, and the count of those turned away.
    admission: Arc<Admission>,
    /// Peers we dialed that speak no version we do, with the versions they speak, once the user
    /// was told; a peer leaves it when a link to it is made. Only numbers we write to are dialed.
    versions_told: Mutex<HashMap<Number, Versions>>,
    /// The path last reported for each peer with a slot, so an event goes out only on a change.
    paths: Mutex<HashMap<Number, Path>>,
}

/// The client's peer links. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Links(Arc<Inner>);

impl Links {
    pub(crate) fn new(parts: LinkParts) -> Self {
        Self(Arc::new(Inner {
            parts,
            slots: Mutex::default(),
            owner: Mutex::default(),
            permits: Arc::new(Semaphore::new(MAX_PEER_CONNECTIONS)),
            admission: Arc::default(),
            versions_told: Mutex::default(),
            paths: Mutex::default(),
        }))
    }

    /// Whom links hand their messages to from now on.
    pub(crate) fn set_owner(&self, owner: Arc<dyn LinkOwner>) {
        *self.0.owner.lock().unwrap_or_else(|p| p.into_inner()) = Some(owner);
    }

    fn owner(&self) -> Option<Arc<dyn LinkOwner>> {
        self.0.owner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Number, Slot>> {
        self.0.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, peer: &Number) -> Slot {
        self.slots().entry(peer.clone()).or_default().clone()
    }

    /// The live link to `peer`, if there is one: never dials (but waits for a dial under way).
    pub(crate) async fn live(&self, peer: &Number) -> Option<LinkHandle> {
        let slot = self.slots().get(peer).cloned()?;
        let link = slot.lock().await.as_ref().filter(|l| l.is_alive()).cloned();
        drop(slot);
        if link.is_none() {
            self.release(peer);
        }
        link
    }

    /// The live link to `peer` if there is one and nobody is dialing it: never waits.
    pub(crate) fn try_live(&self, peer: &Number) -> Option<LinkHandle> {
        let slot = self.slots().get(peer).cloned()?;
        let link = slot.try_lock().ok()?.as_ref().filter(|l| l.is_alive()).cloned();
        link
    }

    /// A live link to `peer`: the one in use, or a new one dialed now.
    pub(crate) async fn connect(&self, peer: &Number) -> Result<LinkHandle, ClientError> {
        let slot = self.slot(peer);
        let dialed = {
            let mut held = slot.lock().await;
            if let Some(link) = held.as_ref().filter(|l| l.is_alive()) {
                return Ok(link.clone());
            }
            let dialed = self.dial(peer).await;
            if let Ok(link) = &dialed {
                *held = Some(link.clone());
            }
            dialed
        };
        drop(slot);
        if dialed.is_err() {
            self.release(peer);
        }
        dialed
    }

    /// Gives `peer`'s slot back unless a live link is in it or someone holds it (a dial under way).
    fn release(&self, peer: &Number) {
        let mut slots = self.slots();
        let Some(slot) = slots.get(peer) else { return };
        // Clones are only made under this lock: one holder (the map) means nobody else has it.
        if Arc::strong_count(slot) > 1 {
            return;
        }
        let free = slot.try_lock().is_ok_and(|held| !held.as_ref().is_some_and(|l| l.is_alive()));
        if free {
            slots.remove(peer);
            self.paths().remove(peer);
        }
    }

    fn paths(&self) -> std::sync::MutexGuard<'_, HashMap<Number, Path>> {
        self.0.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path of the live link to `peer`, if there is one.
    pub(crate) fn path(&self, peer: &Number) -> Option<Path> {
        self.try_live(peer).map(|l| l.path())
    }

    /// Tells the user when `link` changes its peer's path.
    fn report_path(&self, link: &LinkHandle) {
        let path = link.path();
        let before = self.paths().insert(link.peer().clone(), path);
        if before != Some(path) {
            info!("path to {}: {}", link.peer(), path.detail());
            let event = Event::Path { number: link.peer().clone(), path };
            if self.0.parts.events.try_send(event).is_err() {
                warn!("event queue full: the path change to {} is not shown", link.peer());
            }
        }
    }

    fn dialer(&self) -> dial::Dialer<'_> {
        let p = &self.0.parts;
        dial::Dialer {
            me: &p.me,
            identity: &p.identity,
            directory: &p.directory,
            reach: &p.reach,
            timeouts: &p.timeouts,
            versions: p.versions,
        }
    }

    /// The directory's key for `to` (checked against our pin) and where it is published, if online.
    async fn locate(&self, to: &Number) -> Result<(PublicKey, SocketAddr), ClientError> {
        let p = &self.0.parts;
        let answer = p.directory.lookup(to, LookupIntent::Address).await?;
        p.presence.saw_online(to, answer.online);
        let Some(key) = answer.key else { return Err(ClientError::UnknownNumber(to.clone())) };
        let Some(location) = answer.online else { return Err(ClientError::Offline(to.clone())) };
        p.store.check_pin(to, key).await?;
        Ok((key, location.addr))
    }

    async fn dial(&self, to: &Number) -> Result<LinkHandle, ClientError> {
        let (key, published) = self.locate(to).await?;
        let (linked, path, addr) = match self.dialer().race(to, key, Some(published), dial::Mode::Any).await {
            Ok(won) => won,
            Err(e) => {
                if let ClientError::Version { source, .. } = &e {
                    self.versions_differ(to, source.theirs, &e).await;
                }
                return Err(e);
            }
        };
        self.versions_told().remove(to);
        info!("linked to {to} at {addr} ({}), protocol version {}", path.detail(), linked.version);
        let link =
            self.spawn(to.clone(), key, addr, path, linked, None, None).ok_or(ClientError::ShuttingDown)?;
        self.report_path(&link);
        if !path.is_direct() {
            upgrade::spawn(self.clone(), link.clone());
        }
        Ok(link)
    }

    fn versions_told(&self) -> std::sync::MutexGuard<'_, HashMap<Number, Versions>> {
        self.0.versions_told.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `peer` speaks no version we do: the user is told once per range it speaks (a courier
    /// retries the dial with backoff; the warning is not repeated with it).
    async fn versions_differ(&self, peer: &Number, theirs: Versions, e: &ClientError) {
        if self.versions_told().insert(peer.clone(), theirs) != Some(theirs) {
            warn!("{e}");
            let _ = self.0.parts.events.send(Event::Warning { message: e.to_string() }).await;
        }
    }

    /// One bounded try at a direct link to `to` while `relayed` carries it: on success the direct
    /// link takes the relayed one's place (see the module's comment).
    pub(crate) async fn try_direct(&self, relayed: &LinkHandle) -> Result<(), ClientError> {
        let to = relayed.peer().clone();
        let (key, published) = self.locate(&to).await?;
        if key != *relayed.key() {
            return Err(ClientError::KeyChanged { number: to, pinned: *relayed.key(), presented: key });
        }
        let (linked, path, addr) =
            self.dialer().race(&to, key, Some(published), dial::Mode::DirectOnly).await?;
        info!("linked to {to} at {addr} ({}), leaving the relay", path.detail());
        self.install(to, key, addr, path, linked, None).await;
        Ok(())
    }

    /// Runs the responder's handshake on a stream a peer opened to us (over any transport), and
    /// makes it the peer's link unless a live one is in place (then both run until idle).
    ///
    /// `path` is the way the stream came; `expect`, when set, is the only number the peer may be
    /// (a relayed stream is for the peer the directory named in its offer).
    pub(crate) async fn adopt(
        &self,
        stream: PeerStream,
        addr: SocketAddr,
        path: Path,
        expect: Option<Number>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let p = &self.0.parts;
        let expect = expect.as_ref();
        let vouch = |claimed: Number, key: PublicKey| async move {
            if let Some(expected) = expect.filter(|e| **e != claimed) {
                return Err(ClientError::PeerIdentity {
                    number: claimed,
                    addr,
                    reason: format!("the relay was offered for {expected}"),
                });
            }
            self.vouch(&claimed, key, addr).await
        };
        let handshake = crate::handshake::accept_peer(stream, &p.identity, &p.me, addr, p.versions, vouch);
        // Anyone can make these happen at will: counted, and logged in a summary (`admission.rs`).
        let accepted = match tokio::time::timeout(p.timeouts.handshake, handshake).await {
            Err(_) => {
                self.0.admission.count(Turned::Slow);
                return debug!(
                    "dropping peer {addr}: handshake not finished within {:?}",
                    p.timeouts.handshake
                );
            }
            Ok(Err(e)) => {
                self.0.admission.count(Turned::Failed);
                debug!("refusing peer {addr}: {e}");
                if matches!(e, ClientError::KeyChanged { .. } | ClientError::PeerIdentity { .. }) {
                    let _ = p.events.send(Event::Warning { message: e.to_string() }).await;
                }
                return;
            }
            Ok(Ok(accepted)) => accepted,
        };
        let Accepted { number, key, linked } = accepted;
        info!("{number} linked from {addr} ({}), protocol version {}", path.detail(), linked.version);
        self.install(number, key, addr, path, linked, permit).await;
    }

    /// Starts a link and puts it in its peer's slot: when the slot is free, or when the new link is
    /// direct and the one there is relayed (which is then retired). Otherwise both run until idle.
    async fn install(
        &self,
        peer: Number,
        key: PublicKey,
        addr: SocketAddr,
        path: Path,
        linked: Linked<PeerStream>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let slot = self.slot(&peer);
        let mut held = slot.lock().await;
        let current = held.as_ref().filter(|l| l.is_alive()).cloned();
        let replaces = current.as_ref().filter(|old| path.is_direct() && !old.path().is_direct()).cloned();
        let Some(link) = self.spawn(peer, key, addr, path, linked, permit, replaces.clone()) else { return };
        if current.is_none() || replaces.is_some() {
            *held = Some(link.clone());
            drop(held);
            self.report_path(&link);
        }
        if let Some(old) = replaces {
            old.retire().await;
        }
    }

    /// Whether `key` owns `claimed`: the directory says so (and it matches our pin), or, while the
    /// directory is away, it is the key pinned for that contact.
    async fn vouch(&self, claimed: &Number, key: PublicKey, addr: SocketAddr) -> Result<(), ClientError> {
        let p = &self.0.parts;
        match p.directory.lookup(claimed, LookupIntent::Address).await {
            Ok(answer) if answer.key == Some(key) => p.store.check_pin(claimed, key).await,
            Ok(_) => Err(ClientError::PeerIdentity {
                number: claimed.clone(),
                addr,
                reason: format!("its key {key} is not the one the directory has for {claimed}"),
            }),
            Err(e @ (ClientError::NotConnected | ClientError::Timeout(_))) => {
                let pinned = p.store.contact(claimed).await?.and_then(|c| c.key);
                if pinned == Some(key) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Starts a link's reader and writer; `None` when the client is shutting down. The reader
    /// starts reading once `after`'s reader is done (bounded), so what `after` carried comes first.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        peer: Number,
        key: PublicKey,
        addr: SocketAddr,
        path: Path,
        linked: Linked<PeerStream>,
        permit: Option<OwnedSemaphorePermit>,
        after: Option<LinkHandle>,
    ) -> Option<LinkHandle> {
        let owner = self.owner()?;
        let p = &self.0.parts;
        let (reader, writer) = linked.session.split();
        let span = info_span!("link", peer = %peer, %addr);
        let (link, rx) = LinkHandle::new(peer, key, linked.version, path, writer, p.cancel.child_token());
        p.tracker.spawn(write::write_loop(link.clone(), rx).instrument(span.clone()));
        let reading = read::read_loop(
            self.clone(),
            owner,
            reader,
            link.clone(),
            read::ReadOptions { idle: p.timeouts.link_idle, permit, after },
        );
        p.tracker.spawn(reading.instrument(span));
        Some(link)
    }

    /// Spawns `work` on the client's tracker.
    pub(crate) fn run<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.parts.tracker.spawn(work);
    }

    pub(crate) fn parts(&self) -> &LinkParts {
        &self.0.parts
    }

    /// The peer `from` was offered a relayed link with us: connect to the relay and accept the link
    /// on it (the asker is the Noise initiator).
    pub(crate) fn take_relay(&self, from: Number, offer: crate::directory::RelayOffer) {
        let Ok(permit) = self.0.permits.clone().try_acquire_owned() else {
            return warn!("not joining {from} at the relay: {MAX_PEER_CONNECTIONS} connections open");
        };
        let links = self.clone();
        let span = info_span!("relay", peer = %from, relay = %offer.relay);
        self.run(
            async move {
                let timeouts = &links.0.parts.timeouts;
                match crate::transport::relay::connect(
                    offer.relay,
                    &offer.ticket,
                    timeouts,
                    crate::transport::relay::RELAY_PAIRING,
                )
                .await
                {
                    Ok(stream) => {
                        let path = Path::Relayed { reason: offer.reason };
                        links.adopt(stream, offer.relay, path, Some(from), Some(permit)).await;
                    }
                    Err(e) => warn!("joining {from} at the relay failed: {e}"),
                }
            }
            .instrument(span),
        );
    }

    /// Accepts QUIC connections on our UDP socket until shutdown, through the same path as TCP.
    pub(crate) fn accept_quic(&self) {
        let p = &self.0.parts;
        p.tracker.spawn(self.clone().accept_quic_loop(p.cancel.clone()));
    }

    async fn accept_quic_loop(self, cancel: CancellationToken) {
        let quic = self.0.parts.reach.quic().clone();
        loop {
            let incoming = tokio::select! {
                _ = cancel.cancelled() => return,
                i = quic.incoming() => match i { Some(i) => i, None => return },
            };
            let addr = incoming.remote_address();
            let Ok(permit) = self.0.permits.clone().try_acquire_owned() else {
                warn!("refusing QUIC peer {addr}: {MAX_PEER_CONNECTIONS} connections open");
                incoming.refuse();
                continue;
            };
            let links = self.clone();
            let within = self.0.parts.timeouts.handshake;
            let on_lan = self.0.parts.reach.on_lan(addr.ip());
            let adopting = async move {
                match crate::transport::quic::open(incoming, within).await {
                    Ok(stream) => {
                        let path = Path::direct(whatsap2p_proto::nat::Transport::Udp, on_lan);
                        links.adopt(stream, addr, path, None, Some(permit)).await;
                    }
                    Err(e) => debug!("QUIC peer {addr} did not open a link: {e}"),
                }
            };
            self.0.parts.tracker.spawn(adopting.instrument(info_span!("peer", %addr)));
        }
    }

    /// Accepts peers on `listener` until shutdown.
    pub(crate) fn accept(&self, listener: PeerListener) {
        let p = &self.0.parts;
        p.tracker.spawn(self.clone().accept_loop(listener, p.cancel.clone()));
    }

    async fn accept_loop(self, listener: PeerListener, cancel: CancellationToken) {
        let mut report = tokio::time::interval(admission::REPORT_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = report.tick() => {
                    if let Some(summary) = self.0.admission.report() {
                        warn!("{summary}");
                    }
                    continue;
                }
                a = listener.accept() => a,
            };
            let (stream, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!("accepting a peer failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Dropping the stream closes it at once: a refused connection holds nothing.
            let Ok(place) = self.0.admission.admit(addr.ip()) else { continue };
            let Ok(permit) = self.0.permits.clone().try_acquire_owned() else {
                self.0.admission.count(Turned::Total);
                continue;
            };
            let links = self.clone();
            let path =
                Path::direct(whatsap2p_proto::nat::Transport::Tcp, self.0.parts.reach.on_lan(addr.ip()));
            // The handshake's place is held until it ends (`adopt` returns once linked).
            let adopting = async move {
                links.adopt(stream, addr, path, None, Some(permit)).await;
                drop(place);
            };
            self.0.parts.tracker.spawn(adopting.instrument(info_span!("peer", %addr)));
        }
    }

    /// Stops every link and forgets the owner (ending the cycle between links and subsystems).
    pub(crate) fn close_all(&self) {
        let slots: Vec<Slot> = self.slots().values().cloned().collect();
        for slot in slots {
            if let Ok(held) = slot.try_lock() {
                if let Some(link) = held.as_ref() {
                    link.close();
                }
            }
        }
        self.0.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Peers with a slot: a live link, or a dial under way.
    pub(crate) fn count(&self) -> usize {
        self.slots().len()
    }
}
