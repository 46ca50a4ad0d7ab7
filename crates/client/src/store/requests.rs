//! Message requests: what strangers sent, held until the user accepts, ignores or blocks them (see
//! `crate::requests`). Bounded per number and in all; a request's age ends it too.

use rusqlite::{params, OptionalExtension};
use whatsap2p_proto::group::{GroupId, SignedGroupState};
use whatsap2p_proto::{MessageId, Number};

use super::{now_ms, Store};
use crate::ClientError;

/// Most items held for one requesting number. Past it an item is answered as held but not kept:
/// the sender writes it again once the request is accepted, so nothing is lost.
pub const MAX_ITEMS_PER_REQUEST: i64 = 50;
/// Most items held for all requests together (at most 32 KiB each: 32 MiB of texts at worst).
pub const MAX_HELD_ITEMS: i64 = 1000;
/// A request whose first item is this old is dropped, as if ignored.
pub const REQUEST_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// An item of a message request, as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestItem {
    /// A text.
    Text {
        /// Its id.
        id: MessageId,
        /// The text.
        text: String,
        /// The sender's clock when written.
        sent_at_ms: u64,
    },
    /// A file offered (nothing of its content is kept).
    File {
        /// The transfer's id.
        id: MessageId,
        /// The name offered.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The media type the sender announced.
        media_type: String,
    },
    /// An invitation to a group.
    Group {
        /// The group.
        id: GroupId,
        /// Its name.
        name: String,
        /// Its members.
        members: Vec<Number>,
    },
    /// A text to the group of a held invitation, from one of its members.
    GroupText {
        /// The group.
        group: GroupId,
        /// Who wrote it.
        from: Number,
        /// Its id.
        id: MessageId,
        /// The text.
        text: String,
        /// The sender's clock when written.
        sent_at_ms: u64,
    },
}

/// A message request: a number that is not a contact, and what it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The number.
    pub from: Number,
    /// When its first item came (our clock).
    pub first_at_ms: u64,
    /// What it sent, in the order it came.
    pub items: Vec<RequestItem>,
}

/// What is kept of an item, as the client needs it back at acceptance.
#[derive(Clone, Debug)]
pub(crate) enum Held {
    Text { id: MessageId, text: String, sent_at_ms: u64 },
    File { id: MessageId, name: String, size: u64, media_type: String },
    Group { id: MessageId, update: SignedGroupState },
    GroupText { group: GroupId, id: MessageId, text: String, sent_at_ms: u64 },
}

/// How holding an item went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Kept: the user is to be told.
    New,
    /// Kept already (the sender wrote it again).
    Again,
    /// Over a limit: not kept.
    Full,
}

impl Held {
    fn kind(&self) -> i64 {
        match self {
            Held::Text { .. } => 0,
            Held::File { .. } => 1,
            Held::Group { .. } => 2,
            Held::GroupText { .. } => 3,
        }
    }

    pub(crate) fn id(&self) -> MessageId {
        match self {
            Held::Text { id, .. }
            | Held::File { id, .. }
            | Held::Group { id, .. }
            | Held::GroupText { id, .. } => *id,
        }
    }

    /// The item as the user sees it, sent by `sender`.
    pub(crate) fn shown(&self, sender: &Number) -> RequestItem {
        match self.clone() {
            Held::Text { id, text, sent_at_ms } => RequestItem::Text { id, text, sent_at_ms },
            Held::File { id, name, size, media_type } => RequestItem::File { id, name, size, media_type },
            Held::Group { update, .. } => RequestItem::Group {
                id: update.state.id,
                name: update.state.name,
                members: update.state.members.into_iter().collect(),
            },
            Held::GroupText { group, id, text, sent_at_ms } => {
                RequestItem::GroupText { group, from: sender.clone(), id, text, sent_at_ms }
            }
        }
    }
}

/// The columns an item is read back from.
const ITEM_COLUMNS: &str = "sender, kind, id, sent_at_ms, text, group_id, size, media_type, body";

