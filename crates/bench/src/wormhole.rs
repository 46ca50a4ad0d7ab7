//! The magic-wormhole comparison (issue 6): the same file sent with whatsap2p, through
//! [`peers::FilePeers`] exactly as the `file` figure sends it, and with Python magic-wormhole's
//! `wormhole send` / `wormhole receive`, alternating, in the same run and on the same bytes.
//!
//! Magic-wormhole needs a mailbox (rendezvous) server and a transit relay: the bench runs both
//! (`twist wormhole-mailbox`, `twist transitrelay`) from the venv that `scripts/bench-deps` fills.
//! Its clients leave 127.0.0.1 out of their connection hints, so loopback alone cannot carry a
//! direct transfer: the bench makes two network namespaces of its own joined by a veth pair, with
//! the sender and both servers in one and the receiver in the other. Everything it creates
//! (namespaces, veth pair, processes) is removed when the figure ends, on error too; its children
//! also die with the bench (`setpriv --pdeathsig`), and namespaces left by a killed run are removed
//! by the next. Without the venv, `ip` or root, the row says "baseline unavailable" and the run goes
//! on.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::peers::{self, FilePeers, WARM_FILE_BYTES};
use crate::report::{Baseline, Row, Section, Target, Unit};
use crate::server_proc::ServerProcess;
use crate::stats::Summary;
use crate::Scale;

/// Overrides where the venv is (default `~/.cache/whatsap2p-bench/venv`, as in scripts/bench-deps).
const VENV_VAR: &str = "WHATSAP2P_BENCH_VENV";
/// Start of the bench's namespace names: `w2pb<pid>s` (sender) and `w2pb<pid>r` (receiver), also
/// the names of the veth ends in them (at most 15 characters: `w2pb` + 7 pid digits + 1).
const NS_PREFIX: &str = "w2pb";
/// The sender's side of the veth pair; the mailbox server and the transit relay listen here too.
const SENDER_IP: &str = "10.201.1.1";
/// The receiver's side.
const RECEIVER_IP: &str = "10.201.1.2";
const MAILBOX_PORT: u16 = 4000;
const TRANSIT_PORT: u16 = 4001;
/// How long the servers may take to listen (Twisted's imports are slow on a loaded machine).
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The receiver starts this long before the clock, so its start-up is not counted: the clock holds
/// what sending takes once the other side waits, as whatsap2p's receiver is already online.
const RECEIVER_HEAD_START: Duration = Duration::from_secs(1);
/// Longest a single wormhole transfer may take before it counts as failed.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// Target: whatsap2p at least this many times wormhole's throughput.
const TARGET_RATIO: f64 = 4.0;

/// Runs `ip` with `args`. Synchronous: each call takes milliseconds, and `Drop` needs it too.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (package iproute2)")?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The pid in a bench namespace's name, if `name` is one.
fn ns_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    rest.strip_suffix(['s', 'r'])?.parse().ok()
}

/// Whether process `pid` exists and is not a zombie (a killed bench its parent has not reaped yet).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold anything.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z')
}

