//! Direct links between clients.
//!
//! Dialing: look the number up, check the key the directory gives against the contact's pinned key,
//! connect, and require the responder to prove that key in the handshake. Accepting: require the
//! initiator's proof, then ask the directory whether that key owns the number it claims, and check
//! the pin. A link is kept and reused for later messages in both directions.
//!
//! Each link runs two tasks: a writer fed by a bounded queue, and a reader that stores and shows
//! messages, acknowledges them once stored, and records receipts for what we sent. Reading and
//! writing never wait on each other. What to send, and when, is the outbox's business.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};
use whatsap2p_link::{decode_or_skip, Handshake, SessionReader, SessionWriter};
use whatsap2p_proto::chunk::{view_chunk, ChunkView};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::LookupIntent;
use whatsap2p_proto::group::GroupId;
use whatsap2p_proto::handshake::{Hello, Purpose};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{
    DecodeError, IdentityProof, MessageId, Number, PublicKey, MAX_TEXT_LEN, PROTOCOL_VERSION,
};

use crate::client::{Core, Event};
use crate::store::MessageState;
use crate::ClientError;

/// Chat and control frames waiting to be written on one link.
const LINK_QUEUE: usize = 64;
/// Most frames written together in one flush.
const WRITE_BATCH: usize = 32;
/// How much more than the frame in hand one read on a link may take in while a file's chunks are
/// coming: they then arrive several per read. (Any peer could otherwise make each link hold this
/// much by sending the start of a frame.)
const READ_AHEAD: usize = 256 * 1024;
/// A link's frame buffer is freed after a message when it is larger than this and no transfer runs.
const IDLE_FRAME_BUFFER: usize = 16 * 1024;
/// Most peer connections handled at once (handshaking or linked).
pub const MAX_PEER_CONNECTIONS: usize = 1024;

type Reader = SessionReader<TcpStream>;
type Writer = SessionWriter<TcpStream>;

/// Something to write on a link; `written` learns whether it was. Without a message, it asks the
/// writer task to finish writing what is already buffered.
pub(crate) struct Outgoing {
    msg: Option<PeerMessage>,
    written: Option<oneshot::Sender<Result<(), String>>>,
}

static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

/// Where a file transfer's messages arriving on a link go, by transfer id.
pub(crate) type Routes = Arc<Mutex<HashMap<MessageId, crate::transfer::Route>>>;

/// A live link to one peer. Clones share the link.
#[derive(Clone)]
pub(crate) struct LinkHandle {
    tx: mpsc::Sender<Outgoing>,
    pub(crate) routes: Routes,
    /// The session's writing half: the writer task holds it for each batch; [`LinkHandle::write`]
    /// takes it directly when nothing waits, and a file's reader for each chunk.
    writer: Arc<tokio::sync::Mutex<Writer>>,
    closed: CancellationToken,
    /// Unique per link, so the outbox knows what it already wrote on this one.
    pub(crate) epoch: u64,
    /// Frames handed to the writer task and not yet written: a direct write goes only when none
    /// are, so nothing overtakes a frame the writer task has taken but not written yet.
    queued: Arc<AtomicUsize>,
}

impl LinkHandle {
    fn is_alive(&self) -> bool {
        !self.closed.is_cancelled()
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
    ) -> Result<(), String> {
        runtime.block_on(async {
            if self.closed.is_cancelled() {
                return Err("link closed".to_owned());
            }
            let mut writer = self.writer.lock().await;
            if !wanted() {
                return Err("no longer wanted".to_owned());
            }
            self.write_encoded(&mut writer, frame).await
        })
    }

    /// Writes `msg` with the writer already taken; a failed write ends the link.
    async fn write_now(&self, writer: &mut Writer, msg: &PeerMessage) -> Result<(), String> {
        let frame = whatsap2p_proto::encode(msg).map_err(|e| e.to_string())?;
        self.write_encoded(writer, &frame).await
    }

