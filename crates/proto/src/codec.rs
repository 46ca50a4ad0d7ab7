//! Encoding of wire messages (postcard) with the limits and error kinds the transports need.
//!
//! Every message enum on the wire is `#[non_exhaustive]`; postcard writes the variant index first,
//! so a decoder can tell a message from a newer peer ([`DecodeError::UnknownVariant`], to be skipped)
//! from garbage ([`DecodeError::Malformed`], to drop the connection).
//!
//! Only the canonical encoding of a value decodes: the one [`encode`] writes. postcard itself takes
//! over-long varints (`80 00` for 0), sets in any order and numbers with spaces around them, so one
//! value would have many encodings, and a signature, an id or a deduplication over the bytes would
//! not be over the value. After decoding, the value is encoded again against the input, byte by
//! byte and without allocating ([`is_encoding_of`]); any difference is
//! [`DecodeError::NonCanonical`].

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
    /// A message in another encoding than the one canonical encoding of its value (an over-long
    /// varint, a set out of order, a number with spaces).
    #[error("message is not in its canonical encoding")]
    NonCanonical,
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

/// Encodes `msg` as [`encode`] does and hands the bytes to `use_bytes`. A message that fits in
/// [`STACK_ENCODE_LEN`] bytes (every request and answer of the directory but the largest) is encoded
/// on the stack: no allocation, and no buffer grown a byte at a time.
pub fn with_encoded<T: Serialize, R>(msg: &T, use_bytes: impl FnOnce(&[u8]) -> R) -> Result<R, EncodeError> {
    let mut stack = [0u8; STACK_ENCODE_LEN];
    match postcard::to_slice(msg, &mut stack) {
        Ok(bytes) => Ok(use_bytes(bytes)),
        Err(postcard::Error::SerializeBufferFull) => Ok(use_bytes(&encode(msg)?)),
        Err(e) => Err(EncodeError::Serialize(e.to_string())),
    }
}

/// See [`with_encoded`]; well under [`MAX_PLAINTEXT_LEN`].
pub const STACK_ENCODE_LEN: usize = 512;

/// The message kind (variant index) at the start of `bytes`, if it is a canonical varint.
pub fn kind(bytes: &[u8]) -> Option<u32> {
    let (kind, rest) = postcard::take_from_bytes::<u32>(bytes).ok()?;
    is_encoding_of(&kind, &bytes[..bytes.len() - rest.len()]).then_some(kind)
}

/// Decodes a whole message; trailing bytes and non-canonical encodings are errors. A kind this
/// version does not know is [`DecodeError::UnknownVariant`] whatever follows it.
pub fn decode<T: DeserializeOwned + Serialize + WireEnum>(bytes: &[u8]) -> Result<T, DecodeError> {
    if let Some(variant) = kind(bytes) {
        if variant >= T::KNOWN_VARIANTS {
            return Err(DecodeError::UnknownVariant(variant));
        }
    }
    decode_struct(bytes)
}

/// Decodes a whole non-enum payload (handshake payloads); trailing bytes and non-canonical
/// encodings are errors.
pub fn decode_struct<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (msg, rest) = decode_prefix(bytes)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Decodes a value from the start of `bytes` and returns it with the bytes after it; the value's
/// own bytes must be canonical.
pub fn decode_prefix<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<(T, &[u8]), DecodeError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !is_encoding_of(&msg, &bytes[..bytes.len() - rest.len()]) {
        return Err(DecodeError::NonCanonical);
    }
    Ok((msg, rest))
}

/// Whether `bytes` is exactly what [`encode`] writes for `value`. Compares while encoding: no
/// allocation, and it stops at the first difference.
pub fn is_encoding_of<T: Serialize + ?Sized>(value: &T, bytes: &[u8]) -> bool {
    postcard::serialize_with_flavor(value, Compare { rest: bytes }).is_ok()
}

/// A postcard output that holds nothing: it checks each byte written against the expected bytes.
struct Compare<'a> {
    rest: &'a [u8],
}

impl postcard::ser_flavors::Flavor for Compare<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match self.rest.strip_prefix(data) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(postcard::Error::SerializeBufferFull),
        }
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        match self.rest.split_first() {
            Some((&first, rest)) if first == data => {
                self.rest = rest;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(postcard::Error::SerializeBufferFull)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{ClientToServer, ServerToClient};
    use crate::peer::PeerMessage;

    #[test]
    fn given_messages_on_either_side_of_the_stack_buffer_then_with_encoded_gives_what_encode_gives() {
        for len in [0, STACK_ENCODE_LEN - 8, STACK_ENCODE_LEN, 40_000] {
            let msg = ServerToClient::Error { req: Some(7), message: "x".repeat(len) };
            let expected = encode(&msg).expect("encode");
            assert_eq!(with_encoded(&msg, <[u8]>::to_vec).expect("with_encoded"), expected, "{len}");
        }
        let huge = ServerToClient::Error { req: None, message: "x".repeat(crate::MAX_PLAINTEXT_LEN) };
        assert!(matches!(with_encoded(&huge, |_| ()), Err(EncodeError::TooLarge(_))));
    }

    #[test]
    fn given_over_long_varints_then_refused_as_non_canonical() {
        let canonical = encode(&ServerToClient::Error { req: None, message: String::new() }).expect("encode");
        assert_eq!(canonical, [4, 0, 0]);
        assert!(decode::<ServerToClient>(&canonical).is_ok());
        // The string's length 0 written in two bytes, then the kind.
        assert_eq!(decode::<ServerToClient>(&[4, 0, 0x80, 0]), Err(DecodeError::NonCanonical));
        assert_eq!(decode::<ServerToClient>(&[0x84, 0, 0, 0]), Err(DecodeError::NonCanonical));
        // A u32 request id of 5 in two bytes; a u64 of 1 in ten.
        assert_eq!(decode::<ServerToClient>(&[4, 1, 0x85, 0, 0]), Err(DecodeError::NonCanonical));
        let text_sent_at = |sent_at: &[u8]| {
            let mut b = vec![0];
            b.extend([7; 16]);
            b.extend_from_slice(sent_at);
            b.push(0);
            decode::<PeerMessage>(&b)
        };
        assert!(text_sent_at(&[1]).is_ok());
        assert_eq!(
            text_sent_at(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0]),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn given_bool_or_option_tag_other_than_0_or_1_then_malformed() {
        assert!(matches!(decode::<ServerToClient>(&[4, 2, 0]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn given_a_number_with_spaces_then_non_canonical() {
        let mut b = vec![5, 4];
        b.extend_from_slice(b" 123");
        b.extend([0, 0]);
        assert_eq!(decode::<ServerToClient>(&b), Err(DecodeError::NonCanonical));
    }

    #[test]
    fn given_unknown_kind_then_skippable_but_an_over_long_kind_is_not() {
        assert_eq!(decode::<ClientToServer>(&[99, 1, 2]), Err(DecodeError::UnknownVariant(99)));
        assert_eq!(kind(&[0x80, 1]), Some(128));
        assert_eq!(kind(&[0xe3, 0]), None);
        assert!(decode::<ClientToServer>(&[0xe3, 0]).is_err_and(|e| e != DecodeError::UnknownVariant(99)));
    }

    #[test]
    fn given_bytes_then_compare_matches_only_the_exact_encoding() {
        let m = ClientToServer::Heartbeat;
        assert!(is_encoding_of(&m, &[2]));
        assert!(!is_encoding_of(&m, &[2, 0]));
        assert!(!is_encoding_of(&m, &[]));
        assert!(!is_encoding_of(&m, &[3]));
    }
}
