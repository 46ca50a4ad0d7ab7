//! How one message is laid out in rows of the conversation pane: a day separator when the day
//! changes, the time and sender on its first row, the text wrapped under itself, a photo's box,
//! a file's line, a transfer's gauge. Scrolling (in `app`) and drawing (in `view`) both use it, so
//! they always agree on how tall a message is.

use std::collections::{HashMap, VecDeque};

use whatsap2p_client::{MessageId, MessageState};

use crate::backend::{Body, Entry};
use crate::clock::Zone;
use crate::photo::{THUMB_COLS, THUMB_ROWS};
use crate::text;
use crate::transfer::{self, Transfer};

/// Narrowest text column beside the time and sender; narrower panes put the sender on a row of
/// its own.
pub const MIN_TEXT_WIDTH: u16 = 20;
/// Widest sender column.
pub const MAX_NAME_WIDTH: u16 = 16;
/// Cells of `HH:MM `.
const TIME_WIDTH: u16 = 6;
/// Cells between the sender and the text.
const NAME_GAP: u16 = 2;
/// Indent of the text in the stacked layout.
const STACKED_INDENT: u16 = 2;

/// Columns of the conversation pane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The pane's width.
    pub width: u16,
    /// The sender column's width.
    pub name_width: u16,
    /// Sender on its own row, text under it (narrow panes).
    pub stacked: bool,
}

impl Geometry {
    /// The columns for a pane `width` wide whose widest sender name is `name_width`.
    pub fn new(width: u16, name_width: u16) -> Self {
        let name_width = name_width.clamp(3, MAX_NAME_WIDTH);
        let stacked = width < TIME_WIDTH + name_width + NAME_GAP + MIN_TEXT_WIDTH;
        Self { width, name_width, stacked }
    }

    /// Where text starts.
    pub fn text_x(&self) -> u16 {
        if self.stacked {
            STACKED_INDENT
        } else {
            TIME_WIDTH + self.name_width + NAME_GAP
        }
    }

    /// How wide text may be.
    pub fn text_width(&self) -> u16 {
        self.width.saturating_sub(self.text_x()).max(1)
    }

    /// The box a photo's thumbnail is fitted in.
    pub fn thumb(&self) -> ratatui::layout::Size {
        ratatui::layout::Size::new(self.text_width().min(THUMB_COLS), THUMB_ROWS)
    }
}

/// What the layout needs to know besides the messages.
pub struct Ctx<'a> {
    /// Time zone of the times shown.
    pub zone: Zone,
    /// Now, for `Today`.
    pub now_ms: u64,
    /// The columns.
    pub geometry: Geometry,
    /// Outgoing files on their way.
    pub transfers: &'a HashMap<MessageId, Transfer>,
    /// The first message that was unread when the conversation opened (a rule goes above it).
    pub first_unread: Option<MessageId>,
}

/// Who wrote a message, for its colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// Us.
    Me,
    /// Someone else (their name).
    Them(String),
}

/// The first row of a message: its time and sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `HH:MM`.
    pub time: String,
    /// The sender.
    pub who: Who,
}

/// The receipt drawn after one of our messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// In the outbox.
    Queued,
    /// Written to the recipient: ✓.
    Sent,
    /// The recipient holds it as a message request, until it accepts us as a contact: ✓?.
    Held,
    /// The recipient has it: ✓✓.
    Delivered,
    /// The recipient saw it: ✓✓ in the read colour.
    Read,
    /// Given up on: ✗.
    Failed,
}

impl Receipt {
    /// The receipt for a message of ours in `state`.
    pub fn of(state: MessageState) -> Option<Self> {
        match state {
            MessageState::Queued => Some(Receipt::Queued),
            MessageState::Sent => Some(Receipt::Sent),
            MessageState::Pending => Some(Receipt::Held),
            MessageState::Delivered => Some(Receipt::Delivered),
            MessageState::Read => Some(Receipt::Read),
            MessageState::Failed => Some(Receipt::Failed),
            MessageState::Received => None,
        }
    }

    /// Its glyphs.
    pub fn glyph(self) -> &'static str {
        match self {
            Receipt::Queued => "…",
            Receipt::Sent => "✓",
            Receipt::Held => "✓?",
            Receipt::Delivered | Receipt::Read => "✓✓",
            Receipt::Failed => "✗",
        }
    }
}

