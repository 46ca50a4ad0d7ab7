//! Turning a name chosen by a remote peer into a safe file name inside the downloads folder.
//!
//! The result is a single path component: no separators, no `.`/`..`, no control characters, no NUL,
//! not a Windows reserved device name, at most [`MAX_NAME_BYTES`] bytes (keeping the extension), never
//! empty.

/// Longest name kept, in bytes (most file systems allow 255).
pub const MAX_NAME_BYTES: usize = 200;

const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
    "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A safe base name for `offered`.
pub fn safe_name(offered: &str) -> String {
    // Only the last component counts, whichever separator the sender's system uses.
    let base = offered.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') { '_' } else { c })
        .collect();
    // Leading dots would make it hidden (or `.`/`..`); trailing dots and spaces are dropped by Windows.
    let trimmed = cleaned.trim_start_matches(['.', ' ']).trim_end_matches(['.', ' ']);
    let mut name = if trimmed.is_empty() { "file".to_owned() } else { trimmed.to_owned() };
    let stem = name.split('.').next().unwrap_or_default().to_ascii_uppercase();
    if RESERVED.contains(&stem.as_str()) {
        name.insert(0, '_');
    }
    truncate_keeping_extension(&name, MAX_NAME_BYTES)
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
    format!("{}{ext}", &stem[..cut])
}

/// `name`, then `name (1)`, `name (2)`, …: candidates for a file that must not overwrite another.
pub fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} ({n}){}", &name[..i], &name[i..]),
        _ => format!("{name} ({n})"),
    }
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
        assert_eq!(safe_name("cat.jpg"), "cat.jpg");
        assert_eq!(safe_name("gato açúcar.png"), "gato açúcar.png");
    }

    #[test]
    fn given_very_long_name_then_cut_at_a_char_boundary_keeping_the_extension() {
        let long = format!("{}.jpg", "é".repeat(10_000));
        let safe = safe_name(&long);
        assert!(safe.len() <= MAX_NAME_BYTES);
        assert!(safe.ends_with(".jpg"));
        assert_eq!(safe_name(&"x".repeat(10_000)).len(), MAX_NAME_BYTES);
    }

    #[test]
    fn given_existing_name_then_numbered_candidates_keep_the_extension() {
        assert_eq!(numbered("cat.jpg", 0), "cat.jpg");
        assert_eq!(numbered("cat.jpg", 2), "cat (2).jpg");
        assert_eq!(numbered("README", 1), "README (1)");
    }
}