/// Removes namespaces that a killed run of the bench left behind: its pid is gone, or is ours now.
fn remove_stale_namespaces() {
    let Ok(out) = std::process::Command::new("ip").args(["netns", "list"]).stdin(Stdio::null()).output()
    else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = ns_owner(name) {
            if pid == std::process::id() || !alive(pid) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

/// Two network namespaces of this process joined by a veth pair; removed on drop.
struct Netns {
    sender: String,
    receiver: String,
}

impl Netns {
    fn create() -> anyhow::Result<Self> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let netns = Self { sender: format!("{NS_PREFIX}{pid}s"), receiver: format!("{NS_PREFIX}{pid}r") };
        // On error `netns` is dropped here, which removes whatever part was made.
        netns.build()?;
        Ok(netns)
    }

    fn build(&self) -> anyhow::Result<()> {
        let (s, r) = (self.sender.as_str(), self.receiver.as_str());
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", r])?;
        // Each end of the pair is named after the namespace it goes to.
        ip(&["link", "add", s, "type", "veth", "peer", "name", r])?;
        ip(&["link", "set", s, "netns", s])?;
        ip(&["link", "set", r, "netns", r])?;
        for (ns, addr) in [(s, SENDER_IP), (r, RECEIVER_IP)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", ns])?;
            ip(&["-n", ns, "link", "set", ns, "up"])?;
            // The sender reaches the servers at its own address, which goes through `lo`.
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end in it and so the pair; `link del` covers a
        // failure before the ends were moved out of the root namespace.
        let _ = ip(&["link", "del", &self.sender]);
        let _ = ip(&["netns", "del", &self.sender]);
        let _ = ip(&["netns", "del", &self.receiver]);
    }
}

/// The venv `scripts/bench-deps` fills.
fn venv_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(VENV_VAR) {
        return Ok(dir.into());
    }
    let home = std::env::var_os("HOME").context("HOME is not set (and neither is WHATSAP2P_BENCH_VENV)")?;
    Ok(PathBuf::from(home).join(".cache/whatsap2p-bench/venv"))
}

/// Python's and the wormhole packages' versions in `venv`; fails when one is not installed.
async fn versions(venv: &Path) -> anyhow::Result<String> {
    const SCRIPT: &str = "import importlib.metadata as m, platform\n\
        names = ['magic-wormhole', 'magic-wormhole-mailbox-server', 'magic-wormhole-transit-relay', 'Twisted']\n\
        print(', '.join(['Python ' + platform.python_version()] + [n + ' ' + m.version(n) for n in names]))";
    let python = venv.join("bin/python");
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("no Python venv at {} (run scripts/bench-deps)", venv.display()))?;
    if !out.status.success() {
        bail!(
            "magic-wormhole is not installed in {} (run scripts/bench-deps): {}",
            venv.display(),
            last_line(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Fails with the tail of stderr unless the process exited with 0.
fn exited_ok(what: &str, out: Output) -> anyhow::Result<Output> {
    if !out.status.success() {
        bail!("{what} exited with {}: {}", out.status, last_line(&out.stderr));
    }
    Ok(out)
}

/// What one wormhole transfer showed.
struct Sent {
    /// From starting the sender until the receiver exited.
    took: Duration,
    /// How the receiver connected, as it printed it (`->tcp:IP:PORT`, or `->relay:tcp:…`).
    connection: String,
    /// What the receiver's `--dump-timing` showed, when it could be read.
    timing: Option<Timing>,
    /// When the clock started, in Unix seconds (to compare with [`Timing::waiting_since`]).
    started_at: f64,
}

/// Parts of the receiver's `--dump-timing` JSON (a list of named events, times in Unix seconds).
#[derive(Debug, PartialEq)]
struct Timing {
    /// The `rx file` span: the data phase alone.
    data_phase: Duration,
    /// When it first wrote to the mailbox server (`bind`): from then on it waits for the sender.
    waiting_since: f64,
}

/// magic-wormhole's mailbox server and transit relay, running in the bench's namespaces.
struct Wormhole {
    venv: PathBuf,
    /// The run's temp dir, which holds the payload.
    tmp: PathBuf,
    /// Under it, the mailbox database, the received file and the timing dump.
    dir: PathBuf,
    /// Whether `setpriv --pdeathsig` is there to tie the children's lives to the bench.
    pdeathsig: bool,
    versions: String,
    mailbox: Child,
    transit: Child,
    /// Transfers so far: each gets a nameplate of its own, so a failed one cannot block the next.
    transfers: usize,
    /// The last command line of each kind (mailbox, transit, receive, send), for the report.
    commands: Vec<(&'static str, String)>,
    // Last, so that on drop the children are killed before their namespaces go.
    netns: Netns,
}

impl Wormhole {
    /// Checks the venv, makes the namespaces and starts both servers; `Err` says why there is no
    /// baseline. Its files go under `tmp`.
    async fn start(tmp: &Path) -> anyhow::Result<Self> {
        let dir = tmp.join("wormhole");
        let venv = venv_dir()?;
        let versions = versions(&venv).await?;
        let pdeathsig = std::process::Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let netns = Netns::create().context("making the network namespaces (needs root)")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut commands = Vec::new();
        let mailbox_db = dir.join("mailbox.sqlite");
        let mailbox_args = [
            "wormhole-mailbox".to_owned(),
            "--port".into(),
            format!("tcp:{MAILBOX_PORT}:interface={SENDER_IP}"),
            "--channel-db".into(),
            mailbox_db.display().to_string(),
        ];
        let transit_args =
            ["transitrelay".to_owned(), "--port".into(), format!("tcp:{TRANSIT_PORT}:interface={SENDER_IP}")];
        let spawn = |kind, args: &[String], commands: &mut Vec<(&'static str, String)>| {
            let (mut cmd, line) = in_netns(&netns.sender, pdeathsig, &venv, "twist", args);
            commands.push((kind, line));
            cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting twist")
        };
        let mailbox = spawn("mailbox", &mailbox_args, &mut commands)?;
        let transit = spawn("transit", &transit_args, &mut commands)?;
        let mut wormhole = Self {
            venv,
            tmp: tmp.to_path_buf(),
            dir,
            pdeathsig,
            versions,
            mailbox,
            transit,
            transfers: 0,
            commands,
            netns,
        };
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        wormhole.wait_listening(MAILBOX_PORT, "mailbox server", deadline).await?;
        wormhole.wait_listening(TRANSIT_PORT, "transit relay", deadline).await?;
        Ok(wormhole)
    }

    /// Waits until `port` on the sender's address takes a connection from the receiver's namespace,
    /// which also shows that the veth pair carries traffic.
    async fn wait_listening(&mut self, port: u16, what: &str, deadline: Instant) -> anyhow::Result<()> {
        let probe = format!("exec 3<>/dev/tcp/{SENDER_IP}/{port}");
        loop {
            let connected = Command::new("ip")
                .args(["netns", "exec", &self.netns.receiver, "bash", "-c", &probe])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if connected {
                return Ok(());
            }
            for (name, child) in [("mailbox server", &mut self.mailbox), ("transit relay", &mut self.transit)]
            {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("the {name} exited with {status} at start");
                }
            }
            if Instant::now() > deadline {
                bail!("the {what} did not listen on {SENDER_IP}:{port} within {SERVER_START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The options both clients share: the bench's own servers.
    fn client_options() -> Vec<String> {
        vec![
            "--relay-url".into(),
            format!("ws://{SENDER_IP}:{MAILBOX_PORT}/v1"),
            "--transit-helper".into(),
            format!("tcp:{SENDER_IP}:{TRANSIT_PORT}"),
        ]
    }

    /// Keeps `line` as the command of its kind: the last transfer's is the one the report shows.
    fn remember(&mut self, kind: &'static str, line: String) {
        match self.commands.iter_mut().find(|(k, _)| *k == kind) {
            Some(slot) => slot.1 = line,
            None => self.commands.push((kind, line)),
        }
    }

    /// The command lines for the report, with the venv and the temp dir as `<venv>` and `<tmp>`.
    fn command_lines(&self) -> Vec<String> {
        let (venv, tmp) = (self.venv.display().to_string(), self.tmp.display().to_string());
        self.commands.iter().map(|(_, l)| l.replace(&venv, "<venv>").replace(&tmp, "<tmp>")).collect()
    }

    /// Sends `file` from the sender's namespace to the receiver's, checks the copy against `hash`
    /// and removes it.
    async fn transfer(&mut self, file: &Path, hash: blake3::Hash) -> anyhow::Result<Sent> {
        self.transfers += 1;
        let code = format!("{}-whatsap2p-bench", self.transfers);
        let out = self.dir.join("received.bin");
        let timing = self.dir.join("receiver-timing.json");
        // Leftovers of a failed transfer would make the receiver refuse or mislead the check.
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&timing);

        let mut receive = Self::client_options();
        receive.extend(["--dump-timing".into(), timing.display().to_string()]);
        receive.extend(["receive", "--accept-file", "--hide-progress", "-o"].map(String::from));
        receive.extend([out.display().to_string(), code.clone()]);
        let mut send = Self::client_options();
        send.extend(["send", "--hide-progress", "--no-qr", "--code"].map(String::from));
        send.extend([code, file.display().to_string()]);

        let (mut receiver, line) =
            in_netns(&self.netns.receiver, self.pdeathsig, &self.venv, "wormhole", &receive);
        self.remember("receive", line);
        let (mut sender, line) = in_netns(&self.netns.sender, self.pdeathsig, &self.venv, "wormhole", &send);
        self.remember("send", line);
        let receiver = receiver
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting wormhole receive")?;
        tokio::time::sleep(RECEIVER_HEAD_START).await;

        let (t0, started_at) = (Instant::now(), std::time::SystemTime::now());
        let sender =
            sender.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting wormhole send")?;
        let receiving = async {
            let out = receiver.wait_with_output().await.context("waiting for wormhole receive")?;
            let took = t0.elapsed();
            Ok::<_, anyhow::Error>((exited_ok("wormhole receive", out)?, took))
        };
        let sending = async {
            let out = sender.wait_with_output().await.context("waiting for wormhole send")?;
            exited_ok("wormhole send", out)
        };
        // The first side to fail ends the other: dropping its future kills the child.
        let ((received, took), _) =
            tokio::time::timeout(TRANSFER_TIMEOUT, async { tokio::try_join!(receiving, sending) })
                .await
                .with_context(|| format!("the transfer took longer than {TRANSFER_TIMEOUT:?}"))??;

        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&received.stdout),
            String::from_utf8_lossy(&received.stderr)
        );
        let connection = printed
            .lines()
            .find_map(|l| l.trim().strip_prefix("Receiving ("))
            .map(|rest| rest.trim_end_matches('.').trim_end_matches(')').to_owned())
            .context("wormhole receive did not say how it connected (no `Receiving (…)` line)")?;
        let check = out.clone();
        tokio::task::spawn_blocking(move || check_copy(&check, hash))
            .await
            .context("checking the received file")??;
        let _ = std::fs::remove_file(&out);
        let timing = read_timing(&timing).ok();
        let started_at =
            started_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        Ok(Sent { took, connection, timing, started_at })
    }

    /// Stops both servers; the namespaces go when `self` is dropped.
    async fn stop(mut self) {
        let _ = self.mailbox.kill().await;
        let _ = self.transit.kill().await;
    }
}

/// A command running `tool` from the venv in namespace `ns`, with its command line for the report.
fn in_netns(ns: &str, pdeathsig: bool, venv: &Path, tool: &str, args: &[String]) -> (Command, String) {
    let mut line = vec!["ip".to_owned(), "netns".into(), "exec".into(), ns.to_owned()];
    if pdeathsig {
        // Without this a killed bench would leave the servers running in a namespace nobody uses.
        // The signal follows the thread that forked: the bench spawns these from its main task,
        // which `#[tokio::main]` polls on the main thread, alive as long as the process.
        line.extend(["setpriv", "--pdeathsig", "KILL"].map(String::from));
    }
    line.push(venv.join("bin").join(tool).display().to_string());
    line.extend(args.iter().cloned());
    let mut cmd = Command::new(&line[0]);
    cmd.args(&line[1..]).stdin(Stdio::null()).kill_on_drop(true);
    (cmd, line.join(" "))
}

/// Checks that `path` holds the sent bytes: same BLAKE3 hash.
fn check_copy(path: &Path, expected: blake3::Hash) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("wormhole wrote no {}", path.display()))?;
    let got = blake3::Hasher::new().update_reader(file).context("hashing the received file")?.finalize();
    if got != expected {
        bail!("the file wormhole received differs from the one sent");
    }
    Ok(())
}

/// Reads the receiver's `--dump-timing` JSON.
fn read_timing(path: &Path) -> anyhow::Result<Timing> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let events: Vec<serde_json::Value> = serde_json::from_str(&text).context("parsing the timing dump")?;
    let rx = events.iter().find(|e| e["name"] == "rx file").context("no `rx file` event")?;
    let (Some(start), Some(stop)) = (rx["start"].as_f64(), rx["stop"].as_f64()) else {
        bail!("`rx file` has no start or stop");
    };
    let data_phase = Duration::try_from_secs_f64(stop - start).context("`rx file` ends before it starts")?;
    let waiting_since = events
        .iter()
        .find(|e| e["name"] == "ws_send")
        .and_then(|e| e["start"].as_f64())
        .context("no `ws_send` event")?;
    Ok(Timing { data_phase, waiting_since })
}

fn hash_file(path: &Path) -> anyhow::Result<blake3::Hash> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(blake3::Hasher::new().update_reader(file).context("hashing")?.finalize())
}

/// One side's timed runs in MiB/s, or why it stopped.
#[derive(Default)]
struct Runs {
    mib_per_s: Vec<f64>,
    error: Option<String>,
}

impl Runs {
    fn record(&mut self, size: u64, result: anyhow::Result<Duration>) {
        match result {
            Ok(took) => self.mib_per_s.push(peers::mib_per_s(size, took)),
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    fn summary(&self) -> Result<Summary, String> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Summary::of(&self.mib_per_s).ok_or_else(|| "no run".to_owned()),
        }
    }
}

/// Everything the comparison measured.
#[derive(Default)]
struct Comparison {
    ours: Runs,
    theirs: Runs,
    /// How each timed wormhole transfer connected.
    connections: Vec<String>,
    /// Wormhole's data phase alone, MiB/s.
    data_phase: Vec<f64>,
    /// How long the receiver had been waiting on the mailbox when the clock started, in s (negative:
    /// it was not waiting yet).
    waiting: Vec<f64>,
    versions: Option<String>,
    venv: Option<PathBuf>,
    commands: Vec<String>,
}

/// Our side: a server child and the `file` figure's client pair, warmed up.
async fn start_ours(root: &Path, warm: &Path) -> anyhow::Result<(ServerProcess, FilePeers)> {
    let server = ServerProcess::start().await?;
    let peers = FilePeers::start(server.addr, &root.join("whatsap2p")).await?;
    peers.transfer(warm).await.context("warm-up transfer")?;
    Ok((server, peers))
}

/// Wormhole's side: servers up, one warm-up transfer done.
async fn start_theirs(root: &Path, warm: &Path) -> anyhow::Result<Wormhole> {
    let mut wormhole = Wormhole::start(root).await?;
    let hash = hash_file(warm)?;
    if let Err(e) = wormhole.transfer(warm, hash).await {
        wormhole.stop().await;
        return Err(e.context("warm-up transfer"));
    }
    Ok(wormhole)
}

async fn compare(root: &Path, scale: &Scale) -> Comparison {
    let mut c = Comparison::default();
    let size = scale.file_size;
    let files = async {
        let (big, warm) = peers::test_files(root, size).await?;
        let hash = hash_file(&big)?;
        Ok::<_, anyhow::Error>((big, warm, hash))
    };
    let (big, warm, hash) = match files.await {
        Ok(f) => f,
        Err(e) => {
            let e = format!("{e:#}");
            c.ours.error = Some(e.clone());
            c.theirs.error = Some(e);
            return c;
        }
    };
    let mut ours = match start_ours(root, &warm).await {
        Ok(o) => Some(o),
        Err(e) => {
            c.ours.error = Some(format!("{e:#}"));
            None
        }
    };
    let mut theirs = match start_theirs(root, &warm).await {
        Ok(w) => Some(w),
        Err(e) => {
            c.theirs.error = Some(format!("{e:#}"));
            None
        }
    };
    if let Some(w) = &theirs {
        c.versions = Some(w.versions.clone());
        c.venv = Some(w.venv.clone());
    }
    // Alternating, so both sides see the same machine load; a side stops at its first failure.
    // Round 0 is untimed (see `peers::UNTIMED_ROUNDS`).
    for round in 0..peers::UNTIMED_ROUNDS + scale.runs {
        let timed = round >= peers::UNTIMED_ROUNDS;
        if let Some((_, pair)) = &ours {
            let sent = pair.transfer(&big).await;
            if timed || sent.is_err() {
                c.ours.record(size, sent);
            }
            if c.ours.error.is_some() {
                if let Some(o) = ours.take() {
                    stop_ours(o).await;
                }
            }
        }
        if let Some(w) = &mut theirs {
            match w.transfer(&big, hash).await {
                Ok(_) if !timed => {}
                Ok(sent) => {
                    c.theirs.record(size, Ok(sent.took));
                    c.connections.push(sent.connection);
                    if let Some(t) = &sent.timing {
                        c.data_phase.push(peers::mib_per_s(size, t.data_phase));
                        c.waiting.push(sent.started_at - t.waiting_since);
                    }
                }
                Err(e) => c.theirs.record(size, Err(e)),
            }
            if c.theirs.error.is_some() {
                c.commands = w.command_lines();
                if let Some(w) = theirs.take() {
                    w.stop().await;
                }
            }
        }
    }
    if let Some(o) = ours {
        stop_ours(o).await;
    }
    if let Some(w) = theirs {
        c.commands = w.command_lines();
        w.stop().await;
    }
    c
}

async fn stop_ours((server, peers): (ServerProcess, FilePeers)) {
    peers.stop().await;
    // The figures are in; a server that does not stop cleanly changes none of them.
    let _ = server.stop().await;
}

/// How the timed wormhole transfers connected, for the report.
fn connections_text(connections: &[String]) -> String {
    let relayed = connections.iter().filter(|c| c.contains("relay:")).count();
    let direct = connections.len() - relayed;
    let example = |relay: bool| {
        connections
            .iter()
            .find(|c| c.contains("relay:") == relay)
            .map(|c| format!(" (`{c}`)"))
            .unwrap_or_default()
    };
    let mut parts = Vec::new();
    if direct > 0 {
        parts.push(format!("direct over the veth pair in {direct}{}", example(false)));
    }
    if relayed > 0 {
        parts.push(format!("through the transit relay in {relayed}{}", example(true)));
    }
    format!("{} of {} timed runs, as `wormhole receive` printed it", parts.join(", "), connections.len())
}

/// The magic-wormhole comparison figure.
pub async fn wormhole(scale: &Scale) -> Section {
    let c = match tempfile::Builder::new().prefix("whatsap2p-bench-wormhole").tempdir() {
        Ok(root) => compare(root.path(), scale).await,
        Err(e) => {
            let mut c = Comparison::default();
            c.ours.error = Some(format!("making a temp dir: {e}"));
            c.theirs.error = c.ours.error.clone();
            c
        }
    };
    let size_mib = scale.file_size >> 20;
    let baseline = match c.theirs.summary() {
        Ok(s) => Baseline::Measured(s),
        Err(e) => Baseline::Unavailable(e),
    };
    let mut details = vec![format!(
        "The same {size_mib} MiB file of pseudo-random bytes (in the page cache) sent with whatsap2p and with Python \
         magic-wormhole, alternating, {runs} runs each after one {warm} MiB warm-up transfer each and {untimed} \
         untimed full-size round (as in the `file` figure). whatsap2p: the \
         `file` figure's code (`peers::FilePeers`: two `Client`s and a server child on loopback; clock from \
         `Client::send_file` to the receiver's `Event::FileReceived`, file synced and BLAKE3-checked). \
magic-wormhole: `wormhole receive` is started {head} s ahead (its start-up is not counted), then the clock \
         runs from starting `wormhole send` until `wormhole receive` exits successfully; the copy is then checked \
         (BLAKE3 against the original) outside the clock. Its receiver does not fsync the file; whatsap2p's does. \
         Ratio = whatsap2p MiB/s ÷ wormhole MiB/s.",
        runs = scale.runs,
        warm = WARM_FILE_BYTES >> 20,
        untimed = peers::UNTIMED_ROUNDS,
        head = RECEIVER_HEAD_START.as_secs_f64(),
    )];
    details.push(format!(
        "Network: magic-wormhole leaves 127.0.0.1 out of its connection hints, so the bench makes two network \
         namespaces of its own (`{NS_PREFIX}<pid>s`: sender, mailbox server and transit relay, {SENDER_IP}/24; \
         `{NS_PREFIX}<pid>r`: receiver, {RECEIVER_IP}/24) joined by a veth pair, and removes them afterwards."
    ));
    if let (Some(versions), Some(venv)) = (&c.versions, &c.venv) {
        details
            .push(format!("Versions: {versions}, from the venv `{}` (scripts/bench-deps).", venv.display()));
    }
    if !c.commands.is_empty() {
        let shown: Vec<String> = c.commands.iter().map(|l| format!("`{l}`")).collect();
        details.push(format!(
            "Commands (`<tmp>`: the run's temp dir; the code's number grows with each transfer): {}.",
            shown.join("; ")
        ));
    }
    if !c.connections.is_empty() {
        details.push(format!("Connection: {}.", connections_text(&c.connections)));
    }
    if let Some(waiting) = Summary::of(&c.waiting) {
        let late = c.waiting.iter().filter(|w| **w < 0.0).count();
        details.push(if late == 0 {
            format!(
                "`wormhole receive` was waiting on the mailbox {:.2} s (least of the runs) before the clock started.",
                waiting.min
            )
        } else {
            format!(
                "In {late} of {} runs `wormhole receive` was not yet waiting on the mailbox when the clock started \
                 (head start too short on this machine): part of its start-up is counted against wormhole.",
                c.waiting.len()
            )
        });
    }
    if let Some(data) = Summary::of(&c.data_phase) {
        details.push(format!(
            "Diagnostic: wormhole's data phase alone (the receiver's `rx file` span from `--dump-timing`): {}; the \
             rest of its end-to-end time is the sender's process start, the mailbox exchange (PAKE, offers) and \
             connection set-up.",
            Unit::MibPerSec.show_summary(&data)
        ));
    }
    Section {
        group: "wormhole",
        rows: vec![Row {
            group: "wormhole",
            figure: format!(
                "file transfer, {size_mib} MiB end to end: whatsap2p vs magic-wormhole (Python, local mailbox + \
                 transit relay)"
            ),
            unit: Unit::MibPerSec,
            ours: c.ours.summary(),
            baseline,
            target: Target::RatioAtLeast(TARGET_RATIO),
        }],
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_namespace_names_then_only_the_benchs_own_give_a_pid() {
        assert_eq!(ns_owner("w2pb1234s"), Some(1234));
        assert_eq!(ns_owner("w2pb1234r"), Some(1234));
        assert_eq!(ns_owner("w2pb1234x"), None);
        assert_eq!(ns_owner("w2pbs"), None);
        assert_eq!(ns_owner("other1234s"), None);
    }

    #[test]
    fn given_this_process_then_it_is_alive() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn given_a_timing_dump_then_the_data_phase_is_the_rx_file_span() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.json");
        let dump = r#"[{"name": "import", "start": 1.0, "stop": 1.5, "details": {}},
            {"name": "ws_send", "start": 2.5, "stop": null, "details": {"type": "bind"}},
            {"name": "ws_send", "start": 3.0, "stop": null, "details": {"type": "claim"}},
            {"name": "rx file", "start": 10.0, "stop": 10.25, "details": {}}]"#;
        std::fs::write(&path, dump).expect("write");
        let timing = read_timing(&path).expect("timing");
        assert_eq!(timing, Timing { data_phase: Duration::from_millis(250), waiting_since: 2.5 });
        std::fs::write(&path, r#"[{"name": "rx file", "start": 2.0, "stop": null}]"#).expect("write");
        assert!(read_timing(&path).is_err());
    }

    #[test]
    fn given_connections_then_direct_and_relayed_are_counted() {
        let c = ["->tcp:10.201.1.1:4242".to_owned(), "->relay:tcp:10.201.1.1:4001".to_owned()];
        let text = connections_text(&c);
        assert!(text.starts_with("direct over the veth pair in 1 (`->tcp:10.201.1.1:4242`)"), "{text}");
        assert!(text.contains("through the transit relay in 1"), "{text}");
    }
}
