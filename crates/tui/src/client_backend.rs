//! [`Backend`] for the real client core: each call is one of the core's, its answer put in the
//! UI's terms. The conversation list is `Client::conversations` (one line per conversation the
//! database keeps up to date, however long the history), with the contacts that have no history
//! yet added; a page is `Client::history_page` or `Client::history_after` (texts and files, found
//! through an index from the cursor), one item more than asked to tell whether there are more.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use whatsap2p_client::{
    Change, ChatItem, Client, ClientError, FileState, Group, GroupId, MessageId, MessageState, Number,
    Presence, StoredFile, StoredMessage,
};

use crate::backend::{
    Added, Answer, Backend, BackendError, Body, Chat, Conversation, Entry, FileInfo, Online, Page, PageAt,
    Route,
};
use crate::clock::now_ms;

/// The client core behind the UI.
pub struct ClientBackend {
    client: Client,
}

impl ClientBackend {
    /// Wraps a started client (the UI reads its events itself).
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn online(&self, number: &Number) -> Online {
        match self.client.presence_of(number) {
            Some(Some(_)) => Online::Yes,
            Some(None) => Online::No,
            None => Online::Unknown,
        }
    }
}

/// The core's name for a conversation.
fn core_chat(chat: &Chat) -> whatsap2p_client::Chat {
    match chat {
        Chat::Peer(n) => whatsap2p_client::Chat::Peer(n.clone()),
        Chat::Group(g) => whatsap2p_client::Chat::Group(*g),
    }
}

/// A stored text as the UI shows it.
pub fn text_entry(m: StoredMessage) -> Entry {
    Entry {
        id: m.id,
        from: (!m.outgoing).then_some(m.peer),
        at_ms: m.received_at_ms.unwrap_or(m.sent_at_ms),
        body: Body::Text(m.text),
        state: m.state,
    }
}

/// A stored file as the UI shows it (its picture's size is read later, see [`with_dimensions`]).
pub fn file_entry(f: StoredFile) -> Entry {
    let state = match f.state {
        FileState::Pending => MessageState::Queued,
        FileState::Sent => MessageState::Delivered,
        // Files are not counted unread by the core, nor are read receipts sent for them.
        FileState::Received => MessageState::Read,
        _ => MessageState::Failed,
    };
    let file =
        FileInfo { name: f.name, size: f.size, path: f.path, media_type: f.media_type, dimensions: None };
    Entry { id: f.id, from: (!f.outgoing).then_some(f.peer), at_ms: f.at_ms, body: Body::File(file), state }
}

/// An item of history as the UI shows it.
pub fn entry(item: ChatItem) -> Option<Entry> {
    match item {
        ChatItem::Text(m) => Some(text_entry(m)),
        ChatItem::File(f) => Some(file_entry(f)),
        _ => None,
    }
}

/// Width and height of the picture at `path`, from its header alone.
fn dimensions(path: &Path) -> Option<(u32, u32)> {
    image::ImageReader::open(path).ok()?.with_guessed_format().ok()?.into_dimensions().ok()
}

/// Fills in the size of the pictures among `entries` (a header read each, on a blocking thread).
async fn with_dimensions(entries: &mut [Entry]) {
    let photos: Vec<(usize, PathBuf)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.body {
            Body::File(f) if f.is_photo() && f.dimensions.is_none() => Some((i, f.path.clone())),
            _ => None,
        })
        .collect();
    if photos.is_empty() {
        return;
    }
    let read = tokio::task::spawn_blocking(move || {
        photos.into_iter().map(|(i, path)| (i, dimensions(&path))).collect::<Vec<_>>()
    });
    for (i, dims) in read.await.unwrap_or_default() {
        if let Some(Body::File(f)) = entries.get_mut(i).map(|e| &mut e.body) {
            f.dimensions = dims;
        }
    }
}

/// Cuts one extra item (asked for to learn whether more exist) off the far end of `items`,
/// oldest first: the oldest when paging back, the newest when paging forward.
fn trim(mut items: Vec<ChatItem>, limit: usize, forward: bool) -> (Vec<ChatItem>, bool) {
    let more = items.len() > limit;
    if more {
        if forward {
            items.truncate(limit);
        } else {
            items.drain(..items.len() - limit);
        }
    }
    (items, more)
}

impl Backend for ClientBackend {
    async fn conversations(&self) -> Result<Vec<Conversation>, BackendError> {
        let left: HashSet<GroupId> =
            self.client.groups().await?.into_iter().filter(|g| g.left).map(|g| g.state.id).collect();
        let mut list = Vec::new();
        let contacts = self.client.contacts().await?;
        // Which way the live link to a contact goes, if there is one.
        let route_of = |n: &whatsap2p_client::Number| {
            let path = contacts.iter().find(|c| &c.number == n).and_then(|c| c.path)?;
            Some(if path.is_direct() { Route::Direct } else { Route::Relayed })
        };
        for c in self.client.conversations().await? {
            let (chat, name, online) = match c.chat {
                whatsap2p_client::Chat::Peer(n) => (Chat::Peer(n.clone()), n.to_string(), self.online(&n)),
                whatsap2p_client::Chat::Group(g) => {
                    (Chat::Group(g), c.name.unwrap_or_else(|| g.to_string()), Online::Unknown)
                }
            };
            let mut last: Vec<Entry> = c.last.and_then(entry).into_iter().collect();
            with_dimensions(&mut last).await;
            let route = match &chat {
                Chat::Peer(n) => route_of(n),
                Chat::Group(_) => None,
            };
            list.push(Conversation {
                left: matches!(chat, Chat::Group(g) if left.contains(&g)),
                chat,
                name,
                online,
                route,
                unread: c.unread.min(u64::from(u32::MAX)) as u32,
                last: last.pop(),
                last_activity_ms: c.last_activity_ms,
            });
        }
        // Contacts nobody has written with yet, after every conversation.
        for contact in &contacts {
            let chat = Chat::Peer(contact.number.clone());
            if list.iter().any(|c| c.chat == chat) {
                continue;
            }
            list.push(Conversation {
                name: contact.number.to_string(),
                online: if contact.online.is_some() { Online::Yes } else { self.online(&contact.number) },
                route: route_of(&contact.number),
                unread: 0,
                last: None,
                last_activity_ms: 0,
                left: false,
                chat,
            });
        }
        Ok(list)
    }

