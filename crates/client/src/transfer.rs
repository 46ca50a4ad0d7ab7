//! Files (photos first) sent directly over the encrypted peer link: offer → accept → chunks → verify.
//!
//! The sender offers name, size, media type and the BLAKE3 hash of the whole file. The receiver
//! accepts automatically from a contact up to a size limit, answering with the offset it already holds
//! from an earlier attempt, so a transfer resumes instead of restarting (after a dropped link, or
//! either side restarting: the partial file is named after the sender and the hash). Chunks stream in
//! order under a credit window ([`FILE_WINDOW`]) that the receiver opens as it writes, so memory stays
//! bounded whatever the file size; the sender's reader thread writes them on the link one at a time,
//! so a chat message waits for at most one chunk of each running transfer. The receiver writes into a partial file, checks the hash, and only then moves the file, under a name of
//! its own choosing that never overwrites anything, into the downloads folder.
//!
//! A pending outgoing file is kept in the profile database and retried, like a message, until it is
//! received or refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::{Read, Seek};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};
use whatsap2p_proto::chunk::{write_chunk_header, ChunkView, MAX_CHUNK_HEADER_LEN};
use whatsap2p_proto::peer::{FileFailCode, PeerMessage, FILE_CHUNK_LEN, FILE_WINDOW, MAX_FILE_NAME_LEN};
use whatsap2p_proto::{MessageId, Number};

use crate::client::{Core, Event};
use crate::partial::{ChunkBytes, PartialFile, Spares};
use crate::peer::{self, LinkHandle};
use crate::safe_name::{numbered, safe_name};
use crate::store::FileRecord;
use crate::ClientError;

/// How long either side waits for the other's next step before calling the transfer stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the receiver opens the window (bytes written between credits).
const CREDIT_EVERY: u64 = 1024 * 1024;
/// Progress events, at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Messages buffered for one transfer: a full window of chunks and a few control frames.
const ROUTE_QUEUE: usize = (FILE_WINDOW as usize / FILE_CHUNK_LEN) + 8;
/// Most transfers running at once on one link (both directions).
const MAX_TRANSFERS_PER_LINK: usize = 8;
/// While bytes flow, the receiver's writer reports its progress at least this often (stall detection).
const NOTIFY_EVERY: Duration = Duration::from_secs(1);
/// The receiver repeats its progress at least this often while a transfer is alive.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Folder inside the downloads folder where partial files wait to be resumed.
const PARTIAL_DIR: &str = ".whatsap2p-partial";
/// First and longest pause between attempts to send a pending file.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What arrives for a transfer on its link.
pub(crate) enum Routed {
    /// File bytes, in the buffer they were decrypted into.
    Chunk { offset: u64, bytes: ChunkBytes },
    /// Any other transfer message.
    Message(PeerMessage),
}

/// Where a running transfer's messages go on its link.
pub(crate) struct Route {
    tx: mpsc::Sender<Routed>,
    /// Buffers the transfer's writer is done with, for the link to decrypt the next chunk into.
    spares: Spares,
}

/// The receiving end of a transfer's route: its messages, and where its spent buffers go back.
struct Inbound {
    rx: mpsc::Receiver<Routed>,
    spares: Spares,
}

/// A receiving attempt's partial file, held by that attempt until it has finished with it (and,
/// if the file was bad, removed it).
struct PartialClaim {
    core: Arc<Core>,
    path: PathBuf,
}

impl PartialClaim {
    /// The hold on `path`, unless another attempt has it.
    fn take(core: &Arc<Core>, path: &Path) -> Option<Self> {
        let fresh = core.receiving.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf());
        fresh.then(|| Self { core: core.clone(), path: path.to_path_buf() })
    }
}

impl Drop for PartialClaim {
    fn drop(&mut self) {
        self.core.receiving.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.path);
    }
}

/// A file offer as the receiver sees it.
pub(crate) struct Offer {
    pub(crate) id: MessageId,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) media_type: String,
    pub(crate) blake3: [u8; 32],
}

