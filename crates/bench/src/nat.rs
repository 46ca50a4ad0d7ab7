//! The `nat` group (issue 13's figures): clients behind NAT routers of the network lab
//! (`whatsap2p-netlab`: namespaces, a bridge as the internet, Linux `MASQUERADE` as a cone NAT and
//! `MASQUERADE --random-fully` as a symmetric one), the directory and the relay on a public host.
//!
//! - first message to a new contact, both sides behind cone NATs (punched) and both behind
//!   symmetric NATs (relayed), each beside the same figure on loopback in the same run;
//! - file throughput through the relay beside a direct TCP link between two public hosts of the
//!   same lab (and a punched UDP link beside it too);
//! - the relay's CPU time per GiB relayed (`/proc/PID/stat` of the relay's own process);
//! - direct-path success per NAT pairing (cone ↔ cone, cone ↔ symmetric, symmetric ↔ symmetric,
//!   two hosts behind one router).
//!
//! Every process is the bench itself under a hidden subcommand ([`crate::nat_roles`]): the relay,
//! the directory, and one host of clients per lab host, driven by lines on stdin. Without root
//! (or `ip`, `iptables`, `conntrack`) the lab cannot be built and every row says it was skipped,
//! and why.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use whatsap2p_netlab::{Host, Lab, LabError, Nat};

use crate::lean_session::number;
use crate::peers::{mib_per_s, test_files, UNTIMED_ROUNDS};
use crate::report::{Baseline, Row, Section, Target, Unit};
use crate::stats::Summary;
use crate::Scale;

