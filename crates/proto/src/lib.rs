//! Wire types of whatsap2p, shared by the directory server and the clients.
//!
//! This crate does no I/O and reads no clock: it turns bytes into checked types and back, so every
//! decoder can be tested and fuzzed on its own.
//!
//! # Layout
//! - [`number`]: [`Number`], the phone-like identifier of a user.
//! - [`keys`]: public keys and signatures as they travel, with hex display.
//! - [`handshake`]: the Noise parameters and the payloads carried inside the handshake, including the
//!   [`IdentityProof`] that binds a number and an Ed25519 identity to one Noise session.
//! - [`directory`]: messages between a client and the directory server.
//! - [`peer`]: messages between two clients.
//! - [`nat`]: reaching a client behind a NAT: candidates, UDP probe and punch datagrams, relay
//!   tickets (version 3).
//! - [`group`]: group state, signed changes and the rule for accepting them.
//! - [`chunk`]: file chunks encoded and read in place, without copying their bytes.
//! - `fuzzing` (tests and the `fuzzing` feature): the properties every decoder keeps, checked by the
//!   fuzz targets and by regression tests.
//! - `code`: wire codes (small enums sent as a varint, unknown values kept) and the macro that
//!   defines them.
//! - [`codec`]: postcard encoding with size limits, canonical decoding and a distinction between
//!   unknown and malformed.
//! - [`text`]: byte fields as hex in text formats (the test vectors); the wire is untouched.
//! - [`version`]: version ranges and their negotiation in the handshake (version 3), and the
//!   versions this code speaks ([`version::SPOKEN`]).

#![forbid(unsafe_code)]

pub mod chunk;
mod code;
pub mod codec;
pub mod directory;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod group;
pub mod handshake;
pub mod keys;
pub mod nat;
pub mod number;
pub mod peer;
pub mod text;
pub mod version;

pub use codec::{decode, encode, DecodeError};
pub use handshake::{IdentityProof, ProofError};
pub use keys::{PublicKey, SignatureBytes};
pub use number::{Number, NumberError, WireNumber};
pub use peer::MessageId;

/// Largest frame on the wire (length prefix excluded). Noise caps a message at 65 535 bytes, and every
/// frame carries exactly one Noise message.
pub const MAX_FRAME_LEN: usize = 65_535;

/// Largest plaintext that fits in one encrypted frame (the AEAD tag takes 16 bytes).
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - 16;

/// Largest text message, in bytes of UTF-8. Leaves room in one frame for the envelope.
pub const MAX_TEXT_LEN: usize = 32 * 1024;
