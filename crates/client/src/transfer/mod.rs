//! Files (photos first) sent directly over the encrypted peer link: offer → accept → chunks → verify.
//!
//! The sender offers name, size, media type and the BLAKE3 hash of the whole file. The receiver
//! accepts automatically from a contact up to a size limit, answering with the offset it already holds
//! from an earlier attempt, so a transfer resumes instead of restarting (after a dropped link, or
//! either side restarting: the partial file is named after the sender and the hash). Chunks stream in
//! order under a credit window ([`FILE_WINDOW`]) that the receiver opens as it writes, so memory stays
//! bounded whatever the file size; the sender's reader thread writes them on the link one at a time,
//! so a chat message waits for at most one chunk of each running transfer. The receiver writes into a
//! partial file, checks the hash, and only then moves the file, under a name of its own choosing that
//! never overwrites anything, into the downloads folder. Either side stops a transfer with a
//! [`FileFailCode`]: the sender gives up on a final one and retries after any other.
//!
//! A user cancels a transfer on either side ([`Transfers::cancel`]): the attempt under way stops,
//! the other side gets a `FileAbort` with the final code `Cancelled`, and neither keeps anything
//! of it but a line in history.
//!
//! A pending outgoing file is kept in the profile database and retried, like a message, until it is
//! received or refused.
//!
//! # Layout
//! - here: `Transfers`, the handle, and the routes that take each transfer's messages from its link.
//! - `send.rs`: the sending side; `receive.rs`: the receiving side (and `crate::partial`, the file it
//!   writes into); `hash.rs`: what the sender learns of a file before offering it; `media.rs`: what a file is, from
//!   its bytes, and the extension it is saved with.

mod hash;
mod media;
mod partials;
mod receive;
mod send;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use whatsap2p_proto::chunk::ChunkView;
use whatsap2p_proto::peer::{FileFailCode, PeerMessage, FILE_CHUNK_LEN, FILE_WINDOW};
use whatsap2p_proto::{MessageId, Number};

pub(crate) use hash::describe;
use partials::PartialFolder;
pub use partials::SWEEP_EVERY;
pub(crate) use receive::Offer;

use crate::config::StorageLimits;
use crate::event::Event;
use crate::link::{LinkHandle, Links};
use crate::partial::{ChunkBytes, Spares};
use crate::presence::PresenceCache;
use crate::store::Store;
use crate::ClientError;

/// How long either side waits for the other's next step before calling the transfer stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages buffered for one transfer: a full window of chunks and a few control frames.
const ROUTE_QUEUE: usize = (FILE_WINDOW as usize / FILE_CHUNK_LEN) + 8;
/// Most transfers running at once on one link (both directions).
const MAX_TRANSFERS_PER_LINK: usize = 8;
/// Progress events, at most this often per transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What arrives for a transfer on its link.
pub(crate) enum Routed {
    /// File bytes, in the buffer they were decrypted into.
    Chunk { offset: u64, bytes: ChunkBytes },
    /// Any other transfer message.
    Message(PeerMessage),
}

/// Where a running transfer's messages go on its link.
struct Route {
    tx: mpsc::Sender<Routed>,
    /// Buffers the transfer's writer is done with, for the link to decrypt the next chunk into.
    spares: Spares,
}

/// The receiving end of a transfer's route: its messages, and where its spent buffers go back.
struct Inbound {
    rx: mpsc::Receiver<Routed>,
    spares: Spares,
}

/// What transfers need from the rest of the client.
pub(crate) struct TransferParts {
    pub(crate) me: Number,
    pub(crate) links: Links,
    pub(crate) store: Store,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) presence: PresenceCache,
    pub(crate) downloads: PathBuf,
    pub(crate) max_file_size: u64,
    pub(crate) storage: StorageLimits,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// A transfer under way, as [`Transfers::cancel`] reaches it.
#[derive(Clone)]
struct Running {
    /// Cancelled to stop the transfer for good.
    stop: CancellationToken,
    /// How it ended, once it has: `Some(true)` when the cancel ended it.
    ended: watch::Receiver<Option<bool>>,
}

/// The transfer's own side of its [`Running`]: it says how it ended. Dropped without a word (the
/// client shutting down), it tells a waiting cancel that the transfer is gone.
struct Ending(watch::Sender<Option<bool>>);

impl Ending {
    fn new() -> (Self, Running) {
        let (tx, ended) = watch::channel(None);
        (Self(tx), Running { stop: CancellationToken::new(), ended })
    }

    fn ended(&self, cancelled: bool) {
        self.0.send_replace(Some(cancelled));
    }
}

/// An outgoing file not yet delivered.
struct Sending {
    /// Whom to.
    peer: Number,
    /// Ends its wait between attempts.
    wake: Arc<Notify>,
    running: Running,
}

