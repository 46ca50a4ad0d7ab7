//! The JSON-lines input's property, for the `json_lines` fuzz target (with the `fuzzing` feature)
//! and for the regression test that replays `fuzz/regressions/json_lines/`.
//!
//! On any bytes, read through the cancel-safe [`LineReader`] in reads of arbitrary sizes, some of
//! them stalling so that the read is dropped and started again as a `select!` does: the lines that
//! come out are exactly the input's lines (over-long ones reported with their length, non-UTF-8
//! ones as such), and the command parser takes each text line without panicking.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::input::{Line, LineReader, MAX_LINE};

/// Serves the input in reads of the chosen sizes, stalling (once) where the mask says.
struct Pieces<'a> {
    rest: &'a [u8],
    sizes: [usize; 2],
    reads: usize,
    stall_mask: u8,
    stalled: bool,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.stalled && me.stall_mask & (1 << (me.reads % 8)) != 0 {
            me.stalled = true;
            return Poll::Pending;
        }
        me.stalled = false;
        let n = me.sizes[me.reads % 2].min(buf.remaining()).min(me.rest.len());
        buf.put_slice(&me.rest[..n]);
        me.rest = &me.rest[n..];
        me.reads += 1;
        Poll::Ready(Ok(()))
    }
}

/// What a plain split of `input` says the lines are.
fn expected_lines(input: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (line, newline) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        rest = &rest[line.len() + usize::from(newline)..];
        if line.len() > MAX_LINE {
            lines.push(Line::TooLong(line.len() + usize::from(newline)));
            continue;
        }
        let mut line = line;
        while let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        lines.push(String::from_utf8(line.to_vec()).map(Line::Text).unwrap_or(Line::NotUtf8));
    }
    lines
}

/// The property; panics when it breaks. The first 4 bytes choose the buffer, the read sizes and
/// the stalls; the rest is the input.
pub fn json_lines(data: &[u8]) {
    let Some((control, input)) = data.split_first_chunk::<4>() else { return };
    let sizes = [usize::from(control[1]) + 1, usize::from(control[2]) * 97 + 1];
    let pieces = Pieces { rest: input, sizes, reads: 0, stall_mask: control[3], stalled: false };
    let capacity = usize::from(control[0]) * 31 + 1;
    let mut reader = LineReader::new(tokio::io::BufReader::with_capacity(capacity, pieces));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut got = Vec::new();
    loop {
        // A new read each time: one that stalls is dropped, as a `select!` drops it for an event.
        let mut read = std::pin::pin!(reader.next_line());
        match read.as_mut().poll(&mut cx) {
            Poll::Pending => continue,
            Poll::Ready(Ok(Some(line))) => got.push(line),
            Poll::Ready(Ok(None)) => break,
            Poll::Ready(Err(e)) => panic!("reading from memory failed: {e}"),
        }
    }
    assert_eq!(got, expected_lines(input), "lines read with a {capacity}-byte buffer and reads of {sizes:?}");
    for line in &got {
        if let Line::Text(text) = line {
            // Whatever it says, the parser answers (a command or an error), and the same way twice.
            let once = crate::json::parse(text).map_err(|e| e.to_string());
            let twice = crate::json::parse(text).map_err(|e| e.to_string());
            assert_eq!(format!("{once:?}"), format!("{twice:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input that once broke [`json_lines`], kept in `fuzz/regressions/json_lines/`, and a
    /// few written by hand.
    #[test]
    fn given_inputs_that_once_failed_the_json_lines_target_then_it_holds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/json_lines");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let data = std::fs::read(entry.path()).expect("reading a regression input");
            json_lines(&data);
        }
        for input in [
            &b"\x05\x03\x02\xaa{\"cmd\":\"send\",\"to\":\"456\",\"text\":\"hi\"}\r\n{\"cmd\":\"logout\"}"[..],
            b"\x00\x00\x00\xff\n\n\xff\xfe\n{\"cmd\":\"ping\",\"number\":\"12\"}",
            b"\x01\x01\x01\x01{\"cmd\":\"history\",\"with\":\"456\",\"limit\":-1}\n{\"cmd\":1}\n[]\n\"x\"\n",
        ] {
            json_lines(input);
        }
    }
}
