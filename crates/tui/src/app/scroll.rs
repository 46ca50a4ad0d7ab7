//! Scrolling the open conversation, and what a frame showed: read receipts for what is on
//! screen, the pages and photos the view needs.

use super::*;

impl App {
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
        if self.jump_to_first_unread(&chat_drawn) {
            // The frame just drawn shows the newest messages, not what the user will see.
            self.redraw = true;
            return;
        }
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

    /// Puts the first unread message at the top of the view, once, after opening; true if the
    /// view moved.
    fn jump_to_first_unread(&mut self, chat_drawn: &ChatDrawn) -> bool {
        let Some(open) = &mut self.open else { return false };
        if !std::mem::take(&mut open.jump_to_unread) {
            return false;
        }
        let Some(open) = &self.open else { return false };
        let Some(i) = open.first_unread.and_then(|id| open.position(id)) else { return false };
        if chat_drawn.whole.contains(&i) {
            return false;
        }
        let Some(h) = self.ctx().map(|ctx| layout::height(&open.entries, i, &ctx)) else { return false };
        if let Some(open) = &mut self.open {
            // Its first row on the view's last row, then down a screen less one row.
            open.scroll = Scroll::At { entry: i, skip: h.saturating_sub(1) };
        }
        self.scroll_by(1 - chat_drawn.area.height as isize);
        true
    }
}
