//! The directory under test, in a process of its own: the bench re-executes itself with the hidden
//! `serve` subcommand, which runs `whatsap2p_server::run` exactly as the `whatsap2p-server` binary
//! does (memory presence and SQLite identities, or `--store` a Redis; default [`Config`]) on
//! `127.0.0.1:0`.
//!
//! A separate process gives the server its own 20 000-descriptor limit and an RSS that holds only
//! the server, and keeps the load generator's CPU time out of its address space. The child stops
//! when its stdin closes, so it never outlives the bench. Unlike the binary, it installs no log
//! subscriber: the per-request `info!` lines cost nothing here (see docs/benchmarks.md).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use whatsap2p_server::config::Limits;
use whatsap2p_server::identities::SqliteIdentities;
use whatsap2p_server::metrics::Metrics;
use whatsap2p_server::presence::MemoryPresence;
use whatsap2p_server::redis_store::RedisStore;
use whatsap2p_server::{server_key, Config, Directory};

/// The `serve` subcommand: serves on 127.0.0.1:0 until stdin closes, with the embedded stores or
/// (`store`) on a Redis, whose answer it waits for. Prints `listening <addr>`.
pub async fn serve_main(data_dir: &Path, store: Option<&str>) -> anyhow::Result<()> {
    let key = server_key::load_or_create(data_dir)?;
    // Every simulated user connects from 127.0.0.1: nothing is limited per address or per second,
    // or the figures would be the limits'. Distinct lookups are still counted per number, so their
    // cost is in the lookup figures.
    let limits =
        Limits { distinct_lookups_per_day: Limits::default().distinct_lookups_per_day, ..Limits::off() };
    let config = Config { limits, ..Config::default() };
    let directory = match store {
        None => {
            let db = data_dir.join("identities.sqlite");
            let identities =
                SqliteIdentities::open(&db).with_context(|| format!("opening {}", db.display()))?;
            Directory::new(Arc::new(MemoryPresence::new()), Arc::new(identities), key, config)
        }
        Some(url) => {
            let metrics = Arc::new(Metrics::with_shared_store());
            let (store, feed) = RedisStore::connect(url, config.heartbeat_timeout, metrics.clone())?;
            let directory = Directory::new(store.clone(), store.clone(), key, config)
                .with_feed(feed)
                .with_metrics(metrics);
            // The feed runs inside `run`: start it, then wait until the store answers.
            return serve_until_stdin_closes(directory, Some(store)).await;
        }
    };
    serve_until_stdin_closes(directory, None).await
}

async fn serve_until_stdin_closes(
    directory: Directory,
    store: Option<Arc<RedisStore>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr().context("reading the listen address")?;
    let announce = async move {
        if let Some(store) = store {
            let t0 = std::time::Instant::now();
            while !store.is_up() {
                if t0.elapsed() > std::time::Duration::from_secs(10) {
                    eprintln!("serve: the store did not answer within 10 s");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        println!("listening {addr}");
    };
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let (served, ()) = tokio::join!(whatsap2p_server::run(listener, directory, stdin_closed), announce);
    served?;
    Ok(())
}

/// A running server child.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, for reading its memory.
    pub pid: u32,
    _data: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts a server with a fresh data dir and waits until it listens.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// The same, on the Redis at `store` when given.
    pub async fn start_with(store: Option<&str>) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("whatsap2p-bench-server").tempdir()?;
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut command = Command::new(exe);
        command.arg("serve").arg("--data-dir").arg(data.path());
        if let Some(url) = store {
            command.arg("--store").arg(url);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the server child")?;
        let pid = child.id().context("server child has no pid")?;
        let stdout = child.stdout.take().context("server child has no stdout")?;
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        tokio::time::timeout(std::time::Duration::from_secs(10), stdout.read_line(&mut line))
            .await
            .context("the server child did not start within 10 s")?
            .context("reading the server child's address")?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            bail!("the server child said {line:?}");
        };
        let addr = addr.parse().with_context(|| format!("server child address {addr:?}"))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin, addr, pid, _data: data })
    }

    /// The server's resident memory, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        crate::machine::rss_bytes(self.pid)
    }

    /// Closes the server's stdin and waits (at most 10 s, then kills it) until it exits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for the server child")?;
                if !status.success() {
                    bail!("the server child exited with {status}");
                }
            }
            Err(_) => {
                self.child.kill().await.context("killing the server child")?;
                bail!("the server child did not stop within 10 s");
            }
        }
        Ok(())
    }
}
