//! The server's Noise static key, created once under the data dir and reused, so clients that
//! pinned it keep trusting this server across restarts.

use std::io::Write;
use std::path::Path;

use whatsap2p_link::StaticKeypair;

use crate::ServerError;

/// Loads `dir/server.key`, creating it (mode 0600) on first start.
pub fn load_or_create(dir: &Path) -> Result<StaticKeypair, ServerError> {
    let path = dir.join("server.key");
    let io_err = |source| ServerError::DataDir { path: path.clone(), source };
    match std::fs::read(&path) {
        Ok(bytes) => StaticKeypair::from_private(&bytes)
            .map_err(|_| ServerError::Key(format!("{} is not a 32-byte key", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = StaticKeypair::generate().map_err(|e| ServerError::Key(e.to_string()))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&path).map_err(io_err)?;
            f.write_all(key.private()).and_then(|_| f.sync_all()).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}