/// How an attempt to send a file ended.
enum Attempt {
    Received {
        resumed_from: u64,
    },
    /// The receiver refused, or the file cannot be right: retrying cannot help.
    Refused(String),
    /// The link failed or stalled: try again later, from where the receiver got to.
    Retry(String),
}

impl Attempt {
    /// The other side stopped the transfer for `code`.
    fn aborted(code: FileFailCode, reason: String) -> Self {
        if code.is_final() {
            Self::Refused(reason)
        } else {
            Self::Retry(reason)
        }
    }
}

/// Hashes a file and sniffs its media type, on blocking threads.
pub(crate) async fn describe(path: &Path) -> Result<(u64, [u8; 32], String), ClientError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let ctx = format!("reading {}", path.display());
        let file = std::fs::File::open(&path).map_err(ClientError::io(ctx.clone()))?;
        let meta = file.metadata().map_err(ClientError::io(ctx.clone()))?;
        if !meta.is_file() {
            return Err(ClientError::Io {
                context: ctx,
                source: std::io::Error::other("not a regular file"),
            });
        }
        let mut head = [0u8; 64];
        let n = std::io::Read::read(&mut &file, &mut head).map_err(ClientError::io(ctx.clone()))?;
        let media_type = image::guess_format(&head[..n])
            .map(|f| f.to_mime_type().to_owned())
            .unwrap_or_else(|_| "application/octet-stream".to_owned());
        let hash = hash_file(&path, meta.len()).map_err(ClientError::io(ctx))?;
        Ok((meta.len(), hash, media_type))
    })
    .await
    .map_err(|_| ClientError::ShuttingDown)?
}

/// Files at least this large are hashed in two halves at once: the sender waits for the hash before
/// it can offer the file, and on two cores that wait halves.
const PARALLEL_HASH_FROM: u64 = 4 * 1024 * 1024;

/// BLAKE3 of the first `len` bytes of `path`. A large file is hashed as BLAKE3's own tree splits it:
/// the left subtree and the right one on two threads, joined by their root node, which is the same
/// hash as one pass (the tests check it against `blake3::hash`).
fn hash_file(path: &Path, len: u64) -> std::io::Result<[u8; 32]> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, HasherExt, Mode};
    let part = |offset: u64, n: u64| -> std::io::Result<blake3::Hasher> {
        let mut file = std::fs::File::open(path)?;
        file.seek(std::io::SeekFrom::Start(offset))?;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        let mut part = file.take(n);
        hasher.update_reader(&mut part)?;
        if part.limit() != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while hashed",
            ));
        }
        Ok(hasher)
    };
    if len < PARALLEL_HASH_FROM {
        return Ok(*part(0, len)?.finalize().as_bytes());
    }
    let left_len = left_subtree_len(len);
    let (left, right) = std::thread::scope(|s| {
        let right = s.spawn(|| part(left_len, len - left_len));
        let left = part(0, left_len);
        (left, right.join().unwrap_or_else(|_| Err(std::io::Error::other("hashing thread panicked"))))
    });
    let root = merge_subtrees_root(&left?.finalize_non_root(), &right?.finalize_non_root(), Mode::Hash);
    Ok(*root.as_bytes())
}

/// Starts (or resumes after a restart) delivering a pending outgoing file.
pub(crate) fn spawn_sender(core: &Arc<Core>, file: FileRecord) {
    let span = info_span!("file", id = %file.id, to = %file.peer);
    core.tracker.spawn(send_until_done(core.clone(), file).instrument(span));
}

