//! `whatsap2p-server`: the directory. Reads its settings (flags, then a TOML config file, then
//! defaults), opens its stores, binds, and serves until Ctrl-C or SIGTERM.
//!
//! One instance keeps everything itself (presence in memory, bindings in SQLite under the data
//! dir). With `--store redis://…`, it is one of the instances of a directory sharing that Redis;
//! they must also share the server key (`--key-file`). See `docs/operators.md`.
//!
//! The relay (for clients that cannot reach each other directly) runs in the same process by
//! default, on the next port; `--relay-only` runs it alone, `--no-relay` not at all, and `--relay`
//! points clients at one that runs elsewhere with the same key file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;
use tracing::{info, warn};
use whatsap2p_proto::version::{self, Versions};
use whatsap2p_server::config::Limits;
use whatsap2p_server::identities::SqliteIdentities;
use whatsap2p_server::metrics::Metrics;
use whatsap2p_server::presence::MemoryPresence;
use whatsap2p_server::redis_store::{RedisStore, StoreAddress, StoreTls};
use whatsap2p_server::{server_key, Config, Directory};

/// The whatsap2p directory server: who is online and where. It never carries a message.
///
/// Every setting can also come from a TOML file (`--config`) under the same name as its flag
/// (`heartbeat-timeout = 30`, `store = "redis://…"`, `port = 7000`); a flag wins over the file.
#[derive(Parser, Default)]
#[command(version)]
struct Args {
    /// TCP port to listen on (0 picks a free one, printed at start). Required here or in the config file.
    port: Option<u16>,
    /// Address to bind [default: 0.0.0.0].
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Where the server key and (without --store) the number → key bindings live
    /// [default: $XDG_DATA_HOME/whatsap2p-server or ~/.local/share/whatsap2p-server].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's Noise key file (32 bytes, made if missing) [default: server.key in the data dir].
    /// Every instance of one directory must use the same key.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Shared store of bindings and presence: one Redis, `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`
    /// (`rediss://` over TLS), or a Redis Cluster, `redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]`
    /// (`rediss+cluster://` over TLS; some of its nodes, the others are found). Every instance
    /// pointing at the same Redis is part of one directory [default: in this process (memory and
    /// SQLite)].
    #[arg(long)]
    store: Option<String>,
    /// PEM file of the CA (or CAs) that signed the store's TLS certificate, trusted instead of the
    /// system's roots (for a private CA) [default: the system's roots].
    #[arg(long)]
    store_ca: Option<PathBuf>,
    /// PEM certificate (chain) this instance shows a store that asks clients for one
    /// (`tls-auth-clients yes`); goes with --store-key.
    #[arg(long, requires = "store_key")]
    store_cert: Option<PathBuf>,
    /// PEM private key of --store-cert.
    #[arg(long, requires = "store_cert")]
    store_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100) [default: off].
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Seconds without a heartbeat after which a user is offline [default: 30].
    #[arg(long)]
    heartbeat_timeout: Option<f64>,
    /// Seconds a connection has to finish the handshake [default: 5].
    #[arg(long)]
    handshake_timeout: Option<f64>,
    /// Most sessions open at once [default: 19000].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most connections from one source address (an IPv4 address or an IPv6 /64) at once
    /// [default: 1000].
    #[arg(long)]
    sessions_per_address: Option<usize>,
    /// Most handshakes in progress from one source address [default: 64].
    #[arg(long)]
    handshakes_per_address: Option<usize>,
    /// Lookups per second of one number, in bursts of a minute's worth; 0 = no limit [default: 20].
    #[arg(long)]
    lookups_per_second: Option<u32>,
    /// Lookups per second from one source address; 0 = no limit [default: 1000].
    #[arg(long)]
    address_lookups_per_second: Option<u32>,
    /// Distinct numbers one number may look up or watch per day; 0 = no limit [default: 1000].
    #[arg(long)]
    distinct_lookups_per_day: Option<u32>,
    /// Distinct numbers looked up or watched from one source address per day; 0 = no limit
    /// [default: 20000].
    #[arg(long)]
    address_distinct_lookups_per_day: Option<u32>,
    /// Registrations of numbers bound to nobody yet from one source address per day; 0 = no
    /// limit [default: 100].
    #[arg(long)]
    new_numbers_per_address_per_day: Option<u32>,
    /// Most (source, number) pairs kept to count distinct lookups, about 24 bytes each
    /// [default: 2000000].
    #[arg(long)]
    tracked_lookups: Option<usize>,
    /// Do not answer UDP address probes (by default the directory listens on UDP too, on the same
    /// address and port number as TCP; clients behind NATs need it to be reached directly).
    #[arg(long)]
    no_udp: bool,
    /// TCP port of the relay run in this process (it answers UDP probes on the same port number)
    /// [default: the directory's PORT + 1; 0 picks a free one].
    #[arg(long)]
    relay_port: Option<u16>,
    /// Run no relay: clients that cannot reach each other directly are not linked.
    #[arg(long)]
    no_relay: bool,
    /// Tell clients to use the relay at this address (one started with `--relay-only` and the
    /// same key file) instead of running one here.
    #[arg(long, conflicts_with_all = ["no_relay", "relay_only"])]
    relay: Option<SocketAddr>,
    /// Run only the relay, on `--relay-port` [default: PORT], checking tickets with the server
    /// key (`--key-file`: the directory's, for the directory to point clients at it with
    /// `--relay`).
    #[arg(long, conflicts_with = "no_relay")]
    relay_only: bool,
    /// The protocol versions to speak, `LOWEST-HIGHEST` [default: every version this build
    /// speaks]. Hidden: only to see how clients meet a directory older or newer than they are.
    #[arg(long, hide = true)]
    protocol_versions: Option<Versions>,
    /// A TOML file with any of the settings above, under their flag names.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The config file: the flags' names and types (`--config` itself excepted).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    port: Option<u16>,
    bind: Option<IpAddr>,
    data_dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    store: Option<String>,
    store_ca: Option<PathBuf>,
    store_cert: Option<PathBuf>,
    store_key: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    heartbeat_timeout: Option<f64>,
    handshake_timeout: Option<f64>,
    max_connections: Option<usize>,
    sessions_per_address: Option<usize>,
    handshakes_per_address: Option<usize>,
    lookups_per_second: Option<u32>,
    address_lookups_per_second: Option<u32>,
    distinct_lookups_per_day: Option<u32>,
    address_distinct_lookups_per_day: Option<u32>,
    new_numbers_per_address_per_day: Option<u32>,
    tracked_lookups: Option<usize>,
    no_udp: Option<bool>,
    relay_port: Option<u16>,
    no_relay: Option<bool>,
    relay: Option<SocketAddr>,
    relay_only: Option<bool>,
    protocol_versions: Option<String>,
}

