//! Message requests: the one rule for who may reach the user.
//!
//! A number is *known* when it is a contact or one we wrote to first; its texts, files and group
//! invitations are taken. Anything from anyone else (a text, a file offer, an invitation to a group,
//! and texts to the group of an invitation held that way) is held as a request, answered with
//! `PeerMessage::Pending`, and shown to the user as a [`crate::Event::Request`]; the user accepts
//! (see `Client::accept`), ignores or blocks it. What a blocked number sends is dropped, answered
//! exactly as a held item would be, so from its side a block looks like a request nobody answered.
//! Requests live in the profile database (`store/requests.rs`), bounded per number and in all.
//!
//! [`Requests`] decides and holds; it remembers in memory the numbers found known (a text from a
//! contact costs no query) and the blocked ones (few, set by the user).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::Number;

use crate::event::Event;
use crate::store::{Held, Hold, Standing, Store};
use crate::ClientError;

struct Inner {
    store: Store,
    events: mpsc::Sender<Event>,
    /// Numbers found known: a contact or one we wrote to. Forgotten when a contact is removed.
    known: Mutex<HashSet<Number>>,
    /// The blocked numbers, all of them (loaded at start).
    blocked: Mutex<HashSet<Number>>,
}

/// Who may reach the user, and what strangers sent. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Requests(Arc<Inner>);

impl Requests {
    /// Loads the blocked numbers.
    pub(crate) async fn load(store: Store, events: mpsc::Sender<Event>) -> Result<Self, ClientError> {
        let blocked = store.blocked().await?.into_iter().collect();
        Ok(Self(Arc::new(Inner { store, events, known: Mutex::default(), blocked: Mutex::new(blocked) })))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<Number>> {
        self.0.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashSet<Number>> {
        self.0.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `peer` is blocked (no query).
    pub(crate) fn is_blocked(&self, peer: &Number) -> bool {
        self.blocked().contains(peer)
    }

    /// Who `peer` is to us: known, a stranger, or blocked.
    pub(crate) async fn standing(&self, peer: &Number) -> Result<Standing, ClientError> {
        if self.is_blocked(peer) {
            return Ok(Standing::Blocked);
        }
        if self.known().contains(peer) {
            return Ok(Standing::Known);
        }
        let standing = self.0.store.standing(peer).await?;
        if standing == Standing::Known {
            self.known().insert(peer.clone());
        }
        Ok(standing)
    }

    /// `peer` became known (a contact now, or we wrote to it).
    pub(crate) fn know(&self, peer: &Number) {
        self.known().insert(peer.clone());
    }

    /// `peer` may no longer be known (its contact was removed): ask the database next time.
    pub(crate) fn forget(&self, peer: &Number) {
        self.known().remove(peer);
    }

    /// Holds `item`, sent by `sender`, in `peer`'s request (`peer` is the sender, except for a
    /// text to the group of an invitation `peer` sent), or drops it if `standing` is blocked.
    /// Returns the answer to write (`Pending`), or `None` if it could not be kept (the sender
    /// then writes it again later).
    pub(crate) async fn hold(
        &self,
        peer: &Number,
        sender: &Number,
        item: Held,
        standing: Standing,
    ) -> Option<PeerMessage> {
        let id = item.id();
        let answer = Some(PeerMessage::Pending { id });
        if standing == Standing::Blocked || self.is_blocked(peer) {
            debug!("dropped {id} from {sender}, who is blocked");
            return answer;
        }
        let shown = item.shown(sender);
        match self.0.store.hold(peer, sender, item).await {
            Ok(Hold::New) => {
                info!("holding {id} from {sender} as a message request");
                // A text to the group of a held invitation is shown with the invitation, not alone.
                if !matches!(shown, crate::store::RequestItem::GroupText { .. }) {
                    let _ = self.0.events.send(Event::Request { from: peer.clone(), item: shown }).await;
                }
                answer
            }
            Ok(Hold::Again) => answer,
            Ok(Hold::Full) => {
                warn!("not keeping {id} from {sender}: too many message requests held");
                answer
            }
            Err(e) => {
                warn!("cannot hold {id} from {sender}: {e}");
                None
            }
        }
    }

    /// Blocks or unblocks `peer` (blocking drops its request); returns whether that changed
    /// anything.
    pub(crate) async fn set_blocked(&self, peer: &Number, blocked: bool) -> Result<bool, ClientError> {
        let changed = self.0.store.set_blocked(peer, blocked).await?;
        if blocked {
            self.blocked().insert(peer.clone());
            self.forget(peer);
            self.0.store.drop_request(peer).await?;
        } else {
            self.blocked().remove(peer);
        }
        Ok(changed)
    }
}
