//! The outbox: messages (and read receipts) wait in the profile database until the recipient
//! confirms them, and a courier per peer delivers them, oldest first, whenever it can.
//!
//! A courier wakes when something is queued for its peer, when the directory says the peer came
//! online, when a link to the peer ends with messages unconfirmed, and on a retry timer with backoff.
//! Only one delivery per peer runs at a time (the courier's lock), which keeps messages in order; the
//! receiver drops a message it already stored, so a resend after a lost acknowledgement is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use tokio::sync::Notify;
use tracing::{debug, info, info_span, Instrument};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{MessageId, Number};

use crate::client::{Core, Event, SendOutcome};
use crate::store::MessageState;
use crate::{peer, ClientError};

/// First pause before retrying a failed delivery; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest pause between retries while the peer seems online.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Safety net while idle or waiting for a peer to come online (a missed presence push).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// A text written but not acknowledged for this long is written again.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What was written on the current link, so one link never carries the same thing twice.
#[derive(Default)]
struct Written {
    epoch: u64,
    /// When each text was written on this link: one not acknowledged within [`ACK_TIMEOUT`] is
    /// written again (the receiver may have failed to store it; it drops duplicates).
    texts: HashMap<MessageId, Instant>,
    receipts: HashSet<MessageId>,
}

struct Courier {
    wake: Notify,
    /// File transfers waiting to retry listen here (all of them wake at once).
    files: Arc<Notify>,
    written: tokio::sync::Mutex<Written>,
}

/// The couriers, one per peer that ever had something to deliver.
#[derive(Default)]
pub(crate) struct Outbox {
    couriers: Mutex<HashMap<Number, Arc<Courier>>>,
}

fn courier(core: &Arc<Core>, peer: &Number) -> Arc<Courier> {
    let mut map = core.outbox.couriers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(peer) {
        return c.clone();
    }
    let c = Arc::new(Courier {
        wake: Notify::new(),
        files: Arc::new(Notify::new()),
        written: Default::default(),
    });
    map.insert(peer.clone(), c.clone());
    let span = info_span!("courier", peer = %peer);
    core.tracker.spawn(run(core.clone(), peer.clone(), c.clone()).instrument(span));
    c
}

/// Wakes `peer`'s courier (creating it): there may be something to deliver.
pub(crate) fn kick(core: &Arc<Core>, peer: &Number) {
    if core.cancel.is_cancelled() {
        return;
    }
    let c = courier(core, peer);
    c.wake.notify_one();
    c.files.notify_waiters();
}

/// What file transfers to `peer` wait on between attempts: woken by [`kick`].
pub(crate) fn file_wake(core: &Arc<Core>, peer: &Number) -> Arc<Notify> {
    courier(core, peer).files.clone()
}

/// Writes everything unconfirmed for `peer` on a live link (dialing one if needed), oldest first.
/// Returns the ids of messages that went from queued to sent.
pub(crate) async fn flush(core: &Arc<Core>, peer: &Number) -> Result<bool, ClientError> {
    let courier = courier(core, peer);
    let mut written = courier.written.lock().await;
    flush_locked(core, peer, &mut written, None).await
}

/// Queues a text for `to` and, if `to` is online, writes it at once. The courier's lock is held from
/// queueing to writing, so the courier cannot take the message in between and answer for it.
pub(crate) async fn send_now(
    core: &Arc<Core>,
    to: &Number,
    id: MessageId,
    text: &str,
    online: bool,
) -> Result<SendOutcome, ClientError> {
    let courier = courier(core, to);
    let mut written = courier.written.lock().await;
    core.store.queue_outgoing(to, id, text, crate::client::now_ms(), None).await?;
    if !online {
        drop(written);
        kick(core, to);
        return Ok(SendOutcome::Queued { reason: format!("{to} is offline") });
    }
    let result = flush_locked(core, to, &mut written, Some(id)).await;
    drop(written);
    match result {
        Ok(_) => Ok(SendOutcome::Sent),
        Err(e) if is_permanent(&e) => {
            fail_all(core, to, &e.to_string()).await;
            Err(e)
        }
        Err(e) => {
            kick(core, to);
            Ok(SendOutcome::Queued { reason: e.to_string() })
        }
    }
}