/// Where the relay is, for the directory's clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RelaySetting {
    /// None.
    Off,
    /// In this process, on this port.
    Here(u16),
    /// Elsewhere.
    At(SocketAddr),
}

/// Every setting, resolved.
struct Settings {
    port: u16,
    bind: IpAddr,
    data_dir: PathBuf,
    key_file: Option<PathBuf>,
    store: Option<String>,
    store_tls: StoreTls,
    metrics: Option<SocketAddr>,
    udp: bool,
    relay: RelaySetting,
    relay_only: bool,
    config: Config,
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("whatsap2p-server")
}

fn seconds(s: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag} must be a positive number of seconds"))
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// Flags win over the file, the file over the defaults.
fn resolve(args: Args, file: FileConfig) -> anyhow::Result<Settings> {
    let Some(port) = args.port.or(file.port) else {
        bail!("no port: give it as the first argument or as `port` in the config file");
    };
    let defaults = Limits::default();
    // A limit from its flag, else the file, else its default.
    macro_rules! pick {
        ($name:ident) => {
            args.$name.or(file.$name).unwrap_or(defaults.$name)
        };
    }
    let relay_only = args.relay_only || file.relay_only.unwrap_or(false);
    if relay_only && (args.relay.is_some() || file.relay.is_some() || file.no_relay == Some(true)) {
        bail!("--relay-only runs the relay here: it goes with neither --relay nor --no-relay");
    }
    let secs = |flag: Option<f64>, file: Option<f64>, name, default| {
        flag.or(file).map_or(Ok(default), |s| seconds(s, name))
    };
    let store = args.store.or(file.store);
    let store_files = [
        args.store_ca.or(file.store_ca),
        args.store_cert.or(file.store_cert),
        args.store_key.or(file.store_key),
    ];
    Ok(Settings {
        port,
        bind: args.bind.or(file.bind).unwrap_or(IpAddr::from([0, 0, 0, 0])),
        data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(default_data_dir),
        key_file: args.key_file.or(file.key_file),
        store_tls: match &store {
            None if store_files.iter().any(Option::is_some) => {
                bail!("--store-ca, --store-cert and --store-key go with --store")
            }
            None => StoreTls::default(),
            Some(_) => {
                let [ca, cert, key] = store_files;
                StoreTls::from_files(ca.as_deref(), cert.as_deref(), key.as_deref())?
            }
        },
        store,
        metrics: args.metrics.or(file.metrics),
        udp: !(args.no_udp || file.no_udp.unwrap_or(false)),
        relay: match (args.relay.or(file.relay), args.no_relay || file.no_relay.unwrap_or(false)) {
            (Some(addr), _) => RelaySetting::At(addr),
            (None, true) => RelaySetting::Off,
            // Alone, the relay takes the port given; beside the directory, the next one.
            (None, false) if relay_only => {
                RelaySetting::Here(args.relay_port.or(file.relay_port).unwrap_or(port))
            }
            // Any free port for the directory (0): any free one for the relay too.
            (None, false) => {
                RelaySetting::Here(args.relay_port.or(file.relay_port).unwrap_or(if port == 0 {
                    0
                } else {
                    port.wrapping_add(1)
                }))
            }
        },
        relay_only,
        config: Config {
            heartbeat_timeout: secs(
                args.heartbeat_timeout,
                file.heartbeat_timeout,
                "heartbeat-timeout",
                Config::DEFAULT_HEARTBEAT_TIMEOUT,
            )?,
            handshake_timeout: secs(
                args.handshake_timeout,
                file.handshake_timeout,
                "handshake-timeout",
                Config::DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(Config::DEFAULT_MAX_CONNECTIONS),
            limits: Limits {
                sessions_per_address: pick!(sessions_per_address),
                handshakes_per_address: pick!(handshakes_per_address),
                lookups_per_second: pick!(lookups_per_second),
                address_lookups_per_second: pick!(address_lookups_per_second),
                distinct_lookups_per_day: pick!(distinct_lookups_per_day),
                address_distinct_lookups_per_day: pick!(address_distinct_lookups_per_day),
                new_numbers_per_address_per_day: pick!(new_numbers_per_address_per_day),
                tracked_lookups: pick!(tracked_lookups),
            },
            versions: match (args.protocol_versions, file.protocol_versions) {
                (Some(v), _) => v,
                (None, Some(text)) => text.parse().context("protocol-versions")?,
                (None, None) => version::SPOKEN,
            },
            ..Config::default()
        },
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    whatsap2p_cli::logging::init_server();
    let file = match args.config.take() {
        Some(path) => read_config(&path)?,
        None => FileConfig::default(),
    };
    let s = resolve(args, file)?;
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("creating data dir {}", s.data_dir.display()))?;
    let key = match &s.key_file {
        Some(path) => server_key::load_or_create_at(path)?,
        None => server_key::load_or_create(&s.data_dir)?,
    };
    let metrics = Arc::new(if s.store.is_some() { Metrics::with_shared_store() } else { Metrics::new() });
    // Ctrl-C or SIGTERM ends the directory and the relay alike.
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        whatsap2p_cli::shutdown_signal().await;
        signal.cancel();
    });
    let relay = match s.relay {
        RelaySetting::Here(port) => {
            let (task, addr) = start_relay(&s, port, key.private(), metrics.clone(), stop.clone()).await?;
            // Unspecified: clients use the address they reached the directory at.
            Some((Some(task), SocketAddr::new(IpAddr::from([0, 0, 0, 0]), addr.port())))
        }
        RelaySetting::At(addr) => {
            info!("Clients are told to use the relay at {addr}");
            Some((None, addr))
        }
        RelaySetting::Off => {
            info!("No relay (--no-relay): clients that cannot reach each other directly are not linked");
            None
        }
    };
    if s.relay_only {
        info!("Server key fingerprint: {}", key.public().fingerprint());
        let scrapes = match s.metrics {
            None => None,
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics address {addr}"))?;
                info!("Metrics at http://{}/metrics", l.local_addr()?);
                Some(tokio::spawn(whatsap2p_server::metrics::serve(l, metrics.clone(), stop.clone())))
            }
        };
        if let Some((Some(task), _)) = relay {
            task.await?;
        }
        stop.cancel();
        if let Some(scrapes) = scrapes {
            scrapes.await?;
        }
        info!("Relay stopped");
        return Ok(());
    }
    let mut s = s;
    s.config.relay = relay.as_ref().map(|(_, addr)| *addr);
    let directory = match &s.store {
        None => {
            let db = s.data_dir.join("identities.sqlite");
            let identities =
                SqliteIdentities::open(&db).with_context(|| format!("opening {}", db.display()))?;
            Directory::new(Arc::new(MemoryPresence::new()), Arc::new(identities), key.clone(), s.config)
        }
        Some(url) => {
            let address: StoreAddress = url.parse().context("--store")?;
            let (store, feed) =
                RedisStore::connect_to(&address, &s.store_tls, s.config.heartbeat_timeout, metrics.clone())
                    .context("--store")?;
            Directory::new(store.clone(), store, key.clone(), s.config).with_feed(feed)
        }
    }
    .with_metrics(metrics);
    let directory = match s.metrics {
        None => directory,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            info!("Metrics at http://{}/metrics", l.local_addr()?);
            directory.with_metrics_listener(l)
        }
    };
    // UDP on the same port number as TCP (the one picked for port 0): clients are told it.
    let (listener, udp) = bind_tcp_and_udp(SocketAddr::new(s.bind, s.port), s.udp, "").await?;
    let local = listener.local_addr()?;
    let directory = if let Some(udp) = udp {
        info!("Answering UDP address probes on {local}");
        directory.with_udp(udp)
    } else {
        info!("Not answering UDP address probes (--no-udp): clients behind NATs are reached less often");
        directory
    };
    info!("Server key fingerprint: {}", key.public().fingerprint());
    info!("Data dir: {}", s.data_dir.display());
    match &s.store {
        None => info!("Store: this process (memory and SQLite)"),
        Some(_) if s.key_file.is_none() => {
            warn!("Store: shared (Redis), but no --key-file: every instance must have this same server key")
        }
        Some(_) => info!("Store: shared (Redis)"),
    }
    info!("Listening on {local}");
    info!("Server online");
    whatsap2p_server::run(listener, directory, stop.clone().cancelled_owned()).await?;
    stop.cancel();
    if let Some((Some(task), _)) = relay {
        task.await?;
    }
    info!("Server stopped");
    Ok(())
}

