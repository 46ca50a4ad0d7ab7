//! Turning a file name chosen by a remote peer (the `name` of a `FileOffer`) into a safe name for
//! the receiver's downloads folder.
//!
//! The result is a single path component: no separators, no `..` (a run of dots becomes one), no
//! leading dot, no control characters, no NUL, no invisible format characters (bidirectional
//! overrides such as U+202E, which would show `invoice\u{202e}fdp.exe` as "invoiceexe.pdf",
//! zero-width spaces, joiners, U+FEFF, … — every character of Unicode's general category Cf), no
//! line or paragraph separators, not a Windows reserved device name, at most [`MAX_NAME_BYTES`]
//! bytes (keeping the extension), never empty.
//! The fuzz target `file_name` checks these on any input (`fuzzing::file_name`).

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest name kept, in bytes (most file systems allow 255).
pub const MAX_NAME_BYTES: usize = 200;

const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
    "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Whether `c` is invisible and changes or hides how the text around it reads: a format character
/// (category Cf: bidirectional overrides and isolates, zero-width characters, U+FEFF, …) or a line
/// or paragraph separator. Such characters are dropped from names, not replaced: nothing a reader
/// could see was there.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
    )
}

/// A safe base name for `offered`.
pub fn safe_name(offered: &str) -> String {
    // Only the last component counts, whichever separator the sender's system uses.
    let base = offered.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut cleaned = String::with_capacity(base.len().min(4 * MAX_NAME_BYTES));
    for c in base.chars().filter(|&c| !is_invisible_format(c)) {
        // A run of dots becomes one: no `..` anywhere, whatever reads the name later.
        if c == '.' && cleaned.ends_with('.') {
            continue;
        }
        let unsafe_char = c.is_control() || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|');
        cleaned.push(if unsafe_char { '_' } else { c });
    }
    // Leading dots would make it hidden (or `.`/`..`); trailing dots and spaces are dropped by Windows.
    let trimmed = cleaned.trim_start_matches(['.', ' ']).trim_end_matches(['.', ' ']);
    let name = if trimmed.is_empty() { "file" } else { trimmed };
    // Checked after the cut, which may leave only a device name ("COM1" and spaces, then more).
    not_reserved(truncate_keeping_extension(name, MAX_NAME_BYTES))
}

/// Whether Windows would take `name` for a device: a reserved name before the first dot, trailing
/// spaces ignored, in any case (`con.txt`, `COM1 .png`).
pub fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default().trim_end_matches(' ');
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem))
}

/// `name` with a `_` in front if it is reserved; a name starting with `_` never is.
fn not_reserved(name: String) -> String {
    if is_reserved(&name) {
        truncate_keeping_extension(&format!("_{name}"), MAX_NAME_BYTES)
    } else {
        name
    }
}

/// The extension of a safe name (after its last dot), if it has one.
pub fn extension(name: &str) -> Option<&str> {
    match name.rfind('.') {
        Some(i) if i > 0 && i + 1 < name.len() => Some(&name[i + 1..]),
        _ => None,
    }
}

/// `name` (a safe name) with its extension replaced by `ext` (ASCII letters and digits), or `ext`
/// added when it has none; cut to [`MAX_NAME_BYTES`] keeping the new extension.
pub fn with_extension(name: &str, ext: &str) -> String {
    let stem = match extension(name) {
        Some(old) => &name[..name.len() - old.len() - 1],
        None => name,
    };
    not_reserved(truncate_keeping_extension(&format!("{stem}.{ext}"), MAX_NAME_BYTES))
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if name.len() - i <= 16 && i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let mut cut = max.saturating_sub(ext.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    // A cut may leave the stem ending in dots or spaces, which Windows drops.
    let stem = stem[..cut].trim_end_matches(['.', ' ']);
    let stem = if stem.is_empty() { "file" } else { stem };
    format!("{stem}{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_hostile_names_then_a_single_safe_component_remains() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("/etc/shadow"), "shadow");
        assert_eq!(safe_name("..\\..\\windows\\system32\\cmd.exe"), "cmd.exe");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name("."), "file");
        assert_eq!(safe_name(""), "file");
        assert_eq!(safe_name("dir/"), "file");
        assert_eq!(safe_name("a\0b\nc\x1b.jpg"), "a_b_c_.jpg");
        assert_eq!(safe_name("CON"), "_CON");
        assert_eq!(safe_name("nul.txt"), "_nul.txt");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name("a..b...c.txt"), "a.b.c.txt");
        assert_eq!(safe_name("cat.jpg"), "cat.jpg");
        assert_eq!(safe_name("gato açúcar.png"), "gato açúcar.png");
    }

    #[test]
    fn given_invisible_format_characters_then_they_are_dropped() {
        // The classic: shown right to left after U+202E, this reads "invoiceexe.pdf".
        assert_eq!(safe_name("invoice\u{202e}fdp.exe"), "invoicefdp.exe");
        assert_eq!(safe_name("a\u{2066}b\u{2069}c\u{200b}d\u{200f}e\u{feff}.txt"), "abcde.txt");
        assert_eq!(safe_name("\u{202a}\u{202b}\u{202c}\u{202d}"), "file");
        // Other Cf characters (soft hyphen, Arabic number sign, word joiner, a tag) and separators.
        assert_eq!(safe_name("x\u{ad}\u{600}\u{2060}\u{e0041}\u{2028}\u{2029}y"), "xy");
        // A dot hidden behind a format character does not make the name hidden.
        assert_eq!(safe_name("\u{200b}.bashrc"), "bashrc");
    }

    #[test]
    fn given_very_long_name_then_cut_at_a_char_boundary_keeping_the_extension() {
        let long = format!("{}.jpg", "é".repeat(10_000));
        let safe = safe_name(&long);
        assert!(safe.len() <= MAX_NAME_BYTES);
        assert!(safe.ends_with(".jpg"));
        assert_eq!(safe_name(&"x".repeat(10_000)).len(), MAX_NAME_BYTES);
    }

    /// Found by the `file_name` fuzz target: the cut to the longest name left only "COM1".
    #[test]
    fn given_a_long_name_that_the_cut_leaves_reserved_then_it_is_still_made_safe() {
        let offered = format!("COM1{}{}", " ".repeat(MAX_NAME_BYTES), "_".repeat(100));
        assert_eq!(safe_name(&offered), "_COM1");
        let stem = format!("COM1{}x", " ".repeat(MAX_NAME_BYTES - 6));
        assert_eq!(with_extension(&safe_name(&stem), "png"), "_COM1.png");
        assert_eq!(safe_name("com1 .txt"), "_com1 .txt");
    }

    #[test]
    fn given_a_new_extension_then_it_replaces_the_old_one() {
        assert_eq!(with_extension("photo.png", "html"), "photo.html");
        assert_eq!(with_extension("README", "txt"), "README.txt");
        assert_eq!(with_extension("a.tar.gz", "zip"), "a.tar.zip");
        let long = with_extension(&"x".repeat(MAX_NAME_BYTES), "jpg");
        assert!(long.len() <= MAX_NAME_BYTES && long.ends_with(".jpg"), "{long}");
        assert_eq!(extension("cat.JPG"), Some("JPG"));
        assert_eq!(extension("cat."), None);
        assert_eq!(extension("file"), None);
    }
}
