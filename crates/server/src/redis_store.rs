//! Bindings and presence in Redis, shared by every instance that points at it: one directory on
//! several machines.
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
//! Two connections, each a `redis::aio::ConnectionManager` that reconnects by itself: one for
//! commands (multiplexed: every session shares it), one (RESP3) for the subscriptions, which it
//! renews after a reconnection. The feed's upkeep pings Redis every [`CHECK_PERIOD`], which
//! measures the round trip, says in the log and the metrics when Redis goes and comes back, and
//! turns the notifications on again after a Redis restart.
//!
//! Cluster: every script touches one key, and the messages go through `PUBLISH`, which a cluster
//! forwards to every node; what is left is a cluster client for commands and subscriptions on every
//! primary for the expiry notifications (they stay on the node where the key lived). Not done yet:
//! `--store` takes a single node (`redis://` or, with Sentinel or a proxy in front, its address).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, PushInfo, PushKind, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};
use whatsap2p_proto::directory::Location;
use whatsap2p_proto::{Number, PublicKey};

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
/// Every this many checks, the upkeep makes sure expiry notifications are still on.
const NOTIFICATIONS_CHECK: u64 = 5;
/// A command that Redis has not answered in this long has failed. Short: a session waits for it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Changes waiting for the dispatcher; beyond, they are dropped and counted (sessions find out at
/// their next heartbeat).
pub const FEED_QUEUE: usize = 65_536;

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The address is not a Redis URL this build can use.
    #[error("{0}")]
    Address(redis::RedisError),
    /// The connection could not be made.
    #[error("connecting: {0}")]
    Connect(redis::RedisError),
}

