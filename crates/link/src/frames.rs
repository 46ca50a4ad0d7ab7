//! Length-prefixed frames on a byte stream, with no buffer kept between frames.
//!
//! A directory server holds thousands of sessions that are idle nearly all the time. `tokio_util`'s
//! `Framed` gives each connection an 8 KiB read buffer and an 8 KiB write buffer for its whole life:
//! 16 of the 17 KiB a held session used to cost the server. Here a reader waiting for its next
//! frame reads into a buffer on the stack of its poll, and only bytes that must outlive the poll (a
//! frame not yet complete, frames that arrived together) go to the heap, in a buffer dropped as soon
//! as they are handed out. A writer's buffer lives from the first frame queued to the flush that
//! writes it.
//!
//! Both halves keep all their state in themselves, not in a future, so every `poll_*` here can be
//! dropped and called again without losing or repeating bytes.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{LinkError, MAX_FRAME_LEN};

/// The big-endian length in front of every frame.
const HEADER_LEN: usize = 4;

/// What one read takes in when nothing is buffered. On the stack, so an idle session holds none of
/// it; big enough for a burst of pipelined requests or a good part of a file chunk in one read.
const STACK_READ_LEN: usize = 8 * 1024;

/// Queued frames are written out before more are queued once this much waits, like `Framed`'s
/// backpressure boundary: a long batch does not grow the buffer without bound.
pub(crate) const BACKPRESSURE: usize = 8 * 1024;

/// If `buf` starts with a whole frame, its length with the header. Fails as soon as a header
/// announces more than [`MAX_FRAME_LEN`], before any of the frame is read.
fn complete_frame(buf: &[u8]) -> Result<Option<usize>, LinkError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else { return Ok(None) };
    let len = u32::from_be_bytes(*header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(LinkError::FrameTooLarge);
    }
    let total = HEADER_LEN + len;
    Ok((buf.len() >= total).then_some(total))
}

/// How many bytes the frame at the start of `buf` needs in all (only the header while it is not
/// complete). Call after [`complete_frame`] checked the length.
fn wanted(buf: &[u8]) -> usize {
    match buf.first_chunk::<HEADER_LEN>() {
        Some(header) => HEADER_LEN + u32::from_be_bytes(*header) as usize,
        None => HEADER_LEN,
    }
}

/// The reading side's state: bytes read but not handed out yet.
#[derive(Default)]
pub(crate) struct FrameReader {
    /// Part of a frame, or frames that came in the same read. Unallocated between frames.
    pending: BytesMut,
    /// How much more than the frame in hand one read may take in (see [`FrameReader::set_read_ahead`]).
    read_ahead: usize,
}

impl FrameReader {
    /// Lets a read that completes a frame take in up to `bytes` more: on a link carrying a stream
    /// of large frames (a file), a read then brings several at once instead of one and a half.
    /// Memory: up to this much more per partial frame held.
    pub(crate) fn set_read_ahead(&mut self, bytes: usize) {
        self.read_ahead = bytes;
    }

    /// Polls for the next frame on `io` and gives its body to `open`, whose result it returns.
    /// `Ok(None)` is a clean end of stream (between frames); an end in the middle of a frame is an
    /// error.
    pub(crate) fn poll_frame<R, T>(
        &mut self,
        mut io: Pin<&mut R>,
        cx: &mut Context<'_>,
        open: impl FnOnce(&[u8]) -> T,
    ) -> Poll<Result<Option<T>, LinkError>>
    where
        R: AsyncRead + ?Sized,
    {
        loop {
            if let Some(total) = complete_frame(&self.pending)? {
                let out = open(&self.pending[HEADER_LEN..total]);
                if total == self.pending.len() {
                    // Nothing else came with it: free the buffer rather than keep it while idle.
                    self.pending = BytesMut::new();
                } else {
                    self.pending.advance(total);
                }
                return Poll::Ready(Ok(Some(out)));
            }
            if self.pending.is_empty() {
                let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ_LEN];
                let mut read = ReadBuf::uninit(&mut stack);
                ready!(io.as_mut().poll_read(cx, &mut read))?;
                let data = read.filled();
                if data.is_empty() {
                    return Poll::Ready(Ok(None));
                }
                if let Some(total) = complete_frame(data)? {
                    // The usual case: a whole frame, opened straight from the stack.
                    let out = open(&data[HEADER_LEN..total]);
                    self.pending.extend_from_slice(&data[total..]);
                    return Poll::Ready(Ok(Some(out)));
                }
                self.pending.reserve(wanted(data).max(data.len()) + self.read_ahead);
                self.pending.extend_from_slice(data);
                continue;
            }
            // Part of a frame is here: read the rest straight into its buffer, sized for it.
            let missing = wanted(&self.pending).saturating_sub(self.pending.len());
            self.pending.reserve(missing + self.read_ahead);
            if ready!(tokio_util::io::poll_read_buf(io.as_mut(), cx, &mut self.pending))? == 0 {
                return Poll::Ready(Err(LinkError::Io(io::ErrorKind::UnexpectedEof.into())));
            }
        }
    }

    /// Whether bytes of a next frame are already buffered (read together with an earlier one).
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.pending.capacity() == 0
    }
}

