//! What comes into the [`App`] from outside: the answers to its requests and the client's events.

use super::*;
use whatsap2p_client::{FileFailCode, RequestItem};

impl App {
    /// The answer to a request.
    pub fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Conversations(Ok(list)) => self.set_conversations(list),
            Outcome::Conversations(Err(e)) => self.complain(format!("cannot list conversations: {e}")),
            Outcome::Page { chat, at, result } => self.page_loaded(chat, at, result),
            Outcome::Sent { chat, result, text } => {
                if let Some(open) = self.open.as_mut().filter(|o| o.chat == chat) {
                    open.sending = open.sending.saturating_sub(1);
                }
                match result {
                    Ok(mut entry) => {
                        if let Some(state) =
                            self.early_states.iter().rev().find(|(id, _)| *id == entry.id).map(|(_, s)| *s)
                        {
                            advance(&mut entry, state);
                        }
                        self.add_entry(chat, entry, false);
                    }
                    Err(e) => {
                        // A refused text comes back to be edited, into the input when it is free.
                        // Nothing is lost: it joins what is being typed there.
                        if let Some(text) = text {
                            let here = self.open.as_ref().is_some_and(|o| o.chat == chat);
                            let editor =
                                if here { &mut self.input } else { self.drafts.entry(chat).or_default() };
                            if editor.is_empty() {
                                editor.set(&text);
                            } else {
                                editor.end();
                                editor.insert(&format!("\n{text}"));
                            }
                        }
                        self.complain(e);
                    }
                }
            }
            Outcome::Marked(Err(e)) => self.complain(format!("read receipts: {e}")),
            Outcome::Marked(Ok(())) => {}
            Outcome::ContactAdded { number, result } => {
                match result {
                    Ok(a) if !a.new => self.say(format!("{number} is already a contact")),
                    Ok(a) => match a.key {
                        Some(k) => self.say(format!("added {number} (key {k})")),
                        None => self.say(format!("added {number} (not registered yet)")),
                    },
                    Err(e) => self.complain(e),
                }
                self.requests.push(Request::Conversations);
            }
            Outcome::Pinged { number, result } => match result {
                Ok(p) => {
                    let online = p.online.is_some();
                    self.set_online(&number, online);
                    match (p.online, p.key) {
                        (Some(addr), _) => self.say(format!("{number} is online ({addr})")),
                        (None, Some(_)) => self.say(format!("{number} is offline")),
                        (None, None) => self.say(format!("{number} is not a whatsap2p user")),
                    }
                }
                Err(e) => self.complain(e),
            },
            Outcome::Contacts(Ok(list)) => {
                for p in &list {
                    self.set_online(&p.number, p.online.is_some());
                }
                if let Some(Overlay::Contacts { list: shown, .. }) = &mut self.overlay {
                    *shown = Some(list);
                }
            }
            Outcome::Contacts(Err(e)) => self.complain(e),
            Outcome::MessageRequests(Ok(from)) => {
                let asked = std::mem::take(&mut self.requests_asked);
                match from.first() {
                    Some(first) => {
                        let list = from.iter().map(Number::as_str).collect::<Vec<_>>().join(", ");
                        self.say(format!(
                            "message requests wait from {list}: /add {first} accepts one, /ignore or /block refuses it"
                        ));
                    }
                    None if asked => self.say("no message requests wait"),
                    None => {}
                }
            }
            Outcome::Answered { number, answer, result } => match (answer, result) {
                (Answer::Ignore, Ok(_)) => {
                    self.say(format!("ignored the request from {number} ({number} is not told)"))
                }
                (Answer::Block, Ok(true)) => self
                    .say(format!("blocked {number}: nothing {number} sends is shown ({number} is not told)")),
                (Answer::Block, Ok(false)) => self.say(format!("{number} was blocked already")),
                (Answer::Unblock, Ok(true)) => {
                    self.say(format!("unblocked {number}: it can write to you again"))
                }
                (Answer::Unblock, Ok(false)) => self.say(format!("{number} was not blocked")),
                (_, Err(e)) => self.complain(e),
            },
            Outcome::MessageRequests(Err(e)) => self.complain(e),
            Outcome::Group(Ok(g)) => {
                let name = crate::text::clean(&g.state.name).into_owned();
                if g.left {
                    self.say(format!("you are no longer in {name}"));
                } else {
                    self.say(format!("group {name}: {} members", g.state.members.len()));
                }
                let chat = Chat::Group(g.state.id);
                self.update_group(&g);
                if !g.left
                    && self.open.as_ref().is_none_or(|o| o.chat != chat)
                    && g.changed_by == self.me.number
                {
                    self.open_chat(chat);
                }
                self.requests.push(Request::Conversations);
            }
            Outcome::Group(Err(e)) => self.complain(e),
            Outcome::Cancelled { id, result } => match result {
                Ok(()) => {
                    self.file_failed(id);
                    self.say("transfer cancelled");
                }
                Err(e) => self.complain(e),
            },
            Outcome::Completed { partial, completion } => {
                let target = match &mut self.overlay {
                    Some(Overlay::Dialog(d)) if d.editor.text() == partial => {
                        Some((&mut d.editor, String::new()))
                    }
                    None => {
                        let prefix = self.input.text().strip_suffix(partial.as_str()).map(str::to_owned);
                        prefix.map(|p| (&mut self.input, p))
                    }
                    _ => None,
                };
                if let Some((editor, prefix)) = target {
                    editor.set(&format!("{prefix}{}", completion.path));
                    if !completion.candidates.is_empty() {
                        let list = completion.candidates.join("  ");
                        self.say(list);
                    }
                }
            }
            Outcome::Photo { id, cells, result } => self.photos.done(id, cells, result),
            Outcome::Lost(e) => self.complain(e),
        }
    }

    fn set_conversations(&mut self, mut list: Vec<Conversation>) {
        // A conversation opened here that the backend does not know yet stays in the list.
        for chat in [self.open.as_ref().map(|o| &o.chat), self.selected.as_ref()].into_iter().flatten() {
            if !list.iter().any(|c| c.chat == *chat) {
                list.push(self.conversation(chat).cloned().unwrap_or_else(|| placeholder(chat)));
            }
        }
        self.conversations = list;
    }

    fn page_loaded(&mut self, chat: Chat, at: PageAt, result: Result<Page, String>) {
        let Some(open) = self.open.as_mut().filter(|o| o.chat == chat) else { return };
        let page = match result {
            Ok(p) => p,
            Err(e) => {
                open.loading = Loading::default();
                self.complain(format!("cannot load history: {e}"));
                return;
            }
        };
        match at {
            PageAt::Latest => {
                open.loading.latest = false;
                // Messages that arrived while the page was on its way are in it, or newer.
                let arrived: Vec<Entry> =
                    open.entries.drain(..).filter(|e| !page.entries.iter().any(|p| p.id == e.id)).collect();
                open.entries = page.entries.into();
                open.entries.extend(arrived);
                open.more_before = page.more;
                open.more_after = false;
                open.scroll = Scroll::Bottom;
                open.first_unread = open
                    .entries
                    .iter()
                    .find(|e| e.from.is_some() && e.state == MessageState::Received)
                    .map(|e| e.id);
                open.jump_to_unread = open.first_unread.is_some();
            }
            PageAt::Before(first) => {
                open.loading.before = false;
                if open.entries.front().map(|e| e.id) != Some(first) {
                    return;
                }
                let n = page.entries.len();
                for e in page.entries.into_iter().rev() {
                    open.entries.push_front(e);
                }
                open.more_before = page.more;
                if let Scroll::At { entry, .. } = &mut open.scroll {
                    *entry += n;
                }
                open.selected = open.selected.map(|s| s + n);
                // Too many: drop the newest, far below the view.
                let excess = open.entries.len().saturating_sub(MAX_WINDOW);
                if let Scroll::At { entry, .. } = open.scroll {
                    let droppable = open.entries.len().saturating_sub(entry + PREFETCH + 1);
                    let drop = excess.min(droppable);
                    if drop > 0 {
                        open.entries.truncate(open.entries.len() - drop);
                        open.more_after = true;
                        open.selected = open.selected.filter(|&s| s < open.entries.len());
                    }
                }
            }
            PageAt::After(last) => {
                open.loading.after = false;
                if open.entries.back().map(|e| e.id) != Some(last) {
                    return;
                }
                let fresh: Vec<Entry> =
                    page.entries.into_iter().filter(|e| !open.entries.iter().any(|o| o.id == e.id)).collect();
                open.entries.extend(fresh);
                open.more_after = page.more;
                self.trim_front();
            }
        }
    }

    /// Drops the oldest messages beyond [`MAX_WINDOW`], far above the view.
    fn trim_front(&mut self) {
        let Some(open) = &mut self.open else { return };
        let excess = open.entries.len().saturating_sub(MAX_WINDOW);
        if excess == 0 {
            return;
        }
        let lowest_needed = match open.scroll {
            Scroll::Bottom => open.entries.len().saturating_sub(PREFETCH * 2),
            Scroll::At { entry, .. } => entry.saturating_sub(PREFETCH * 2),
        };
        let drop = excess.min(lowest_needed);
        if drop == 0 {
            return;
        }
        open.entries.drain(..drop);
        open.more_before = true;
        if let Scroll::At { entry, .. } = &mut open.scroll {
            *entry -= drop;
        }
        open.selected = open.selected.and_then(|s| s.checked_sub(drop));
    }

    // ----------------------------------------------------------------------------------------
    // Client events
    // ----------------------------------------------------------------------------------------

    /// An event from the client core.
    pub fn on_event(&mut self, event: Event) {
        let now = self.now_ms();
        match event {
            Event::Message { id, from, text, group, .. } => {
                let chat = group.map_or_else(|| Chat::Peer(from.clone()), Chat::Group);
                let entry = Entry {
                    id,
                    from: Some(from),
                    at_ms: now,
                    body: Body::Text(text),
                    state: MessageState::Received,
                };
                self.add_entry(chat, entry, true);
            }
            Event::FileIncoming { id, from, name, size, media_type, resumed_from } => {
                self.transfers
                    .entry(id)
                    .and_modify(|t| t.progress(resumed_from, size, now))
                    .or_insert_with(|| Transfer::new(resumed_from, size, now));
                // Its line, with the gauge, until it is on disk (no path: not drawn as a picture yet).
                let file = FileInfo { name, size, path: Default::default(), media_type, dimensions: None };
                let entry = Entry {
                    id,
                    from: Some(from.clone()),
                    at_ms: now,
                    body: Body::File(file),
                    state: MessageState::Read,
                };
                self.add_entry(Chat::Peer(from), entry, false);
            }
            Event::FileReceived { id, from, name, path, size, media_type, dimensions, .. } => {
                self.transfers.remove(&id);
                let file = FileInfo { name, size, path, media_type, dimensions };
                let entry = Entry {
                    id,
                    from: Some(from.clone()),
                    at_ms: now,
                    body: Body::File(file),
                    state: MessageState::Received,
                };
                self.add_entry(Chat::Peer(from), entry, true);
            }
            Event::Delivered { id, to } => {
                // A message that waited as a request is delivered once the request is accepted:
                // said, or the notice that it waits would be the last word.
                if self.state_of(id) == Some(MessageState::Pending) {
                    self.say(format!("{to} accepted your message request"));
                }
                self.set_state(id, MessageState::Delivered);
            }
            Event::Sent { id, .. } => self.set_state(id, MessageState::Sent),
            // Only contacts (and numbers we wrote to first) reach us directly; anything else waits
            // as a message request, which `/add N` accepts. Said here, or it would go unseen.
            Event::Request { from, item } => {
                let what = match item {
                    RequestItem::Text { .. } | RequestItem::GroupText { .. } => "a message",
                    RequestItem::File { .. } => "a file",
                    RequestItem::Group { .. } => "a group invitation",
                    _ => "something",
                };
                self.say(format!(
                    "{from}, not a contact, sent you {what}: /add {from} accepts it, /block {from} blocks"
                ));
            }
            Event::Pending { id, to } => {
                self.set_state(id, MessageState::Pending);
                self.say(format!("{to} has not added you as a contact: it waits until {to} accepts"));
            }
            Event::Read { id, .. } => self.set_state(id, MessageState::Read),
            Event::Failed { id, to, reason } => {
                self.set_state(id, MessageState::Failed);
                self.complain(format!("message to {to} failed: {reason}"));
            }
            Event::Presence { number, online } => self.set_online(&number, online.is_some()),
            Event::Group(g) => {
                self.update_group(&g);
                self.requests.push(Request::Conversations);
            }
            Event::Warning { message } => self.complain(format!("warning: {message}")),
            Event::DirectoryLost { reason } => {
                self.directory = Directory::Reconnecting;
                self.complain(format!("lost the directory ({reason}); reconnecting"));
            }
            Event::Reconnected => {
                self.directory = Directory::Connected;
                self.say("reconnected to the directory");
            }
            Event::Replaced { message } => {
                self.directory = Directory::Replaced;
                self.complain(message);
            }
            Event::Progress { id, bytes, total, .. } => {
                self.transfers
                    .entry(id)
                    .and_modify(|t| t.progress(bytes, total, now))
                    .or_insert_with(|| Transfer::new(bytes, total, now));
            }
            Event::FileSent { id, to, .. } => {
                self.transfers.remove(&id);
                self.set_state(id, MessageState::Delivered);
                self.say(format!("file delivered to {to}"));
            }
            Event::FileFailed { id, peer, outgoing, reason, code } => {
                let cancelled = code == Some(FileFailCode::Cancelled);
                let over = outgoing || code.is_some_and(FileFailCode::is_final);
                if over {
                    self.file_failed(id);
                    if outgoing {
                        self.set_state(id, MessageState::Failed);
                    }
                } else {
                    // The sender tries again; its next attempt brings the gauge back.
                    self.transfers.remove(&id);
                }
                match (outgoing, cancelled) {
                    (true, true) => self.say(format!("the file to {peer} was cancelled")),
                    (false, true) => self.say(format!("the file from {peer} was cancelled")),
                    (true, false) => self.complain(format!("sending a file to {peer} failed: {reason}")),
                    (false, false) if over => {
                        self.complain(format!("receiving a file from {peer} failed: {reason}"))
                    }
                    (false, false) => self.complain(format!(
                        "receiving a file from {peer} failed ({reason}); it resumes when they retry"
                    )),
                }
            }
            _ => {}
        }
    }

    /// A message (received, or ours once stored) for `chat`: into the window when it shows the
    /// newest messages, and to the top of the list.
    fn add_entry(&mut self, chat: Chat, entry: Entry, incoming: bool) {
        let now = self.now_ms();
        match self.index_of(&chat) {
            Some(i) => {
                let mut c = self.conversations.remove(i);
                c.last = Some(entry.clone());
                c.last_activity_ms = now;
                if incoming {
                    c.unread += 1;
                }
                self.conversations.insert(0, c);
            }
            None => {
                let mut c = placeholder(&chat);
                c.last = Some(entry.clone());
                c.last_activity_ms = now;
                c.unread = u32::from(incoming);
                self.conversations.insert(0, c);
                if matches!(chat, Chat::Group(_)) {
                    self.requests.push(Request::Conversations);
                }
            }
        }
        if let Some(open) = self.open.as_mut().filter(|o| o.chat == chat) {
            match open.position(entry.id) {
                // A file that was on its way, now saved: its line becomes the file.
                Some(i) if incoming => open.entries[i] = entry,
                Some(_) => {}
                None if open.more_after => {}
                None => {
                    open.entries.push_back(entry);
                    self.trim_front();
                }
            }
        }
    }

    /// A file transfer over for good without the file (cancelled, refused, bad): its gauge goes
    /// and its line gets a ✗, whichever way it was going.
    fn file_failed(&mut self, id: MessageId) {
        self.transfers.remove(&id);
        let fail = |e: &mut Entry| {
            if e.id == id && matches!(e.body, Body::File(_)) {
                e.state = MessageState::Failed;
            }
        };
        if let Some(open) = &mut self.open {
            open.entries.iter_mut().for_each(fail);
        }
        self.conversations.iter_mut().filter_map(|c| c.last.as_mut()).for_each(fail);
    }

    /// The state shown for our message `id`, if it is on screen or last in a conversation.
    fn state_of(&self, id: MessageId) -> Option<MessageState> {
        let open = self.open.as_ref().and_then(|o| o.position(id).map(|i| o.entries[i].state));
        open.or_else(|| {
            self.conversations.iter().filter_map(|c| c.last.as_ref()).find(|l| l.id == id).map(|l| l.state)
        })
    }

    fn set_state(&mut self, id: MessageId, state: MessageState) {
        // A group message has a receipt per member: one member's does not speak for the group.
        let per_member = matches!(state, MessageState::Delivered | MessageState::Read);
        let mut found = false;
        if let Some(open) = &mut self.open {
            if let Some(i) = open.position(id) {
                if !(per_member && matches!(open.chat, Chat::Group(_))) {
                    advance(&mut open.entries[i], state);
                }
                found = true;
            }
        }
        for c in &mut self.conversations {
            if let Some(last) = c.last.as_mut().filter(|l| l.id == id) {
                if !(per_member && matches!(c.chat, Chat::Group(_))) {
                    advance(last, state);
                }
                found = true;
            }
        }
        if !found {
            if self.early_states.len() == EARLY_STATES {
                self.early_states.pop_front();
            }
            self.early_states.push_back((id, state));
        }
    }

    fn set_online(&mut self, number: &Number, online: bool) {
        for c in &mut self.conversations {
            if c.chat == Chat::Peer(number.clone()) {
                c.online = if online { Online::Yes } else { Online::No };
            }
        }
        if let Some(Overlay::Contacts { list: Some(list), .. }) = &mut self.overlay {
            for p in list.iter_mut().filter(|p| p.number == *number) {
                if !online {
                    p.online = None;
                }
            }
        }
    }

    fn update_group(&mut self, g: &whatsap2p_client::Group) {
        let chat = Chat::Group(g.state.id);
        match self.conversations.iter_mut().find(|c| c.chat == chat) {
            Some(c) => {
                c.name = g.state.name.clone();
                c.left = g.left;
            }
            None => {
                let mut c = placeholder(&chat);
                c.name = g.state.name.clone();
                c.left = g.left;
                self.conversations.push(c);
            }
        }
    }
}
