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
use crate::store::{MessageState, OutgoingText};
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
/// Returns whether messages still wait for an acknowledgement.
pub(crate) async fn flush(core: &Arc<Core>, peer: &Number) -> Result<bool, ClientError> {
    let courier = courier(core, peer);
    let mut written = courier.written.lock().await;
    let link = match peer::live_link(core, peer).await {
        Some(link) => link,
        None => {
            // Dial only when something is owed: a peer coming online with nothing for it costs no link.
            if !core.store.has_owed(peer).await? {
                return Ok(false);
            }
            peer::link_to(core, peer).await?
        }
    };
    write_owed(core, peer, &mut written, &link, None).await
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
    let new = OutgoingText { id, text: text.to_owned(), sent_at_ms: crate::clock::now_ms(), group: None };
    let link = if online { Some(peer::link_to(core, to).await) } else { None };
    let result = match link {
        // Queued, marked sent and read in one trip to the database.
        Some(Ok(link)) => match write_owed(core, to, &mut written, &link, Some(new.clone())).await {
            // The transaction rolled back, so the text is not stored: store it, or say it failed.
            Err(ClientError::Store(e)) => {
                tracing::warn!("writing to {to} failed in the database ({e}); queueing the message");
                core.store.queue_outgoing(to, new).await?;
                Err(ClientError::Store(e))
            }
            result => result,
        },
        Some(Err(e)) => {
            core.store.queue_outgoing(to, new).await?;
            Err(e)
        }
        None => {
            core.store.queue_outgoing(to, new).await?;
            drop(written);
            kick(core, to);
            return Ok(SendOutcome::Queued { reason: format!("{to} is offline") });
        }
    };
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

/// Writes everything unconfirmed for `peer` on `link` (after queueing `new`), oldest first. A
/// queued message becomes `sent` (and [`Event::Sent`] goes out, except for `new`, whose sender is
/// told directly) just before it is written, so `sent` always comes before the `delivered` its
/// write can bring back. Returns whether messages still wait for an acknowledgement.
async fn write_owed(
    core: &Arc<Core>,
    peer: &Number,
    written: &mut Written,
    link: &peer::LinkHandle,
    new: Option<OutgoingText>,
) -> Result<bool, ClientError> {
    if written.epoch != link.epoch {
        *written = Written { epoch: link.epoch, ..Default::default() };
    }
    let answered = new.as_ref().map(|m| m.id);
    let in_flight =
        written.texts.iter().filter(|(_, at)| at.elapsed() < ACK_TIMEOUT).map(|(id, _)| *id).collect();
    let owed = core.store.take_owed(peer, new, in_flight).await?;
    // Forget what was confirmed meanwhile, so a long-lived link does not remember every message.
    written.texts.retain(|id, _| owed.in_flight.contains(id));
    written.receipts.retain(|id| owed.receipts.contains(id));
    for (id, group) in owed.newly_sent.into_iter().filter(|(id, _)| answered != Some(*id)) {
        let _ = core.events.send(Event::Sent { id, to: peer.clone(), group }).await;
    }
    let lost = |reason: String| ClientError::Link {
        context: format!("sending to {peer}"),
        source: whatsap2p_link::LinkError::Io(std::io::Error::other(reason)),
    };
    for m in owed.texts {
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
        link.write(msg).await.map_err(lost)?;
        written.texts.insert(m.id, Instant::now());
    }
    for id in owed.receipts {
        if written.receipts.insert(id) {
            link.write(PeerMessage::Read { id }).await.map_err(lost)?;
        }
    }
    Ok(owed.awaiting)
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
