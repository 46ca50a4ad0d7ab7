//! Messages: the outbox (what is owed to each peer, and its states as receipts come back), texts
//! received, and read receipts to send. The statements of a message's path run through
//! `Store::quick`.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};
use whatsap2p_proto::group::GroupId;
use whatsap2p_proto::{MessageId, Number};

use super::{now_ms, row_to_message, MessageState, OutgoingText, Owed, Store, StoredMessage};
use crate::ClientError;

impl Store {
    /// Puts a message in the outbox.
    pub async fn queue_outgoing(&self, to: &Number, text: OutgoingText) -> Result<(), ClientError> {
        let to = to.to_string();
        self.quick(move |c| insert_outgoing(c, &to, &text, MessageState::Queued)).await
    }

    /// One trip for a courier about to write to `peer`: reads what is owed, leaves out the texts in
    /// `in_flight` (written on this link and not overdue), marks the rest `sent`, and adds `new` (if
    /// any) as the last, already `sent`, all in one transaction.
    pub(crate) async fn take_owed(
        &self,
        peer: &Number,
        new: Option<OutgoingText>,
        in_flight: HashSet<MessageId>,
    ) -> Result<Owed, ClientError> {
        let peer = peer.clone();
        self.quick(move |c| {
            let tx = c.unchecked_transaction()?;
            let owed = take_owed(&tx, &peer, new.as_ref(), &in_flight)?;
            tx.commit()?;
            Ok(owed)
        })
        .await
    }

    /// A group text in one transaction for every member: for each of `direct` (with what is in
    /// flight on its link), what [`Store::take_owed`] would return with the text as `new`; for each
    /// of `queued`, the text goes in the outbox as `queued`.
    pub(crate) async fn take_owed_fanout(
        &self,
        direct: Vec<(Number, HashSet<MessageId>)>,
        queued: Vec<Number>,
        text: OutgoingText,
    ) -> Result<Vec<Owed>, ClientError> {
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            let mut owed = Vec::with_capacity(direct.len());
            for (peer, in_flight) in &direct {
                owed.push(take_owed(&tx, peer, Some(&text), in_flight)?);
            }
            for peer in &queued {
                insert_outgoing(&tx, peer.as_str(), &text, MessageState::Queued)?;
            }
            tx.commit()?;
            Ok(owed)
        })
        .await
    }

    /// Stores a received message; false if this sender's id was already stored (a retry).
    pub async fn store_incoming(
        &self,
        from: &Number,
        id: MessageId,
        text: &str,
        sent_at_ms: u64,
        group: Option<GroupId>,
    ) -> Result<bool, ClientError> {
        let (from, id, text, group) =
            (from.to_string(), id.to_string(), text.to_owned(), group.map(|g| g.to_string()));
        self.quick(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO messages (peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id, shown)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, 'received', ?6, 0)",
            )?
            .execute(params![from, id, text, sent_at_ms as i64, now_ms(), group])
            .map(|n| n == 1)
        })
        .await
    }

    /// Moves an outgoing message to `state` if that is forward from where it is; returns whether a
    /// message (not a group change riding the outbox) moved.
    pub async fn advance_outgoing(
        &self,
        to: &Number,
        id: MessageId,
        state: MessageState,
    ) -> Result<bool, ClientError> {
        let from_states = match state {
            MessageState::Sent => "('queued')",
            MessageState::Pending => "('queued', 'sent')",
            MessageState::Delivered => "('queued', 'sent', 'pending')",
            MessageState::Read => "('queued', 'sent', 'pending', 'delivered')",
            MessageState::Failed => "('queued', 'sent', 'pending')",
            MessageState::Queued | MessageState::Received => return Ok(false),
        };
        let (to, id) = (to.to_string(), id.to_string());
        let sql = format!(
            "UPDATE messages SET state = ?3 WHERE peer = ?1 AND outgoing = 1 AND id = ?2 AND state IN {from_states}
             RETURNING update_body IS NULL"
        );
        // Group membership changes move too, but only messages a person wrote count as moved.
        self.quick(move |c| {
            c.prepare_cached(&sql)?
                .query_row(params![to, id, state.as_str()], |r| r.get::<_, bool>(0))
                .optional()
                .map(|v| v == Some(true))
        })
        .await
    }

    /// `peer` accepted our request: what it held as pending goes back in the outbox. Returns how
    /// many messages (and group changes) did.
    pub(crate) async fn requeue_pending(&self, peer: &Number) -> Result<usize, ClientError> {
        let peer = peer.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE messages SET state = 'queued' WHERE peer = ?1 AND outgoing = 1 AND state = 'pending'",
                params![peer],
            )
        })
        .await
    }

    /// Puts in the outbox the notice that we accepted `peer`'s request (written as
    /// `PeerMessage::Accepted`): a row with an empty `update_body`, so no history shows it.
    pub(crate) async fn queue_accepted(&self, peer: &Number, id: MessageId) -> Result<(), ClientError> {
        let (peer, id) = (peer.to_string(), id.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO messages (peer, outgoing, id, text, sent_at_ms, state, update_body)
                 VALUES (?1, 1, ?2, '', ?3, 'queued', X'')",
                params![peer, id, now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    /// The outbox for one peer: messages not yet confirmed, oldest first.
    pub async fn unconfirmed(&self, to: &Number) -> Result<Vec<StoredMessage>, ClientError> {
        let to = to.to_string();
        self.with(move |c| unconfirmed(c, &to)).await
    }

    /// Whether anything waits to go to `peer`: unconfirmed messages or read receipts.
    pub async fn has_owed(&self, peer: &Number) -> Result<bool, ClientError> {
        let peer = peer.to_string();
        self.quick(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages INDEXED BY messages_outbox
                               WHERE peer = ?1 AND outgoing = 1 AND state IN ('queued', 'sent'))
                     OR EXISTS (SELECT 1 FROM messages INDEXED BY messages_receipts_due
                               WHERE peer = ?1 AND outgoing = 0 AND receipt_pending = 1)",
            )?
            .query_row(params![peer], |r| r.get(0))
        })
        .await
    }

    /// Peers with something to deliver: unconfirmed messages or read receipts.
    pub async fn peers_with_work(&self) -> Result<Vec<Number>, ClientError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT peer FROM messages INDEXED BY messages_outbox WHERE outgoing = 1 AND state IN ('queued', 'sent')
                 UNION
                 SELECT peer FROM messages INDEXED BY messages_receipts_due WHERE outgoing = 0 AND receipt_pending = 1",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for r in rows {
                if let Ok(n) = Number::new(&r?) {
                    out.push(n);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Read receipts waiting to go to `peer`.
    pub async fn pending_receipts(&self, peer: &Number) -> Result<Vec<MessageId>, ClientError> {
        let peer = peer.to_string();
        self.with(move |c| pending_receipts(c, &peer)).await
    }

    /// The peer acknowledged our read receipt for its message `id`; returns whether one was pending.
    pub async fn receipt_delivered(&self, peer: &Number, id: MessageId) -> Result<bool, ClientError> {
        let (peer, id) = (peer.to_string(), id.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE messages SET receipt_pending = 0 WHERE peer = ?1 AND outgoing = 0 AND id = ?2 AND receipt_pending = 1",
                params![peer, id],
            )
            .map(|n| n == 1)
        })
        .await
    }
}

