//! The whatsap2p directory server.
//!
//! It keeps, only while a session lasts, where each online user listens; and, durably, which Ed25519
//! identity key owns each number, so nobody can take over a number they do not own. It never sees a
//! message: clients talk to each other directly.
//!
//! One instance keeps both in itself (presence in memory, bindings in SQLite). Several instances
//! pointing at one Redis ([`redis_store`]) are one directory: a number registered on any of them is
//! found, watched and replaced through all of them.
//!
//! # Layout
//! - [`config`]: limits and timeouts, with defaults.
//! - [`sources`]: connections and handshakes per source address.
//! - [`limits`]: request limits per number and per address (lookups, new numbers).
//! - [`refusals`]: lines about refusals within a budget, the rest summed up.
//! - [`store`]: what the stores share: their error type, the owner of a presence entry.
//! - [`presence`]: the [`presence::PresenceStore`] trait, presence changes, the in-memory store.
//! - [`identities`]: the [`identities::IdentityStore`] trait (number → key bindings) and its SQLite
//!   implementation.
//! - [`redis_store`]: both stores in Redis, shared by instances, with cross-instance changes.
//! - [`server_key`]: the server's Noise static key, kept under the data dir so clients can pin it.
//! - [`session`]: one client's session, from handshake to logout; `session::nat` its version 3
//!   requests (announce, introduce, relay).
//! - [`probes`]: the UDP port: probe tokens of live sessions, and their observed addresses.
//! - [`meetings`]: the version 3 sessions that may be introduced, and how to push them a message.
//! - [`roster`]: this instance's sessions by number, to end one that another replaced.
//! - [`watchers`]: presence subscriptions and pushes.
//! - [`metrics`]: counters for operators, and their HTTP endpoint.
//! - `testing` (feature `test-utils`): a redis-server of a test's own.
//! - [`run`] (here): the accept loop, the UDP probe port, the feed of changes from other instances,
//!   graceful shutdown.
//!
//! The relay (`whatsap2p_relay`) is a crate of its own: the directory only seals its tickets and
//! tells clients where it is ([`Config::relay`]); the binary runs it beside the directory.

#![forbid(unsafe_code)]

pub mod config;
pub mod identities;
pub mod limits;
pub mod mailbox;
pub mod meetings;
pub mod metrics;
pub mod presence;
pub mod probes;
pub mod redis_store;
pub mod refusals;
pub mod roster;
pub mod server_key;
pub mod session;
pub mod sources;
pub mod store;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod watchers;

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::directory::{Location, ServerToClient};
use whatsap2p_proto::{Number, PublicKey};
use whatsap2p_relay::RelayKeys;

pub use config::Config;
use identities::IdentityStore;
use metrics::{Metrics, Refusal};
use presence::{Change, Feed, PresenceStore};
pub use store::StoreError;

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
    /// The shared store could not be set up.
    #[error("redis store: {0}")]
    Redis(#[from] redis_store::SetupError),
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
    /// The server's Noise static key. Every instance of one directory has the same.
    pub key: StaticKeypair,
    /// Limits and timeouts.
    pub config: Config,
    /// Presence subscriptions of this process's sessions.
    pub watchers: watchers::Watchers,
    /// This process's sessions, by number.
    pub roster: roster::Roster,
    /// This instance's id in presence entries: random at each start, so a restarted instance never
    /// takes an entry of its previous life for its own.
    pub instance: u64,
    /// Counters for operators.
    pub metrics: Arc<Metrics>,
    /// Connections per source address.
    pub sources: Arc<sources::Sources>,
    /// Connections open, below `config.max_connections` (the process's file limit).
    pub connections: Arc<Semaphore>,
    /// Lookups and registrations per number and per address.
    pub limits: limits::RequestLimits,
    /// The budget of log lines about refusals.
    pub refusals: refusals::RefusalLog,
    /// Probe tokens of this instance's sessions, and what their probes showed.
    pub probes: Arc<probes::Probes>,
    /// This instance's version 3 sessions, for introductions and relay offers.
    pub meetings: meetings::Meetings,
    /// Seals relay tickets and makes probe tokens (derived from `key`, so the relays check them).
    pub relay_keys: RelayKeys,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Changes from other instances, taken by [`run`] (shared stores only). In a lock only so the
    /// directory is `Sync` although the feed's upkeep future is not.
    feed: std::sync::Mutex<Option<Feed>>,
    /// Where to serve metrics, taken by [`run`].
    metrics_listener: Option<TcpListener>,
    /// The UDP port for probes, taken by [`run`].
    udp: Option<UdpSocket>,
    /// Its port number, told to clients.
    udp_port: Option<u16>,
}

