//! Bindings and presence in Redis, shared by every instance that points at it: one directory on
//! several machines. Redis is one node (`redis://`, `rediss://` over TLS) or a Redis Cluster
//! (`redis+cluster://`, `rediss+cluster://`), see [`StoreAddress`].
//!
//! # Keys
//! - `w2p:binding:<number>`: the 32-byte identity key. Made with `SET NX` (the first claim wins,
//!   atomically across instances) and never overwritten or expired. Durable only as far as Redis
//!   persists (AOF, see `docs/operators.md`).
//! - `w2p:presence:<number>`: the session that holds the number, its [`Owner`] (16 bytes), then
//!   `L` (online) or `N`, then the postcard of the key and the location of the latest `Register`.
//!   Expires after the heartbeat timeout unless its session's heartbeats renew it, so an instance
//!   that dies takes its users offline within that time.
//!
//! Every write of presence is a Lua script that checks the owner, writes and publishes the change
//! on [`CHANGES`] in one step: every instance hears the changes of a number in the order Redis made
//! them, and an instance only renews or deletes entries its own sessions own. An entry that expires
//! is announced by Redis itself (keyspace notifications, `notify-keyspace-events Ex`, which the
//! instance switches on). Changes reach [`crate::run`] through a [`Feed`].
//!
//! # Cluster
//! Every command and script touches one key, so each runs whole on the primary of that key's slot:
//! a binding's first claim still wins atomically, and a script's checks and writes are one step.
//! A `PUBLISH`, in a script too, reaches the subscribers of every node, so one subscription to
//! [`CHANGES`] hears every change; expiry notifications stay on the node where the key lived, so
//! the instance subscribes to them on every primary, which it finds with `CLUSTER NODES` (again
//! every [`NOTIFICATIONS_CHECK`] checks: primaries come and go with failovers). See
//! [`connections`].
//!
//! # Connections
//! Commands go through one multiplexed connection (every session shares it) that reconnects by
//! itself; subscriptions through RESP3 connections of their own, renewed after a reconnection. The
//! feed's upkeep pings Redis every [`CHECK_PERIOD`], which measures the round trip, says in the log
//! and the metrics when Redis goes and comes back (and why: refused, timed out, a certificate it
//! does not trust), and turns the notifications on again after a Redis restart.

mod address;
mod connections;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{AsyncCommands, Client, PushInfo, PushKind, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};
use whatsap2p_proto::directory::Location;
use whatsap2p_proto::{Number, PublicKey};

pub use address::{AddressError, StoreAddress, StoreTls, TlsError};
use connections::{Commands, Listener};

use crate::identities::{Binding, IdentityStore};
use crate::metrics::Metrics;
use crate::presence::{Applied, Change, Feed, Held, PresenceEntry, PresenceStore, Renewal};
use crate::store::{Owner, StoreError};

/// The channel presence changes are published on.
pub const CHANGES: &str = "w2p:presence";
const BINDING: &str = "w2p:binding:";
const PRESENCE: &str = "w2p:presence:";

/// How often the upkeep checks that Redis answers.
pub const CHECK_PERIOD: Duration = Duration::from_secs(1);
/// Every this many checks, the upkeep makes sure expiry notifications are still on (and, on a
/// cluster, looks for primaries that came or went).
const NOTIFICATIONS_CHECK: u64 = 5;
/// A command that Redis has not answered in this long has failed. Short: a session waits for it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Changes waiting for the dispatcher; beyond, they are dropped and counted (sessions find out at
/// their next heartbeat).
pub const FEED_QUEUE: usize = 65_536;

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The address is not one this build can use.
    #[error("{0}")]
    Address(#[from] AddressError),
    /// The `redis` crate refused the URL or the certificates.
    #[error("{0}")]
    Url(redis::RedisError),
    /// Certificates were given for a store not reached over TLS.
    #[error("certificates (--store-ca, --store-cert) are for a store reached over TLS: rediss:// or rediss+cluster://")]
    NotTls,
    /// The connection could not be made.
    #[error("connecting: {0}")]
    Connect(redis::RedisError),
}

