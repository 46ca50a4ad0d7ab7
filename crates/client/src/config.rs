//! How a client is configured: where it keeps its profile, whom it talks to, and how long each kind
//! of wait may take.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use whatsap2p_proto::version::Versions;
use whatsap2p_proto::Number;

pub use crate::directory::ServerAddr;

/// Timeouts of the client, each bounding one kind of wait.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TCP connect to the directory or a peer.
    pub connect: Duration,
    /// A whole Noise handshake.
    pub handshake: Duration,
    /// A directory request's answer.
    pub request: Duration,
    /// Interval between heartbeats to the directory (its timeout is three times this by default).
    pub heartbeat: Duration,
    /// A peer link with no traffic for this long is closed (it is redialed when needed).
    pub link_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
            request: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            link_idle: Duration::from_secs(600),
        }
    }
}

/// What incoming files may take of the disk (see `transfer/partials.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageLimits {
    /// Most bytes the partial files of incoming transfers (kept to resume) take together, each
    /// counted at the size offered; the oldest are given up to make room, and an offer that does
    /// not fit beside the transfers running waits (the sender retries later).
    pub max_partial_bytes: u64,
    /// A partial file not written to for this long is deleted (when the client starts, and every
    /// `transfer::SWEEP_EVERY` while it runs).
    pub partial_expiry: Duration,
    /// An incoming file is refused for now (the sender retries later, told why) when receiving it,
    /// and the other files being received, would leave less than this many bytes free on the
    /// downloads folder's disk.
    pub min_free_space: u64,
}

impl StorageLimits {
    /// Default for [`StorageLimits::max_partial_bytes`]: 4 GiB, two files of the largest default
    /// size.
    pub const DEFAULT_MAX_PARTIAL_BYTES: u64 = 4 * 1024 * 1024 * 1024;
    /// Default for [`StorageLimits::partial_expiry`]: 3 days.
    pub const DEFAULT_PARTIAL_EXPIRY: Duration = Duration::from_secs(3 * 24 * 3600);
    /// Default for [`StorageLimits::min_free_space`]: 1 GiB.
    pub const DEFAULT_MIN_FREE_SPACE: u64 = 1024 * 1024 * 1024;
}

impl Default for StorageLimits {
    fn default() -> Self {
        Self {
            max_partial_bytes: Self::DEFAULT_MAX_PARTIAL_BYTES,
            partial_expiry: Self::DEFAULT_PARTIAL_EXPIRY,
            min_free_space: Self::DEFAULT_MIN_FREE_SPACE,
        }
    }
}

/// How to start a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Our number.
    pub number: Number,
    /// The profile folder.
    pub profile_dir: PathBuf,
    /// The directory's addresses, in the order to try them: one or more addresses of one
    /// directory (all its instances share one key). At least one.
    pub servers: Vec<ServerAddr>,
    /// Where to accept peers. An unspecified IP is published as the address the server sees.
    pub listen: SocketAddr,
    /// The UDP port (QUIC, probes, punches), on the IP of `listen`; 0 lets the system choose.
    pub listen_udp: u16,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Where received files are saved.
    pub downloads: PathBuf,
    /// Largest file accepted automatically from a contact.
    pub max_file_size: u64,
    /// What incoming files may take of the disk.
    pub storage: StorageLimits,
    /// The protocol versions to speak: `whatsap2p_proto::version::SPOKEN`, or another range only to
    /// test how others meet a client older or newer than they are.
    pub versions: Versions,
}

impl ClientConfig {
    /// Default for [`ClientConfig::max_file_size`]: 2 GiB.
    pub const DEFAULT_MAX_FILE_SIZE: u64 = 2 * 1024 * 1024 * 1024;
}
