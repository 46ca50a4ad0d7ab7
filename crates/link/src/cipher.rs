//! ChaCha20-Poly1305 for snow: ring's code, with only the 32-byte key kept between messages.
//!
//! snow's ring resolver keeps a `ring::aead::LessSafeKey` per cipher state, 544 bytes each (ring
//! sizes the key for AES-GCM's schedule), and a session keeps two for its whole life: a kilobyte of
//! every held directory session. A ChaCha20 key needs no schedule, so building ring's key for each
//! message costs a copy of 32 bytes, nothing measurable beside the encryption itself. Everything
//! else (hashes, randomness, X25519) still comes from snow's ring-accelerated resolvers, as before.

use ring::aead::{self, LessSafeKey, UnboundKey};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// Length of a ChaCha20-Poly1305 key.
const KEY_LEN: usize = 32;
/// Bytes the AEAD tag adds.
const TAG_LEN: usize = 16;

/// snow's resolvers (ring first, then snow's own), with [`CompactChaCha`] as the cipher.
pub(crate) fn resolver() -> BoxedCryptoResolver {
    Box::new(FallbackResolver::new(
        Box::new(CompactResolver),
        Box::new(FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver))),
    ))
}

/// Resolves only the ChaCha20-Poly1305 cipher; the fallbacks do the rest.
struct CompactResolver;

impl CryptoResolver for CompactResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        None
    }

    fn resolve_dh(&self, _: &DHChoice) -> Option<Box<dyn Dh>> {
        None
    }

    fn resolve_hash(&self, _: &HashChoice) -> Option<Box<dyn Hash>> {
        None
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => Some(Box::new(CompactChaCha { key: [0; KEY_LEN] })),
            _ => None,
        }
    }
}

/// ChaCha20-Poly1305 as the Noise spec words it (nonce: 4 zero bytes, then the counter little
/// endian), byte for byte what snow's ring cipher produces.
struct CompactChaCha {
    key: [u8; KEY_LEN],
}

impl CompactChaCha {
    fn key(&self) -> LessSafeKey {
        // Cannot fail: the only check is the key length, and the key is always KEY_LEN bytes.
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, &self.key)
            .unwrap_or_else(|_| unreachable!("a ChaCha20 key is 32 bytes"));
        LessSafeKey::new(unbound)
    }

    fn nonce(n: u64) -> aead::Nonce {
        let mut bytes = [0u8; aead::NONCE_LEN];
        bytes[4..].copy_from_slice(&n.to_le_bytes());
        aead::Nonce::assume_unique_for_key(bytes)
    }
}

impl Cipher for CompactChaCha {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8]) {
        // snow always hands over KEY_LEN bytes (its CIPHERKEYLEN); copy what fits regardless.
        let n = key.len().min(KEY_LEN);
        self.key = [0; KEY_LEN];
        self.key[..n].copy_from_slice(&key[..n]);
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        // snow sizes `out` for the plaintext and its tag before calling.
        let (body, rest) = out.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        match self.key().seal_in_place_separate_tag(Self::nonce(nonce), aead::Aad::from(authtext), body) {
            Ok(tag) => {
                rest[..TAG_LEN].copy_from_slice(tag.as_ref());
                plaintext.len() + TAG_LEN
            }
            // Only for a message over ring's 256 GiB limit, far beyond a 64 KiB frame.
            Err(_) => unreachable!("ChaCha20-Poly1305 refused a Noise message"),
        }
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let key = self.key();
        let open = |in_out: &mut [u8]| -> Result<usize, snow::Error> {
            key.open_in_place(Self::nonce(nonce), aead::Aad::from(authtext), in_out)
                .map(|plain| plain.len())
                .map_err(|_| snow::Error::Decrypt)
        };
        if let Some(in_out) = out.get_mut(..ciphertext.len()) {
            in_out.copy_from_slice(ciphertext);
            open(in_out)
        } else {
            // `out` has room for the plaintext only: open a copy, as snow's ring cipher does.
            let mut in_out = ciphertext.to_vec();
            let n = open(&mut in_out)?;
            let plain = in_out.get(..n).ok_or(snow::Error::Decrypt)?;
            out.get_mut(..n).ok_or(snow::Error::Decrypt)?.copy_from_slice(plain);
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_same_key_and_nonce_then_same_bytes_as_snow_ring_cipher() {
        let ring = RingResolver.resolve_cipher(&CipherChoice::ChaChaPoly);
        let compact = CompactResolver.resolve_cipher(&CipherChoice::ChaChaPoly);
        let (Some(mut ring), Some(mut compact)) = (ring, compact) else { panic!("no cipher") };
        let key = [7u8; KEY_LEN];
        ring.set(&key);
        compact.set(&key);
        let plain = b"the same bytes either way";
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        let n = ring.encrypt(42, b"ad", plain, &mut a);
        assert_eq!(compact.encrypt(42, b"ad", plain, &mut b), n);
        assert_eq!(a[..n], b[..n]);
        let mut back = [0u8; 64];
        assert_eq!(compact.decrypt(42, b"ad", &a[..n], &mut back).expect("open"), plain.len());
        assert_eq!(&back[..plain.len()], plain);
        let mut short = [0u8; 25];
        assert_eq!(compact.decrypt(42, b"ad", &a[..n], &mut short).expect("open"), plain.len());
        assert!(compact.decrypt(43, b"ad", &a[..n], &mut back).is_err());
        a[0] ^= 1;
        assert!(compact.decrypt(42, b"ad", &a[..n], &mut back).is_err());
    }
}
