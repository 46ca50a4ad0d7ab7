//! One client's directory session: handshake, identity check, then requests until logout, silence
//! or disconnect. Every exit path takes the user offline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::HashSet;

use futures::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};
use whatsap2p_link::{Handshake, LinkError, SessionReader, SessionWriter};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{
    ClientToServer, Location, LookupIntent, ServerToClient, MAX_REASON_LEN, MAX_WATCHED, MAX_WATCH_BATCH,
};
use whatsap2p_proto::handshake::{Hello, Purpose, ServerHello};
use whatsap2p_proto::{IdentityProof, Number, PublicKey, PROTOCOL_VERSION};

use crate::identities::Binding;
use crate::presence::{PresenceEntry, SessionId};
use crate::watchers::PUSH_QUEUE;
use crate::Directory;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Most answers buffered before a write, when requests arrive pipelined.
const MAX_UNFLUSHED: usize = 64;

type Reader = SessionReader<TcpStream>;
type Writer = SessionWriter<TcpStream>;

/// Why a session ended, for the log line.
enum End {
    Logout,
    Silent,
    Closed,
    Shutdown,
    Failed(String),
}

/// Serves one connection to the end. Never panics on what the client sends.
pub async fn serve(stream: TcpStream, addr: SocketAddr, dir: &Directory, cancel: CancellationToken) {
    let span = info_span!("conn", addr = %addr);
    async move {
        info!("Got a new connection from {}/{}", addr.ip(), addr.port());
        let handshake = tokio::time::timeout(dir.config.handshake_timeout, handshake(stream, dir));
        let (proof, reader, writer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = handshake => match r {
                Err(_) => {
                    warn!("Dropping {}/{}: handshake not finished within {:?}", addr.ip(), addr.port(), dir.config.handshake_timeout);
                    return;
                }
                Ok(Err(e)) => {
                    warn!("Dropping {}/{}: handshake failed: {e}", addr.ip(), addr.port());
                    return;
                }
                Ok(Ok(ok)) => ok,
            },
        };
        let number = proof.number.clone();
        let session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("user", number = %number);
        run_session(number, proof.identity, session, addr, reader, writer, dir, cancel)
            .instrument(span)
            .await;
    }
    .instrument(span)
    .await
}

