//! Public keys and signatures as they travel on the wire and appear to users (hex).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 32-byte public key: an Ed25519 identity key or a Noise (X25519) static key. On the wire its
/// 32 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublicKey(#[serde(with = "crate::text::hex_array")] pub [u8; 32]);

impl PublicKey {
    /// Lower-case hex of the whole key.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(Self(out))
    }

    /// A short form for people to compare: the first 16 bytes in groups of four hex digits.
    pub fn fingerprint(&self) -> String {
        let hex = hex::encode(&self.0[..16]);
        hex.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl TryFrom<&[u8]> for PublicKey {
    type Error = std::array::TryFromSliceError;
    fn try_from(b: &[u8]) -> Result<Self, Self::Error> {
        Ok(Self(b.try_into()?))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// A 64-byte Ed25519 signature, on the wire its 64 raw bytes. Kept as two halves, the way serde
/// handled arrays when it was written; the bytes are the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 32], pub [u8; 32]);

impl Serialize for SignatureBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::text::hex_array::serialize(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::text::hex_array::deserialize::<D, 64>(d).map(Self::from_bytes)
    }
}

impl SignatureBytes {
    /// Splits a signature into its wire form.
    pub fn from_bytes(b: [u8; 64]) -> Self {
        let mut lo = [0u8; 32];
        let mut hi = [0u8; 32];
        lo.copy_from_slice(&b[..32]);
        hi.copy_from_slice(&b[32..]);
        Self(lo, hi)
    }

    /// Joins the halves back.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&self.0);
        b[32..].copy_from_slice(&self.1);
        b
    }
}

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_key_then_hex_round_trips_and_fingerprint_is_grouped() {
        let k = PublicKey([0xab; 32]);
        assert_eq!(PublicKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(k.fingerprint(), "abab:abab:abab:abab:abab:abab:abab:abab");
        assert_eq!(PublicKey::from_hex("zz"), None);
    }
}
