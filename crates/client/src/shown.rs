//! Texts received and stored (so acknowledged to their sender) but not yet shown to the user are
//! shown at the next start, so a crash between the two loses nothing the sender was told arrived.
//!
//! A front end calls [`crate::Client::shown`] once it has shown a text (printed and flushed it,
//! drawn it); the ids wait here and are written in one transaction with the next checkpoint (every
//! second) and at shutdown, not with a commit each. After a start, [`crate::Client::replay_unshown`]
//! sends again as `Event::Message` every text stored before the start and never reported shown.
//! So a text is shown at least once; one shown less than a second before a crash may be shown
//! again after it (same id, so a front end can tell).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tracing::{info, warn};
use whatsap2p_proto::{MessageId, Number};

use crate::event::Event;
use crate::store::Store;
use crate::ClientError;

/// Texts shown and not yet written down, and the texts to show again after a start.
pub(crate) struct Shown {
    store: Store,
    events: mpsc::Sender<Event>,
    /// Reported shown since the last write.
    pending: Mutex<Vec<(Number, MessageId)>>,
    /// The last row stored before this start: later texts are shown as they arrive.
    replay_upto: i64,
    replayed: AtomicBool,
}

impl Shown {
    pub(crate) async fn new(store: Store, events: mpsc::Sender<Event>) -> Result<Self, ClientError> {
        let replay_upto = store.last_message_row().await?;
        Ok(Self { store, events, pending: Mutex::default(), replay_upto, replayed: AtomicBool::new(false) })
    }

    /// A front end showed text `id` from `from`.
    pub(crate) fn note(&self, from: &Number, id: MessageId) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push((from.clone(), id));
    }

    /// Writes down what was reported shown.
    pub(crate) async fn flush(&self) {
        let shown = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if shown.is_empty() {
            return;
        }
        if let Err(e) = self.store.mark_shown(shown).await {
            warn!("cannot record which messages were shown (they may be shown again): {e}");
        }
    }

    /// Sends again the texts stored before this start and never shown (once per start).
    pub(crate) async fn replay(&self) {
        if self.replayed.swap(true, Ordering::Relaxed) {
            return;
        }
        let unshown = match self.store.unshown(self.replay_upto).await {
            Ok(unshown) => unshown,
            Err(e) => return warn!("cannot read the messages not shown yet: {e}"),
        };
        if !unshown.is_empty() {
            info!("showing {} messages received before the last stop and never shown", unshown.len());
        }
        for m in unshown {
            let event = Event::Message {
                id: m.id,
                from: m.peer,
                text: m.text,
                sent_at_ms: m.sent_at_ms,
                group: m.group,
            };
            if self.events.send(event).await.is_err() {
                return;
            }
        }
    }
}