impl Directory {
    /// A directory over these stores.
    pub fn new(
        presence: Arc<dyn PresenceStore>,
        identities: Arc<dyn IdentityStore>,
        key: StaticKeypair,
        config: Config,
    ) -> Self {
        let relay_keys = RelayKeys::derive(key.private());
        Self {
            presence,
            identities,
            relay_keys,
            key,
            sources: Arc::new(sources::Sources::new(&config.limits)),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            limits: limits::RequestLimits::new(&config.limits),
            refusals: Default::default(),
            config,
            watchers: Default::default(),
            roster: Default::default(),
            instance: rand::random(),
            metrics: Arc::new(Metrics::new()),
            shutdown: CancellationToken::new(),
            feed: Default::default(),
            metrics_listener: None,
            probes: Default::default(),
            meetings: Default::default(),
            udp: None,
            udp_port: None,
        }
    }

    /// Answers UDP probes on `socket` while the directory runs (normally bound on the same address
    /// and port number as the TCP listener).
    pub fn with_udp(mut self, socket: UdpSocket) -> Self {
        self.udp_port = socket.local_addr().ok().map(|a| a.port());
        self.udp = Some(socket);
        self
    }

    /// The UDP port number clients probe, if the directory answers probes.
    pub fn udp_port(&self) -> Option<u16> {
        self.udp_port
    }

    /// Receives the changes of a shared store (see [`redis_store::RedisStore::connect`]).
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = std::sync::Mutex::new(Some(feed));
        self
    }

    /// Counts into `metrics` (shared with the store, which counts its errors there).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves the metrics on `listener` while the directory runs.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// Counts a refusal for `reason`, and runs `log` (its line) if the log's budget allows.
    pub fn refuse(&self, reason: Refusal, log: impl FnOnce()) {
        self.metrics.refused(reason);
        if self.refusals.allow(reason) {
            log();
        }
    }

    /// The key bound to `number` and where it is online: what `Lookup` and `Watch` answer.
    pub async fn status_of(
        &self,
        number: &Number,
    ) -> Result<(Option<PublicKey>, Option<Location>), StoreError> {
        let online = match self.presence.get_now(number) {
            Some(online) => online,
            None => self.presence.get(number).await?,
        };
        match online {
            Some(e) => Ok((Some(e.key), e.location)),
            None => Ok((self.identities.key_of(number).await?, None)),
        }
    }

    /// Applies a presence change here: ends the session it replaced if that one lives here (see
    /// [`roster`]), and tells this instance's watchers where the number is.
    pub async fn apply(&self, change: Change) {
        let (number, key, online) = match change {
            Change::Taken { number, replaced, .. } => {
                if let Some(old) = replaced {
                    self.roster.replaced(&number, old, self.instance);
                }
                return;
            }
            Change::Online { number, entry } => (number, Some(entry.key), entry.location),
            Change::Offline { number, key } => {
                if !self.watchers.is_watched(&number) {
                    return;
                }
                // An expired entry is gone with its key: the binding still says whose it was.
                let key = match key {
                    Some(k) => Some(k),
                    None => self.identities.key_of(&number).await.ok().flatten(),
                };
                (number, key, None)
            }
            Change::Missed => {
                let watched = self.watchers.numbers();
                info!("Sending the presence of {} watched numbers again", watched.len());
                for number in watched {
                    if let Ok((key, online)) = self.status_of(&number).await {
                        let push = ServerToClient::Presence { number: number.clone(), key, online };
                        self.metrics.pushes(0, self.watchers.notify(&number, push));
                    }
                }
                return;
            }
        };
        let dropped =
            self.watchers.notify(&number, ServerToClient::Presence { number: number.clone(), key, online });
        self.metrics.pushes(0, dropped);
    }
}

