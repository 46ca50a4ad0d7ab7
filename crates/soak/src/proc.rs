//! The processes under test: the directory and JSON-lines clients, each started from the real
//! binaries, killed with SIGKILL and started again on the same data. Every line a client prints, in
//! every one of its runs, is kept for the checker.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Notify;

/// How long a process may take to come up, on a machine busy with the others.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends SIGKILL to `pid`: no shutdown path runs, as in a crash or a power cut.
pub fn kill_9(pid: u32) {
    // A process already gone is what we wanted.
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// The directory, on a fixed port so that clients find it again after a restart.
pub struct Directory {
    bin: PathBuf,
    data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Directory {
    pub fn new(bin_dir: &Path, root: &Path) -> anyhow::Result<Directory> {
        // A port the OS just handed out and nobody holds: the directory binds it at every start.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Directory {
            bin: bin_dir.join("whatsap2p-server"),
            data_dir: root.join("directory"),
            port,
            child: None,
        })
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let mut child = Command::new(&self.bin)
                .arg(self.port.to_string())
                .args(["--bind", "127.0.0.1", "--data-dir"])
                .arg(&self.data_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?;
            let stdout = child.stdout.take().context("server stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            // The server says when it serves; a bind that fails ends the process first.
            let up = tokio::time::timeout_at(deadline, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "[+] Server online" {
                        return true;
                    }
                }
                false
            })
            .await;
            if up == Ok(true) {
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                self.child = Some(child);
                return Ok(());
            }
            let _ = child.kill().await;
            if tokio::time::Instant::now() >= deadline {
                bail!("the directory did not start on port {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            kill_9(pid);
        }
        self.child = None;
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }
}

/// What every run of one client printed, in order, shared between its reader tasks and the driver.
#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<Value>>,
    grew: Notify,
}

impl Log {
    pub fn len(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn push(&self, printed: Value) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(printed);
        }
        self.grew.notify_waiters();
    }

    /// The first event from index `from` on that `pick` accepts.
    fn find(&self, from: usize, pick: &(dyn Fn(&Value) -> bool + Sync)) -> Option<Value> {
        let lines = self.lines.lock().ok()?;
        lines.iter().skip(from).find(|e| pick(e)).cloned()
    }
}

/// A JSON-lines client: its profile stays, its process comes and goes.
pub struct Client {
    pub number: String,
    bin: PathBuf,
    profile: PathBuf,
    server_port: u16,
    pub log: Arc<Log>,
    /// The pid of the running process, 0 when there is none: the chaos task kills through it
    /// without waiting for the driver's command to finish.
    pid: Arc<AtomicU32>,
    alive: Arc<AtomicBool>,
    /// Set when we kill the process, so that an exit we did not cause is told apart.
    killed: Arc<AtomicBool>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    runs: u32,
    /// Exits nobody asked for: (run, status).
    pub crashes: Arc<Mutex<Vec<(u32, String)>>>,
}

/// What the chaos task holds to kill a client at any moment.
#[derive(Clone)]
pub struct KillSwitch {
    pid: Arc<AtomicU32>,
    killed: Arc<AtomicBool>,
}

impl KillSwitch {
    /// Kills the running process, if any; false when there was none.
    pub fn kill(&self) -> bool {
        let pid = self.pid.swap(0, Ordering::SeqCst);
        if pid == 0 {
            return false;
        }
        self.killed.store(true, Ordering::SeqCst);
        kill_9(pid);
        true
    }
}

impl Client {
    pub fn new(bin_dir: &Path, root: &Path, number: &str, server_port: u16) -> Client {
        Client {
            number: number.to_string(),
            bin: bin_dir.join("whatsap2p"),
            profile: root.join(number),
            server_port,
            log: Arc::default(),
            pid: Arc::default(),
            alive: Arc::default(),
            killed: Arc::default(),
            child: None,
            stdin: None,
            runs: 0,
            crashes: Arc::default(),
        }
    }

    pub fn kill_switch(&self) -> KillSwitch {
        KillSwitch { pid: self.pid.clone(), killed: self.killed.clone() }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Starts a run of the client and waits for its `online` event.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if let Some(mut old) = self.child.take() {
            let _ = old.wait().await;
        }
        self.runs += 1;
        let run = self.runs;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.profile.with_extension("stderr.log"))
            .context("opening the client's log")?;
        let mut child = Command::new(&self.bin)
            .args(["--json", "--number", &self.number, "--profile"])
            .arg(&self.profile)
            .args(["127.0.0.1", &self.server_port.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("client stdout")?;
        self.stdin = child.stdin.take();
        self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        self.killed.store(false, Ordering::SeqCst);
        self.alive.store(true, Ordering::SeqCst);
        let from = self.log.len();
        let (log, alive, killed, crashes) =
            (self.log.clone(), self.alive.clone(), self.killed.clone(), self.crashes.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                log.push(event);
            }
            alive.store(false, Ordering::SeqCst);
            if !killed.load(Ordering::SeqCst) {
                if let Ok(mut c) = crashes.lock() {
                    c.push((run, "stdout closed without a kill".into()));
                }
            }
            log.grew.notify_waiters();
        });
        self.child = Some(child);
        let online = self.wait_for(from, START_TIMEOUT, &|e| is(e, "online") || is(e, "error")).await;
        match online {
            Some(e) if is(&e, "online") => Ok(()),
            Some(e) => bail!("{} did not start: {e}", self.number),
            None => bail!("{} did not print `online` within {START_TIMEOUT:?}", self.number),
        }
    }

    /// Writes a command; returns the first event from then on that `answer` accepts, or None when
    /// the process died (or took longer than `timeout`) first.
    pub async fn command(
        &mut self,
        cmd: &Value,
        timeout: Duration,
        answer: &(dyn Fn(&Value) -> bool + Sync),
    ) -> Option<Value> {
        let from = self.log.len();
        let stdin = self.stdin.as_mut()?;
        let mut line = cmd.to_string().into_bytes();
        line.push(b'\n');
        if stdin.write_all(&line).await.is_err() {
            return None;
        }
        self.wait_for(from, timeout, answer).await
    }

    async fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pick: &(dyn Fn(&Value) -> bool + Sync),
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let grew = self.log.grew.notified();
            if let Some(found) = self.log.find(from, pick) {
                return Some(found);
            }
            if !self.is_alive() {
                return None;
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                return None;
            }
        }
    }

    /// Ends the run with `logout` (the way a user quits), killing it if it does not go.
    pub async fn stop(&mut self) {
        self.killed.store(true, Ordering::SeqCst);
        let _ = self
            .command(&serde_json::json!({"cmd":"logout"}), Duration::from_secs(10), &|e| is(e, "bye"))
            .await;
        if let Some(mut child) = self.child.take() {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    pub fn profile(&self) -> &Path {
        &self.profile
    }
}

pub fn is(event: &Value, name: &str) -> bool {
    event.get("event").and_then(Value::as_str) == Some(name)
}
