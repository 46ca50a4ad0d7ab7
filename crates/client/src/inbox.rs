//! Incoming texts: stored, shown once, then acknowledged. Used for direct texts and for group texts
//! (once `groups` has checked them).

use tokio::sync::mpsc;
use tracing::{debug, error};
use whatsap2p_proto::group::GroupId;
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{MessageId, Number};

use crate::event::Event;
use crate::store::Store;

/// Where received texts go. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Inbox {
    store: Store,
    events: mpsc::Sender<Event>,
}

impl Inbox {
    pub(crate) fn new(store: Store, events: mpsc::Sender<Event>) -> Self {
        Self { store, events }
    }

    /// Stores a received text and shows it (once), then answers with the acknowledgement. Only what
    /// is safely stored is acknowledged: if the disk refuses, the sender keeps the message and
    /// retries. `None` also when the user interface has gone (see [`Inbox::is_closed`]).
    pub(crate) async fn take(
        &self,
        peer: &Number,
        id: MessageId,
        sent_at_ms: u64,
        text: String,
        group: Option<GroupId>,
    ) -> Option<PeerMessage> {
        match self.store.store_incoming(peer, id, &text, sent_at_ms, group).await {
            Ok(true) => {
                let event = Event::Message { id, from: peer.clone(), text, sent_at_ms, group };
                self.events.send(event).await.ok()?;
                Some(PeerMessage::Ack { id })
            }
            Ok(false) => {
                debug!("{peer} resent {id}; already stored");
                Some(PeerMessage::Ack { id })
            }
            Err(e) => {
                error!("cannot store message {id} from {peer}, not acknowledging it: {e}");
                None
            }
        }
    }

    /// Whether nobody reads the events any more (the client is going away).
    pub(crate) fn is_closed(&self) -> bool {
        self.events.is_closed()
    }
}
