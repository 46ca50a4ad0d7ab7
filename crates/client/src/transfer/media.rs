//! What a file is, told from its own bytes, never from what a sender claims: the media type both
//! sides report, and the extension a received file is saved with.
//!
//! The magic numbers are the `infer` crate's. What it does not recognize is plain text when its
//! first bytes are UTF-8 without controls (other than tabs and line breaks), and
//! `application/octet-stream` otherwise. A received file keeps the extension it was offered with
//! only when that extension fits the content (plain text may have none); otherwise it gets the
//! content's own, so a page offered as `photo.png` is saved as `photo.html`, and a program offered
//! as `invoice.pdf` as `invoice.exe`.

use std::io::Read;
use std::path::Path;

use whatsap2p_proto::file_name::{extension, safe_name, with_extension};

/// Bytes read from the start of a file to tell what it is (some formats are told by a header
/// some way in, such as a tar's at 257, and office documents by the entries of their zip).
pub(crate) const HEAD_LEN: u64 = 64 * 1024;

/// What a file's bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sniffed {
    /// The media type, e.g. `image/png`.
    pub(crate) media_type: &'static str,
    /// The extension a file of this kind is saved with.
    extension: &'static str,
}

/// Plain text: any of these extensions fits it, none of them opens in a program that runs it.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt", "text", "md", "markdown", "csv", "tsv", "log", "json", "ini", "toml", "yaml", "yml", "cfg",
    "conf", "srt", "vtt", "rs", "c", "h", "cc", "cpp", "hpp", "go", "java", "tex", "diff", "patch", "sql",
];

/// Other spellings of the extension `infer` gives.
const ALIASES: &[(&str, &[&str])] = &[
    ("jpg", &["jpeg", "jpe", "jfif"]),
    ("tif", &["tiff"]),
    ("html", &["htm"]),
    ("mpg", &["mpeg"]),
    ("mid", &["midi"]),
    ("gz", &["tgz"]),
];

const TEXT: Sniffed = Sniffed { media_type: "text/plain", extension: "txt" };
const UNKNOWN: Sniffed = Sniffed { media_type: "application/octet-stream", extension: "bin" };

impl Sniffed {
    /// What the first bytes of a file (up to [`HEAD_LEN`]) say it is.
    pub(crate) fn from_head(head: &[u8]) -> Self {
        if let Some(kind) = infer::get(head) {
            return Self { media_type: kind.mime_type(), extension: kind.extension() };
        }
        if looks_like_text(head) {
            TEXT
        } else {
            UNKNOWN
        }
    }

    /// What the file at `path` is (blocking: call it off the runtime).
    pub(crate) fn from_file(path: &Path) -> std::io::Result<Self> {
        let mut head = Vec::with_capacity(HEAD_LEN as usize);
        std::fs::File::open(path)?.take(HEAD_LEN).read_to_end(&mut head)?;
        Ok(Self::from_head(&head))
    }

    /// Whether a name ending in `.ext` fits this content.
    fn fits(&self, ext: &str) -> bool {
        let ext = ext.to_ascii_lowercase();
        if *self == TEXT {
            return TEXT_EXTENSIONS.contains(&ext.as_str());
        }
        ext == self.extension
            || ALIASES.iter().any(|(main, others)| *main == self.extension && others.contains(&ext.as_str()))
    }

    /// The name a file offered as `offered` is saved under: made safe, with an extension that fits
    /// this content.
    pub(crate) fn saved_name(&self, offered: &str) -> String {
        let safe = safe_name(offered);
        match extension(&safe) {
            Some(ext) if self.fits(ext) => safe,
            // Text needs no extension (`README`, `Makefile`).
            None if *self == TEXT => safe,
            _ => with_extension(&safe, self.extension),
        }
    }
}

/// UTF-8 (the head may cut the last character short) with no controls but tabs and line breaks.
fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        // Cut inside a character at the end of the head: the rest is fine.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    const HTML: &[u8] = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>";
    const EXE: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0";

    #[test]
    fn given_content_then_the_media_type_is_what_it_is() {
        assert_eq!(Sniffed::from_head(PNG).media_type, "image/png");
        assert_eq!(Sniffed::from_head(HTML).media_type, "text/html");
        assert_eq!(Sniffed::from_head("olá\nmundo\t!".as_bytes()), TEXT);
        assert_eq!(Sniffed::from_head(&"é".as_bytes()[..1]), TEXT, "a character cut by the head");
        assert_eq!(Sniffed::from_head(b"\x00\x01\x02\xfe"), UNKNOWN);
        assert_eq!(Sniffed::from_head(b"text with \x1b[2J an escape"), UNKNOWN);
    }

    #[test]
    fn given_an_extension_that_lies_then_the_content_s_own_replaces_it() {
        let png = Sniffed::from_head(PNG);
        assert_eq!(png.saved_name("cat.html"), "cat.png");
        assert_eq!(png.saved_name("cat.PNG"), "cat.PNG");
        assert_eq!(png.saved_name("cat"), "cat.png");
        assert_eq!(Sniffed::from_head(HTML).saved_name("photo.png"), "photo.html");
        assert_eq!(Sniffed::from_head(HTML).saved_name("page.htm"), "page.htm");
        assert_eq!(Sniffed::from_head(EXE).saved_name("invoice\u{202e}fdp.exe"), "invoicefdp.exe");
        assert_eq!(Sniffed::from_head(EXE).saved_name("invoice.pdf"), "invoice.exe");
        assert_eq!(TEXT.saved_name("notes.md"), "notes.md");
        assert_eq!(TEXT.saved_name("README"), "README");
        assert_eq!(TEXT.saved_name("run.js"), "run.txt");
        assert_eq!(UNKNOWN.saved_name("data.pdf"), "data.bin");
        assert_eq!(Sniffed::from_head(b"\xff\xd8\xff\xe0\0\x10JFIF\0").saved_name("a.jpeg"), "a.jpeg");
    }
}
