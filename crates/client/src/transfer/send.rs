//! The sending side of a transfer: offer, stream from where the receiver got to under its credit
//! window, wait for its verdict; retried with backoff until the file is received, refused or
//! cancelled.

use std::io::{Read, Seek};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use whatsap2p_proto::chunk::{write_chunk_header, MAX_CHUNK_HEADER_LEN};
use whatsap2p_proto::peer::{FileFailCode, PeerMessage, FILE_CHUNK_LEN, FILE_WINDOW};
use whatsap2p_proto::MessageId;

use super::{Ending, Route, Routed, Sending, Transfers, PROGRESS_EVERY, ROUTE_QUEUE, STALL_TIMEOUT};
use crate::event::Event;
use crate::link::LinkHandle;
use crate::partial::Spares;
use crate::store::{FileRecord, FileState};
use crate::ClientError;

/// First pause between attempts to send a pending file; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest pause between attempts to send a pending file.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How an attempt to send a file ended.
enum Attempt {
    Received {
        resumed_from: u64,
    },
    /// The receiver refused, or the file cannot be right: retrying cannot help. The code, when
    /// the transfer's rules name the reason.
    Refused(String, Option<FileFailCode>),
    /// The link failed or stalled: try again later, from where the receiver got to.
    Retry(String),
    /// Our user cancelled it (the receiver was told, if a link was up).
    Cancelled,
    /// The receiver holds the offer as a message request: offered again once it accepts.
    Held,
}

impl Attempt {
    /// The other side stopped the transfer for `code`.
    fn aborted(code: FileFailCode, reason: String) -> Self {
        if code.is_final() {
            Self::Refused(reason, Some(code))
        } else {
            Self::Retry(reason)
        }
    }

    fn refused(reason: impl Into<String>) -> Self {
        Self::Refused(reason.into(), None)
    }
}

/// Removes the transfer's route from its link when the attempt ends, however it ends.
struct RouteGuard<'a> {
    transfers: &'a Transfers,
    epoch: u64,
    id: MessageId,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.transfers.remove_route(self.epoch, self.id);
    }
}

impl Transfers {
    /// Starts (or resumes after a restart) delivering a pending outgoing file.
    pub(crate) fn send(&self, file: FileRecord) {
        let (ending, running) = Ending::new();
        let stop = running.stop.clone();
        let wake = Arc::new(tokio::sync::Notify::new());
        let sending = Sending { peer: file.peer.clone(), wake: wake.clone(), running };
        self.0.sending.lock().unwrap_or_else(|p| p.into_inner()).insert(file.id, sending);
        let span = info_span!("file", id = %file.id, to = %file.peer);
        let this = self.clone();
        let delivering = async move {
            let id = file.id;
            let cancelled = this.deliver_file(file, &wake, &stop).await;
            ending.ended(cancelled);
            this.0.sending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        };
        self.0.parts.tracker.spawn(delivering.instrument(span));
    }

    /// Attempts until the file is received, refused or cancelled (`stop`); `wake` ends a wait
    /// between attempts. Returns whether the cancel ended it.
    async fn deliver_file(&self, file: FileRecord, wake: &Notify, stop: &CancellationToken) -> bool {
        let p = &self.0.parts;
        let mut backoff = RETRY_MIN;
        loop {
            if p.cancel.is_cancelled() {
                return false;
            }
            let outcome = if stop.is_cancelled() {
                Attempt::Cancelled
            } else if p.presence.known_offline(&file.peer) {
                Attempt::Retry(format!("{} is offline", file.peer))
            } else {
                self.attempt(&file, stop).await
            };
            let failed = |reason: String, code: Option<FileFailCode>| Event::FileFailed {
                id: file.id,
                peer: file.peer.clone(),
                outgoing: true,
                reason,
                code,
            };
            match outcome {
                Attempt::Received { resumed_from } => {
                    let _ = p.store.set_file_state(file.id, FileState::Sent).await;
                    info!("{} received {}", file.peer, file.name);
                    let _ = p
                        .events
                        .send(Event::FileSent { id: file.id, to: file.peer.clone(), resumed_from })
                        .await;
                    return false;
                }
                Attempt::Refused(reason, code) => {
                    warn!("{} refused {}: {reason}", file.peer, file.name);
                    // The receiver's user cancelled: as final as ours.
                    let state = if code == Some(FileFailCode::Cancelled) {
                        FileState::Cancelled
                    } else {
                        FileState::Failed
                    };
                    let _ = p.store.set_file_state(file.id, state).await;
                    let _ = p.events.send(failed(reason, code)).await;
                    return false;
                }
                Attempt::Cancelled => {
                    info!("sending {} to {} cancelled", file.name, file.peer);
                    let _ = p.store.set_file_state(file.id, FileState::Cancelled).await;
                    let _ = p.events.send(failed(cancelled_by(&p.me), Some(FileFailCode::Cancelled))).await;
                    return true;
                }
                Attempt::Held => {
                    info!("{} holds {} as a message request", file.peer, file.name);
                    let _ = p.store.set_file_state(file.id, FileState::Held).await;
                    let _ = p.events.send(Event::Pending { id: file.id, to: file.peer.clone() }).await;
                    return false;
                }
                Attempt::Retry(reason) => {
                    debug!("sending {} to {} will be retried: {reason}", file.name, file.peer);
                    tokio::select! {
                        _ = p.cancel.cancelled() => return false,
                        _ = stop.cancelled() => {}
                        _ = wake.notified() => backoff = RETRY_MIN,
                        _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(RETRY_MAX),
                    }
                }
            }
        }
    }

