//! Which received texts the user has been shown. A text is acknowledged to its sender once stored,
//! before any front end has shown it; if the process dies in between (the event still queued, or
//! printed into a buffer never flushed), the text is shown at the next start instead of never.
//!
//! A received row starts with `shown = 0`; front ends report what they have shown and the client
//! writes it in batches (`crate::shown`). `shown_mark.below` is a row id below which every
//! received text is shown, so finding the unshown ones at start reads only the rows past it.

use rusqlite::params;
use whatsap2p_proto::{MessageId, Number};

use super::{row_to_message, Store, StoredMessage};
use crate::ClientError;

/// The `shown` column and its mark, added to a database from before them (whose texts count as
/// shown: they were, or were lost before this existed).
pub(super) fn upgrade(conn: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    let has_column =
        conn.prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'shown'")?.exists([])?;
    if !has_column {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1")?;
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS shown_mark (
             one INTEGER PRIMARY KEY CHECK (one = 1),
             below INTEGER NOT NULL
         );
         INSERT OR IGNORE INTO shown_mark (one, below) VALUES (1, 0);",
    )
}

impl Store {
    /// Records that these received texts were shown, in one transaction, and moves the mark past
    /// every text now shown.
    pub(crate) async fn mark_shown(&self, shown: Vec<(Number, MessageId)>) -> Result<(), ClientError> {
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut mark = tx.prepare_cached(
                    "UPDATE messages SET shown = 1 WHERE peer = ?1 AND outgoing = 0 AND id = ?2",
                )?;
                for (peer, id) in &shown {
                    mark.execute(params![peer.as_str(), id.to_string()])?;
                }
            }
            tx.execute(
                "UPDATE shown_mark SET below = COALESCE(
                     (SELECT MIN(rowid) FROM messages
                      WHERE rowid >= shown_mark.below AND outgoing = 0 AND shown = 0),
                     (SELECT MAX(rowid) + 1 FROM messages),
                     below)",
                [],
            )?;
            tx.commit()
        })
        .await
    }

    /// The last row of the messages table now: texts stored from here on are shown as they come.
    pub(crate) async fn last_message_row(&self) -> Result<i64, ClientError> {
        self.with(|c| c.query_row("SELECT COALESCE(MAX(rowid), 0) FROM messages", [], |r| r.get(0))).await
    }

    /// Received texts not shown yet, stored no later than row `upto`, oldest first.
    pub(crate) async fn unshown(&self, upto: i64) -> Result<Vec<StoredMessage>, ClientError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT peer, outgoing, id, text, sent_at_ms, received_at_ms, state, group_id, update_body
                 FROM messages
                 WHERE rowid >= (SELECT below FROM shown_mark) AND rowid <= ?1
                   AND outgoing = 0 AND shown = 0
                 ORDER BY rowid",
            )?;
            let rows = stmt.query_map([upto], row_to_message)?;
            rows.filter_map(Result::transpose).collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use whatsap2p_proto::{MessageId, Number};

    #[tokio::test]
    async fn given_texts_shown_out_of_order_then_only_the_unshown_ones_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("store");
        let peer = Number::new("123").expect("number");
        let ids: Vec<MessageId> = (0..5).map(|_| MessageId::new()).collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(store.store_incoming(&peer, *id, &format!("t{i}"), 1, None).await.expect("store"));
        }
        let upto = store.last_message_row().await.expect("row");
        // The front end showed the second and the fourth first.
        store.mark_shown(vec![(peer.clone(), ids[1]), (peer.clone(), ids[3])]).await.expect("mark");
        let left: Vec<_> = store.unshown(upto).await.expect("unshown").into_iter().map(|m| m.id).collect();
        assert_eq!(left, [ids[0], ids[2], ids[4]]);
        // Stored after `upto`: shown live, not replayed.
        store.store_incoming(&peer, MessageId::new(), "later", 1, None).await.expect("store");
        store.mark_shown(vec![(peer.clone(), ids[0]), (peer.clone(), ids[2])]).await.expect("mark");
        let left: Vec<_> = store.unshown(upto).await.expect("unshown").into_iter().map(|m| m.id).collect();
        assert_eq!(left, [ids[4]]);
        drop(store);
        // Across a reopen, as after a crash.
        let store = Store::open(&dir.path().join("p.sqlite")).expect("store");
        let left: Vec<_> =
            store.unshown(i64::MAX).await.expect("unshown").into_iter().map(|m| m.text).collect();
        assert_eq!(left, ["t4", "later"]);
    }
}
