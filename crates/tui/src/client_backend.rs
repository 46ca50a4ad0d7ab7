//! [`Backend`] for the real client core, on the core's API as it is today.
//!
//! Two calls are built from what the core offers now and will be replaced when it grows them:
//! - the conversation list comes from the contacts, the groups and the last [`UNREAD_SCAN`]
//!   messages of each (last message, unread count); someone who wrote to us without being a
//!   contact appears when their message arrives, not at start;
//! - a page of history before or after a message reads the last messages with the whole
//!   conversation and cuts the page out of them, widening the read until it holds that message,
//!   so it costs the length of the conversation rather than of the page.
//!
//! Files are not in the core's history yet: the adapter remembers those sent and received while it
//! runs (at most [`FILES_KEPT`] per peer, from the events it passes on) and adds them to the latest
//! page of their conversation. Cancelling a transfer is not in the core yet.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use whatsap2p_client::{
    Change, Client, Event, Group, GroupId, MessageId, MessageState, Number, Presence, StoredMessage,
};

use crate::backend::{
    Added, Backend, BackendError, Body, Chat, Conversation, Entry, FileInfo, Online, Page, PageAt, Route,
};
use crate::clock::now_ms;

/// Messages read per conversation to find its last message and count its unread ones (an older
/// unread message is not counted).
pub const UNREAD_SCAN: usize = 500;
/// Most messages read to find the page around a message.
pub const MAX_SCAN: usize = 1_000_000;
/// Files remembered per peer (see the module documentation).
pub const FILES_KEPT: usize = 100;
/// Events waiting between the client and the UI (the client's own queue holds as many).
const EVENT_QUEUE: usize = 1024;

/// Files of this run, by peer, oldest first.
type Files = Arc<Mutex<HashMap<Number, VecDeque<Entry>>>>;

/// The client core behind the UI.
pub struct ClientBackend {
    client: Client,
    files: Files,
    /// Passes the client's events on, noting files; ends with the client's event stream.
    relay: JoinHandle<()>,
}

fn lock(files: &Files) -> std::sync::MutexGuard<'_, HashMap<Number, VecDeque<Entry>>> {
    files.lock().unwrap_or_else(|p| p.into_inner())
}

fn remember(files: &Files, peer: &Number, entry: Entry) {
    let mut files = lock(files);
    let kept = files.entry(peer.clone()).or_default();
    if kept.len() == FILES_KEPT {
        kept.pop_front();
    }
    kept.push_back(entry);
}

fn set_file_state(files: &Files, id: MessageId, state: MessageState) {
    for entry in lock(files).values_mut().flat_map(|k| k.iter_mut()).filter(|e| e.id == id) {
        entry.state = state;
    }
}

/// Notes what an event says about files, before the UI gets it.
fn note(files: &Files, event: &Event) {
    match event {
        Event::FileReceived { id, from, name, path, size, media_type, dimensions, .. } => {
            let file = FileInfo {
                name: name.clone(),
                size: *size,
                path: path.clone(),
                media_type: media_type.clone(),
                dimensions: *dimensions,
            };
            let entry = Entry {
                id: *id,
                from: Some(from.clone()),
                at_ms: now_ms(),
                body: Body::File(file),
                state: MessageState::Received,
            };
            remember(files, from, entry);
        }
        Event::FileSent { id, .. } => set_file_state(files, *id, MessageState::Delivered),
        Event::FileFailed { id, outgoing: true, .. } => set_file_state(files, *id, MessageState::Failed),
        _ => {}
    }
}

impl ClientBackend {
    /// Wraps a started client and its events; returns the events for the UI.
    pub fn new(client: Client, mut events: mpsc::Receiver<Event>) -> (Self, mpsc::Receiver<Event>) {
        let files = Files::default();
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let noted = files.clone();
        let relay = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                note(&noted, &event);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        (Self { client, files, relay }, rx)
    }

    /// The files of this run with `chat`'s peer.
    fn files_of(&self, chat: &Chat) -> Vec<Entry> {
        match chat {
            Chat::Peer(n) => {
                lock(&self.files).get(n).map(|k| k.iter().cloned().collect()).unwrap_or_default()
            }
            Chat::Group(_) => Vec::new(),
        }
    }

    async fn history(&self, chat: &Chat, limit: usize) -> Result<Vec<StoredMessage>, BackendError> {
        Ok(match chat {
            Chat::Peer(n) => self.client.history(n, limit).await?,
            Chat::Group(id) => self.client.group_history(*id, limit).await?,
        })
    }

