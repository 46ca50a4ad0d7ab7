//! Test fixtures for the terminal UI: a [`Mock`] backend that records every call, an [`App`] on a
//! fixed clock in UTC, conversations and messages to fill it with, and [`draw`], which renders on
//! a `TestBackend` the way the event loop does (photos decoded for real, with half-blocks).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use ratatui_image::picker::Picker;
use tokio::sync::Notify;
use whatsap2p_client::{Change, Group, GroupId, MessageId, MessageState, Number, Presence};
use whatsap2p_tui::app::{App, Me};
use whatsap2p_tui::backend::{
    Added, Answer, Backend, BackendError, Body, Chat, Conversation, Entry, FileInfo, Online, Page, PageAt,
};
use whatsap2p_tui::calls::{Outcome, Request};
use whatsap2p_tui::clock::Zone;

/// 2025-03-03 (a Monday) 14:05:00 UTC.
pub const NOW: u64 = 1_741_010_700_000;
pub const MINUTE: u64 = 60_000;
pub const DAY: u64 = 86_400_000;

pub fn n(s: &str) -> Number {
    Number::new(s).expect("number")
}

pub fn me() -> Me {
    Me { number: n("123"), key: whatsap2p_client::PublicKey([0x5a; 32]) }
}

/// An app for 123 whose clock says [`NOW`], in UTC.
pub fn app() -> App {
    let mut app = App::new(me(), Zone::utc(), Box::new(|| NOW));
    app.take_requests();
    app
}

pub fn text(id: MessageId, from: Option<&str>, at_ms: u64, body: &str, state: MessageState) -> Entry {
    Entry { id, from: from.map(n), at_ms, body: Body::Text(body.into()), state }
}

pub fn said(from: Option<&str>, at_ms: u64, body: &str, state: MessageState) -> Entry {
    text(MessageId::new(), from, at_ms, body, state)
}

pub fn file(from: Option<&str>, at_ms: u64, name: &str, path: &Path, size: u64, media_type: &str) -> Entry {
    let dimensions = media_type.starts_with("image/").then_some((96, 64));
    Entry {
        id: MessageId::new(),
        from: from.map(n),
        at_ms,
        body: Body::File(FileInfo {
            name: name.into(),
            size,
            path: path.to_path_buf(),
            media_type: media_type.into(),
            dimensions,
        }),
        state: if from.is_some() { MessageState::Received } else { MessageState::Queued },
    }
}

pub fn peer(number: &str, online: Online, unread: u32, last: Option<Entry>) -> Conversation {
    let at = last.as_ref().map_or(0, |e| e.at_ms);
    Conversation {
        chat: Chat::Peer(n(number)),
        name: number.into(),
        online,
        route: None,
        unread,
        last,
        last_activity_ms: at,
        left: false,
    }
}

pub fn group(id: u8, name: &str, unread: u32, last: Option<Entry>) -> Conversation {
    let at = last.as_ref().map_or(0, |e| e.at_ms);
    Conversation {
        chat: Chat::Group(GroupId([id; 16])),
        name: name.into(),
        online: Online::Unknown,
        route: None,
        unread,
        last,
        last_activity_ms: at,
        left: false,
    }
}

/// Gives `app` its conversation list, as the backend's answer would.
pub fn list(app: &mut App, conversations: Vec<Conversation>) {
    app.on_outcome(Outcome::Conversations(Ok(conversations)));
}

/// Opens `chat` and answers its latest page with `entries` (`more`: older ones exist).
pub fn open(app: &mut App, chat: Chat, entries: Vec<Entry>, more: bool) {
    app.open_chat(chat.clone());
    let asked = app.take_requests();
    assert!(
        asked.iter().any(|r| matches!(r, Request::Page { chat: c, at: PageAt::Latest, .. } if *c == chat)),
        "opening asks for the latest page: {asked:?}"
    );
    app.on_outcome(Outcome::Page { chat, at: PageAt::Latest, result: Ok(Page { entries, more }) });
}

/// Renders `app` on a `w`×`h` test terminal as the event loop does (drawn → app), decoding the
/// photos it asks for with half-blocks and drawing again, until it asks for none.
pub fn draw(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    draw_asking(app, w, h).0
}

/// [`draw`], also returning the requests (other than photo decoding) drawing made.
pub fn draw_asking(app: &mut App, w: u16, h: u16) -> (Terminal<TestBackend>, Vec<Request>) {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    let mut asked = Vec::new();
    for _ in 0..4 {
        let mut drawn = None;
        terminal.draw(|f| drawn = Some(whatsap2p_tui::view::render(app, f))).expect("draw");
        app.drawn(drawn.expect("drawn"));
        let mut decoded = false;
        for r in app.take_requests() {
            if let Request::DecodePhoto { id, path, cells } = r {
                let result = whatsap2p_tui::photo::encode(&Picker::halfblocks(), &path, cells).map(Box::new);
                app.on_outcome(Outcome::Photo { id, cells, result });
                decoded = true;
            } else {
                asked.push(r);
            }
        }
        // As the event loop does: a frame the app says is out of date is drawn again.
        if !decoded && !std::mem::take(&mut app.redraw) {
            break;
        }
    }
    (terminal, asked)
}