async fn send_until_done(core: Arc<Core>, file: FileRecord) {
    let mut backoff = RETRY_MIN;
    loop {
        if core.cancel.is_cancelled() {
            return;
        }
        let outcome = if core.known_offline(&file.peer) {
            Attempt::Retry(format!("{} is offline", file.peer))
        } else {
            attempt(&core, &file).await
        };
        match outcome {
            Attempt::Received { resumed_from } => {
                let _ = core.store.set_file_state(file.id, "sent").await;
                info!("{} received {}", file.peer, file.name);
                let _ = core
                    .events
                    .send(Event::FileSent { id: file.id, to: file.peer.clone(), resumed_from })
                    .await;
                return;
            }
            Attempt::Refused(reason) => {
                warn!("{} refused {}: {reason}", file.peer, file.name);
                let _ = core.store.set_file_state(file.id, "failed").await;
                let event =
                    Event::FileFailed { id: file.id, peer: file.peer.clone(), outgoing: true, reason };
                let _ = core.events.send(event).await;
                return;
            }
            Attempt::Retry(reason) => {
                debug!("sending {} to {} will be retried: {reason}", file.name, file.peer);
                let wake = crate::outbox::file_wake(&core, &file.peer);
                tokio::select! {
                    _ = core.cancel.cancelled() => return,
                    _ = wake.notified() => backoff = RETRY_MIN,
                    _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(RETRY_MAX),
                }
            }
        }
    }
}

/// Removes the transfer's route from the link when the attempt ends, however it ends.
struct RouteGuard<'a>(&'a LinkHandle, MessageId);

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.0.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

async fn attempt(core: &Arc<Core>, file: &FileRecord) -> Attempt {
    let link = match peer::link_to(core, &file.peer).await {
        Ok(l) => l,
        Err(e @ (ClientError::KeyChanged { .. } | ClientError::PeerIdentity { .. })) => {
            return Attempt::Refused(e.to_string())
        }
        Err(e) => return Attempt::Retry(e.to_string()),
    };
    let (tx, mut rx) = mpsc::channel(ROUTE_QUEUE);
    let route = Route { tx, spares: Spares::default() };
    link.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(file.id, route);
    let _guard = RouteGuard(&link, file.id);
    let offer = PeerMessage::FileOffer {
        id: file.id,
        name: file.name.clone(),
        size: file.size,
        media_type: file.media_type.clone(),
        blake3: file.blake3,
    };
    if let Err(e) = link.write(offer).await {
        return Attempt::Retry(e);
    }
    let offset = match tokio::time::timeout(STALL_TIMEOUT, next_message(&mut rx)).await {
        Err(_) => return Attempt::Retry("no answer to the offer".into()),
        Ok(None) => return Attempt::Retry("link closed".into()),
        Ok(Some(PeerMessage::FileAccept { offset, .. })) if offset <= file.size => offset,
        Ok(Some(PeerMessage::FileAccept { offset, .. })) => {
            return Attempt::Refused(format!("receiver asked for offset {offset} past the end"))
        }
        Ok(Some(PeerMessage::FileRefuse { reason, .. })) => return Attempt::Refused(reason),
        Ok(Some(PeerMessage::FileReceived { .. })) => return Attempt::Received { resumed_from: file.size },
        Ok(Some(PeerMessage::FileFailed { reason, .. })) => return Attempt::Retry(reason),
        Ok(Some(PeerMessage::FileAbort { code, reason, .. })) => return Attempt::aborted(code, reason),
        Ok(Some(other)) => return Attempt::Retry(format!("unexpected answer to the offer: {other:?}")),
    };
    match stream(core, file, &link, &mut rx, offset).await {
        Ok(()) => Attempt::Received { resumed_from: offset },
        Err(a) => a,
    }
}