struct Inner {
    parts: TransferParts,
    /// The partial files' folder and its limits.
    partials: PartialFolder,
    /// Running transfers' routes, by link (its epoch) and transfer: a link's entry goes with it.
    routes: Mutex<HashMap<u64, HashMap<MessageId, Route>>>,
    /// Partial files a receiving attempt is writing, on whatever link: an attempt on a new link
    /// (the old one dropped) must not open a file the old attempt's writer is still finishing.
    receiving: Mutex<HashSet<PathBuf>>,
    /// Outgoing files not yet delivered.
    sending: Mutex<HashMap<MessageId, Sending>>,
    /// Incoming transfers being received, by id (one attempt at a time per id).
    incoming: Mutex<HashMap<MessageId, Running>>,
}

/// File transfers in both directions. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Transfers(Arc<Inner>);

/// A transfer refused because the link runs too much already (or this one is still closing).
struct Busy(String);

impl Transfers {
    /// The transfers' handle; starts the sweep of expired partial files (now, then every
    /// [`SWEEP_EVERY`]).
    pub(crate) fn new(parts: TransferParts) -> Self {
        let partials = PartialFolder::new(&parts.downloads, parts.storage.clone());
        let transfers = Self(Arc::new(Inner {
            parts,
            partials,
            routes: Mutex::default(),
            receiving: Mutex::default(),
            sending: Mutex::default(),
            incoming: Mutex::default(),
        }));
        let p = &transfers.0.parts;
        p.tracker.spawn(transfers.clone().sweep_partials(p.cancel.clone()));
        transfers
    }

