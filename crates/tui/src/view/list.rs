//! The conversation list: two rows per conversation, most recent first. The first row has the
//! online dot, the name, the path where known, the unread count and the time of the last message;
//! the second the start of the last message.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::Frame;

use crate::app::{App, Focus};
use crate::backend::{Body, Chat, Conversation, Online, Route};
use crate::text;
use crate::view::{bold, dim, highlight};

/// Rows per conversation.
pub const ROWS: u16 = 2;

/// The start of a conversation's last message, as one line.
pub fn preview(c: &Conversation) -> String {
    let Some(last) = &c.last else { return String::new() };
    let who = match (&last.from, &c.chat) {
        (None, _) => "you: ".to_owned(),
        (Some(n), Chat::Group(_)) => format!("{}: ", n.as_str()),
        (Some(_), Chat::Peer(_)) => String::new(),
    };
    let what = match &last.body {
        Body::Text(t) => text::clean_lines(t).next().map(|l| l.into_owned()).unwrap_or_default(),
        Body::File(f) if f.is_photo() => format!("[photo] {}", text::clean(&f.name)),
        Body::File(f) => format!("[file] {}", text::clean(&f.name)),
    };
    format!("{who}{what}")
}

/// Draws the list in `area`; returns the area and the conversation starting at each row.
pub fn render(app: &App, frame: &mut Frame, area: Rect) -> (Rect, Vec<(u16, Chat)>) {
    let buf = frame.buffer_mut();
    let width = usize::from(area.width);
    let mut rows = Vec::new();
    if app.conversations.is_empty() {
        let hint =
            ["No conversations yet.", "/open N or 2: write to N", "/add N or 4: add a contact", "? for help"];
        for (k, line) in hint.iter().enumerate().take(usize::from(area.height)) {
            buf.set_stringn(area.x + 1, area.y + k as u16, line, width.saturating_sub(1), dim());
        }
        return (area, rows);
    }
    let per_page = usize::from((area.height / ROWS).max(1));
    let open = app.open.as_ref().map(|o| &o.chat);
    let selected = app
        .selected
        .as_ref()
        .or(open)
        .and_then(|chat| app.conversations.iter().position(|c| c.chat == *chat))
        .unwrap_or(0);
    let first = selected / per_page * per_page;
    let now = app.now_ms();
    for (k, c) in app.conversations.iter().enumerate().skip(first).take(per_page) {
        let y = area.y + (k - first) as u16 * ROWS;
        rows.push((y, c.chat.clone()));
        let is_open = open == Some(&c.chat);
        let is_selected = k == selected && app.focus == Focus::List;
        let base = if is_selected { highlight() } else { Style::new() };
        buf.set_style(Rect { y, height: ROWS.min(area.bottom() - y), ..area }, base);
        // Row one: marker, dot, name, path … unread, time.
        let marker = if is_open { "▌" } else { " " };
        buf.set_string(area.x, y, marker, base.fg(Color::Cyan));
        let (dot, dot_style) = match (&c.chat, c.online) {
            (Chat::Group(_), _) => ("#", base.fg(Color::Cyan)),
            (_, Online::Yes) => ("●", base.fg(Color::Green)),
            (_, Online::No) => ("○", base.fg(Color::DarkGray)),
            (_, Online::Unknown) => ("·", base.fg(Color::DarkGray)),
        };
        buf.set_string(area.x + 1, y, dot, dot_style);
        let time =
            if c.last_activity_ms > 0 { app.zone.short(c.last_activity_ms, now) } else { String::new() };
        let badge = if c.unread > 0 { format!(" {} ", c.unread) } else { String::new() };
        let right =
            text::width(&time) + text::width(&badge) + usize::from(!time.is_empty() && !badge.is_empty());
        let route = match c.route {
            Some(Route::Direct) => " direct",
            Some(Route::Relayed) => " relayed",
            None => "",
        };
        let left_tag = if c.left { " (left)" } else { route };
        let name_room = width.saturating_sub(3 + right + 1 + text::width(left_tag));
        let name = text::truncate(&text::clean(&c.name), name_room).into_owned();
        let name_style = if c.unread > 0 { base.add_modifier(Modifier::BOLD) } else { base };
        let name_style = if c.left { name_style.fg(Color::DarkGray) } else { name_style };
        let (x, _) = buf.set_stringn(area.x + 3, y, &name, name_room, name_style);
        buf.set_stringn(
            x,
            y,
            left_tag,
            width.saturating_sub(usize::from(x - area.x)),
            base.fg(Color::DarkGray),
        );
        let right_x = area.right().saturating_sub(right as u16);
        if !badge.is_empty() {
            buf.set_string(
                right_x,
                y,
                &badge,
                Style::new().bg(Color::Green).fg(Color::Black).add_modifier(Modifier::BOLD),
            );
        }
        let time_x = area.right().saturating_sub(text::width(&time) as u16);
        buf.set_string(time_x, y, &time, if is_selected { base } else { dim() });
        // Row two: the last message.
        if y + 1 < area.bottom() {
            let preview = text::truncate(&preview(c), width.saturating_sub(3)).into_owned();
            let style = if c.unread > 0 {
                base.patch(bold())
            } else if is_selected {
                base
            } else {
                dim()
            };
            buf.set_stringn(area.x + 3, y + 1, preview, width.saturating_sub(3), style);
        }
    }
    (area, rows)
}