/// Both stores in one Redis (one node or a cluster).
pub struct RedisStore {
    /// Where commands go: set at once for one node; for a cluster, once the upkeep first reaches
    /// it (the cluster client needs the cluster to learn its slots).
    commands: OnceLock<Commands>,
    /// Whether Redis answered its last health check and every command since. While it does not,
    /// commands fail at once instead of each waiting for the reconnection: a session waiting on
    /// its store reads no frames.
    up: AtomicBool,
    /// How long a presence entry lives without a renewal: the heartbeat timeout.
    ttl_ms: u64,
    metrics: Arc<Metrics>,
    take_over: Script,
    set_online: Script,
    renew: Script,
    set_offline: Script,
}

/// A change on [`CHANGES`]: this, postcard-encoded, then (for `Taken`) the 16 bytes of the
/// replaced owner, if any, which the script appends.
#[derive(Serialize, Deserialize)]
enum Announcement {
    Taken { number: Number, instance: u64, session: u64 },
    Online { number: Number, key: PublicKey, location: Location, instance: u64, session: u64 },
    Offline { number: Number, key: PublicKey },
}

/// The byte after the owner in a presence entry: whether it has a location (the number is online),
/// so a script can tell without decoding the rest.
const ONLINE: u8 = b'L';
const NOT_ONLINE: u8 = b'N';

/// KEYS[1] the entry; ARGV: owner, the entry's rest if there is none yet, TTL, channel,
/// announcement. Keeps the rest (key, location) of an existing entry under the new owner, and
/// announces which owner it replaced.
const TAKE_OVER: &str = r"
local old = redis.call('GET', KEYS[1])
local rest = ARGV[2]
local replaced = ''
if old then
  rest = string.sub(old, 17)
  if string.sub(old, 1, 16) ~= ARGV[1] then replaced = string.sub(old, 1, 16) end
end
redis.call('SET', KEYS[1], ARGV[1] .. rest, 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. replaced)
return 1
";

/// KEYS[1] the entry; ARGV: owner, rest, TTL, channel, announcement (empty: none). Writes unless
/// another owner holds the entry (0).
const SET_ONLINE: &str = r"
local old = redis.call('GET', KEYS[1])
if old and string.sub(old, 1, 16) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
";

const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if string.sub(v, 1, 16) ~= ARGV[1] then return 2 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS[1] the entry; ARGV: owner, channel, announcement. Deletes the entry if it is the owner's,
/// and announces it if the number was online.
const SET_OFFLINE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 16) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if string.sub(v, 17, 17) == 'L' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
  return 1
end
return 0
";

fn binding_key(number: &Number) -> String {
    format!("{BINDING}{number}")
}

fn presence_key(number: &Number) -> String {
    format!("{PRESENCE}{number}")
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own plain structs: postcard cannot fail on them.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// A node's client for `url`, trusting what `tls` says, speaking RESP3 when `resp3` (the
/// subscriptions' connections: pushes need it).
fn node_client(url: &str, tls: &StoreTls, resp3: bool) -> Result<Client, SetupError> {
    let client = match tls.certificates() {
        Some(certificates) => Client::build_with_tls(url, certificates),
        None => Client::open(url),
    }
    .map_err(SetupError::Url)?;
    if !resp3 {
        return Ok(client);
    }
    // Same address, credentials and TLS settings; only the protocol changes.
    let info = client.get_connection_info().clone();
    let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings)).map_err(SetupError::Url)
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_max_delay(CHECK_PERIOD)
}

/// A listener on one node (`url`), its pushes to `subscriber`, made lazily: it connects at its
/// first ping.
fn node_listener(
    url: &str,
    at: String,
    tls: &StoreTls,
    channels: Vec<String>,
    subscriber: &Arc<Subscriber>,
) -> Result<Listener, SetupError> {
    let subscriber = subscriber.clone();
    let config = manager_config()
        .set_push_sender(move |push: PushInfo| {
            subscriber.deliver(push);
            Ok::<(), std::convert::Infallible>(())
        })
        .set_automatic_resubscription();
    let conn = ConnectionManager::new_lazy_with_config(node_client(url, tls, true)?, config)
        .map_err(SetupError::Connect)?;
    Ok(Listener::new(Commands::Node(conn), at, channels, true))
}

