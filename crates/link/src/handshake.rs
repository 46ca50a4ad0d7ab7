//! The Noise handshake, one message at a time.
//!
//! The caller drives the pattern (`send`, `recv`, `send` for an initiator of `XX`) and decides
//! what each payload is; between steps it can read [`Handshake::hash`] and
//! [`Handshake::remote_static`] to sign or check identity proofs. The caller also bounds the whole
//! handshake with a timeout: a peer that never finishes must not hold a connection.

use std::future::poll_fn;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use whatsap2p_proto::handshake::{NOISE_PARAMS, PROLOGUE};
use whatsap2p_proto::PublicKey;

use crate::frames::{FrameReader, FrameWriter};
use crate::{LinkError, Session, StaticKeypair};

/// Largest handshake message: keys, tags and a payload (hello, identity proof) of a few hundred bytes.
/// Anything bigger is refused by Noise before it costs more.
const MAX_HANDSHAKE_LEN: usize = 4096;

/// A handshake in progress over the byte stream `S`.
pub struct Handshake<S> {
    stream: S,
    reader: FrameReader,
    writer: FrameWriter,
    state: snow::HandshakeState,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handshake<S> {
    /// Starts the initiator side (sends the first message).
    pub fn initiator(stream: S, keys: &StaticKeypair) -> Result<Self, LinkError> {
        Self::new(stream, keys, true)
    }

    /// Starts the responder side (receives the first message).
    pub fn responder(stream: S, keys: &StaticKeypair) -> Result<Self, LinkError> {
        Self::new(stream, keys, false)
    }

    fn new(stream: S, keys: &StaticKeypair, initiator: bool) -> Result<Self, LinkError> {
        Self::build(stream, keys, initiator, None)
    }

    /// A handshake whose ephemeral key is `ephemeral` instead of a fresh one: only for the test
    /// vectors, whose transcript must come out the same on every run.
    #[cfg(test)]
    pub(crate) fn with_ephemeral(
        stream: S,
        keys: &StaticKeypair,
        initiator: bool,
        ephemeral: &[u8; 32],
    ) -> Result<Self, LinkError> {
        Self::build(stream, keys, initiator, Some(ephemeral))
    }

    fn build(
        stream: S,
        keys: &StaticKeypair,
        initiator: bool,
        ephemeral: Option<&[u8; 32]>,
    ) -> Result<Self, LinkError> {
        let mut builder =
            snow::Builder::new(NOISE_PARAMS.parse()?).local_private_key(keys.private()).prologue(PROLOGUE);
        if let Some(e) = ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(e);
        }
        let state = if initiator { builder.build_initiator()? } else { builder.build_responder()? };
        Ok(Self { stream, reader: FrameReader::default(), writer: FrameWriter::default(), state })
    }

    /// The handshake hash so far: what an identity proof signs.
    pub fn hash(&self) -> Vec<u8> {
        self.state.get_handshake_hash().to_vec()
    }

    /// The peer's Noise static key, once its message carrying it was received.
    pub fn remote_static(&self) -> Option<PublicKey> {
        self.state.get_remote_static().and_then(|k| PublicKey::try_from(k).ok())
    }

    /// Writes the next handshake message with `payload`.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), LinkError> {
        let state = &mut self.state;
        self.writer.push_with(MAX_HANDSHAKE_LEN, |out| Ok(state.write_message(payload, out)?))?;
        poll_fn(|cx| self.writer.poll_flush(Pin::new(&mut self.stream), cx)).await?;
        Ok(())
    }

    /// Reads the next handshake message and returns its payload.
    pub async fn recv(&mut self) -> Result<Vec<u8>, LinkError> {
        let state = &mut self.state;
        let opened = poll_fn(|cx| {
            self.reader.poll_frame(Pin::new(&mut self.stream), cx, |frame| {
                // A payload is never longer than its message; past MAX_HANDSHAKE_LEN Noise refuses.
                let mut payload = vec![0; frame.len().min(MAX_HANDSHAKE_LEN)];
                let n = state.read_message(frame, &mut payload)?;
                payload.truncate(n);
                Ok::<_, LinkError>(payload)
            })
        })
        .await?;
        opened.ok_or(LinkError::ClosedDuringHandshake)?
    }

    /// Ends the handshake; fails if the pattern is not complete.
    pub fn finish(self) -> Result<Session<S>, LinkError> {
        let remote = self
            .remote_static()
            .ok_or(LinkError::Noise(snow::Error::State(snow::error::StateProblem::HandshakeNotFinished)))?;
        let transport = self.state.into_stateless_transport_mode()?;
        // The reader's state goes along: it may hold a frame sent right behind the last handshake message.
        Ok(Session::new(self.stream, self.reader, transport, remote))
    }
}