    /// Writes one encoded message with the writer already taken; a failed write ends the link.
    async fn write_encoded(&self, writer: &mut Writer, frame: &[u8]) -> Result<(), String> {
        let written = writer.send(frame).await;
        if written.is_err() {
            self.closed.cancel();
        }
        written.map_err(|e| e.to_string())
    }

    /// Hands `out` to the writer task.
    async fn enqueue(&self, out: Outgoing) -> Result<(), ()> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self.tx.send(out).await.map_err(|_| ());
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Writes a reply from the link's reader: at once when nothing waits and the socket takes it
    /// without waiting (no hand-off to the writer task, which costs a thread wake-up), otherwise
    /// through the writer task. Never waits for the peer to read, so the reader cannot stall
    /// while the peer, in turn, waits for it to read.
    async fn reply(&self, msg: PeerMessage) {
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(mut writer) = self.writer.try_lock() {
                let written = whatsap2p_proto::encode(&msg)
                    .map_err(|e| e.to_string())
                    .and_then(|frame| writer.send_or_buffer(&frame).map_err(|e| e.to_string()));
                drop(writer);
                match written {
                    Ok(true) => {}
                    // The rest is buffered: the writer task finishes it, before anything queued later.
                    Ok(false) => {
                        let _ = self.enqueue(Outgoing { msg: None, written: None }).await;
                    }
                    Err(e) => {
                        debug!("reply not written: {e}");
                        self.closed.cancel();
                    }
                }
                return;
            }
        }
        let _ = self.enqueue(Outgoing { msg: Some(msg), written: None }).await;
    }

    /// Writes `msg`; returns once it is on the wire.
    pub(crate) async fn write(&self, msg: PeerMessage) -> Result<(), String> {
        // Nothing queued and nobody writing: write from this task. Handing the frame to the writer
        // task costs a thread wake-up, tens of µs here, on every message and every acknowledgement.
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(mut writer) = self.writer.try_lock() {
                return self.write_now(&mut writer, &msg).await;
            }
        }
        let (written, rx) = oneshot::channel();
        match self.enqueue(Outgoing { msg: Some(msg), written: Some(written) }).await {
            Err(_) => Err("link closed".to_owned()),
            Ok(()) => rx.await.unwrap_or_else(|_| Err("link closed".to_owned())),
        }
    }
}

/// Links by number. One async slot per number, so dialing one peer never waits on another.
#[derive(Default)]
pub(crate) struct Links {
    slots: Mutex<HashMap<Number, Arc<tokio::sync::Mutex<Option<LinkHandle>>>>>,
}

impl Links {
    fn slot(&self, number: &Number) -> Arc<tokio::sync::Mutex<Option<LinkHandle>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(number.clone()).or_default().clone()
    }

    /// Stops every link.
    pub(crate) fn close_all(&self) {
        let slots: Vec<_> = self.slots.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for slot in slots {
            if let Ok(guard) = slot.try_lock() {
                if let Some(link) = guard.as_ref() {
                    link.closed.cancel();
                }
            }
        }
    }
}

/// A live link to `to`: the one in use, or a new one dialed now.
/// The live link to `to`, if there is one: never dials.
pub(crate) async fn live_link(core: &Arc<Core>, to: &Number) -> Option<LinkHandle> {
    let slot = core.links.slot(to);
    let slot = slot.lock().await;
    slot.as_ref().filter(|l| l.is_alive()).cloned()
}

pub(crate) async fn link_to(core: &Arc<Core>, to: &Number) -> Result<LinkHandle, ClientError> {
    let slot = core.links.slot(to);
    let mut slot = slot.lock().await;
    if let Some(link) = slot.as_ref().filter(|l| l.is_alive()) {
        return Ok(link.clone());
    }
    let link = dial(core, to).await?;
    *slot = Some(link.clone());
    Ok(link)
}

