//! The open conversation: a title row, then its messages drawn from the bottom of the view
//! upwards, starting at the scroll anchor. Only the messages on screen are laid out, so a frame
//! costs the same in a conversation of ten messages or of a hundred thousand.

use ratatui::layout::{Rect, Size};
use ratatui::style::{Color, Modifier, Style};
use ratatui::Frame;
use ratatui_image::Image;

use crate::app::{App, ChatDrawn, Scroll};
use crate::backend::{Chat, Online, Route};
use crate::layout::{self, Ctx, Geometry, Head, Receipt, Row, Who};
use crate::photo::Kept;
use crate::text;
use crate::view::{bold, dim, error, highlight, name_color};

fn title(app: &App, frame: &mut Frame, area: Rect) {
    let Some(open) = &app.open else { return };
    let conversation = app.conversation(&open.chat);
    let name = conversation.map_or_else(String::new, |c| text::clean(&c.name).into_owned());
    let mut facts = Vec::new();
    match (&open.chat, conversation) {
        (Chat::Group(_), Some(c)) if c.left => facts.push("group, left".to_owned()),
        (Chat::Group(_), _) => facts.push("group".to_owned()),
        (Chat::Peer(_), Some(c)) => {
            facts.push(match c.online {
                Online::Yes => "online".to_owned(),
                Online::No => "offline".to_owned(),
                Online::Unknown => "status unknown".to_owned(),
            });
            match c.route {
                Some(Route::Direct) => facts.push("direct".to_owned()),
                Some(Route::Relayed) => facts.push("relayed".to_owned()),
                None => {}
            }
        }
        (Chat::Peer(_), None) => {}
    }
    let mut busy = Vec::new();
    if open.loading.latest || open.loading.before || open.loading.after {
        busy.push("loading…");
    }
    if open.sending > 0 {
        busy.push("sending…");
    }
    if open.scroll != Scroll::Bottom {
        busy.push("↓ newer below (Esc)");
    }
    let buf = frame.buffer_mut();
    let width = usize::from(area.width);
    let (x, _) = buf.set_stringn(area.x, area.y, &name, width, bold());
    let facts = format!(" · {}", facts.join(" · "));
    let used = usize::from(x - area.x);
    buf.set_stringn(x, area.y, &facts, width.saturating_sub(used), dim());
    let busy = busy.join(" ");
    let busy_width = text::width(&busy);
    if used + text::width(&facts) + busy_width < width {
        buf.set_string(area.right() - busy_width as u16, area.y, &busy, Style::new().fg(Color::Yellow));
    }
}

/// The right pane when no conversation is open.
pub fn welcome(app: &App, frame: &mut Frame, area: Rect) {
    let lines = [
        format!("Welcome, {}.", app.me.number),
        String::new(),
        "Tab or Enter opens a conversation; /open N starts one.".to_owned(),
        "On an empty line in the list:".to_owned(),
        "1 ping · 2 write to · 3 contacts · 4 add contact · 5 logout".to_owned(),
        "? shows every key and command.".to_owned(),
    ];
    let buf = frame.buffer_mut();
    for (k, line) in lines.iter().enumerate().take(usize::from(area.height)) {
        buf.set_stringn(
            area.x + 1,
            area.y + k as u16,
            line,
            usize::from(area.width.saturating_sub(1)),
            dim(),
        );
    }
}

fn head_spans(frame: &mut Frame, x: u16, y: u16, head: &Head, g: &Geometry, max_x: u16, base: Style) -> u16 {
    let buf = frame.buffer_mut();
    let (x, _) = buf.set_stringn(x, y, &head.time, usize::from(max_x.saturating_sub(x)), base.patch(dim()));
    let x = x + 1;
    let (name, style) = match &head.who {
        Who::Me => ("you".to_owned(), base.fg(Color::Cyan).add_modifier(Modifier::BOLD)),
        Who::Them(n) => (n.clone(), base.fg(name_color(n)).add_modifier(Modifier::BOLD)),
    };
    let room = if g.stacked { usize::from(max_x.saturating_sub(x)) } else { usize::from(g.name_width) };
    let name = text::truncate(&name, room).into_owned();
    buf.set_stringn(x, y, name, room, style);
    x
}

fn receipt(frame: &mut Frame, x: u16, y: u16, r: Receipt, base: Style) {
    let style = match r {
        Receipt::Queued => base.patch(dim()),
        Receipt::Sent | Receipt::Delivered => base.fg(Color::Gray),
        Receipt::Held => base.fg(Color::Yellow),
        Receipt::Read => base.fg(Color::LightBlue).add_modifier(Modifier::BOLD),
        Receipt::Failed => base.patch(error()),
    };
    frame.buffer_mut().set_string(x, y, r.glyph(), style);
}

