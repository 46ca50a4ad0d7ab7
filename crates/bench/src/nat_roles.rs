//! The child processes of the `nat` group ([`crate::nat`]): the bench re-executed with a hidden
//! subcommand, inside a host of the network lab (or on loopback for the baselines). Each prints
//! `listening ADDR` or answers lines on stdin, and stops when its stdin closes, so none outlives
//! the bench.
//!
//! - `nat-relay`: the relay (`whatsap2p_relay::run`, as `whatsap2p-server --relay-only` runs it),
//!   in a process of its own so that its CPU time is the relay's alone.
//! - `nat-directory`: the directory, with UDP probes on its port number, telling clients where the
//!   relay is. Both load the server key from one data dir: the relay checks the tickets the
//!   directory seals.
//! - `nat-host`: clients (the real client core) started, driven and stopped by commands, one per
//!   line (see [`host_main`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, Notify};
use whatsap2p_client::{
    Client, ClientConfig, Event, MessageId, Number, Path as LinkPath, SendOutcome, Transport,
};
use whatsap2p_server::config::Limits;
use whatsap2p_server::identities::SqliteIdentities;
use whatsap2p_server::presence::MemoryPresence;
use whatsap2p_server::{server_key, Config, Directory};

/// How long one `send` may wait for its `Delivered` (a relayed first link takes a few round trips
/// and may wait for punching to time out first).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves when stdin closes (the bench ended or dropped us).
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// A TCP listener and a UDP socket on the same port of `bind`'s IP (`bind`'s port, or a free one
/// for 0).
async fn bind_both(bind: SocketAddr) -> anyhow::Result<(TcpListener, UdpSocket)> {
    for _ in 0..50 {
        let listener = TcpListener::bind(bind).await.with_context(|| format!("binding {bind}"))?;
        let addr = listener.local_addr()?;
        match UdpSocket::bind(addr).await {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) if bind.port() != 0 => return Err(e).with_context(|| format!("binding UDP {addr}")),
            Err(_) => continue,
        }
    }
    bail!("no port of {} free for both TCP and UDP", bind.ip())
}

/// `nat-relay`: the relay on `bind` (TCP, and UDP probes on the same port) with the key in
/// `data_dir` (made if there is none), until stdin closes.
pub async fn relay_main(bind: SocketAddr, data_dir: &Path) -> anyhow::Result<()> {
    let key = server_key::load_or_create(data_dir)?;
    let keys = whatsap2p_relay::RelayKeys::derive(key.private());
    let (listener, udp) = bind_both(bind).await?;
    let addr = listener.local_addr()?;
    let relay = whatsap2p_relay::Relay::new(
        keys,
        whatsap2p_relay::Limits::default(),
        Arc::new(whatsap2p_relay::Unobserved),
    );
    println!("listening {addr}");
    whatsap2p_relay::run(listener, Some(udp), relay, stdin_closed()).await;
    Ok(())
}

/// `nat-directory`: the directory on `bind` (TCP, and UDP probes on the same port) with the key in
/// `data_dir`, pointing clients at `relay`, until stdin closes. Its limits are off: every attempt
/// of the figures registers new numbers.
pub async fn directory_main(bind: SocketAddr, data_dir: &Path, relay: SocketAddr) -> anyhow::Result<()> {
    let key = server_key::load_or_create(data_dir)?;
    let db = data_dir.join("identities.sqlite");
    let identities = SqliteIdentities::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let config = Config { limits: Limits::off(), relay: Some(relay), ..Config::default() };
    let (listener, udp) = bind_both(bind).await?;
    let addr = listener.local_addr()?;
    let directory =
        Directory::new(Arc::new(MemoryPresence::new()), Arc::new(identities), key, config).with_udp(udp);
    println!("listening {addr}");
    whatsap2p_server::run(listener, directory, stdin_closed()).await?;
    Ok(())
}

/// When each message was delivered, filled by a client's event pump.
#[derive(Default)]
struct Deliveries {
    at: Mutex<HashMap<MessageId, Instant>>,
    notify: Notify,
}

impl Deliveries {
    /// Waits (bounded) for `id`'s `Delivered`; returns when it came.
    async fn wait(&self, id: MessageId) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(at) = self.at.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                return Ok(at);
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .with_context(|| format!("not delivered within {DELIVERY_TIMEOUT:?}"))?;
        }
    }
}

/// One client of a host, with its event pump.
struct Hosted {
    client: Client,
    deliveries: Arc<Deliveries>,
    pump: tokio::task::JoinHandle<()>,
}