/// How long a child may take to answer a command (a client start, a first message).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one file transfer may take.
const FILE_TIMEOUT: Duration = Duration::from_secs(300);
/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/PID/stat` (100 on every architecture
/// Linux runs on today).
const USER_HZ: f64 = 100.0;
/// The numbers of this group's clients start with this prefix (see `lean_session::number`).
const NUMBER_PREFIX: u16 = 61;

/// A child process of the bench answering lines.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Lines read while waiting for another.
    backlog: VecDeque<String>,
}

impl Proc {
    /// Runs the bench with `args`, inside `host` if given.
    fn spawn(name: &str, host: Option<&Host>, args: &[String]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("finding the bench's own executable")?;
        let mut command = match host {
            Some(h) => h.tokio_command(&exe),
            None => Command::new(&exe),
        };
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        Ok(Proc { name: name.to_owned(), child, stdin, lines, backlog: VecDeque::new() })
    }

    /// The first line (read or to come) that `pred` accepts, within `timeout`.
    async fn line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        if let Some(i) = self.backlog.iter().position(|l| pred(l)) {
            return Ok(self.backlog.remove(i).unwrap_or_default());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .with_context(|| format!("{} said nothing expected within {timeout:?}", self.name))?
                .with_context(|| format!("{} exited", self.name))?;
            if pred(&line) {
                return Ok(line);
            }
            self.backlog.push_back(line);
        }
    }

    /// The address it printed as `listening ADDR`.
    async fn listening(&mut self) -> anyhow::Result<SocketAddr> {
        let line = self.line(ANSWER_TIMEOUT, |l| l.starts_with("listening ")).await?;
        line["listening ".len()..].parse().with_context(|| format!("{}: {line:?}", self.name))
    }

    /// Sends `command` and returns its answer (a host answers every command with one line, which
    /// is neither of the unsolicited `file_…` lines); an `error` answer is an error.
    async fn ask(&mut self, command: &str) -> anyhow::Result<String> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(format!("{command}\n").as_bytes()).await.with_context(|| self.name.clone())?;
        let answer = self.line(ANSWER_TIMEOUT, |l| !l.starts_with("file_")).await?;
        if let Some(e) = answer.strip_prefix("error ") {
            bail!("{}: {command}: {e}", self.name);
        }
        Ok(answer)
    }

    /// User and system CPU time so far, in seconds, from `/proc/PID/stat` (`ip netns exec` execs
    /// the program, so the child's pid is the program's).
    fn cpu_secs(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (in parentheses, which may hold anything): state is the
        // 3rd field of the line, utime and stime the 14th and 15th.
        let rest = stat.rsplit_once(')').context("no command name")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).context("short stat");
        Ok((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
    }

    /// Closes its stdin (it stops) and waits for it, bounded; kills it past that.
    async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// A relay, a directory and client hosts, wherever they run.
struct Network {
    relay: Proc,
    directory: Proc,
    server: SocketAddr,
    /// For the clients' profiles and the files.
    root: std::path::PathBuf,
    next_number: usize,
}

impl Network {
    /// The relay and the directory on `host` (loopback when `None`), with their data under `root`.
    async fn start(host: Option<&Host>, root: &Path) -> anyhow::Result<Network> {
        let ip = host.map_or("127.0.0.1".to_owned(), |h| h.ip.to_string());
        let data = root.join("directory");
        std::fs::create_dir_all(&data)?;
        let data_arg = data.display().to_string();
        // The relay first: it makes the key the directory then seals tickets with.
        let mut relay = Proc::spawn(
            "the relay",
            host,
            &["nat-relay".into(), "--bind".into(), format!("{ip}:0"), "--data-dir".into(), data_arg.clone()],
        )?;
        let relay_at = relay.listening().await?;
        let mut directory = Proc::spawn(
            "the directory",
            host,
            &[
                "nat-directory".into(),
                "--bind".into(),
                format!("{ip}:0"),
                "--data-dir".into(),
                data_arg,
                "--relay".into(),
                relay_at.to_string(),
            ],
        )?;
        let server = directory.listening().await?;
        Ok(Network { relay, directory, server, root: root.to_path_buf(), next_number: 0 })
    }

    /// A host of clients, inside `host` (loopback when `None`).
    fn host(&self, name: &str, host: Option<&Host>) -> anyhow::Result<Proc> {
        let root = self.root.join(name);
        std::fs::create_dir_all(&root)?;
        let args = [
            "nat-host".to_owned(),
            "--server".into(),
            self.server.to_string(),
            "--root".into(),
            root.display().to_string(),
        ];
        Proc::spawn(name, host, &args)
    }

    /// A number no client of this network had.
    fn fresh(&mut self) -> anyhow::Result<String> {
        self.next_number += 1;
        Ok(number(NUMBER_PREFIX, self.next_number)?.to_string())
    }

    async fn stop(self) {
        self.directory.stop().await;
        self.relay.stop().await;
    }
}

/// One first message to a new contact.
#[derive(Clone, Debug)]
struct Attempt {
    /// Send → `Delivered`, in ms; `None` when it failed.
    millis: Option<f64>,
    /// The path it took (`lan-tcp`, `lan-udp`, `tcp`, `udp`, `relayed`), or why it failed.
    path: String,
}

impl Attempt {
    fn direct(&self) -> bool {
        matches!(self.path.as_str(), "lan-tcp" | "lan-udp" | "tcp" | "udp")
    }
}

/// What one pairing of hosts gave.
struct Pairing {
    /// The NAT kinds the two clients measured (`Cone`, `Symmetric`, …).
    nats: (String, String),
    attempts: Vec<Attempt>,
}

/// `count` first messages (after one untimed) from one sender on `a` to a fresh receiver on `b`
/// each time, which has the sender as a contact and is stopped afterwards.
async fn first_messages(
    net: &mut Network,
    a: &mut Proc,
    b: &mut Proc,
    count: usize,
) -> anyhow::Result<Pairing> {
    let sender = net.fresh()?;
    let started = a.ask(&format!("start {sender}")).await?;
    let nat = |line: &str| line.split_whitespace().nth(2).unwrap_or("?").to_owned();
    let mut nats = (nat(&started), String::new());
    let mut attempts = Vec::new();
    for i in 0..=count {
        let receiver = net.fresh()?;
        nats.1 = nat(&b.ask(&format!("start {receiver} {sender}")).await?);
        let attempt = match a.ask(&format!("send {sender} {receiver}")).await {
            Ok(line) => {
                // delivered N TO MICROS PATH
                let words: Vec<&str> = line.split_whitespace().collect();
                let micros = words.get(3).and_then(|w| w.parse::<f64>().ok());
                let path = words.get(4).copied().unwrap_or("?").to_owned();
                Attempt { millis: micros.map(|m| m / 1000.0), path }
            }
            Err(e) => Attempt { millis: None, path: format!("failed ({e:#})") },
        };
        b.ask(&format!("stop {receiver}")).await?;
        if i > 0 {
            attempts.push(attempt);
        }
    }
    a.ask(&format!("stop {sender}")).await?;
    Ok(Pairing { nats, attempts })
}

/// File transfers from `a` to `b` on a fresh pair of clients.
struct Transfers {
    /// MiB/s of each timed run.
    mib_per_s: Vec<f64>,
    /// The path the link took.
    path: String,
    /// The relay's CPU seconds over the timed runs.
    relay_cpu: f64,
}

async fn transfers(
    net: &mut Network,
    a: &mut Proc,
    b: &mut Proc,
    (big, warm): (&Path, &Path),
    size: u64,
    runs: usize,
) -> anyhow::Result<Transfers> {
    let (sender, receiver) = (net.fresh()?, net.fresh()?);
    a.ask(&format!("start {sender}")).await?;
    b.ask(&format!("start {receiver} {sender}")).await?;
    let line = a.ask(&format!("send {sender} {receiver}")).await?;
    let path = line.split_whitespace().nth(4).unwrap_or("?").to_owned();
    let mut one = async |file: &Path| -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        a.ask(&format!("file {sender} {receiver} {}", file.display())).await?;
        let wanted = format!("file_received {receiver}");
        let failed = format!("file_failed {receiver}");
        let line = b.line(FILE_TIMEOUT, |l| l == wanted || l.starts_with(&failed)).await?;
        if line != wanted {
            bail!("{line}");
        }
        Ok(t0.elapsed())
    };
    one(warm).await.context("the warm-up transfer")?;
    for _ in 0..UNTIMED_ROUNDS {
        one(big).await?;
    }
    let cpu0 = net.relay.cpu_secs()?;
    let mut out = Vec::new();
    for _ in 0..runs {
        out.push(mib_per_s(size, one(big).await?));
    }
    let relay_cpu = net.relay.cpu_secs()? - cpu0;
    a.ask(&format!("stop {sender}")).await?;
    b.ask(&format!("stop {receiver}")).await?;
    Ok(Transfers { mib_per_s: out, path, relay_cpu })
}

/// Everything the group measured.
struct Measured {
    /// First messages on loopback.
    loopback: Pairing,
    /// By pairing name, in [`PAIRINGS`] order.
    pairings: Vec<(&'static str, Pairing)>,
    relayed: Transfers,
    direct: Transfers,
    punched: Transfers,
    file_size: u64,
}

/// The NAT pairings of the success figure: name, and which two lab hosts (see [`lab_hosts`]).
const PAIRINGS: [(&str, &str, &str); 4] = [
    ("cone ↔ cone", "cone1", "cone2"),
    ("cone ↔ symmetric", "cone2", "sym1"),
    ("symmetric ↔ symmetric", "sym1", "sym2"),
    ("two hosts behind one router", "cone1", "cone1b"),
];

/// The lab's client hosts: name, router (and its NAT), or none for a public host.
const LAB_HOSTS: [(&str, Option<(&str, Nat)>); 7] = [
    ("cone1", Some(("home1", Nat::Cone))),
    ("cone1b", Some(("home1", Nat::Cone))),
    ("cone2", Some(("home2", Nat::Cone))),
    ("sym1", Some(("carrier1", Nat::Symmetric))),
    ("sym2", Some(("carrier2", Nat::Symmetric))),
    ("public1", None),
    ("public2", None),
];

/// Builds the lab's hosts: the directory's, then [`LAB_HOSTS`].
fn lab_hosts(lab: &mut Lab) -> anyhow::Result<(Host, Vec<(&'static str, Host)>)> {
    let dir = lab.public_host("dir")?;
    let mut routers: BTreeMap<&str, whatsap2p_netlab::Router> = BTreeMap::new();
    let mut hosts = Vec::new();
    for (name, behind) in LAB_HOSTS {
        let host = match behind {
            Some((router, nat)) => {
                if !routers.contains_key(router) {
                    routers.insert(router, lab.router(router, nat)?);
                }
                let r = routers.get_mut(router).context("the router")?;
                lab.host_behind(r, name)?
            }
            None => lab.public_host(name)?,
        };
        hosts.push((name, host));
    }
    Ok((dir, hosts))
}

/// Two distinct hosts of `procs` by name, both mutable.
fn two<'a>(
    procs: &'a mut [(&'static str, Proc)],
    a: &str,
    b: &str,
) -> anyhow::Result<(&'a mut Proc, &'a mut Proc)> {
    let i = procs.iter().position(|(n, _)| *n == a).context("no such host")?;
    let j = procs.iter().position(|(n, _)| *n == b).context("no such host")?;
    if i == j {
        bail!("{a} twice");
    }
    let (lo, hi) = (i.min(j), i.max(j));
    let (left, right) = procs.split_at_mut(hi);
    let (x, y) = (&mut left[lo].1, &mut right[0].1);
    Ok(if i < j { (x, y) } else { (y, x) })
}

async fn measure(lab: Lab, scale: &Scale) -> anyhow::Result<Measured> {
    let mut lab = lab;
    let tmp = tempfile::Builder::new().prefix("whatsap2p-bench-nat").tempdir()?;
    let size = scale.nat_file_size;
    let (big, warm) = test_files(tmp.path(), size).await?;

    // The loopback baseline: the same processes, no namespace.
    let mut net = Network::start(None, &tmp.path().join("loopback")).await?;
    let (mut a, mut b) = (net.host("loopback-a", None)?, net.host("loopback-b", None)?);
    let loopback = first_messages(&mut net, &mut a, &mut b, scale.nat_attempts).await;
    a.stop().await;
    b.stop().await;
    net.stop().await;
    let loopback = loopback?;

    let (dir, hosts) = lab_hosts(&mut lab)?;
    let mut net = Network::start(Some(&dir), &tmp.path().join("lab")).await?;
    let mut procs = Vec::new();
    for (name, host) in &hosts {
        procs.push((*name, net.host(name, Some(host))?));
    }
    let result = async {
        let mut pairings = Vec::new();
        for (name, a, b) in PAIRINGS {
            let (a, b) = two(&mut procs, a, b)?;
            pairings.push((name, first_messages(&mut net, a, b, scale.nat_attempts).await?));
        }
        let files = (big.as_path(), warm.as_path());
        let runs = scale.nat_file_runs;
        let (a, b) = two(&mut procs, "sym1", "sym2")?;
        let relayed = transfers(&mut net, a, b, files, size, runs).await.context("relayed transfers")?;
        let (a, b) = two(&mut procs, "public1", "public2")?;
        let direct = transfers(&mut net, a, b, files, size, runs).await.context("direct transfers")?;
        let (a, b) = two(&mut procs, "cone1", "cone2")?;
        let punched = transfers(&mut net, a, b, files, size, runs).await.context("punched transfers")?;
        Ok::<_, anyhow::Error>((pairings, relayed, direct, punched))
    }
    .await;
    for (_, p) in procs {
        p.stop().await;
    }
    net.stop().await;
    drop(lab);
    let (pairings, relayed, direct, punched) = result?;
    Ok(Measured { loopback, pairings, relayed, direct, punched, file_size: size })
}

/// The first messages' times in ms (of those that were delivered).
fn millis(p: &Pairing) -> Vec<f64> {
    p.attempts.iter().filter_map(|a| a.millis).collect()
}

/// How many attempts took each path.
fn paths(p: &Pairing) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &p.attempts {
        *by.entry(a.path.as_str()).or_default() += 1;
    }
    by.iter().map(|(path, n)| format!("{n}× {path}")).collect::<Vec<_>>().join(", ")
}

fn summary(values: &[f64]) -> Result<Summary, String> {
    Summary::of(values).ok_or_else(|| "no run succeeded".to_owned())
}

/// The group's figures, or every row skipped or failed with `why`.
pub async fn nat(scale: &Scale) -> Section {
    let measured = match Lab::new() {
        Ok(lab) => measure(lab, scale).await.map_err(|e| format!("{e:#}")),
        Err(LabError::Unavailable(why)) => Err(format!("skipped: {why}")),
        Err(e) => Err(format!("building the lab: {e}")),
    };
    let mib = scale.nat_file_size >> 20;
    let names = [
        "first message to a new contact, both behind cone NATs (punched; baseline: loopback)".to_owned(),
        "first message to a new contact, both behind symmetric NATs (relayed; baseline: loopback)".to_owned(),
        format!("file throughput through the relay, {mib} MiB (baseline: direct TCP in the same lab)"),
        format!("file throughput over a punched UDP path, {mib} MiB (baseline: direct TCP in the same lab)"),
        "relay CPU time per GiB relayed".to_owned(),
    ];
    let m = match measured {
        Ok(m) => m,
        Err(why) => {
            let mut rows: Vec<Row> = names
                .iter()
                .map(|f| Row {
                    group: "nat",
                    figure: f.clone(),
                    unit: Unit::Millis,
                    ours: Err(why.clone()),
                    baseline: Baseline::None,
                    target: Target::Report,
                })
                .collect();
            rows.extend(PAIRINGS.iter().map(|(name, ..)| Row {
                group: "nat",
                figure: format!("direct-path success, {name}"),
                unit: Unit::Percent,
                ours: Err(why.clone()),
                baseline: Baseline::None,
                target: Target::Report,
            }));
            return Section { group: "nat", rows, details: vec![] };
        }
    };
    let loopback = Summary::of(&millis(&m.loopback))
        .map(Baseline::Measured)
        .unwrap_or_else(|| Baseline::Unavailable("no loopback first message".into()));
    let pairing = |name: &str| m.pairings.iter().find(|(n, _)| *n == name).map(|(_, p)| p);
    let first = |name: &str| pairing(name).map_or(Err("not measured".to_owned()), |p| summary(&millis(p)));
    let direct = Summary::of(&m.direct.mib_per_s)
        .map(Baseline::Measured)
        .unwrap_or_else(|| Baseline::Unavailable("no direct transfer".into()));
    let relayed_gib = (m.file_size as f64 * m.relayed.mib_per_s.len() as f64) / f64::from(1u32 << 30);
    let cpu_per_gib =
        if relayed_gib > 0.0 { vec![m.relayed.relay_cpu * 1000.0 / relayed_gib] } else { vec![] };
    let [cone, symmetric, relay_file, punched_file, cpu] = names;
    let mut rows = vec![
        Row {
            group: "nat",
            figure: cone,
            unit: Unit::Millis,
            ours: first("cone ↔ cone"),
            baseline: loopback.clone(),
            target: Target::Below(300.0),
        },
        Row {
            group: "nat",
            figure: symmetric,
            unit: Unit::Millis,
            ours: first("symmetric ↔ symmetric"),
            baseline: loopback,
            target: Target::Below(500.0),
        },
        Row {
            group: "nat",
            figure: relay_file,
            unit: Unit::MibPerSec,
            ours: summary(&m.relayed.mib_per_s),
            baseline: direct.clone(),
            target: Target::RatioAtLeast(0.8),
        },
        Row {
            group: "nat",
            figure: punched_file,
            unit: Unit::MibPerSec,
            ours: summary(&m.punched.mib_per_s),
            baseline: direct,
            target: Target::ReportRatio,
        },
        Row {
            group: "nat",
            figure: cpu,
            unit: Unit::Millis,
            ours: summary(&cpu_per_gib),
            baseline: Baseline::None,
            target: Target::Report,
        },
    ];
    for (name, p) in &m.pairings {
        let n = p.attempts.len();
        let direct = p.attempts.iter().filter(|a| a.direct()).count();
        let pct = if n > 0 { 100.0 * direct as f64 / n as f64 } else { 0.0 };
        rows.push(Row {
            group: "nat",
            figure: format!("direct-path success, {name} ({direct} of {n} attempts)"),
            unit: Unit::Percent,
            ours: if n > 0 {
                Ok(Summary { median: pct, min: pct, max: pct, runs: n })
            } else {
                Err("no attempt".into())
            },
            baseline: Baseline::None,
            target: Target::Report,
        });
    }
    let mut details = vec![format!(
        "The network lab of `whatsap2p-netlab`: a bridge as the internet, the directory and the relay (each a \
         process of its own) on a public host, clients behind Linux routers doing `MASQUERADE` (a port-restricted \
         cone NAT) or `MASQUERADE --random-fully` (a symmetric one), and two public hosts without NAT. Each lab host \
         runs one process of real clients (`Client::start`). A first message: one sender per pairing; for each of \
         {} attempts (after an untimed one) a fresh receiver, with the sender as a contact, is started, then the \
         clock runs from `Client::send` to `Event::Delivered` (lookup, introduction, punching or relay pairing, \
         Noise XX with identity proofs, the message, its ack); the receiver is stopped after. The loopback baseline \
         is the same procedure with every process on 127.0.0.1.",
        m.loopback.attempts.len()
    )];
    details.push(format!(
        "Loopback: {} (paths: {}).",
        summary_text(&millis(&m.loopback)),
        paths(&m.loopback)
    ));
    for (name, p) in &m.pairings {
        details.push(format!(
            "{name}: the clients measured their NATs as {} and {}; paths: {}; first message {}.",
            p.nats.0,
            p.nats.1,
            paths(p),
            summary_text(&millis(p))
        ));
    }
    details.push(format!(
        "Files: a {mib} MiB file of pseudo-random bytes from a fresh sender to a fresh receiver (its contact), \
         after a first text and a 4 MiB warm-up transfer and {UNTIMED_ROUNDS} untimed full-size one; {} timed \
         runs from `Client::send_file` to the receiver's `Event::FileReceived`. Relayed: both behind symmetric NATs \
         (path `{}`); direct: two public hosts (path `{}`: they share the lab internet's /24, so the client \
         calls it its LAN); punched: both behind cone NATs (path `{}`). Relay CPU: \
         user + system time of the relay's process over the timed relayed runs ({:.2} s for {:.2} GiB).",
        m.relayed.mib_per_s.len(),
        m.relayed.path,
        m.direct.path,
        m.punched.path,
        m.relayed.relay_cpu,
        relayed_gib
    ));
    Section { group: "nat", rows, details }
}

fn summary_text(ms: &[f64]) -> String {
    Summary::of(ms).map_or("none delivered".to_owned(), |s| Unit::Millis.show_summary(&s))
}