fn draw_row(frame: &mut Frame, area: Rect, y: u16, row: &Row, g: &Geometry, base: Style) {
    let text_x = area.x + g.text_x();
    let max_x = area.right();
    let room = |x: u16| usize::from(max_x.saturating_sub(x));
    match row {
        Row::Day(label) => {
            let label = format!(" {label} ");
            let w = text::width(&label).min(usize::from(area.width)) as u16;
            let x = area.x + (area.width - w) / 2;
            let buf = frame.buffer_mut();
            for cx in area.x..area.right() {
                buf.set_string(cx, y, "─", dim());
            }
            buf.set_stringn(x, y, &label, usize::from(w), dim());
        }
        Row::Unread => {
            let label = " new messages ";
            let w = text::width(label).min(usize::from(area.width)) as u16;
            let x = area.x + (area.width - w) / 2;
            let buf = frame.buffer_mut();
            let rule = Style::new().fg(Color::Green);
            for cx in area.x..area.right() {
                buf.set_string(cx, y, "─", rule);
            }
            buf.set_stringn(x, y, label, usize::from(w), rule.add_modifier(Modifier::BOLD));
        }
        Row::Head(head) => {
            head_spans(frame, area.x, y, head, g, max_x, base);
        }
        Row::Text { head, text: line, receipt: r } | Row::File { head, text: line, receipt: r } => {
            if let Some(head) = head {
                head_spans(frame, area.x, y, head, g, max_x, base);
            }
            let style = if matches!(row, Row::File { .. }) { base.fg(Color::Cyan) } else { base };
            let (x, _) = frame.buffer_mut().set_stringn(text_x, y, line.trim_end(), room(text_x), style);
            if let Some(r) = r {
                if x + 1 + text::width(r.glyph()) as u16 <= max_x {
                    receipt(frame, x + 1, y, *r, base);
                }
            }
        }
        // Drawn as a whole box by `draw_photo`.
        Row::Photo { .. } => {}
        Row::Gauge(t) => {
            let summary = t.summary();
            let bar = usize::from(g.text_width()).saturating_sub(text::width(&summary) + 1).min(30);
            let filled = (t.ratio() * bar as f64).round() as usize;
            let buf = frame.buffer_mut();
            let (x, _) = buf.set_stringn(text_x, y, "█".repeat(filled), bar, base.fg(Color::Green));
            let (x, _) = buf.set_stringn(x, y, "░".repeat(bar - filled), bar - filled, base.patch(dim()));
            buf.set_stringn(x + 1, y, &summary, room(x + 1), base);
        }
    }
}

/// Draws the photo box of message `id` whose top row is `top` (all its rows are on screen).
fn draw_photo(
    app: &App,
    frame: &mut Frame,
    area: Rect,
    top: u16,
    rows: u16,
    id: whatsap2p_client::MessageId,
    g: &Geometry,
) {
    let x = area.x + g.text_x();
    let cells: Size = g.thumb();
    let box_area = Rect { x, y: top, width: cells.width.min(area.right().saturating_sub(x)), height: rows };
    let buf = frame.buffer_mut();
    let note = |buf: &mut ratatui::buffer::Buffer, text: &str, style: Style| {
        let mid = top + rows / 2;
        if mid >= area.y && mid < area.bottom() {
            buf.set_stringn(x, mid, text, usize::from(box_area.width), style);
        }
    };
    match app.photos.get(id, cells) {
        Some(Kept::Ready(protocol)) => frame.render_widget(Image::new(protocol), box_area),
        Some(Kept::Failed(reason)) => {
            note(buf, &format!("[photo not shown: {}]", text::clean(reason)), error())
        }
        _ => note(buf, "[loading photo…]", dim()),
    }
}

/// Draws the open conversation in `area` (title row included); returns what it showed.
pub fn render(app: &App, frame: &mut Frame, area: Rect) -> Option<ChatDrawn> {
    let open = app.open.as_ref()?;
    if area.height < 2 {
        return None;
    }
    title(app, frame, Rect { height: 1, ..area });
    let area = Rect { y: area.y + 1, height: area.height - 1, ..area };
    let geometry = Geometry::new(area.width, layout::name_width(open.entries.iter()));
    let ctx = Ctx {
        zone: app.zone,
        now_ms: app.now_ms(),
        geometry,
        transfers: &app.transfers,
        first_unread: open.first_unread,
    };
    let mut drawn = ChatDrawn { area, geometry, visible: Vec::new(), whole: Vec::new() };
    if open.entries.is_empty() {
        let hint = if open.loading.latest { "loading…" } else { "No messages yet: say hello." };
        frame.buffer_mut().set_stringn(area.x + 1, area.bottom() - 1, hint, usize::from(area.width), dim());
        return Some(drawn);
    }
    let last = open.entries.len() - 1;
    let (mut i, mut skip) = match open.scroll {
        Scroll::Bottom => (last, 0),
        Scroll::At { entry, skip } => (entry.min(last), skip),
    };
    let mut y = area.bottom();
    loop {
        let rows = layout::rows(&open.entries, i, &ctx);
        let shown = rows.len().saturating_sub(skip);
        let bottom = y;
        let base = if open.selected == Some(i) { highlight() } else { Style::new() };
        let mut drew = 0;
        for row in rows[..shown].iter().rev() {
            if y == area.y {
                break;
            }
            y -= 1;
            drew += 1;
            if base != Style::new() {
                frame.buffer_mut().set_style(Rect { y, height: 1, ..area }, base);
            }
            match row {
                Row::Photo { index, rows: box_rows } => {
                    // A box cut by an edge of the view is drawn as a strip; a whole one as the picture.
                    let top = y.checked_sub(*index).filter(|t| *t >= area.y);
                    let whole = top.is_some_and(|t| t + box_rows <= bottom);
                    match top {
                        Some(t) if whole && *index == 0 => {
                            draw_photo(app, frame, area, t, *box_rows, open.entries[i].id, &geometry)
                        }
                        _ if whole => {}
                        _ => {
                            let x = area.x + geometry.text_x();
                            let w = geometry.thumb().width.min(area.right().saturating_sub(x));
                            frame.buffer_mut().set_string(x, y, "░".repeat(usize::from(w)), dim());
                        }
                    }
                }
                _ => draw_row(frame, area, y, row, &geometry, base),
            }
        }
        if drew > 0 {
            drawn.visible.push((i, y, bottom - 1));
            if drew == rows.len() {
                drawn.whole.push(i);
            }
        }
        skip = 0;
        if y == area.y || i == 0 {
            break;
        }
        i -= 1;
    }
    drawn.visible.reverse();
    drawn.whole.reverse();
    Some(drawn)
}
