//! The directory-lookup baseline: `redis-benchmark -t get -c 50` (and `-P 16`) against a
//! `redis-server` that the bench starts on a free loopback port, without persistence, and stops
//! afterwards. When either program is missing (see `scripts/bench-deps`) the figures say "baseline
//! unavailable" instead of failing.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// Connections, as in our load generator.
pub const CLIENTS: usize = 50;
/// Value size: about the size of a `LookupResult` (number, 32-byte key, address, timestamp).
pub const VALUE_BYTES: usize = 64;

/// Requests per second of one run, and the CPU each side spent per request.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Requests answered per second.
    pub per_sec: f64,
    /// Server CPU time (user + system) per request, in µs.
    pub server_cpu_us: f64,
    /// Load generator CPU time per request, in µs.
    pub client_cpu_us: f64,
}

/// A redis-server child on a free port.
pub struct Redis {
    child: Child,
    pid: u32,
    port: u16,
    /// `redis-server --version`, for the report.
    pub version: String,
}

async fn output_of(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("reading a free port")?.port())
}

impl Redis {
    /// Starts redis-server and waits until it answers; `Err` says why there is no baseline.
    pub async fn start() -> anyhow::Result<Self> {
        let version = output_of("redis-server", &["--version"]).await?.trim().to_owned();
        output_of("redis-benchmark", &["--version"]).await?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        let pid = child.id().context("redis-server has no pid")?;
        let redis = Self { child, pid, port, version };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                // The key every GET asks for (`key:__rand_int__` without -r), so GETs are hits.
                let n = "1000".to_owned();
                let p = port.to_string();
                let d = VALUE_BYTES.to_string();
                output_of(
                    "redis-benchmark",
                    &["-h", "127.0.0.1", "-p", &p, "-t", "set", "-n", &n, "-d", &d, "-q"],
                )
                .await?;
                return Ok(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not answer on port {port} within 5 s")
    }

    /// `redis://127.0.0.1:PORT`, for directory instances to share.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Bytes of memory Redis holds for its data (`used_memory` of `INFO memory`).
    pub async fn used_memory(&self) -> anyhow::Result<u64> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await.context("connecting to redis")?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| "no used_memory in INFO memory".to_owned())
    }

    fn args(&self, pipeline: usize, requests: u64) -> Vec<String> {
        let mut args: Vec<String> = ["-h", "127.0.0.1", "-p"].map(String::from).to_vec();
        args.push(self.port.to_string());
        args.extend(["-t", "get", "-c"].map(String::from));
        args.push(CLIENTS.to_string());
        if pipeline > 1 {
            args.push("-P".into());
            args.push(pipeline.to_string());
        }
        args.extend([
            "-n".to_owned(),
            requests.to_string(),
            "-d".into(),
            VALUE_BYTES.to_string(),
            "--csv".into(),
        ]);
        args
    }

    /// The command line of one run, for the report.
    pub fn command(&self, pipeline: usize, requests: u64) -> String {
        format!("redis-benchmark {}", self.args(pipeline, requests).join(" "))
    }

    /// One run: GETs per second as redis-benchmark reports them, with the CPU time redis-server and
    /// redis-benchmark spent per GET.
    pub async fn get_rate(&self, pipeline: usize, requests: u64) -> anyhow::Result<Rate> {
        let args = self.args(pipeline, requests);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (server0, _) = crate::machine::cpu_seconds(self.pid)?;
        let (_, children0) = crate::machine::cpu_seconds(std::process::id())?;
        let csv = output_of("redis-benchmark", &args).await?;
        let (server1, _) = crate::machine::cpu_seconds(self.pid)?;
        let (_, children1) = crate::machine::cpu_seconds(std::process::id())?;
        let per = |secs: f64| secs * 1e6 / requests as f64;
        let per_sec = csv
            .lines()
            .find_map(|l| l.strip_prefix("\"GET\",\""))
            .and_then(|rest| rest.split('"').next())
            .and_then(|rps| rps.parse().ok())
            .with_context(|| format!("no GET rate in redis-benchmark's output: {csv:?}"))?;
        Ok(Rate { per_sec, server_cpu_us: per(server1 - server0), client_cpu_us: per(children1 - children0) })
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
