//! An established Noise session: encrypted frames in both directions.
//!
//! The session uses snow's stateless transport with one nonce counter per direction, so the reader
//! and the writer can be moved into different tasks without a lock around the cipher. Neither half
//! keeps a buffer while it waits (see [`crate::frames`]): a directory server holds thousands of
//! sessions that are idle nearly all the time.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use whatsap2p_proto::codec::WireEnum;
use whatsap2p_proto::{DecodeError, PublicKey};

use crate::frames::{FrameReader, FrameWriter};
use crate::unknown::UnknownKinds;
use crate::{LinkError, WRITE_TIMEOUT};

/// An established session over `S`.
pub struct Session<S> {
    reader: SessionReader<S>,
    writer: SessionWriter<S>,
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
                remote_static,
                unknown: UnknownKinds::default(),
            },
            writer: SessionWriter { io: write, frames: FrameWriter::default(), transport, nonce: 0 },
        }
    }

    /// The peer's Noise static key, authenticated by the handshake.
    pub fn remote_static(&self) -> PublicKey {
        self.reader.remote_static
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
    remote_static: PublicKey,
    /// Messages of unknown kinds skipped by [`SessionReader::recv_msg`], for its log lines.
    unknown: UnknownKinds,
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
        let (transport, nonce) = (&self.transport, self.nonce);
        let opened = ready!(self.frames.poll_frame(Pin::new(&mut self.io), cx, |frame| {
            if out.len() < frame.len() {
                out.resize(frame.len(), 0);
            }
            Ok::<_, LinkError>(transport.read_message(nonce, frame, out)?)
        }))?;
        let Some(n) = opened.transpose()? else { return Poll::Ready(Ok(None)) };
        self.nonce += 1;
        Poll::Ready(Ok(Some(n)))
    }

    /// Next message of type `T`, skipping kinds from a newer protocol version. Skips are logged
    /// at `info`, summarised: the first at once, then at most one line a minute
    /// ([`crate::unknown::SUMMARY_EVERY`]).
    ///
    /// Cancel-safe: a `select!` may drop this future without losing a frame.
    pub async fn recv_msg<T: DeserializeOwned + Serialize + WireEnum>(
        &mut self,
    ) -> Result<Option<T>, LinkError> {
        loop {
            let Some(bytes) = self.recv().await? else { return Ok(None) };
            match whatsap2p_proto::decode::<T>(&bytes) {
                Ok(msg) => return Ok(Some(msg)),
                Err(DecodeError::UnknownVariant(kind)) => {
                    if let Some(line) = self.unknown.skipped(kind, tokio::time::Instant::now()) {
                        crate::unknown::log(&line);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The peer's Noise static key.
    pub fn remote_static(&self) -> PublicKey {
        self.remote_static
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
}

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

    /// Encrypts and writes one frame (and any fed before it), within [`WRITE_TIMEOUT`].
    pub async fn send(&mut self, plaintext: &[u8]) -> Result<(), LinkError> {
        self.seal(plaintext)?;
        self.flush().await
    }

    /// Encrypts one frame and writes as much of it (and of any fed before it) as the socket takes
    /// without waiting. Returns whether all of it is written; what is not stays buffered for the
    /// next [`SessionWriter::flush`], which the caller must see to. For a task that must never
    /// stall on a peer that does not read, such as the one reading from that same peer.
    pub fn send_or_buffer(&mut self, plaintext: &[u8]) -> Result<bool, LinkError> {
        self.seal(plaintext)?;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.frames.poll_flush(Pin::new(&mut self.io), &mut cx) {
            Poll::Ready(written) => written.map(|()| true).map_err(LinkError::Io),
            Poll::Pending => Ok(false),
        }
    }

    /// Encrypts one frame and buffers it without writing: call [`SessionWriter::flush`] after a
    /// batch, so many small frames leave in one write. A long batch is written out as it goes.
    pub async fn feed_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        if self.frames.is_full() {
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
        self.frames.is_full()
    }

    /// Encodes and encrypts one message into the queue of frames to write. Not async, so the
    /// encoding's stack buffer is never part of a future.
    fn seal_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        whatsap2p_proto::codec::with_encoded(msg, |bytes| self.seal(bytes))?
    }

    /// Writes out every buffered frame, within [`WRITE_TIMEOUT`].
    pub async fn flush(&mut self) -> Result<(), LinkError> {
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
        let close = poll_fn(|cx| self.frames.poll_close(Pin::new(&mut self.io), cx));
        match tokio::time::timeout(WRITE_TIMEOUT, close).await {
            Ok(r) => r.map_err(LinkError::Io),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }
}