/// Serves clients on `listener` until `shutdown` completes, then closes every session and returns.
pub async fn run(
    listener: TcpListener,
    directory: Directory,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let mut directory = directory;
    let feed = directory.feed.get_mut().unwrap_or_else(|p| p.into_inner()).take();
    let metrics_listener = directory.metrics_listener.take();
    let udp = directory.udp.take();
    let directory = Arc::new(directory);
    // Caps open sessions below the process's file limit; a connection over the cap is closed at once.
    let cancel = directory.shutdown.clone();
    // Work of the directory as a whole, ended after the sessions.
    let background_cancel = CancellationToken::new();
    let mut background = JoinSet::new();
    if let Some(feed) = feed {
        background.spawn(follow(feed, directory.clone(), background_cancel.clone()));
    }
    if let Some(udp) = udp {
        let observer: Arc<dyn whatsap2p_relay::Observer> = directory.metrics.clone();
        background.spawn(probes::serve(udp, directory.probes.clone(), observer, background_cancel.clone()));
    }
    if let Some(listener) = metrics_listener {
        background.spawn(metrics::serve(listener, directory.metrics.clone(), background_cancel.clone()));
    }
    background.spawn(upkeep(directory.clone(), background_cancel.clone()));
    // A tracker rather than a `JoinSet`: it keeps no handle per session, only a count, which every
    // held session would otherwise pay for.
    let sessions = TaskTracker::new();
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
                let Ok(permit) = directory.connections.clone().try_acquire_owned() else {
                    directory.refuse(Refusal::Full, || warn!("Refusing {}/{}: {} sessions open", addr.ip(), addr.port(), directory.config.max_connections));
                    continue;
                };
                let slot = match directory.sources.admit(addr.ip()) {
                    Ok(slot) => slot,
                    Err(crowded) => {
                        refuse_crowded(&directory, addr, crowded);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                sessions.spawn(session::serve(stream, addr, directory.clone(), (permit, slot)));
            }
        }
    }
    info!("Shutting down: closing {} sessions", sessions.len());
    sessions.close();
    // Handshakes watch the token; sessions past theirs hear it from the roster.
    cancel.cancel();
    directory.roster.close();
    sessions.wait().await;
    background_cancel.cancel();
    while background.join_next().await.is_some() {}
    Ok(())
}

/// Refuses a connection from `addr`, whose address holds as many connections or handshakes as it
/// may, and says so within the log's budget.
fn refuse_crowded(directory: &Directory, addr: std::net::SocketAddr, crowded: sources::Crowded) {
    let limits = &directory.config.limits;
    let source = sources::SourceAddr::from(addr.ip());
    match crowded {
        sources::Crowded::Sessions => directory.refuse(Refusal::SessionsPerAddress, || {
            let n = limits.sessions_per_address;
            warn!(
                "Refusing {}/{}: {n} connections from {source} open (the limit per address)",
                addr.ip(),
                addr.port()
            )
        }),
        sources::Crowded::Handshakes => directory.refuse(Refusal::HandshakesPerAddress, || {
            let n = limits.handshakes_per_address;
            warn!(
                "Refusing {}/{}: {n} handshakes from {source} in progress (the limit per address)",
                addr.ip(),
                addr.port()
            )
        }),
    }
}

/// How often the limits forget what they no longer need.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the refusals not logged one by one are summed up.
const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Keeps the limits' memory near what they hold, and sums up unlogged refusals, until `cancel`.
async fn upkeep(directory: Arc<Directory>, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary_due = tokio::time::Instant::now() + SUMMARY_EVERY;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        directory.limits.upkeep();
        if tokio::time::Instant::now() >= summary_due {
            directory.refusals.summary();
            summary_due += SUMMARY_EVERY;
        }
    }
    directory.refusals.summary();
}

/// Applies the changes every instance makes through a shared store, and runs the store's upkeep,
/// until `cancel`.
async fn follow(feed: Feed, directory: Arc<Directory>, cancel: CancellationToken) {
    let Feed { mut changes, upkeep } = feed;
    let apply = async {
        while let Some(change) = changes.recv().await {
            directory.apply(change).await;
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = upkeep => {}
        _ = apply => {}
    }
}