    fn online(&self, number: &Number) -> Online {
        match self.client.presence_of(number) {
            Some(Some(_)) => Online::Yes,
            Some(None) => Online::No,
            None => Online::Unknown,
        }
    }
}

/// A stored message as the UI shows it.
pub fn entry(m: StoredMessage) -> Entry {
    Entry {
        id: m.id,
        from: (!m.outgoing).then_some(m.peer),
        at_ms: m.received_at_ms.unwrap_or(m.sent_at_ms),
        body: Body::Text(m.text),
        state: m.state,
    }
}

/// The last message and the unread count of a conversation's recent history.
fn summary(history: Vec<StoredMessage>) -> (Option<Entry>, u32, u64) {
    let unread = history.iter().filter(|m| !m.outgoing && m.state == MessageState::Received).count() as u32;
    let last = history.into_iter().next_back().map(entry);
    let at = last.as_ref().map_or(0, |e| e.at_ms);
    (last, unread, at)
}

/// Cuts the page `at` out of `history` (oldest first, the newest of the conversation last);
/// `None` when `history` does not reach far enough back to hold it.
pub fn cut(history: &[StoredMessage], at: PageAt, limit: usize, complete: bool) -> Option<Page> {
    let page = |range: std::ops::Range<usize>, more: bool| Page {
        entries: history[range].iter().cloned().map(entry).collect(),
        more,
    };
    match at {
        PageAt::Latest => {
            let start = history.len().saturating_sub(limit);
            Some(page(start..history.len(), start > 0 || !complete))
        }
        PageAt::Before(id) => match history.iter().position(|m| m.id == id) {
            Some(pos) if pos >= limit || complete => {
                let start = pos.saturating_sub(limit);
                Some(page(start..pos, start > 0 || !complete))
            }
            Some(_) => None,
            None if complete => Some(Page::default()),
            None => None,
        },
        PageAt::After(id) => match history.iter().position(|m| m.id == id) {
            Some(pos) => {
                let end = (pos + 1 + limit).min(history.len());
                Some(page(pos + 1..end, end < history.len()))
            }
            None if complete => Some(Page::default()),
            None => None,
        },
    }
}

impl Backend for ClientBackend {
    async fn conversations(&self) -> Result<Vec<Conversation>, BackendError> {
        let mut list = Vec::new();
        for contact in self.client.contacts().await? {
            let chat = Chat::Peer(contact.number.clone());
            let (mut last, mut unread, mut at) = summary(self.history(&chat, UNREAD_SCAN).await?);
            let files = self.files_of(&chat);
            unread += files.iter().filter(|f| f.state == MessageState::Received).count() as u32;
            if let Some(f) = files.last().filter(|f| f.at_ms >= at) {
                (last, at) = (Some(f.clone()), f.at_ms);
            }
            list.push(Conversation {
                name: contact.number.to_string(),
                online: if contact.online.is_some() { Online::Yes } else { self.online(&contact.number) },
                route: contact.path.map(|p| if p.is_direct() { Route::Direct } else { Route::Relayed }),
                unread,
                last,
                last_activity_ms: at,
                left: false,
                chat,
            });
        }
        for group in self.client.groups().await? {
            let chat = Chat::Group(group.state.id);
            let (last, unread, at) = summary(self.history(&chat, UNREAD_SCAN).await?);
            list.push(Conversation {
                name: group.state.name,
                online: Online::Unknown,
                route: None,
                unread,
                last,
                last_activity_ms: at,
                left: group.left,
                chat,
            });
        }
        list.sort_by(|a, b| b.last_activity_ms.cmp(&a.last_activity_ms).then_with(|| a.name.cmp(&b.name)));
        Ok(list)
    }

    async fn history_page(&self, chat: &Chat, at: PageAt, limit: usize) -> Result<Page, BackendError> {
        // The latest page needs one more message than it shows (to say whether there are more);
        // a page around a message needs that message, somewhere further back.
        let mut scan = if at == PageAt::Latest { limit + 1 } else { 4 * limit.max(1) };
        let mut page = loop {
            let history = self.history(chat, scan).await?;
            let complete = history.len() < scan || scan >= MAX_SCAN;
            if let Some(page) = cut(&history, at, limit, complete) {
                break page;
            }
            scan = (scan * 4).min(MAX_SCAN);
        };
        if at == PageAt::Latest {
            // This run's files go with the latest page, where they belong by time.
            let since = if page.more { page.entries.first().map_or(0, |e| e.at_ms) } else { 0 };
            page.entries.extend(self.files_of(chat).into_iter().filter(|f| f.at_ms >= since));
            page.entries.sort_by_key(|e| e.at_ms);
        }
        Ok(page)
    }

