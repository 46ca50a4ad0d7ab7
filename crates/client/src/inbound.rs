//! What arrives on a peer link, and which subsystem owns it: the one place that knows both.
//!
//! [`Router`] is the links' [`LinkOwner`]: texts go to the inbox, acknowledgements and read
//! receipts to the outbox, group texts and changes to the groups, file messages to the transfers.
//! What a number that is not known sends goes to the message requests first (see `requests.rs`);
//! a request's answers (`Pending`, `Accepted`) go to the outbox or the transfer they concern.
//! A link that ends wakes the outbox and the waiting files of its peer, since what it left
//! unconfirmed goes out again on the next one.

use futures::future::BoxFuture;
use tracing::debug;
use whatsap2p_proto::chunk::ChunkView;
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::MAX_TEXT_LEN;

use crate::groups::Groups;
use crate::inbox::Inbox;
use crate::link::{LinkHandle, LinkOwner, Verdict};
use crate::outbox::Outbox;
use crate::requests::Requests;
use crate::store::{Held, Standing};
use crate::transfer::{Offer, Transfers};

/// Hands each message from a link to its owner.
pub(crate) struct Router {
    pub(crate) inbox: Inbox,
    pub(crate) outbox: Outbox,
    pub(crate) transfers: Transfers,
    pub(crate) groups: Groups,
    pub(crate) requests: Requests,
}

/// A text longer than any peer may send: the link is dropped.
fn oversized(text: &str) -> Option<Verdict> {
    (text.len() > MAX_TEXT_LEN).then(|| Verdict::Close(format!("message of {} bytes", text.len())))
}

fn reply(msg: Option<PeerMessage>) -> Verdict {
    msg.map_or(Verdict::Done, Verdict::Reply)
}

impl Router {
    /// Who `peer` is to us; `None` when that cannot be read now (nothing is answered: the peer
    /// writes again later).
    async fn standing(&self, peer: &whatsap2p_proto::Number) -> Option<Standing> {
        match self.requests.standing(peer).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot tell whether {peer} is a contact: {e}");
                None
            }
        }
    }

    async fn route(&self, link: &LinkHandle, msg: PeerMessage) -> Verdict {
        let peer = link.peer();
        match msg {
            PeerMessage::Text { id, sent_at_ms, text } => {
                if let Some(close) = oversized(&text) {
                    return close;
                }
                let Some(standing) = self.standing(peer).await else { return Verdict::Done };
                if standing != Standing::Known {
                    let held = Held::Text { id, text, sent_at_ms };
                    return reply(self.requests.hold(peer, peer, held, standing).await);
                }
                match self.inbox.take(peer, id, sent_at_ms, text, None).await {
                    Some(ack) => Verdict::Reply(ack),
                    None if self.inbox.is_closed() => Verdict::Close("the client is shutting down".into()),
                    None => Verdict::Done,
                }
            }
            // Our message, group change or file offer is held as a message request.
            PeerMessage::Pending { id } if self.transfers.runs(link, id) => {
                reply(self.transfers.on_message(link, msg))
            }
            PeerMessage::Pending { id } => {
                self.outbox.on_pending(peer, id).await;
                Verdict::Done
            }
            PeerMessage::Accepted { id } => {
                self.outbox.on_accepted(peer).await;
                self.transfers.release(peer).await;
                Verdict::Reply(PeerMessage::Ack { id })
            }
            PeerMessage::Ack { id } => {
                self.outbox.on_ack(peer, id).await;
                Verdict::Done
            }
            PeerMessage::Read { id } => reply(self.outbox.on_read(peer, id).await),
            PeerMessage::GroupText { group, id, sent_at_ms, text } => {
                if let Some(close) = oversized(&text) {
                    return close;
                }
                // A blocked member's texts are dropped in every group.
                if self.requests.is_blocked(peer) {
                    let held = Held::GroupText { group, id, text, sent_at_ms };
                    return reply(self.requests.hold(peer, peer, held, Standing::Blocked).await);
                }
                reply(self.groups.on_text(peer, group, id, sent_at_ms, text).await)
            }
            PeerMessage::GroupUpdate { id, update } => {
                reply(self.groups.on_update(peer, link.key(), id, update).await)
            }
            // The media type offered is not trusted: the receiver sniffs the content (a request
            // shows the offered one, as the sender's word).
            PeerMessage::FileOffer { id, name, size, media_type, blake3 } => {
                let Some(standing) = self.standing(peer).await else { return Verdict::Done };
                if standing != Standing::Known {
                    let held = Held::File { id, name, size, media_type };
                    return reply(self.requests.hold(peer, peer, held, standing).await);
                }
                let offer = Offer { id, name, size, blake3 };
                reply(self.transfers.on_offer(link, offer).await)
            }
            msg @ (PeerMessage::FileAccept { .. }
            | PeerMessage::FileRefuse { .. }
            | PeerMessage::FileProgress { .. }
            | PeerMessage::FileReceived { .. }
            | PeerMessage::FileFailed { .. }
            | PeerMessage::FileAbort { .. }) => reply(self.transfers.on_message(link, msg)),
            other => {
                debug!("ignoring {other:?} from {peer}");
                Verdict::Done
            }
        }
    }
}

impl LinkOwner for Router {
    fn message<'a>(&'a self, link: &'a LinkHandle, msg: PeerMessage) -> BoxFuture<'a, Verdict> {
        Box::pin(self.route(link, msg))
    }

    fn chunk(&self, link: &LinkHandle, chunk: ChunkView, frame: &mut Vec<u8>) -> Option<PeerMessage> {
        self.transfers.on_chunk(link, chunk, frame)
    }

    fn carries_bulk(&self, link: &LinkHandle) -> bool {
        self.transfers.carries_bulk(link)
    }

    fn closed(&self, link: &LinkHandle) {
        self.transfers.link_closed(link);
        // Whatever this link left unconfirmed goes out again on the next one.
        self.outbox.kick(link.peer());
        self.transfers.wake(link.peer());
    }
}