/// Checks `presented` against the key pinned for a contact, pinning it on first use.
pub(crate) async fn check_pin(core: &Core, number: &Number, presented: PublicKey) -> Result<(), ClientError> {
    let Some(contact) = core.store.contact(number).await? else { return Ok(()) };
    match contact.key {
        Some(pinned) if pinned != presented => {
            let err = ClientError::KeyChanged { number: number.clone(), pinned, presented };
            warn!("{err}");
            Err(err)
        }
        Some(_) => Ok(()),
        None => core.store.pin_contact_key(number, &presented).await,
    }
}

async fn dial(core: &Arc<Core>, to: &Number) -> Result<LinkHandle, ClientError> {
    let answer = core.directory.lookup(to, LookupIntent::Address).await?;
    core.saw_online(to, answer.online);
    let Some(key) = answer.key else { return Err(ClientError::UnknownNumber(to.clone())) };
    let Some(location) = answer.online else { return Err(ClientError::Offline(to.clone())) };
    check_pin(core, to, key).await?;
    let addr = location.addr;
    let t = &core.config.timeouts;
    let stream = tokio::time::timeout(t.connect, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Timeout("connecting to the peer"))?
        .map_err(ClientError::io(format!("connecting to {to} at {addr}")))?;
    let _ = stream.set_nodelay(true);
    let (reader, writer) = tokio::time::timeout(t.handshake, dial_handshake(core, stream, to, key, addr))
        .await
        .map_err(|_| ClientError::Timeout("peer handshake"))??;
    info!("linked to {to} at {addr}");
    Ok(spawn_link(core, to.clone(), key, addr, reader, writer))
}

/// Initiator side: the responder must prove `expected` owns `to` in this very session.
async fn dial_handshake(
    core: &Core,
    stream: TcpStream,
    to: &Number,
    expected: PublicKey,
    addr: SocketAddr,
) -> Result<(Reader, Writer), ClientError> {
    let link_err = || ClientError::link(format!("handshake with {to} at {addr}"));
    let refuse = |reason: String| ClientError::PeerIdentity { number: to.clone(), addr, reason };
    let id = &core.identity;
    let mut hs = Handshake::initiator(stream, &id.noise).map_err(link_err())?;
    let hello = Hello { version: PROTOCOL_VERSION, purpose: Purpose::Peer };
    hs.send(&whatsap2p_proto::encode(&hello).map_err(|e| link_err()(e.into()))?).await.map_err(link_err())?;
    let hash = hs.hash();
    let payload = hs.recv().await.map_err(link_err())?;
    let proof: IdentityProof =
        decode_struct(&payload).map_err(|e| refuse(format!("bad identity proof: {e}")))?;
    let noise = hs.remote_static().ok_or_else(|| refuse("no static key".into()))?;
    proof.verify(&hash, &noise.0).map_err(|e| refuse(e.to_string()))?;
    if proof.number != *to {
        return Err(refuse(format!("it says it is {}", proof.number)));
    }
    if proof.identity != expected {
        return Err(refuse(format!(
            "it presented key {}, the directory says {to} owns {expected}",
            proof.identity
        )));
    }
    let mine = IdentityProof::sign(&id.signing, core.number.clone(), &hs.hash(), &id.noise.public().0);
    hs.send(&whatsap2p_proto::encode(&mine).map_err(|e| link_err()(e.into()))?).await.map_err(link_err())?;
    Ok(hs.finish().map_err(link_err())?.split())
}

