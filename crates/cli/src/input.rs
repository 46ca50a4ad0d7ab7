//! Reading stdin one line at a time with a size limit, so a runaway producer cannot make the client
//! buffer without bound.
//!
//! Both front ends wait for a line inside a `tokio::select!` that also takes events, so a read is
//! regularly cancelled partway through a line (a 30 KiB command arrives in several chunks). The
//! [`LineReader`] therefore keeps the part of the line read so far in itself, not in the future: a
//! cancelled [`LineReader::next_line`] loses nothing, and the next call carries on where it stopped.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest input line accepted (a text message is at most 32 KiB; JSON escaping can triple it).
pub const MAX_LINE: usize = 256 * 1024;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its newline.
    Text(String),
    /// A line over [`MAX_LINE`] bytes (this many, newline included), skipped whole.
    TooLong(usize),
    /// A line that is not UTF-8.
    NotUtf8,
}

/// Splits a reader into [`Line`]s; cancel safe (see the module documentation).
pub struct LineReader<R> {
    reader: R,
    /// The line so far, without its newline; only its first [`MAX_LINE`] bytes are kept, since a
    /// longer one is reported as [`Line::TooLong`] and its content never used.
    buf: Vec<u8>,
    /// Bytes of the line so far, kept or not (without the newline, which ends the line at once).
    len: usize,
}

/// The client's stdin. There must be only one per process: a reader buffers ahead, and what a
/// dropped one had buffered would be lost to the next.
pub type Stdin = LineReader<tokio::io::BufReader<tokio::io::Stdin>>;

/// The reader for the process's stdin.
pub fn stdin() -> Stdin {
    LineReader::new(tokio::io::BufReader::new(tokio::io::stdin()))
}

/// Where a front end's lines come from: stdin as it is (piped, or JSON lines), or the menu's line
/// editor on a terminal (`terminal.rs`).
pub enum Source {
    /// Lines read from stdin.
    Piped(Stdin),
    /// Lines typed at the line editor's prompts.
    Edited(crate::terminal::Editor),
}

