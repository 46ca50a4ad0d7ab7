//! What is drawn over the screen: the help, the contacts, a dialog asking one thing, a photo
//! shown large. Each sits in a box cleared of what is under it.

use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Borders, Clear};
use ratatui::Frame;
use ratatui_image::Image;

use crate::app::{large_cells, App, Overlay};
use crate::command::COMMANDS;
use crate::photo::Kept;
use crate::text;
use crate::view::{bold, dim, error, highlight};

/// The keys, for the help.
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "send · run a command · open the selected"),
    ("Alt+Enter", "new line in the message"),
    ("Tab / Shift-Tab", "next / previous conversation"),
    ("Ctrl-N / Ctrl-P", "next / previous conversation"),
    ("Alt-A", "next conversation with unread messages"),
    ("PgUp / PgDn", "scroll (older pages load as you go)"),
    ("↑ / ↓ (empty line)", "select a message; Enter shows a photo large"),
    ("Ctrl-X", "cancel the selected (or last) file on its way"),
    ("Esc", "back: unselect, to the newest, to the list"),
    ("1-5 (list, empty line)", "ping · write to · contacts · add · logout"),
    ("F1, ? (list, empty line)", "this help"),
    ("mouse", "click a conversation or a photo; wheel scrolls"),
    ("Ctrl-L", "draw the whole screen again"),
    ("Ctrl-C", "log out and leave"),
];

