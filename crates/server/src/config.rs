//! Limits and timeouts of the directory, each with its reason.

use std::net::SocketAddr;
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
    /// The relay clients are told to use (`Reachability`, `RelayOffer`); `None`: no relay, and
    /// `RelayRequest`s get an error. An unspecified IP (`0.0.0.0:7001`) means "this host, at the
    /// address the client reached the directory at": the relay running in the directory's process.
    pub relay: Option<SocketAddr>,
    /// How long a relay ticket is valid: both sides must reach the relay within it.
    pub ticket_lifetime: Duration,
    /// The protocol versions the directory speaks ([`version::SPOKEN`]; another range only to test
    /// how clients meet a directory older or newer than they are).
    pub versions: Versions,
    /// What one source address or one number may do (see [`Limits`]).
    pub limits: Limits,
}

impl Config {
    /// Default heartbeat timeout.
    pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default handshake timeout.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default connection cap.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 19_000;
    /// Default ticket lifetime: the offer goes to both sides at once, so both connect within a
    /// round trip or two; 30 s leaves room for a slow network, and a ticket that leaked is soon
    /// worthless.
    pub const DEFAULT_TICKET_LIFETIME: Duration = Duration::from_secs(30);
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Self::DEFAULT_HEARTBEAT_TIMEOUT,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            relay: None,
            ticket_lifetime: Self::DEFAULT_TICKET_LIFETIME,
            versions: version::SPOKEN,
            limits: Limits::default(),
        }
    }
}

/// Limits per source address and per number, against one address filling the directory, squatting
/// numbers or enumerating who is online (issue 16). Each holds per instance: a directory of N
/// instances behind a balancer lets a source up to N times as much (see `docs/operators.md`).
///
/// A source address is an IPv4 address, or an IPv6 /64 (one subscriber's prefix: counting each of its
/// 2^64 addresses apart would make the limits free to evade). The defaults are sized for a
/// carrier-grade NAT, which puts hundreds to a few thousand subscribers behind one IPv4 address: what
/// one address may do is what a thousand users of it do in a busy day, while one user never meets a
/// limit of its number. `docs/security.md` has what they let an attacker do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections from one source address at once, in their handshake or in session. A
    /// thousand users behind one NAT fit; one address alone can no longer fill the instance.
    pub sessions_per_address: usize,
    /// Most handshakes in progress from one source address. A handshake takes about a millisecond,
    /// so 64 at once serves a NAT whose thousand users all reconnect after a restart (the others are
    /// refused and retry with backoff), while connections that never finish their handshake hold at
    /// most 64 slots of that address for the handshake timeout.
    pub handshakes_per_address: usize,
    /// Lookups (and newly watched numbers) per second of one number; bursts of a minute's worth.
    pub lookups_per_second: u32,
    /// The same from one source address, all its sessions together.
    pub address_lookups_per_second: u32,
    /// Distinct numbers one number may look up or watch per day. Looking up the same numbers again
    /// (contacts, every time a link opens) costs nothing of it.
    pub distinct_lookups_per_day: u32,
    /// The same from one source address, all its numbers together: the limit that holds against an
    /// enumerator, who makes up a new number for each session.
    pub address_distinct_lookups_per_day: u32,
    /// Registrations of numbers not bound before, from one source address per day (a burst of this
    /// many, then one every day / this). A user registers a new number once.
    pub new_numbers_per_address_per_day: u32,
    /// Most (source, number) pairs kept to count distinct lookups, about 24 bytes each: bounds the
    /// memory of that count whatever the number of sources. When full, the sources that looked up
    /// the fewest numbers are forgotten first.
    pub tracked_lookups: usize,
}

impl Limits {
    /// No limit per address or per number: for tests and benchmarks in which one loopback address
    /// stands for thousands of users (in the field each would have an address of its own).
    pub fn off() -> Self {
        Self {
            sessions_per_address: usize::MAX,
            handshakes_per_address: usize::MAX,
            lookups_per_second: 0,
            address_lookups_per_second: 0,
            distinct_lookups_per_day: 0,
            address_distinct_lookups_per_day: 0,
            new_numbers_per_address_per_day: 0,
            ..Self::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions_per_address: 1_000,
            handshakes_per_address: 64,
            lookups_per_second: 20,
            address_lookups_per_second: 1_000,
            distinct_lookups_per_day: 1_000,
            address_distinct_lookups_per_day: 20_000,
            new_numbers_per_address_per_day: 100,
            tracked_lookups: 2_000_000,
        }
    }
}
