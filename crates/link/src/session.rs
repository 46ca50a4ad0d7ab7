//! An established Noise session: encrypted frames in both directions.
//!
//! The session uses snow's stateless transport with one nonce counter per direction, so the reader
//! and the writer can be moved into different tasks without a lock around the cipher. Neither half
//! keeps a buffer while it waits (see [`crate::frames`]): a directory server holds thousands of
//! sessions that are idle nearly all the time.
//!
//! A frame carries one message, or, once both sides turned batches on ([`Session::set_batched`]:
//! directory sessions from version 4, `docs/protocol.md` section 1.1), every message queued before a
//! flush as length-prefixed records: one seal and one open per batch instead of one per message,
//! which is most of what pipelined requests cost past the kernel.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use whatsap2p_proto::codec::{put_varint, take_varint, WireEnum};
use whatsap2p_proto::{DecodeError, PublicKey, MAX_PLAINTEXT_LEN};

use crate::frames::{FrameReader, FrameWriter};
use crate::unknown::UnknownKinds;
use crate::{LinkError, WRITE_TIMEOUT};

/// An established session over `S`.
pub struct Session<S> {
    reader: SessionReader<S>,
    writer: SessionWriter<S>,
    /// Here rather than in a half: a directory holds a reader per session, and has no use for it.
    remote_static: PublicKey,
}

impl<S: AsyncRead + AsyncWrite> Session<S> {
    pub(crate) fn new(
        stream: S,
        frames: FrameReader,
        transport: snow::StatelessTransportState,
        remote_static: PublicKey,
    ) -> Self {
        let (read, write) = tokio::io::split(stream);
        let transport = Arc::new(transport);
        Self {
            reader: SessionReader {
                io: read,
                frames,
                transport: transport.clone(),
                nonce: 0,
                unknown: UnknownKinds::default(),
                batched: false,
                rest: BytesMut::new(),
            },
            writer: SessionWriter {
                io: write,
                frames: FrameWriter::default(),
                transport,
                nonce: 0,
                batched: false,
                staged: Vec::new(),
            },
            remote_static,
        }
    }

    /// Carries several messages per frame from now on, in both directions (see the top of this
    /// file). Both sides must turn it on at the same point: right after the handshake of a session
    /// whose agreed version has batches.
    pub fn set_batched(&mut self) {
        self.reader.set_batched();
        self.writer.set_batched();
    }

    /// The peer's Noise static key, authenticated by the handshake.
    pub fn remote_static(&self) -> PublicKey {
        self.remote_static
    }

    /// Splits into halves that can be used from different tasks.
    pub fn split(self) -> (SessionReader<S>, SessionWriter<S>) {
        (self.reader, self.writer)
    }
}

/// The receiving half of a session.
pub struct SessionReader<S> {
    io: ReadHalf<S>,
    frames: FrameReader,
    transport: Arc<snow::StatelessTransportState>,
    nonce: u64,
    /// Messages of unknown kinds skipped by [`SessionReader::recv_msg`], for its log lines.
    unknown: UnknownKinds,
    /// Whether frames carry records (see [`Session::set_batched`]).
    batched: bool,
    /// The records of the last frame not handed out yet. Unallocated once they are.
    rest: BytesMut,
}

/// The record at the start of `bytes`: where its message starts and ends.
fn record(bytes: &[u8]) -> Result<std::ops::Range<usize>, LinkError> {
    let (len, after) = take_varint(bytes).ok_or(LinkError::BadRecord)?;
    let start = bytes.len() - after.len();
    match usize::try_from(len) {
        Ok(len) if len > 0 && len <= after.len() => Ok(start..start + len),
        _ => Err(LinkError::BadRecord),
    }
}