/// A box of `w`×`h` cells centred in `area` (shrunk to fit).
pub fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let (w, h) = (w.min(area.width), h.min(area.height));
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// Clears `area`, draws a titled border around it; returns the inside.
pub fn boxed(frame: &mut Frame, area: Rect, title: &str) -> Rect {
    frame.render_widget(Clear, area);
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(Color::Cyan))
        .title(format!(" {title} "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    inner
}

/// Draws a one-row field being typed at row `y` of `inner` (a prompt, the cursor's row of the
/// text) and places the cursor in it.
pub fn field(frame: &mut Frame, inner: Rect, y: u16, editor: &crate::editor::Editor) {
    let width = inner.width.saturating_sub(2);
    let shown = editor.shown(usize::from(width).max(1));
    let row = shown.rows.get(shown.cursor.0).cloned().unwrap_or_default();
    let buf = frame.buffer_mut();
    buf.set_string(inner.x, y, "›", Style::new().fg(Color::Cyan));
    buf.set_stringn(inner.x + 2, y, &row, usize::from(width), Style::new());
    let x = (inner.x + 2 + shown.cursor.1 as u16).min(inner.right().saturating_sub(1));
    frame.set_cursor_position(Position::new(x, y));
}

/// The help's lines: keys, commands, receipts.
pub fn help_lines() -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> = KEYS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    lines.push((String::new(), String::new()));
    lines.extend(COMMANDS.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    lines.push((String::new(), String::new()));
    lines.push(("✓ ✓✓ ✓✓".into(), "sent · delivered · read (blue); … queued, ✗ failed".into()));
    lines.push(("✓?".into(), "sent, held until they accept you as a contact".into()));
    lines
}

/// Draws `overlay` over `screen`.
pub fn render(app: &App, overlay: &Overlay, frame: &mut Frame, screen: Rect) {
    match overlay {
        Overlay::Help { scroll } => {
            let lines = help_lines();
            let key_width = lines.iter().map(|(k, _)| text::width(k)).max().unwrap_or(0).min(24) as u16;
            let widest = lines.iter().map(|(_, v)| text::width(v)).max().unwrap_or(0) as u16;
            // Screens too narrow for key and description side by side put one under the other.
            let stacked = screen.width < key_width + 1 + widest + 2;
            let rows: Vec<(String, String)> = if stacked {
                lines
                    .into_iter()
                    .flat_map(|(k, v)| {
                        let under = (!v.is_empty()).then(|| (String::new(), format!("  {v}")));
                        std::iter::once((k, String::new())).chain(under)
                    })
                    .collect()
            } else {
                lines
            };
            let width = if stacked { widest + 4 } else { key_width + 1 + widest + 2 };
            let area = centred(screen, width, rows.len() as u16 + 2);
            let inner = boxed(frame, area, "Help · Esc closes · ↑↓ scroll");
            let buf = frame.buffer_mut();
            for (k, (key, what)) in
                rows.iter().skip(usize::from(*scroll)).take(usize::from(inner.height)).enumerate()
            {
                let y = inner.y + k as u16;
                if stacked {
                    let (line, style) = if key.is_empty() { (what, Style::new()) } else { (key, bold()) };
                    buf.set_stringn(
                        inner.x,
                        y,
                        text::truncate(line, usize::from(inner.width)),
                        usize::from(inner.width),
                        style,
                    );
                    continue;
                }
                buf.set_stringn(inner.x, y, key, usize::from(key_width.min(inner.width)), bold());
                let x = inner.x + key_width + 1;
                if x < inner.right() {
                    buf.set_stringn(x, y, what, usize::from(inner.right() - x), Style::new());
                }
            }
        }
        Overlay::Contacts { list, selected } => {
            let rows = list.as_ref().map_or(1, |l| l.len().max(1)) as u16;
            let area = centred(screen, 60, rows + 2);
            let inner = boxed(frame, area, "Contacts · Enter opens · Esc closes");
            let buf = frame.buffer_mut();
            let width = usize::from(inner.width);
            match list {
                None => {
                    buf.set_stringn(inner.x, inner.y, "loading…", width, dim());
                }
                Some(l) if l.is_empty() => {
                    buf.set_stringn(
                        inner.x,
                        inner.y,
                        "No contacts yet: /add N (or 4 on the list)",
                        width,
                        dim(),
                    );
                }
                Some(l) => {
                    let first = selected.saturating_sub(usize::from(inner.height).saturating_sub(1));
                    for (k, p) in l.iter().enumerate().skip(first).take(usize::from(inner.height)) {
                        let y = inner.y + (k - first) as u16;
                        let base = if k == *selected { highlight() } else { Style::new() };
                        buf.set_style(Rect { y, height: 1, ..inner }, base);
                        let (dot, status) = match p.online {
                            Some(addr) => (("●", base.fg(Color::Green)), format!("online ({addr})")),
                            None => (("○", base.fg(Color::DarkGray)), "offline".to_owned()),
                        };
                        buf.set_string(inner.x, y, dot.0, dot.1);
                        buf.set_stringn(
                            inner.x + 2,
                            y,
                            format!("{}  {status}", p.number),
                            width.saturating_sub(2),
                            base,
                        );
                    }
                }
            }
        }
        Overlay::Dialog(d) => {
            let area = centred(screen, 60, 5);
            let inner = boxed(frame, area, d.ask.prompt());
            field(frame, inner, inner.y, &d.editor);
            let buf = frame.buffer_mut();
            let (line, style) = match &d.error {
                Some(e) => (text::clean(e).into_owned(), error()),
                None => ("Enter: OK · Esc: cancel".to_owned(), dim()),
            };
            if inner.height > 1 {
                buf.set_stringn(inner.x, inner.y + inner.height - 1, line, usize::from(inner.width), style);
            }
        }
        Overlay::Photo(id) => {
            let area = centred(screen, screen.width, screen.height);
            let name = app.file(*id).map_or_else(String::new, |f| text::clean(&f.name).into_owned());
            let inner = boxed(frame, area, &format!("{name} · Esc closes"));
            let cells = large_cells(screen);
            let buf = frame.buffer_mut();
            match app.photos.get(*id, cells) {
                Some(Kept::Ready(p)) => {
                    let size = p.size();
                    let target = centred(inner, size.width, size.height);
                    frame.render_widget(Image::new(p), target);
                }
                Some(Kept::Failed(reason)) => {
                    buf.set_stringn(
                        inner.x,
                        inner.y,
                        format!("cannot show it: {}", text::clean(reason)),
                        usize::from(inner.width),
                        error(),
                    );
                }
                _ => {
                    buf.set_stringn(inner.x, inner.y, "loading…", usize::from(inner.width), dim());
                }
            }
        }
    }
}