/// Streams from `offset` and waits for the receiver's verdict.
async fn stream(
    core: &Arc<Core>,
    file: &FileRecord,
    link: &LinkHandle,
    rx: &mut mpsc::Receiver<Routed>,
    offset: u64,
) -> Result<(), Attempt> {
    let window = Arc::new(tokio::sync::Semaphore::new(FILE_WINDOW as usize));
    // Closing the window stops the reader, however this attempt ends.
    let _stop = WindowGuard(window.clone());
    let mut reader = send_chunks(file.clone(), offset, link.clone(), window.clone());
    let (mut all_sent, mut acked) = (false, offset);
    let mut last_event = Instant::now() - PROGRESS_EVERY;
    let progress = |bytes: u64| Event::Progress { id: file.id, bytes, total: file.size };
    loop {
        let msg = tokio::select! {
            read = &mut reader, if !all_sent => {
                match read {
                    Ok(Ok(())) => all_sent = true,
                    Ok(Err(Some(e))) => {
                        let reason = format!("{} changed while sending: {e}", file.path.display());
                        // Tell the receiver, so it does not wait for bytes that will never come.
                        let abort = PeerMessage::FileAbort { id: file.id, code: FileFailCode::SourceChanged, reason: reason.clone() };
                        let _ = link.write(abort).await;
                        return Err(Attempt::Refused(reason));
                    }
                    Ok(Err(None)) => return Err(Attempt::Retry("link closed".into())),
                    Err(e) => return Err(Attempt::Retry(format!("the file reader stopped: {e}"))),
                }
                continue;
            }
            m = tokio::time::timeout(STALL_TIMEOUT, next_message(rx)) => match m {
                Err(_) => return Err(Attempt::Retry("receiver stalled".into())),
                Ok(None) => return Err(Attempt::Retry("link closed".into())),
                Ok(Some(m)) => m,
            },
        };
        match msg {
            PeerMessage::FileProgress { received, .. } => {
                // Bytes confirmed open the window again (never past the file's end).
                let received = received.min(file.size);
                if received > acked {
                    window.add_permits((received - acked) as usize);
                    acked = received;
                }
                if last_event.elapsed() >= PROGRESS_EVERY || acked == file.size {
                    last_event = Instant::now();
                    let _ = core.events.send(progress(acked)).await;
                }
            }
            // The receiver checked the whole file's hash: done, even if the reader's own end is
            // still on its way here.
            PeerMessage::FileReceived { .. } => return Ok(()),
            // An older receiver says why only in words: whatever failed, the next attempt may work.
            PeerMessage::FileFailed { reason, .. } => return Err(Attempt::Retry(reason)),
            PeerMessage::FileAbort { code, reason, .. } => return Err(Attempt::aborted(code, reason)),
            other => debug!("ignoring {other:?} during transfer"),
        }
    }
}

/// The next message on a sending attempt's route: file bytes have no business there.
async fn next_message(rx: &mut mpsc::Receiver<Routed>) -> Option<PeerMessage> {
    loop {
        match rx.recv().await? {
            Routed::Message(msg) => return Some(msg),
            Routed::Chunk { offset, .. } => debug!("ignoring a chunk at {offset} for a file we are sending"),
        }
    }
}

/// Closes a transfer's credit window when the attempt ends, which stops its reader.
struct WindowGuard(Arc<tokio::sync::Semaphore>);

impl Drop for WindowGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Reads `file` from `offset` in chunks on a blocking thread and writes them on the link itself,
/// taking each chunk's bytes from the credit `window` first: a chunk is read straight into the
/// buffer the link encrypts, and no task stands between the disk and the socket. Ends with
/// `Err(Some(_))` if the file cannot be read or ends early (it changed since it was hashed), and
/// `Err(None)` if the link or the window closed.
fn send_chunks(
    file: FileRecord,
    offset: u64,
    link: LinkHandle,
    window: Arc<tokio::sync::Semaphore>,
) -> tokio::task::JoinHandle<Result<(), Option<std::io::Error>>> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut source = std::fs::File::open(&file.path).map_err(Some)?;
        source.seek(std::io::SeekFrom::Start(offset)).map_err(Some)?;
        // One buffer for the whole transfer: each chunk's header, then its bytes read in after it.
        let mut frame = vec![0u8; MAX_CHUNK_HEADER_LEN + FILE_CHUNK_LEN];
        let mut at = offset;
        while at < file.size {
            let want = (file.size - at).min(FILE_CHUNK_LEN as u64) as usize;
            // FILE_CHUNK_LEN fits a u32 by far.
            let credit = runtime.block_on(window.acquire_many(want as u32)).map_err(|_| None)?;
            credit.forget();
            let header = write_chunk_header(&mut frame, file.id, at, want)
                .map_err(|e| Some(std::io::Error::other(e)))?;
            let n = read_full(&mut source, &mut frame[header..header + want]).map_err(Some)?;
            if n != want {
                return Err(Some(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("it is shorter than when it was offered ({} bytes)", at + n as u64),
                )));
            }
            link.write_blocking(&runtime, &frame[..header + want], || !window.is_closed())
                .map_err(|_| None)?;
            at += want as u64;
        }
        Ok(())
    })
}

