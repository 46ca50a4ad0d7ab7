//! `whatsap2p`: the client. Parses flags, asks for the number if needed, starts the client core and
//! hands it to the menu, the JSON-lines front end or the terminal UI (`--tui`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use whatsap2p_cli::{input, json, menu};
use whatsap2p_client::config::ServerAddr;
use whatsap2p_client::{Client, ClientConfig, Number, StorageLimits};
use whatsap2p_proto::version::{self, Versions};

/// whatsap2p: a peer-to-peer messenger. The server only says who is online and where; messages go
/// directly, end-to-end encrypted, between clients.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The directory server's IP address or host name (a name that resolves to several addresses
    /// gives several instances of the directory).
    #[arg(required_unless_present = "server", requires = "server_port")]
    server_ip: Option<String>,
    /// The directory server's port.
    server_port: Option<u16>,
    /// Another address of the same directory, HOST:PORT (repeatable): the client registers with
    /// one, and moves to another when its session is lost. They are tried in the order given,
    /// SERVER_IP SERVER_PORT first.
    #[arg(long, value_name = "HOST:PORT")]
    server: Vec<ServerAddr>,
    /// Your number (asked for when not given).
    #[arg(long)]
    number: Option<Number>,
    /// Profile folder with your keys and contacts [default: $XDG_DATA_HOME/whatsap2p/NUMBER].
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Where to accept peers [default: 127.0.0.1:0 for a loopback server, else 0.0.0.0:0].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// UDP port for direct links through NATs (QUIC, punching), on the IP of --listen
    /// [default: chosen by the system].
    #[arg(long, default_value_t = 0)]
    listen_udp: u16,
    /// JSON lines on stdin and stdout, for scripts (see docs/json-lines.md).
    #[arg(long)]
    json: bool,
    /// The full-screen terminal UI (conversations, photos inline, transfers); the number is asked
    /// in it when not given.
    #[arg(long, conflicts_with = "json")]
    tui: bool,
    /// Where received files are saved [default: PROFILE/downloads].
    #[arg(long)]
    downloads: Option<PathBuf>,
    /// Largest file accepted automatically from a contact, in bytes.
    #[arg(long, default_value_t = ClientConfig::DEFAULT_MAX_FILE_SIZE)]
    max_file_size: u64,
    /// Send no read receipts in this run (the menu's settings, or JSON's `read_receipts`, turn
    /// them off for good).
    #[arg(long)]
    no_read_receipts: bool,
    /// Most bytes the partial files of incoming transfers (kept to resume) take together; the
    /// oldest are given up to make room.
    #[arg(long, default_value_t = StorageLimits::DEFAULT_MAX_PARTIAL_BYTES)]
    max_partial_bytes: u64,
    /// Free bytes an incoming file must leave on the downloads disk; a file that would leave less
    /// is refused for now (the sender retries later).
    #[arg(long, default_value_t = StorageLimits::DEFAULT_MIN_FREE_SPACE)]
    min_free_space: u64,
    /// The protocol versions to speak, `LOWEST-HIGHEST` [default: every version this build
    /// speaks]. Hidden: only to see how others meet a client older or newer than they are.
    #[arg(long, hide = true)]
    protocol_versions: Option<Versions>,
}

impl Args {
    /// The directory's addresses, in the order to try them.
    fn servers(&self) -> Result<Vec<ServerAddr>, String> {
        let mut servers = Vec::new();
        if let (Some(host), Some(port)) = (&self.server_ip, self.server_port) {
            servers.push(ServerAddr::new(host, port).map_err(|e| e.to_string())?);
        }
        servers.extend(self.server.iter().cloned());
        Ok(servers)
    }
}

/// The addresses, as the original showed one (`ip/port`).
fn describe(servers: &[ServerAddr]) -> String {
    let all: Vec<String> = servers.iter().map(|s| format!("{}/{}", s.host(), s.port())).collect();
    all.join(", ")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.tui {
        whatsap2p_cli::logging::init_tui();
    } else {
        whatsap2p_cli::logging::init_client();
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(e),
    }
}

/// Where the client listens, keeps its profile and saves files, for `number`.
fn config(args: &Args, number: Number) -> Result<ClientConfig, String> {
    let servers = args.servers()?;
    let listen = args.listen.unwrap_or_else(|| {
        let ip = if servers.iter().all(ServerAddr::is_loopback) {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        SocketAddr::new(ip, 0)
    });
    let profile_dir = args
        .profile
        .clone()
        .unwrap_or_else(|| whatsap2p_cli::data_home().join("whatsap2p").join(number.as_str()));
    let downloads = args.downloads.clone().unwrap_or_else(|| profile_dir.join("downloads"));
    // Absolute, so the paths reported for received files mean the same thing to any script.
    let downloads = std::fs::create_dir_all(&downloads)
        .and_then(|()| std::path::absolute(&downloads))
        .map_err(|e| format!("downloads folder {}: {e}", downloads.display()))?;
    Ok(ClientConfig {
        profile_dir,
        number,
        servers,
        listen,
        listen_udp: args.listen_udp,
        timeouts: Default::default(),
        downloads,
        max_file_size: args.max_file_size,
        storage: StorageLimits {
            max_partial_bytes: args.max_partial_bytes,
            min_free_space: args.min_free_space,
            ..Default::default()
        },
        versions: args.protocol_versions.unwrap_or(version::SPOKEN),
    })
}

async fn run(args: Args) -> Result<(), u8> {
    if args.tui {
        let server = describe(&args.servers().map_err(|e| {
            eprintln!("[!] {e}");
            1
        })?);
        let number = args.number.clone();
        let start = move |n: Number| async move {
            let config = config(&args, n)?;
            Client::start(config).await.map_err(|e| e.to_string())
        };
        return whatsap2p_tui::run(number, server, start).await.map_err(|e| {
            eprintln!("[!] {e}");
            1
        });
    }
    let fail = |json_mode: bool, message: String| {
        if json_mode {
            json::error(&message);
        } else {
            eprintln!("[!] {message}");
        }
        1u8
    };
    // One reader for the whole run: it reads ahead, so lines typed after the number (or piped with
    // it) must reach the menu through the same one.
    // The menu on a terminal edits its lines (arrows, history; what arrives prints above the line
    // being typed); piped input and JSON lines are read as they are.
    let edited = if args.json { None } else { whatsap2p_cli::terminal::open() };
    let (mut source, screen) = match edited {
        Some((editor, printer)) => (input::Source::Edited(editor), menu::Screen::edited(printer)),
        None => (input::Source::Piped(input::stdin()), menu::Screen::plain()),
    };
    let number = match args.number.clone() {
        Some(n) => n,
        None if args.json => return Err(fail(true, "--number is required with --json".into())),
        None => match menu::ask_number(&mut source, &screen).await {
            Ok(Some(n)) => n,
            Ok(None) => return Err(1),
            Err(e) => return Err(fail(false, e.to_string())),
        },
    };
    let config = config(&args, number).map_err(|e| fail(args.json, e))?;
    if !args.json {
        println!("[+] Connecting to server {}...", describe(&config.servers));
    }
    let (client, events) = Client::start(config).await.map_err(|e| fail(args.json, e.to_string()))?;
    if args.no_read_receipts {
        client.set_read_receipts(false, false).await.map_err(|e| fail(args.json, e.to_string()))?;
    }
    let result = if args.json {
        json::run(client, events, source).await
    } else {
        menu::run(client, events, source, screen).await
    };
    result.map_err(|e| fail(args.json, e.to_string()))
}
