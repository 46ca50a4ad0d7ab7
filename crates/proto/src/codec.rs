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

/// Appends what [`encode`] writes for `msg` to `out`, in place: for a writer that gathers many
/// messages in one buffer. The caller bounds the total.
pub fn encode_into<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    postcard::serialize_with_flavor(msg, Append { out }).map_err(|e| EncodeError::Serialize(e.to_string()))
}

/// A postcard output appending to a `Vec`, short pieces (varints, small fields) byte by byte
/// rather than through a call to `memcpy` each.
struct Append<'a> {
    out: &'a mut Vec<u8>,
}

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= 8 {
            data.iter().for_each(|&b| self.out.push(b));
        } else {
            self.out.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.out.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// See [`with_encoded`]; well under [`MAX_PLAINTEXT_LEN`].
pub const STACK_ENCODE_LEN: usize = 512;

/// The message kind (variant index) at the start of `bytes`, if it is a canonical varint.
pub fn kind(bytes: &[u8]) -> Option<u32> {
    take_varint(bytes).map(|(kind, _)| kind)
}

/// `value` as a canonical `u32` varint (the encoding [`take_varint`] reads), in `buf`.
pub fn put_varint(mut value: u32, buf: &mut [u8; 5]) -> &[u8] {
    // LEB128, as postcard writes it: seven bits a byte, low first, the top bit set on all but the
    // last. A u32 needs at most five.
    let mut n = 0;
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buf[n] = low;
            return &buf[..=n];
        }
        buf[n] = low | 0x80;
        n += 1;
    }
}

/// The canonical `u32` varint at the start of `bytes`, and the bytes after it.
pub fn take_varint(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (value, rest) = postcard::take_from_bytes::<u32>(bytes).ok()?;
    is_encoding_of(&value, &bytes[..bytes.len() - rest.len()]).then_some((value, rest))
}

/// Decodes a whole message; trailing bytes and non-canonical encodings are errors. A kind this
/// version does not know is [`DecodeError::UnknownVariant`] whatever follows it.
pub fn decode<T: DeserializeOwned + Serialize + WireEnum>(bytes: &[u8]) -> Result<T, DecodeError> {
    // A message that decodes is of a known kind: its kind is read only when it does not (the
    // usual case costs one pass, not two).
    decode_struct(bytes).map_err(|e| match kind(bytes) {
        Some(variant) if variant >= T::KNOWN_VARIANTS => DecodeError::UnknownVariant(variant),
        _ => e,
    })
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
        // Most pieces are a varint or a short field: compared in place, not through a call to
        // `memcmp` each (a few per cent of a directory's CPU under pipelined lookups).
        if data.len() <= 8 {
            return data.iter().try_for_each(|&b| self.try_push(b));
        }
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
    fn given_any_length_then_put_varint_writes_what_postcard_writes_and_take_varint_reads_it_back() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, 65_519, u32::MAX] {
            let mut buf = [0u8; 5];
            let ours = put_varint(value, &mut buf);
            assert_eq!(ours, encode(&value).expect("a u32").as_slice(), "{value}");
            assert_eq!(take_varint(ours), Some((value, &[][..])));
        }
        assert_eq!(take_varint(&[0x80, 0x00]), None, "a non-canonical varint is refused");
    }

    #[test]
    fn given_messages_then_encode_into_appends_what_encode_gives() {
        let mut out = vec![9];
        for len in [0, 7, 8, 9, 300] {
            let msg = ServerToClient::Error { req: Some(7), message: "x".repeat(len) };
            let start = out.len();
            encode_into(&msg, &mut out).expect("encodes");
            assert_eq!(out[start..], encode(&msg).expect("encodes")[..], "{len}");
        }
        assert_eq!(out[0], 9, "what was there stays");
    }

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
