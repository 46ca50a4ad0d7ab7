//! One directory on several instances sharing one Redis: lookups and registrations per second
//! through 1, 2 and 4 instances (each a `whatsap2p-bench serve --store` child), beside the same
//! load on one instance with the memory store, and beside `redis-benchmark` on the same Redis.
//!
//! The load is [`crate::directory_load`]'s: 50 lean sessions spread over the instances in turn,
//! each looking up a number registered on the next instance, 16 lookups in flight; registrations
//! are new numbers, 50 at a time, through the instances in turn.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::directory_load::{lookup_rates, per_sec, redis_rates, registration_rate, summary, PIPELINE};
use crate::lean_session::{number, Account};
use crate::redis_baseline::{Redis, CLIENTS};
use crate::report::{Baseline, Row, Section, Target, Unit};
use crate::server_proc::ServerProcess;
use crate::stats::Summary;
use crate::Scale;

/// How many instances each figure runs through.
pub const INSTANCES: [usize; 3] = [1, 2, 4];

/// Lookups and registrations per second through `servers`; numbers start with `prefix`
/// (lookups) and `prefix + 1` (registrations), so runs on one store never collide.
async fn through(
    servers: &[ServerProcess],
    prefix: u16,
    scale: &Scale,
) -> (anyhow::Result<Vec<f64>>, anyhow::Result<Vec<f64>>) {
    let lookups = per_sec(&lookup_rates(servers, PIPELINE, prefix, scale).await);
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let registrations = async {
        let warm = 100;
        let per_run = scale.registrations_per_run;
        let accounts = Arc::new(
            (0..warm + per_run * scale.runs)
                .map(|i| Account::generate(number(prefix + 1, i)?))
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
        registration_rate(&addrs, &accounts, 0..warm).await?;
        let mut rates = Vec::new();
        for r in 0..scale.runs {
            let start = warm + r * per_run;
            rates.push(registration_rate(&addrs, &accounts, start..start + per_run).await?);
        }
        Ok::<_, anyhow::Error>(rates)
    }
    .await;
    (lookups, registrations)
}

/// Starts `n` servers (on `store` if given), measures through them, stops them.
async fn measure(
    n: usize,
    store: Option<&str>,
    prefix: u16,
    scale: &Scale,
) -> (anyhow::Result<Vec<f64>>, anyhow::Result<Vec<f64>>) {
    let mut servers = Vec::new();
    for _ in 0..n {
        match ServerProcess::start_with(store).await {
            Ok(s) => servers.push(s),
            Err(e) => return (Err(anyhow::anyhow!("{e:#}")), Err(e)),
        }
    }
    let result = through(&servers, prefix, scale).await;
    for s in servers {
        if let Err(e) = s.stop().await {
            return (Err(anyhow::anyhow!("{e:#}")), Err(e));
        }
    }
    result
}

fn measured(r: &anyhow::Result<Vec<f64>>) -> Baseline {
    match r.as_ref().ok().and_then(|v| Summary::of(v)) {
        Some(s) => Baseline::Measured(s),
        None => Baseline::Unavailable("the memory-store run failed".into()),
    }
}

/// The figures of the group `instances`.
pub async fn instances(scale: &Scale) -> Section {
    let mut details = vec![format!(
        "Load: {CLIENTS} lean sessions spread over the instances in turn, {PIPELINE} lookups in flight each, each \
         looking up a number registered on the next instance (crates/bench/src/directory_load.rs); registrations: \
         new numbers, 50 at a time, through the instances in turn, after 100 to warm up. Instances: `whatsap2p-bench \
         serve --store redis://…` children with `Config::default()` (limits per address and per second off), fresh for each figure, all on one redis-server \
         (`--save \"\" --appendonly no`). Baseline: the same load on one instance with the memory store (and SQLite \
         bindings), in the same run. Warm-up {:.1} s, then {} windows of {:.1} s; {} registrations per run. All \
         processes share this machine's CPUs, Redis included.",
        scale.warmup.as_secs_f64(),
        scale.runs,
        scale.window.as_secs_f64(),
        scale.registrations_per_run
    )];
    let (memory_lookups, memory_registrations) = measure(1, None, 91, scale).await;
    let redis = match Redis::start().await {
        Ok(r) => r,
        Err(e) => {
            details.push(format!(
                "No Redis: {e:#}. `scripts/bench-deps` installs redis-server and redis-tools."
            ));
            return Section { group: "instances", rows: Vec::new(), details };
        }
    };
    details.push(format!("Redis: {}.", redis.version));
    let mut rows = Vec::new();
    let mut redis_row = None;
    for (i, n) in INSTANCES.into_iter().enumerate() {
        let (lookups, registrations) = measure(n, Some(&redis.url()), 100 + 2 * i as u16, scale).await;
        let plural = if n == 1 { "" } else { "s" };
        if n == 1 {
            redis_row =
                Some(summary(lookups.as_ref().map(Clone::clone).map_err(|e| anyhow::anyhow!("{e:#}"))));
        }
        rows.push(Row {
            group: "instances",
            figure: format!(
                "lookups/s through {n} instance{plural} on one Redis, {CLIENTS} sessions × {PIPELINE} in flight \
                 (baseline: memory store)"
            ),
            unit: Unit::PerSec,
            ours: summary(lookups),
            baseline: measured(&memory_lookups),
            target: Target::ReportRatio,
        });
        rows.push(Row {
            group: "instances",
            figure: format!(
                "registrations/s through {n} instance{plural} on one Redis (baseline: memory store)"
            ),
            unit: Unit::PerSec,
            ours: summary(registrations),
            baseline: measured(&memory_registrations),
            target: Target::ReportRatio,
        });
    }
    let redis_benchmark = match redis_rates(&redis, PIPELINE, scale).await {
        Ok((rates, command)) => {
            details.push(format!("Redis baseline command: `{command}`."));
            Summary::of(&rates.iter().map(|r| r.per_sec).collect::<Vec<_>>())
                .map(Baseline::Measured)
                .unwrap_or_else(|| Baseline::Unavailable("no run".into()))
        }
        Err(e) => Baseline::Unavailable(format!("redis-benchmark failed: {e:#}")),
    };
    redis.stop().await;
    if let Some(ours) = redis_row {
        rows.insert(
            1,
            Row {
                group: "instances",
                figure: format!(
                    "lookups/s through 1 instance on one Redis (redis: GET -c {CLIENTS} -P {PIPELINE} on that Redis)"
                ),
                unit: Unit::PerSec,
                ours,
                baseline: redis_benchmark,
                target: Target::ReportRatio,
            },
        );
    }
    Section { group: "instances", rows, details }
}
