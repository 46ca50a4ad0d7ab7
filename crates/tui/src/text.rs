//! Text from other people made safe to draw, and measured the way the terminal draws it.
//!
//! Names, messages and file names come from peers. A control character (ESC above all) could
//! repaint the screen, and a bidirectional override could reverse the text around it, so every
//! such character is replaced by a visible stand-in before anything is drawn: C0 controls by their
//! Unicode "control picture" (`␛`), DEL by `␡`, C1 controls, bidi controls and the other invisible
//! format characters (zero-width spaces, U+FEFF, tags…; the joiners U+200C and U+200D stay, for
//! emoji sequences and the scripts that need them) by `�`. Widths are
//! those of `unicode-width` per grapheme (what ratatui uses), so wide characters and emoji take
//! their real two cells.

use std::borrow::Cow;

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;
use whatsap2p_proto::file_name::is_invisible_format;

/// Is `c` an invisible character that changes or hides how the text around it reads (a
/// bidirectional control above all), other than the joiners emoji and some scripts need?
fn is_bidi_control(c: char) -> bool {
    is_invisible_format(c) && !matches!(c, '\u{200C}' | '\u{200D}')
}

/// What to draw in place of `c`, if `c` must not reach the terminal.
fn stand_in(c: char) -> Option<char> {
    match c {
        '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32),
        '\u{7f}' => Some('\u{2421}'),
        '\u{80}'..='\u{9f}' => Some('\u{fffd}'),
        c if is_bidi_control(c) => Some('\u{fffd}'),
        _ => None,
    }
}

/// `s` with every control and bidi character replaced by a visible stand-in (newlines too: this
/// is for one-line things such as names and previews).
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| stand_in(c).is_some()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| stand_in(c).unwrap_or(c)).collect())
}

/// [`clean`], keeping line breaks: the lines of a message, each cleaned.
pub fn clean_lines(s: &str) -> impl Iterator<Item = Cow<'_, str>> {
    s.split('\n').map(|line| clean(line.strip_suffix('\r').unwrap_or(line)))
}

/// Cells `s` takes on screen.
pub fn width(s: &str) -> usize {
    s.graphemes(true).map(UnicodeWidthStr::width).sum()
}

/// `s` cut to at most `max` cells, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if width(s) <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let mut out = String::new();
    let mut used = 0;
    for g in s.graphemes(true) {
        let w = g.width();
        if used + w > max - 1 {
            break;
        }
        out.push_str(g);
        used += w;
    }
    out.push('…');
    Cow::Owned(out)
}

/// Splits one line of text into rows of at most `max` cells, breaking after spaces where it can
/// and inside a word only when the word is longer than a row. Returns byte ranges of `line`.
pub fn wrap(line: &str, max: usize) -> Vec<std::ops::Range<usize>> {
    let max = max.max(1);
    let mut rows = Vec::new();
    let mut start = 0;
    let mut used = 0;
    // The end of the row if it breaks after the last space seen.
    let mut last_break: Option<(usize, usize)> = None;
    for (i, g) in line.grapheme_indices(true) {
        let w = g.width();
        if g == " " && used + w > max {
            // A space that does not fit hangs at the end of its row rather than start the next.
            rows.push(start..i + 1);
            start = i + 1;
            used = 0;
            last_break = None;
            continue;
        }
        if used + w > max && used > 0 {
            match last_break {
                Some((end, used_after)) if end > start => {
                    rows.push(start..end);
                    start = end;
                    used -= used_after;
                }
                _ => {
                    rows.push(start..i);
                    start = i;
                    used = 0;
                }
            }
            last_break = None;
        }
        used += w;
        if g == " " {
            last_break = Some((i + g.len(), used));
        }
    }
    if start < line.len() || rows.is_empty() {
        rows.push(start..line.len());
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_escape_sequences_and_bidi_overrides_then_they_are_shown_not_interpreted() {
        let evil = "ok\u{1b}[2J\u{202e}gnp.exe\u{7f}\u{9b}";
        let shown = clean(evil);
        assert_eq!(shown, "ok\u{241b}[2J\u{fffd}gnp.exe\u{2421}\u{fffd}");
        assert!(!shown.chars().any(|c| c.is_control() || is_bidi_control(c)));
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        let hidden = clean("a\u{200b}b\u{feff}c\u{2066}d\u{2028}e");
        assert_eq!(hidden, "a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}e");
        assert!(matches!(clean("👨\u{200d}👩\u{200d}👧"), Cow::Borrowed(_)), "joiners stay");
        let lines: Vec<_> = clean_lines("a\r\nb\u{1b}").collect();
        assert_eq!(lines, ["a", "b\u{241b}"]);
    }

    #[test]
    fn given_wide_characters_and_emoji_then_they_count_two_cells() {
        assert_eq!(width("日本"), 4);
        assert_eq!(width("a👍b"), 4);
        assert_eq!(width("👨‍👩‍👧"), 2, "a ZWJ family is one grapheme");
        assert_eq!(truncate("日本語です", 5), "日本…");
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn given_a_long_line_then_it_wraps_at_spaces_and_inside_words_only_when_needed() {
        let line = "hello world, this is long";
        let rows: Vec<&str> = wrap(line, 11).into_iter().map(|r| &line[r]).collect();
        assert_eq!(rows, ["hello ", "world, this ", "is long"]);
        let word = "abcdefghij";
        let rows: Vec<&str> = wrap(word, 4).into_iter().map(|r| &word[r]).collect();
        assert_eq!(rows, ["abcd", "efgh", "ij"]);
        let spaced = "abcd efgh";
        let rows: Vec<&str> = wrap(spaced, 4).into_iter().map(|r| &spaced[r]).collect();
        assert_eq!(rows, ["abcd ", "efgh"]);
        assert_eq!(wrap("abcd ", 4), vec![0..5]);
        let wide = "日本語テキスト";
        let rows: Vec<&str> = wrap(wide, 5).into_iter().map(|r| &wide[r]).collect();
        assert_eq!(rows, ["日本", "語テ", "キス", "ト"]);
        assert_eq!(wrap("", 10), vec![0..0]);
    }
}