/// Reads until `buf` is full or the file ends; returns how much it read.
fn read_full(source: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match source.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Routes a transfer message arriving on `link` to its transfer; returns what to write back, if
/// anything.
pub(crate) fn route(peer: &Number, link: &LinkHandle, msg: PeerMessage) -> Option<PeerMessage> {
    let id = match &msg {
        PeerMessage::FileAccept { id, .. }
        | PeerMessage::FileRefuse { id, .. }
        | PeerMessage::FileProgress { id, .. }
        | PeerMessage::FileReceived { id }
        | PeerMessage::FileFailed { id, .. }
        | PeerMessage::FileAbort { id, .. } => *id,
        _ => return None,
    };
    let Some(tx) = link.routes.lock().unwrap_or_else(|p| p.into_inner()).get(&id).map(|r| r.tx.clone())
    else {
        debug!("{peer} sent a message for transfer {id}, which is not running here");
        return None;
    };
    deliver(link, id, &tx, Routed::Message(msg))
}

/// Routes file bytes that arrived on `link`, decrypted into `frame`, to their transfer: the buffer
/// goes along, and `frame` is replaced by one the transfer's writer is done with. Returns what to
/// write back, if anything.
pub(crate) fn route_chunk(
    peer: &Number,
    link: &LinkHandle,
    chunk: ChunkView,
    frame: &mut Vec<u8>,
) -> Option<PeerMessage> {
    let route = link
        .routes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&chunk.id)
        .map(|r| (r.tx.clone(), r.spares.clone()));
    let Some((tx, spares)) = route else {
        debug!("{peer} sent a chunk of transfer {}, which is not running here", chunk.id);
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
    deliver(link, chunk.id, &tx, Routed::Chunk { offset: chunk.offset, bytes })
}

fn deliver(
    link: &LinkHandle,
    id: MessageId,
    tx: &mpsc::Sender<Routed>,
    routed: Routed,
) -> Option<PeerMessage> {
    match tx.try_send(routed) {
        Ok(()) => None,
        // A full queue means the sender ignored the window: stop the transfer rather than buffer.
        Err(mpsc::error::TrySendError::Full(_)) => {
            close_route(link, id);
            let reason = "sender ignored flow control".into();
            Some(PeerMessage::FileAbort { id, code: FileFailCode::Protocol, reason })
        }
        Err(mpsc::error::TrySendError::Closed(_)) => None,
    }
}

/// Stops the receiving side of transfer `id` on `link` while keeping its place: its route is
/// swapped for a closed one, which ends the disk writer (it waits on the route) but keeps a new
/// offer of the same transfer out until this attempt has finished with the partial file; the
/// receiving task removes the entry when it ends.
fn close_route(link: &LinkHandle, id: MessageId) {
    let (closed, _) = mpsc::channel(1);
    if let Some(route) = link.routes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&id) {
        route.tx = closed;
    }
}