/// One row of the conversation pane.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// `── Today ──` between days.
    Day(String),
    /// `── new messages ──` above the first message unread when the conversation opened.
    Unread,
    /// The sender's own row, in the stacked layout.
    Head(Head),
    /// A row of text; `head` on a message's first row (side by side layout), `receipt` on its last.
    Text {
        /// Time and sender.
        head: Option<Head>,
        /// The text, cleaned.
        text: String,
        /// Our message's receipt.
        receipt: Option<Receipt>,
    },
    /// Row `index` of a photo's box (`rows` tall).
    Photo {
        /// Which row of the box.
        index: u16,
        /// The box's height.
        rows: u16,
    },
    /// A file's line (or a photo's caption), with the receipt of ours.
    File {
        /// Time and sender, when this is the message's first row.
        head: Option<Head>,
        /// `name · size · path`, cleaned.
        text: String,
        /// Our message's receipt.
        receipt: Option<Receipt>,
    },
    /// The gauge of a file on its way, either way.
    Gauge(Transfer),
}

fn head(entry: &Entry, ctx: &Ctx) -> Head {
    let who = match &entry.from {
        None => Who::Me,
        Some(n) => Who::Them(text::clean(n.as_str()).into_owned()),
    };
    Head { time: ctx.zone.clock(entry.at_ms), who }
}

/// Whether a day separator goes before message `i`.
fn new_day(entries: &VecDeque<Entry>, i: usize, zone: Zone) -> bool {
    match i.checked_sub(1).and_then(|p| entries.get(p)) {
        None => true,
        Some(prev) => zone.day(prev.at_ms) != zone.day(entries[i].at_ms),
    }
}

/// The rows of message `i`.
pub fn rows(entries: &VecDeque<Entry>, i: usize, ctx: &Ctx) -> Vec<Row> {
    let Some(entry) = entries.get(i) else { return Vec::new() };
    let g = ctx.geometry;
    let mut out = Vec::new();
    if new_day(entries, i, ctx.zone) {
        out.push(Row::Day(ctx.zone.day_label(entry.at_ms, ctx.now_ms)));
    }
    if ctx.first_unread == Some(entry.id) {
        out.push(Row::Unread);
    }
    // Receipts on ours; and a ✗ on a file of theirs that never came (cancelled, or bad).
    let receipt = if entry.from.is_none() || entry.state == MessageState::Failed {
        Receipt::of(entry.state)
    } else {
        None
    };
    let mut first_head = Some(head(entry, ctx));
    if g.stacked {
        out.push(Row::Head(first_head.take().unwrap_or_else(|| head(entry, ctx))));
    }
    let width = usize::from(g.text_width());
    match &entry.body {
        Body::Text(body) => {
            let mut lines: Vec<String> = Vec::new();
            for line in text::clean_lines(body) {
                for r in text::wrap(&line, width) {
                    lines.push(line[r].to_owned());
                }
            }
            // The receipt goes after the last row, or on a row of its own if it does not fit.
            let needs_room = receipt.map_or(0, |r| text::width(r.glyph()) + 1);
            let last_fits = lines.last().is_none_or(|l| text::width(l.trim_end()) + needs_room <= width);
            if !last_fits {
                lines.push(String::new());
            }
            let count = lines.len();
            for (n, line) in lines.into_iter().enumerate() {
                let head = if n == 0 { first_head.take() } else { None };
                out.push(Row::Text {
                    head,
                    text: line,
                    receipt: if n + 1 == count { receipt } else { None },
                });
            }
        }
        Body::File(file) => {
            let name = text::clean(&file.name);
            let path = text::clean_lines(&file.path.to_string_lossy()).collect::<Vec<_>>().join("␊");
            if file.is_photo() {
                let rows = g.thumb().height;
                // The box sits on the message's first rows; the caption under it.
                if let Some(h) = first_head.take() {
                    out.push(Row::Text { head: Some(h), text: String::new(), receipt: None });
                }
                out.extend((0..rows).map(|index| Row::Photo { index, rows }));
                let dims = file.dimensions.map(|(w, h)| format!("{w}×{h}, ")).unwrap_or_default();
                let caption = format!("{name} ({dims}{})", transfer::size(file.size));
                out.push(Row::File { head: None, text: caption, receipt });
            } else {
                let mut line = format!("[file] {name} · {}", transfer::size(file.size));
                if !path.is_empty() {
                    line = format!("{line} · {path}");
                }
                out.push(Row::File { head: first_head.take(), text: line, receipt });
            }
            if let Some(t) = ctx.transfers.get(&entry.id) {
                out.push(Row::Gauge(t.clone()));
            }
        }
    }
    out
}

/// How many rows message `i` takes.
pub fn height(entries: &VecDeque<Entry>, i: usize, ctx: &Ctx) -> usize {
    rows(entries, i, ctx).len()
}

/// The widest sender name among `entries` (ours is `you`).
pub fn name_width<'a>(entries: impl Iterator<Item = &'a Entry>) -> u16 {
    entries
        .map(|e| e.from.as_ref().map_or(3, |n| text::width(n.as_str())))
        .max()
        .unwrap_or(3)
        .min(usize::from(MAX_NAME_WIDTH)) as u16
}
