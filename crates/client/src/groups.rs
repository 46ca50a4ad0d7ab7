//! Group conversations, delivered peer to peer.
//!
//! Every member keeps the group's signed state (see [`whatsap2p_proto::group`]). A change is signed by
//! the admin who makes it and sent to every member, old and new, through the outbox; each member checks
//! it before taking it. A group message goes from the sender straight to each other member: written
//! at once on every live link (without waiting for a slow member's socket), through the member's
//! outbox courier otherwise, so an offline or slow member delays nobody; the offline ones get
//! everything, in order, when they come back.

use std::collections::BTreeSet;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;
use tracing::{info, warn};
use whatsap2p_proto::group::{GroupId, GroupState, SignedGroupState};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{MessageId, Number, PublicKey, MAX_TEXT_LEN};

use crate::clock::now_ms;
use crate::directory::DirectoryHandle;
use crate::event::Event;
use crate::inbox::Inbox;
use crate::outbox::Outbox;
use crate::requests::Requests;
use crate::store::{Held, OutgoingText, Standing, Store};
use crate::ClientError;

/// A group as a member sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The latest accepted state.
    pub state: GroupState,
    /// Who made the latest change.
    pub changed_by: Number,
    /// We left or were removed: nothing more is sent or accepted.
    pub left: bool,
}

fn group_error(message: String) -> ClientError {
    ClientError::Group(message)
}

/// What groups need from the rest of the client.
pub(crate) struct GroupParts {
    pub(crate) me: Number,
    pub(crate) signing: SigningKey,
    pub(crate) store: Store,
    pub(crate) directory: DirectoryHandle,
    pub(crate) outbox: Outbox,
    pub(crate) inbox: Inbox,
    pub(crate) requests: Requests,
    pub(crate) events: mpsc::Sender<Event>,
}

struct Inner {
    parts: GroupParts,
    /// Serializes group changes and group texts, so a member never shows a group's message before
    /// the group itself (or takes a text against a state that is being replaced).
    serial: tokio::sync::Mutex<()>,
}

/// The groups we are in. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Groups(Arc<Inner>);

impl Groups {
    pub(crate) fn new(parts: GroupParts) -> Self {
        Self(Arc::new(Inner { parts, serial: tokio::sync::Mutex::new(()) }))
    }

    async fn load(&self, id: GroupId) -> Result<(SignedGroupState, bool), ClientError> {
        self.0.parts.store.group(id).await?.ok_or_else(|| group_error(format!("no group {id}")))
    }

    /// Signs `state` as ours, keeps it, and sends it to `recipients` (ourselves excluded).
    async fn publish(
        &self,
        state: GroupState,
        recipients: impl IntoIterator<Item = Number>,
        left: bool,
    ) -> Result<Group, ClientError> {
        state.check().map_err(|e| group_error(e.to_string()))?;
        let signed = state.sign(self.0.parts.me.clone(), &self.0.parts.signing);
        self.0.parts.store.save_group(&signed, left).await?;
        for to in recipients.into_iter().filter(|n| *n != self.0.parts.me).collect::<BTreeSet<_>>() {
            self.0.parts.store.queue_group_update(&to, MessageId::new(), &signed).await?;
            self.0.parts.directory.watch(vec![to.clone()]).await;
            self.0.parts.outbox.kick(&to);
        }
        Ok(Group { state: signed.state, changed_by: self.0.parts.me.clone(), left })
    }

    async fn require_contacts(&self, numbers: &[Number]) -> Result<(), ClientError> {
        for n in numbers {
            if *n == self.0.parts.me {
                continue;
            }
            if self.0.parts.store.contact(n).await?.is_none() {
                return Err(group_error(format!("{n} is not a contact: add it first")));
            }
        }
        Ok(())
    }

    /// Creates a group of our contacts, with us as its first admin.
    pub(crate) async fn create(&self, name: &str, members: &[Number]) -> Result<Group, ClientError> {
        self.require_contacts(members).await?;
        let mut all: BTreeSet<Number> = members.iter().cloned().collect();
        all.insert(self.0.parts.me.clone());
        let state = GroupState {
            id: GroupId::random(),
            name: name.trim().to_owned(),
            members: all.clone(),
            admins: [self.0.parts.me.clone()].into(),
            version: 1,
        };
        self.publish(state, all, false).await
    }