/// Accepts peers until shutdown.
pub(crate) async fn accept_loop(core: Arc<Core>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(MAX_PEER_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = core.cancel.cancelled() => return,
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!("refusing peer {addr}: {MAX_PEER_CONNECTIONS} connections open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let task_core = core.clone();
        core.tracker.spawn(
            async move {
                let t = &task_core.config.timeouts;
                match tokio::time::timeout(t.handshake, accept_handshake(&task_core, stream, addr)).await {
                    Err(_) => warn!("dropping peer {addr}: handshake not finished within {:?}", t.handshake),
                    Ok(Err(e)) => {
                        warn!("refusing peer {addr}: {e}");
                        if matches!(e, ClientError::KeyChanged { .. } | ClientError::PeerIdentity { .. }) {
                            let _ = task_core.events.send(Event::Warning { message: e.to_string() }).await;
                        }
                    }
                    Ok(Ok((number, key, reader, writer))) => {
                        info!("{number} linked from {addr}");
                        let link = spawn_link(&task_core, number.clone(), key, addr, reader, writer);
                        let slot = task_core.links.slot(&number);
                        let mut slot = slot.lock().await;
                        if !slot.as_ref().is_some_and(|l| l.is_alive()) {
                            *slot = Some(link.clone());
                        }
                        drop(slot);
                        link.closed.cancelled().await;
                    }
                }
                drop(permit);
            }
            .instrument(info_span!("peer", %addr)),
        );
    }
}

/// Responder side: prove ourselves, then check the initiator's proof and, with the directory, that
/// its key owns the number it claims.
async fn accept_handshake(
    core: &Core,
    stream: TcpStream,
    addr: SocketAddr,
) -> Result<(Number, PublicKey, Reader, Writer), ClientError> {
    let link_err = || ClientError::link(format!("handshake with peer {addr}"));
    let id = &core.identity;
    let mut hs = Handshake::responder(stream, &id.noise).map_err(link_err())?;
    let hello: Hello =
        decode_struct(&hs.recv().await.map_err(link_err())?).map_err(|e| link_err()(e.into()))?;
    if hello.version != PROTOCOL_VERSION || hello.purpose != Purpose::Peer {
        return Err(ClientError::Directory(format!("peer {addr} sent an unsupported hello {hello:?}")));
    }
    let mine = IdentityProof::sign(&id.signing, core.number.clone(), &hs.hash(), &id.noise.public().0);
    hs.send(&whatsap2p_proto::encode(&mine).map_err(|e| link_err()(e.into()))?).await.map_err(link_err())?;
    let hash = hs.hash();
    let payload = hs.recv().await.map_err(link_err())?;
    let proof: IdentityProof = decode_struct(&payload).map_err(|e| link_err()(e.into()))?;
    let claimed = proof.number.clone();
    let refuse = |reason: String| ClientError::PeerIdentity { number: claimed.clone(), addr, reason };
    let noise = hs.remote_static().ok_or_else(|| refuse("no static key".into()))?;
    proof.verify(&hash, &noise.0).map_err(|e| refuse(e.to_string()))?;
    match core.directory.lookup(&claimed, LookupIntent::Address).await {
        Ok(answer) if answer.key == Some(proof.identity) => check_pin(core, &claimed, proof.identity).await?,
        Ok(_) => {
            return Err(refuse(format!(
                "its key {} is not the one the directory has for {claimed}",
                proof.identity
            )))
        }
        // While the directory is away, a contact whose pinned key matches is still who it says.
        Err(e @ (ClientError::NotConnected | ClientError::Timeout(_))) => {
            let pinned = core.store.contact(&claimed).await?.and_then(|c| c.key);
            if pinned != Some(proof.identity) {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    let (reader, writer) = hs.finish().map_err(link_err())?.split();
    Ok((claimed, proof.identity, reader, writer))
}

fn spawn_link(
    core: &Arc<Core>,
    peer: Number,
    peer_key: PublicKey,
    addr: SocketAddr,
    reader: Reader,
    writer: Writer,
) -> LinkHandle {
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let closed = core.cancel.child_token();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let link = LinkHandle {
        tx,
        routes: Routes::default(),
        writer: writer.clone(),
        closed: closed.clone(),
        epoch: NEXT_EPOCH.fetch_add(1, Ordering::Relaxed),
        queued: Arc::default(),
    };
    let span = info_span!("link", peer = %peer, %addr);
    let writing = write_loop(writer, rx, link.queued.clone(), closed.clone());
    core.tracker.spawn(writing.instrument(span.clone()));
    core.tracker.spawn(read_loop(core.clone(), peer, peer_key, reader, link.clone()).instrument(span));
    link
}

async fn write_loop(
    writer: Arc<tokio::sync::Mutex<Writer>>,
    mut rx: mpsc::Receiver<Outgoing>,
    queued: Arc<AtomicUsize>,
    closed: CancellationToken,
) {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            _ = closed.cancelled() => break,
            out = rx.recv() => match out { Some(o) => o, None => break },
        };
        // Whatever else is already waiting leaves in the same write, chat before file chunks.
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut result = Ok(());
        let mut writer = writer.lock().await;
        for msg in batch.iter().filter_map(|out| out.msg.as_ref()) {
            if let Err(e) = writer.feed_msg(msg).await {
                result = Err(e.to_string());
                break;
            }
        }
        if result.is_ok() {
            result = writer.flush().await.map_err(|e| e.to_string());
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        drop(writer);
        let failed = result.is_err();
        for out in batch.drain(..) {
            if let Some(written) = out.written {
                let _ = written.send(result.clone());
            }
        }
        if failed {
            break;
        }
    }
    closed.cancel();
    let _ = writer.lock().await.close().await;
}

/// Stores a received text and shows it (once), then answers with the acknowledgement. Only what is
/// safely stored is acknowledged: if the disk refuses, the sender keeps the message and retries.
pub(crate) async fn store_text(
    core: &Core,
    peer: &Number,
    id: MessageId,
    sent_at_ms: u64,
    text: String,
    group: Option<GroupId>,
) -> Option<PeerMessage> {
    match core.store.store_incoming(peer, id, &text, sent_at_ms, group).await {
        Ok(true) => {
            let event = Event::Message { id, from: peer.clone(), text, sent_at_ms, group };
            core.events.send(event).await.ok()?;
            Some(PeerMessage::Ack { id })
        }
        Ok(false) => {
            debug!("{peer} resent {id}; already stored");
            Some(PeerMessage::Ack { id })
        }
        Err(e) => {
            error!("cannot store message {id} from {peer}, not acknowledging it: {e}");
            None
        }
    }
}

/// What one frame on a link holds.
enum Incoming {
    Message(PeerMessage),
    /// File bytes, left where they are in the frame.
    Chunk(ChunkView),
    /// A message of a kind from a newer protocol version.
    Skipped,
}

fn decode_frame(frame: &[u8]) -> Result<Incoming, DecodeError> {
    if let Some(chunk) = view_chunk(frame) {
        return chunk.map(Incoming::Chunk);
    }
    Ok(decode_or_skip(frame)?.map_or(Incoming::Skipped, Incoming::Message))
}

async fn read_loop(core: Arc<Core>, peer: Number, peer_key: PublicKey, mut reader: Reader, link: LinkHandle) {
    let store = &core.store;
    // Reads take in more than the frame at hand only while a file's chunks are coming.
    let mut bulk = false;
    // Frames are decrypted into this buffer; a file chunk takes it along to the disk writer and
    // leaves a spent one in its place.
    let mut frame = Vec::new();
    loop {
        let got = tokio::select! {
            _ = link.closed.cancelled() => break,
            m = tokio::time::timeout(core.config.timeouts.link_idle, reader.recv_into(&mut frame)) => m,
        };
        let n = match got {
            Err(_) => break,
            Ok(Ok(None)) => {
                debug!("{peer} closed the link");
                break;
            }
            Ok(Err(e)) => {
                warn!("dropping link with {peer}: {e}");
                break;
            }
            Ok(Ok(Some(n))) => n,
        };
        let incoming = decode_frame(&frame[..n]);
        let chunk = matches!(incoming, Ok(Incoming::Chunk(_)));
        if chunk != bulk {
            reader.set_read_ahead(if chunk { READ_AHEAD } else { 0 });
            bulk = chunk;
        }
        let reply = match incoming {
            Err(e) => {
                warn!("dropping link with {peer}: {e}");
                break;
            }
            Ok(Incoming::Skipped) => None,
            Ok(Incoming::Chunk(chunk)) => crate::transfer::route_chunk(&peer, &link, chunk, &mut frame),
            Ok(Incoming::Message(PeerMessage::Text { id, sent_at_ms, text })) => {
                if text.len() > MAX_TEXT_LEN {
                    warn!("dropping link with {peer}: message of {} bytes", text.len());
                    break;
                }
                match store_text(&core, &peer, id, sent_at_ms, text, None).await {
                    Some(reply) => Some(reply),
                    None if core.events.is_closed() => break,
                    None => None,
                }
            }
            Ok(Incoming::Message(PeerMessage::Ack { id })) => {
                match store.advance_outgoing(&peer, id, MessageState::Delivered).await {
                    Ok(true) => {
                        let _ = core.events.send(Event::Delivered { id, to: peer.clone() }).await;
                    }
                    Ok(false) => {
                        if !store.receipt_delivered(&peer, id).await.unwrap_or(false) {
                            debug!("{peer} acknowledged {id}, which we did not send it");
                        }
                    }
                    Err(e) => error!("cannot record receipt of {id}: {e}"),
                }
                None
            }
            Ok(Incoming::Message(PeerMessage::Read { id })) => {
                match store.advance_outgoing(&peer, id, MessageState::Read).await {
                    Ok(true) => {
                        let _ = core.events.send(Event::Read { id, by: peer.clone() }).await;
                        Some(PeerMessage::Ack { id })
                    }
                    Ok(false) => Some(PeerMessage::Ack { id }),
                    Err(e) => {
                        error!("cannot record read receipt of {id}: {e}");
                        None
                    }
                }
            }
            Ok(Incoming::Message(PeerMessage::GroupText { group, id, sent_at_ms, text })) => {
                if text.len() > MAX_TEXT_LEN {
                    warn!("dropping link with {peer}: message of {} bytes", text.len());
                    break;
                }
                crate::groups::on_text(&core, &peer, group, id, sent_at_ms, text).await
            }
            Ok(Incoming::Message(PeerMessage::GroupUpdate { id, update })) => {
                crate::groups::on_update(&core, &peer, &peer_key, update)
                    .await
                    .then_some(PeerMessage::Ack { id })
            }
            Ok(Incoming::Message(PeerMessage::FileOffer { id, name, size, media_type, blake3 })) => {
                let offer = crate::transfer::Offer { id, name, size, media_type, blake3 };
                crate::transfer::on_offer(&core, &peer, &link, offer).await
            }
            Ok(Incoming::Message(
                msg @ (PeerMessage::FileAccept { .. }
                | PeerMessage::FileRefuse { .. }
                | PeerMessage::FileProgress { .. }
                | PeerMessage::FileReceived { .. }
                | PeerMessage::FileFailed { .. }
                | PeerMessage::FileAbort { .. }),
            )) => crate::transfer::route(&peer, &link, msg),
            Ok(Incoming::Message(other)) => {
                debug!("ignoring {other:?} from {peer}");
                None
            }
        };
        if let Some(reply) = reply {
            link.reply(reply).await;
        }
        // A link with no transfer running keeps no frame-sized buffer.
        if !bulk
            && frame.len() > IDLE_FRAME_BUFFER
            && link.routes.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
        {
            frame = Vec::new();
        }
    }
    link.closed.cancel();
    // Transfers waiting on this link learn at once that it is gone, instead of after a stall timeout.
    link.routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    // Whatever this link left unconfirmed goes out again on the next one.
    crate::outbox::kick(&core, &peer);
}
