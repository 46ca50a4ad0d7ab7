//! An established Noise session: encrypted frames in both directions.
//!
//! The session uses snow's stateless transport with one nonce counter per direction, so the reader
//! and the writer can be moved into different tasks without a lock around the cipher.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use whatsap2p_proto::codec::WireEnum;
use whatsap2p_proto::{DecodeError, PublicKey};

use crate::{frame_error, LinkError, WRITE_TIMEOUT};

/// An established session over `S`.
pub struct Session<S> {
    reader: SessionReader<S>,
    writer: SessionWriter<S>,
}

impl<S: AsyncRead + AsyncWrite> Session<S> {
    pub(crate) fn new(
        framed: Framed<S, LengthDelimitedCodec>,
        transport: snow::StatelessTransportState,
        remote_static: PublicKey,
    ) -> Self {
        // Splitting the framed stream (not the raw one) keeps any bytes the handshake already
        // buffered, such as a first message sent right behind the last handshake message.
        let (sink, stream) = framed.split();
        let transport = Arc::new(transport);
        Self {
            reader: SessionReader { frames: stream, transport: transport.clone(), nonce: 0, remote_static },
            writer: SessionWriter { frames: sink, transport, nonce: 0 },
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
    frames: SplitStream<Framed<S, LengthDelimitedCodec>>,
    transport: Arc<snow::StatelessTransportState>,
    nonce: u64,
    remote_static: PublicKey,
}

impl<S: AsyncRead + AsyncWrite> SessionReader<S> {
    /// Next decrypted frame, or `None` when the peer closed the stream cleanly.
    ///
    /// Cancel-safe: a `select!` may drop this future without losing a frame.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        let frame = match self.frames.next().await {
            Some(frame) => frame.map_err(frame_error)?,
            None => return Ok(None),
        };
        let mut out = vec![0u8; frame.len()];
        let n = self.transport.read_message(self.nonce, &frame, &mut out)?;
        self.nonce += 1;
        out.truncate(n);
        Ok(Some(out))
    }

    /// Next message of type `T`, skipping (and logging) kinds from a newer protocol version.
    pub async fn recv_msg<T: DeserializeOwned + WireEnum>(&mut self) -> Result<Option<T>, LinkError> {
        loop {
            let Some(bytes) = self.recv().await? else { return Ok(None) };
            match whatsap2p_proto::decode::<T>(&bytes) {
                Ok(msg) => return Ok(Some(msg)),
                Err(DecodeError::UnknownVariant(v)) => {
                    tracing::debug!(kind = v, "skipping message of unknown kind");
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

/// The sending half of a session.
pub struct SessionWriter<S> {
    frames: SplitSink<Framed<S, LengthDelimitedCodec>, Bytes>,
    transport: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

/// Bytes the AEAD adds to every frame.
const TAG_LEN: usize = 16;

impl<S: AsyncRead + AsyncWrite> SessionWriter<S> {
    /// Encrypts one frame into a buffer of its own size (no per-session 64 KiB buffer, no copy).
    fn seal(&mut self, plaintext: &[u8]) -> Result<Bytes, LinkError> {
        let mut frame = vec![0u8; plaintext.len() + TAG_LEN];
        let n = self.transport.write_message(self.nonce, plaintext, &mut frame)?;
        self.nonce += 1;
        frame.truncate(n);
        Ok(Bytes::from(frame))
    }

    /// Encrypts and writes one frame, within [`WRITE_TIMEOUT`].
    pub async fn send(&mut self, plaintext: &[u8]) -> Result<(), LinkError> {
        let frame = self.seal(plaintext)?;
        match tokio::time::timeout(WRITE_TIMEOUT, self.frames.send(frame)).await {
            Ok(r) => r.map_err(frame_error),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }

    /// Encrypts one frame and buffers it without writing: call [`SessionWriter::flush`] after a
    /// batch, so many small frames leave in one write.
    pub async fn feed_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        let frame = self.seal(&whatsap2p_proto::encode(msg)?)?;
        match tokio::time::timeout(WRITE_TIMEOUT, self.frames.feed(frame)).await {
            Ok(r) => r.map_err(frame_error),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }

    /// Writes out every buffered frame.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.frames.flush()).await {
            Ok(r) => r.map_err(frame_error),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }

    /// Encodes and sends one message.
    pub async fn send_msg<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        let bytes = whatsap2p_proto::encode(msg)?;
        self.send(&bytes).await
    }

    /// Flushes and shuts the write side down, telling the peer no more frames come.
    pub async fn close(&mut self) -> Result<(), LinkError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.frames.close()).await {
            Ok(r) => r.map_err(LinkError::Io),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }
}
