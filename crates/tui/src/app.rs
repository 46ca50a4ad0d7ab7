//! The UI's state and how it changes: keys, mouse, the client's events and the answers to calls go
//! in; [`Request`]s for the backend come out (taken with [`App::take_requests`]). No terminal and
//! no backend here, so every behaviour is testable with keys in and state and requests out.
//!
//! The open conversation holds a window of at most [`MAX_WINDOW`] messages near the view, loaded a
//! page at a time as the user scrolls; the scroll position is anchored to a message, so messages
//! arriving, pages loading and pages dropped never move what is on screen.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};
use ratatui::layout::{Position, Rect, Size};
use whatsap2p_client::{Change, Event, MessageId, MessageState, Number, Presence, PublicKey};

use crate::backend::{Body, Chat, Conversation, Entry, FileInfo, Online, Page, PageAt};
use crate::calls::{Outcome, Request};
use crate::clock::Zone;
use crate::command::{self, Command};
use crate::editor::Editor;
use crate::layout::{self, Ctx, Geometry};
use crate::photo::Photos;
use crate::transfer::Transfer;

/// Messages asked for per page of history.
pub const PAGE: usize = 100;
/// Most messages of the open conversation held at once.
pub const MAX_WINDOW: usize = 6 * PAGE;
/// Load the next page when the view comes this close (in messages) to the end of the window.
pub const PREFETCH: usize = 30;
/// Rows one wheel step scrolls.
pub const WHEEL_ROWS: usize = 3;
/// Receipts that arrived before the message they are for (a send's answer still on its way).
const EARLY_STATES: usize = 64;

/// Who we are, for the status line.
#[derive(Clone, Debug)]
pub struct Me {
    /// Our number.
    pub number: Number,
    /// Our identity key.
    pub key: PublicKey,
}

/// The session with the directory, as the status line shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directory {
    /// Registered.
    Connected,
    /// Lost; the client is reconnecting.
    Reconnecting,
}

/// Where keys go when the input is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The conversation list (the menu's numbers work here).
    List,
    /// The open conversation.
    Chat,
}

/// What a dialog asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// A number to open a conversation with.
    Open,
    /// A number to add as a contact.
    Add,
    /// A number to ping.
    Ping,
    /// A number to add to the open group.
    GroupAdd,
    /// A number to remove from the open group.
    GroupRemove,
    /// A photo to send.
    Photo,
    /// A file to send.
    File,
}

impl Ask {
    /// The question.
    pub fn prompt(self) -> &'static str {
        match self {
            Ask::Open => "Open the conversation with (number)",
            Ask::Add => "Add a contact (number)",
            Ask::Ping => "Ping (number)",
            Ask::GroupAdd => "Add to this group (number)",
            Ask::GroupRemove => "Remove from this group (number)",
            Ask::Photo => "Photo to send (path; Tab completes)",
            Ask::File => "File to send (path; Tab completes)",
        }
    }

    fn wants_path(self) -> bool {
        matches!(self, Ask::Photo | Ask::File)
    }
}

/// A small box asking for one thing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    /// What for.
    pub ask: Ask,
    /// The answer being typed.
    pub editor: Editor,
    /// Why the last answer was refused.
    pub error: Option<String>,
}

/// What is drawn over the main screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// Keys and commands.
    Help {
        /// Rows scrolled.
        scroll: u16,
    },
    /// The contacts with their status (`None` while loading).
    Contacts {
        /// The contacts.
        list: Option<Vec<Presence>>,
        /// The highlighted one.
        selected: usize,
    },
    /// A question.
    Dialog(Dialog),
    /// A photo, large.
    Photo(MessageId),
}

/// A line for the user in the status bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// What to say.
    pub text: String,
    /// Whether it is a problem.
    pub error: bool,
}

/// Where the conversation view is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scroll {
    /// Following the newest message.
    Bottom,
    /// The view's last row shows message `entry`, with `skip` of its rows hidden below it.
    At {
        /// Index in the window.
        entry: usize,
        /// Rows of it below the view.
        skip: usize,
    },
}

/// Pages being loaded for the open conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loading {
    /// The latest page (opening).
    pub latest: bool,
    /// An older page.
    pub before: bool,
    /// A newer page.
    pub after: bool,
}

/// The open conversation: a window of its history near the view.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenChat {
    /// Which conversation.
    pub chat: Chat,
    /// Loaded messages, oldest first.
    pub entries: VecDeque<Entry>,
    /// Older messages exist that are not loaded.
    pub more_before: bool,
    /// Newer messages exist that are not loaded (the window was moved up).
    pub more_after: bool,
    /// Pages on their way.
    pub loading: Loading,
    /// The view.
    pub scroll: Scroll,
    /// The highlighted message (Up on an empty input), by index in the window.
    pub selected: Option<usize>,
    /// Sends not answered yet.
    pub sending: usize,
}