    async fn send_text(&self, chat: &Chat, text: &str) -> Result<Entry, BackendError> {
        let (id, state) = match chat {
            Chat::Peer(to) => {
                let (id, outcome) = self.client.send(to, text).await?;
                let state = match outcome {
                    whatsap2p_client::SendOutcome::Sent => MessageState::Sent,
                    whatsap2p_client::SendOutcome::Queued { .. } => MessageState::Queued,
                };
                (id, state)
            }
            Chat::Group(id) => (self.client.send_group(*id, text).await?.0, MessageState::Sent),
        };
        Ok(Entry { id, from: None, at_ms: now_ms(), body: Body::Text(text.to_owned()), state })
    }

    async fn send_file(&self, chat: &Chat, path: &Path) -> Result<Entry, BackendError> {
        let Chat::Peer(to) = chat else { return Err(BackendError::Unsupported("sending a file to a group")) };
        let f = self.client.send_file(to, path).await?;
        let file =
            FileInfo { name: f.name, size: f.size, path: f.path, media_type: f.media_type, dimensions: None };
        Ok(Entry {
            id: f.id,
            from: None,
            at_ms: now_ms(),
            body: Body::File(file),
            state: MessageState::Queued,
        })
    }

    async fn mark_read(&self, ids: &[MessageId]) -> Result<(), BackendError> {
        for id in ids {
            set_file_state(&self.files, *id, MessageState::Read);
            self.client.mark_read(*id).await?;
        }
        Ok(())
    }

    async fn add_contact(&self, number: &Number) -> Result<Added, BackendError> {
        let (new, key) = self.client.add_contact(number).await?;
        Ok(Added { new, key })
    }

    async fn ping(&self, number: &Number) -> Result<Presence, BackendError> {
        Ok(self.client.ping(number).await?)
    }

    async fn contacts(&self) -> Result<Vec<Presence>, BackendError> {
        Ok(self.client.contacts().await?)
    }

    async fn group_create(&self, name: &str, members: &[Number]) -> Result<Group, BackendError> {
        Ok(self.client.group_create(name, members).await?)
    }

    async fn group_change(&self, id: GroupId, who: &Number, change: Change) -> Result<Group, BackendError> {
        Ok(self.client.group_change(id, who, change).await?)
    }

    async fn group_leave(&self, id: GroupId) -> Result<Group, BackendError> {
        Ok(self.client.group_leave(id).await?)
    }

    async fn cancel_transfer(&self, _id: MessageId) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("cancelling a transfer"))
    }

    async fn logout(self) {
        self.client.logout().await;
        self.relay.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(n: usize) -> Vec<StoredMessage> {
        let peer = Number::new("456").expect("number");
        (0..n)
            .map(|i| StoredMessage {
                id: MessageId::new(),
                peer: peer.clone(),
                outgoing: i % 2 == 0,
                text: format!("m{i}"),
                sent_at_ms: i as u64,
                received_at_ms: None,
                state: MessageState::Sent,
                group: None,
                update: None,
            })
            .collect()
    }

    fn texts(p: &Page) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| match &e.body {
                Body::Text(t) => t.clone(),
                Body::File(f) => f.name.clone(),
            })
            .collect()
    }

    #[test]
    fn given_a_history_then_pages_are_cut_around_a_message_and_say_if_more_exist() {
        let h = messages(10);
        let latest = cut(&h, PageAt::Latest, 3, true).expect("latest");
        assert_eq!((texts(&latest), latest.more), (vec!["m7".into(), "m8".into(), "m9".into()], true));
        let before = cut(&h, PageAt::Before(h[7].id), 3, true).expect("before");
        assert_eq!((texts(&before), before.more), (vec!["m4".into(), "m5".into(), "m6".into()], true));
        let first = cut(&h, PageAt::Before(h[2].id), 3, true).expect("first page");
        assert_eq!((texts(&first), first.more), (vec!["m0".into(), "m1".into()], false));
        let after = cut(&h, PageAt::After(h[7].id), 3, true).expect("after");
        assert_eq!((texts(&after), after.more), (vec!["m8".into(), "m9".into()], false));
        // A read that does not go back far enough asks for more.
        assert!(cut(&h[5..], PageAt::Before(h[6].id), 3, false).is_none());
        assert!(cut(&h[5..], PageAt::Before(h[1].id), 3, false).is_none());
        assert_eq!(cut(&h, PageAt::Before(MessageId::new()), 3, true), Some(Page::default()));
    }
}
