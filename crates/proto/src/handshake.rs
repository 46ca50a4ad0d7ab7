//! What travels inside the Noise handshake, and the proof that binds an identity to a session.
//!
//! Every connection, client to directory and client to client, runs `Noise_XX`:
//!
//! ```text
//! -> e                 payload: Hello (plaintext: versions and purpose)
//! <- e, ee, s, es      payload: (HelloReply, version 3) ServerHello from the directory,
//!                      IdentityProof from a peer
//! -> s, se             payload: IdentityProof of the initiator
//! ```
//!
//! An [`IdentityProof`] is an Ed25519 signature, by the user's identity key, over the Noise
//! handshake hash `h` as it is once the previous handshake message is written (or read), before
//! any token of the message that carries the proof; the sender's Noise static key; and its number
//! ([`signed_bytes`]). The handshake hash includes the other side's fresh ephemeral key, so the signature is a
//! fresh challenge answered: it cannot be replayed into another session, and it ties the number and
//! identity to the Noise static key that the rest of the handshake authenticates.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Number, PublicKey, SignatureBytes};

/// Noise protocol name used on every connection.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_AESGCM_BLAKE2s";

/// Prologue mixed into every handshake, so a handshake meant for another protocol cannot complete.
pub const PROLOGUE: &[u8] = b"whatsap2p";

/// Domain separation for identity proofs.
const PROOF_CONTEXT: &[u8] = b"whatsap2p/1 identity proof";

/// What the initiator wants from the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Purpose {
    /// A session with the directory server.
    Directory,
    /// A direct link between two clients.
    Peer,
}

/// First handshake payload, in the form version 2 sends (travels in clear: it carries nothing
/// secret). Version 3 appends the lowest version the initiator speaks: see [`crate::version`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The initiator's version (its highest, in the v3 form).
    pub version: u16,
    /// Directory session or peer link.
    pub purpose: Purpose,
}

/// The directory's answer in the second handshake message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The version of the session: the agreed one (after a v3 Hello), 2 after a v2 Hello (or the
    /// server's highest, when it no longer speaks 2; it then closes).
    pub version: u16,
    /// A session silent for this long is dropped; clients send heartbeats well within it.
    pub heartbeat_timeout_ms: u64,
}

/// A signed claim: "the Noise static key of this session belongs to `identity`, which owns `number`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProof {
    /// The number the signer claims.
    pub number: Number,
    /// The signer's Ed25519 identity key.
    pub identity: PublicKey,
    /// Signature over the context, the handshake hash, the Noise static key and the number.
    pub signature: SignatureBytes,
}

/// Why an [`IdentityProof`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The identity bytes are not a valid Ed25519 point.
    #[error("identity key is not a valid Ed25519 key")]
    BadKey,
    /// The signature does not verify for this session.
    #[error("identity proof signature does not verify")]
    BadSignature,
}

/// The exact bytes an [`IdentityProof`] signs: the context `whatsap2p/1 identity proof` (26 bytes of
/// ASCII), the length of `handshake_hash` as a big-endian u16, the hash, the signer's 32-byte Noise
/// static public key, and the number's ASCII text (no length, nothing after it).
pub fn signed_bytes(handshake_hash: &[u8], noise_static: &[u8], number: &Number) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROOF_CONTEXT.len() + handshake_hash.len() + 32 + 16);
    m.extend_from_slice(PROOF_CONTEXT);
    m.extend_from_slice(&(handshake_hash.len() as u16).to_be_bytes());
    m.extend_from_slice(handshake_hash);
    m.extend_from_slice(noise_static);
    m.extend_from_slice(number.as_str().as_bytes());
    m
}

impl IdentityProof {
    /// Signs a proof for this session.
    pub fn sign(key: &SigningKey, number: Number, handshake_hash: &[u8], noise_static: &[u8]) -> Self {
        let sig = key.sign(&signed_bytes(handshake_hash, noise_static, &number));
        Self {
            number,
            identity: PublicKey(key.verifying_key().to_bytes()),
            signature: SignatureBytes::from_bytes(sig.to_bytes()),
        }
    }

    /// Checks the proof against the handshake hash and the Noise static key this session saw.
    pub fn verify(&self, handshake_hash: &[u8], noise_static: &[u8]) -> Result<(), ProofError> {
        let vk = VerifyingKey::from_bytes(&self.identity.0).map_err(|_| ProofError::BadKey)?;
        let sig = Signature::from_bytes(&self.signature.to_bytes());
        vk.verify_strict(&signed_bytes(handshake_hash, noise_static, &self.number), &sig)
            .map_err(|_| ProofError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    #[test]
    fn given_proof_for_session_then_it_verifies_only_there() {
        let k = key();
        let n = Number::new("123").expect("number");
        let p = IdentityProof::sign(&k, n, b"hash-1", &[7; 32]);
        assert_eq!(p.verify(b"hash-1", &[7; 32]), Ok(()));
        assert_eq!(p.verify(b"hash-2", &[7; 32]), Err(ProofError::BadSignature));
        assert_eq!(p.verify(b"hash-1", &[8; 32]), Err(ProofError::BadSignature));
    }

    #[test]
    fn given_proof_with_swapped_number_then_refused() {
        let k = key();
        let mut p = IdentityProof::sign(&k, Number::new("123").expect("n"), b"h", &[1; 32]);
        p.number = Number::new("456").expect("n");
        assert_eq!(p.verify(b"h", &[1; 32]), Err(ProofError::BadSignature));
    }

    #[test]
    fn given_proof_signed_by_other_key_then_refused() {
        let mut p = IdentityProof::sign(&key(), Number::new("123").expect("n"), b"h", &[1; 32]);
        p.identity = PublicKey(key().verifying_key().to_bytes());
        assert_eq!(p.verify(b"h", &[1; 32]), Err(ProofError::BadSignature));
    }
}
