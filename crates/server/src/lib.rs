//! The whatsap2p directory server.
//!
//! It keeps, in memory and only while a session lasts, where each online user listens; and, on disk,
//! which Ed25519 identity key owns each number, so nobody can take over a number they do not own.
//! It never sees a message: clients talk to each other directly.
//!
//! # Layout
//! - [`config`]: limits and timeouts, with defaults.
//! - [`presence`]: the [`presence::PresenceStore`] trait and its in-memory implementation.
//! - [`identities`]: the [`identities::IdentityStore`] trait (number → key bindings) and its SQLite
//!   implementation.
//! - [`server_key`]: the server's Noise static key, kept under the data dir so clients can pin it.
//! - [`session`]: one client's session, from handshake to logout.
//! - [`watchers`]: presence subscriptions and pushes.
//! - [`run`] (here): the accept loop and graceful shutdown.

#![forbid(unsafe_code)]

pub mod config;
pub mod identities;
pub mod presence;
pub mod server_key;
pub mod session;
pub mod watchers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use whatsap2p_link::StaticKeypair;

pub use config::Config;
use identities::IdentityStore;
use presence::PresenceStore;

/// Errors that stop the server (never caused by a client).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory or a file in it could not be used.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The path involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The identity database failed.
    #[error("identity store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The server key could not be made or read.
    #[error("server key: {0}")]
    Key(String),
    /// Accepting connections failed.
    #[error("accept: {0}")]
    Accept(std::io::Error),
}

/// What every session shares: the stores, the server key and the limits.
pub struct Directory {
    /// Who is online where. Shared by all sessions; the store does its own locking.
    pub presence: Arc<dyn PresenceStore>,
    /// Number → identity key bindings, durable.
    pub identities: Arc<dyn IdentityStore>,
    /// The server's Noise static key.
    pub key: StaticKeypair,
    /// Limits and timeouts.
    pub config: Config,
    /// Presence subscriptions of this process's sessions.
    pub watchers: watchers::Watchers,
}

impl Directory {
    /// A directory over these stores.
    pub fn new(
        presence: Arc<dyn PresenceStore>,
        identities: Arc<dyn IdentityStore>,
        key: StaticKeypair,
        config: Config,
    ) -> Self {
        Self { presence, identities, key, config, watchers: Default::default() }
    }
}

/// Serves clients on `listener` until `shutdown` completes, then closes every session and returns.
pub async fn run(
    listener: TcpListener,
    directory: Directory,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let directory = Arc::new(directory);
    // Caps open sessions below the process's file limit; a connection over the cap is closed at once.
    let permits = Arc::new(Semaphore::new(directory.config.max_connections));
    let cancel = CancellationToken::new();
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Running out of descriptors is transient: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    warn!("Refusing {}/{}: {} sessions open", addr.ip(), addr.port(), directory.config.max_connections);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                sessions.spawn(session::serve(stream, addr, directory.clone(), cancel.child_token(), permit));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    info!("Shutting down: closing {} sessions", sessions.len());
    cancel.cancel();
    while sessions.join_next().await.is_some() {}
    Ok(())
}