/// Decides on an offer; when accepted, starts the receiving task. Returns the answer to write.
pub(crate) async fn on_offer(
    core: &Arc<Core>,
    peer: &Number,
    link: &LinkHandle,
    offer: Offer,
) -> Option<PeerMessage> {
    let id = offer.id;
    let refuse = |reason: String| {
        info!("refusing file {id} from {peer}: {reason}");
        Some(PeerMessage::FileRefuse { id, reason })
    };
    // The sender may not have heard our confirmation (it crashed, the link dropped): confirm again.
    if core.store.has_received_file(peer, id).await.unwrap_or(false) {
        return Some(PeerMessage::FileReceived { id });
    }
    if offer.name.len() > MAX_FILE_NAME_LEN {
        return refuse(format!("file name over {MAX_FILE_NAME_LEN} bytes"));
    }
    match core.store.contact(peer).await {
        Ok(Some(_)) => {}
        Ok(None) => return refuse(format!("{peer} is not a contact of {}", core.number)),
        Err(e) => return refuse(format!("receiver cannot check its contacts: {e}")),
    }
    let max = core.config.max_file_size;
    if offer.size > max {
        return refuse(format!("file of {} bytes is over the receiver's limit of {max} bytes", offer.size));
    }
    let partial_dir = core.config.downloads.join(PARTIAL_DIR);
    if let Err(e) = tokio::fs::create_dir_all(&partial_dir).await {
        return refuse(format!("receiver cannot write its downloads folder: {e}"));
    }
    let partial = partial_dir.join(format!("{peer}-{}-{}.part", hex::encode(offer.blake3), offer.size));
    // Not a refusal: the sender tries again later.
    let busy = |reason: String| Some(PeerMessage::FileAbort { id, code: FileFailCode::Busy, reason });
    let running = || busy("transfer already running; try again later".into());
    // An attempt whose link dropped may still be writing out what it received.
    let Some(partial) = PartialClaim::take(core, &partial) else { return running() };
    let held = tokio::fs::metadata(&partial.path).await.map(|m| m.len()).unwrap_or(0);
    let offset = if held <= offer.size { held } else { 0 };
    let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
    let spares = Spares::default();
    {
        let mut routes = link.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.contains_key(&id) {
            // The sender gave up on an attempt this side is still closing: it may try again.
            return running();
        }
        // Each transfer holds a file, a buffer and a window of chunks: a peer gets a few at a time.
        if routes.len() >= MAX_TRANSFERS_PER_LINK {
            return busy(format!("{MAX_TRANSFERS_PER_LINK} transfers already running; try again later"));
        }
        routes.insert(id, Route { tx, spares: spares.clone() });
    }
    let task =
        receive(core.clone(), peer.clone(), link.clone(), offer, partial, offset, Inbound { rx, spares });
    core.tracker.spawn(task.instrument(info_span!("file", %id, from = %peer)));
    Some(PeerMessage::FileAccept { id, offset })
}

async fn receive(
    core: Arc<Core>,
    peer: Number,
    link: LinkHandle,
    offer: Offer,
    partial: PartialClaim,
    offset: u64,
    inbound: Inbound,
) {
    let id = offer.id;
    let result = receive_inner(&core, &peer, &link, &offer, &partial.path, offset, inbound).await;
    link.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    if result.as_ref().is_err_and(|f| !f.keeps_partial()) {
        let _ = tokio::fs::remove_file(&partial.path).await;
    }
    // Done with the file: a new attempt may take it while this one tells the sender and the app
    // (a write to a dead link can take its whole timeout).
    drop(partial);
    match result {
        Ok(event) => {
            let _ = link.write(PeerMessage::FileReceived { id }).await;
            let _ = core.events.send(event).await;
        }
        Err(Failure { code, reason }) => {
            warn!("receiving {} from {peer} failed: {reason}", offer.name);
            let _ = link.write(PeerMessage::FileAbort { id, code, reason: reason.clone() }).await;
            let _ = core.events.send(Event::FileFailed { id, peer, outgoing: false, reason }).await;
        }
    }
}

/// Why a receiving attempt failed: the code tells the sender whether to retry.
struct Failure {
    code: FileFailCode,
    reason: String,
}

impl Failure {
    /// Whether the bytes so far can still be what the sender offered: kept for a resume.
    fn keeps_partial(&self) -> bool {
        !matches!(self.code, FileFailCode::HashMismatch | FileFailCode::TooManyBytes)
    }
}

fn fail(code: FileFailCode, reason: impl Into<String>) -> Failure {
    Failure { code, reason: reason.into() }
}

