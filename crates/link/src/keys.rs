//! Noise static keypairs (X25519).

use whatsap2p_proto::handshake::NOISE_PARAMS;
use whatsap2p_proto::PublicKey;

/// A Noise static keypair. The private half is never printed.
#[derive(Clone)]
pub struct StaticKeypair {
    private: [u8; 32],
    public: PublicKey,
}

impl StaticKeypair {
    /// A fresh random keypair.
    pub fn generate() -> Result<Self, snow::Error> {
        let params = NOISE_PARAMS.parse()?;
        let kp = snow::Builder::new(params).generate_keypair()?;
        Self::from_private(&kp.private)
    }

    /// Rebuilds the keypair from its stored private half.
    pub fn from_private(private: &[u8]) -> Result<Self, snow::Error> {
        let private: [u8; 32] = private.try_into().map_err(|_| snow::Error::Input)?;
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private));
        Ok(Self { private, public: PublicKey(public.to_bytes()) })
    }

    /// The private half, for storing and for building handshakes.
    pub fn private(&self) -> &[u8; 32] {
        &self.private
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticKeypair({})", self.public)
    }
}
