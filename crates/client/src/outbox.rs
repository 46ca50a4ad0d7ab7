//! The outbox: messages (and read receipts) wait in the profile database until the recipient
//! confirms them, and a courier per peer delivers them, oldest first, whenever it can.
//!
//! A courier wakes when something is queued for its peer, when the directory says the peer came
//! online, when a link to the peer ends with messages unconfirmed, and on a retry timer with backoff.
//! Only one delivery per peer runs at a time (the courier's lock), which keeps messages in order; the
//! receiver drops a message it already stored, so a resend after a lost acknowledgement is harmless.
//! A courier (and its task) exists only while its peer is owed something: once everything is
//! confirmed it retires, and the next kick makes a new one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{MessageId, Number};

use crate::event::{Event, SendOutcome};
use crate::link::{LinkHandle, Links};
use crate::presence::PresenceCache;
use crate::store::{MessageState, OutgoingText, Owed, Store};
use crate::ClientError;

/// First pause before retrying a failed delivery; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest pause between retries while the peer seems online.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Safety net while waiting for a peer to come online (a missed presence push).
pub const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// A text written but not acknowledged for this long is written again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What was written on the current link, so one link never carries the same thing twice.
#[derive(Default)]
struct Written {
    epoch: u64,
    /// Set when the peer accepted our message request: what it held (and was written on this
    /// link) is to be written again at once, not after [`ACK_TIMEOUT`].
    forget: Arc<std::sync::atomic::AtomicBool>,
    /// When each text was written on this link: one not acknowledged within [`ACK_TIMEOUT`] is
    /// written again (the receiver may have failed to store it; it drops duplicates).
    texts: HashMap<MessageId, Instant>,
    receipts: HashSet<MessageId>,
}

impl Written {
    /// The texts written on `link` and not overdue (everything is forgotten on a new link).
    fn in_flight(&mut self, link: &LinkHandle) -> HashSet<MessageId> {
        if self.epoch != link.epoch() || self.forget.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let forget = self.forget.clone();
            *self = Written { epoch: link.epoch(), forget, ..Default::default() };
        }
        self.texts.iter().filter(|(_, at)| at.elapsed() < ACK_TIMEOUT).map(|(id, _)| *id).collect()
    }
}

/// One peer's courier: its task waits on `wake`, and its lock keeps deliveries in order.
struct Courier {
    wake: Notify,
    /// Kicked since the task last looked: it must not retire before looking again. Set and read
    /// under the couriers' map lock.
    kicked: std::sync::atomic::AtomicBool,
    written: Arc<tokio::sync::Mutex<Written>>,
    /// The `forget` flag of `written`, to be set without waiting for its lock.
    forget: Arc<std::sync::atomic::AtomicBool>,
}

/// What the outbox needs from the rest of the client.
pub(crate) struct OutboxParts {
    pub(crate) links: Links,
    pub(crate) store: Store,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) presence: PresenceCache,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

struct Inner {
    parts: OutboxParts,
    /// The couriers of peers owed something.
    couriers: Mutex<HashMap<Number, Arc<Courier>>>,
}

/// The outbox and its couriers. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Inner>);

/// Whether a delivery waits until each frame is on the wire, or leaves what the socket does not
/// take at once to the link's writer task (a fan-out, where one slow member must delay nobody).
#[derive(Clone, Copy)]
enum Wait {
    Written,
    Never,
}

/// How a courier starts: looking at once, or first after [`ACK_TIMEOUT`] (it was made to watch
/// over a text just written).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Now,
    Watching,
}

impl Outbox {
    pub(crate) fn new(parts: OutboxParts) -> Self {
        Self(Arc::new(Inner { parts, couriers: Mutex::default() }))
    }

    fn couriers(&self) -> std::sync::MutexGuard<'_, HashMap<Number, Arc<Courier>>> {
        self.0.couriers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `peer`'s courier, made (with its task) if it has none.
    fn courier(&self, peer: &Number, start: Start) -> Arc<Courier> {
        let mut map = self.couriers();
        if let Some(c) = map.get(peer) {
            if start == Start::Now {
                c.kicked.store(true, std::sync::atomic::Ordering::Relaxed);
                c.wake.notify_one();
            }
            return c.clone();
        }
        let written = Written::default();
        let c = Arc::new(Courier {
            wake: Notify::new(),
            kicked: (start == Start::Now).into(),
            forget: written.forget.clone(),
            written: Arc::new(tokio::sync::Mutex::new(written)),
        });
        map.insert(peer.clone(), c.clone());
        let span = info_span!("courier", peer = %peer);
        let first = if start == Start::Now { Duration::ZERO } else { ACK_TIMEOUT };
        self.0.parts.tracker.spawn(self.clone().run(peer.clone(), c.clone(), first).instrument(span));
        c
    }

