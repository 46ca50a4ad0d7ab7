//! The Noise handshake, one message at a time.
//!
//! The caller drives the pattern (`send`, `recv`, `send` for an initiator of `XX`) and decides
//! what each payload is; between steps it can read [`Handshake::hash`] and
//! [`Handshake::remote_static`] to sign or check identity proofs. The caller also bounds the whole
//! handshake with a timeout: a peer that never finishes must not hold a connection.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;
use tokio_util::codec::LengthDelimitedCodec;
use whatsap2p_proto::handshake::{NOISE_PARAMS, PROLOGUE};
use whatsap2p_proto::PublicKey;

use crate::{codec, frame_error, LinkError, Session, StaticKeypair};

/// Largest handshake message: keys, tags and a payload (hello, identity proof) of a few hundred bytes.
/// Anything bigger is refused by Noise before it costs more.
const MAX_HANDSHAKE_LEN: usize = 4096;

/// A handshake in progress over the byte stream `S`.
pub struct Handshake<S> {
    framed: Framed<S, LengthDelimitedCodec>,
    state: snow::HandshakeState,
    buf: Vec<u8>,
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
        let builder =
            snow::Builder::new(NOISE_PARAMS.parse()?).local_private_key(keys.private()).prologue(PROLOGUE);
        let state = if initiator { builder.build_initiator()? } else { builder.build_responder()? };
        Ok(Self { framed: Framed::new(stream, codec()), state, buf: vec![0; MAX_HANDSHAKE_LEN] })
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
        let n = self.state.write_message(payload, &mut self.buf)?;
        self.framed.send(bytes::Bytes::copy_from_slice(&self.buf[..n])).await.map_err(frame_error)
    }

    /// Reads the next handshake message and returns its payload.
    pub async fn recv(&mut self) -> Result<Vec<u8>, LinkError> {
        let frame = match self.framed.next().await {
            Some(frame) => frame.map_err(frame_error)?,
            None => return Err(LinkError::ClosedDuringHandshake),
        };
        let n = self.state.read_message(&frame, &mut self.buf)?;
        Ok(self.buf[..n].to_vec())
    }

    /// Ends the handshake; fails if the pattern is not complete.
    pub fn finish(self) -> Result<Session<S>, LinkError> {
        let remote = self
            .remote_static()
            .ok_or(LinkError::Noise(snow::Error::State(snow::error::StateProblem::HandshakeNotFinished)))?;
        let transport = self.state.into_stateless_transport_mode()?;
        Ok(Session::new(self.framed, transport, remote))
    }
}
