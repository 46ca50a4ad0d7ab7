//! The receiving side of a transfer: decide on an offer, write the chunks into a partial file (on a
//! blocking thread, straight from the link), open the sender's window as bytes reach the disk, check
//! the hash, and place the file in the downloads folder. Reports [`Event::FileIncoming`] when an
//! attempt starts and [`Event::Progress`] as bytes reach the disk.

use std::path::{Path, PathBuf};
use std::time::Instant as StdInstant;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};
use whatsap2p_proto::file_name::safe_name;
use whatsap2p_proto::peer::{FileFailCode, PeerMessage, MAX_FILE_NAME_LEN};
use whatsap2p_proto::MessageId;

use tokio_util::sync::CancellationToken;

use super::media::Sniffed;
use super::partials::NoRoom;
use super::send::cancelled_by;
use super::{Busy, Ending, Inbound, Route, Routed, Transfers, PROGRESS_EVERY, ROUTE_QUEUE, STALL_TIMEOUT};
use crate::event::Event;
use crate::link::LinkHandle;
use crate::partial::{PartialFile, Spares};
use crate::store::{FileRecord, FileState};

/// How often the receiver opens the window (bytes written between credits).
const CREDIT_EVERY: u64 = 1024 * 1024;
/// While bytes flow, the receiver's writer reports its progress at least this often (stall detection).
const NOTIFY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The receiver repeats its progress at least this often while a transfer is alive.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// A receiving attempt's partial file, held by that attempt until it has finished with it (and,
/// if the file was bad, removed it).
struct PartialClaim {
    transfers: Transfers,
    path: PathBuf,
}

impl PartialClaim {
    /// The hold on `path`, unless another attempt has it.
    fn take(transfers: &Transfers, path: &Path) -> Option<Self> {
        let fresh =
            transfers.0.receiving.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf());
        fresh.then(|| Self { transfers: transfers.clone(), path: path.to_path_buf() })
    }
}

impl Drop for PartialClaim {
    fn drop(&mut self) {
        self.transfers.0.receiving.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.path);
    }
}

/// An incoming transfer's entry in `incoming`, where [`Transfers::cancel`] finds it, held by its
/// receiving task and removed when that ends.
struct Reachable {
    transfers: Transfers,
    id: MessageId,
    ending: Ending,
    stop: CancellationToken,
}

impl Reachable {
    /// The entry for `id`, unless an attempt of that id is under way already.
    fn take(transfers: &Transfers, id: MessageId) -> Option<Self> {
        let mut incoming = transfers.0.incoming.lock().unwrap_or_else(|p| p.into_inner());
        if incoming.contains_key(&id) {
            return None;
        }
        let (ending, running) = Ending::new();
        let stop = running.stop.clone();
        incoming.insert(id, running);
        Some(Self { transfers: transfers.clone(), id, ending, stop })
    }
}