    /// Wakes `peer`'s courier (making one): there may be something to deliver.
    pub(crate) fn kick(&self, peer: &Number) {
        if !self.0.parts.cancel.is_cancelled() {
            self.courier(peer, Start::Now);
        }
    }

    /// Wakes the courier of every peer with something to deliver.
    pub(crate) async fn kick_all(&self) {
        match self.0.parts.store.peers_with_work().await {
            Ok(peers) => {
                for p in peers {
                    self.kick(&p);
                }
            }
            Err(e) => error!("cannot read the outbox: {e}"),
        }
    }

    /// Couriers at work.
    pub(crate) fn count(&self) -> usize {
        self.couriers().len()
    }

    /// Removes `courier` unless it was kicked since it last looked or someone else holds it (a send
    /// writing through it). Returns whether it is gone.
    fn retire(&self, peer: &Number, courier: &Arc<Courier>) -> bool {
        let mut map = self.couriers();
        // The map and the courier's task hold it; clones are only made under this lock.
        if courier.kicked.load(std::sync::atomic::Ordering::Relaxed) || Arc::strong_count(courier) > 2 {
            return false;
        }
        if map.get(peer).is_some_and(|c| Arc::ptr_eq(c, courier)) {
            map.remove(peer);
        }
        true
    }

    /// Writes everything unconfirmed for `peer` on a live link (dialing one if needed), oldest first.
    /// Returns whether messages still wait for an acknowledgement.
    async fn flush(&self, peer: &Number, courier: &Courier) -> Result<bool, ClientError> {
        let p = &self.0.parts;
        let mut written = courier.written.lock().await;
        let link = match p.links.live(peer).await {
            Some(link) => link,
            None => {
                // Dial only when something is owed: a peer coming online with nothing for it costs no link.
                if !p.store.has_owed(peer).await? {
                    return Ok(false);
                }
                p.links.connect(peer).await?
            }
        };
        self.write_owed(peer, &mut written, &link, None).await
    }

    /// Queues a text for `to` and, if `to` is online, writes it at once. The courier's lock is held
    /// from queueing to writing, so the courier cannot take the message in between and answer for it.
    pub(crate) async fn send(
        &self,
        to: &Number,
        id: MessageId,
        text: &str,
        online: bool,
    ) -> Result<SendOutcome, ClientError> {
        let p = &self.0.parts;
        let courier = self.courier(to, Start::Watching);
        let mut written = courier.written.lock().await;
        let new = OutgoingText { id, text: text.to_owned(), sent_at_ms: crate::clock::now_ms(), group: None };
        let link = if online { Some(p.links.connect(to).await) } else { None };
        let result = match link {
            // Queued, marked sent and read in one trip to the database.
            Some(Ok(link)) => match self.write_owed(to, &mut written, &link, Some(new.clone())).await {
                // The transaction rolled back, so the text is not stored: store it, or say it failed.
                Err(ClientError::Store(e)) => {
                    warn!("writing to {to} failed in the database ({e}); queueing the message");
                    p.store.queue_outgoing(to, new).await?;
                    Err(ClientError::Store(e))
                }
                result => result,
            },
            Some(Err(e)) => {
                p.store.queue_outgoing(to, new).await?;
                Err(e)
            }
            None => {
                p.store.queue_outgoing(to, new).await?;
                drop(written);
                drop(courier);
                self.kick(to);
                return Ok(SendOutcome::Queued { reason: format!("{to} is offline") });
            }
        };
        drop(written);
        drop(courier);
        match result {
            Ok(_) => Ok(SendOutcome::Sent),
            Err(e) if is_permanent(&e) => {
                self.fail_all(to, &e.to_string()).await;
                Err(e)
            }
            Err(e) => {
                self.kick(to);
                Ok(SendOutcome::Queued { reason: e.to_string() })
            }
        }
    }

    /// Writes everything unconfirmed for `peer` on `link` (after queueing `new`), oldest first.
    /// Returns whether messages still wait for an acknowledgement.
    async fn write_owed(
        &self,
        peer: &Number,
        written: &mut Written,
        link: &LinkHandle,
        new: Option<OutgoingText>,
    ) -> Result<bool, ClientError> {
        let answered = new.as_ref().map(|m| m.id);
        let in_flight = written.in_flight(link);
        let owed = self.0.parts.store.take_owed(peer, new, in_flight).await?;
        self.deliver(peer, written, link, owed, answered, Wait::Written).await
    }