async fn receive_inner(
    core: &Arc<Core>,
    peer: &Number,
    link: &LinkHandle,
    offer: &Offer,
    partial: &Path,
    offset: u64,
    inbound: Inbound,
) -> Result<Event, Failure> {
    let (mut written, done) = write_to_disk(partial.to_path_buf(), offset, offer.size, inbound);
    let (mut credited, mut last_said) = (offset, Instant::now());
    loop {
        match tokio::time::timeout(STALL_TIMEOUT, written.changed()).await {
            Err(_) => {
                let at = *written.borrow();
                // The writer waits on the route: closing it stops the writer, keeping what it wrote.
                close_route(link, offer.id);
                let _ = done.await;
                return Err(fail(
                    FileFailCode::Stalled,
                    format!("sender stalled at {at} of {} bytes", offer.size),
                ));
            }
            // The writer ended: done, or failed (its result says which).
            Ok(Err(_)) => break,
            Ok(Ok(())) => {
                // Credit only what is on disk: the sender's progress is what a resume would keep.
                let at = *written.borrow_and_update();
                // Progress every MiB; and while bytes trickle or the held part is read back, the
                // last figure again now and then, so the sender does not take this side for stalled.
                let said = if at - credited >= CREDIT_EVERY && at < offer.size {
                    credited = at;
                    true
                } else {
                    last_said.elapsed() >= KEEPALIVE
                };
                if said {
                    last_said = Instant::now();
                    if link
                        .write(PeerMessage::FileProgress { id: offer.id, received: credited })
                        .await
                        .is_err()
                    {
                        close_route(link, offer.id);
                        let _ = done.await;
                        return Err(fail(FileFailCode::LinkClosed, "link closed"));
                    }
                }
            }
        }
    }
    // Synced, and hashed as it was written (the bytes before `offset` read back from the partial).
    let hash = done.await.map_err(|e| fail(FileFailCode::Disk, format!("file writer stopped: {e}")))??;
    if hash != offer.blake3 {
        return Err(fail(
            FileFailCode::HashMismatch,
            "hash mismatch: the bytes received are not the file offered",
        ));
    }
    if link.write(PeerMessage::FileProgress { id: offer.id, received: offer.size }).await.is_err() {
        return Err(fail(FileFailCode::LinkClosed, "link closed"));
    }
    let path = place(partial, &core.config.downloads, &safe_name(&offer.name))
        .await
        .map_err(|e| fail(FileFailCode::Disk, format!("cannot save into the downloads folder: {e}")))?;
    // The name it was saved under, numbered if the safe name was taken.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dimensions = image_dimensions(&path).await;
    let record = FileRecord {
        id: offer.id,
        peer: peer.clone(),
        outgoing: false,
        path: path.clone(),
        name: name.clone(),
        size: offer.size,
        media_type: offer.media_type.clone(),
        blake3: offer.blake3,
    };
    if let Err(e) = core.store.insert_file(&record, "received").await {
        warn!("file {} saved but not recorded in history: {e}", path.display());
    }
    Ok(Event::FileReceived {
        id: offer.id,
        from: peer.clone(),
        name,
        path,
        size: offer.size,
        blake3: offer.blake3,
        media_type: offer.media_type.clone(),
        dimensions,
        resumed_from: offset,
    })
}