/// Both stores in one Redis.
pub struct RedisStore {
    commands: ConnectionManager,
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

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[:password@]host:port[/db]`). Presence entries
    /// live `presence_ttl` without a heartbeat. Returns the store and the feed of changes for
    /// [`crate::Directory::with_feed`]. Redis may be down: the instance starts all the same, refuses
    /// registrations until it answers, and connects when it does.
    pub fn connect(
        url: &str,
        presence_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, Feed), SetupError> {
        let client = Client::open(url).map_err(SetupError::Address)?;
        let info = client.get_connection_info().clone();
        let db = info.redis_settings().db();
        let addr = info.addr().to_string();
        let resp3 = info
            .clone()
            .set_redis_settings(info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3));
        let subscriber_client = Client::open(resp3).map_err(SetupError::Address)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(CHECK_PERIOD);
        let commands =
            ConnectionManager::new_lazy_with_config(client, config.clone()).map_err(SetupError::Connect)?;
        let (tx, changes) = mpsc::channel(FEED_QUEUE);
        let expired = format!("__keyevent@{db}__:expired");
        let missed = Arc::new(AtomicBool::new(false));
        let sender = Subscriber {
            tx: tx.clone(),
            missed: missed.clone(),
            expired: expired.clone(),
            metrics: metrics.clone(),
        };
        let subscriber = ConnectionManager::new_lazy_with_config(
            subscriber_client,
            config
                .set_push_sender(move |push: PushInfo| {
                    sender.deliver(push);
                    Ok::<(), std::convert::Infallible>(())
                })
                .set_automatic_resubscription(),
        )
        .map_err(SetupError::Connect)?;
        let store = Arc::new(Self {
            commands,
            up: AtomicBool::new(false),
            ttl_ms: presence_ttl.as_millis().max(1) as u64,
            metrics,
            take_over: Script::new(TAKE_OVER),
            set_online: Script::new(SET_ONLINE),
            renew: Script::new(RENEW),
            set_offline: Script::new(SET_OFFLINE),
        });
        let upkeep =
            Box::pin(upkeep(store.clone(), Subscription { conn: subscriber, expired, missed, tx }, addr));
        Ok((store, Feed { changes, upkeep }))
    }

    /// Whether Redis answered the last health check (and every command since).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
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

/// Pings Redis every [`CHECK_PERIOD`] (both connections, which reconnect on failure), logs and
/// counts when it goes and comes back, and (re)subscribes and (re)enables expiry notifications
/// whenever it comes back. Runs until dropped.
/// The upkeep's side of the subscription.
struct Subscription {
    conn: ConnectionManager,
    expired: String,
    missed: Arc<AtomicBool>,
    tx: mpsc::Sender<Change>,
}

async fn upkeep(store: Arc<RedisStore>, sub: Subscription, addr: String) {
    let Subscription { conn: mut subscriber, expired, missed, tx } = sub;
    // Unknown at start, so the first check says how it went either way; then said on changes.
    let mut up: Option<bool> = None;
    let mut subscribed = false;
    let mut ticker = tokio::time::interval(CHECK_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0u64.. {
        ticker.tick().await;
        let mut commands = store.commands.clone();
        let t0 = Instant::now();
        let answered = tokio::time::timeout(RESPONSE_TIMEOUT, async {
            redis::cmd("PING").query_async::<()>(&mut commands).await?;
            redis::cmd("PING").query_async::<()>(&mut subscriber).await
        })
        .await
        .unwrap_or_else(|_| Err((redis::ErrorKind::Io, "no answer in time").into()));
        store.metrics.store_checked(answered.is_ok().then(|| t0.elapsed()));
        if answered.is_err() {
            store.up.store(false, Ordering::Relaxed);
        }
        match answered {
            Ok(()) => {
                let was_up = up.replace(true) == Some(true);
                if !was_up {
                    info!("Store at {addr} answers");
                }
                // Again now and then: a Redis restarted between two checks forgets a CONFIG SET.
                if !was_up || tick % NOTIFICATIONS_CHECK == 0 {
                    enable_expiry_notifications(&mut commands).await;
                }
                if !subscribed {
                    match subscribe(&mut subscriber, &expired).await {
                        Ok(()) => subscribed = true,
                        Err(e) => warn!("Cannot subscribe to the store's changes: {e}"),
                    }
                }
                // Up once subscribed: an instance that accepted registrations before would not
                // hear the changes they make.
                store.up.store(subscribed, Ordering::Relaxed);
                if missed.swap(false, Ordering::Relaxed) && tx.try_send(Change::Missed).is_err() {
                    missed.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                store.metrics.store_error();
                if up.replace(false) != Some(false) {
                    warn!("Store at {addr} unreachable: {e}; refusing registrations until it is back");
                }
            }
        }
    }
}

async fn subscribe(subscriber: &mut ConnectionManager, expired: &str) -> redis::RedisResult<()> {
    subscriber.subscribe(CHANGES).await?;
    subscriber.subscribe(expired).await
}

/// Adds `E` (keyevent) and `x` (expired) to Redis's `notify-keyspace-events`, keeping what else is
/// there. A Redis that refuses `CONFIG` (some managed ones) must have them in its configuration.
async fn enable_expiry_notifications(conn: &mut ConnectionManager) {
    let current: redis::RedisResult<Vec<String>> =
        redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query_async(conn).await;
    let flags = match current {
        Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
        Err(e) => {
            warn!("Cannot read the store's notify-keyspace-events ({e}); set it to include \"Ex\", or users of an instance that dies are shown online until they come back");
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
        Ok(()) => info!("Store: notify-keyspace-events set to {wanted:?} (expired presence is announced)"),
        Err(e) => warn!("Cannot set the store's notify-keyspace-events to {wanted:?}: {e}"),
    }
}

#[async_trait]
impl IdentityStore for RedisStore {
    async fn claim(&self, number: &Number, key: &PublicKey) -> Result<Binding, StoreError> {
        let mut conn = self.commands.clone();
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
        let mut conn = self.commands.clone();
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
        let mut conn = self.commands.clone();
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
        let mut conn = self.commands.clone();
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
        let mut conn = self.commands.clone();
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
        let mut conn = self.commands.clone();
        let mut script = self.set_offline.key(presence_key(number));
        script.arg(&owner.to_bytes()[..]).arg(CHANGES).arg(announcement);
        let _: i64 = self.run(script.invoke_async(&mut conn)).await?;
        Ok(None)
    }

    async fn get(&self, number: &Number) -> Result<Option<PresenceEntry>, StoreError> {
        let mut conn = self.commands.clone();
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