    /// Removes expired partial files, and the oldest beyond the limit, until shutdown.
    async fn sweep_partials(self, cancel: CancellationToken) {
        loop {
            let (partials, claimed) = (self.0.partials.clone(), self.claimed());
            let swept =
                tokio::task::spawn_blocking(move || partials.sweep(std::time::SystemTime::now(), &claimed));
            match swept.await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!("removed {n} expired or excess partial files"),
                Ok(Err(e)) => warn!("cannot sweep the partial files: {e}"),
                Err(_) => return,
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }

    /// The partial files receiving attempts are writing now.
    fn claimed(&self) -> HashSet<PathBuf> {
        self.0.receiving.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Cancels transfer `id`, in either direction, and waits until it has stopped (the other side
    /// told, the event sent). [`ClientError::NoTransfer`] if it is not under way, or ended
    /// otherwise before the cancel reached it.
    pub(crate) async fn cancel(&self, id: MessageId) -> Result<(), ClientError> {
        let outgoing =
            self.0.sending.lock().unwrap_or_else(|p| p.into_inner()).get(&id).map(|s| s.running.clone());
        let running =
            outgoing.or_else(|| self.0.incoming.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned());
        let Some(Running { stop, mut ended }) = running else { return Err(ClientError::NoTransfer(id)) };
        stop.cancel();
        match ended.wait_for(Option::is_some).await.map(|v| *v) {
            Ok(Some(true)) => Ok(()),
            Ok(_) => Err(ClientError::NoTransfer(id)),
            Err(_) => Err(ClientError::ShuttingDown),
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HashMap<MessageId, Route>>> {
        self.0.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Outgoing files not yet delivered and incoming ones being written.
    pub(crate) fn count(&self) -> usize {
        let sending = self.0.sending.lock().unwrap_or_else(|p| p.into_inner()).len();
        // (An incoming transfer also holds its partial file in `receiving`, counted there.)
        sending + self.0.receiving.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Wakes the files waiting to go to `peer` (it came online, or a link to it ended).
    pub(crate) fn wake(&self, peer: &Number) {
        for s in self.0.sending.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if s.peer == *peer {
                s.wake.notify_waiters();
            }
        }
    }

    /// Whether transfer `id` runs on `link`.
    pub(crate) fn runs(&self, link: &LinkHandle, id: MessageId) -> bool {
        self.routes().get(&link.epoch()).is_some_and(|r| r.contains_key(&id))
    }

    /// `peer` accepted our message request: the files it held are offered again.
    pub(crate) async fn release(&self, peer: &Number) {
        match self.0.parts.store.release_held_files(peer).await {
            Ok(files) => {
                for file in files {
                    self.send(file);
                }
            }
            Err(e) => tracing::warn!("cannot read the files held by {peer}: {e}"),
        }
    }

    /// Whether `link` carries a running transfer.
    pub(crate) fn carries_bulk(&self, link: &LinkHandle) -> bool {
        self.routes().contains_key(&link.epoch())
    }

    /// `link` ended: the transfers on it learn at once (their routes close), instead of after a
    /// stall timeout.
    pub(crate) fn link_closed(&self, link: &LinkHandle) {
        let gone = self.routes().remove(&link.epoch());
        drop(gone);
    }

    fn add_route(&self, link: &LinkHandle, id: MessageId, route: Route) {
        self.routes().entry(link.epoch()).or_default().insert(id, route);
    }

    /// Adds a receiving transfer's route unless it is still closing on this link or the link runs
    /// as many as it may.
    fn try_add_route(&self, link: &LinkHandle, id: MessageId, route: Route) -> Result<(), Busy> {
        let mut routes = self.routes();
        let on_link = routes.entry(link.epoch()).or_default();
        if on_link.contains_key(&id) {
            // The sender gave up on an attempt this side is still closing: it may try again.
            return Err(Busy("transfer already running; try again later".into()));
        }
        // Each transfer holds a file, a buffer and a window of chunks: a peer gets a few at a time.
        if on_link.len() >= MAX_TRANSFERS_PER_LINK {
            return Err(Busy(format!("{MAX_TRANSFERS_PER_LINK} transfers already running; try again later")));
        }
        on_link.insert(id, route);
        Ok(())
    }

    fn remove_route(&self, epoch: u64, id: MessageId) {
        let mut routes = self.routes();
        if let Some(on_link) = routes.get_mut(&epoch) {
            on_link.remove(&id);
            if on_link.is_empty() {
                routes.remove(&epoch);
            }
        }
    }

    /// Stops the receiving side of transfer `id` on a link while keeping its place: its route is
    /// swapped for a closed one, which ends the disk writer (it waits on the route) but keeps a new
    /// offer of the same transfer out until this attempt has finished with the partial file; the
    /// receiving task removes the entry when it ends.
    fn close_route(&self, epoch: u64, id: MessageId) {
        let (closed, _) = mpsc::channel(1);
        if let Some(route) = self.routes().get_mut(&epoch).and_then(|r| r.get_mut(&id)) {
            route.tx = closed;
        }
    }

    /// Routes a transfer message arriving on `link` to its transfer; returns what to write back,
    /// if anything.
    pub(crate) fn on_message(&self, link: &LinkHandle, msg: PeerMessage) -> Option<PeerMessage> {
        let id = match &msg {
            PeerMessage::FileAccept { id, .. }
            | PeerMessage::FileRefuse { id, .. }
            | PeerMessage::FileProgress { id, .. }
            | PeerMessage::FileReceived { id }
            | PeerMessage::FileFailed { id, .. }
            | PeerMessage::FileAbort { id, .. }
            | PeerMessage::Pending { id } => *id,
            _ => return None,
        };
        let tx = self.routes().get(&link.epoch()).and_then(|r| r.get(&id)).map(|r| r.tx.clone());
        let Some(tx) = tx else {
            debug!("{} sent a message for transfer {id}, which is not running here", link.peer());
            return None;
        };
        self.deliver(link, id, &tx, Routed::Message(msg))
    }

    /// Routes file bytes that arrived on `link`, decrypted into `frame`, to their transfer: the
    /// buffer goes along, and `frame` is replaced by one the transfer's writer is done with.
    /// Returns what to write back, if anything.
    pub(crate) fn on_chunk(
        &self,
        link: &LinkHandle,
        chunk: ChunkView,
        frame: &mut Vec<u8>,
    ) -> Option<PeerMessage> {
        let route = self
            .routes()
            .get(&link.epoch())
            .and_then(|r| r.get(&chunk.id))
            .map(|r| (r.tx.clone(), r.spares.clone()));
        let Some((tx, spares)) = route else {
            debug!("{} sent a chunk of transfer {}, which is not running here", link.peer(), chunk.id);
            return None;
        };
        // A small chunk travels in a buffer of its own size: otherwise a sender could make each byte
        // pin a frame-sized buffer until its write unit fills.
        let bytes = if chunk.data.len() < frame.len() / 2 {
            let len = chunk.data.len();
            ChunkBytes::new(frame.get(chunk.data)?.to_vec(), 0..len)?
        } else {
            // `view_chunk` found the range inside this very frame, so `new` cannot refuse it.
            ChunkBytes::new(std::mem::replace(frame, spares.take()), chunk.data)?
        };
        self.deliver(link, chunk.id, &tx, Routed::Chunk { offset: chunk.offset, bytes })
    }

    fn deliver(
        &self,
        link: &LinkHandle,
        id: MessageId,
        tx: &mpsc::Sender<Routed>,
        routed: Routed,
    ) -> Option<PeerMessage> {
        match tx.try_send(routed) {
            Ok(()) => None,
            // A full queue means the sender ignored the window: stop the transfer rather than buffer.
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close_route(link.epoch(), id);
                let reason = "sender ignored flow control".into();
                Some(PeerMessage::FileAbort { id, code: FileFailCode::Protocol, reason })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }
}
