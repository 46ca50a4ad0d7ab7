//! Keys, mouse and paste into the [`App`]: editing, navigation, commands and dialogs.

use super::*;

impl App {
    /// A terminal event.
    pub fn on_terminal(&mut self, event: TermEvent) {
        match event {
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            TermEvent::Mouse(m) => {
                let at = Position::new(m.column, m.row);
                match m.kind {
                    MouseEventKind::Down(MouseButton::Left) => self.click(at),
                    MouseEventKind::ScrollUp => self.wheel(at, true),
                    MouseEventKind::ScrollDown => self.wheel(at, false),
                    _ => {}
                }
            }
            TermEvent::Paste(text) => {
                let editor = match &mut self.overlay {
                    Some(Overlay::Dialog(d)) => &mut d.editor,
                    _ => &mut self.input,
                };
                if !editor.insert(&text) {
                    self.complain("the paste was cut: the input holds at most 64 KiB");
                }
            }
            TermEvent::FocusGained => self.focused = true,
            TermEvent::FocusLost => self.focused = false,
            _ => {}
        }
    }

    /// A key.
    pub fn on_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            self.quit = true;
            return;
        }
        if self.overlay.is_some() {
            self.overlay_key(key);
            return;
        }
        if key.code != KeyCode::Tab {
            self.notice = None;
        }
        let empty = self.input.is_empty();
        match key.code {
            KeyCode::Tab if self.completing_path().is_some() => {
                if let Some(partial) = self.completing_path() {
                    self.requests.push(Request::Complete(partial));
                }
            }
            KeyCode::Tab => self.step(1),
            KeyCode::BackTab => self.step(-1),
            KeyCode::Char('n') if ctrl => self.step(1),
            KeyCode::Char('p') if ctrl => self.step(-1),
            KeyCode::Char('a') if alt => self.next_unread(),
            KeyCode::F(1) => self.overlay = Some(Overlay::Help { scroll: 0 }),
            // In a conversation `?` is text (a message may start with it); F1 and /help work there.
            KeyCode::Char('?') if empty && self.focus == Focus::List => {
                self.overlay = Some(Overlay::Help { scroll: 0 })
            }
            KeyCode::PageUp => self.page(true),
            KeyCode::PageDown => self.page(false),
            KeyCode::Esc => self.escape(),
            KeyCode::Enter if alt => {
                self.input.insert_char('\n');
            }
            KeyCode::Enter if empty => self.enter_on_empty(),
            KeyCode::Enter => self.submit(),
            KeyCode::Char('x') if ctrl => self.cancel_transfer(),
            KeyCode::Up if empty => self.up(),
            KeyCode::Down if empty => self.down(),
            KeyCode::Char(c @ '1'..='5') if empty && self.focus == Focus::List => self.menu(c),
            KeyCode::Char('l') if ctrl => self.repaint = true,
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('u') if ctrl => self.input.delete_to_home(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char(c) if !ctrl && !alt => {
                if !self.input.insert_char(c) {
                    self.complain("the input holds at most 64 KiB");
                }
                if self.open.is_some() {
                    self.focus = Focus::Chat;
                }
            }
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            _ => {}
        }
    }

    /// The partial path after `/photo ` or `/file ` in the input, if that is what is being typed.
    fn completing_path(&self) -> Option<String> {
        let text = self.input.text();
        ["/photo ", "/file "].iter().find_map(|c| text.strip_prefix(c)).map(|p| p.trim_start().to_owned())
    }

    fn overlay_key(&mut self, key: KeyEvent) {
        let Some(overlay) = self.overlay.as_mut() else { return };
        match overlay {
            Overlay::Help { scroll } => match key.code {
                KeyCode::Down | KeyCode::Char('j') => *scroll = scroll.saturating_add(1),
                KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
                KeyCode::PageDown => *scroll = scroll.saturating_add(10),
                KeyCode::PageUp => *scroll = scroll.saturating_sub(10),
                _ => self.overlay = None,
            },
            Overlay::Photo(_) => self.overlay = None,
            Overlay::Contacts { list, selected } => match key.code {
                KeyCode::Down => {
                    *selected = (*selected + 1).min(list.as_ref().map_or(0, |l| l.len().saturating_sub(1)))
                }
                KeyCode::Up => *selected = selected.saturating_sub(1),
                KeyCode::Enter => {
                    let number = list.as_ref().and_then(|l| l.get(*selected)).map(|p| p.number.clone());
                    self.overlay = None;
                    if let Some(n) = number {
                        self.open_chat(Chat::Peer(n));
                    }
                }
                _ => self.overlay = None,
            },
            Overlay::Dialog(d) => match key.code {
                KeyCode::Esc => self.overlay = None,
                KeyCode::Enter => {
                    let (ask, answer) = (d.ask, d.editor.text().trim().to_owned());
                    self.answer(ask, &answer);
                }
                KeyCode::Tab if d.ask.wants_path() => {
                    self.requests.push(Request::Complete(d.editor.text().to_owned()));
                }
                KeyCode::Backspace => d.editor.backspace(),
                KeyCode::Delete => d.editor.delete(),
                KeyCode::Left => d.editor.left(),
                KeyCode::Right => d.editor.right(),
                KeyCode::Home => d.editor.home(),
                KeyCode::End => d.editor.end(),
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    d.editor.delete_to_home()
                }
                KeyCode::Char('w') if key.modifiers.contains(KeyModifiers::CONTROL) => d.editor.delete_word(),
                KeyCode::Char(c) if !key.modifiers.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {
                    d.editor.insert_char(c);
                }
                _ => {}
            },
        }
    }

    fn ask(&mut self, ask: Ask) {
        self.overlay = Some(Overlay::Dialog(Dialog { ask, editor: Editor::default(), error: None }));
    }

    /// The dialog's answer: run what it was for, or say what is wrong and keep it open.
    fn answer(&mut self, ask: Ask, answer: &str) {
        if answer.is_empty() {
            self.overlay = None;
            return;
        }
        let command = if ask.wants_path() {
            let path = Some(command::expand_home(answer));
            if ask == Ask::Photo {
                Command::Photo(path)
            } else {
                Command::File(path)
            }
        } else {
            match Number::new(answer) {
                Ok(n) => match ask {
                    Ask::Open => Command::Open(Some(n)),
                    Ask::Add => Command::Add(Some(n)),
                    Ask::Ping => Command::Ping(Some(n)),
                    Ask::GroupAdd => Command::GroupAdd(Some(n)),
                    Ask::Ignore => Command::Ignore(Some(n)),
                    Ask::Block => Command::Block(Some(n)),
                    Ask::Unblock => Command::Unblock(Some(n)),
                    _ => Command::GroupRemove(Some(n)),
                },
                Err(e) => {
                    if let Some(Overlay::Dialog(d)) = &mut self.overlay {
                        d.error = Some(format!("'{answer}': {e}"));
                    }
                    return;
                }
            }
        };
        self.overlay = None;
        self.run(command);
    }

    /// The menu's options, typed on an empty input in the list.
    fn menu(&mut self, choice: char) {
        match choice {
            '1' => self.ask(Ask::Ping),
            '2' => self.ask(Ask::Open),
            '3' => self.run(Command::Contacts),
            '4' => self.ask(Ask::Add),
            _ => self.quit = true,
        }
    }

    fn escape(&mut self) {
        if let Some(open) = &mut self.open {
            if open.selected.take().is_some() {
                return;
            }
            if open.scroll != Scroll::Bottom {
                self.back_to_newest();
                return;
            }
        }
        if !self.input.is_empty() && self.focus == Focus::Chat {
            return;
        }
        self.focus = Focus::List;
        self.selected = self.open.as_ref().map(|o| o.chat.clone()).or_else(|| self.selected.clone());
    }

    fn back_to_newest(&mut self) {
        let Some(open) = &mut self.open else { return };
        if open.more_after {
            // The newest messages were dropped from the window: load them again.
            let chat = open.chat.clone();
            *open = OpenChat::new(chat.clone());
            self.requests.push(Request::Page { chat, at: PageAt::Latest, limit: PAGE });
        } else {
            open.scroll = Scroll::Bottom;
        }
    }

    fn enter_on_empty(&mut self) {
        if self.focus == Focus::List {
            if let Some(chat) =
                self.selected.clone().or_else(|| self.conversations.first().map(|c| c.chat.clone()))
            {
                self.open_chat(chat);
            }
            return;
        }
        let Some(open) = &self.open else { return };
        let Some(entry) = open.selected.and_then(|i| open.entries.get(i)) else { return };
        match &entry.body {
            Body::File(f) if f.is_photo() => self.overlay = Some(Overlay::Photo(entry.id)),
            Body::File(f) => {
                let text = format!(
                    "{}: {}",
                    crate::text::clean(&f.name),
                    crate::text::clean(&f.path.to_string_lossy())
                );
                self.say(text);
            }
            Body::Text(_) => {}
        }
    }

    fn up(&mut self) {
        if self.focus == Focus::List {
            self.move_selection(-1);
            return;
        }
        let Some(open) = &mut self.open else { return };
        let len = open.entries.len();
        if len == 0 {
            return;
        }
        let next = match open.selected {
            None => len - 1,
            Some(i) => i.saturating_sub(1),
        };
        open.selected = Some(next);
        self.reveal(next);
    }

    fn down(&mut self) {
        if self.focus == Focus::List {
            self.move_selection(1);
            return;
        }
        let Some(open) = &mut self.open else { return };
        match open.selected {
            Some(i) if i + 1 < open.entries.len() => {
                open.selected = Some(i + 1);
                self.reveal(i + 1);
            }
            Some(_) => {
                open.selected = None;
                self.back_to_newest();
            }
            None => {}
        }
    }

    /// Scrolls so message `i` is on screen.
    fn reveal(&mut self, i: usize) {
        let Some(drawn) = &self.drawn.chat else { return };
        if drawn.whole.contains(&i) {
            return;
        }
        let above = drawn.visible.first().is_none_or(|(first, _, _)| i <= *first);
        let Some(h) =
            self.ctx().and_then(|ctx| self.open.as_ref().map(|o| layout::height(&o.entries, i, &ctx)))
        else {
            return;
        };
        if above {
            self.scroll_by(h as isize);
        } else {
            self.scroll_by(-(h as isize));
        }
    }

    fn move_selection(&mut self, by: isize) {
        if self.conversations.is_empty() {
            return;
        }
        let current = self.selected.as_ref().and_then(|c| self.index_of(c));
        let next = match current {
            None => 0,
            Some(i) => (i as isize + by).clamp(0, self.conversations.len() as isize - 1) as usize,
        };
        self.selected = Some(self.conversations[next].chat.clone());
    }

    /// Opens the next (or previous) conversation of the list.
    fn step(&mut self, by: isize) {
        let n = self.conversations.len();
        if n == 0 {
            return;
        }
        let current =
            self.open.as_ref().map(|o| &o.chat).or(self.selected.as_ref()).and_then(|c| self.index_of(c));
        let next = match current {
            None => 0,
            Some(i) => (i as isize + by).rem_euclid(n as isize) as usize,
        };
        let chat = self.conversations[next].chat.clone();
        self.open_chat(chat);
    }

    /// Opens the next conversation with unread messages.
    fn next_unread(&mut self) {
        let n = self.conversations.len();
        let start = self.open.as_ref().and_then(|o| self.index_of(&o.chat)).map_or(0, |i| i + 1);
        let found = (0..n).map(|k| (start + k) % n).find(|&i| {
            self.conversations[i].unread > 0
                && self.open.as_ref().is_none_or(|o| o.chat != self.conversations[i].chat)
        });
        match found {
            Some(i) => {
                let chat = self.conversations[i].chat.clone();
                self.open_chat(chat);
            }
            None => self.say("no unread messages"),
        }
    }

    fn submit(&mut self) {
        let text = self.input.text().to_owned();
        if let Some(rest) = text.strip_prefix('/') {
            if !rest.starts_with('/') {
                match command::parse(&text) {
                    Ok(command) => {
                        self.input.take();
                        self.run(command);
                    }
                    Err(e) => self.complain(e.to_string()),
                }
                return;
            }
        }
        if text.trim().is_empty() {
            return;
        }
        // `//text` sends `/text`.
        let body = text.strip_prefix('/').filter(|t| t.starts_with('/')).map_or(text.clone(), str::to_owned);
        let Some(open) = &mut self.open else {
            self.complain("open a conversation first: Enter on the list, Tab, or /open NUMBER");
            return;
        };
        self.input.take();
        open.sending += 1;
        self.focus = Focus::Chat;
        let chat = open.chat.clone();
        self.requests.push(Request::SendText { chat, text: body });
    }

    /// Runs a command.
    pub fn run(&mut self, command: Command) {
        let group = match &self.open {
            Some(OpenChat { chat: Chat::Group(id), .. }) => Some(*id),
            _ => None,
        };
        match command {
            Command::Open(Some(n)) => self.open_chat(Chat::Peer(n)),
            Command::Open(None) => self.ask(Ask::Open),
            Command::Add(Some(n)) if n == self.me.number => self.complain("that is your own number"),
            Command::Add(Some(n)) => self.requests.push(Request::AddContact(n)),
            Command::Add(None) => self.ask(Ask::Add),
            Command::Ping(Some(n)) => self.requests.push(Request::Ping(n)),
            Command::Ping(None) => self.ask(Ask::Ping),
            Command::Photo(path) | Command::File(path) if self.open.is_none() => {
                let _ = path;
                self.complain("open the conversation to send it to first");
            }
            Command::Photo(None) => self.ask(Ask::Photo),
            Command::File(None) => self.ask(Ask::File),
            Command::Photo(Some(path)) | Command::File(Some(path)) => {
                if let Some(open) = &mut self.open {
                    open.sending += 1;
                    let chat = open.chat.clone();
                    self.requests.push(Request::SendFile { chat, path });
                }
            }
            Command::GroupNew { name, members } => self.requests.push(Request::GroupCreate { name, members }),
            Command::GroupAdd(_) | Command::GroupRemove(_) | Command::Leave if group.is_none() => {
                self.complain("open the group first")
            }
            Command::GroupAdd(None) => self.ask(Ask::GroupAdd),
            Command::GroupRemove(None) => self.ask(Ask::GroupRemove),
            Command::GroupAdd(Some(who)) => {
                if let Some(id) = group {
                    self.requests.push(Request::GroupChange { id, who, change: Change::Add });
                }
            }
            Command::GroupRemove(Some(who)) => {
                if let Some(id) = group {
                    self.requests.push(Request::GroupChange { id, who, change: Change::Remove });
                }
            }
            Command::Leave => {
                if let Some(id) = group {
                    self.requests.push(Request::GroupLeave(id));
                }
            }
            Command::Contacts => {
                self.overlay = Some(Overlay::Contacts { list: None, selected: 0 });
                self.requests.push(Request::Contacts);
            }
            Command::Requests => {
                self.requests_asked = true;
                self.requests.push(Request::MessageRequests);
            }
            Command::Ignore(None) => self.ask(Ask::Ignore),
            Command::Block(None) => self.ask(Ask::Block),
            Command::Unblock(None) => self.ask(Ask::Unblock),
            Command::Block(Some(n)) if n == self.me.number => self.complain("that is your own number"),
            Command::Ignore(Some(number)) => {
                self.requests.push(Request::AnswerRequest { number, answer: Answer::Ignore })
            }
            Command::Block(Some(number)) => {
                self.requests.push(Request::AnswerRequest { number, answer: Answer::Block })
            }
            Command::Unblock(Some(number)) => {
                self.requests.push(Request::AnswerRequest { number, answer: Answer::Unblock })
            }
            Command::Help => self.overlay = Some(Overlay::Help { scroll: 0 }),
            Command::Quit => self.quit = true,
        }
    }

    fn cancel_transfer(&mut self) {
        let Some(open) = &self.open else { return };
        // A file on its way, either way, or one of ours still waiting for its recipient.
        let cancellable = |e: &&Entry| {
            self.transfers.contains_key(&e.id)
                || (e.from.is_none() && matches!(e.body, Body::File(_)) && e.state == MessageState::Queued)
        };
        let selected = open.selected.and_then(|i| open.entries.get(i)).filter(cancellable);
        let target = selected.or_else(|| open.entries.iter().rev().find(cancellable)).map(|e| e.id);
        match target {
            Some(id) => self.requests.push(Request::CancelTransfer(id)),
            None => self.say("no transfer to cancel here"),
        }
    }

    fn click(&mut self, at: Position) {
        if self.overlay.is_some() {
            self.overlay = None;
            return;
        }
        if let Some((area, rows)) = &self.drawn.list {
            if area.contains(at) {
                let hit = rows.iter().rev().find(|(y, _)| *y <= at.y).map(|(_, chat)| chat.clone());
                if let Some(chat) = hit {
                    self.open_chat(chat);
                }
                return;
            }
        }
        let Some(drawn) = &self.drawn.chat else { return };
        if !drawn.area.contains(at) {
            return;
        }
        let hit = drawn
            .visible
            .iter()
            .find(|(_, top, bottom)| (*top..=*bottom).contains(&at.y))
            .map(|(i, _, _)| *i);
        let Some(open) = &mut self.open else { return };
        let Some((i, entry)) = hit.and_then(|i| open.entries.get(i).map(|e| (i, e))) else { return };
        let photo = matches!(&entry.body, Body::File(f) if f.is_photo()).then_some(entry.id);
        open.selected = Some(i);
        self.focus = Focus::Chat;
        if let Some(id) = photo {
            self.overlay = Some(Overlay::Photo(id));
        }
    }

    fn wheel(&mut self, at: Position, up: bool) {
        if let Some((area, _)) = &self.drawn.list {
            if area.contains(at) {
                self.move_selection(if up { -1 } else { 1 });
                return;
            }
        }
        self.scroll_by(if up { WHEEL_ROWS as isize } else { -(WHEEL_ROWS as isize) });
    }

    fn page(&mut self, up: bool) {
        if self.focus == Focus::List && self.open.is_none() {
            let rows = self.drawn.list.as_ref().map_or(10, |(a, _)| usize::from(a.height / 2).max(1));
            self.move_selection(if up { -(rows as isize) } else { rows as isize });
            return;
        }
        let rows =
            self.drawn.chat.as_ref().map_or(10, |d| usize::from(d.area.height).saturating_sub(1).max(1));
        self.scroll_by(if up { rows as isize } else { -(rows as isize) });
    }
}