    async fn history_page(&self, chat: &Chat, at: PageAt, limit: usize) -> Result<Page, BackendError> {
        let core = core_chat(chat);
        let asked = limit.saturating_add(1);
        let read = match at {
            PageAt::Latest => self.client.history_page(&core, None, asked).await,
            PageAt::Before(id) => self.client.history_page(&core, Some(id), asked).await,
            PageAt::After(id) => self.client.history_after(&core, id, asked).await,
        };
        let items = match read {
            Ok(items) => items,
            // A message the history does not have (one still on its way in): nothing around it.
            Err(ClientError::UnknownMessage(_)) => return Ok(Page::default()),
            Err(e) => return Err(e.into()),
        };
        let (items, more) = trim(items, limit, matches!(at, PageAt::After(_)));
        let mut entries: Vec<Entry> = items.into_iter().filter_map(entry).collect();
        with_dimensions(&mut entries).await;
        Ok(Page { entries, more })
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
        let mut sent = [Entry {
            id: f.id,
            from: None,
            at_ms: now_ms(),
            body: Body::File(file),
            state: MessageState::Queued,
        }];
        with_dimensions(&mut sent).await;
        let [entry] = sent;
        Ok(entry)
    }

    async fn mark_read(&self, ids: &[MessageId]) -> Result<(), BackendError> {
        for id in ids {
            self.client.mark_read(*id).await?;
        }
        Ok(())
    }

    fn shown(&self, texts: &[(Number, MessageId)]) {
        for (from, id) in texts {
            self.client.shown(from, *id);
        }
    }

    fn replay_unshown(&self) {
        self.client.replay_unshown();
    }

    async fn add_contact(&self, number: &Number) -> Result<Added, BackendError> {
        let (new, key) = self.client.add_contact(number, None).await?;
        Ok(Added { new, key })
    }

    async fn ping(&self, number: &Number) -> Result<Presence, BackendError> {
        Ok(self.client.ping(number).await?)
    }

    async fn message_requests(&self) -> Result<Vec<Number>, BackendError> {
        Ok(self.client.requests().await?.into_iter().map(|r| r.from).collect())
    }

    async fn answer_request(&self, number: &Number, answer: Answer) -> Result<bool, BackendError> {
        Ok(match answer {
            Answer::Ignore => self.client.ignore(number).await.map(|()| true)?,
            Answer::Block => self.client.block(number).await?,
            Answer::Unblock => self.client.unblock(number).await?,
        })
    }

    async fn contacts(&self) -> Result<Vec<Presence>, BackendError> {
        let contacts = self.client.contacts().await?;
        Ok(contacts
            .into_iter()
            .map(|c| Presence { number: c.number, online: c.online, key: c.key, path: c.path })
            .collect())
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

    async fn cancel_transfer(&self, id: MessageId) -> Result<(), BackendError> {
        Ok(self.client.cancel_transfer(id).await?)
    }

    async fn logout(self) {
        self.client.logout().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(n: usize) -> Vec<ChatItem> {
        let peer = Number::new("456").expect("number");
        (0..n)
            .map(|i| {
                ChatItem::Text(StoredMessage {
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
            })
            .collect()
    }

    fn names(items: &[ChatItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                ChatItem::Text(m) => m.text.clone(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn given_one_item_more_than_asked_then_the_far_end_goes_and_more_is_said() {
        let (back, more) = trim(texts(4), 3, false);
        assert_eq!((names(&back), more), (vec!["m1".into(), "m2".into(), "m3".into()], true));
        let (forward, more) = trim(texts(4), 3, true);
        assert_eq!((names(&forward), more), (vec!["m0".into(), "m1".into(), "m2".into()], true));
        let (all, more) = trim(texts(3), 3, true);
        assert_eq!((all.len(), more), (3, false));
    }

    #[test]
    fn given_stored_files_then_their_states_read_as_receipts_and_received_ones_are_not_unread() {
        let file = |state| StoredFile {
            id: MessageId::new(),
            peer: Number::new("456").expect("number"),
            outgoing: state != FileState::Received,
            name: "cat.png".into(),
            path: PathBuf::from("/nowhere/cat.png"),
            size: 3,
            media_type: "image/png".into(),
            state,
            at_ms: 7,
        };
        let states: Vec<(MessageState, bool)> = [
            FileState::Pending,
            FileState::Sent,
            FileState::Failed,
            FileState::Cancelled,
            FileState::Received,
        ]
        .into_iter()
        .map(|s| {
            let e = file_entry(file(s));
            (e.state, e.from.is_some())
        })
        .collect();
        assert_eq!(
            states,
            [
                (MessageState::Queued, false),
                (MessageState::Delivered, false),
                (MessageState::Failed, false),
                (MessageState::Failed, false),
                (MessageState::Read, true),
            ]
        );
    }
}
