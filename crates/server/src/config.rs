//! Limits and timeouts of the directory, each with its reason.

use std::time::Duration;

use whatsap2p_proto::version::{self, Versions};

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// A session with no frame for this long is considered dead and its user offline. Clients send
    /// a heartbeat every third of it.
    pub heartbeat_timeout: Duration,
    /// A connection must finish the Noise handshake within this time, or it is dropped.
    pub handshake_timeout: Duration,
    /// Most sessions open at once. A process may hold 20 000 descriptors here; keep room for the
    /// listener, the database and logs.
    pub max_connections: usize,
    /// The protocol versions the directory speaks ([`version::SPOKEN`]; another range only to test
    /// how clients meet a directory older or newer than they are).
    pub versions: Versions,
}

impl Config {
    /// Default heartbeat timeout.
    pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default handshake timeout.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default connection cap.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 19_000;
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Self::DEFAULT_HEARTBEAT_TIMEOUT,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            versions: version::SPOKEN,
        }
    }
}