/// The writing side's state: frames queued and not yet written.
#[derive(Default)]
pub(crate) struct FrameWriter {
    /// Whole frames, headers included, in `out[..filled]`; what follows is room already initialized
    /// by earlier frames. Unallocated once a small flush is written.
    out: Vec<u8>,
    /// How much of `out` holds queued frames.
    filled: usize,
    /// How much of `out` is already written.
    written: usize,
}

/// A flush at least this large keeps its buffer for the next frames: a link moving a file reuses one
/// buffer instead of allocating and clearing one per frame. A smaller flush frees it, so an idle
/// session (whose last frames were small) holds none.
const KEEP_AFTER: usize = 32 * 1024;

impl FrameWriter {
    /// Queues one frame whose body `fill` writes into a buffer of `max_len` bytes, returning how many
    /// it used. Nothing is queued if `fill` fails.
    pub(crate) fn push_with(
        &mut self,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, LinkError>,
    ) -> Result<(), LinkError> {
        let start = self.filled;
        let end = start + HEADER_LEN + max_len;
        if self.out.len() < end {
            self.out.resize(end, 0);
        }
        let body = fill(&mut self.out[start + HEADER_LEN..end]).and_then(|n| {
            if n <= max_len.min(MAX_FRAME_LEN) {
                Ok(n)
            } else {
                Err(LinkError::FrameTooLarge)
            }
        })?;
        self.out[start..start + HEADER_LEN].copy_from_slice(&(body as u32).to_be_bytes());
        self.filled = start + HEADER_LEN + body;
        Ok(())
    }

    /// Whether enough is queued that it should be written before queueing more.
    pub(crate) fn is_full(&self) -> bool {
        self.filled >= BACKPRESSURE
    }