    /// Applies an admin's change and sends the new state to everyone concerned (a removed member learns
    /// it was removed, and gets nothing after).
    pub(crate) async fn change(
        &self,
        id: GroupId,
        who: &Number,
        change: Change,
    ) -> Result<Group, ClientError> {
        let (held, left) = self.load(id).await?;
        let mut state = held.state;
        if left {
            return Err(group_error(format!("you are no longer in {}", state.name)));
        }
        if !state.admins.contains(&self.0.parts.me) {
            return Err(group_error(format!("you are not an admin of {}", state.name)));
        }
        let mut recipients = state.members.clone();
        match change {
            Change::Add => {
                self.require_contacts(std::slice::from_ref(who)).await?;
                if !state.members.insert(who.clone()) {
                    return Err(group_error(format!("{who} is already in {}", state.name)));
                }
                recipients.insert(who.clone());
            }
            Change::Remove => {
                if *who == self.0.parts.me {
                    return Err(group_error("to leave a group, use leave".into()));
                }
                if !state.members.remove(who) {
                    return Err(group_error(format!("{who} is not in {}", state.name)));
                }
                state.admins.remove(who);
            }
            Change::MakeAdmin => {
                if !state.members.contains(who) {
                    return Err(group_error(format!("{who} is not in {}", state.name)));
                }
                state.admins.insert(who.clone());
            }
        }
        state.version =
            state.version.checked_add(1).ok_or_else(|| group_error("group version exhausted".into()))?;
        self.publish(state, recipients, false).await
    }

    /// Leaves a group: tells the others, then ignores it.
    pub(crate) async fn leave(&self, id: GroupId) -> Result<Group, ClientError> {
        let (held, left) = self.load(id).await?;
        let mut state = held.state;
        if left {
            return Err(group_error(format!("you already left {}", state.name)));
        }
        state.members.remove(&self.0.parts.me);
        state.admins.remove(&self.0.parts.me);
        state.version =
            state.version.checked_add(1).ok_or_else(|| group_error("group version exhausted".into()))?;
        let recipients = state.members.clone();
        self.publish(state, recipients, true).await
    }

    /// Every group we know.
    pub(crate) async fn list(&self) -> Result<Vec<Group>, ClientError> {
        Ok(self
            .0
            .parts
            .store
            .groups()
            .await?
            .into_iter()
            .map(|(s, left)| Group { state: s.state, changed_by: s.signer, left })
            .collect())
    }

