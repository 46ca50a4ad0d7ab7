//! Direct links between clients.
//!
//! Dialing: look the number up, check the key the directory gives against the contact's pinned key,
//! connect, and require the responder to prove that key in the handshake. Accepting: require the
//! initiator's proof, then ask the directory whether that key owns the number it claims, and check
//! the pin. A link is kept and reused for later messages in both directions.
//!
//! Each link runs two tasks: a writer fed by a bounded queue, and a reader that shows messages,
//! acknowledges them and matches acknowledgements to what we sent. Reading and writing never wait
//! on each other.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use whatsap2p_link::{Handshake, LinkError, SessionReader, SessionWriter};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::LookupIntent;
use whatsap2p_proto::handshake::{Hello, Purpose};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{IdentityProof, MessageId, Number, PublicKey, MAX_TEXT_LEN, PROTOCOL_VERSION};

use crate::client::{Core, Event};
use crate::ClientError;

/// Frames waiting to be written on one link.
const LINK_QUEUE: usize = 64;
/// Most peer connections handled at once (handshaking or linked).
pub const MAX_PEER_CONNECTIONS: usize = 1024;
/// How many received ids a link remembers to drop duplicates.
const SEEN_IDS: usize = 4096;

type Reader = SessionReader<TcpStream>;
type Writer = SessionWriter<TcpStream>;

/// Something to write on a link; `written` learns whether it was.
pub(crate) struct Outgoing {
    msg: PeerMessage,
    written: Option<oneshot::Sender<Result<(), String>>>,
}

/// A live link to one peer. Clones share the link.
#[derive(Clone)]
pub(crate) struct LinkHandle {
    tx: mpsc::Sender<Outgoing>,
    /// Messages written but not yet acknowledged, shared with the reader that clears them.
    pending: Arc<Mutex<HashSet<MessageId>>>,
    closed: CancellationToken,
}

impl LinkHandle {
    fn is_alive(&self) -> bool {
        !self.closed.is_cancelled()
    }

    /// Writes a text message; returns once it is on the wire.
    async fn send_text(&self, id: MessageId, text: String, sent_at_ms: u64) -> Result<(), String> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        let (written, rx) = oneshot::channel();
        let out = Outgoing { msg: PeerMessage::Text { id, sent_at_ms, text }, written: Some(written) };
        let result = match self.tx.send(out).await {
            Err(_) => Err("link closed".to_owned()),
            Ok(()) => rx.await.unwrap_or_else(|_| Err("link closed".to_owned())),
        };
        if result.is_err() {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
        result
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

/// Sends a text to `to`, reusing a live link or dialing one. Returns when the text is written.
pub(crate) async fn send_text(
    core: &Arc<Core>,
    to: &Number,
    id: MessageId,
    text: String,
) -> Result<(), ClientError> {
    let sent_at_ms = crate::client::now_ms();
    // A cached link may have died since it was last used; then dial once more.
    for attempt in 0..2 {
        let link = link_to(core, to).await?;
        match link.send_text(id, text.clone(), sent_at_ms).await {
            Ok(()) => return Ok(()),
            Err(reason) if attempt == 0 => debug!("link to {to} failed ({reason}), redialing"),
            Err(reason) => {
                return Err(ClientError::Link {
                    context: format!("sending to {to}"),
                    source: LinkError::Io(std::io::Error::other(reason)),
                })
            }
        }
    }
    Err(ClientError::ShuttingDown)
}

async fn link_to(core: &Arc<Core>, to: &Number) -> Result<LinkHandle, ClientError> {
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
    Ok(spawn_link(core, to.clone(), addr, reader, writer))
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
                    Ok(Ok((number, reader, writer))) => {
                        info!("{number} linked from {addr}");
                        let link = spawn_link(&task_core, number.clone(), addr, reader, writer);
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
) -> Result<(Number, Reader, Writer), ClientError> {
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
    let answer = core.directory.lookup(&claimed, LookupIntent::Address).await?;
    if answer.key != Some(proof.identity) {
        return Err(refuse(format!(
            "its key {} is not the one the directory has for {claimed}",
            proof.identity
        )));
    }
    check_pin(core, &claimed, proof.identity).await?;
    let (reader, writer) = hs.finish().map_err(link_err())?.split();
    Ok((claimed, reader, writer))
}

fn spawn_link(
    core: &Arc<Core>,
    peer: Number,
    addr: SocketAddr,
    reader: Reader,
    writer: Writer,
) -> LinkHandle {
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let closed = core.cancel.child_token();
    let link = LinkHandle { tx, pending: Arc::default(), closed: closed.clone() };
    let span = info_span!("link", peer = %peer, %addr);
    core.tracker.spawn(write_loop(writer, rx, closed.clone()).instrument(span.clone()));
    core.tracker.spawn(read_loop(core.clone(), peer, reader, link.clone()).instrument(span));
    link
}

async fn write_loop(mut writer: Writer, mut rx: mpsc::Receiver<Outgoing>, closed: CancellationToken) {
    loop {
        let out = tokio::select! {
            _ = closed.cancelled() => break,
            out = rx.recv() => match out { Some(o) => o, None => break },
        };
        let result = writer.send_msg(&out.msg).await.map_err(|e| e.to_string());
        let failed = result.is_err();
        if let Some(written) = out.written {
            let _ = written.send(result);
        }
        if failed {
            break;
        }
    }
    closed.cancel();
    let _ = writer.close().await;
}

async fn read_loop(core: Arc<Core>, peer: Number, mut reader: Reader, link: LinkHandle) {
    let mut seen: HashSet<MessageId> = HashSet::new();
    let reason = loop {
        let msg = tokio::select! {
            _ = link.closed.cancelled() => break "link closed".to_owned(),
            m = tokio::time::timeout(core.config.timeouts.link_idle, reader.recv_msg::<PeerMessage>()) => m,
        };
        match msg {
            Err(_) => break "idle".to_owned(),
            Ok(Ok(None)) => break "peer closed the link".to_owned(),
            Ok(Err(e)) => {
                warn!("dropping link with {peer}: {e}");
                break e.to_string();
            }
            Ok(Ok(Some(PeerMessage::Text { id, sent_at_ms, text }))) => {
                if text.len() > MAX_TEXT_LEN {
                    warn!("dropping link with {peer}: message of {} bytes", text.len());
                    break "oversized message".to_owned();
                }
                if seen.len() >= SEEN_IDS {
                    seen.clear();
                }
                if seen.insert(id) {
                    let event = Event::Message { id, from: peer.clone(), text, sent_at_ms };
                    if core.events.send(event).await.is_err() {
                        break "client stopped".to_owned();
                    }
                }
                let _ = link.tx.send(Outgoing { msg: PeerMessage::Ack { id }, written: None }).await;
            }
            Ok(Ok(Some(PeerMessage::Ack { id }))) => {
                let known = link.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if known {
                    let _ = core.events.send(Event::Delivered { id, to: peer.clone() }).await;
                } else {
                    debug!("{peer} acknowledged unknown message {id}");
                }
            }
            Ok(Ok(Some(other))) => debug!("ignoring {other:?} from {peer}"),
        }
    };
    link.closed.cancel();
    let unconfirmed: Vec<MessageId> =
        link.pending.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
    for id in unconfirmed {
        let event = Event::Undelivered {
            id,
            to: peer.clone(),
            reason: format!("no receipt before the link ended ({reason})"),
        };
        let _ = core.events.send(event).await;
    }
}
