//! Driving one registered session with the directory: heartbeats, requests matched to their
//! answers by id, presence pushes, until the session ends.

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use whatsap2p_link::LinkError;
use whatsap2p_proto::directory::{ClientToServer, CloseCode, ServerToClient, MAX_WATCH_BATCH};
use whatsap2p_proto::nat::{Candidate, MAX_CANDIDATES};
use whatsap2p_proto::Number;

use super::register::Registered;
use super::{concrete, Introduction, LookupAnswer, Note, Reach, RelayOffer, Request};
use crate::ClientError;

type Writer = whatsap2p_link::SessionWriter<crate::transport::PeerStream>;

/// A request waiting for its answer, by kind.
enum Waiting {
    Lookup(oneshot::Sender<Result<LookupAnswer, ClientError>>),
    Introduce(oneshot::Sender<Result<Introduction, ClientError>>),
    Relay(oneshot::Sender<Result<RelayOffer, ClientError>>),
}

impl Waiting {
    fn fail(self, e: ClientError) {
        match self {
            Waiting::Lookup(r) => drop(r.send(Err(e))),
            Waiting::Introduce(r) => drop(r.send(Err(e))),
            Waiting::Relay(r) => drop(r.send(Err(e))),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Waiting::Lookup(r) => r.is_closed(),
            Waiting::Introduce(r) => r.is_closed(),
            Waiting::Relay(r) => r.is_closed(),
        }
    }
}

type Pending = HashMap<u32, Waiting>;

/// At most [`MAX_CANDIDATES`] of what a directory sends: it never sends more, and a broken one
/// cannot make us try more.
fn capped(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.truncate(MAX_CANDIDATES);
    candidates
}

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
    reach: &watch::Sender<Option<Reach>>,
    cancel: &CancellationToken,
) -> Ended {
    let server = session.target.addr;
    let v3 = session.version >= 3;
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
                        pending.insert(next_req, Waiting::Lookup(reply));
                        let lookup = ClientToServer::Lookup { req: next_req, number: number.into(), intent };
                        if let Err(e) = writer.send_msg(&lookup).await {
                            break Ended::Lost(e.to_string());
                        }
                    }
                    // Version 3 requests: never on an older session (the handle checks `reach`
                    // first; a request queued across a reconnection is refused here).
                    Some(other @ (Request::Introduce { .. } | Request::Relay { .. } | Request::Announce { .. })) if !v3 => {
                        other.refuse(watched);
                    }
                    Some(Request::Introduce { number, reply }) => {
                        next_req = next_req.wrapping_add(1);
                        pending.insert(next_req, Waiting::Introduce(reply));
                        let ask = ClientToServer::Introduce { req: next_req, number: number.into() };
                        if let Err(e) = writer.send_msg(&ask).await {
                            break Ended::Lost(e.to_string());
                        }
                    }
                    Some(Request::Relay { number, reason, reply }) => {
                        next_req = next_req.wrapping_add(1);
                        pending.insert(next_req, Waiting::Relay(reply));
                        let ask = ClientToServer::RelayRequest { req: next_req, number: number.into(), reason };
                        if let Err(e) = writer.send_msg(&ask).await {
                            break Ended::Lost(e.to_string());
                        }
                    }
                    Some(Request::Announce { candidates, nat }) => {
                        if let Err(e) = writer.send_msg(&ClientToServer::Announce { candidates, nat }).await {
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
                            if let Some(Waiting::Lookup(reply)) = pending.remove(&req) {
                                let _ = reply.send(Ok(LookupAnswer { number, key, online }));
                            }
                        }
                        Ok(Some(ServerToClient::Introduction { req, candidates, nat, .. })) if v3 => {
                            if let Some(Waiting::Introduce(reply)) = pending.remove(&req) {
                                let _ = reply.send(Ok(Introduction { candidates: capped(candidates), nat }));
                            }
                        }
                        Ok(Some(ServerToClient::RelayOffer { req: Some(req), relay, ticket, reason, .. })) if v3 => {
                            if let Some(Waiting::Relay(reply)) = pending.remove(&req) {
                                let _ = reply.send(Ok(RelayOffer { relay: concrete(relay, server), ticket, reason }));
                            }
                        }
                        Ok(Some(ServerToClient::RelayOffer { req: None, number, relay, ticket, reason })) if v3 => {
                            let offer = RelayOffer { relay: concrete(relay, server), ticket, reason };
                            let _ = notes.send(Note::RelayOffered { from: number, offer }).await;
                        }
                        Ok(Some(ServerToClient::Introduced { from, candidates, nat })) if v3 => {
                            let intro = Introduction { candidates: capped(candidates), nat };
                            let _ = notes.send(Note::Introduced { from, intro }).await;
                        }
                        Ok(Some(ServerToClient::Reachability { token, udp_port, relay })) if v3 => {
                            reach.send_replace(Some(Reach::new(server, token, udp_port, relay)));
                        }
                        Ok(Some(ServerToClient::Presence { number, online, .. })) => {
                            let _ = notes.send(Note::Presence { number, online }).await;
                        }
                        Ok(Some(ServerToClient::Error { req: Some(req), message })) => {
                            if let Some(waiting) = pending.remove(&req) {
                                waiting.fail(ClientError::Directory(message));
                            }
                        }
                        Ok(Some(ServerToClient::Limited { req: Some(req), limit, retry_after_ms })) => {
                            if let Some(waiting) = pending.remove(&req) {
                                waiting.fail(ClientError::limited(limit, retry_after_ms));
                            }
                        }
                        // A watch past a limit: the numbers before it are watched, the rest are not.
                        Ok(Some(ServerToClient::Limited { req: None, limit, retry_after_ms })) => {
                            warn!("{}", ClientError::limited(limit, retry_after_ms));
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
    for (_, waiting) in pending.drain() {
        waiting.fail(ClientError::NotConnected);
    }
    ended
}