    /// Sends `text` to every other member: written at once to those linked, queued for the others.
    pub(crate) async fn send(&self, id: GroupId, text: &str) -> Result<(MessageId, usize), ClientError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::TextTooLong(text.len()));
        }
        let (held, left) = self.load(id).await?;
        if left || !held.state.members.contains(&self.0.parts.me) {
            return Err(group_error(format!("you are not in {}", held.state.name)));
        }
        let msg = MessageId::new();
        let sent_at = now_ms();
        let others: Vec<Number> =
            held.state.members.iter().filter(|m| **m != self.0.parts.me).cloned().collect();
        let text = OutgoingText { id: msg, text: text.to_owned(), sent_at_ms: sent_at, group: Some(id) };
        self.0.parts.outbox.send_to_group(&others, text).await?;
        Ok((msg, others.len()))
    }

    /// A group text arrived: shown only when both the sender and we are members of a group we know.
    pub(crate) async fn on_text(
        &self,
        from: &Number,
        group: GroupId,
        id: MessageId,
        sent_at_ms: u64,
        text: String,
    ) -> Option<PeerMessage> {
        let _serial = self.0.serial.lock().await;
        let known = self.0.parts.store.group(group).await;
        // The group of an invitation held as a message request: its texts wait with it, pending.
        if matches!(known, Ok(None)) {
            if let Some(inviter) = self.invitation_held(group).await {
                let held = Held::GroupText { group, id, text, sent_at_ms };
                return self.0.parts.requests.hold(&inviter, from, held, Standing::Stranger).await;
            }
        }
        match known {
            Ok(Some((held, false)))
                if held.state.members.contains(from) && held.state.members.contains(&self.0.parts.me) =>
            {
                self.0.parts.inbox.take(from, id, sent_at_ms, text, Some(group)).await
            }
            // Another member's message can overtake the invitation, or the change that added its sender
            // (each sender delivers on its own): keep it, acknowledged, until the group catches up.
            Ok(None) | Ok(Some((_, false))) => {
                match self.0.parts.store.hold_group_text(from, group, id, &text, sent_at_ms).await {
                    Ok(true) => {
                        info!("holding a message from {from} to group {group} until its membership arrives");
                        Some(PeerMessage::Ack { id })
                    }
                    Ok(false) => {
                        warn!("dropped a message from {from} to group {group}: too many held");
                        Some(PeerMessage::Ack { id })
                    }
                    Err(e) => {
                        warn!("cannot hold a message for group {group}: {e}");
                        None
                    }
                }
            }
            Ok(Some((_, true))) => {
                warn!("dropped a message from {from} to group {group}, which we left");
                // Acknowledged all the same, so the sender stops retrying something we will never take.
                Some(PeerMessage::Ack { id })
            }
            Err(e) => {
                warn!("cannot read group {group}: {e}");
                None
            }
        }
    }

    /// The number whose invitation to `group` is held as a message request, if any.
    async fn invitation_held(&self, group: GroupId) -> Option<Number> {
        match self.0.parts.store.held_invitation(group).await {
            Ok(inviter) => inviter,
            Err(e) => {
                warn!("cannot read the message requests: {e}");
                None
            }
        }
    }

    /// A membership change arrived from `from` with delivery id `msg`: taken only if it passes the
    /// group rules; an invitation from a number that is not known is held as a message request.
    /// Returns the answer to write (`Ack`, or `Pending` for a request).
    pub(crate) async fn on_update(
        &self,
        from: &Number,
        from_key: &PublicKey,
        msg: MessageId,
        update: SignedGroupState,
    ) -> Option<PeerMessage> {
        let _serial = self.0.serial.lock().await;
        let ack = Some(PeerMessage::Ack { id: msg });
        let id = update.state.id;
        let held = match self.0.parts.store.group(id).await {
            Ok(h) => h,
            Err(e) => {
                warn!("cannot read group {id}: {e}");
                return None;
            }
        };
        if let Some((_, true)) = held {
            info!("ignoring a change to group {id}, which we left");
            return ack;
        }
        // The state held, again: written again after a lost acknowledgement, or after we accepted
        // the request that held it.
        if held.as_ref().is_some_and(|(s, _)| s.state == update.state) {
            return ack;
        }
        // Invitations only from known numbers: otherwise anyone who learned a group's id could be
        // first to "invite" a new member into a group of its own making. The user decides.
        let standing = match held {
            Some(_) => Standing::Known,
            None => match self.0.parts.requests.standing(from).await {
                Ok(s) => s,
                Err(e) => {
                    warn!("cannot tell whether {from} is a contact: {e}");
                    return None;
                }
            },
        };
        if standing == Standing::Blocked {
            let held = Held::Group { id: msg, update };
            return self.0.parts.requests.hold(from, from, held, standing).await;
        }
        let refused = update
            .accept(held.as_ref().map(|(s, _)| &s.state), from, from_key, &self.0.parts.me)
            .err()
            .map(|e| format!("a change to group {id} from {from}: {e}"));
        if let Some(why) = refused {
            warn!("refused {why}");
            let _ = self.0.parts.events.send(Event::Warning { message: format!("refused {why}") }).await;
            return ack;
        }
        if standing == Standing::Stranger {
            let held = Held::Group { id: msg, update };
            return self.0.parts.requests.hold(from, from, held, standing).await;
        }
        self.apply(update).await.then_some(PeerMessage::Ack { id: msg })
    }

    /// Joins the group of an invitation the user accepted (held since it came, checked then):
    /// taken if the group rules still take it. Returns whether the group is joined.
    pub(crate) async fn join(&self, update: SignedGroupState) -> bool {
        let _serial = self.0.serial.lock().await;
        let id = update.state.id;
        let held = match self.0.parts.store.group(id).await {
            Ok(h) => h,
            Err(e) => {
                warn!("cannot read group {id}: {e}");
                return false;
            }
        };
        if held.as_ref().is_some_and(|(s, _)| s.state == update.state) {
            return true;
        }
        let (signer, key) = (update.signer.clone(), update.signer_key);
        if let Err(e) = update.accept(held.as_ref().map(|(s, _)| &s.state), &signer, &key, &self.0.parts.me) {
            warn!("the invitation to group {id} no longer holds: {e}");
            return false;
        }
        self.apply(update).await
    }

    /// Takes a change that passed the rules: keeps it, tells the user, and shows the texts that
    /// waited for it. Returns false if it could not be kept.
    async fn apply(&self, update: SignedGroupState) -> bool {
        let id = update.state.id;
        let removed = !update.state.members.contains(&self.0.parts.me);
        if let Err(e) = self.0.parts.store.save_group(&update, removed).await {
            warn!("cannot save group {id}: {e}");
            return false;
        }
        let watch: Vec<Number> =
            update.state.members.iter().filter(|m| **m != self.0.parts.me).cloned().collect();
        self.0.parts.directory.watch(watch).await;
        let members = update.state.members.clone();
        let group = Group { state: update.state, changed_by: update.signer, left: removed };
        let _ = self.0.parts.events.send(Event::Group(group)).await;
        // Messages that overtook this change are shown now if their senders are members; the others
        // wait for a later change (unless we are out of the group).
        match self.0.parts.store.take_held_group_texts(id).await {
            Ok(held) => {
                for (from, msg, text, sent_at_ms) in held {
                    if removed {
                        warn!("dropped a held message from {from} to group {id}: we are out of it");
                    } else if members.contains(&from) {
                        self.0.parts.inbox.take(&from, msg, sent_at_ms, text, Some(id)).await;
                    } else if let Err(e) =
                        self.0.parts.store.hold_group_text(&from, id, msg, &text, sent_at_ms).await
                    {
                        warn!("cannot keep holding a message for group {id}: {e}");
                    }
                }
            }
            Err(e) => warn!("cannot read messages held for group {id}: {e}"),
        }
        true
    }
}

/// What an admin can do to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a contact.
    Add,
    /// Remove a member (not ourselves: leave instead).
    Remove,
    /// Make a member an admin.
    MakeAdmin,
}