/// What a cluster's upkeep needs to reach it.
struct ClusterSetup {
    /// For commands.
    commands: ClusterClient,
    /// For the subscription to [`CHANGES`] (RESP3, pushes to the subscriber).
    changes: ClusterClient,
    /// `redis[s]://[CREDENTIALS@]`: a primary's URL is this and its `HOST:PORT`.
    node_prefix: String,
    tls: StoreTls,
    subscriber: Arc<Subscriber>,
}

impl ClusterSetup {
    fn new(nodes: &[String], tls: &StoreTls, subscriber: Arc<Subscriber>) -> Result<Self, SetupError> {
        let builder = || {
            let b = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                .connection_timeout(RESPONSE_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                // A command is retried within its RESPONSE_TIMEOUT, not for long after: a
                // session waits for it.
                .retries(2);
            match tls.certificates() {
                Some(certificates) => b.certs(certificates),
                None => b,
            }
        };
        let pushes = subscriber.clone();
        let changes = builder()
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(move |push: PushInfo| {
                pushes.deliver(push);
                Ok::<(), std::convert::Infallible>(())
            })
            .build()
            .map_err(SetupError::Url)?;
        let first = nodes.first().map(String::as_str).unwrap_or_default();
        let (scheme, rest) = first.split_once("://").unwrap_or(("redis", first));
        let credentials = rest.rsplit_once('@').map_or(String::new(), |(c, _)| format!("{c}@"));
        Ok(Self {
            commands: builder().build().map_err(SetupError::Url)?,
            changes,
            node_prefix: format!("{scheme}://{credentials}"),
            tls: tls.clone(),
            subscriber,
        })
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[:password@]host:port[/db]`, or any
    /// [`StoreAddress`]) with the system's TLS roots. See [`RedisStore::connect_to`].
    pub fn connect(
        url: &str,
        presence_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, Feed), SetupError> {
        Self::connect_to(&url.parse()?, &StoreTls::default(), presence_ttl, metrics)
    }

    /// Connects to the store at `address`, over TLS trusting `tls` for `rediss`. Presence entries
    /// live `presence_ttl` without a heartbeat. Returns the store and the feed of changes for
    /// [`crate::Directory::with_feed`]. Redis may be down: the instance starts all the same, refuses
    /// registrations until it answers, and connects when it does.
    pub fn connect_to(
        address: &StoreAddress,
        tls: &StoreTls,
        presence_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, Feed), SetupError> {
        if !tls.is_empty() && !address.is_tls() {
            return Err(SetupError::NotTls);
        }
        let (tx, changes) = mpsc::channel(FEED_QUEUE);
        let missed = Arc::new(AtomicBool::new(false));
        let store = Arc::new(Self {
            commands: OnceLock::new(),
            up: AtomicBool::new(false),
            ttl_ms: presence_ttl.as_millis().max(1) as u64,
            metrics: metrics.clone(),
            take_over: Script::new(TAKE_OVER),
            set_online: Script::new(SET_ONLINE),
            renew: Script::new(RENEW),
            set_offline: Script::new(SET_OFFLINE),
        });
        let subscriber = |db: i64| {
            Arc::new(Subscriber {
                tx: tx.clone(),
                missed: missed.clone(),
                expired: format!("__keyevent@{db}__:expired"),
                metrics: metrics.clone(),
            })
        };
        let (listeners, topology, probe) = match address {
            StoreAddress::Node(url) => {
                let client = node_client(url, tls, false)?;
                let client_probe = client.clone();
                let db = client.get_connection_info().redis_settings().db();
                let commands = ConnectionManager::new_lazy_with_config(client, manager_config())
                    .map_err(SetupError::Connect)?;
                let _ = store.commands.set(Commands::Node(commands));
                let subscriber = subscriber(db);
                let channels = vec![CHANGES.to_owned(), subscriber.expired.clone()];
                (
                    vec![node_listener(url, address.describe(), tls, channels, &subscriber)?],
                    None,
                    Some(client_probe),
                )
            }
            // A cluster has database 0 only.
            StoreAddress::Cluster(nodes) => {
                (Vec::new(), Some(ClusterSetup::new(nodes, tls, subscriber(0))?), None)
            }
        };
        let upkeep = Upkeep {
            store: store.clone(),
            listeners,
            cluster: topology,
            missed,
            tx,
            addr: address.describe(),
            probe,
        };
        Ok((store, Feed { changes, upkeep: Box::pin(upkeep.run()) }))
    }

    /// Whether Redis answered the last health check (and every command since).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The connection for a command, unless there is none yet (a cluster not reached so far).
    fn conn(&self) -> Result<Commands, StoreError> {
        self.commands.get().cloned().ok_or_else(|| {
            self.metrics.store_error();
            StoreError::Unavailable
        })
    }

    /// Runs one command, within [`RESPONSE_TIMEOUT`], unless Redis is known to be down.
    async fn run<T>(&self, command: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        if !self.up.load(Ordering::Relaxed) {
            self.metrics.store_error();
            return Err(StoreError::Unavailable);
        }
        let e = match tokio::time::timeout(RESPONSE_TIMEOUT, command).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                self.up.store(false, Ordering::Relaxed);
                StoreError::Redis(e)
            }
            Ok(Err(e)) => StoreError::Redis(e),
            Err(_) => {
                self.up.store(false, Ordering::Relaxed);
                StoreError::Unavailable
            }
        };
        self.metrics.store_error();
        Err(e)
    }
}

/// Turns pushes from the subscription into changes for the feed. Runs on the connection's task:
/// it must not wait.
struct Subscriber {
    tx: mpsc::Sender<Change>,
    /// Set when the subscription (re)starts; the upkeep sends [`Change::Missed`] for it.
    missed: Arc<AtomicBool>,
    expired: String,
    metrics: Arc<Metrics>,
}

impl Subscriber {
    fn deliver(&self, push: PushInfo) {
        let change = match push.kind {
            PushKind::Message => match &push.data[..] {
                [Value::BulkString(channel), Value::BulkString(payload)] => self.decode(channel, payload),
                _ => None,
            },
            PushKind::Disconnection => {
                warn!("Lost the subscription to the store's changes: reconnecting");
                None
            }
            // (Re)subscribed: whatever changed while the subscription was down was not heard. The
            // upkeep says so once the store answers again.
            PushKind::Subscribe => {
                if matches!(push.data.first(), Some(Value::BulkString(c)) if c == CHANGES.as_bytes()) {
                    self.missed.store(true, Ordering::Relaxed);
                }
                None
            }
            _ => None,
        };
        let Some(change) = change else { return };
        if self.tx.try_send(change).is_err() {
            self.metrics.change_dropped();
            warn!("Falling behind the store's presence changes: one dropped");
        }
    }

    fn decode(&self, channel: &[u8], payload: &[u8]) -> Option<Change> {
        if channel == CHANGES.as_bytes() {
            let Ok((announcement, rest)) = postcard::take_from_bytes::<Announcement>(payload) else {
                warn!("Ignoring a malformed presence change from the store");
                return None;
            };
            return Some(match announcement {
                Announcement::Taken { number, instance, session } => Change::Taken {
                    number,
                    owner: Owner { instance, session },
                    replaced: Owner::from_prefix(rest),
                },
                Announcement::Online { number, key, location, instance, session } => Change::Online {
                    number,
                    entry: PresenceEntry {
                        key,
                        location: Some(location),
                        owner: Owner { instance, session },
                    },
                },
                Announcement::Offline { number, key } => Change::Offline { number, key: Some(key) },
            });
        }
        if channel == self.expired.as_bytes() {
            let number = std::str::from_utf8(payload).ok()?.strip_prefix(PRESENCE)?;
            return Some(Change::Offline { number: Number::new(number).ok()?, key: None });
        }
        None
    }
}

/// Pings Redis every [`CHECK_PERIOD`] (every connection, each reconnecting on failure), logs and
/// counts when it goes and comes back, and (re)subscribes and (re)enables expiry notifications
/// whenever it comes back. On a cluster, first connects, then keeps a listener on every primary.
/// Runs until dropped.
struct Upkeep {
    store: Arc<RedisStore>,
    /// The subscriptions' connections.
    listeners: Vec<Listener>,
    /// For a cluster: how to reach it and its primaries.
    cluster: Option<ClusterSetup>,
    /// Set when the subscription to [`CHANGES`] (re)starts; the upkeep then sends
    /// [`Change::Missed`].
    missed: Arc<AtomicBool>,
    tx: mpsc::Sender<Change>,
    /// Where the store is, for the log.
    addr: String,
    /// One node's client, to find out why it does not answer (see [`Upkeep::diagnose`]).
    probe: Option<Client>,
}

impl Upkeep {
    async fn run(mut self) {
        // Unknown at start, so the first check says how it went either way; then said on changes.
        let mut up: Option<bool> = None;
        let mut ticker = tokio::time::interval(CHECK_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for tick in 0u64.. {
            ticker.tick().await;
            let t0 = Instant::now();
            let answered = tokio::time::timeout(RESPONSE_TIMEOUT * 2, self.check())
                .await
                .unwrap_or_else(|_| Err((redis::ErrorKind::Io, "no answer in time").into()));
            self.store.metrics.store_checked(answered.is_ok().then(|| t0.elapsed()));
            if answered.is_err() {
                self.store.up.store(false, Ordering::Relaxed);
            }
            match answered {
                Ok(()) => {
                    let was_up = up.replace(true) == Some(true);
                    if !was_up {
                        info!("Store at {} answers", self.addr);
                    }
                    // Again now and then: a Redis restarted between two checks forgets a CONFIG
                    // SET, and a cluster's primaries change with failovers.
                    let periodic = !was_up || tick % NOTIFICATIONS_CHECK == 0;
                    let found = periodic && self.find_primaries().await;
                    if periodic || found {
                        for l in self.listeners.iter_mut().filter(|l| l.notifications) {
                            let at = l.at.clone();
                            enable_expiry_notifications(l.conn(), &at).await;
                        }
                    }
                    let mut subscribed = !self.listeners.is_empty();
                    for l in &mut self.listeners {
                        if let Err(e) = l.subscribe().await {
                            warn!("Cannot subscribe to the store's changes on {}: {e}", l.at);
                            subscribed = false;
                        }
                    }
                    // Up once subscribed: an instance that accepted registrations before would not
                    // hear the changes they make.
                    self.store.up.store(subscribed, Ordering::Relaxed);
                    if self.missed.swap(false, Ordering::Relaxed) && self.tx.try_send(Change::Missed).is_err()
                    {
                        self.missed.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.store.metrics.store_error();
                    if up.replace(false) != Some(false) {
                        let e = self.diagnose(e).await;
                        warn!(
                            "Store at {} unreachable: {}; refusing registrations until it is back",
                            self.addr,
                            why(&e)
                        );
                    }
                }
            }
        }
    }

    /// Why the store does not answer: a connection that reconnects by itself says only that it
    /// timed out, so a fresh connection of one node's says what goes wrong (refused, a certificate
    /// not trusted, a password refused).
    async fn diagnose(&self, e: redis::RedisError) -> redis::RedisError {
        let Some(probe) = &self.probe else { return e };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        match tokio::time::timeout(
            RESPONSE_TIMEOUT * 2,
            probe.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Err(cause)) => cause,
            _ => e,
        }
    }

    /// Connects to a cluster not reached yet, then pings every connection.
    async fn check(&mut self) -> redis::RedisResult<()> {
        if let Some(cluster) = &self.cluster {
            if self.store.commands.get().is_none() {
                let conn = cluster.commands.get_async_connection().await?;
                let _ = self.store.commands.set(Commands::Cluster(conn));
            }
            if self.listeners.is_empty() {
                let conn = cluster.changes.get_async_connection().await?;
                let at = format!("{} (presence changes)", self.addr);
                self.listeners.push(Listener::new(
                    Commands::Cluster(conn),
                    at,
                    vec![CHANGES.to_owned()],
                    false,
                ));
            }
        }
        if let Some(mut commands) = self.store.commands.get().cloned() {
            redis::cmd("PING").query_async::<()>(&mut commands).await?;
        }
        for l in &mut self.listeners {
            redis::cmd("PING").query_async::<()>(l.conn()).await?;
        }
        Ok(())
    }

    /// On a cluster, keeps one listener for expiries on each primary: adds the new ones, drops the
    /// ones that are no longer primaries. Whether it added any.
    async fn find_primaries(&mut self) -> bool {
        let (Some(cluster), Some(mut commands)) = (&self.cluster, self.store.commands.get().cloned()) else {
            return false;
        };
        let text: String = match redis::cmd("CLUSTER").arg("NODES").query_async(&mut commands).await {
            Ok(text) => text,
            Err(e) => {
                warn!("Cannot list the cluster's nodes: {e}; expiries heard from the primaries known so far");
                return false;
            }
        };
        let primaries = connections::primaries(&text);
        if primaries.is_empty() {
            return false;
        }
        self.listeners.retain(|l| {
            let keep = !l.notifications || primaries.contains(&l.at);
            if !keep {
                info!("Store: {} is no longer a primary of the cluster", l.at);
            }
            keep
        });
        let mut added = false;
        for node in primaries {
            if self.listeners.iter().any(|l| l.at == node) {
                continue;
            }
            let url = format!("{}{node}", cluster.node_prefix);
            let channels = vec![cluster.subscriber.expired.clone()];
            match node_listener(&url, node.clone(), &cluster.tls, channels, &cluster.subscriber) {
                Ok(l) => {
                    info!("Store: hearing the expiries of the cluster's primary {node}");
                    self.listeners.push(l);
                    added = true;
                }
                Err(e) => warn!("Cannot listen to the cluster's primary {node}: {e}"),
            }
        }
        added
    }
}

/// An error of the store, with its causes: a TLS failure says which certificate check failed only
/// in its source.
fn why(e: &redis::RedisError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Adds `E` (keyevent) and `x` (expired) to the node's `notify-keyspace-events`, keeping what else
/// is there. A Redis that refuses `CONFIG` (some managed ones) must have them in its configuration.
async fn enable_expiry_notifications(conn: &mut impl ConnectionLike, at: &str) {
    // A map in RESP3 (the listeners' connections), pairs in RESP2: a `HashMap` reads both.
    let current: redis::RedisResult<std::collections::HashMap<String, String>> =
        redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query_async(conn).await;
    let flags = match current {
        Ok(pairs) => pairs.get("notify-keyspace-events").cloned().unwrap_or_default(),
        Err(e) => {
            warn!("Cannot read the notify-keyspace-events of the store at {at} ({e}); set it to include \"Ex\", or users of an instance that dies are shown online until they come back");
            return;
        }
    };
    let mut wanted = flags.clone();
    if !wanted.contains('E') {
        wanted.push('E');
    }
    if !wanted.contains('x') && !wanted.contains('A') {
        wanted.push('x');
    }
    if wanted == flags {
        return;
    }
    let set: redis::RedisResult<()> =
        redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg(&wanted).query_async(conn).await;
    match set {
        Ok(()) => {
            info!("Store at {at}: notify-keyspace-events set to {wanted:?} (expired presence is announced)")
        }
        Err(e) => warn!("Cannot set the notify-keyspace-events of the store at {at} to {wanted:?}: {e}"),
    }
}

#[async_trait]
impl IdentityStore for RedisStore {
    async fn claim(&self, number: &Number, key: &PublicKey) -> Result<Binding, StoreError> {
        let mut conn = self.conn()?;
        // SET NX GET: binds if free and says who owned it otherwise, in one atomic step.
        let mut set = redis::cmd("SET");
        set.arg(binding_key(number)).arg(&key.0[..]).arg("NX").arg("GET");
        let old: Option<Vec<u8>> = self.run(set.query_async(&mut conn)).await?;
        Ok(match old {
            None => Binding::New,
            Some(owner) => match PublicKey::try_from(owner.as_slice()) {
                Ok(owner) if owner == *key => Binding::Matches,
                Ok(owner) => Binding::Conflict { owner },
                // A malformed binding binds the number to no usable key: refuse rather than rebind.
                Err(_) => Binding::Conflict { owner: PublicKey([0; 32]) },
            },
        })
    }

    async fn key_of(&self, number: &Number) -> Result<Option<PublicKey>, StoreError> {
        let mut conn = self.conn()?;
        let bytes: Option<Vec<u8>> = self.run(conn.get(binding_key(number))).await?;
        bytes
            .map(|b| PublicKey::try_from(b.as_slice()))
            .transpose()
            .map_err(|_| StoreError::Malformed { what: "binding", number: number.clone() })
    }
}

/// An entry's bytes after the owner: whether it is online, then the key and location.
fn entry_rest(key: PublicKey, location: Option<Location>) -> Vec<u8> {
    let mut rest = vec![if location.is_some() { ONLINE } else { NOT_ONLINE }];
    rest.extend(encode(&(key, location)));
    rest
}

#[async_trait]
impl PresenceStore for RedisStore {
    async fn take_over(&self, number: &Number, owner: Owner, key: PublicKey) -> Result<Applied, StoreError> {
        let announcement = encode(&Announcement::Taken {
            number: number.clone(),
            instance: owner.instance,
            session: owner.session,
        });
        let mut conn = self.conn()?;
        let mut script = self.take_over.key(presence_key(number));
        script
            .arg(&owner.to_bytes()[..])
            .arg(entry_rest(key, None))
            .arg(self.ttl_ms)
            .arg(CHANGES)
            .arg(announcement);
        let _: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(None)
    }

    async fn set_online(&self, number: &Number, entry: &PresenceEntry) -> Result<Held, StoreError> {
        let announcement = match entry.location {
            Some(location) => encode(&Announcement::Online {
                number: number.clone(),
                key: entry.key,
                location,
                instance: entry.owner.instance,
                session: entry.owner.session,
            }),
            None => Vec::new(),
        };
        let mut conn = self.conn()?;
        let mut script = self.set_online.key(presence_key(number));
        script
            .arg(&entry.owner.to_bytes()[..])
            .arg(entry_rest(entry.key, entry.location))
            .arg(self.ttl_ms)
            .arg(CHANGES)
            .arg(announcement);
        Ok(match self.run(script.invoke_async::<i64>(&mut conn)).await? {
            0 => Held::Replaced,
            _ => Held::Yes(None),
        })
    }

    async fn renew(&self, number: &Number, owner: Owner) -> Result<Renewal, StoreError> {
        let mut conn = self.conn()?;
        let mut script = self.renew.key(presence_key(number));
        script.arg(&owner.to_bytes()[..]).arg(self.ttl_ms);
        Ok(match self.run(script.invoke_async::<i64>(&mut conn)).await? {
            1 => Renewal::Renewed,
            2 => Renewal::Replaced,
            _ => Renewal::Missing,
        })
    }

    async fn set_offline(
        &self,
        number: &Number,
        owner: Owner,
        key: PublicKey,
    ) -> Result<Applied, StoreError> {
        let announcement = encode(&Announcement::Offline { number: number.clone(), key });
        let mut conn = self.conn()?;
        let mut script = self.set_offline.key(presence_key(number));
        script.arg(&owner.to_bytes()[..]).arg(CHANGES).arg(announcement);
        let _: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(None)
    }

    async fn get(&self, number: &Number) -> Result<Option<PresenceEntry>, StoreError> {
        let mut conn = self.conn()?;
        let Some(value): Option<Vec<u8>> = self.run(conn.get(presence_key(number))).await? else {
            return Ok(None);
        };
        let malformed = || StoreError::Malformed { what: "presence entry", number: number.clone() };
        let owner = Owner::from_prefix(&value).ok_or_else(malformed)?;
        let rest = value.get(Owner::LEN + 1..).ok_or_else(malformed)?;
        let (key, location): (PublicKey, Option<Location>) =
            postcard::from_bytes(rest).map_err(|_| malformed())?;
        Ok(Some(PresenceEntry { key, location, owner }))
    }
}