    /// Writes what [`Store::take_owed`] took for `peer` on `link`. A queued message became `sent`
    /// just before this, and [`Event::Sent`] goes out for it (except for `answered`, whose sender is
    /// told directly) before it is written, so `sent` always comes before the `delivered` its write
    /// can bring back. Returns whether messages still wait for an acknowledgement.
    async fn deliver(
        &self,
        peer: &Number,
        written: &mut Written,
        link: &LinkHandle,
        owed: Owed,
        answered: Option<MessageId>,
        wait: Wait,
    ) -> Result<bool, ClientError> {
        let p = &self.0.parts;
        let write = |msg: PeerMessage| async move {
            match wait {
                Wait::Written => link.write(msg).await,
                Wait::Never => link.write_nowait(msg),
            }
        };
        // Forget what was confirmed meanwhile, so a long-lived link does not remember every message.
        written.texts.retain(|id, _| owed.in_flight.contains(id));
        written.receipts.retain(|id| owed.receipts.contains(id));
        for (id, group) in owed.newly_sent.into_iter().filter(|(id, _)| answered != Some(*id)) {
            let _ = p.events.send(Event::Sent { id, to: peer.clone(), group }).await;
        }
        let lost = |source| ClientError::LinkLost { peer: peer.clone(), source };
        for m in owed.texts {
            let msg = match (m.group, m.update) {
                // The notice that we accepted the peer's message request (see `Store::queue_accepted`).
                (None, Some(body)) if body.is_empty() => PeerMessage::Accepted { id: m.id },
                (_, Some(body)) => match postcard::from_bytes(&body) {
                    Ok(update) => PeerMessage::GroupUpdate { id: m.id, update },
                    Err(e) => {
                        error!("dropping undecodable group change {} from the outbox: {e}", m.id);
                        p.store.advance_outgoing(peer, m.id, MessageState::Failed).await?;
                        continue;
                    }
                },
                (Some(group), None) => {
                    PeerMessage::GroupText { group, id: m.id, sent_at_ms: m.sent_at_ms, text: m.text }
                }
                (None, None) => PeerMessage::Text { id: m.id, sent_at_ms: m.sent_at_ms, text: m.text },
            };
            write(msg).await.map_err(lost)?;
            written.texts.insert(m.id, Instant::now());
        }
        for id in owed.receipts {
            if written.receipts.insert(id) {
                write(PeerMessage::Read { id }).await.map_err(lost)?;
            }
        }
        Ok(owed.awaiting)
    }

    /// Sends a group text to `members`. Each member with a live link and an idle courier gets it
    /// written at once, after anything it is still owed, as a one-to-one send would, but without
    /// waiting for a slow member's socket; the database takes the text for every member in one
    /// transaction. The others' couriers deliver it. (Through the couriers alone, 50 members took
    /// 1.58 times as long as 50 one-to-one sends: a task wake-up and a transaction each.)
    pub(crate) async fn send_to_group(
        &self,
        members: &[Number],
        text: OutgoingText,
    ) -> Result<(), ClientError> {
        let mut direct = Vec::new();
        let mut queued = Vec::new();
        for member in members {
            let ready = match self.0.parts.links.try_live(member) {
                Some(link) => {
                    let courier = self.courier(member, Start::Watching);
                    let held = courier.written.clone().try_lock_owned().ok();
                    held.map(|written| (link, courier, written))
                }
                None => None,
            };
            match ready {
                Some(ready) => direct.push((member.clone(), ready)),
                None => queued.push(member.clone()),
            }
        }
        let flights: Vec<(Number, HashSet<MessageId>)> = direct
            .iter_mut()
            .map(|(member, (link, _, written))| (member.clone(), written.in_flight(link)))
            .collect();
        let owed = self.0.parts.store.take_owed_fanout(flights, queued.clone(), text).await?;
        for ((member, (link, courier, mut written)), owed) in direct.into_iter().zip(owed) {
            if let Err(e) = self.deliver(&member, &mut written, &link, owed, None, Wait::Never).await {
                // The text is stored as sent: the courier writes it again on the next link.
                debug!("writing a group text to {member} failed: {e}");
                drop(written);
                drop(courier);
                self.kick(&member);
            }
        }
        for member in &queued {
            self.kick(member);
        }
        Ok(())
    }

    /// `peer` acknowledged `id`: our message (now delivered) or our read receipt.
    pub(crate) async fn on_ack(&self, peer: &Number, id: MessageId) {
        let p = &self.0.parts;
        match p.store.advance_outgoing(peer, id, MessageState::Delivered).await {
            Ok(true) => {
                let _ = p.events.send(Event::Delivered { id, to: peer.clone() }).await;
            }
            Ok(false) => {
                if !p.store.receipt_delivered(peer, id).await.unwrap_or(false) {
                    debug!("{peer} acknowledged {id}, which we did not send it");
                }
            }
            Err(e) => error!("cannot record receipt of {id}: {e}"),
        }
    }