/// What [`Store::take_owed`] does, inside the caller's transaction.
fn take_owed(
    tx: &rusqlite::Connection,
    number: &Number,
    new: Option<&OutgoingText>,
    in_flight: &HashSet<MessageId>,
) -> Result<Owed, rusqlite::Error> {
    let peer = number.as_str();
    let unconfirmed = unconfirmed(tx, peer)?;
    let awaiting = !unconfirmed.is_empty() || new.is_some();
    let mut owed = Owed { awaiting, ..Owed::default() };
    let mut mark = tx.prepare_cached(
        "UPDATE messages SET state = 'sent' WHERE peer = ?1 AND outgoing = 1 AND id = ?2 AND state = 'queued'",
    )?;
    for m in unconfirmed {
        if in_flight.contains(&m.id) {
            owed.in_flight.push(m.id);
            continue;
        }
        if m.state == MessageState::Queued {
            mark.execute(params![peer, m.id.to_string()])?;
            if m.update.is_none() {
                owed.newly_sent.push((m.id, m.group));
            }
        }
        owed.texts.push(m);
    }
    // The newest of all: written last, so it goes in as `sent` at once.
    if let Some(new) = new {
        insert_outgoing(tx, peer, new, MessageState::Sent)?;
        owed.newly_sent.push((new.id, new.group));
        owed.texts.push(StoredMessage {
            id: new.id,
            peer: number.clone(),
            outgoing: true,
            text: new.text.clone(),
            sent_at_ms: new.sent_at_ms,
            received_at_ms: None,
            state: MessageState::Sent,
            group: new.group,
            update: None,
        });
    }
    owed.receipts = pending_receipts(tx, peer)?;
    Ok(owed)
}

fn insert_outgoing(
    c: &rusqlite::Connection,
    to: &str,
    m: &OutgoingText,
    state: MessageState,
) -> Result<(), rusqlite::Error> {
    c.prepare_cached(
        "INSERT INTO messages (peer, outgoing, id, text, sent_at_ms, state, group_id)
         VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        to,
        m.id.to_string(),
        m.text,
        m.sent_at_ms as i64,
        state.as_str(),
        m.group.map(|g| g.to_string())
    ])
    .map(|_| ())
}

fn unconfirmed(c: &rusqlite::Connection, to: &str) -> Result<Vec<StoredMessage>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id, update_body
         FROM messages INDEXED BY messages_outbox
         WHERE peer = ?1 AND outgoing = 1 AND state IN ('queued', 'sent') ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![to], row_to_message)?;
    rows.filter_map(|r| r.transpose()).collect()
}

