//! The text being typed: the input line at the bottom (several lines with Alt+Enter) and the
//! one-line fields of dialogs. Knows nothing of messages or commands; it edits a string and says
//! where the cursor is drawn.

use unicode_segmentation::UnicodeSegmentation;

use crate::text;

/// Most bytes the input holds: a text message is at most 32 KiB, and a paste larger than this is
/// cut rather than held.
pub const MAX_INPUT: usize = 64 * 1024;

/// A string being edited, with a cursor (a byte offset on a grapheme boundary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Editor {
    text: String,
    cursor: usize,
}

/// How the text is drawn in a given width: the rows, and where the cursor is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// Each row, cleaned of control characters.
    pub rows: Vec<String>,
    /// Row and column (in cells) of the cursor.
    pub cursor: (usize, usize),
}

impl Editor {
    /// An editor holding `text`, the cursor at its end.
    pub fn with(text: &str) -> Self {
        let mut e = Self::default();
        e.insert(text);
        e
    }

    /// What was typed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Nothing typed.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Takes the text, leaving the editor empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Replaces the text; the cursor goes to the end.
    pub fn set(&mut self, text: &str) {
        self.text.clear();
        self.cursor = 0;
        self.insert(text);
    }

    /// Inserts `s` at the cursor (line breaks normalized, tabs as spaces), as much of it as
    /// [`MAX_INPUT`] allows. Returns false if some was left out.
    pub fn insert(&mut self, s: &str) -> bool {
        let s = s.replace("\r\n", "\n").replace('\r', "\n").replace('\t', "    ");
        let room = MAX_INPUT.saturating_sub(self.text.len());
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.text.insert_str(self.cursor, &s[..take]);
        self.cursor += take;
        take == s.len()
    }

    /// Inserts one character.
    pub fn insert_char(&mut self, c: char) -> bool {
        let mut buf = [0u8; 4];
        self.insert(c.encode_utf8(&mut buf))
    }

    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor].grapheme_indices(true).next_back().map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..].graphemes(true).next().map_or(self.cursor, |g| self.cursor + g.len())
    }

    /// Deletes the grapheme before the cursor.
    pub fn backspace(&mut self) {
        let start = self.prev_boundary();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes the grapheme under the cursor.
    pub fn delete(&mut self) {
        let end = self.next_boundary();
        self.text.replace_range(self.cursor..end, "");
    }

    /// Moves left one grapheme.
    pub fn left(&mut self) {
        self.cursor = self.prev_boundary();
    }

    /// Moves right one grapheme.
    pub fn right(&mut self) {
        self.cursor = self.next_boundary();
    }

    /// Moves to the start of the current line.
    pub fn home(&mut self) {
        self.cursor = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
    }

    /// Moves to the end of the current line.
    pub fn end(&mut self) {
        self.cursor = self.text[self.cursor..].find('\n').map_or(self.text.len(), |i| self.cursor + i);
    }

    /// Deletes the word before the cursor (and the spaces after it).
    pub fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(' ');
        let start = trimmed.rfind([' ', '\n']).map_or(0, |i| i + 1);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes from the start of the current line to the cursor.
    pub fn delete_to_home(&mut self) {
        let end = self.cursor;
        self.home();
        self.text.replace_range(self.cursor..end, "");
    }

    /// How the text is drawn in `width` cells: logical lines wrapped, controls neutralized.
    pub fn shown(&self, width: usize) -> Shown {
        let mut rows = Vec::new();
        let mut cursor = (0, 0);
        let mut offset = 0;
        for line in self.text.split('\n') {
            let cleaned = text::clean(line);
            // Cleaning swaps characters one for one, so the cursor's character index carries over.
            let cursor_chars = (self.cursor >= offset && self.cursor <= offset + line.len())
                .then(|| line[..self.cursor - offset].chars().count());
            let ranges = text::wrap(&cleaned, width);
            let cursor_byte =
                cursor_chars.map(|n| cleaned.char_indices().nth(n).map_or(cleaned.len(), |(i, _)| i));
            let last = ranges.len() - 1;
            for (i, r) in ranges.into_iter().enumerate() {
                if let Some(at) = cursor_byte {
                    // On a row boundary the cursor goes to the start of the next row.
                    if at >= r.start && (at < r.end || i == last) {
                        cursor = (rows.len(), text::width(&cleaned[r.start..at]));
                    }
                }
                rows.push(cleaned[r].to_owned());
            }
            offset += line.len() + 1;
        }
        // A cursor after a full last row is drawn at the start of a row below it.
        if cursor.1 >= width.max(1) {
            cursor = (cursor.0 + 1, 0);
            if cursor.0 == rows.len() {
                rows.push(String::new());
            }
        }
        Shown { rows, cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_typing_and_editing_keys_then_text_and_cursor_follow() {
        let mut e = Editor::default();
        for c in "hello wörld".chars() {
            e.insert_char(c);
        }
        e.left();
        e.left();
        e.backspace();
        assert_eq!(e.text(), "hello wöld");
        e.home();
        e.delete();
        assert_eq!(e.text(), "ello wöld");
        e.end();
        e.delete_word();
        assert_eq!(e.text(), "ello ");
        e.insert("a\r\nb\tc");
        assert_eq!(e.text(), "ello a\nb    c");
        e.delete_to_home();
        assert_eq!(e.text(), "ello a\n");
        assert_eq!(e.take(), "ello a\n");
        assert!(e.is_empty());
    }

    #[test]
    fn given_a_paste_over_the_limit_then_it_is_cut_at_a_character() {
        let mut e = Editor::default();
        assert!(!e.insert(&"é".repeat(MAX_INPUT)));
        assert!(e.text().len() <= MAX_INPUT);
        assert!(!e.insert_char('x'));
    }

    #[test]
    fn given_lines_wider_than_the_box_then_rows_wrap_and_the_cursor_is_placed_on_them() {
        let e = Editor::with("one two three\n日本\u{1b}");
        let shown = e.shown(8);
        assert_eq!(shown.rows, ["one two ", "three", "日本\u{241b}"]);
        assert_eq!(shown.cursor, (2, 5));
        let full = Editor::with("abcd");
        assert_eq!(full.shown(4).cursor, (1, 0));
    }
}
