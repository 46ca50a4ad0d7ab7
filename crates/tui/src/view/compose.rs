//! The input box at the bottom: a rule carrying the latest notice (or a hint of what Enter does),
//! then the text being typed, as many rows as it needs up to a third of the screen. Incoming
//! messages never touch it.

use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Style};
use ratatui::Frame;

use crate::app::{App, Focus};
use crate::backend::Chat;
use crate::text;
use crate::view::{dim, error};

/// Cells of the prompt before the text.
const PROMPT: u16 = 2;

/// Rows the box takes: the rule and the text, at most `max` of text.
pub fn height(app: &App, width: u16, max: u16) -> u16 {
    let rows = app.input.shown(usize::from(width.saturating_sub(PROMPT))).rows.len() as u16;
    1 + rows.clamp(1, max.max(1))
}

fn hint(app: &App) -> String {
    if !app.input.is_empty() {
        return if app.input.text().starts_with('/') {
            "Enter runs the command · Tab completes a path".to_owned()
        } else {
            "Enter sends · Alt+Enter new line".to_owned()
        };
    }
    match (&app.open, app.focus) {
        (Some(open), Focus::Chat) if open.selected.is_some() => {
            let photo = open
                .selected
                .and_then(|i| open.entries.get(i))
                .is_some_and(|e| matches!(&e.body, crate::backend::Body::File(f) if f.is_photo()));
            if photo {
                "Enter shows the photo large · ↑↓ select · Esc unselect".to_owned()
            } else {
                "↑↓ select · Enter on a file shows its path · Ctrl-X cancels a transfer · Esc unselect"
                    .to_owned()
            }
        }
        (Some(open), Focus::Chat) => {
            let to = match &open.chat {
                Chat::Peer(n) => n.to_string(),
                Chat::Group(_) => app
                    .conversation(&open.chat)
                    .map_or_else(String::new, |c| text::clean(&c.name).into_owned()),
            };
            format!("message to {to} · ↑ selects a message · Esc list · F1 help")
        }
        _ => "↑↓ Enter open · 1 ping 2 write 3 contacts 4 add 5 logout · ? help".to_owned(),
    }
}

/// Draws the box in `area`, and places the cursor.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let width = usize::from(area.width);
    let buf = frame.buffer_mut();
    for x in area.x..area.right() {
        buf.set_string(x, area.y, "─", dim());
    }
    let (line, style) = match &app.notice {
        Some(n) => {
            (text::clean(&n.text).into_owned(), if n.error { error() } else { Style::new().fg(Color::Green) })
        }
        None => (hint(app), dim()),
    };
    let line = text::truncate(&line, width.saturating_sub(2)).into_owned();
    buf.set_stringn(area.x + 1, area.y, format!(" {line} "), width.saturating_sub(1), style);

    let rows_area = Rect { y: area.y + 1, height: area.height - 1, ..area };
    let shown = app.input.shown(width.saturating_sub(usize::from(PROMPT)));
    // Keep the cursor's row in view when the text is taller than the box.
    let first = shown.cursor.0.saturating_sub(usize::from(rows_area.height) - 1);
    let prompt_style = if app.focus == Focus::Chat { Style::new().fg(Color::Cyan) } else { dim() };
    buf.set_string(area.x, rows_area.y, "›", prompt_style);
    for (k, row) in shown.rows.iter().skip(first).take(usize::from(rows_area.height)).enumerate() {
        buf.set_stringn(
            area.x + PROMPT,
            rows_area.y + k as u16,
            row,
            width.saturating_sub(usize::from(PROMPT)),
            Style::new(),
        );
    }
    if app.overlay.is_none() {
        let (row, col) = shown.cursor;
        let y = rows_area.y + (row - first) as u16;
        let x = (area.x + PROMPT + col as u16).min(area.right().saturating_sub(1));
        frame.set_cursor_position(Position::new(x, y));
    }
}
