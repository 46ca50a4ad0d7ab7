//! The profile folder: one per number, holding the identity keys, the database and a lock that
//! keeps two processes from using it at once.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::PublicKey;

use crate::ClientError;

/// The user's keys: the Ed25519 identity that owns the number, and the Noise static key that the
/// identity signs for in every handshake.
#[derive(Clone)]
pub struct Identity {
    /// Signs identity proofs (and later group changes).
    pub signing: SigningKey,
    /// The Noise static key.
    pub noise: StaticKeypair,
}

impl Identity {
    /// The public identity key, as the directory and contacts know it.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }
}

/// An open, locked profile folder.
pub struct Profile {
    /// The folder.
    pub dir: PathBuf,
    /// The keys.
    pub identity: Identity,
    // Held open for the lock's sake; released when the profile is dropped.
    _lock: File,
}

impl Profile {
    /// Opens `dir` (creating it), takes its lock and loads or creates the identity.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClientError::Profile { path, source }
        };
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(ClientError::ProfileLocked(dir.to_path_buf()));
        }
        let identity = load_or_create_identity(&dir.join("identity.key"))?;
        Ok(Self { dir: dir.to_path_buf(), identity, _lock: lock })
    }
}

fn load_or_create_identity(path: &Path) -> Result<Identity, ClientError> {
    let err = |source| ClientError::Profile { path: path.to_path_buf(), source };
    match std::fs::read(path) {
        Ok(bytes) => {
            let (Some(seed), Some(noise)) = (bytes.get(..32), bytes.get(32..64)) else {
                return Err(ClientError::BadIdentity(path.to_path_buf()));
            };
            let seed: [u8; 32] = seed.try_into().map_err(|_| ClientError::BadIdentity(path.to_path_buf()))?;
            let noise = StaticKeypair::from_private(noise)
                .map_err(|_| ClientError::BadIdentity(path.to_path_buf()))?;
            Ok(Identity { signing: SigningKey::from_bytes(&seed), noise })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signing = SigningKey::generate(&mut rand::rngs::OsRng);
            let noise = StaticKeypair::generate().map_err(|e| err(std::io::Error::other(e.to_string())))?;
            let mut bytes = signing.to_bytes().to_vec();
            bytes.extend_from_slice(noise.private());
            // Write to a temporary name, then rename: a crash never leaves half a key.
            let tmp = path.with_extension("tmp");
            let mut opts = File::options();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp).map_err(err)?;
            f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)?;
            Ok(Identity { signing, noise })
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_profile_then_identity_persists_and_second_open_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = {
            let p = Profile::open(dir.path()).expect("open");
            assert!(matches!(Profile::open(dir.path()), Err(ClientError::ProfileLocked(_))));
            p.identity.public()
        };
        let p = Profile::open(dir.path()).expect("reopen");
        assert_eq!(p.identity.public(), key);
    }

    #[test]
    fn given_damaged_identity_file_then_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("identity.key"), b"short").expect("write");
        assert!(matches!(Profile::open(dir.path()), Err(ClientError::BadIdentity(_))));
    }
}
