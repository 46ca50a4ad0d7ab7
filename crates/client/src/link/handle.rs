//! [`LinkHandle`]: a live link to one peer, as the rest of the client holds it to write.
//!
//! Writes take the shortest way that keeps order: a caller writes the frame itself when nothing is
//! queued and nobody is writing (handing it to the writer task costs a thread wake-up, tens of µs,
//! on every message and every acknowledgement); otherwise the frame goes through the bounded queue
//! of the writer task (`write.rs`), which batches what waits into one flush.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use whatsap2p_link::{LinkError, SessionWriter};
use whatsap2p_proto::codec::EncodeError;
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{Number, PublicKey};

use super::Path;
use crate::transport::PeerStream;

/// Chat and control frames waiting to be written on one link.
pub(super) const LINK_QUEUE: usize = 64;

pub(super) type Writer = SessionWriter<PeerStream>;

/// Why a write did not reach the wire.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The link was closed (by either side, a failed write, idleness or shutdown).
    #[error("link closed")]
    Closed,
    /// Writing failed, which closed the link.
    #[error("{0}")]
    Failed(Arc<LinkError>),
    /// The message does not fit in a frame.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The transfer the bytes belong to ended before they could be written.
    #[error("the transfer ended")]
    Unwanted,
    /// The link's queue is full: the peer reads slower than we write.
    #[error("the link is backed up")]
    Backlog,
}

impl From<LinkError> for WriteError {
    fn from(e: LinkError) -> Self {
        Self::Failed(Arc::new(e))
    }
}

/// Something for the writer task to write; `written` learns whether it was. Without a message, it
/// asks the writer task to finish writing what is already buffered.
pub(super) struct Outgoing {
    pub(super) msg: Option<PeerMessage>,
    pub(super) written: Option<oneshot::Sender<Result<(), WriteError>>>,
    /// The link is retired: once this batch is written, close the write side and stop.
    pub(super) finish: bool,
}

impl Outgoing {
    fn msg(msg: Option<PeerMessage>, written: Option<oneshot::Sender<Result<(), WriteError>>>) -> Self {
        Self { msg, written, finish: false }
    }
}

static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

/// One link's shared state.
struct Link {
    peer: Number,
    key: PublicKey,
    /// The protocol version agreed in the handshake.
    version: u16,
    /// Unique per link, so the outbox and transfers tell this link from the next one to the peer.
    epoch: u64,
    /// Which way it goes.
    path: Path,
    /// Set when a better link took this one's place: nothing new is written on it.
    retired: CancellationToken,
    /// Cancelled when the reader has read everything (or given up), so a link that replaces this one
    /// reads only after it.
    reader_done: CancellationToken,
    tx: mpsc::Sender<Outgoing>,
    /// The session's writing half: the writer task takes it for each batch, a direct write when
    /// nothing waits, a file's reader thread for each chunk. `None` once the link is closed, so the
    /// socket is released even while handles to the link are still held.
    writer: tokio::sync::Mutex<Option<Writer>>,
    closed: CancellationToken,
    /// Frames handed to the writer task and not yet written: a direct write goes only when none
    /// are, so nothing overtakes a frame the writer task has taken but not written yet.
    queued: AtomicUsize,
}

/// A live link to one peer. Clones share the link.
#[derive(Clone)]
pub(crate) struct LinkHandle(Arc<Link>);

