//! File chunks without copies: a [`PeerMessage::FileChunk`] header written in front of bytes read
//! straight into the frame, and a received chunk's fields found where they lie in the frame.
//!
//! A chunk is nearly a whole frame of file bytes. Encoding it as a `PeerMessage` copies them into a
//! new buffer, and decoding copies them out again; at a gigabyte a second those copies and their
//! allocations cost as much as the cipher. The bytes here are exactly what
//! [`encode`](crate::encode) gives for the same chunk (the tests check it), so a peer may use
//! either form.
//!
//! [`PeerMessage::FileChunk`]: crate::peer::PeerMessage::FileChunk

use std::ops::Range;

use crate::codec::{DecodeError, EncodeError};
use crate::peer::MessageId;
use crate::MAX_PLAINTEXT_LEN;

/// Where `FileChunk` is among `PeerMessage`'s variants: postcard writes this index first.
const FILE_CHUNK_VARIANT: u32 = 6;

/// Room a chunk header needs at most: the variant (1 byte), the id (16), the offset (up to 10) and
/// the length (up to 3, frames being under 64 KiB).
pub const MAX_CHUNK_HEADER_LEN: usize = 32;

/// A received `FileChunk`, read in place: its bytes are `frame[data]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkView {
    /// The transfer.
    pub id: MessageId,
    /// Where the chunk's bytes start in the file.
    pub offset: u64,
    /// Where the chunk's bytes are in the frame.
    pub data: Range<usize>,
}

/// Writes the header of a chunk of `len` bytes into `out`; the chunk's bytes go right after it.
/// Returns the header's length. Fails if the whole would not fit in one frame.
pub fn write_chunk_header(
    out: &mut [u8],
    id: MessageId,
    offset: u64,
    len: usize,
) -> Result<usize, EncodeError> {
    let header = postcard::to_slice(&(FILE_CHUNK_VARIANT, id, offset, len as u64), out)
        .map_err(|e| EncodeError::Serialize(e.to_string()))?
        .len();
    if len > MAX_PLAINTEXT_LEN.saturating_sub(header) {
        return Err(EncodeError::TooLarge(header.saturating_add(len)));
    }
    Ok(header)
}

/// Bytes of the shortest (the canonical) varint for `v`: 7 bits a byte.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// If `frame` is a `FileChunk`, where its fields are; `None` for any other message.
///
/// Like [`decode`](crate::decode), it takes only the canonical encoding: the header must be
/// exactly what [`write_chunk_header`] writes. Checked from the header's length alone, which costs
/// a few nanoseconds a chunk; encoding the header again and comparing cost 60 ns (against about
/// 9 us to decrypt the chunk).
pub fn view_chunk(frame: &[u8]) -> Option<Result<ChunkView, DecodeError>> {
    match postcard::take_from_bytes::<u32>(frame) {
        Ok((FILE_CHUNK_VARIANT, _)) => {}
        _ => return None,
    }
    let parsed = postcard::take_from_bytes::<(u32, MessageId, u64, &[u8])>(frame)
        .map_err(|e| DecodeError::Malformed(e.to_string()))
        .and_then(|((_, id, offset, data), rest)| {
            // The bytes are the last field, so they end where the frame does (if nothing trails).
            let end = frame.len() - rest.len();
            let start = end - data.len();
            // postcard took each varint as the value it decoded, so a header of the shortest
            // length for those values is the one canonical header (the fuzz target checks that
            // this agrees with `decode`, which encodes again and compares).
            if start != 1 + id.0.len() + varint_len(offset) + varint_len(data.len() as u64) {
                return Err(DecodeError::NonCanonical);
            }
            if !rest.is_empty() {
                return Err(DecodeError::Trailing(rest.len()));
            }
            Ok(ChunkView { id, offset, data: start..end })
        });
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{PeerMessage, FILE_CHUNK_LEN};
    use crate::{decode, encode};

    fn chunk(id: MessageId, offset: u64, data: Vec<u8>) -> PeerMessage {
        PeerMessage::FileChunk { id, offset, data }
    }

    #[test]
    fn given_header_and_bytes_then_they_are_the_encoded_chunk_and_view_back() {
        let id = MessageId::new();
        for (offset, len) in
            [(0, 0), (1, 1), (127, 127), (128, 128), (u64::MAX, 16_384), (1 << 40, FILE_CHUNK_LEN)]
        {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut frame = vec![0u8; MAX_PLAINTEXT_LEN];
            let header = write_chunk_header(&mut frame, id, offset, len).expect("header");
            assert!(header <= MAX_CHUNK_HEADER_LEN);
            frame[header..header + len].copy_from_slice(&data);
            frame.truncate(header + len);
            let message = chunk(id, offset, data.clone());
            assert_eq!(frame, encode(&message).expect("encode"), "offset {offset}, {len} bytes");
            assert_eq!(decode::<PeerMessage>(&frame).expect("decode"), message);
            let view = view_chunk(&frame).expect("a chunk").expect("valid");
            assert_eq!((view.id, view.offset, &frame[view.data]), (id, offset, &data[..]));
        }
    }

    #[test]
    fn given_other_messages_then_no_view() {
        let id = MessageId::new();
        for message in [PeerMessage::Ack { id }, PeerMessage::FileReceived { id }] {
            assert!(view_chunk(&encode(&message).expect("encode")).is_none());
        }
        assert!(view_chunk(&[]).is_none());
    }

    #[test]
    fn given_damaged_chunks_then_errors_not_panics() {
        let frame = encode(&chunk(MessageId::new(), 9, vec![1, 2, 3])).expect("encode");
        for cut in 1..frame.len() {
            assert!(
                matches!(view_chunk(&frame[..cut]), Some(Err(DecodeError::Malformed(_)))),
                "cut at {cut}"
            );
        }
        let mut long = frame.clone();
        long.push(0);
        assert_eq!(view_chunk(&long), Some(Err(DecodeError::Trailing(1))));
    }

    #[test]
    fn given_over_long_varints_in_a_chunk_header_then_non_canonical() {
        let id = MessageId([3; 16]);
        let frame = encode(&chunk(id, 9, vec![1, 2, 3])).expect("encode");
        assert_eq!(frame[..1], [6]);
        assert_eq!(frame[17..], [9, 3, 1, 2, 3]);
        let mut kind = vec![0x86, 0];
        kind.extend_from_slice(&frame[1..]);
        let mut offset = frame[..17].to_vec();
        offset.extend([0x89, 0, 3, 1, 2, 3]);
        let mut len = frame[..17].to_vec();
        len.extend([9, 0x83, 0, 1, 2, 3]);
        for bad in [kind, offset, len] {
            assert_eq!(view_chunk(&bad), Some(Err(DecodeError::NonCanonical)), "{bad:02x?}");
            assert_eq!(decode::<PeerMessage>(&bad), Err(DecodeError::NonCanonical), "{bad:02x?}");
        }
    }

    #[test]
    fn given_chunk_too_large_for_a_frame_then_header_refused() {
        let mut out = [0u8; MAX_CHUNK_HEADER_LEN];
        for len in [MAX_PLAINTEXT_LEN, usize::MAX] {
            assert!(matches!(
                write_chunk_header(&mut out, MessageId::new(), 0, len),
                Err(EncodeError::TooLarge(_))
            ));
        }
    }
}