    /// One attempt; a cancel (`stop`) ends it at any point, telling the receiver once a link is up.
    async fn attempt(&self, file: &FileRecord, stop: &CancellationToken) -> Attempt {
        let connected = tokio::select! {
            c = self.0.parts.links.connect(&file.peer) => c,
            _ = stop.cancelled() => return Attempt::Cancelled,
        };
        let link = match connected {
            Ok(l) => l,
            Err(e @ (ClientError::KeyChanged { .. } | ClientError::PeerIdentity { .. })) => {
                return Attempt::refused(e.to_string())
            }
            Err(e) => return Attempt::Retry(e.to_string()),
        };
        let (tx, mut rx) = mpsc::channel(ROUTE_QUEUE);
        self.add_route(&link, file.id, Route { tx, spares: Spares::default() });
        let _guard = RouteGuard { transfers: self, epoch: link.epoch(), id: file.id };
        tokio::select! {
            attempt = self.offer_and_stream(file, &link, &mut rx) => attempt,
            _ = stop.cancelled() => {
                // Dropping the attempt closed its window, which stops the reader thread; the
                // receiver drops what it has when it reads this.
                let reason = cancelled_by(&self.0.parts.me);
                let _ = link.write(PeerMessage::FileAbort { id: file.id, code: FileFailCode::Cancelled, reason }).await;
                Attempt::Cancelled
            }
        }
    }

    /// Offers the file on `link`, then streams it from where the receiver got to.
    async fn offer_and_stream(
        &self,
        file: &FileRecord,
        link: &LinkHandle,
        rx: &mut mpsc::Receiver<Routed>,
    ) -> Attempt {
        let offer = PeerMessage::FileOffer {
            id: file.id,
            name: file.name.clone(),
            size: file.size,
            media_type: file.media_type.clone(),
            blake3: file.blake3,
        };
        if let Err(e) = link.write(offer).await {
            return Attempt::Retry(e.to_string());
        }
        let offset = match tokio::time::timeout(STALL_TIMEOUT, next_message(rx)).await {
            Err(_) => return Attempt::Retry("no answer to the offer".into()),
            Ok(None) => return Attempt::Retry("link closed".into()),
            Ok(Some(PeerMessage::FileAccept { offset, .. })) if offset <= file.size => offset,
            Ok(Some(PeerMessage::FileAccept { offset, .. })) => {
                return Attempt::refused(format!("receiver asked for offset {offset} past the end"))
            }
            Ok(Some(PeerMessage::FileRefuse { reason, .. })) => return Attempt::refused(reason),
            Ok(Some(PeerMessage::Pending { .. })) => return Attempt::Held,
            Ok(Some(PeerMessage::FileReceived { .. })) => {
                return Attempt::Received { resumed_from: file.size }
            }
            Ok(Some(PeerMessage::FileFailed { reason, .. })) => return Attempt::Retry(reason),
            Ok(Some(PeerMessage::FileAbort { code, reason, .. })) => return Attempt::aborted(code, reason),
            Ok(Some(other)) => return Attempt::Retry(format!("unexpected answer to the offer: {other:?}")),
        };
        match self.stream(file, link, rx, offset).await {
            Ok(()) => Attempt::Received { resumed_from: offset },
            Err(a) => a,
        }
    }

    /// Streams from `offset` and waits for the receiver's verdict.
    async fn stream(
        &self,
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
        let progress = |bytes: u64| Event::Progress {
            id: file.id,
            peer: file.peer.clone(),
            outgoing: true,
            bytes,
            total: file.size,
        };
        loop {
            let msg = tokio::select! {
                read = &mut reader, if !all_sent => {
                    match read {
                        Ok(Ok(())) => all_sent = true,
                        Ok(Err(Some(e))) => {
                            let reason = format!("{} changed while sending: {e}", file.path.display());
                            // Tell the receiver, so it does not wait for bytes that will never come.
                            let code = FileFailCode::SourceChanged;
                            let abort = PeerMessage::FileAbort { id: file.id, code, reason: reason.clone() };
                            let _ = link.write(abort).await;
                            return Err(Attempt::Refused(reason, Some(code)));
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
                        let _ = self.0.parts.events.send(progress(acked)).await;
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
}

/// What either side says when its user cancels a transfer.
pub(super) fn cancelled_by(me: &whatsap2p_proto::Number) -> String {
    format!("cancelled by {me}")
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