    /// Writes every queued frame and flushes `io`; frees the buffer unless the flush was large.
    pub(crate) fn poll_flush<W>(&mut self, mut io: Pin<&mut W>, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + ?Sized,
    {
        while self.written < self.filled {
            let n = ready!(io.as_mut().poll_write(cx, &self.out[self.written..self.filled]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        ready!(io.as_mut().poll_flush(cx))?;
        if self.filled < KEEP_AFTER {
            self.out = Vec::new();
        }
        self.filled = 0;
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes every queued frame, then shuts `io`'s write side down.
    pub(crate) fn poll_close<W>(&mut self, mut io: Pin<&mut W>, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + ?Sized,
    {
        ready!(self.poll_flush(io.as_mut(), cx))?;
        io.poll_shutdown(cx)
    }
}

/// The property the `frame_reader` fuzz target checks on any input: however a byte stream is cut
/// into reads, and wherever a read stalls, the reader gives the same frames as a plain parse of the
/// whole stream, then ends the same way (clean end, cut frame, or a length over the limit); and the
/// writer writes those frames back as the same bytes. Panics when it does not.
///
/// The first 4 bytes choose the read-ahead, two read sizes (alternating) and which reads stall
/// once with `Pending` before giving bytes; the rest is the stream.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check_splits(data: &[u8]) {
    #[derive(Debug, PartialEq)]
    enum End {
        Clean,
        Cut,
        TooLarge,
    }

    /// Serves the stream in reads of the chosen sizes, stalling where the mask says.
    struct Pieces<'a> {
        rest: &'a [u8],
        sizes: [usize; 2],
        reads: usize,
        stall_mask: u8,
        stalled: bool,
    }

    impl AsyncRead for Pieces<'_> {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
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

    let Some((control, stream)) = data.split_first_chunk::<4>() else { return };
    let mut expected = Vec::new();
    let mut rest = stream;
    let expected_end = loop {
        let Some(header) = rest.first_chunk::<HEADER_LEN>() else {
            break if rest.is_empty() { End::Clean } else { End::Cut };
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > MAX_FRAME_LEN {
            break End::TooLarge;
        }
        let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else { break End::Cut };
        expected.push(body);
        rest = &rest[HEADER_LEN + len..];
    };

    let mut reader = FrameReader::default();
    reader.set_read_ahead(usize::from(control[0]) * 1024);
    let sizes = [usize::from(control[1]) + 1, usize::from(control[2]) * 97 + 1];
    let mut io = Pieces { rest: stream, sizes, reads: 0, stall_mask: control[3], stalled: false };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut got = Vec::new();
    let end = loop {
        match reader.poll_frame(Pin::new(&mut io), &mut cx, |f| f.to_vec()) {
            Poll::Pending => continue,
            Poll::Ready(Ok(Some(frame))) => got.push(frame),
            Poll::Ready(Ok(None)) => break End::Clean,
            Poll::Ready(Err(LinkError::FrameTooLarge)) => break End::TooLarge,
            Poll::Ready(Err(LinkError::Io(e))) if e.kind() == io::ErrorKind::UnexpectedEof => break End::Cut,
            Poll::Ready(Err(e)) => panic!("unexpected error {e}"),
        }
    };
    assert_eq!(got, expected, "frames read with reads of {sizes:?}");
    assert_eq!(end, expected_end);
    if end == End::Clean {
        assert!(reader.pending.capacity() == 0, "a reader at a clean end holds a buffer");
    }

    let mut writer = FrameWriter::default();
    let mut written = Vec::new();
    for frame in &expected {
        writer
            .push_with(frame.len(), |out| {
                out[..frame.len()].copy_from_slice(frame);
                Ok(frame.len())
            })
            .expect("a frame the reader took fits");
        if writer.is_full() {
            assert!(writer.poll_flush(Pin::new(&mut written), &mut cx).is_ready());
        }
    }
    assert!(writer.poll_flush(Pin::new(&mut written), &mut cx).is_ready());
    assert_eq!(written, stream[..stream.len() - rest.len()], "the writer's bytes");
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{duplex, AsyncWriteExt};

    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    async fn next(
        r: &mut FrameReader,
        io: &mut tokio::io::DuplexStream,
    ) -> Result<Option<Vec<u8>>, LinkError> {
        poll_fn(|cx| r.poll_frame(Pin::new(&mut *io), cx, |b| b.to_vec())).await
    }

    /// Every input that once broke [`check_splits`], kept in `fuzz/regressions/frame_reader/`.
    #[test]
    fn given_inputs_that_once_failed_the_frame_reader_target_then_it_holds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/frame_reader");
        // No directory: the target has found nothing yet.
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for entry in entries {
            let path = entry.expect("a regression file").path();
            let data = std::fs::read(&path).expect("readable");
            assert!(
                std::panic::catch_unwind(|| check_splits(&data)).is_ok(),
                "fails again on {}",
                path.display()
            );
        }
    }

    #[test]
    fn given_streams_cut_anywhere_then_the_frames_come_out_whole() {
        let mut stream = frame(b"one");
        stream.extend(frame(&[5u8; 3000]));
        stream.extend(frame(b""));
        stream.extend(frame(b"last"));
        for control in [[0, 0, 0, 0], [0, 2, 1, 0xff], [200, 0, 40, 0x55], [1, 255, 255, 0xaa]] {
            let mut data = control.to_vec();
            data.extend_from_slice(&stream);
            check_splits(&data);
            data.extend_from_slice(&[0, 0, 0]);
            check_splits(&data);
            data.truncate(4 + stream.len());
            data.extend_from_slice(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes());
            check_splits(&data);
        }
    }

    #[tokio::test]
    async fn given_frames_together_then_each_comes_out_and_nothing_stays_allocated() {
        let (mut a, mut b) = duplex(1 << 20);
        let mut bytes = frame(b"one");
        bytes.extend(frame(b"two"));
        bytes.extend(frame(&[9u8; 20_000]));
        a.write_all(&bytes).await.expect("write");
        let mut r = FrameReader::default();
        assert_eq!(next(&mut r, &mut b).await.expect("1").as_deref(), Some(&b"one"[..]));
        assert!(!r.is_idle());
        assert_eq!(next(&mut r, &mut b).await.expect("2").as_deref(), Some(&b"two"[..]));
        assert_eq!(next(&mut r, &mut b).await.expect("3"), Some(vec![9u8; 20_000]));
        assert!(r.is_idle());
        drop(a);
        assert_eq!(next(&mut r, &mut b).await.expect("eof"), None);
    }

    #[tokio::test]
    async fn given_frame_in_pieces_then_it_is_put_together() {
        let (mut a, mut b) = duplex(1 << 20);
        let bytes = frame(b"split across writes");
        let mut r = FrameReader::default();
        let reader = tokio::spawn(async move { next(&mut r, &mut b).await.map(|f| (f, r.is_idle())) });
        for piece in [&bytes[..2], &bytes[2..6], &bytes[6..]] {
            a.write_all(piece).await.expect("write");
            a.flush().await.expect("flush");
            tokio::task::yield_now().await;
        }
        let (got, idle) = reader.await.expect("join").expect("read");
        assert_eq!(got.as_deref(), Some(&b"split across writes"[..]));
        assert!(idle);
    }

    #[tokio::test]
    async fn given_end_inside_a_frame_then_error() {
        let (mut a, mut b) = duplex(1024);
        a.write_all(&frame(b"cut short")[..7]).await.expect("write");
        drop(a);
        let mut r = FrameReader::default();
        assert!(
            matches!(next(&mut r, &mut b).await, Err(LinkError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
    }

    #[tokio::test]
    async fn given_frames_pushed_then_flush_writes_them_in_order_and_frees_the_buffer() {
        let (mut a, mut b) = duplex(1 << 16);
        let mut w = FrameWriter::default();
        for body in [&b"a"[..], b"bc", b""] {
            w.push_with(body.len(), |out| {
                out.copy_from_slice(body);
                Ok(body.len())
            })
            .expect("push");
        }
        assert!(w.push_with(4, |_| Err(LinkError::ClosedDuringHandshake)).is_err());
        poll_fn(|cx| w.poll_flush(Pin::new(&mut a), cx)).await.expect("flush");
        assert_eq!(w.out.capacity(), 0);
        let mut r = FrameReader::default();
        for want in [&b"a"[..], b"bc", b""] {
            assert_eq!(next(&mut r, &mut b).await.expect("frame").as_deref(), Some(want));
        }
    }

    #[tokio::test]
    async fn given_large_frames_then_the_buffer_is_kept_for_the_next_and_a_small_flush_frees_it() {
        let (mut a, mut b) = duplex(1 << 20);
        let mut w = FrameWriter::default();
        let big = vec![7u8; 60_000];
        for round in 0..2u8 {
            w.push_with(big.len(), |out| {
                out[..big.len()].copy_from_slice(&big);
                out[0] = round;
                Ok(big.len())
            })
            .expect("push");
            poll_fn(|cx| w.poll_flush(Pin::new(&mut a), cx)).await.expect("flush");
            assert!(w.out.len() >= big.len(), "kept after a bulk flush");
        }
        w.push_with(2, |out| {
            out[..2].copy_from_slice(b"hi");
            Ok(2)
        })
        .expect("push");
        poll_fn(|cx| w.poll_flush(Pin::new(&mut a), cx)).await.expect("flush");
        assert_eq!(w.out.capacity(), 0);
        let mut r = FrameReader::default();
        r.set_read_ahead(256 * 1024);
        for round in 0..2u8 {
            let mut want = big.clone();
            want[0] = round;
            assert_eq!(next(&mut r, &mut b).await.expect("frame"), Some(want));
        }
        assert_eq!(next(&mut r, &mut b).await.expect("frame").as_deref(), Some(&b"hi"[..]));
        assert!(r.is_idle());
    }
}
