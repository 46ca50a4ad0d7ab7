//! The status line: our number, the directory session (connected or reconnecting), our key's
//! fingerprint, and where help is.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::Frame;

use crate::app::{App, Directory};
use crate::text;

/// Draws the status line in `area` (one row).
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    let buf = frame.buffer_mut();
    buf.set_style(area, bar);
    let width = usize::from(area.width);
    let (x, _) = buf.set_stringn(
        area.x,
        area.y,
        format!(" {} ", app.me.number),
        width,
        bar.add_modifier(Modifier::BOLD),
    );
    let (state, style) = match app.directory {
        Directory::Connected => ("● connected", bar.fg(Color::LightGreen)),
        Directory::Reconnecting => ("◌ reconnecting…", bar.fg(Color::LightRed).add_modifier(Modifier::BOLD)),
        Directory::Replaced => ("✕ replaced", bar.fg(Color::LightRed).add_modifier(Modifier::BOLD)),
    };
    let room = |x: u16| width.saturating_sub(usize::from(x - area.x));
    let (x, _) = buf.set_stringn(x, area.y, state, room(x), style);
    let help = " F1 help ";
    let key_room = room(x).saturating_sub(text::width(help) + 1);
    // As many whole groups of the fingerprint as fit, then `…`.
    let full = app.me.key.fingerprint();
    let groups: Vec<&str> = full.split(':').collect();
    let shown = (1..=groups.len()).rev().find_map(|n| {
        let mut key = groups[..n].join(":");
        if n < groups.len() {
            key.push('…');
        }
        let line = format!(" · key {key}");
        (text::width(&line) <= key_room).then_some(line)
    });
    if let Some(line) = shown {
        buf.set_stringn(x, area.y, line, key_room, bar);
    }
    if width > text::width(help) + 20 {
        buf.set_string(area.right() - text::width(help) as u16, area.y, help, bar);
    }
}
