//! `whatsap2p-bench`: starts its own server and clients, measures each figure beside a baseline taken
//! in the same run, prints a table and writes `docs/benchmarks.md`.
//!
//! `cargo run --release --bin whatsap2p-bench -- [--quick] [--only GROUP,...]`. Every figure is the
//! median of several timed runs after a warm-up, with their min and max; `--quick` runs each at a
//! small scale (for CI, well under two minutes). The report goes between markers in
//! `docs/benchmarks.md`, one block for full runs and one for quick runs, so the analysis written
//! around them stays; `--only` prints without writing.
//!
//! # Layout
//! - [`directory_load`]: lookups/s (beside redis-benchmark, see [`redis_baseline`]) and registrations/s.
//! - [`capacity`]: online clients one server holds and its memory per client; the same across
//!   instances on one Redis (group `spread`); the `hold` children.
//! - [`instances`]: lookups/s and registrations/s through 1, 2 and 4 instances on one Redis.
//! - [`peers`]: message latency, first message, file throughput and client start, through the real
//!   client core.
//! - [`wormhole`]: the same file transfer beside magic-wormhole, with its servers in network
//!   namespaces of the bench's own.
//! - [`tui`]: the terminal UI opening a long conversation and drawing a frame.
//! - [`nat`]: first messages, files and direct-path success across NAT routers of the network lab,
//!   with its child processes in [`nat_roles`].
//! - [`lean_session`]: the lean directory client the load generators use.
//! - [`server_proc`]: the server under test in a child process (the `serve` subcommand).
//! - [`report`], [`stats`], [`machine`]: the table, medians and percentiles, and what /proc says.

#![forbid(unsafe_code)]

mod capacity;
mod directory_load;
mod instances;
mod lean_session;
mod machine;
mod nat;
mod nat_roles;
mod peers;
mod redis_baseline;
mod report;
mod server_proc;
mod stats;
mod tui;
mod wormhole;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// Every group of figures, in the order they run.
const GROUPS: [&str; 12] = [
    "lookups",
    "registrations",
    "capacity",
    "instances",
    "spread",
    "latency",
    "file",
    "wormhole",
    "group",
    "start",
    "tui",
    "nat",
];

/// Benchmarks of whatsap2p against baselines measured in the same run.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Small scale, for CI: every figure, well under two minutes.
    #[arg(long)]
    quick: bool,
    /// Only these groups (comma-separated: lookups, registrations, capacity, instances, spread, latency, file,
    /// wormhole, group, start, tui, nat); the report is printed but not written.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the report.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/benchmarks.md"))]
    out: PathBuf,
    #[command(subcommand)]
    role: Option<Role>,
}

/// Roles of the child processes the bench starts itself.
#[derive(Subcommand)]
enum Role {
    /// Runs the directory server on 127.0.0.1:0 until stdin closes.
    #[command(hide = true)]
    Serve {
        /// The server's data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// A Redis to share presence and bindings in.
        #[arg(long)]
        store: Option<String>,
    },
    /// Registers and holds clients until stdin closes.
    #[command(hide = true)]
    Hold {
        /// The servers (repeatable): client i goes to server i mod n.
        #[arg(long, required = true)]
        server: Vec<SocketAddr>,
        /// How many clients.
        #[arg(long)]
        count: usize,
        /// Index of the first client's number.
        #[arg(long)]
        first: usize,
    },
    /// The relay of the `nat` group, until stdin closes.
    #[command(hide = true)]
    NatRelay {
        /// Where to listen (TCP, and UDP probes on the same port).
        #[arg(long)]
        bind: SocketAddr,
        /// Where the server key is (made if absent).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// The directory of the `nat` group, until stdin closes.
    #[command(hide = true)]
    NatDirectory {
        /// Where to listen (TCP, and UDP probes on the same port).
        #[arg(long)]
        bind: SocketAddr,
        /// Where the server key and the identities are.
        #[arg(long)]
        data_dir: PathBuf,
        /// The relay clients are told to use.
        #[arg(long)]
        relay: SocketAddr,
    },
    /// Clients of the `nat` group driven by lines on stdin, until it closes.
    #[command(hide = true)]
    NatHost {
        /// The directory.
        #[arg(long)]
        server: SocketAddr,
        /// Where the clients' profiles go.
        #[arg(long)]
        root: PathBuf,
    },
}

/// How big each figure's measurement is.
#[derive(Clone)]
pub struct Scale {
    /// Timed runs per figure.
    pub runs: usize,
    /// Warm-up before timed lookup windows.
    pub warmup: Duration,
    /// One timed lookup window (and about one redis-benchmark run).
    pub window: Duration,
    /// Registrations per timed run.
    pub registrations_per_run: usize,
    /// Clients to hold in the capacity figure.
    pub capacity_clients: usize,
    /// Runs of the capacity figure.
    pub capacity_runs: usize,
    /// Child processes holding those clients.
    pub hold_processes: usize,
    /// Messages per latency run.
    pub messages_per_run: usize,
    /// Samples of the first message to a new contact.
    pub first_message_samples: usize,
    /// Size of the file sent.
    pub file_size: u64,
    /// Timed file transfers.
    pub file_runs: usize,
    /// Samples of client start.
    pub start_samples: usize,
    /// Members of the group in the fan-out figure.
    pub group_members: usize,
    /// Timed runs of the fan-out figure (each a few milliseconds, so many).
    pub group_runs: usize,
    /// Clients held across instances on one Redis.
    pub spread_clients: usize,
    /// Instances they are spread over.
    pub spread_instances: usize,
    /// Child processes holding them (each may open 20 000 files).
    pub spread_hold_processes: usize,
    /// Runs of the spread figure.
    pub spread_runs: usize,
    /// Messages in the conversation the terminal UI opens.
    pub tui_messages: usize,
    /// First messages per NAT pairing (and on loopback) in the `nat` group.
    pub nat_attempts: usize,
    /// Size of the file the `nat` group sends relayed, direct and punched.
    pub nat_file_size: u64,
    /// Timed transfers of it on each path.
    pub nat_file_runs: usize,
}

impl Scale {
    fn quick() -> Self {
        Self {
            runs: 3,
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(1),
            registrations_per_run: 300,
            capacity_clients: 1_000,
            capacity_runs: 3,
            hold_processes: 1,
            messages_per_run: 200,
            first_message_samples: 5,
            file_size: 32 << 20,
            file_runs: 3,
            start_samples: 5,
            group_members: 10,
            group_runs: 5,
            spread_clients: 2_000,
            spread_instances: 2,
            spread_hold_processes: 2,
            spread_runs: 1,
            tui_messages: 10_000,
            nat_attempts: 3,
            nat_file_size: 8 << 20,
            nat_file_runs: 1,
        }
    }

