//! The UI's state and how it changes: keys, mouse, the client's events and the answers to calls go
//! in; [`Request`]s for the backend come out (taken with [`App::take_requests`]). No terminal and
//! no backend here, so every behaviour is testable with keys in and state and requests out.
//!
//! The open conversation holds a window of at most [`MAX_WINDOW`] messages near the view, loaded a
//! page at a time as the user scrolls; the scroll position is anchored to a message, so messages
//! arriving, pages loading and pages dropped never move what is on screen.
//!
//! # Layout
//! - this file: the state and the small helpers every part uses;
//! - `input`: keys, mouse, paste, commands and dialogs;
//! - `scroll`: scrolling, and what a frame showed (read receipts, pages, photos);
//! - `feed`: the client's events and the answers to calls.

mod feed;
mod input;
mod scroll;

use std::collections::{HashMap, VecDeque};

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};
use ratatui::layout::{Position, Rect, Size};
use whatsap2p_client::{Change, Event, MessageId, MessageState, Number, Presence, PublicKey};

use crate::backend::{Answer, Body, Chat, Conversation, Entry, FileInfo, Online, Page, PageAt};
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
    /// Another copy of this profile took the number; the client stopped talking to the directory.
    Replaced,
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
    /// A number whose message request to ignore.
    Ignore,
    /// A number to block.
    Block,
    /// A number to unblock.
    Unblock,
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
            Ask::Ignore => "Ignore the message request of (number)",
            Ask::Block => "Block (number)",
            Ask::Unblock => "Unblock (number)",
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
    /// The first message that was unread when it opened.
    pub first_unread: Option<MessageId>,
    /// Move the view to `first_unread` once the next frame says how tall things are.
    pub jump_to_unread: bool,
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
            first_unread: None,
            jump_to_unread: false,
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
    /// The last frame is out of date already: draw again before waiting for input.
    pub redraw: bool,
    /// The last frame.
    pub drawn: Drawn,
    clock: Box<dyn Fn() -> u64 + Send>,
    requests: Vec<Request>,
    /// `/requests` was typed: its answer is said even when no request waits.
    requests_asked: bool,
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
        // Held by the recipient as a message request: written, not delivered. Written again when
        // the request is accepted, its `Sent` then does not hide that it was held.
        MessageState::Pending => 2,
        MessageState::Delivered => 3,
        MessageState::Read | MessageState::Received => 4,
        MessageState::Failed => 5,
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
            redraw: false,
            drawn: Drawn::default(),
            clock,
            requests: Vec::new(),
            requests_asked: false,
            early_states: VecDeque::new(),
            drafts: HashMap::new(),
        };
        app.requests.push(Request::Conversations);
        // Requests held while we were away would otherwise go unsaid until the next one comes.
        app.requests.push(Request::MessageRequests);
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
            first_unread: self.open.as_ref().and_then(|o| o.first_unread),
            transfers: &self.transfers,
        })
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