/// Binds TCP at `at` and, with `udp`, UDP on the same port number. For port 0 (any free one), tries
/// ports until one is free for both: a free TCP port's UDP twin may be another program's.
async fn bind_tcp_and_udp(
    at: SocketAddr,
    udp: bool,
    what: &str,
) -> anyhow::Result<(tokio::net::TcpListener, Option<tokio::net::UdpSocket>)> {
    const TRIES: usize = 50;
    for _ in 0..TRIES {
        let listener =
            tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding {at}{what}"))?;
        if !udp {
            return Ok((listener, None));
        }
        let local = listener.local_addr()?;
        match tokio::net::UdpSocket::bind(local).await {
            Ok(socket) => return Ok((listener, Some(socket))),
            Err(_) if at.port() == 0 => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("binding UDP {local}{what} for address probes (--no-udp)"))
            }
        }
    }
    bail!("no port free for both TCP and UDP at {at}{what} after {TRIES} tries (--no-udp)")
}

/// Binds the relay (TCP, and UDP probes on the same port number) on `port` and runs it until
/// `stop`; returns its task and address.
async fn start_relay(
    s: &Settings,
    port: u16,
    server_private: &[u8; 32],
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let at = SocketAddr::new(s.bind, port);
    let (listener, udp) =
        bind_tcp_and_udp(at, s.udp, " for the relay (--relay-port to move it, --no-relay)").await?;
    let addr = listener.local_addr()?;
    let keys = whatsap2p_relay::RelayKeys::derive(server_private);
    let relay = whatsap2p_relay::Relay::new(keys, whatsap2p_relay::Limits::default(), metrics);
    info!("Relay listening on {addr}");
    let task = tokio::spawn(whatsap2p_relay::run(listener, udp, relay, stop.cancelled_owned()));
    Ok((task, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_flag_and_file_then_the_flag_wins_and_the_file_fills_the_rest() {
        let file: FileConfig = toml::from_str(
            "port = 7000\nstore = \"redis://127.0.0.1:6379/2\"\nheartbeat-timeout = 12\nmetrics = \"127.0.0.1:9100\"",
        )
        .expect("toml");
        let args = Args { heartbeat_timeout: Some(9.0), ..Default::default() };
        let s = resolve(args, file).expect("resolve");
        assert_eq!(s.port, 7000);
        assert_eq!(s.store.as_deref(), Some("redis://127.0.0.1:6379/2"));
        assert_eq!(s.config.heartbeat_timeout, Duration::from_secs(9));
        assert_eq!(s.config.handshake_timeout, Config::DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(s.metrics, Some("127.0.0.1:9100".parse().expect("addr")));
        assert_eq!(s.config.limits, Limits::default());
    }

    #[test]
    fn given_limits_in_flags_and_file_then_each_is_set_and_the_flag_wins() {
        let file: FileConfig =
            toml::from_str("port = 7000\nsessions-per-address = 50\nnew-numbers-per-address-per-day = 3")
                .expect("toml");
        let args = Args {
            new_numbers_per_address_per_day: Some(5),
            lookups_per_second: Some(0),
            ..Default::default()
        };
        let limits = resolve(args, file).expect("resolve").config.limits;
        assert_eq!(
            limits,
            Limits {
                sessions_per_address: 50,
                new_numbers_per_address_per_day: 5,
                lookups_per_second: 0,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn given_relay_settings_then_the_relay_is_beside_the_directory_alone_elsewhere_or_off() {
        let relay = |args: Args, file: &str| {
            let file: FileConfig = toml::from_str(file).expect("toml");
            resolve(args, file).map(|s| (s.relay, s.relay_only))
        };
        let port = |p| Args { port: Some(p), ..Default::default() };
        assert_eq!(relay(port(7000), "").expect("default"), (RelaySetting::Here(7001), false));
        assert_eq!(relay(port(0), "").expect("any port"), (RelaySetting::Here(0), false), "never port 1");
        assert_eq!(relay(port(7000), "relay-port = 7443").expect("file"), (RelaySetting::Here(7443), false));
        let off = Args { no_relay: true, ..port(7000) };
        assert_eq!(relay(off, "").expect("off"), (RelaySetting::Off, false));
        let at: SocketAddr = "198.51.100.7:7001".parse().expect("addr");
        let elsewhere = Args { relay: Some(at), ..port(7000) };
        assert_eq!(relay(elsewhere, "").expect("elsewhere"), (RelaySetting::At(at), false));
        let alone = Args { relay_only: true, ..port(7001) };
        assert_eq!(relay(alone, "").expect("alone"), (RelaySetting::Here(7001), true));
        let both = Args { relay_only: true, ..port(7001) };
        assert!(relay(both, "no-relay = true").is_err(), "--relay-only with no-relay");
    }

    #[test]
    fn given_store_certificates_in_the_file_then_they_are_read_and_need_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("ca");
        let file = |text: String| toml::from_str::<FileConfig>(&text).expect("toml");
        let with_store =
            format!("port = 7000\nstore = \"rediss://r:6380\"\nstore-ca = {:?}", ca.display().to_string());
        let s = resolve(Args::default(), file(with_store)).expect("resolve");
        assert!(!s.store_tls.is_empty());
        let alone = format!("port = 7000\nstore-ca = {:?}", ca.display().to_string());
        let e = resolve(Args::default(), file(alone)).err().expect("refused").to_string();
        assert!(e.contains("go with --store"), "{e}");
        let half = Args { store_cert: Some(ca.clone()), ..Default::default() };
        let e =
            resolve(half, file("port = 7000\nstore = \"rediss://r:6380\"".into())).err().expect("refused");
        assert!(e.to_string().contains("--store-key"), "{e}");
    }

    #[test]
    fn given_unknown_key_or_no_port_then_clear_errors() {
        let unknown = toml::from_str::<FileConfig>("prot = 7000").err().expect("refused").to_string();
        assert!(unknown.contains("prot"), "{unknown}");
        let none = resolve(Args::default(), FileConfig::default()).err().expect("refused").to_string();
        assert!(none.contains("no port"), "{none}");
    }
}