impl Drop for Reachable {
    fn drop(&mut self) {
        self.transfers.0.incoming.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// What a receiving task holds while it runs: its partial file, and its place where a cancel
/// finds it.
struct Claims {
    partial: PartialClaim,
    reachable: Reachable,
}

/// A file offer as the receiver sees it.
pub(crate) struct Offer {
    pub(crate) id: MessageId,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) blake3: [u8; 32],
}

/// Why a receiving attempt failed: the code tells the sender whether to retry.
struct Failure {
    code: FileFailCode,
    reason: String,
}

impl Failure {
    /// Whether the bytes so far are worth keeping for a resume: not when they cannot be right, nor
    /// when the transfer is over for good (cancelled, or the sender gave the file up).
    fn keeps_partial(&self) -> bool {
        !self.code.is_final()
    }
}

fn fail(code: FileFailCode, reason: impl Into<String>) -> Failure {
    Failure { code, reason: reason.into() }
}

impl Transfers {
    /// Decides on an offer from a known number (a stranger's is held as a message request before
    /// it gets here); when accepted, starts the receiving task. Returns the answer to write.
    pub(crate) async fn on_offer(&self, link: &LinkHandle, offer: Offer) -> Option<PeerMessage> {
        let (p, peer) = (&self.0.parts, link.peer());
        let id = offer.id;
        let refuse = |reason: String| {
            info!("refusing file {id} from {peer}: {reason}");
            Some(PeerMessage::FileRefuse { id, reason })
        };
        match p.store.incoming_file_state(peer, id).await {
            // The sender may not have heard our confirmation (it crashed, the link dropped): confirm again.
            Ok(Some(FileState::Received)) => return Some(PeerMessage::FileReceived { id }),
            // Our user cancelled it: a sender that took the cancel for a retry hears it for good.
            Ok(Some(FileState::Cancelled)) => return refuse(cancelled_by(&p.me)),
            _ => {}
        }
        if offer.name.len() > MAX_FILE_NAME_LEN {
            return refuse(format!("file name over {MAX_FILE_NAME_LEN} bytes"));
        }
        let max = p.max_file_size;
        if offer.size > max {
            return refuse(format!(
                "file of {} bytes is over the receiver's limit of {max} bytes",
                offer.size
            ));
        }
        let room = self.0.partials.limits().max_partial_bytes;
        if offer.size > room {
            return refuse(format!(
                "file of {} bytes is over the receiver's limit of {room} bytes for files being received",
                offer.size
            ));
        }
        let partial_dir = self.0.partials.dir();
        if let Err(e) = tokio::fs::create_dir_all(partial_dir).await {
            return refuse(format!("receiver cannot write its downloads folder: {e}"));
        }
        let partial = partial_dir.join(format!("{peer}-{}-{}.part", hex::encode(offer.blake3), offer.size));
        // Not a refusal: the sender tries again later.
        let busy = |reason: String| Some(PeerMessage::FileAbort { id, code: FileFailCode::Busy, reason });
        // An attempt whose link dropped may still be writing out what it received.
        let Some(partial) = PartialClaim::take(self, &partial) else {
            return busy("transfer already running; try again later".into());
        };
        let Some(reachable) = Reachable::take(self, id) else {
            return busy("transfer already running; try again later".into());
        };
        let held = tokio::fs::metadata(&partial.path).await.map(|m| m.len()).unwrap_or(0);
        let offset = if held <= offer.size { held } else { 0 };
        // Room among the partial files, and on the disk, for what is still to come.
        let (partials, claimed, path, size) =
            (self.0.partials.clone(), self.claimed(), partial.path.clone(), offer.size);
        match tokio::task::spawn_blocking(move || partials.make_room(&path, size, offset, &claimed)).await {
            Ok(Ok(())) => {}
            Ok(Err(NoRoom::Full(reason))) => return busy(reason),
            Ok(Err(NoRoom::Disk(reason))) => {
                warn!("not receiving file {id} from {peer} now: {reason}");
                let failed = Event::FileFailed {
                    id,
                    peer: peer.clone(),
                    outgoing: false,
                    reason: reason.clone(),
                    code: Some(FileFailCode::Disk),
                };
                let _ = p.events.send(failed).await;
                return Some(PeerMessage::FileAbort { id, code: FileFailCode::Disk, reason });
            }
            Err(_) => return busy("receiver is shutting down".into()),
        }
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
        let spares = Spares::default();
        if let Err(Busy(reason)) = self.try_add_route(link, id, Route { tx, spares: spares.clone() }) {
            return busy(reason);
        }
        let claims = Claims { partial, reachable };
        let task = self.clone().receive(link.clone(), offer, claims, offset, Inbound { rx, spares });
        p.tracker.spawn(task.instrument(info_span!("file", %id, from = %peer)));
        Some(PeerMessage::FileAccept { id, offset })
    }

    async fn receive(self, link: LinkHandle, offer: Offer, claims: Claims, offset: u64, inbound: Inbound) {
        let (id, peer) = (offer.id, link.peer().clone());
        let Claims { partial, reachable } = claims;
        let p = &self.0.parts;
        let incoming = Event::FileIncoming {
            id,
            from: peer.clone(),
            name: safe_name(&offer.name),
            size: offer.size,
            // What the sender says it is does not count, and the content is not here yet.
            media_type: "application/octet-stream".into(),
            resumed_from: offset,
        };
        let _ = p.events.send(incoming).await;
        let stop = reachable.stop.clone();
        let result = self.receive_inner(&link, &offer, &partial.path, offset, inbound, &stop).await;
        self.remove_route(link.epoch(), id);
        if result.as_ref().is_err_and(|f| !f.keeps_partial()) {
            let _ = tokio::fs::remove_file(&partial.path).await;
        }
        // Done with the file: a new attempt may take it while this one tells the sender and the app
        // (a write to a dead link can take its whole timeout).
        drop(partial);
        let cancelled = matches!(&result, Err(f) if f.code == FileFailCode::Cancelled && stop.is_cancelled());
        match result {
            Ok(event) => {
                let _ = link.write(PeerMessage::FileReceived { id }).await;
                let _ = p.events.send(event).await;
            }
            Err(Failure { code, reason }) => {
                if cancelled {
                    info!("receiving {} from {peer} cancelled", safe_name(&offer.name));
                    // Kept in history, and to refuse the file if it is offered again.
                    let record = FileRecord {
                        id,
                        peer: peer.clone(),
                        outgoing: false,
                        path: PathBuf::new(),
                        name: safe_name(&offer.name),
                        size: offer.size,
                        // Never received: its content, and so its type, is unknown.
                        media_type: "application/octet-stream".into(),
                        blake3: offer.blake3,
                    };
                    if let Err(e) = p.store.insert_file(&record, FileState::Cancelled.as_str()).await {
                        warn!("cancelled file {id} not recorded: {e}");
                    }
                } else {
                    warn!("receiving {} from {peer} failed: {reason}", safe_name(&offer.name));
                }
                let _ = link.write(PeerMessage::FileAbort { id, code, reason: reason.clone() }).await;
                let event = Event::FileFailed { id, peer, outgoing: false, reason, code: Some(code) };
                let _ = p.events.send(event).await;
            }
        }
        reachable.ending.ended(cancelled);
    }

