//! Directory throughput: lookups per second over 50 encrypted sessions (one request in flight per
//! session, then 16), beside `redis-benchmark -t get -c 50` (and `-P 16`); and registrations per
//! second (TCP connect, Noise handshake, identity proof, `Register`, answer, `Logout`).
//!
//! Each lookup asks for a number that is online, so the server answers from presence (memory); a
//! lookup of an offline number would also read SQLite. Lookup runs are consecutive windows of
//! continuous load after a warm-up; registration runs are fixed batches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::future::try_join_all;
use tokio::task::JoinSet;

use crate::lean_session::{number, Account, LeanSession};
use crate::redis_baseline::{Rate, Redis, CLIENTS};
use crate::report::{Baseline, Row, Section, Target, Unit};
use crate::server_proc::ServerProcess;
use crate::stats::Summary;
use crate::Scale;

/// Lookups in flight per session in the pipelined figure, as `redis-benchmark -P 16`.
pub const PIPELINE: usize = 16;
/// Concurrent registrations, as many as the lookup sessions.
const REGISTER_CONCURRENCY: usize = 50;

/// Registers `count` fresh accounts numbered from `prefix`, spread over `servers` in turn.
async fn sessions(
    servers: &[SocketAddr],
    prefix: u16,
    count: usize,
) -> anyhow::Result<Vec<(Account, LeanSession)>> {
    let accounts =
        (0..count).map(|i| Account::generate(number(prefix, i)?)).collect::<anyhow::Result<Vec<_>>>()?;
    try_join_all(accounts.into_iter().enumerate().map(|(i, a)| async move {
        let s = LeanSession::register(servers[i % servers.len()], &a).await?;
        Ok::<_, anyhow::Error>((a, s))
    }))
    .await
}

/// Lookups per second in consecutive windows, `depth` lookups in flight per session, the sessions
/// spread over `servers` (each then asks for a number registered on the next server). `prefix`
/// keeps the numbers of separate runs on one store apart.
pub async fn lookup_rates(
    servers: &[ServerProcess],
    depth: usize,
    prefix: u16,
    scale: &Scale,
) -> anyhow::Result<Vec<Rate>> {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let registered = sessions(&addrs, prefix, CLIENTS).await?;
    let numbers: Vec<_> = registered.iter().map(|(a, _)| a.number.clone()).collect();
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for (i, (_, mut session)) in registered.into_iter().enumerate() {
        // Each session asks for the next one's number: always online, spread over the map.
        let wanted = numbers[(i + 1) % numbers.len()].clone();
        let (count, stop) = (count.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = session.lookup_batch(&wanted, depth).await?;
                count.fetch_add(n, Ordering::Relaxed);
            }
            // Logging out here could take this number offline while a neighbour still asks for it.
            Ok::<_, anyhow::Error>(session)
        });
    }
    let watch = async {
        tokio::time::sleep(scale.warmup).await;
        let mut rates = Vec::new();
        let cpu = || {
            let mut server = 0.0;
            for s in servers {
                server += crate::machine::cpu_seconds(s.pid)?.0;
            }
            let (load, _) = crate::machine::cpu_seconds(std::process::id())?;
            Ok::<_, anyhow::Error>((server, load))
        };
        for _ in 0..scale.runs {
            let (c0, t0, cpu0) = (count.load(Ordering::Relaxed), Instant::now(), cpu()?);
            tokio::time::sleep(scale.window).await;
            let (c1, t1, cpu1) = (count.load(Ordering::Relaxed), Instant::now(), cpu()?);
            let n = (c1 - c0).max(1) as f64;
            rates.push(Rate {
                per_sec: (c1 - c0) as f64 / (t1 - t0).as_secs_f64(),
                server_cpu_us: (cpu1.0 - cpu0.0) * 1e6 / n,
                client_cpu_us: (cpu1.1 - cpu0.1) * 1e6 / n,
            });
        }
        Ok::<_, anyhow::Error>(rates)
    };
    // A session that fails ends the measurement with its error instead of a figure that hides it.
    let rates = tokio::select! {
        rates = watch => rates?,
        Some(joined) = tasks.join_next() => {
            joined.context("a lookup task panicked")??;
            anyhow::bail!("a lookup session ended early");
        }
    };
    stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.context("a lookup task panicked")??);
    }
    for session in done {
        session.logout().await?;
    }
    Ok(rates)
}