/// Writes everything unconfirmed for `peer`, oldest first. A queued message becomes `sent` (and
/// [`Event::Sent`] goes out, except for `answered`, whose sender is told directly) just before it is
/// written, so `sent` always comes before the `delivered` its write can bring back.
async fn flush_locked(
    core: &Arc<Core>,
    peer: &Number,
    written: &mut Written,
    answered: Option<MessageId>,
) -> Result<bool, ClientError> {
    let (texts, receipts) = core.store.owed(peer).await?;
    if texts.is_empty() && receipts.is_empty() {
        return Ok(false);
    }
    let awaiting = !texts.is_empty();
    let link = peer::link_to(core, peer).await?;
    if written.epoch != link.epoch {
        *written = Written { epoch: link.epoch, ..Default::default() };
    }
    let lost = |reason: String| ClientError::Link {
        context: format!("sending to {peer}"),
        source: whatsap2p_link::LinkError::Io(std::io::Error::other(reason)),
    };
    let mut batch = Vec::new();
    for m in texts {
        if written.texts.get(&m.id).is_some_and(|at| at.elapsed() < ACK_TIMEOUT) {
            continue;
        }
        let msg = match (m.group, m.update) {
            (_, Some(body)) => match postcard::from_bytes(&body) {
                Ok(update) => PeerMessage::GroupUpdate { id: m.id, update },
                Err(e) => {
                    tracing::error!("dropping undecodable group change {} from the outbox: {e}", m.id);
                    core.store.advance_outgoing(peer, m.id, MessageState::Failed).await?;
                    continue;
                }
            },
            (Some(group), None) => {
                PeerMessage::GroupText { group, id: m.id, sent_at_ms: m.sent_at_ms, text: m.text }
            }
            (None, None) => PeerMessage::Text { id: m.id, sent_at_ms: m.sent_at_ms, text: m.text },
        };
        batch.push((m.id, m.group, msg));
    }
    // Mark them sent (one transaction) before writing, so `sent` precedes any `delivered`.
    let moved: HashSet<MessageId> =
        core.store.mark_sent(peer, batch.iter().map(|(id, _, _)| *id).collect()).await?.into_iter().collect();
    for (id, group, _) in batch.iter().filter(|(id, _, _)| moved.contains(id) && answered != Some(*id)) {
        let _ = core.events.send(Event::Sent { id: *id, to: peer.clone(), group: *group }).await;
    }
    for (id, _, msg) in batch {
        link.write(msg).await.map_err(lost)?;
        written.texts.insert(id, Instant::now());
    }
    for id in receipts {
        if written.receipts.insert(id) {
            link.write(PeerMessage::Read { id }).await.map_err(lost)?;
        }
    }
    Ok(awaiting)
}

/// Errors after which retrying cannot help until a person acts.
fn is_permanent(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::KeyChanged { .. } | ClientError::PeerIdentity { .. } | ClientError::UnknownNumber(_)
    )
}

/// Gives up on every unconfirmed message to `peer`, telling the user why.
pub(crate) async fn fail_all(core: &Arc<Core>, peer: &Number, reason: &str) {
    let Ok(texts) = core.store.unconfirmed(peer).await else { return };
    for m in texts {
        if core.store.advance_outgoing(peer, m.id, MessageState::Failed).await.unwrap_or(false) {
            let event = Event::Failed { id: m.id, to: peer.clone(), reason: reason.to_owned() };
            let _ = core.events.send(event).await;
        }
    }
}

async fn run(core: Arc<Core>, peer: Number, courier: Arc<Courier>) {
    let mut retry = IDLE_RECHECK;
    let mut backoff = RETRY_MIN;
    loop {
        tokio::select! {
            _ = core.cancel.cancelled() => return,
            _ = courier.wake.notified() => {}
            _ = tokio::time::sleep(retry) => {}
        }
        if core.known_offline(&peer) {
            retry = IDLE_RECHECK;
            continue;
        }
        match flush(&core, &peer).await {
            Ok(awaiting) => {
                backoff = RETRY_MIN;
                // Acknowledgements still due: look again when the first may be overdue.
                retry = if awaiting { ACK_TIMEOUT } else { IDLE_RECHECK };
            }
            Err(e) if is_permanent(&e) => {
                info!("giving up on messages to {peer}: {e}");
                fail_all(&core, &peer, &e.to_string()).await;
                retry = IDLE_RECHECK;
            }
            Err(e) => {
                debug!("delivery to {peer} failed, retrying in {backoff:?}: {e}");
                retry = backoff;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}