/// The screen as text, one line per row, trailing spaces cut.
pub fn screen(terminal: &Terminal<TestBackend>) -> String {
    let buf = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        let mut x = 0;
        while x < buf.area.width {
            // A wide character's second cell is covered by it: skip it, as the terminal does.
            let symbol = buf[(x, y)].symbol();
            line.push_str(symbol);
            x += (unicode_width::UnicodeWidthStr::width(symbol) as u16).max(1);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A PNG gradient at `path`.
pub fn gradient_png(path: &Path) {
    let img = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 255 / 95) as u8, (y * 255 / 63) as u8, 128])
    });
    img.save(path).expect("saving a png");
}

// ---------------------------------------------------------------------------------------------
// Mock backend
// ---------------------------------------------------------------------------------------------

/// A backend that records its calls and answers from what the test put in it. `ping` waits for
/// [`Mock::release_ping`], like a dial that takes seconds.
#[derive(Clone, Default)]
pub struct Mock {
    pub calls: Arc<Mutex<Vec<String>>>,
    pub conversations: Arc<Mutex<Vec<Conversation>>>,
    pub pages: Arc<Mutex<VecDeque<Page>>>,
    pub ping_gate: Arc<Notify>,
    pub ping_started: Arc<Notify>,
}

impl Mock {
    fn record(&self, call: String) {
        self.calls.lock().expect("calls").push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls").clone()
    }

    pub fn release_ping(&self) {
        self.ping_gate.notify_one();
    }
}

impl Backend for Mock {
    async fn conversations(&self) -> Result<Vec<Conversation>, BackendError> {
        self.record("conversations".into());
        Ok(self.conversations.lock().expect("conversations").clone())
    }

    async fn history_page(&self, chat: &Chat, at: PageAt, limit: usize) -> Result<Page, BackendError> {
        self.record(format!("history_page {chat:?} {at:?} {limit}"));
        Ok(self.pages.lock().expect("pages").pop_front().unwrap_or_default())
    }

    async fn send_text(&self, chat: &Chat, text: &str) -> Result<Entry, BackendError> {
        self.record(format!("send_text {chat:?} {text}"));
        Ok(said(None, NOW, text, MessageState::Sent))
    }

    async fn send_file(&self, chat: &Chat, path: &Path) -> Result<Entry, BackendError> {
        self.record(format!("send_file {chat:?} {}", path.display()));
        Ok(file(None, NOW, "f", path, 1, "application/octet-stream"))
    }

    async fn mark_read(&self, ids: &[MessageId]) -> Result<(), BackendError> {
        self.record(format!("mark_read {}", ids.len()));
        Ok(())
    }

    fn shown(&self, texts: &[(Number, MessageId)]) {
        for (from, _) in texts {
            self.record(format!("shown {from}"));
        }
    }

    async fn add_contact(&self, number: &Number) -> Result<Added, BackendError> {
        self.record(format!("add_contact {number}"));
        Ok(Added { new: true, key: None })
    }

    async fn ping(&self, number: &Number) -> Result<Presence, BackendError> {
        self.record(format!("ping {number}"));
        self.ping_started.notify_one();
        self.ping_gate.notified().await;
        Ok(Presence { number: number.clone(), online: None, key: None, path: None })
    }

    async fn answer_request(&self, number: &Number, answer: Answer) -> Result<bool, BackendError> {
        self.record(format!("answer_request {number} {answer:?}"));
        Ok(true)
    }

    async fn contacts(&self) -> Result<Vec<Presence>, BackendError> {
        self.record("contacts".into());
        Ok(Vec::new())
    }

    async fn group_create(&self, name: &str, members: &[Number]) -> Result<Group, BackendError> {
        self.record(format!("group_create {name} {members:?}"));
        Err(BackendError::Unsupported("groups in the mock"))
    }

    async fn group_change(&self, id: GroupId, who: &Number, change: Change) -> Result<Group, BackendError> {
        self.record(format!("group_change {id} {who} {change:?}"));
        Err(BackendError::Unsupported("groups in the mock"))
    }

    async fn group_leave(&self, id: GroupId) -> Result<Group, BackendError> {
        self.record(format!("group_leave {id}"));
        Err(BackendError::Unsupported("groups in the mock"))
    }

    async fn cancel_transfer(&self, id: MessageId) -> Result<(), BackendError> {
        self.record(format!("cancel_transfer {id}"));
        Ok(())
    }

    async fn logout(self) {
        self.record("logout".into());
    }
}
