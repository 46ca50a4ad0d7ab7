//! How many online clients one server holds, and the server's memory per client.
//!
//! The clients live in child processes (`whatsap2p-bench hold`), a few thousand each, because every
//! process here may hold at most 20 000 descriptors and the server alone may use up to its
//! `Config::max_connections` (19 000 by default). Each child registers its share over real Noise
//! sessions, reports `ready`, heartbeats every 10 s and answers `status` on stdin with how many of its
//! sessions are still open; it exits when stdin closes. Memory per client is the server's RSS after
//! all registered minus its RSS after a warm-up, divided by the clients still online.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::lean_session::{number, Account, LeanSession};
use crate::redis_baseline::Redis;
use crate::report::{Baseline, Row, Section, Target, Unit};
use crate::server_proc::ServerProcess;
use crate::stats::Summary;
use crate::Scale;

/// Registrations in flight per child while filling.
const FILL_CONCURRENCY: usize = 32;
/// Heartbeat period of held sessions (the server drops a session silent for 30 s).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a child may take to register its share.
const FILL_TIMEOUT: Duration = Duration::from_secs(240);
/// Numbers of held clients start with this prefix.
const PREFIX: u16 = 8;

/// The `hold` subcommand: registers `count` clients numbered from `first`, holds them until stdin
/// closes. Prints `ready <ok> <failed> <rss bytes>`, then `alive <n>` for every `status` line read.
pub async fn hold_main(servers: &[SocketAddr], count: usize, first: usize) -> anyhow::Result<()> {
    anyhow::ensure!(!servers.is_empty(), "hold needs a --server");
    let accounts = (first..first + count)
        .map(|i| Account::generate(number(PREFIX, i)?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let alive = Arc::new(AtomicUsize::new(0));
    let mut failed = 0usize;
    let mut first_error = None;
    // Client i of the whole run goes to server i mod n: every server gets its share, whatever
    // the number of children.
    let server_of = |i: usize| servers[(first + i) % servers.len()];
    let mut registrations = futures::stream::iter(
        accounts.iter().enumerate().map(|(i, a)| LeanSession::register(server_of(i), a)),
    )
    .buffer_unordered(FILL_CONCURRENCY);
    while let Some(r) = registrations.next().await {
        match r {
            Ok(session) => {
                alive.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(hold(session, alive.clone()));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    drop(registrations);
    if let Some(e) = first_error {
        eprintln!("hold: {failed} registrations failed, the first with: {e}");
    }
    let rss = crate::machine::rss_bytes(std::process::id()).unwrap_or(0);
    println!("ready {} {failed} {rss}", alive.load(Ordering::Relaxed));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "status" {
            println!("alive {}", alive.load(Ordering::Relaxed));
        }
    }
    Ok(())
}

async fn hold(mut session: LeanSession, alive: Arc<AtomicUsize>) {
    let mut ticker = tokio::time::interval(HEARTBEAT);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => if session.heartbeat().await.is_err() { break },
            msg = session.next() => if msg.is_err() { break },
        }
    }
    alive.fetch_sub(1, Ordering::Relaxed);
}

/// A `hold` child.
struct Holder {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    fn spawn(servers: &[SocketAddr], count: usize, first: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut command = Command::new(exe);
        command.arg("hold");
        for s in servers {
            command.args(["--server", &s.to_string()]);
        }
        let mut child = command
            .args(["--count", &count.to_string()])
            .args(["--first", &first.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a hold child")?;
        let stdin = child.stdin.take().context("hold child has no stdin")?;
        let stdout = child.stdout.take().context("hold child has no stdout")?;
        Ok(Self { _child: child, stdin, lines: BufReader::new(stdout).lines() })
    }

    async fn line(&mut self, timeout: Duration) -> anyhow::Result<Vec<u64>> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .context("a hold child did not answer in time")?
            .context("reading a hold child")?
            .context("a hold child exited")?;
        line.split_whitespace()
            .skip(1)
            .map(|w| w.parse().with_context(|| format!("hold child said {line:?}")))
            .collect()
    }

    async fn alive(&mut self) -> anyhow::Result<u64> {
        self.stdin.write_all(b"status\n").await.context("asking a hold child")?;
        self.stdin.flush().await.context("asking a hold child")?;
        self.line(Duration::from_secs(10)).await?.first().copied().context("empty status")
    }
}

/// One run's result.
struct Run {
    online: u64,
    server_bytes_per_client: f64,
    fill_rate: f64,
    load_bytes_per_client: f64,
    /// Redis's `used_memory` growth per online client (runs on a shared store only).
    redis_bytes_per_client: Option<f64>,
}

/// Fills `instances` servers (the memory store when `shared` is false, else on one fresh Redis)
/// with `target` clients from `processes` hold children, client `i` on server `i % instances`.
async fn one_run(target: usize, processes: usize, instances: usize, shared: bool) -> anyhow::Result<Run> {
    let redis = match shared {
        true => Some(Redis::start().await?),
        false => None,
    };
    let url = redis.as_ref().map(Redis::url);
    let mut servers = Vec::new();
    for _ in 0..instances {
        servers.push(ServerProcess::start_with(url.as_deref()).await?);
    }
    let result = fill(target, processes, &servers, redis.as_ref()).await;
    for s in servers {
        s.stop().await?;
    }
    if let Some(r) = redis {
        r.stop().await;
    }
    result
}

async fn fill(
    target: usize,
    processes: usize,
    servers: &[ServerProcess],
    redis: Option<&Redis>,
) -> anyhow::Result<Run> {
    // Warm-up: the runtime, the allocator's arenas and SQLite see some traffic before the baseline.
    let warm: Vec<Account> =
        (0..200).map(|i| Account::generate(number(PREFIX + 1, i)?)).collect::<anyhow::Result<_>>()?;
    for (i, chunk) in warm.chunks(50).enumerate() {
        let server = servers[i % servers.len()].addr;
        let sessions =
            futures::future::try_join_all(chunk.iter().map(|a| LeanSession::register(server, a))).await?;
        for s in sessions {
            s.logout().await?;
        }
    }
    // The probe that spot-checks presence at the end is online from here on and counts as one of
    // the clients: the server refuses a session over its cap, so it cannot come in last.
    let checker = Account::generate(number(PREFIX + 2, 0)?)?;
    let mut probe = LeanSession::register(servers[0].addr, &checker).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = || servers.iter().map(|s| s.rss()).sum::<anyhow::Result<u64>>();
    let before = rss()?;
    let redis_before = match redis {
        Some(r) => Some(r.used_memory().await?),
        None => None,
    };
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let t0 = Instant::now();
    let held = target - 1;
    let share = held.div_ceil(processes);
    let mut holders = Vec::new();
    for p in 0..processes {
        let count = share.min(held - p * share);
        holders.push(Holder::spawn(&addrs, count, p * share)?);
    }
    let (registered, load_rss) = {
        let ready = async {
            let (mut registered, mut load_rss) = (0u64, 0u64);
            for h in &mut holders {
                let ready = h.line(FILL_TIMEOUT).await?;
                let [ok, _failed, rss] = ready[..] else { bail!("hold child said {ready:?}") };
                registered += ok;
                load_rss += rss;
            }
            Ok((registered, load_rss))
        };
        // The probe beats like every other client while they come in: a large fill outlasts the
        // server's heartbeat timeout.
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        tokio::pin!(ready);
        loop {
            tokio::select! {
                r = &mut ready => break r?,
                _ = beat.tick() => probe.heartbeat().await?,
            }
        }
    };
    let fill = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut alive = 0;
    for h in &mut holders {
        alive += h.alive().await?;
    }
    let after = rss()?;
    let redis_after = match redis {
        Some(r) => Some(r.used_memory().await?),
        None => None,
    };
    // Spot check through the directory itself: the first and last client of every child are
    // online, seen from the first server whichever server they are on.
    for p in 0..processes {
        let count = share.min(held - p * share);
        for i in [p * share, p * share + count - 1] {
            if !probe.is_online(&number(PREFIX, i)?).await? {
                bail!("client {i} registered but the directory says it is offline");
            }
        }
    }
    probe.logout().await?;
    drop(holders);
    if alive == 0 {
        bail!("no client stayed online");
    }
    Ok(Run {
        online: alive + 1,
        server_bytes_per_client: after.saturating_sub(before) as f64 / alive as f64,
        fill_rate: registered as f64 / fill.as_secs_f64(),
        load_bytes_per_client: load_rss as f64 / registered.max(1) as f64,
        redis_bytes_per_client: redis_before
            .zip(redis_after)
            .map(|(b, a)| a.saturating_sub(b) as f64 / (alive + 1) as f64),
    })
}

/// `count` runs of [`one_run`], stopping at the first error, and a summary of one figure of them.
struct Runs {
    runs: Vec<Run>,
    error: Option<String>,
}

impl Runs {
    async fn measure(count: usize, target: usize, processes: usize, instances: usize, shared: bool) -> Self {
        let (mut runs, mut error) = (Vec::new(), None);
        for _ in 0..count {
            match one_run(target, processes, instances, shared).await {
                Ok(r) => runs.push(r),
                Err(e) => {
                    error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        Self { runs, error }
    }

    fn pick(&self, f: impl Fn(&Run) -> Option<f64>) -> Result<Summary, String> {
        match (&self.error, Summary::of(&self.runs.iter().filter_map(f).collect::<Vec<_>>())) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(s)) => Ok(s),
            (None, None) => Err("no run".into()),
        }
    }
}

/// The capacity and memory figures.
pub async fn capacity(scale: &Scale) -> Section {
    let target = scale.capacity_clients;
    let runs = Runs::measure(scale.capacity_runs, target, scale.hold_processes, 1, false).await;
    let pick = |f: fn(&Run) -> f64| runs.pick(|r| Some(f(r)));
    let fill = pick(|r| r.fill_rate);
    let load = pick(|r| r.load_bytes_per_client / 1024.0);
    let mut details = vec![format!(
        "{target} clients asked for, registered by {} `whatsap2p-bench hold` child process(es) ({FILL_CONCURRENCY} \
         registrations in flight each), held with a heartbeat every {} s; a fresh server per run ({} runs), warmed \
         with 200 registrations; memory is `VmRSS` from /proc/<server pid>/status (kernel socket buffers are not in it). \
         The server's own cap is `Config::DEFAULT_MAX_CONNECTIONS` = {}.",
        scale.hold_processes,
        HEARTBEAT.as_secs(),
        scale.capacity_runs,
        whatsap2p_server::Config::DEFAULT_MAX_CONNECTIONS
    )];
    if let (Ok(fill), Ok(load)) = (&fill, &load) {
        details.push(format!(
            "While filling: {} registrations (median, min–max; key generation in the children included); the load \
             processes used {} of RSS per client.",
            Unit::PerSec.show_summary(fill),
            Unit::Kib.show_summary(load)
        ));
    }
    Section {
        group: "capacity",
        rows: vec![
            Row {
                group: "capacity",
                figure: "concurrent online clients held by one server".into(),
                unit: Unit::Clients,
                ours: pick(|r| r.online as f64),
                baseline: Baseline::None,
                target: Target::AtLeast(target as f64),
            },
            Row {
                group: "capacity",
                figure: "server memory per online client (RSS delta ÷ clients)".into(),
                unit: Unit::Kib,
                ours: pick(|r| r.server_bytes_per_client / 1024.0),
                baseline: Baseline::None,
                target: Target::AtMost(4.0),
            },
        ],
        details,
    }
}

/// Clients held across several instances on one Redis, with the servers' and Redis's memory per
/// client.
pub async fn spread(scale: &Scale) -> Section {
    let (target, instances, processes) =
        (scale.spread_clients, scale.spread_instances, scale.spread_hold_processes);
    let runs = Runs::measure(scale.spread_runs, target, processes, instances, true).await;
    let mut details = vec![format!(
        "{target} clients asked for, registered by {processes} `whatsap2p-bench hold` child process(es) (client i on \
         instance i mod {instances}), held with a heartbeat every {} s, across {instances} `whatsap2p-bench serve \
         --store` instances on one fresh redis-server per run (`--save \"\" --appendonly no`; {} run(s)); each \
         process may open 20 000 files. Server memory: the instances' `VmRSS` growth while filling, summed, per \
         client; Redis memory: `used_memory` growth (INFO memory) per online client (its binding and its presence \
         entry). The probe checks from instance 0 that the first and last client of every child are online.",
        HEARTBEAT.as_secs(),
        scale.spread_runs,
    )];
    if let Ok(fill) = runs.pick(|r| Some(r.fill_rate)) {
        details.push(format!("While filling: {} registrations.", Unit::PerSec.show_summary(&fill)));
    }
    Section {
        group: "spread",
        rows: vec![
            Row {
                group: "spread",
                figure: format!("concurrent online clients across {instances} instances on one Redis"),
                unit: Unit::Clients,
                ours: runs.pick(|r| Some(r.online as f64)),
                baseline: Baseline::None,
                target: Target::AtLeast(target as f64),
            },
            Row {
                group: "spread",
                figure: format!(
                    "server memory per online client, {instances} instances (RSS deltas ÷ clients)"
                ),
                unit: Unit::Kib,
                ours: runs.pick(|r| Some(r.server_bytes_per_client / 1024.0)),
                baseline: Baseline::None,
                target: Target::AtMost(4.0),
            },
            Row {
                group: "spread",
                figure: "Redis memory per online user (used_memory delta ÷ users)".into(),
                unit: Unit::Kib,
                ours: runs.pick(|r| r.redis_bytes_per_client.map(|b| b / 1024.0)),
                baseline: Baseline::None,
                target: Target::Report,
            },
        ],
        details,
    }
}
