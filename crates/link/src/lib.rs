//! Noise sessions over any reliable byte stream (TCP today; a relay or a punched UDP stream later).
//!
//! A connection is a sequence of frames, each a 4-byte big-endian length and one Noise message of at
//! most [`MAX_FRAME_LEN`] bytes. A [`Handshake`] exposes the handshake one message at a time, so the
//! protocol above it decides what each payload carries and what to check (see
//! [`whatsap2p_proto::handshake`]). Once finished it becomes a [`Session`], which splits into a
//! [`SessionReader`] and a [`SessionWriter`] that can live in different tasks: each direction keeps
//! its own nonce, so neither waits for the other.
//!
//! # Layout
//! - [`keys`]: Noise static keypairs.
//! - [`handshake`]: the step-by-step handshake.
//! - [`session`]: encrypted, framed reading and writing.
//! - [`unknown`]: the summarised log of skipped messages of unknown kinds.
//! - `frames` (private): the length-prefixed framing, holding no buffer between frames.

#![forbid(unsafe_code)]

mod frames;
pub mod handshake;
pub mod keys;
pub mod session;
pub mod unknown;
#[cfg(test)]
mod vectors;

/// What the fuzz targets in `fuzz/` check in this crate (only with the `fuzzing` feature).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::frames::check_splits;
    pub use crate::session::check_records;
}

pub use handshake::Handshake;
pub use keys::StaticKeypair;
pub use session::{decode_or_skip, Session, SessionReader, SessionWriter};
pub use whatsap2p_proto::MAX_FRAME_LEN;

use std::time::Duration;

use whatsap2p_proto::codec::EncodeError;
use whatsap2p_proto::DecodeError;

/// How long one frame write may take before the peer is considered stuck.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the link layer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The byte stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced more than [`MAX_FRAME_LEN`] bytes.
    #[error("frame exceeds the {MAX_FRAME_LEN} byte limit")]
    FrameTooLarge,
    /// The peer closed the stream before the handshake finished.
    #[error("connection closed during handshake")]
    ClosedDuringHandshake,
    /// Noise refused a message: wrong key, tampered or replayed bytes, or a protocol violation.
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// A payload did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A frame of records (directory sessions from version 4) held a record whose length is not a
    /// canonical varint, is zero, or runs past the frame; or an empty message was to be sent as one.
    #[error("malformed record in a frame")]
    BadRecord,
    /// A write did not finish within [`WRITE_TIMEOUT`].
    #[error("write timed out")]
    WriteTimeout,
}