impl LinkHandle {
    /// A link over `writer`, closed with `closed`; the receiver feeds its writer task.
    pub(super) fn new(
        peer: Number,
        key: PublicKey,
        version: u16,
        path: Path,
        writer: Writer,
        closed: CancellationToken,
    ) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let link = Link {
            peer,
            key,
            version,
            epoch: NEXT_EPOCH.fetch_add(1, Ordering::Relaxed),
            path,
            retired: CancellationToken::new(),
            reader_done: CancellationToken::new(),
            tx,
            writer: tokio::sync::Mutex::new(Some(writer)),
            closed,
            queued: AtomicUsize::new(0),
        };
        (Self(Arc::new(link)), rx)
    }

    /// Who is at the other end (proved in the handshake).
    pub(crate) fn peer(&self) -> &Number {
        &self.0.peer
    }

    /// The identity key the peer proved.
    pub(crate) fn key(&self) -> &PublicKey {
        &self.0.key
    }

    /// The protocol version the link agreed in its handshake: what a later version adds to peer
    /// messages goes only on links whose version has it.
    #[allow(dead_code)] // Read by the features later versions add.
    pub(crate) fn version(&self) -> u16 {
        self.0.version
    }

    /// Unique per link.
    pub(crate) fn epoch(&self) -> u64 {
        self.0.epoch
    }

    /// Which way the link goes.
    pub(crate) fn path(&self) -> Path {
        self.0.path
    }

    /// Whether the link takes new writes: neither closed nor retired.
    pub(crate) fn is_alive(&self) -> bool {
        !self.0.closed.is_cancelled() && !self.0.retired.is_cancelled()
    }

    /// A better link took this one's place: refuse new writes, write what is queued, then close
    /// the write side (the end of the stream tells the peer nothing more comes this way). The
    /// reader goes on until the peer's side ends too (bounded by `read.rs`).
    pub(super) async fn retire(&self) {
        if self.0.retired.is_cancelled() {
            return;
        }
        self.0.retired.cancel();
        let _ = self.enqueue(Outgoing { msg: None, written: None, finish: true }).await;
    }

    /// Resolves once the link is retired.
    pub(super) fn retired(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.0.retired.cancelled()
    }

    /// The reader is done.
    pub(super) fn reader_finished(&self) {
        self.0.reader_done.cancel();
    }

    /// Resolves once the reader is done.
    pub(super) fn reader_done(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.0.reader_done.cancelled()
    }

    /// Ends the link: its reader and writer stop and release the stream.
    pub(crate) fn close(&self) {
        self.0.closed.cancel();
    }

    /// Resolves once the link is closed.
    pub(super) fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.0.closed.cancelled()
    }

    /// The writing half, for the writer task.
    pub(super) fn writer(&self) -> &tokio::sync::Mutex<Option<Writer>> {
        &self.0.writer
    }

    /// `n` frames the writer task took are written (or failed).
    pub(super) fn dequeued(&self, n: usize) {
        self.0.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Writes an encoded file chunk from the blocking thread that read it: no hand-off to the writer
    /// task. The writer is taken for one chunk at a time and a chat frame waiting for it is served
    /// in turn, so a message waits for at most one chunk of each transfer running on the link.
    ///
    /// `wanted` is asked again once the writer is taken: an attempt that ended meanwhile writes
    /// nothing more.
    pub(crate) fn write_blocking(
        &self,
        runtime: &tokio::runtime::Handle,
        frame: &[u8],
        wanted: impl Fn() -> bool,
    ) -> Result<(), WriteError> {
        runtime.block_on(async {
            if !self.is_alive() {
                return Err(WriteError::Closed);
            }
            let mut writer = self.0.writer.lock().await;
            if !wanted() {
                return Err(WriteError::Unwanted);
            }
            self.write_encoded(&mut writer, frame).await
        })
    }

    /// Writes one encoded message with the writer already taken; a failed write ends the link.
    async fn write_encoded(&self, writer: &mut Option<Writer>, frame: &[u8]) -> Result<(), WriteError> {
        let Some(writer) = writer.as_mut() else { return Err(WriteError::Closed) };
        let written = writer.send(frame).await;
        if written.is_err() {
            self.close();
        }
        Ok(written?)
    }

    /// Hands `out` to the writer task.
    async fn enqueue(&self, out: Outgoing) -> Result<(), WriteError> {
        self.0.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self.0.tx.send(out).await.map_err(|_| WriteError::Closed);
        if sent.is_err() {
            self.0.queued.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Writes a reply from the link's reader: at once when nothing waits and the socket takes it
    /// without waiting (no hand-off to the writer task, which costs a thread wake-up), otherwise
    /// through the writer task. Never waits for the peer to read, so the reader cannot stall
    /// while the peer, in turn, waits for it to read.
    pub(super) async fn reply(&self, msg: PeerMessage) {
        if self.0.queued.load(Ordering::Acquire) == 0 {
            if let Ok(mut writer) = self.0.writer.try_lock() {
                let Some(w) = writer.as_mut() else { return };
                let written = whatsap2p_proto::encode(&msg)
                    .map_err(WriteError::from)
                    .and_then(|frame| w.send_or_buffer(&frame).map_err(WriteError::from));
                drop(writer);
                match written {
                    Ok(true) => {}
                    // The rest is buffered: the writer task finishes it, before anything queued later.
                    Ok(false) => {
                        let _ = self.enqueue(Outgoing::msg(None, None)).await;
                    }
                    Err(e) => {
                        debug!("reply not written: {e}");
                        self.close();
                    }
                }
                return;
            }
        }
        let _ = self.enqueue(Outgoing::msg(Some(msg), None)).await;
    }

    /// Writes `msg` without waiting for the peer: what the socket does not take at once is left to
    /// the writer task. Fails with [`WriteError::Backlog`] when that task's queue is full, so one
    /// slow peer never holds up the caller (a group's fan-out, say).
    pub(crate) fn write_nowait(&self, msg: PeerMessage) -> Result<(), WriteError> {
        if !self.is_alive() {
            return Err(WriteError::Closed);
        }
        let queue = |out: Outgoing| {
            self.0.queued.fetch_add(1, Ordering::AcqRel);
            self.0.tx.try_send(out).map_err(|e| {
                self.0.queued.fetch_sub(1, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => WriteError::Backlog,
                    mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
                }
            })
        };
        if self.0.queued.load(Ordering::Acquire) == 0 {
            if let Ok(mut writer) = self.0.writer.try_lock() {
                let Some(w) = writer.as_mut() else { return Err(WriteError::Closed) };
                let frame = whatsap2p_proto::encode(&msg)?;
                let whole = w.send_or_buffer(&frame).inspect_err(|_| self.close())?;
                drop(writer);
                // The rest is buffered: the writer task finishes it, before anything queued later.
                return if whole { Ok(()) } else { queue(Outgoing::msg(None, None)) };
            }
        }
        queue(Outgoing::msg(Some(msg), None))
    }

    /// Writes `msg`; returns once it is on the wire.
    pub(crate) async fn write(&self, msg: PeerMessage) -> Result<(), WriteError> {
        if !self.is_alive() {
            return Err(WriteError::Closed);
        }
        if self.0.queued.load(Ordering::Acquire) == 0 {
            if let Ok(mut writer) = self.0.writer.try_lock() {
                let frame = whatsap2p_proto::encode(&msg)?;
                return self.write_encoded(&mut writer, &frame).await;
            }
        }
        let (written, rx) = oneshot::channel();
        self.enqueue(Outgoing::msg(Some(msg), Some(written))).await?;
        rx.await.unwrap_or(Err(WriteError::Closed))
    }
}
