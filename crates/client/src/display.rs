//! Text from other people made safe for a terminal, for every front end that prints one.
//!
//! Names, messages and file names come from peers. A control character (ESC above all) could
//! colour, erase or overwrite the screen (`\e[2K` erases a line, `\e[2A` moves up two), and a
//! bidirectional override could reverse the text around it, so every such character is replaced
//! by a visible stand-in before it is printed: C0 controls by their Unicode "control picture"
//! (`␛`), DEL by `␡`, C1 controls, bidi controls and the other invisible format characters by `�`
//! (the joiners U+200C and U+200D stay, for emoji sequences and the scripts that need them). JSON output keeps the exact text.
//!
//! Also how sizes and dates are written for people, the same in every front end.

use std::borrow::Cow;

/// Is `c` an invisible character that changes or hides how the text around it reads (a
/// bidirectional control above all: every Unicode format character, zero-width spaces, U+FEFF,
/// tags…), other than the joiners that emoji sequences and some scripts need?
fn is_bidi_control(c: char) -> bool {
    whatsap2p_proto::file_name::is_invisible_format(c) && !matches!(c, '\u{200C}' | '\u{200D}')
}

/// What to print in place of `c`, if `c` must not reach the terminal.
fn stand_in(c: char) -> Option<char> {
    match c {
        '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32),
        '\u{7f}' => Some('\u{2421}'),
        '\u{80}'..='\u{9f}' => Some('\u{fffd}'),
        c if is_bidi_control(c) => Some('\u{fffd}'),
        _ => None,
    }
}

/// Whether `s` prints as it is: no control or bidi character in it.
pub fn is_clean(s: &str) -> bool {
    !s.chars().any(|c| stand_in(c).is_some())
}

/// `s` with every control and bidi character replaced by a visible stand-in (newlines too: this
/// is for one-line things such as names and previews).
pub fn clean(s: &str) -> Cow<'_, str> {
    if is_clean(s) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| stand_in(c).unwrap_or(c)).collect())
}

/// [`clean`], keeping line breaks: the lines of a message, each cleaned.
pub fn clean_lines(s: &str) -> impl Iterator<Item = Cow<'_, str>> {
    s.split('\n').map(|line| clean(line.strip_suffix('\r').unwrap_or(line)))
}

/// `412 KiB`, `1.5 MiB`.
pub fn size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.0} KiB", b / K)
    } else if b < K * K * K {
        format!("{:.1} MiB", b / K / K)
    } else {
        format!("{:.2} GiB", b / K / K / K)
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_escape_sequences_and_invisible_format_characters_then_they_are_shown_not_interpreted() {
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
    fn given_escapes_and_overrides_then_each_is_shown_as_a_stand_in_and_the_rest_kept() {
        assert_eq!(clean("plain 日本 👍"), "plain 日本 👍");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(clean("a\u{1b}[2Kb"), "a\u{241b}[2Kb");
        assert_eq!(clean("x\u{7f}\u{85}\u{202e}y"), "x\u{2421}\u{fffd}\u{fffd}y");
        let lines: Vec<_> = clean_lines("one\r\ntwo\u{1b}[2A").collect();
        assert_eq!(lines, ["one", "two\u{241b}[2A"]);
        assert!(!is_clean("tab\there") && is_clean("Bob Smith"));
        let evil = "ok\u{1b}[2J\u{202e}gnp.exe\u{7f}\u{9b}";
        let shown = clean(evil);
        assert_eq!(shown, "ok\u{241b}[2J\u{fffd}gnp.exe\u{2421}\u{fffd}");
        assert!(!shown.chars().any(|c| c.is_control() || is_bidi_control(c)));
    }

    #[test]
    fn given_days_since_the_epoch_then_the_calendar_date() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn given_sizes_then_the_unit_that_reads_best() {
        assert_eq!(size(141), "141 B");
        assert_eq!(size(412 * 1024), "412 KiB");
        assert_eq!(size(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(size(2 * 1024 * 1024 * 1024), "2.00 GiB");
    }
}