/// Redis GETs per second over `runs` runs of about `window` each, after a calibrating warm-up run.
pub async fn redis_rates(
    redis: &Redis,
    pipeline: usize,
    scale: &Scale,
) -> anyhow::Result<(Vec<Rate>, String)> {
    let warm = 20_000 * pipeline as u64;
    let estimate = redis.get_rate(pipeline, warm).await?.per_sec;
    let requests = ((estimate * scale.window.as_secs_f64()) as u64).max(10_000);
    let mut rates = Vec::new();
    for _ in 0..scale.runs {
        rates.push(redis.get_rate(pipeline, requests).await?);
    }
    Ok((rates, redis.command(pipeline, requests)))
}

/// "server X µs, load generator Y µs" from the medians of the runs.
pub fn cpu_text(rates: &[Rate]) -> String {
    let med = |f: fn(&Rate) -> f64| Summary::of(&rates.iter().map(f).collect::<Vec<_>>()).map(|s| s.median);
    match (med(|r| r.server_cpu_us), med(|r| r.client_cpu_us)) {
        (Some(server), Some(client)) => format!("server {server:.2} µs, load generator {client:.2} µs"),
        _ => "not measured".into(),
    }
}

/// Registrations per second: `accounts[range]`, [`REGISTER_CONCURRENCY`] at a time, through
/// `servers` in turn.
pub async fn registration_rate(
    servers: &[SocketAddr],
    accounts: &Arc<Vec<Account>>,
    range: std::ops::Range<usize>,
) -> anyhow::Result<f64> {
    let servers: Arc<[SocketAddr]> = servers.into();
    let next = Arc::new(AtomicUsize::new(range.start));
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..REGISTER_CONCURRENCY {
        let (accounts, next, end, servers) = (accounts.clone(), next.clone(), range.end, servers.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                LeanSession::register(servers[i % servers.len()], &accounts[i]).await?.logout().await?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a registration task panicked")??;
    }
    Ok(range.len() as f64 / t0.elapsed().as_secs_f64())
}

pub fn summary(r: anyhow::Result<Vec<f64>>) -> Result<Summary, String> {
    r.map_err(|e| format!("{e:#}")).and_then(|v| Summary::of(&v).ok_or_else(|| "no run".to_owned()))
}

pub fn per_sec(r: &anyhow::Result<Vec<Rate>>) -> anyhow::Result<Vec<f64>> {
    match r {
        Ok(rates) => Ok(rates.iter().map(|r| r.per_sec).collect()),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    }
}

/// The two lookup figures, each beside its redis baseline.
pub async fn lookups(scale: &Scale) -> Section {
    let mut details = vec![format!(
        "Load: {CLIENTS} sessions of a lean client (crates/bench/src/lean_session.rs: real Noise XX handshake, \
         identity proof, `Register`) in the bench process; each looks up another registered (online) number. \
         Closed loop: a session sends its {} lookup(s) in one write and waits for all answers. Server: \
         `whatsap2p_server::run` with `Config::default()`, limits per address and per second off (every \
         session comes from 127.0.0.1), in a child process (`whatsap2p-bench serve`). \
         Warm-up {:.1} s, then {} consecutive windows of {:.1} s.",
        "1 or 16",
        scale.warmup.as_secs_f64(),
        scale.runs,
        scale.window.as_secs_f64()
    )];
    let ours = async {
        let server = [ServerProcess::start().await?];
        let single = lookup_rates(&server, 1, 72, scale).await;
        let piped = lookup_rates(&server, PIPELINE, 87, scale).await;
        let [server] = server;
        server.stop().await?;
        Ok::<_, anyhow::Error>((single, piped))
    }
    .await;
    let (single, piped) = match ours {
        Ok(pair) => pair,
        Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
    };
    for (depth, r) in [(1, &single), (PIPELINE, &piped)] {
        if let Ok(rates) = r {
            details.push(format!(
                "CPU time per lookup, {depth} in flight (median of the windows): {}.",
                cpu_text(rates)
            ));
        }
    }
    let (base_single, base_piped) = match Redis::start().await {
        Err(e) => {
            details.push(format!(
                "Baseline unavailable: {e:#}. `scripts/bench-deps` installs redis-server and redis-tools."
            ));
            let why = "redis not installed or not starting";
            (Baseline::Unavailable(why.into()), Baseline::Unavailable(why.into()))
        }
        Ok(redis) => {
            details.push(format!(
                "Baseline: {} on a free loopback port with `--save \"\" --appendonly no`; a calibrating run, then {} runs \
                 sized to about {:.1} s each; GETs hit a {}-byte value set beforehand.",
                redis.version,
                scale.runs,
                scale.window.as_secs_f64(),
                crate::redis_baseline::VALUE_BYTES
            ));
            let mut out = Vec::new();
            for pipeline in [1, PIPELINE] {
                out.push(match redis_rates(&redis, pipeline, scale).await {
                    Ok((rates, command)) => {
                        details.push(format!(
                            "Baseline command: `{command}`; CPU time per GET: {}.",
                            cpu_text(&rates)
                                .replace("server", "redis-server")
                                .replace("load generator", "redis-benchmark")
                        ));
                        Summary::of(&rates.iter().map(|r| r.per_sec).collect::<Vec<_>>())
                            .map(Baseline::Measured)
                            .unwrap_or_else(|| Baseline::Unavailable("no run".into()))
                    }
                    Err(e) => Baseline::Unavailable(format!("redis-benchmark failed: {e:#}")),
                });
            }
            redis.stop().await;
            let piped = out.pop().unwrap_or(Baseline::None);
            let single = out.pop().unwrap_or(Baseline::None);
            (single, piped)
        }
    };
    Section {
        group: "lookups",
        rows: vec![
            Row {
                group: "lookups",
                figure: format!("directory lookups/s, {CLIENTS} encrypted sessions (redis: GET -c {CLIENTS})"),
                unit: Unit::PerSec,
                ours: summary(per_sec(&single)),
                baseline: base_single,
                target: Target::RatioAtLeast(1.0),
            },
            Row {
                group: "lookups",
                figure: format!(
                    "directory lookups/s, {CLIENTS} sessions × {PIPELINE} in flight (redis: GET -c {CLIENTS} -P {PIPELINE})"
                ),
                unit: Unit::PerSec,
                ours: summary(per_sec(&piped)),
                baseline: base_piped,
                // Issue 15: the memory store keeps up with redis under pipelining.
                target: Target::RatioAtLeast(1.0),
            },
        ],
        details,
    }
}

/// Registrations per second, first-time (binds the number in SQLite) and returning.
pub async fn registrations(scale: &Scale) -> Section {
    let per_run = scale.registrations_per_run;
    let warm = 200;
    let result = async {
        let server = ServerProcess::start().await?;
        let total = warm + per_run * scale.runs;
        let accounts = Arc::new(
            (0..total).map(|i| Account::generate(number(61, i)?)).collect::<anyhow::Result<Vec<_>>>()?,
        );
        let addr = [server.addr];
        registration_rate(&addr, &accounts, 0..warm).await?;
        let mut first = Vec::new();
        for r in 0..scale.runs {
            let start = warm + r * per_run;
            first.push(registration_rate(&addr, &accounts, start..start + per_run).await?);
        }
        let mut again = Vec::new();
        for r in 0..scale.runs {
            let start = warm + r * per_run;
            again.push(registration_rate(&addr, &accounts, start..start + per_run).await?);
        }
        server.stop().await?;
        Ok::<_, anyhow::Error>((first, again))
    }
    .await;
    let (first, again) = match result {
        Ok((f, a)) => (Ok(f), Ok(a)),
        Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
    };
    let row = |figure: &str, r| Row {
        group: "registrations",
        figure: figure.to_owned(),
        unit: Unit::PerSec,
        ours: summary(r),
        baseline: Baseline::None,
        target: Target::Report,
    };
    Section {
        group: "registrations",
        rows: vec![
            row("registrations/s, new numbers (connect + Noise XX + key proof + register + logout)", first),
            row("registrations/s, returning numbers (key already bound)", again),
        ],
        details: vec![format!(
            "{REGISTER_CONCURRENCY} registrations at a time from the bench process, each on a new TCP connection; \
             keys generated beforehand. Warm-up: {warm} registrations; then {} runs of {per_run} new numbers \
             (the server's first `claim` inserts into SQLite), then the same numbers again.",
            scale.runs
        )],
    }
}
