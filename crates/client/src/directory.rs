//! The client's session with the directory server.
//!
//! [`connect`] dials, runs the initiator side of the handshake (pinning the server's key on first use
//! and refusing a changed one), proves our identity and registers. A task then owns the session: it
//! sends the heartbeats, matches answers to requests by id, and reports when the session is lost.
//! Callers talk to it through a cloneable [`DirectoryHandle`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use whatsap2p_link::{Handshake, SessionReader, SessionWriter};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, Location, LookupIntent, ServerToClient};
use whatsap2p_proto::handshake::{Hello, Purpose, ServerHello};
use whatsap2p_proto::{IdentityProof, Number, PublicKey, PROTOCOL_VERSION};

use crate::client::{Event, Timeouts};
use crate::profile::Identity;
use crate::store::Store;
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

enum Request {
    Lookup { number: Number, intent: LookupIntent, reply: oneshot::Sender<Result<LookupAnswer, ClientError>> },
    Logout { done: oneshot::Sender<()> },
}

/// Cheap handle to the session task.
#[derive(Clone)]
pub struct DirectoryHandle {
    tx: mpsc::Sender<Request>,
    request_timeout: Duration,
}

impl DirectoryHandle {
    /// Asks where `number` is and which key owns it.
    pub async fn lookup(&self, number: &Number, intent: LookupIntent) -> Result<LookupAnswer, ClientError> {
        let (reply, rx) = oneshot::channel();
        let req = Request::Lookup { number: number.clone(), intent, reply };
        self.tx.send(req).await.map_err(|_| ClientError::NotConnected)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(ClientError::Timeout("directory lookup")),
            Ok(Err(_)) => Err(ClientError::NotConnected),
            Ok(Ok(answer)) => answer,
        }
    }

    /// Tells the server we leave, and waits (briefly) until it is written.
    pub async fn logout(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Logout { done }).await.is_ok() {
            let _ = tokio::time::timeout(self.request_timeout, rx).await;
        }
    }
}

/// A registered session, ready to be driven by [`run`].
pub struct Registered {
    /// The address the directory publishes for our listener.
    pub published: SocketAddr,
    /// The server's key (pinned).
    pub server_key: PublicKey,
    reader: SessionReader<TcpStream>,
    writer: SessionWriter<TcpStream>,
}

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
    let stream = tokio::time::timeout(timeouts.connect, TcpStream::connect(server))
        .await
        .map_err(|_| ClientError::Timeout("connecting to the directory"))?
        .map_err(ClientError::io(format!("connecting to {what}")))?;
    let _ = stream.set_nodelay(true);
    let handshake = async {
        let link_err = || ClientError::link(format!("handshake with {what}"));
        let mut hs = Handshake::initiator(stream, &identity.noise).map_err(link_err())?;
        let hello = Hello { version: PROTOCOL_VERSION, purpose: Purpose::Directory };
        hs.send(&whatsap2p_proto::encode(&hello).map_err(|e| link_err()(e.into()))?)
            .await
            .map_err(link_err())?;
        let payload = hs.recv().await.map_err(link_err())?;
        let server_hello: ServerHello = decode_struct(&payload).map_err(|e| link_err()(e.into()))?;
        if server_hello.version != PROTOCOL_VERSION {
            return Err(ClientError::Directory(format!(
                "server speaks protocol version {}",
                server_hello.version
            )));
        }
        let server_key = hs.remote_static().ok_or(ClientError::Directory("no server key".into()))?;
        check_server_pin(store, &server.to_string(), server_key).await?;
        let proof =
            IdentityProof::sign(&identity.signing, number.clone(), &hs.hash(), &identity.noise.public().0);
        hs.send(&whatsap2p_proto::encode(&proof).map_err(|e| link_err()(e.into()))?)
            .await
            .map_err(link_err())?;
        let (reader, writer) = hs.finish().map_err(link_err())?.split();
        Ok::<_, ClientError>((server_key, reader, writer))
    };
    let (server_key, mut reader, mut writer) = tokio::time::timeout(timeouts.handshake, handshake)
        .await
        .map_err(|_| ClientError::Timeout("directory handshake"))??;
    writer
        .send_msg(&ClientToServer::Register { listen })
        .await
        .map_err(ClientError::link(format!("registering with {what}")))?;
    let answer = tokio::time::timeout(timeouts.request, reader.recv_msg::<ServerToClient>())
        .await
        .map_err(|_| ClientError::Timeout("registration"))?
        .map_err(ClientError::link(format!("registering with {what}")))?;
    match answer {
        Some(ServerToClient::Registered { listen }) => {
            Ok(Registered { published: listen, server_key, reader, writer })
        }
        Some(ServerToClient::Refused { reason }) => Err(ClientError::Refused(reason)),
        Some(other) => Err(ClientError::Directory(format!("unexpected answer to registration: {other:?}"))),
        None => Err(ClientError::Directory("server closed the connection during registration".into())),
    }
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

/// Spawns the session task and returns its handle. When the session is lost, `events` gets
/// [`Event::DirectoryLost`].
pub fn spawn(
    session: Registered,
    timeouts: &Timeouts,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> DirectoryHandle {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let heartbeat = timeouts.heartbeat;
    tracker.spawn(async move {
        let reason = run(session, rx, heartbeat, cancel).await;
        if let Some(reason) = reason {
            warn!("directory session lost: {reason}");
            let _ = events.send(Event::DirectoryLost { reason }).await;
        }
    });
    DirectoryHandle { tx, request_timeout: timeouts.request }
}

type Pending = HashMap<u32, oneshot::Sender<Result<LookupAnswer, ClientError>>>;

/// Drives the session; returns why it was lost, or `None` after logout or shutdown.
async fn run(
    session: Registered,
    mut rx: mpsc::Receiver<Request>,
    heartbeat: Duration,
    cancel: CancellationToken,
) -> Option<String> {
    let Registered { mut reader, mut writer, .. } = session;
    let mut pending: Pending = HashMap::new();
    let mut next_req: u32 = 0;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let lost = loop {
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
                    pending.insert(next_req, reply);
                    if let Err(e) = writer.send_msg(&ClientToServer::Lookup { req: next_req, number, intent }).await {
                        break e.to_string();
                    }
                }
            },
            msg = reader.recv_msg::<ServerToClient>() => {
                last_heard = tokio::time::Instant::now();
                match msg {
                    Ok(Some(ServerToClient::LookupResult { req, number, key, online })) => {
                        if let Some(reply) = pending.remove(&req) {
                            let _ = reply.send(Ok(LookupAnswer { number, key, online }));
                        }
                    }
                    Ok(Some(ServerToClient::Error { req: Some(req), message })) => {
                        if let Some(reply) = pending.remove(&req) {
                            let _ = reply.send(Err(ClientError::Directory(message)));
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
    };
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(ClientError::NotConnected));
    }
    Some(lost)
}