    fn full() -> Self {
        Self {
            runs: 5,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(4),
            registrations_per_run: 2_000,
            capacity_clients: whatsap2p_server::Config::DEFAULT_MAX_CONNECTIONS,
            capacity_runs: 3,
            hold_processes: 4,
            messages_per_run: 1_000,
            first_message_samples: 20,
            file_size: 256 << 20,
            file_runs: 3,
            start_samples: 20,
            group_members: 50,
            group_runs: 40,
            spread_clients: 100_000,
            spread_instances: 6,
            spread_hold_processes: 7,
            spread_runs: 1,
            tui_messages: 100_000,
            nat_attempts: 20,
            nat_file_size: 256 << 20,
            nat_file_runs: 3,
        }
    }
}

async fn run_group(group: &str, scale: &Scale) -> report::Section {
    match group {
        "lookups" => directory_load::lookups(scale).await,
        "registrations" => directory_load::registrations(scale).await,
        "capacity" => capacity::capacity(scale).await,
        "instances" => instances::instances(scale).await,
        "spread" => capacity::spread(scale).await,
        "latency" => peers::latency(scale).await,
        "file" => peers::file(scale).await,
        "wormhole" => wormhole::wormhole(scale).await,
        "group" => peers::group(scale).await,
        "tui" => tui::tui(scale).await,
        "nat" => nat::nat(scale).await,
        _ => peers::client_start(scale).await,
    }
}

const TEMPLATE: &str = "# Benchmarks\n\n## Full run\n\n<!-- whatsap2p-bench:full:begin -->\n\
    <!-- whatsap2p-bench:full:end -->\n\n## Quick run\n\n<!-- whatsap2p-bench:quick:begin -->\n\
    <!-- whatsap2p-bench:quick:end -->\n";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = machine::raise_nofile()?;
    match args.role {
        Some(Role::Serve { data_dir, store }) => {
            return server_proc::serve_main(&data_dir, store.as_deref()).await
        }
        Some(Role::Hold { server, count, first }) => return capacity::hold_main(&server, count, first).await,
        Some(Role::NatRelay { bind, data_dir }) => return nat_roles::relay_main(bind, &data_dir).await,
        Some(Role::NatDirectory { bind, data_dir, relay }) => {
            return nat_roles::directory_main(bind, &data_dir, relay).await
        }
        Some(Role::NatHost { server, root }) => return nat_roles::host_main(server, &root).await,
        None => {}
    }
    if let Some(unknown) = args.only.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        anyhow::bail!("unknown group {unknown:?}; the groups are {}", GROUPS.join(", "));
    }
    let scale = if args.quick { Scale::quick() } else { Scale::full() };
    let machine = machine::Machine::detect();
    println!(
        "whatsap2p-bench{}: {} CPUs ({}), descriptor limit {nofile}",
        if args.quick { " --quick" } else { "" },
        machine.cpus,
        machine.cpu_model
    );
    let t0 = Instant::now();
    let mut sections = Vec::new();
    for group in GROUPS.iter().filter(|g| args.only.is_empty() || args.only.iter().any(|o| o == *g)) {
        let started = Instant::now();
        eprintln!("[{:>5.1}s] {group} …", t0.elapsed().as_secs_f64());
        sections.push(run_group(group, &scale).await);
        eprintln!(
            "[{:>5.1}s] {group} done in {:.1}s",
            t0.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    println!();
    report::print_table(&sections);
    for s in &sections {
        for d in &s.details {
            println!("\n[{}] {d}", s.group);
        }
    }
    let info = report::RunInfo {
        quick: args.quick,
        date: machine::utc_now(),
        machine: &machine,
        command: format!(
            "cargo run --release --bin whatsap2p-bench{}",
            if args.quick { " -- --quick" } else { "" }
        ),
        elapsed_secs: t0.elapsed().as_secs_f64(),
    };
    if args.only.is_empty() {
        let block = report::markdown(&info, &sections);
        report::write_block(&args.out, &block, args.quick, TEMPLATE)?;
        println!("\nwrote {}", args.out.display());
    }
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
    // A figure of ours that failed is a broken product or a broken bench: either way CI goes red
    // (a baseline that is unavailable is not).
    let failed: Vec<&str> = sections
        .iter()
        .flat_map(|s| &s.rows)
        .filter(|r| r.ours.is_err())
        .map(|r| r.figure.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("{} figures failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}