/// Responder side of `XX` for a directory session: returns the client's verified proof.
async fn handshake(stream: TcpStream, dir: &Directory) -> Result<(IdentityProof, Reader, Writer), LinkError> {
    let mut hs = Handshake::responder(stream, &dir.key)?;
    let hello: Hello = decode_struct(&hs.recv().await?)?;
    if hello.version != PROTOCOL_VERSION || hello.purpose != Purpose::Directory {
        return Err(LinkError::Decode(whatsap2p_proto::DecodeError::Malformed(format!(
            "unsupported hello: version {} purpose {:?}",
            hello.version, hello.purpose
        ))));
    }
    let hello = ServerHello {
        version: PROTOCOL_VERSION,
        heartbeat_timeout_ms: dir.config.heartbeat_timeout.as_millis() as u64,
    };
    hs.send(&whatsap2p_proto::encode(&hello)?).await?;
    let hash = hs.hash();
    let proof: IdentityProof = decode_struct(&hs.recv().await?)?;
    let remote = hs.remote_static().ok_or(LinkError::ClosedDuringHandshake)?;
    proof.verify(&hash, &remote.0).map_err(|e| {
        LinkError::Decode(whatsap2p_proto::DecodeError::Malformed(format!(
            "identity proof for {}: {e}",
            proof.number
        )))
    })?;
    let (reader, writer) = hs.finish()?.split();
    Ok((proof, reader, writer))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn short(reason: String) -> String {
    reason.chars().take(MAX_REASON_LEN).collect()
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    number: Number,
    key: PublicKey,
    session: SessionId,
    addr: SocketAddr,
    mut reader: Reader,
    mut writer: Writer,
    dir: &Directory,
    cancel: CancellationToken,
) {
    match dir.identities.claim(&number, &key).await {
        Ok(Binding::New) => info!("Bound {number} to key {key}"),
        Ok(Binding::Matches) => {}
        Ok(Binding::Conflict { owner }) => {
            warn!(
                "Refused {number} from {}/{}: number is bound to key {owner}, not {key}",
                addr.ip(),
                addr.port()
            );
            let reason = format!("number {number} is registered to another key");
            let _ = writer.send_msg(&ServerToClient::Refused { reason }).await;
            let _ = writer.close().await;
            return;
        }
        Err(e) => {
            warn!("Refused {number}: {e}");
            let _ = writer.send_msg(&ServerToClient::Refused { reason: "server error".into() }).await;
            return;
        }
    }
    info!("Connected: {number}");
    let mut registered = false;
    let (push_tx, mut push_rx) = mpsc::channel(PUSH_QUEUE);
    let mut watched: HashSet<Number> = HashSet::new();
    // A request already read while answering the previous one (see the end of the loop).
    let mut ready: Option<Result<Option<ClientToServer>, LinkError>> = None;
    let mut unflushed = 0usize;
    let mut last_frame = tokio::time::Instant::now();
    let end = 'session: loop {
        let msg = if let Some(m) = ready.take() {
            Ok(m)
        } else {
            tokio::select! {
            _ = cancel.cancelled() => break End::Shutdown,
            Some(push) = push_rx.recv() => {
                if let Err(e) = writer.send_msg(&push).await {
                    break End::Failed(e.to_string());
                }
                continue;
            }
            // The deadline counts from the client's last frame: pushes we send do not keep it alive.
            r = tokio::time::timeout_at(last_frame + dir.config.heartbeat_timeout, reader.recv_msg::<ClientToServer>()) => r,
            }
        };
        let msg = match msg {
            Err(_) => break End::Silent,
            Ok(Ok(None)) => break End::Closed,
            Ok(Err(e)) => break End::Failed(e.to_string()),
            Ok(Ok(Some(m))) => m,
        };
        last_frame = tokio::time::Instant::now();
        let reply = match msg {
            ClientToServer::Register { listen } => {
                let listen = if listen.ip().is_unspecified() {
                    SocketAddr::new(addr.ip(), listen.port())
                } else {
                    listen
                };
                let location = Location { addr: listen, since_unix_ms: now_ms() };
                dir.presence.set_online(&number, PresenceEntry { key, location, session }).await;
                dir.watchers.notify(
                    &number,
                    &ServerToClient::Presence {
                        number: number.clone(),
                        key: Some(key),
                        online: Some(location),
                    },
                );
                registered = true;
                info!("Registered {number} listening at {}/{}", listen.ip(), listen.port());
                Some(ServerToClient::Registered { listen })
            }
            ClientToServer::Lookup { req, number: wanted, intent } => {
                info!("Request from {} {}", addr.ip(), addr.port());
                match intent {
                    LookupIntent::Address => info!("Retrieving Address of {wanted}"),
                    _ => info!("Pinging {wanted}"),
                }
                let online = dir.presence.get(&wanted).await;
                let key = match &online {
                    Some(e) => Ok(Some(e.key)),
                    None => dir.identities.key_of(&wanted).await,
                };
                Some(match key {
                    Ok(key) => ServerToClient::LookupResult {
                        req,
                        number: wanted,
                        key,
                        online: online.map(|e| e.location),
                    },
                    Err(e) => ServerToClient::Error { req: Some(req), message: short(e.to_string()) },
                })
            }
            ClientToServer::Watch { numbers } => {
                if numbers.len() > MAX_WATCH_BATCH || watched.len() + numbers.len() > MAX_WATCHED {
                    Some(ServerToClient::Error {
                        req: None,
                        message: format!("watch at most {MAX_WATCHED} numbers, {MAX_WATCH_BATCH} at a time"),
                    })
                } else {
                    info!("{number} watches {} numbers", numbers.len());
                    for n in numbers {
                        dir.watchers.watch(&n, session, &push_tx);
                        let online = dir.presence.get(&n).await;
                        let key = match &online {
                            Some(e) => Some(e.key),
                            None => dir.identities.key_of(&n).await.ok().flatten(),
                        };
                        let status = ServerToClient::Presence {
                            number: n.clone(),
                            key,
                            online: online.map(|e| e.location),
                        };
                        watched.insert(n);
                        if let Err(e) = writer.send_msg(&status).await {
                            break 'session End::Failed(e.to_string());
                        }
                    }
                    None
                }
            }
            ClientToServer::Heartbeat => Some(ServerToClient::HeartbeatAck),
            ClientToServer::Logout => break End::Logout,
            _ => Some(ServerToClient::Error { req: None, message: "unsupported request".into() }),
        };
        if let Some(reply) = reply {
            if let Err(e) = writer.feed_msg(&reply).await {
                break End::Failed(e.to_string());
            }
            unflushed += 1;
        }
        // Pipelined requests already here are answered in the same write; the read is cancel-safe,
        // so polling it once loses nothing when no request is waiting.
        if unflushed < MAX_UNFLUSHED {
            if let Some(next) = reader.recv_msg::<ClientToServer>().now_or_never() {
                ready = Some(next);
                continue;
            }
        }
        if unflushed > 0 {
            if let Err(e) = writer.flush().await {
                break End::Failed(e.to_string());
            }
            unflushed = 0;
        }
    };
    dir.watchers.unwatch(session, &watched);
    if registered && dir.presence.set_offline(&number, session).await {
        dir.watchers.notify(
            &number,
            &ServerToClient::Presence { number: number.clone(), key: Some(key), online: None },
        );
    }
    match end {
        End::Logout => info!("Disconnecting {number}"),
        End::Silent => warn!("Disconnecting {number}: no heartbeat for {:?}", dir.config.heartbeat_timeout),
        End::Closed => info!("Disconnecting {number}: connection closed"),
        End::Shutdown => info!("Disconnecting {number}: server shutting down"),
        End::Failed(e) => warn!("Disconnecting {number}: {e}"),
    }
    let _ = writer.close().await;
}