    /// `peer` holds our message (or group change) `id` as a message request: it stays `pending`,
    /// not written again until `peer` accepts.
    pub(crate) async fn on_pending(&self, peer: &Number, id: MessageId) {
        let p = &self.0.parts;
        match p.store.advance_outgoing(peer, id, MessageState::Pending).await {
            Ok(true) => {
                let _ = p.events.send(Event::Pending { id, to: peer.clone() }).await;
            }
            Ok(false) => debug!("{peer} holds {id} as a message request"),
            Err(e) => error!("cannot record that {peer} holds {id}: {e}"),
        }
    }

    /// `peer` accepted our message request: what it held goes out again, in order.
    pub(crate) async fn on_accepted(&self, peer: &Number) {
        match self.0.parts.store.requeue_pending(peer).await {
            Ok(n) => {
                info!("{peer} accepted our message request; {n} messages go out again");
                if !self.0.parts.cancel.is_cancelled() {
                    // Forgotten before the courier looks: what was written on this link goes again.
                    let courier = self.courier(peer, Start::Watching);
                    courier.forget.store(true, std::sync::atomic::Ordering::Relaxed);
                    drop(courier);
                    self.kick(peer);
                }
            }
            Err(e) => error!("cannot put the messages {peer} held back in the outbox: {e}"),
        }
    }

    /// `peer` read our message `id`; returns the acknowledgement to write back. A message read is
    /// a message delivered: one that was not yet (its receipt overtook its acknowledgement, as
    /// after an accepted request) is reported delivered first.
    pub(crate) async fn on_read(&self, peer: &Number, id: MessageId) -> Option<PeerMessage> {
        let p = &self.0.parts;
        if let Ok(true) = p.store.advance_outgoing(peer, id, MessageState::Delivered).await {
            let _ = p.events.send(Event::Delivered { id, to: peer.clone() }).await;
        }
        match p.store.advance_outgoing(peer, id, MessageState::Read).await {
            Ok(true) => {
                let _ = p.events.send(Event::Read { id, by: peer.clone() }).await;
                Some(PeerMessage::Ack { id })
            }
            Ok(false) => Some(PeerMessage::Ack { id }),
            Err(e) => {
                error!("cannot record read receipt of {id}: {e}");
                None
            }
        }
    }

    /// Puts the notice that we accepted `peer`'s message request in the outbox (see
    /// `PeerMessage::Accepted`), ahead of anything queued after it (a read receipt); the courier
    /// takes it at its next [`Outbox::kick`].
    pub(crate) async fn accepted(&self, peer: &Number) -> Result<(), ClientError> {
        self.0.parts.store.queue_accepted(peer, MessageId::new()).await
    }

    /// Gives up on every unconfirmed message to `peer`, telling the user why.
    async fn fail_all(&self, peer: &Number, reason: &str) {
        let p = &self.0.parts;
        let Ok(texts) = p.store.unconfirmed(peer).await else { return };
        for m in texts {
            if p.store.advance_outgoing(peer, m.id, MessageState::Failed).await.unwrap_or(false) {
                let event = Event::Failed { id: m.id, to: peer.clone(), reason: reason.to_owned() };
                let _ = p.events.send(event).await;
            }
        }
    }

    /// The courier's task: delivers when woken or when its timer runs out, and retires once
    /// nothing is owed.
    async fn run(self, peer: Number, courier: Arc<Courier>, first: Duration) {
        let mut retry = first;
        let mut backoff = RETRY_MIN;
        let cancel = self.0.parts.cancel.clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = courier.wake.notified() => {}
                _ = tokio::time::sleep(retry) => {}
            }
            // A kick from now on makes the courier look again before it may retire.
            courier.kicked.store(false, std::sync::atomic::Ordering::Relaxed);
            let outcome = if self.0.parts.presence.known_offline(&peer) {
                // Nothing can go now: wait for the push that says the peer is back (or the recheck).
                self.0.parts.store.has_owed(&peer).await.map(|owed| (owed, IDLE_RECHECK))
            } else {
                match self.flush(&peer, &courier).await {
                    // Acknowledgements still due: look again when the first may be overdue.
                    Ok(awaiting) => {
                        backoff = RETRY_MIN;
                        Ok((awaiting, ACK_TIMEOUT))
                    }
                    Err(e) if is_permanent(&e) => {
                        info!("giving up on messages to {peer}: {e}");
                        self.fail_all(&peer, &e.to_string()).await;
                        Ok((false, IDLE_RECHECK))
                    }
                    Err(e) => Err(e),
                }
            };
            match outcome {
                Ok((false, _)) if self.retire(&peer, &courier) => return,
                Ok((_, next)) => retry = next,
                Err(e) => {
                    debug!("delivery to {peer} failed, retrying in {backoff:?}: {e}");
                    retry = backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// Errors after which retrying cannot help until a person acts.
fn is_permanent(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::KeyChanged { .. } | ClientError::PeerIdentity { .. } | ClientError::UnknownNumber(_)
    )
}