impl OpenChat {
    fn new(chat: Chat) -> Self {
        Self {
            chat,
            entries: VecDeque::new(),
            more_before: false,
            more_after: false,
            loading: Loading { latest: true, ..Loading::default() },
            scroll: Scroll::Bottom,
            selected: None,
            sending: 0,
        }
    }

    fn position(&self, id: MessageId) -> Option<usize> {
        self.entries.iter().rposition(|e| e.id == id)
    }
}

/// What the last frame showed, for the mouse, paging and read receipts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drawn {
    /// The whole screen.
    pub screen: Rect,
    /// The list's area and the conversation on each of its rows.
    pub list: Option<(Rect, Vec<(u16, Chat)>)>,
    /// The conversation pane's message area.
    pub chat: Option<ChatDrawn>,
}

/// What the conversation pane showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatDrawn {
    /// The message area.
    pub area: Rect,
    /// Its columns.
    pub geometry: Geometry,
    /// Messages on screen (index in the window), with the rows they cover.
    pub visible: Vec<(usize, u16, u16)>,
    /// Whether each message on screen was shown whole.
    pub whole: Vec<usize>,
}

/// The whole UI state.
pub struct App {
    /// Who we are.
    pub me: Me,
    /// The directory session.
    pub directory: Directory,
    /// Every conversation, most recent first.
    pub conversations: Vec<Conversation>,
    /// The highlighted conversation of the list.
    pub selected: Option<Chat>,
    /// The open conversation.
    pub open: Option<OpenChat>,
    /// Where keys go.
    pub focus: Focus,
    /// The input line.
    pub input: Editor,
    /// A box over the screen.
    pub overlay: Option<Overlay>,
    /// The status bar's message.
    pub notice: Option<Notice>,
    /// Outgoing files on their way.
    pub transfers: HashMap<MessageId, Transfer>,
    /// Photos ready to draw.
    pub photos: Photos,
    /// Time zone of the times shown.
    pub zone: Zone,
    /// The terminal has focus (read receipts are sent only then).
    pub focused: bool,
    /// The user asked to leave.
    pub quit: bool,
    /// The user asked for the whole screen to be drawn again (Ctrl-L).
    pub repaint: bool,
    /// The last frame.
    pub drawn: Drawn,
    clock: Box<dyn Fn() -> u64 + Send>,
    requests: Vec<Request>,
    early_states: VecDeque<(MessageId, MessageState)>,
    /// What was typed in each conversation left with a draft, so a draft never goes to the
    /// conversation opened next.
    drafts: HashMap<Chat, Editor>,
}

/// How far a state is along (a late receipt never takes a message back).
fn rank(state: MessageState) -> u8 {
    match state {
        MessageState::Queued => 0,
        MessageState::Sent => 1,
        MessageState::Delivered => 2,
        MessageState::Read | MessageState::Received => 3,
        MessageState::Failed => 4,
    }
}

fn advance(entry: &mut Entry, state: MessageState) {
    if entry.from.is_none() && rank(state) > rank(entry.state) {
        entry.state = state;
    }
}

impl App {
    /// A fresh UI for `me`; times read from `clock` (ms since the epoch) and shown in `zone`.
    pub fn new(me: Me, zone: Zone, clock: Box<dyn Fn() -> u64 + Send>) -> Self {
        let mut app = Self {
            me,
            directory: Directory::Connected,
            conversations: Vec::new(),
            selected: None,
            open: None,
            focus: Focus::List,
            input: Editor::default(),
            overlay: None,
            notice: None,
            transfers: HashMap::new(),
            photos: Photos::default(),
            zone,
            focused: true,
            quit: false,
            repaint: false,
            drawn: Drawn::default(),
            clock,
            requests: Vec::new(),
            early_states: VecDeque::new(),
            drafts: HashMap::new(),
        };
        app.requests.push(Request::Conversations);
        app
    }

