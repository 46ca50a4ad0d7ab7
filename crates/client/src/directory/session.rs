//! Driving one registered session with the directory: heartbeats, requests matched to their
//! answers by id, presence pushes, until the session ends.

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use whatsap2p_link::LinkError;
use whatsap2p_proto::directory::{ClientToServer, CloseCode, ServerToClient, MAX_WATCH_BATCH};
use whatsap2p_proto::Number;

use super::register::Registered;
use super::{LookupAnswer, Note, Request};
use crate::ClientError;

type Writer = whatsap2p_link::SessionWriter<crate::transport::PeerStream>;

type Pending = HashMap<u32, oneshot::Sender<Result<LookupAnswer, ClientError>>>;

/// How a session ended.
pub(super) enum Ended {
    /// Logout or shutdown: nothing more to do.
    Stop,
    /// The directory ended it with a code to act on (its words beside, for the log).
    Closed(CloseCode, String),
    /// Anything else: the connection failed, went silent, or was closed.
    Lost(String),
}

pub(super) async fn send_watch(writer: &mut Writer, numbers: Vec<Number>) -> Result<(), LinkError> {
    for chunk in numbers.chunks(MAX_WATCH_BATCH) {
        writer.send_msg(&ClientToServer::Watch { numbers: chunk.iter().map(Into::into).collect() }).await?;
    }
    Ok(())
}

/// Drives one session until it ends.
pub(super) async fn run(
    session: Registered,
    rx: &mut mpsc::Receiver<Request>,
    watched: &mut HashSet<Number>,
    notes: &mpsc::Sender<Note>,
    cancel: &CancellationToken,
) -> Ended {
    let Registered { mut reader, mut writer, heartbeat, .. } = session;
    let mut pending: Pending = HashMap::new();
    let mut next_req: u32 = 0;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let ended = 'session: {
        if !watched.is_empty() {
            if let Err(e) = send_watch(&mut writer, watched.iter().cloned().collect()).await {
                break 'session Ended::Lost(e.to_string());
            }
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = writer.close().await;
                    return Ended::Stop;
                }
                req = rx.recv() => match req {
                    None => return Ended::Stop,
                    Some(Request::Logout { done }) => {
                        let _ = writer.send_msg(&ClientToServer::Logout).await;
                        let _ = writer.close().await;
                        let _ = done.send(());
                        return Ended::Stop;
                    }
                    Some(Request::Lookup { number, intent, reply }) => {
                        next_req = next_req.wrapping_add(1);
                        pending.insert(next_req, reply);
                        let lookup = ClientToServer::Lookup { req: next_req, number: number.into(), intent };
                        if let Err(e) = writer.send_msg(&lookup).await {
                            break Ended::Lost(e.to_string());
                        }
                    }
                    Some(Request::Watch { numbers }) => {
                        let new: Vec<Number> = numbers.into_iter().filter(|n| watched.insert(n.clone())).collect();
                        if !new.is_empty() {
                            if let Err(e) = send_watch(&mut writer, new).await {
                                break Ended::Lost(e.to_string());
                            }
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
                        Ok(Some(ServerToClient::Presence { number, online, .. })) => {
                            let _ = notes.send(Note::Presence { number, online }).await;
                        }
                        Ok(Some(ServerToClient::Error { req: Some(req), message })) => {
                            if let Some(reply) = pending.remove(&req) {
                                let _ = reply.send(Err(ClientError::Directory(message)));
                            }
                        }
                        Ok(Some(ServerToClient::Closed { code, reason })) => break Ended::Closed(code, reason),
                        Ok(Some(ServerToClient::Refused { reason })) => break Ended::Lost(format!("refused: {reason}")),
                        Ok(Some(other)) => debug!("directory says {other:?}"),
                        Ok(None) => break Ended::Lost("the server closed the connection".to_owned()),
                        Err(e) => break Ended::Lost(e.to_string()),
                    }
                }
                _ = ticker.tick() => {
                    // Three silent heartbeats: the server or the path is gone even if TCP has not noticed.
                    if last_heard.elapsed() > heartbeat * 3 {
                        break Ended::Lost(format!("no answer from the server for {:?}", last_heard.elapsed()));
                    }
                    pending.retain(|_, reply| !reply.is_closed());
                    if let Err(e) = writer.send_msg(&ClientToServer::Heartbeat).await {
                        break Ended::Lost(e.to_string());
                    }
                }
            }
        }
    };
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(ClientError::NotConnected));
    }
    ended
}
