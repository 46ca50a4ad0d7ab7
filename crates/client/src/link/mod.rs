//! Direct links between clients: establishing them, keeping one per peer, and handing what arrives
//! on them to its owner.
//!
//! Dialing: look the number up, check the key the directory gives against the contact's pinned key,
//! connect, and require the responder to prove that key in the handshake. Accepting: require the
//! initiator's proof, then ask the directory whether that key owns the number it claims, and check
//! the pin. Either way the link runs over a [`PeerStream`] (see `transport.rs`): any reliable byte
//! stream will do, so a link over another transport is established with `Links::adopt`.
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

mod handle;
mod read;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};
use whatsap2p_proto::chunk::ChunkView;
use whatsap2p_proto::directory::LookupIntent;
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::version::Versions;
use whatsap2p_proto::{Number, PublicKey};

pub(crate) use handle::LinkHandle;
pub use handle::WriteError;

use crate::config::Timeouts;
use crate::directory::DirectoryHandle;
use crate::event::Event;
use crate::handshake::{Accepted, Linked};
use crate::presence::PresenceCache;
use crate::profile::Identity;
use crate::store::Store;
use crate::transport::{self, PeerListener, PeerStream};
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
    /// Places for accepted connections.
    permits: Arc<Semaphore>,
    /// Peers we dialed that speak no version we do, with the versions they speak, once the user
    /// was told; a peer leaves it when a link to it is made. Only numbers we write to are dialed.
    versions_told: Mutex<HashMap<Number, Versions>>,
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
            versions_told: Mutex::default(),
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
        }
    }

    async fn dial(&self, to: &Number) -> Result<LinkHandle, ClientError> {
        let p = &self.0.parts;
        let answer = p.directory.lookup(to, LookupIntent::Address).await?;
        p.presence.saw_online(to, answer.online);
        let Some(key) = answer.key else { return Err(ClientError::UnknownNumber(to.clone())) };
        let Some(location) = answer.online else { return Err(ClientError::Offline(to.clone())) };
        p.store.check_pin(to, key).await?;
        let addr = location.addr;
        let dial = || transport::dial(addr, p.timeouts.connect, "connecting to the peer");
        let stream = dial().await?;
        let handshake =
            crate::handshake::dial_peer(stream, dial, &p.identity, &p.me, to, key, addr, p.versions);
        let linked = match tokio::time::timeout(p.timeouts.handshake, handshake).await {
            Err(_) => return Err(ClientError::Timeout("peer handshake")),
            Ok(Err(e)) => {
                if let ClientError::Version { source, .. } = &e {
                    self.versions_differ(to, source.theirs, &e).await;
                }
                return Err(e);
            }
            Ok(Ok(linked)) => linked,
        };
        self.versions_told().remove(to);
        info!("linked to {to} at {addr}, protocol version {}", linked.version);
        self.spawn(to.clone(), key, addr, linked, None).ok_or(ClientError::ShuttingDown)
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

    /// Runs the responder's handshake on a stream a peer opened to us (over any transport), and
    /// makes it the peer's link unless a live one is in place (then both run until idle).
    pub(crate) async fn adopt(
        &self,
        stream: PeerStream,
        addr: SocketAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let p = &self.0.parts;
        let vouch = |claimed: Number, key: PublicKey| async move { self.vouch(&claimed, key, addr).await };
        let handshake = crate::handshake::accept_peer(stream, &p.identity, &p.me, addr, p.versions, vouch);
        let accepted = match tokio::time::timeout(p.timeouts.handshake, handshake).await {
            Err(_) => {
                return warn!(
                    "dropping peer {addr}: handshake not finished within {:?}",
                    p.timeouts.handshake
                )
            }
            Ok(Err(e)) => {
                warn!("refusing peer {addr}: {e}");
                if matches!(e, ClientError::KeyChanged { .. } | ClientError::PeerIdentity { .. }) {
                    let _ = p.events.send(Event::Warning { message: e.to_string() }).await;
                }
                return;
            }
            Ok(Ok(accepted)) => accepted,
        };
        let Accepted { number, key, linked } = accepted;
        info!("{number} linked from {addr}, protocol version {}", linked.version);
        let Some(link) = self.spawn(number.clone(), key, addr, linked, permit) else { return };
        let slot = self.slot(&number);
        let mut held = slot.lock().await;
        if !held.as_ref().is_some_and(|l| l.is_alive()) {
            *held = Some(link);
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

    /// Starts a link's reader and writer; `None` when the client is shutting down.
    fn spawn(
        &self,
        peer: Number,
        key: PublicKey,
        addr: SocketAddr,
        linked: Linked<PeerStream>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<LinkHandle> {
        let owner = self.owner()?;
        let p = &self.0.parts;
        let (reader, writer) = linked.session.split();
        let span = info_span!("link", peer = %peer, %addr);
        let (link, rx) = LinkHandle::new(peer, key, linked.version, writer, p.cancel.child_token());
        p.tracker.spawn(write::write_loop(link.clone(), rx).instrument(span.clone()));
        let reading =
            read::read_loop(self.clone(), owner, reader, link.clone(), p.timeouts.link_idle, permit);
        p.tracker.spawn(reading.instrument(span));
        Some(link)
    }

    /// Accepts peers on `listener` until shutdown.
    pub(crate) fn accept(&self, listener: PeerListener) {
        let p = &self.0.parts;
        p.tracker.spawn(self.clone().accept_loop(listener, p.cancel.clone()));
    }

    async fn accept_loop(self, listener: PeerListener, cancel: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
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
            let Ok(permit) = self.0.permits.clone().try_acquire_owned() else {
                warn!("refusing peer {addr}: {MAX_PEER_CONNECTIONS} connections open");
                continue;
            };
            let links = self.clone();
            let adopting = async move { links.adopt(stream, addr, Some(permit)).await };
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