    /// Now, in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// The requests made since the last call.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    fn say(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice { text: text.into(), error: false });
    }

    fn complain(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice { text: text.into(), error: true });
    }

    /// The conversation for `chat` in the list.
    pub fn conversation(&self, chat: &Chat) -> Option<&Conversation> {
        self.conversations.iter().find(|c| c.chat == *chat)
    }

    fn index_of(&self, chat: &Chat) -> Option<usize> {
        self.conversations.iter().position(|c| c.chat == *chat)
    }

    /// The layout context of the open conversation as last drawn.
    pub fn ctx(&self) -> Option<Ctx<'_>> {
        let drawn = self.drawn.chat.as_ref()?;
        Some(Ctx {
            zone: self.zone,
            now_ms: self.now_ms(),
            geometry: drawn.geometry,
            transfers: &self.transfers,
        })
    }

    // ----------------------------------------------------------------------------------------
    // Terminal input
    // ----------------------------------------------------------------------------------------

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

    /// Opens `chat` (loading its latest page), or focuses it if it is open.
    pub fn open_chat(&mut self, chat: Chat) {
        if chat == Chat::Peer(self.me.number.clone()) {
            self.complain("that is your own number");
            return;
        }
        self.focus = Focus::Chat;
        self.selected = Some(chat.clone());
        if self.open.as_ref().is_some_and(|o| o.chat == chat) {
            return;
        }
        if self.index_of(&chat).is_none() {
            self.conversations.push(placeholder(&chat));
        }
        if let Some(left) = &self.open {
            let draft = std::mem::take(&mut self.input);
            if !draft.is_empty() {
                self.drafts.insert(left.chat.clone(), draft);
            }
        }
        self.input = self.drafts.remove(&chat).unwrap_or_default();
        self.open = Some(OpenChat::new(chat.clone()));
        self.requests.push(Request::Page { chat, at: PageAt::Latest, limit: PAGE });
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
            Command::Help => self.overlay = Some(Overlay::Help { scroll: 0 }),
            Command::Quit => self.quit = true,
        }
    }

    fn cancel_transfer(&mut self) {
        let Some(open) = &self.open else { return };
        let selected = open.selected.and_then(|i| open.entries.get(i)).map(|e| e.id);
        let target = selected
            .filter(|id| self.transfers.contains_key(id))
            .or_else(|| open.entries.iter().rev().find(|e| self.transfers.contains_key(&e.id)).map(|e| e.id));
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
        if let (Some(i), Some(open)) = (hit, &mut self.open) {
            open.selected = Some(i);
            self.focus = Focus::Chat;
            if matches!(&open.entries[i].body, Body::File(f) if f.is_photo()) {
                self.overlay = Some(Overlay::Photo(open.entries[i].id));
            }
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

    // ----------------------------------------------------------------------------------------
    // Scrolling
    // ----------------------------------------------------------------------------------------

    /// Scrolls the conversation `rows` up (positive) or down (negative). Walks only the messages
    /// it passes and a screenful around them, whatever the size of the window.
    pub fn scroll_by(&mut self, rows: isize) {
        let Some(ctx) = self.ctx() else { return };
        let Some(open) = &self.open else { return };
        let Some(view) = self.drawn.chat.as_ref().map(|d| usize::from(d.area.height).max(1)) else { return };
        let n = open.entries.len();
        if n == 0 {
            return;
        }
        let height = |i: usize| layout::height(&open.entries, i, &ctx).max(1);
        let (mut entry, mut skip) = match open.scroll {
            Scroll::Bottom => (n - 1, 0),
            Scroll::At { entry, skip } => (entry.min(n - 1), skip),
        };
        if rows > 0 {
            skip += rows as usize;
            loop {
                let h = height(entry);
                if skip < h {
                    break;
                }
                if entry == 0 {
                    skip = h - 1;
                    break;
                }
                skip -= h;
                entry -= 1;
            }
        } else {
            let mut down = rows.unsigned_abs();
            while down > 0 {
                if skip >= down {
                    skip -= down;
                    break;
                }
                down -= skip;
                if entry + 1 == n {
                    skip = 0;
                    break;
                }
                entry += 1;
                skip = height(entry);
            }
        }
        // The top of the oldest message loaded never comes below the top of the view.
        let mut above = height(entry) - skip;
        let mut top = entry;
        while above < view && top > 0 {
            top -= 1;
            above += height(top);
        }
        if above < view {
            let mut filled = 0;
            let mut last = None;
            for i in 0..n {
                let h = height(i);
                if filled + h >= view {
                    last = Some((i, filled + h - view));
                    break;
                }
                filled += h;
            }
            match last {
                Some((i, hidden)) => (entry, skip) = (i, hidden),
                // Everything fits on one screen.
                None => (entry, skip) = (n - 1, 0),
            }
            top = 0;
        }
        let scroll = if entry + 1 == n && skip == 0 && !open.more_after {
            Scroll::Bottom
        } else {
            Scroll::At { entry, skip }
        };
        if let Some(open) = &mut self.open {
            open.scroll = scroll;
        }
        self.prefetch(top, entry);
    }

    /// Asks for the next page when the messages on screen (`top` to `bottom`) near an end of the
    /// window.
    fn prefetch(&mut self, top: usize, bottom: usize) {
        let Some(open) = &mut self.open else { return };
        if open.loading.latest {
            return;
        }
        if top < PREFETCH && open.more_before && !open.loading.before {
            if let Some(first) = open.entries.front() {
                open.loading.before = true;
                self.requests.push(Request::Page {
                    chat: open.chat.clone(),
                    at: PageAt::Before(first.id),
                    limit: PAGE,
                });
            }
        }
        if bottom + PREFETCH >= open.entries.len() && open.more_after && !open.loading.after {
            if let Some(last) = open.entries.back() {
                open.loading.after = true;
                self.requests.push(Request::Page {
                    chat: open.chat.clone(),
                    at: PageAt::After(last.id),
                    limit: PAGE,
                });
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // After a frame
    // ----------------------------------------------------------------------------------------

    /// What the last frame showed: sends read receipts for what is on screen, loads pages and
    /// photos the view needs.
    pub fn drawn(&mut self, drawn: Drawn) {
        self.drawn = drawn;
        let Some(chat_drawn) = self.drawn.chat.clone() else { return };
        let thumb = chat_drawn.geometry.thumb();
        let mut read = Vec::new();
        let mut decode = Vec::new();
        // Messages count as read when the user can see them: the terminal in front, nothing over them.
        let shown = self.focused && self.overlay.is_none();
        if let Some(open) = &mut self.open {
            for &(i, _, _) in &chat_drawn.visible {
                let Some(entry) = open.entries.get_mut(i) else { continue };
                if shown && entry.from.is_some() && entry.state == MessageState::Received {
                    entry.state = MessageState::Read;
                    read.push(entry.id);
                }
                if let Body::File(f) = &entry.body {
                    if f.is_photo() {
                        decode.push((entry.id, f.path.clone()));
                    }
                }
            }
        }
        let first = chat_drawn.visible.iter().map(|v| v.0).min();
        let last = chat_drawn.visible.iter().map(|v| v.0).max();
        if let (Some(first), Some(last)) = (first, last) {
            self.prefetch(first, last);
        }
        if let Some(Overlay::Photo(id)) = &self.overlay {
            let id = *id;
            if let Some(f) = self.file(id) {
                let cells = large_cells(self.drawn.screen);
                if self.photos.want(id, cells) {
                    self.requests.push(Request::DecodePhoto { id, path: f.path, cells });
                }
            }
        }
        for (id, path) in decode {
            if self.photos.want(id, thumb) {
                self.requests.push(Request::DecodePhoto { id, path, cells: thumb });
            }
        }
        if !read.is_empty() {
            let chat = self.open.as_ref().map(|o| o.chat.clone());
            if let Some(c) = chat.and_then(|chat| self.conversations.iter_mut().find(|c| c.chat == chat)) {
                c.unread = c.unread.saturating_sub(read.len() as u32);
            }
            self.requests.push(Request::MarkRead(read));
        }
    }

    /// The file of message `id` in the open conversation.
    pub fn file(&self, id: MessageId) -> Option<FileInfo> {
        let open = self.open.as_ref()?;
        match &open.entries.get(open.position(id)?)?.body {
            Body::File(f) => Some(f.clone()),
            Body::Text(_) => None,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Answers to calls
    // ----------------------------------------------------------------------------------------

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
                    self.transfers.remove(&id);
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
            Event::FileReceived { id, from, name, path, size, media_type, dimensions, .. } => {
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
            Event::Delivered { id, .. } => self.set_state(id, MessageState::Delivered),
            Event::Sent { id, .. } => self.set_state(id, MessageState::Sent),
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
            Event::Progress { id, bytes, total } => {
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
            Event::FileFailed { id, peer, outgoing, reason } => {
                if outgoing {
                    self.transfers.remove(&id);
                    self.set_state(id, MessageState::Failed);
                    self.complain(format!("sending a file to {peer} failed: {reason}"));
                } else {
                    self.complain(format!(
                        "receiving a file from {peer} failed ({reason}); it resumes when they retry"
                    ));
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
            if !open.more_after && open.position(entry.id).is_none() {
                open.entries.push_back(entry);
                self.trim_front();
            }
        }
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

/// A conversation the list has no line for yet.
fn placeholder(chat: &Chat) -> Conversation {
    let name = match chat {
        Chat::Peer(n) => n.to_string(),
        Chat::Group(id) => id.to_string()[..8].to_owned(),
    };
    Conversation {
        chat: chat.clone(),
        name,
        online: Online::Unknown,
        route: None,
        unread: 0,
        last: None,
        last_activity_ms: 0,
        left: false,
    }
}

/// The box a photo is shown large in, on a screen of `screen`.
pub fn large_cells(screen: Rect) -> Size {
    Size::new(screen.width.saturating_sub(4).max(4), screen.height.saturating_sub(4).max(2))
}