/// Reads an item row; `None` for one that no longer parses (edited by hand), which is skipped.
fn row_to_item(r: &rusqlite::Row<'_>) -> Result<Option<(Number, Held)>, rusqlite::Error> {
    let (sender, kind, id): (String, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
    let (Ok(sender), Ok(id)) = (Number::new(&sender), id.parse::<MessageId>()) else { return Ok(None) };
    let sent_at_ms = r.get::<_, i64>(3)? as u64;
    let text: String = r.get(4)?;
    let group = r.get::<_, Option<String>>(5)?.and_then(|g| g.parse::<GroupId>().ok());
    let held = match kind {
        0 => Held::Text { id, text, sent_at_ms },
        1 => Held::File { id, name: text, size: r.get::<_, i64>(6)? as u64, media_type: r.get(7)? },
        2 => {
            let body: Option<Vec<u8>> = r.get(8)?;
            match body.and_then(|b| postcard::from_bytes(&b).ok()) {
                Some(update) => Held::Group { id, update },
                None => return Ok(None),
            }
        }
        3 => match group {
            Some(group) => Held::GroupText { group, id, text, sent_at_ms },
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some((sender, held)))
}

/// The items of `peer`'s request, in the order they came.
fn items_of(c: &rusqlite::Connection, peer: &str) -> Result<Vec<(Number, Held)>, rusqlite::Error> {
    let sql = format!("SELECT {ITEM_COLUMNS} FROM request_items WHERE peer = ?1 ORDER BY seq");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![peer], row_to_item)?;
    rows.filter_map(|r| r.transpose()).collect()
}

/// Drops requests past their age, and their items.
fn expire(c: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    let before = now_ms() - REQUEST_TTL_MS;
    c.execute(
        "DELETE FROM request_items WHERE peer IN (SELECT peer FROM requests WHERE first_at_ms < ?1)",
        params![before],
    )?;
    c.execute("DELETE FROM requests WHERE first_at_ms < ?1", params![before])?;
    Ok(())
}

fn delete_request(c: &rusqlite::Connection, peer: &str) -> Result<bool, rusqlite::Error> {
    c.execute("DELETE FROM request_items WHERE peer = ?1", params![peer])?;
    Ok(c.execute("DELETE FROM requests WHERE peer = ?1", params![peer])? == 1)
}

impl Store {
    /// Holds `item`, sent by `sender`, in `peer`'s request (the sender itself, or for a group text
    /// the number whose invitation is held), within the limits.
    pub(crate) async fn hold(&self, peer: &Number, sender: &Number, item: Held) -> Result<Hold, ClientError> {
        let (peer, sender) = (peer.to_string(), sender.to_string());
        let body = match &item {
            Held::Group { update, .. } => {
                Some(postcard::to_allocvec(update).map_err(|e| ClientError::Group(e.to_string()))?)
            }
            _ => None,
        };
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            expire(&tx)?;
            let (kind, id) = (item.kind(), item.id().to_string());
            let again: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM request_items WHERE sender = ?1 AND kind = ?2 AND id = ?3)",
                params![sender, kind, id],
                |r| r.get(0),
            )?;
            if again {
                return Ok(Hold::Again);
            }
            let (mine, all): (i64, i64) = tx.query_row(
                "SELECT (SELECT COUNT(*) FROM request_items WHERE peer = ?1), (SELECT COUNT(*) FROM request_items)",
                params![peer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if mine >= MAX_ITEMS_PER_REQUEST || all >= MAX_HELD_ITEMS {
                return Ok(Hold::Full);
            }
            let now = now_ms();
            tx.execute("INSERT OR IGNORE INTO requests (peer, first_at_ms) VALUES (?1, ?2)", params![peer, now])?;
            let (sent_at, text, group, size, media_type) = match &item {
                Held::Text { text, sent_at_ms, .. } => (*sent_at_ms, text.clone(), None, 0, String::new()),
                Held::File { name, size, media_type, .. } => (0, name.clone(), None, *size, media_type.clone()),
                Held::Group { update, .. } => (0, String::new(), Some(update.state.id), 0, String::new()),
                Held::GroupText { group, text, sent_at_ms, .. } => {
                    (*sent_at_ms, text.clone(), Some(*group), 0, String::new())
                }
            };
            tx.execute(
                "INSERT INTO request_items (peer, sender, kind, id, at_ms, sent_at_ms, text, group_id, size, media_type, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    peer,
                    sender,
                    kind,
                    id,
                    now,
                    sent_at as i64,
                    text,
                    group.map(|g| g.to_string()),
                    size as i64,
                    media_type,
                    body
                ],
            )?;
            tx.commit()?;
            Ok(Hold::New)
        })
        .await
    }

    /// The number whose held invitation names `group`, if one does.
    pub(crate) async fn held_invitation(&self, group: GroupId) -> Result<Option<Number>, ClientError> {
        let group = group.to_string();
        let peer: Option<String> = self
            .with(move |c| {
                c.query_row(
                    "SELECT peer FROM request_items WHERE group_id = ?1 AND kind = 2 LIMIT 1",
                    params![group],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        Ok(peer.and_then(|p| Number::new(&p).ok()))
    }

    /// Takes `peer`'s request: its items in the order they came, each with its sender; `None`
    /// without one.
    pub(crate) async fn take_request(
        &self,
        peer: &Number,
    ) -> Result<Option<Vec<(Number, Held)>>, ClientError> {
        let peer = peer.to_string();
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            let items = items_of(&tx, &peer)?;
            let had = delete_request(&tx, &peer)?;
            tx.commit()?;
            Ok(had.then_some(items))
        })
        .await
    }

    /// Drops `peer`'s request and its items; false without one.
    pub(crate) async fn drop_request(&self, peer: &Number) -> Result<bool, ClientError> {
        let peer = peer.to_string();
        self.with(move |c| delete_request(c, &peer)).await
    }

    /// Every request waiting, the oldest first (past their age: dropped).
    pub async fn requests(&self) -> Result<Vec<Request>, ClientError> {
        self.with(|c| {
            expire(c)?;
            let peers: Vec<(String, i64)> = c
                .prepare("SELECT peer, first_at_ms FROM requests ORDER BY first_at_ms, peer")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(peers.len());
            for (peer, first) in peers {
                let Ok(from) = Number::new(&peer) else { continue };
                let items = items_of(c, &peer)?.iter().map(|(sender, held)| held.shown(sender)).collect();
                out.push(Request { from, first_at_ms: first as u64, items });
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    fn text(i: u64) -> Held {
        Held::Text { id: MessageId::new(), text: format!("t{i}"), sent_at_ms: i }
    }

    #[tokio::test]
    async fn given_many_items_then_each_request_and_the_whole_are_bounded_and_a_retry_is_kept_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        let first = Held::Text { id: MessageId::new(), text: "hi".into(), sent_at_ms: 1 };
        assert_eq!(store.hold(&n("301"), &n("301"), first.clone()).await.expect("hold"), Hold::New);
        assert_eq!(store.hold(&n("301"), &n("301"), first).await.expect("hold"), Hold::Again);
        for i in 1..MAX_ITEMS_PER_REQUEST as u64 {
            assert_eq!(store.hold(&n("301"), &n("301"), text(i)).await.expect("hold"), Hold::New);
        }
        assert_eq!(store.hold(&n("301"), &n("301"), text(99)).await.expect("hold"), Hold::Full);
        // Fill the rest of the total with other numbers; then nobody gets more in.
        let mut held = MAX_ITEMS_PER_REQUEST;
        let mut peer = 400;
        while held < MAX_HELD_ITEMS {
            let p = n(&peer.to_string());
            for i in 0..MAX_ITEMS_PER_REQUEST.min(MAX_HELD_ITEMS - held) as u64 {
                assert_eq!(store.hold(&p, &p, text(i)).await.expect("hold"), Hold::New);
                held += 1;
            }
            peer += 1;
        }
        assert_eq!(store.hold(&n("999"), &n("999"), text(1)).await.expect("hold"), Hold::Full);
        let list = store.requests().await.expect("list");
        assert_eq!(list.len() as i64, MAX_HELD_ITEMS / MAX_ITEMS_PER_REQUEST);
        assert!(list.iter().all(|r| r.from != n("999")), "no request without an item");
        let items = store.take_request(&n("301")).await.expect("take").expect("a request");
        assert_eq!(items.len() as i64, MAX_ITEMS_PER_REQUEST);
        assert!(matches!(&items[0].1, Held::Text { text, .. } if text == "hi"), "in the order they came");
        assert!(store.take_request(&n("301")).await.expect("take").is_none(), "taken once");
        // Room again for one more number.
        assert_eq!(store.hold(&n("999"), &n("999"), text(1)).await.expect("hold"), Hold::New);
    }

    #[tokio::test]
    async fn given_an_old_request_then_it_is_dropped_at_the_next_look() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.sqlite")).expect("open");
        store.hold(&n("301"), &n("301"), text(1)).await.expect("hold");
        store
            .with(|c| {
                c.execute("UPDATE requests SET first_at_ms = ?1", params![now_ms() - REQUEST_TTL_MS - 1])
            })
            .await
            .expect("age it");
        assert!(store.requests().await.expect("list").is_empty());
        assert!(!store.drop_request(&n("301")).await.expect("drop"), "gone with its items");
    }
}
