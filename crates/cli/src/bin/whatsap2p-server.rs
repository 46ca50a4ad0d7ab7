//! `whatsap2p-server`: the directory. Parses flags, opens the data dir, binds, and serves until
//! Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::info;
use whatsap2p_server::identities::SqliteIdentities;
use whatsap2p_server::presence::MemoryPresence;
use whatsap2p_server::{server_key, Config, Directory};

/// The whatsap2p directory server: who is online and where. It never carries a message.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TCP port to listen on (0 picks a free one, printed at start).
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Where the server key and the number → key bindings live
    /// [default: $XDG_DATA_HOME/whatsap2p-server or ~/.local/share/whatsap2p-server].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds without a heartbeat after which a user is offline.
    #[arg(long, default_value_t = Config::DEFAULT_HEARTBEAT_TIMEOUT.as_secs_f64())]
    heartbeat_timeout: f64,
    /// Seconds a connection has to finish the handshake.
    #[arg(long, default_value_t = Config::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout: f64,
    /// Most sessions open at once.
    #[arg(long, default_value_t = Config::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    whatsap2p_cli::logging::init_server();
    let config = Config {
        heartbeat_timeout: seconds(args.heartbeat_timeout, "heartbeat-timeout")?,
        handshake_timeout: seconds(args.handshake_timeout, "handshake-timeout")?,
        max_connections: args.max_connections,
    };
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let key = server_key::load_or_create(&data_dir)?;
    let identities = SqliteIdentities::open(&data_dir.join("identities.sqlite"))
        .with_context(|| format!("opening {}", data_dir.join("identities.sqlite").display()))?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.bind, args.port))?;
    let local = listener.local_addr()?;
    info!("Server key fingerprint: {}", key.public().fingerprint());
    info!("Data dir: {}", data_dir.display());
    info!("Listening on {local}");
    info!("Server online");
    let directory = Directory::new(Arc::new(MemoryPresence::new()), Arc::new(identities), key, config);
    whatsap2p_server::run(listener, directory, whatsap2p_cli::shutdown_signal()).await?;
    info!("Server stopped");
    Ok(())
}