impl Source {
    /// The next line; `None` at the end of input. Cancel safe, like [`LineReader::next_line`].
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        match self {
            Source::Piped(stdin) => stdin.next_line().await,
            Source::Edited(editor) => Ok(editor.next_line().await),
        }
    }
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Reads lines from `reader`.
    pub fn new(reader: R) -> Self {
        LineReader { reader, buf: Vec::new(), len: 0 }
    }

    /// Reads the next line; `None` at end of input. Cancel safe: if the future is dropped before it
    /// completes, the bytes it took stay in `self` and the next call returns the whole line.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            // The only await. `fill_buf` is itself cancel safe (nothing is consumed until
            // `consume`), and everything below up to `consume` runs without yielding, so a
            // cancellation can only happen at a point where `self` accounts for every byte taken.
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                // End of input: a last line without a newline still counts.
                return Ok((self.len > 0).then(|| self.finish(false)));
            }
            let (content, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            // Past the limit nothing more is kept: memory stays bounded however long the line.
            let room = MAX_LINE.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&content[..content.len().min(room)]);
            self.len += content.len();
            let taken = content.len() + usize::from(done);
            self.reader.consume(taken);
            if done {
                return Ok(Some(self.finish(true)));
            }
        }
    }

    /// The line read so far, which ended (with a newline if `newline`); resets for the next one.
    fn finish(&mut self, newline: bool) -> Line {
        let len = std::mem::take(&mut self.len);
        let mut buf = std::mem::take(&mut self.buf);
        if len > MAX_LINE {
            return Line::TooLong(len + usize::from(newline));
        }
        // `\r\n` line ends are accepted too.
        while buf.last() == Some(&b'\r') {
            buf.pop();
        }
        String::from_utf8(buf).map(Line::Text).unwrap_or(Line::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Reads the next line of `r`, failing the test on an I/O error.
    async fn next<R: AsyncBufRead + Unpin>(r: &mut LineReader<R>) -> Option<Line> {
        r.next_line().await.expect("reading from memory")
    }

    #[tokio::test]
    async fn given_lines_then_split_and_overlong_one_is_skipped_whole() {
        let mut input = format!("a\r\n{}\nb", "x".repeat(MAX_LINE + 10)).into_bytes();
        input.extend_from_slice(b"\n\xff\n");
        let mut r = LineReader::new(tokio::io::BufReader::new(&input[..]));
        assert_eq!(next(&mut r).await, Some(Line::Text("a".into())));
        assert_eq!(next(&mut r).await, Some(Line::TooLong(MAX_LINE + 11)));
        assert_eq!(next(&mut r).await, Some(Line::Text("b".into())));
        assert_eq!(next(&mut r).await, Some(Line::NotUtf8));
        assert_eq!(next(&mut r).await, None);
        assert_eq!(next(&mut r).await, None, "end of input stays the end");
    }

    #[tokio::test]
    async fn given_lines_at_the_limit_then_exactly_max_line_bytes_are_accepted() {
        let at = "y".repeat(MAX_LINE);
        let input = format!("{at}\n{at}z\n{at}\r\n{at}");
        // A small buffer, so the lines arrive in many chunks.
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(1000, input.as_bytes()));
        assert_eq!(next(&mut r).await, Some(Line::Text(at.clone())));
        assert_eq!(next(&mut r).await, Some(Line::TooLong(MAX_LINE + 2)));
        // The `\r` counts towards the limit, as it did when lines were cut with it.
        assert_eq!(next(&mut r).await, Some(Line::TooLong(MAX_LINE + 2)));
        assert_eq!(next(&mut r).await, Some(Line::Text(at)), "a last line without a newline");
        assert_eq!(next(&mut r).await, None);
    }

    /// The bug this reader exists for: a read cancelled by another `select!` branch after taking
    /// the first part of a line must not lose that part.
    #[tokio::test]
    async fn given_read_cancelled_midline_then_the_whole_line_still_comes_out() {
        let (mut w, r) = tokio::io::duplex(64);
        let mut r = LineReader::new(tokio::io::BufReader::new(r));
        w.write_all(b"{\"cmd\":\"send\",\"to\":\"456\",").await.expect("writing to a duplex");
        // `biased` polls the read first: it takes the bytes written so far and waits for more; the
        // ready branch then wins and the read future is dropped, as an event does in the front ends.
        tokio::select! {
            biased;
            line = r.next_line() => panic!("no line is complete yet: {line:?}"),
            () = std::future::ready(()) => {}
        }
        w.write_all(b"\"text\":\"hi\"}\nnext\n").await.expect("writing to a duplex");
        let whole = "{\"cmd\":\"send\",\"to\":\"456\",\"text\":\"hi\"}";
        assert_eq!(next(&mut r).await, Some(Line::Text(whole.into())));
        assert_eq!(next(&mut r).await, Some(Line::Text("next".into())));
        drop(w);
        assert_eq!(next(&mut r).await, None);
    }

    /// Cancelled over and over while an oversized line streams in, the reader still skips exactly
    /// that line and keeps the next.
    #[tokio::test]
    async fn given_overlong_line_read_with_cancellations_then_only_it_is_skipped() {
        let (mut w, r) = tokio::io::duplex(4096);
        let mut r = LineReader::new(tokio::io::BufReader::new(r));
        let writer = tokio::spawn(async move {
            w.write_all(&vec![b'x'; MAX_LINE + 5000]).await?;
            w.write_all(b"\n{\"cmd\":\"groups\"}\n").await
        });
        let mut cancellations = 0u32;
        let first = loop {
            tokio::select! {
                biased;
                line = r.next_line() => break line.expect("reading from a duplex"),
                () = tokio::task::yield_now() => cancellations += 1,
            }
        };
        assert_eq!(first, Some(Line::TooLong(MAX_LINE + 5001)));
        assert!(cancellations > 0, "the read was never cancelled, the test proves nothing");
        assert_eq!(next(&mut r).await, Some(Line::Text("{\"cmd\":\"groups\"}".into())));
        writer.await.expect("writer task").expect("writing to a duplex");
    }
}