fn pending_receipts(c: &rusqlite::Connection, peer: &str) -> Result<Vec<MessageId>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT id FROM messages INDEXED BY messages_receipts_due
         WHERE peer = ?1 AND outgoing = 0 AND receipt_pending = 1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![peer], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for r in rows {
        if let Ok(id) = r?.parse() {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    #[tokio::test]
    async fn given_outbox_then_states_only_move_forward_and_acks_are_scoped_to_the_peer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        let (a, b) = (MessageId::new(), MessageId::new());
        store.queue_outgoing(&n("456"), text(a, "one")).await.expect("queue");
        store.queue_outgoing(&n("456"), text(b, "two")).await.expect("queue");
        let ids: Vec<_> = store.unconfirmed(&n("456")).await.expect("outbox").iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![a, b]);
        // Another peer acknowledging our id changes nothing.
        assert!(!store.advance_outgoing(&n("789"), a, MessageState::Delivered).await.expect("ack"));
        assert!(store.advance_outgoing(&n("456"), a, MessageState::Delivered).await.expect("ack"));
        assert!(!store.advance_outgoing(&n("456"), a, MessageState::Sent).await.expect("back"));
        assert_eq!(store.unconfirmed(&n("456")).await.expect("outbox").len(), 1);
        assert_eq!(store.peers_with_work().await.expect("work"), vec![n("456")]);
    }

    fn text(id: MessageId, text: &str) -> OutgoingText {
        OutgoingText { id, text: text.into(), sent_at_ms: 1, group: None }
    }

    #[tokio::test]
    async fn given_texts_in_flight_then_take_owed_marks_only_the_rest_sent_and_forgets_confirmed_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        let peer = n("456");
        assert!(!store.has_owed(&peer).await.expect("owed"));
        let (a, b) = (MessageId::new(), MessageId::new());
        let owed = store.take_owed(&peer, Some(text(a, "one")), HashSet::new()).await.expect("take");
        assert_eq!(owed.texts.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a]);
        assert_eq!(owed.newly_sent, vec![(a, None)]);
        assert!(owed.awaiting && owed.in_flight.is_empty());
        // `a` is on the wire: the next send writes only `b`, and says `a` is still in flight.
        let owed = store.take_owed(&peer, Some(text(b, "two")), HashSet::from([a])).await.expect("take");
        assert_eq!(owed.texts.iter().map(|m| m.id).collect::<Vec<_>>(), vec![b]);
        assert_eq!(owed.newly_sent, vec![(b, None)]);
        assert_eq!(owed.in_flight, vec![a]);
        // Sent but unacknowledged texts are still owed (a new link writes them again).
        assert!(store.has_owed(&peer).await.expect("owed"));
        let owed = store.take_owed(&peer, None, HashSet::new()).await.expect("take");
        assert_eq!(owed.texts.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a, b]);
        assert!(owed.newly_sent.is_empty(), "already sent: not reported again");
        for id in [a, b] {
            assert!(store.advance_outgoing(&peer, id, MessageState::Delivered).await.expect("ack"));
        }
        let owed = store.take_owed(&peer, None, HashSet::from([a, b])).await.expect("take");
        assert!(!owed.awaiting && owed.in_flight.is_empty() && owed.texts.is_empty());
        assert!(!store.has_owed(&peer).await.expect("owed"));
    }

    #[tokio::test]
    async fn given_writes_then_one_checkpoint_runs_and_the_data_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite");
        let store = Store::open(&path).expect("open");
        let id = MessageId::new();
        store.queue_outgoing(&n("456"), text(id, "kept")).await.expect("queue");
        assert!(store.dirty.load(Ordering::Relaxed), "a write marks the store");
        store.checkpoint().await.expect("checkpoint");
        assert!(!store.dirty.load(Ordering::Relaxed), "a checkpoint clears the mark");
        store.checkpoint().await.expect("nothing to do");
        drop(store);
        let store = Store::open(&path).expect("reopen");
        let ids: Vec<_> = store.unconfirmed(&n("456")).await.expect("outbox").iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![id]);
    }

    #[tokio::test]
    async fn given_same_incoming_id_twice_then_stored_once_and_read_receipt_scheduled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        let id = MessageId::new();
        assert!(store.store_incoming(&n("123"), id, "hi", 5, None).await.expect("store"));
        assert!(!store.store_incoming(&n("123"), id, "hi", 5, None).await.expect("store"));
        assert_eq!(store.history(&n("123"), 10).await.expect("history").len(), 1);
        assert_eq!(store.mark_read(id, true).await.expect("read"), Some(n("123")));
        assert_eq!(store.mark_read(id, true).await.expect("read"), None);
        assert_eq!(store.pending_receipts(&n("123")).await.expect("receipts"), vec![id]);
        assert_eq!(store.peers_with_work().await.expect("work"), vec![n("123")]);
        assert!(store.has_owed(&n("123")).await.expect("owed"));
        assert!(store.receipt_delivered(&n("123"), id).await.expect("ack"));
        assert!(store.pending_receipts(&n("123")).await.expect("receipts").is_empty());
    }
}
