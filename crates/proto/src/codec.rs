//! Encoding of wire messages (postcard) with the limits and error kinds the transports need.
//!
//! Every message enum on the wire is `#[non_exhaustive]`; postcard writes the variant index first,
//! so a decoder can tell a message from a newer peer ([`DecodeError::UnknownVariant`], to be skipped)
//! from garbage ([`DecodeError::Malformed`], to drop the connection).

use serde::{de::DeserializeOwned, Serialize};

use crate::MAX_PLAINTEXT_LEN;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A well-formed message of a kind this version does not know.
    #[error("unknown message kind {0}")]
    UnknownVariant(u32),
    /// Bytes that are not a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid message followed by extra bytes.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Larger than one frame can carry.
    #[error("message of {0} bytes exceeds the {max} byte limit", max = MAX_PLAINTEXT_LEN)]
    TooLarge(usize),
    /// Serialization failed.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Number of variants a wire enum knows, for telling unknown kinds from garbage.
pub trait WireEnum {
    /// How many variants this version knows; indexes from this one up are unknown.
    const KNOWN_VARIANTS: u32;
}

/// Encodes a message, refusing one that would not fit in a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if bytes.len() > MAX_PLAINTEXT_LEN {
        return Err(EncodeError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes a whole message; trailing bytes are an error.
pub fn decode<T: DeserializeOwned + WireEnum>(bytes: &[u8]) -> Result<T, DecodeError> {
    if let Ok((variant, _)) = postcard::take_from_bytes::<u32>(bytes) {
        if variant >= T::KNOWN_VARIANTS {
            return Err(DecodeError::UnknownVariant(variant));
        }
    }
    decode_struct(bytes)
}

/// Decodes a whole non-enum payload (handshake payloads); trailing bytes are an error.
pub fn decode_struct<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(msg)
}
