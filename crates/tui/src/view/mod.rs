//! Drawing: [`render`] paints an [`App`] into a frame and says what it showed ([`Drawn`]). It reads
//! the state and changes nothing; a frame costs what is on screen, not the size of the history.
//!
//! # Layout
//! - [`list`]: the conversation list on the left.
//! - [`chat`]: the open conversation.
//! - [`compose`]: the input box and the line above it (notices, hints).
//! - [`status`]: the status line.
//! - [`overlay`]: help, contacts, dialogs and a photo shown large.
//!
//! Wide terminals (at least [`WIDE`] columns) show the list and the conversation side by side;
//! narrower ones show one of them at a time, the list while it has the focus.

pub mod chat;
pub mod compose;
pub mod list;
pub mod overlay;
pub mod status;

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::Frame;

use crate::app::{App, Drawn, Focus};

/// Narrowest terminal showing the list beside the conversation.
pub const WIDE: u16 = 60;
/// Smallest terminal drawn at all.
pub const MIN_SIZE: (u16, u16) = (20, 6);

/// Dim text: times, hints, previews.
pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// Bold.
pub fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// Errors.
pub fn error() -> Style {
    Style::new().fg(Color::Red)
}

/// Highlight of a selected line.
pub fn highlight() -> Style {
    Style::new().bg(Color::DarkGray).fg(Color::White)
}

/// The colour of a sender's name: ours fixed, others spread over a palette by their number.
pub fn name_color(name: &str) -> Color {
    const PALETTE: [Color; 6] = [
        Color::Green,
        Color::Yellow,
        Color::Magenta,
        Color::LightRed,
        Color::LightGreen,
        Color::LightMagenta,
    ];
    let hash = name.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    PALETTE[hash % PALETTE.len()]
}

/// Draws `app`; returns what was shown where.
pub fn render(app: &App, frame: &mut Frame) -> Drawn {
    let screen = frame.area();
    let mut drawn = Drawn { screen, ..Drawn::default() };
    if screen.width < MIN_SIZE.0 || screen.height < MIN_SIZE.1 {
        let msg = crate::text::truncate("window too small", usize::from(screen.width)).into_owned();
        frame.buffer_mut().set_stringn(screen.x, screen.y, msg, usize::from(screen.width), error());
        return drawn;
    }
    let status_area = Rect { y: screen.bottom() - 1, height: 1, ..screen };
    let compose_height = compose::height(app, screen.width, (screen.height - 1) / 3);
    let compose_area = Rect { y: status_area.y - compose_height, height: compose_height, ..screen };
    let main = Rect { height: compose_area.y - screen.y, ..screen };

    let wide = screen.width >= WIDE;
    let show_list = wide || app.focus == Focus::List || app.open.is_none();
    let show_chat = app.open.is_some() && (wide || !show_list);
    if wide {
        let list_width = (screen.width / 4).clamp(24, 36);
        let list_area = Rect { width: list_width, ..main };
        let chat_area = Rect { x: main.x + list_width + 1, width: main.width - list_width - 1, ..main };
        drawn.list = Some(list::render(app, frame, list_area));
        let rule = Style::new().fg(Color::DarkGray);
        for y in main.top()..main.bottom() {
            frame.buffer_mut().set_string(main.x + list_width, y, "│", rule);
        }
        if show_chat {
            drawn.chat = chat::render(app, frame, chat_area);
        } else {
            chat::welcome(app, frame, chat_area);
        }
    } else if show_chat {
        drawn.chat = chat::render(app, frame, main);
    } else {
        drawn.list = Some(list::render(app, frame, main));
    }
    compose::render(app, frame, compose_area);
    status::render(app, frame, status_area);
    if let Some(o) = &app.overlay {
        overlay::render(app, o, frame, screen);
    }
    drawn
}