    async fn receive_inner(
        &self,
        link: &LinkHandle,
        offer: &Offer,
        partial: &Path,
        offset: u64,
        inbound: Inbound,
        stop: &CancellationToken,
    ) -> Result<Event, Failure> {
        let (p, peer) = (&self.0.parts, link.peer());
        let (mut written, done) = write_to_disk(partial.to_path_buf(), offset, offer.size, inbound);
        let (mut credited, mut last_said) = (offset, Instant::now());
        let mut last_event = Instant::now();
        loop {
            let changed = tokio::select! {
                changed = tokio::time::timeout(STALL_TIMEOUT, written.changed()) => changed,
                _ = stop.cancelled() => {
                    self.close_route(link.epoch(), offer.id);
                    let _ = done.await;
                    return Err(fail(FileFailCode::Cancelled, cancelled_by(&p.me)));
                }
            };
            match changed {
                Err(_) => {
                    let at = *written.borrow();
                    // The writer waits on the route: closing it stops the writer, keeping what it wrote.
                    self.close_route(link.epoch(), offer.id);
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
                    if last_event.elapsed() >= PROGRESS_EVERY {
                        last_event = Instant::now();
                        // A report the UI has no room for is skipped: the next one says more.
                        let _ = p.events.try_send(Event::Progress {
                            id: offer.id,
                            peer: peer.clone(),
                            outgoing: false,
                            bytes: at,
                            total: offer.size,
                        });
                    }
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
                            self.close_route(link.epoch(), offer.id);
                            let _ = done.await;
                            return Err(fail(FileFailCode::LinkClosed, "link closed"));
                        }
                    }
                }
            }
        }
        // Synced, and hashed as it was written (the bytes before `offset` read back from the partial).
        let hash =
            done.await.map_err(|e| fail(FileFailCode::Disk, format!("file writer stopped: {e}")))??;
        if hash != offer.blake3 {
            return Err(fail(
                FileFailCode::HashMismatch,
                "hash mismatch: the bytes received are not the file offered",
            ));
        }
        if link.write(PeerMessage::FileProgress { id: offer.id, received: offer.size }).await.is_err() {
            return Err(fail(FileFailCode::LinkClosed, "link closed"));
        }
        // What the file is comes from its bytes; the name's extension follows.
        let sniffing = partial.to_path_buf();
        let sniffed = tokio::task::spawn_blocking(move || Sniffed::from_file(&sniffing))
            .await
            .map_err(|e| fail(FileFailCode::Disk, format!("cannot read the file back: {e}")))?
            .map_err(|e| fail(FileFailCode::Disk, format!("cannot read the file back: {e}")))?;
        let path = place(partial, &p.downloads, &sniffed.saved_name(&offer.name))
            .await
            .map_err(|e| fail(FileFailCode::Disk, format!("cannot save into the downloads folder: {e}")))?;
        // The name it was saved under, numbered if the safe name was taken.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dimensions = image_dimensions(&path).await;
        let media_type = sniffed.media_type.to_owned();
        let record = FileRecord {
            id: offer.id,
            peer: peer.clone(),
            outgoing: false,
            path: path.clone(),
            name: name.clone(),
            size: offer.size,
            media_type: media_type.clone(),
            blake3: offer.blake3,
        };
        if let Err(e) = p.store.insert_file(&record, "received").await {
            warn!("file {} saved but not recorded in history: {e}", path.display());
        }
        Ok(Event::FileReceived {
            id: offer.id,
            from: peer.clone(),
            name,
            path,
            size: offer.size,
            blake3: offer.blake3,
            media_type,
            dimensions,
            resumed_from: offset,
        })
    }
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
        let mut told = (offset, StdInstant::now());
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
                Some(Routed::Message(PeerMessage::FileAbort { code, reason, .. })) if code.is_final() => {
                    // Over for good (cancelled, the file changed): nothing of it is worth keeping.
                    return Err(fail(code, reason));
                }
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
                told = (on_disk, StdInstant::now());
                written_tx.send_replace(on_disk);
            }
        }
        let hash = file.finish().map_err(io)?;
        written_tx.send_replace(size);
        Ok(hash)
    });
    (written, done)
}

/// `name`, then `name (1)`, `name (2)`, …: candidates for a file that must not overwrite another.
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} ({n}){}", &name[..i], &name[i..]),
        _ => format!("{name} ({n})"),
    }
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
    use super::numbered;

    #[test]
    fn given_existing_name_then_numbered_candidates_keep_the_extension() {
        assert_eq!(numbered("cat.jpg", 0), "cat.jpg");
        assert_eq!(numbered("cat.jpg", 2), "cat (2).jpg");
        assert_eq!(numbered("README", 1), "README (1)");
    }
}
