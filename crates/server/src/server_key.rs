//! The server's Noise static key, created once and reused, so clients that pinned it keep trusting
//! this server across restarts. Every instance of one directory uses the same key (one file, copied
//! or shared), so a client pins one key whichever instance it reaches.

use std::io::Write;
use std::path::Path;

use whatsap2p_link::StaticKeypair;

use crate::ServerError;

/// Loads `dir/server.key`, creating it (mode 0600) on first start.
pub fn load_or_create(dir: &Path) -> Result<StaticKeypair, ServerError> {
    load_or_create_at(&dir.join("server.key"))
}

/// Loads the key at `path` (32 raw bytes), creating it (mode 0600) if there is none. Two instances
/// starting at once on a shared file end with the same key: only one creates it.
pub fn load_or_create_at(path: &Path) -> Result<StaticKeypair, ServerError> {
    let io_err = |source| ServerError::DataDir { path: path.to_owned(), source };
    let read = |bytes: Vec<u8>| {
        StaticKeypair::from_private(&bytes)
            .map_err(|_| ServerError::Key(format!("{} is not a 32-byte key", path.display())))
    };
    match std::fs::read(path) {
        Ok(bytes) => read(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = StaticKeypair::generate().map_err(|e| ServerError::Key(e.to_string()))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = match opts.open(path) {
                Ok(f) => f,
                // Another instance made it first: use that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return read(std::fs::read(path).map_err(io_err)?);
                }
                Err(e) => return Err(io_err(e)),
            };
            f.write_all(key.private()).and_then(|_| f.sync_all()).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}
