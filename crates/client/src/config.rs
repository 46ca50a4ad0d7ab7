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
    /// The protocol versions to speak: `whatsap2p_proto::version::SPOKEN`, or another range only to
    /// test how others meet a client older or newer than they are.
    pub versions: Versions,
}

impl ClientConfig {
    /// Default for [`ClientConfig::max_file_size`]: 2 GiB.
    pub const DEFAULT_MAX_FILE_SIZE: u64 = 2 * 1024 * 1024 * 1024;
}
