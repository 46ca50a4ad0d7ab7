//! How byte fields look in text formats (JSON: the test vectors in `docs/protocol-vectors.json`):
//! hex strings instead of arrays of numbers. Binary formats (postcard, the wire) are untouched:
//! a fixed array stays its raw bytes, a byte string its length and bytes.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// A fixed-size byte array: `N` raw bytes in binary formats, `2N` hex digits in text formats.
pub mod hex_array {
    use super::*;

    /// Serializes `bytes`.
    pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.serialize_str(&hex::encode(bytes));
        }
        let mut t = s.serialize_tuple(N)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }

    /// Deserializes `N` bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        if d.is_human_readable() {
            let text = <String as serde::Deserialize>::deserialize(d)?;
            let mut out = [0u8; N];
            hex::decode_to_slice(&text, &mut out).map_err(de::Error::custom)?;
            return Ok(out);
        }
        d.deserialize_tuple(N, Bytes::<N>(PhantomData))
    }

    struct Bytes<const N: usize>(PhantomData<[u8; N]>);

    impl<'de, const N: usize> Visitor<'de> for Bytes<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
}

/// A byte string: its length and bytes in binary formats (as `serde_bytes` writes it), hex in text
/// formats.
pub mod hex_bytes {
    use super::*;

    /// Serializes `bytes`.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.serialize_str(&hex::encode(bytes));
        }
        s.serialize_bytes(bytes)
    }

    /// Deserializes a byte string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = <String as serde::Deserialize>::deserialize(d)?;
            return hex::decode(text).map_err(de::Error::custom);
        }
        serde_bytes::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Both {
        #[serde(with = "super::hex_array")]
        fixed: [u8; 3],
        #[serde(with = "super::hex_bytes")]
        bytes: Vec<u8>,
    }

    #[test]
    fn given_byte_fields_then_raw_on_the_wire_and_hex_in_json() {
        let v = Both { fixed: [1, 2, 0xff], bytes: vec![0xab, 0xcd] };
        let wire = postcard::to_allocvec(&v).expect("postcard");
        assert_eq!(wire, [1, 2, 0xff, 2, 0xab, 0xcd]);
        assert_eq!(postcard::from_bytes::<Both>(&wire).expect("postcard"), v);
        let json = serde_json::to_string(&v).expect("json");
        assert_eq!(json, r#"{"fixed":"0102ff","bytes":"abcd"}"#);
        assert_eq!(serde_json::from_str::<Both>(&json).expect("json"), v);
        assert!(serde_json::from_str::<Both>(r#"{"fixed":"0102","bytes":""}"#).is_err());
    }
}