impl<S: AsyncRead> SessionReader<S> {
    /// Next decrypted frame, or `None` when the peer closed the stream cleanly.
    ///
    /// Cancel-safe: a `select!` may drop this future without losing a frame.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        let mut out = Vec::new();
        let Some(n) = self.recv_into(&mut out).await? else { return Ok(None) };
        out.truncate(n);
        Ok(Some(out))
    }

    /// Decrypts the next frame into `out[..n]` and returns `n`, or `None` when the peer closed the
    /// stream cleanly. `out` grows when a frame needs more room and is never shrunk, so a caller
    /// that reuses it allocates and clears nothing per frame.
    ///
    /// Cancel-safe: a `select!` may drop this future without losing a frame.
    pub async fn recv_into(&mut self, out: &mut Vec<u8>) -> Result<Option<usize>, LinkError> {
        poll_fn(|cx| self.poll_recv_into(cx, out)).await
    }

    /// Lets one read take in up to `bytes` more than the frame being completed needs, for a link
    /// that carries bulk transfers: a stream of full frames then comes in with fewer reads. Costs up
    /// to that much memory while a frame is partly read; a server holding many idle sessions leaves
    /// it at 0.
    pub fn set_read_ahead(&mut self, bytes: usize) {
        self.frames.set_read_ahead(bytes);
    }

    fn poll_recv_into(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
    ) -> Poll<Result<Option<usize>, LinkError>> {
        if !self.rest.is_empty() {
            return Poll::Ready(self.next_record(out).map(Some));
        }
        let (transport, nonce) = (&self.transport, self.nonce);
        let opened = ready!(self.frames.poll_frame(Pin::new(&mut self.io), cx, |frame| {
            if out.len() < frame.len() {
                out.resize(frame.len(), 0);
            }
            Ok::<_, LinkError>(transport.read_message(nonce, frame, out)?)
        }))?;
        let Some(n) = opened.transpose()? else { return Poll::Ready(Ok(None)) };
        self.nonce += 1;
        if !self.batched {
            return Poll::Ready(Ok(Some(n)));
        }
        let first = record(&out[..n])?;
        if first.end < n {
            self.rest.extend_from_slice(&out[first.end..n]);
        }
        let len = first.len();
        out.copy_within(first, 0);
        Poll::Ready(Ok(Some(len)))
    }

    /// Moves the next record of the frame in hand into `out[..n]` and returns `n`.
    fn next_record(&mut self, out: &mut Vec<u8>) -> Result<usize, LinkError> {
        let message = record(&self.rest).inspect_err(|_| self.rest = BytesMut::new())?;
        let len = message.len();
        if out.len() < len {
            out.resize(len, 0);
        }
        out[..len].copy_from_slice(&self.rest[message.clone()]);
        if message.end == self.rest.len() {
            self.rest = BytesMut::new();
        } else {
            self.rest.advance(message.end);
        }
        Ok(len)
    }

    /// Next message of type `T`, skipping kinds from a newer protocol version. Skips are logged
    /// at `info`, summarised: the first at once, then at most one line a minute
    /// ([`crate::unknown::SUMMARY_EVERY`]).
    ///
    /// Cancel-safe: a `select!` may drop this future without losing a frame. The future holds only
    /// a pointer: a partial frame waits in the reader, and a whole one is decoded in the poll that
    /// completes it (a server keeps one such future per held session).
    pub async fn recv_msg<T: DeserializeOwned + Serialize + WireEnum>(
        &mut self,
    ) -> Result<Option<T>, LinkError> {
        poll_fn(|cx| self.poll_recv_msg(cx)).await
    }

    fn poll_recv_msg<T: DeserializeOwned + Serialize + WireEnum>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<T>, LinkError>> {
        loop {
            let mut bytes = Vec::new();
            let Some(n) = ready!(self.poll_recv_into(cx, &mut bytes))? else { return Poll::Ready(Ok(None)) };
            match whatsap2p_proto::decode::<T>(&bytes[..n]) {
                Ok(msg) => return Poll::Ready(Ok(Some(msg))),
                Err(DecodeError::UnknownVariant(kind)) => {
                    if let Some(line) = self.unknown.skipped(kind, tokio::time::Instant::now()) {
                        crate::unknown::log(&line);
                    }
                }
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Reads frames as records from now on (see [`Session::set_batched`], which is what a side
    /// normally calls).
    pub fn set_batched(&mut self) {
        self.batched = true;
    }
}

/// The records of a frame's plaintext, split as [`SessionReader`] splits them, checked against
/// the format: every record taken is a canonical length and that many bytes, which written back
/// give exactly the bytes they came from; the split stops only at the end or at a broken record.
/// Panics when it does not hold.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check_records(plaintext: &[u8]) {
    let mut rest = plaintext;
    let mut rebuilt = Vec::new();
    while !rest.is_empty() {
        let Ok(message) = record(rest) else { break };
        assert!(!message.is_empty() && message.end <= rest.len(), "{message:?} of {}", rest.len());
        let mut len = [0u8; MAX_VARINT_LEN];
        rebuilt.extend_from_slice(put_varint(message.len() as u32, &mut len));
        assert_eq!(&rest[..message.start], &rebuilt[rebuilt.len() - message.start..], "a canonical length");
        rebuilt.extend_from_slice(&rest[message.clone()]);
        rest = &rest[message.end..];
    }
    assert_eq!(rebuilt, plaintext[..plaintext.len() - rest.len()], "the records give back their bytes");
    if !rest.is_empty() {
        assert!(record(rest).is_err(), "the split stops only at a broken record");
    }
}

/// Decodes one message of type `T`; `None` (logged) for a kind from a newer protocol version, which
/// a reader skips. Garbage is an error.
pub fn decode_or_skip<T: DeserializeOwned + Serialize + WireEnum>(
    bytes: &[u8],
) -> Result<Option<T>, DecodeError> {
    match whatsap2p_proto::decode::<T>(bytes) {
        Ok(msg) => Ok(Some(msg)),
        Err(DecodeError::UnknownVariant(kind)) => {
            tracing::debug!(kind, "skipping message of unknown kind");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The sending half of a session.
pub struct SessionWriter<S> {
    io: WriteHalf<S>,
    frames: FrameWriter,
    transport: Arc<snow::StatelessTransportState>,
    nonce: u64,
    /// Whether frames carry records (see [`Session::set_batched`]).
    batched: bool,
    /// Records queued for the next frame, sealed at the next flush. Unallocated between batches.
    staged: Vec<u8>,
}

/// The most a varint length in front of a record takes.
const MAX_VARINT_LEN: usize = 5;

/// Room made for a batch when its first record is staged: sixteen directory answers.
const STAGED_START: usize = 1024;

/// Bytes the AEAD adds to every frame.
const TAG_LEN: usize = 16;

impl<S: AsyncWrite> SessionWriter<S> {
    /// Encrypts one frame straight into the queue of frames to write.
    fn seal(&mut self, plaintext: &[u8]) -> Result<(), LinkError> {
        let (transport, nonce) = (&self.transport, self.nonce);
        self.frames.push_with(plaintext.len() + TAG_LEN, |out| {
            Ok(transport.write_message(nonce, plaintext, out)?)
        })?;
        self.nonce += 1;
        Ok(())
    }

    /// Writes frames of records from now on (see [`Session::set_batched`], which is what a side
    /// normally calls).
    pub fn set_batched(&mut self) {
        self.batched = true;
    }

    /// Queues one message: sealed as a frame of its own, or staged as a record of the next one.
    fn put(&mut self, message: &[u8]) -> Result<(), LinkError> {
        if !self.batched {
            return self.seal(message);
        }
        if message.is_empty() {
            return Err(LinkError::BadRecord);
        }
        if message.len() + MAX_VARINT_LEN > MAX_PLAINTEXT_LEN {
            return Err(LinkError::FrameTooLarge);
        }
        if self.staged.len() + MAX_VARINT_LEN + message.len() > MAX_PLAINTEXT_LEN {
            self.seal_staged()?;
        }
        let mut len = [0u8; MAX_VARINT_LEN];
        // Under MAX_PLAINTEXT_LEN, checked above.
        self.staged.extend_from_slice(put_varint(message.len() as u32, &mut len));
        self.staged.extend_from_slice(message);
        Ok(())
    }

    /// Seals the staged records as one frame. Frees their buffer: a session idle after a batch
    /// holds none.
    fn seal_staged(&mut self) -> Result<(), LinkError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        self.seal(&staged)
    }

    /// Encrypts and writes one message (and any fed before it), within [`WRITE_TIMEOUT`].
    pub async fn send(&mut self, plaintext: &[u8]) -> Result<(), LinkError> {
        self.put(plaintext)?;
        self.flush().await
    }

    /// Encrypts one frame and writes as much of it (and of any fed before it) as the socket takes
    /// without waiting. Returns whether all of it is written; what is not stays buffered for the
    /// next [`SessionWriter::flush`], which the caller must see to. For a task that must never
    /// stall on a peer that does not read, such as the one reading from that same peer.
    pub fn send_or_buffer(&mut self, plaintext: &[u8]) -> Result<bool, LinkError> {
        self.put(plaintext)?;
        self.seal_staged()?;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.frames.poll_flush(Pin::new(&mut self.io), &mut cx) {
            Poll::Ready(written) => written.map(|()| true).map_err(LinkError::Io),
            Poll::Pending => Ok(false),
        }
    }

    /// Encrypts one frame and buffers it without writing: call [`SessionWriter::flush`] after a
    /// batch, so many small frames leave in one write. A long batch is written out as it goes.
    pub async fn feed_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        if self.should_flush() {
            self.flush().await?;
        }
        self.seal_msg(msg)
    }

    /// Encodes and encrypts one message into the queue of frames to write, without writing, even
    /// when [`SessionWriter::should_flush`] says it is time: the caller flushes.
    pub fn queue_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        self.seal_msg(msg)
    }

    /// Whether enough is queued that it should be written before more is queued.
    pub fn should_flush(&self) -> bool {
        self.frames.is_full() || self.staged.len() >= crate::frames::BACKPRESSURE
    }

    /// Encodes and encrypts one message into the queue of frames to write, or stages it as a
    /// record. Not async, so the encoding's stack buffer is never part of a future.
    fn seal_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        if !self.batched {
            return whatsap2p_proto::codec::with_encoded(msg, |bytes| self.seal(bytes))?;
        }
        // Encoded in place after a one-byte length, which is right for all but long messages.
        if self.staged.capacity() == 0 {
            self.staged.reserve(STAGED_START);
        }
        let start = self.staged.len();
        self.staged.push(0);
        if let Err(e) = whatsap2p_proto::codec::encode_into(msg, &mut self.staged) {
            self.staged.truncate(start);
            return Err(e.into());
        }
        let len = self.staged.len() - start - 1;
        if len == 0 || len >= 0x80 || self.staged.len() > MAX_PLAINTEXT_LEN {
            // A longer length, a message that does not fit beside those staged, or none at all.
            let message = self.staged.split_off(start + 1);
            self.staged.truncate(start);
            return self.put(&message);
        }
        self.staged[start] = len as u8;
        Ok(())
    }

    /// Writes out every buffered frame, within [`WRITE_TIMEOUT`].
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        self.seal_staged()?;
        let flush = poll_fn(|cx| self.frames.poll_flush(Pin::new(&mut self.io), cx));
        match tokio::time::timeout(WRITE_TIMEOUT, flush).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }

    /// Encodes and sends one message.
    pub async fn send_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        self.seal_msg(msg)?;
        self.flush().await
    }

    /// Flushes and shuts the write side down, telling the peer no more frames come.
    pub async fn close(&mut self) -> Result<(), LinkError> {
        self.seal_staged()?;
        let close = poll_fn(|cx| self.frames.poll_close(Pin::new(&mut self.io), cx));
        match tokio::time::timeout(WRITE_TIMEOUT, close).await {
            Ok(r) => r.map_err(LinkError::Io),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use crate::{Handshake, StaticKeypair};

    #[test]
    fn given_plaintexts_then_records_split_as_the_format_says() {
        for plaintext in
            [&[][..], &[1, 2], &[1, 2, 2, 3, 4], &[0, 1], &[1, 2, 5, 1], &[0x80, 0x01, 7], &[0x81, 0x00, 7]]
        {
            super::check_records(plaintext);
        }
        let mut long = vec![0x80, 0x01];
        long.extend([9u8; 128]);
        super::check_records(&long);
        assert_eq!(super::record(&long).expect("a record"), 2..130);
    }

    #[tokio::test]
    async fn given_batches_then_a_flush_seals_every_message_queued_before_it_as_one_frame() {
        let (a, b) = duplex(1 << 20);
        let (ka, kb) = (StaticKeypair::generate().expect("key"), StaticKeypair::generate().expect("key"));
        let responder = tokio::spawn(async move {
            let mut hs = Handshake::responder(b, &kb)?;
            hs.recv().await?;
            hs.send(b"").await?;
            hs.recv().await?;
            hs.finish()
        });
        let mut hs = Handshake::initiator(a, &ka).expect("hs");
        hs.send(b"").await.expect("m1");
        hs.recv().await.expect("m2");
        hs.send(b"").await.expect("m3");
        let (mut s1, mut s2) = (hs.finish().expect("finish"), responder.await.expect("join").expect("hs"));
        s1.set_batched();
        s2.set_batched();
        let (_r1, mut w1) = s1.split();
        let (mut r2, _w2) = s2.split();
        for i in 0..16u32 {
            w1.queue_msg(&i).expect("queue");
        }
        w1.flush().await.expect("flush");
        assert_eq!(w1.nonce, 1, "one frame for the batch");
        assert!(w1.staged.capacity() == 0, "nothing held after the flush");
        for i in 0..16u32 {
            let got = r2.recv().await.expect("recv").expect("a message");
            assert_eq!(whatsap2p_proto::codec::decode_struct::<u32>(&got).expect("u32"), i);
        }
        assert_eq!((r2.nonce, r2.rest.capacity()), (1, 0), "one frame opened, nothing held after it");
    }
}