/// Stamps deliveries; says `file_received N` / `file_failed N REASON` on stdout (removing the
/// received file, so a 256 MiB figure does not fill the disk).
async fn pump(me: Number, deliveries: Arc<Deliveries>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Delivered { id, .. } => {
                deliveries.at.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Instant::now());
                deliveries.notify.notify_waiters();
            }
            Event::FileReceived { path, .. } => {
                let _ = std::fs::remove_file(&path);
                println!("file_received {me}");
            }
            Event::FileFailed { reason, .. } => println!("file_failed {me} {reason}"),
            _ => {}
        }
    }
}

/// A path as one word, for the bench's parser.
pub fn path_word(path: Option<LinkPath>) -> &'static str {
    match path {
        Some(LinkPath::DirectLan { transport: Transport::Udp }) => "lan-udp",
        Some(LinkPath::DirectLan { .. }) => "lan-tcp",
        Some(LinkPath::DirectTcp) => "tcp",
        Some(LinkPath::DirectUdp) => "udp",
        Some(LinkPath::Relayed { .. }) => "relayed",
        Some(_) => "other",
        None => "none",
    }
}

fn parse_number(word: Option<&str>) -> anyhow::Result<Number> {
    let word = word.context("a number is missing")?;
    Number::new(word).with_context(|| format!("{word:?} is not a number"))
}

/// `nat-host`: clients of the directory at `server`, profiles under `root`, driven by one command
/// a line on stdin, each answered by one line on stdout (`error …` when it failed):
///
/// - `start N [C]`: starts a client numbered N (its contact C, if given) → `started N NAT`;
/// - `send N TO`: a text from N to TO → `delivered N TO MICROS PATH` (send → `Delivered`, and the
///   path the link took: `lan-tcp`, `lan-udp`, `tcp`, `udp`, `relayed`);
/// - `file N TO FILE`: starts sending FILE → `sending N TO` (TO's host says `file_received TO`);
/// - `stop N`: logs N out → `stopped N`.
///
/// Commands run one after the other; the clients' own work goes on meanwhile.
pub async fn host_main(server: SocketAddr, root: &Path) -> anyhow::Result<()> {
    let mut clients: HashMap<Number, Hosted> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match command(&line, server, root, &mut clients).await {
            Ok(answer) => println!("{answer}"),
            Err(e) => println!("error {}", format!("{e:#}").replace('\n', " ")),
        }
    }
    for (_, hosted) in clients.drain() {
        hosted.client.logout().await;
        let _ = hosted.pump.await;
    }
    Ok(())
}

async fn command(
    line: &str,
    server: SocketAddr,
    root: &Path,
    clients: &mut HashMap<Number, Hosted>,
) -> anyhow::Result<String> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let me = parse_number(words.next())?;
    match verb {
        "start" => {
            let contact = words.next().map(|w| parse_number(Some(w))).transpose()?;
            let dir = root.join(me.as_str());
            let config = ClientConfig {
                number: me.clone(),
                profile_dir: dir.join("profile"),
                servers: vec![server.into()],
                listen: SocketAddr::from(([0, 0, 0, 0], 0)),
                listen_udp: 0,
                timeouts: Default::default(),
                downloads: dir.join("downloads"),
                max_file_size: ClientConfig::DEFAULT_MAX_FILE_SIZE,
                storage: Default::default(),
                versions: whatsap2p_proto::version::SPOKEN,
            };
            let (client, events) = Client::start(config).await.context("starting a client")?;
            if let Some(c) = contact {
                client.add_contact(&c, None).await.context("adding the contact")?;
            }
            let nat = format!("{:?}", client.nat());
            let deliveries = Arc::new(Deliveries::default());
            let pump = tokio::spawn(pump(me.clone(), deliveries.clone(), events));
            clients.insert(me.clone(), Hosted { client, deliveries, pump });
            Ok(format!("started {me} {nat}"))
        }
        "send" => {
            let to = parse_number(words.next())?;
            let hosted = clients.get(&me).context("no such client here")?;
            let t0 = Instant::now();
            let (id, outcome) = hosted.client.send(&to, &"x".repeat(crate::peers::TEXT_BYTES)).await?;
            if let SendOutcome::Queued { reason } = outcome {
                bail!("queued instead of sent: {reason}");
            }
            let at = hosted.deliveries.wait(id).await?;
            let path = path_word(hosted.client.path_of(&to));
            Ok(format!("delivered {me} {to} {} {path}", (at - t0).as_micros()))
        }
        "file" => {
            let to = parse_number(words.next())?;
            let file = PathBuf::from(words.next().context("no file")?);
            let hosted = clients.get(&me).context("no such client here")?;
            hosted.client.send_file(&to, &file).await.context("send_file")?;
            Ok(format!("sending {me} {to}"))
        }
        "stop" => {
            let hosted = clients.remove(&me).context("no such client here")?;
            hosted.client.logout().await;
            let _ = hosted.pump.await;
            Ok(format!("stopped {me}"))
        }
        other => bail!("unknown command {other:?}"),
    }
}