/// Writes a transfer into its partial file on a blocking thread that takes the chunks straight from
/// the link's route (no task in between, no buffer copies), hashing them as it writes so the file is
/// not read again once complete; the bytes held from an earlier attempt are read back once. The
/// route is sized to the credit window, so that, not this, bounds what waits. Returns the length
/// on disk so far (updated every [`CREDIT_EVERY`] bytes, at least every [`NOTIFY_EVERY`] while
/// bytes flow, and at the end) and, once everything is written and synced, the file's hash.
fn write_to_disk(
    partial: PathBuf,
    offset: u64,
    size: u64,
    inbound: Inbound,
) -> (tokio::sync::watch::Receiver<u64>, tokio::task::JoinHandle<Result<[u8; 32], Failure>>) {
    let (written_tx, written) = tokio::sync::watch::channel(offset);
    let done = tokio::task::spawn_blocking(move || {
        let io = |e: std::io::Error| fail(FileFailCode::Disk, format!("cannot write: {e}"));
        let Inbound { mut rx, spares } = inbound;
        let mut file = PartialFile::open(&partial, offset, spares, || {
            written_tx.send_replace(offset);
        })
        // Whatever failed (no descriptor left, a read error), the bytes held are still good.
        .map_err(|e| fail(FileFailCode::Disk, format!("cannot open the partial file: {e}")))?;
        // What was received goes to the disk before giving up, for the next attempt to resume from.
        let stop = |file: &mut PartialFile, failure: Failure| {
            let _ = file.flush();
            Err(failure)
        };
        let mut told = (offset, Instant::now());
        while file.received() < size {
            let at = file.received();
            let (chunk_at, data) = match rx.blocking_recv() {
                None => {
                    return stop(
                        &mut file,
                        fail(FileFailCode::LinkClosed, format!("link closed at {at} of {size} bytes")),
                    )
                }
                Some(Routed::Chunk { offset, bytes }) => (offset, bytes),
                Some(Routed::Message(
                    PeerMessage::FileFailed { reason, .. } | PeerMessage::FileAbort { reason, .. },
                )) => {
                    return stop(
                        &mut file,
                        fail(FileFailCode::SenderGaveUp, format!("sender gave up: {reason}")),
                    )
                }
                Some(Routed::Message(other)) => {
                    debug!("ignoring {other:?} during transfer");
                    continue;
                }
            };
            if chunk_at != at {
                return stop(
                    &mut file,
                    fail(FileFailCode::Protocol, format!("chunk at {chunk_at} while expecting {at}")),
                );
            }
            if data.is_empty() {
                return stop(&mut file, fail(FileFailCode::Protocol, "empty chunk"));
            }
            if at + data.len() as u64 > size {
                return Err(fail(FileFailCode::TooManyBytes, format!("more bytes than the {size} offered")));
            }
            // A full disk fails here: the partial keeps what was written, the sender retries later.
            file.push(data).map_err(io)?;
            // Waking the receiving task for every chunk would cost more than the chunk's write.
            let on_disk = file.on_disk();
            if on_disk - told.0 >= CREDIT_EVERY || told.1.elapsed() >= NOTIFY_EVERY {
                told = (on_disk, Instant::now());
                written_tx.send_replace(on_disk);
            }
        }
        let hash = file.finish().map_err(io)?;
        written_tx.send_replace(size);
        Ok(hash)
    });
    (written, done)
}

/// Moves the verified partial file to `downloads/name`, or `name (1)`, … : never over an existing file.
async fn place(partial: &Path, downloads: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (partial, downloads, name) = (partial.to_path_buf(), downloads.to_path_buf(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        for n in 0..10_000 {
            let candidate = downloads.join(numbered(&name, n));
            // A hard link fails if the name exists, where a rename would replace it.
            match std::fs::hard_link(&partial, &candidate) {
                Ok(()) => {
                    std::fs::remove_file(&partial)?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("too many files with that name"))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Width and height when the file's own bytes say it is an image (the extension is not trusted).
async fn image_dimensions(path: &Path) -> Option<(u32, u32)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        image::ImageReader::open(&path).ok()?.with_guessed_format().ok()?.into_dimensions().ok()
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_files_around_the_split_points_then_the_two_part_hash_is_blake3() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = PARALLEL_HASH_FROM as usize;
        // Below and at the parallel threshold, powers of two and one byte either side, uneven tails.
        for len in [0, 1, 1024, 1025, big - 1, big, big + 1, 2 * big, 2 * big + 1, 3 * big + 12_345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).expect("write");
            assert_eq!(hash_file(&path, len as u64).expect("hash"), *blake3::hash(&data).as_bytes(), "{len}");
        }
    }

    #[test]
    fn given_file_shorter_than_said_then_hashing_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("short");
        std::fs::write(&path, vec![7u8; 5 * 1024 * 1024]).expect("write");
        assert!(hash_file(&path, 6 * 1024 * 1024).is_err());
    }
}
