//! End-to-end test harness: real `whatsap2p-server` and `whatsap2p --json` processes.
//!
//! - [`Server`]: a server on a free port (or a given one) with a data dir; every stdout line is
//!   collected so a test can wait for a line matching a predicate.
//! - [`Client`]: a JSON-lines client; its stdout events go into a channel, [`Client::expect`] waits
//!   for the first matching one (skipping others) and fails with everything seen so far.
//! - [`tmux::Pane`]: a program in a tmux pane, for what a terminal shows.
//! - Raw TCP helpers for garbage tests, and [`StickyProxy`], a TCP relay that keeps the server side
//!   of a connection open after the client side dies.
//!
//! Every child is spawned with `kill_on_drop`, so a failing test leaks no process. Nothing here
//! sleeps to "hope": waits are for lines, events, exits or socket closures, bounded by [`TIMEOUT`].

#![allow(dead_code)]

pub mod tmux;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, Notify};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_whatsap2p-server");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_whatsap2p");

/// A fresh temporary directory.
pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("creating a tempdir")
}

/// The short form the server logs for a key: the first 16 bytes of the hex, in groups of four.
pub fn fingerprint(hex: &str) -> String {
    let head: Vec<char> = hex.chars().take(32).collect();
    head.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(":")
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, `TERM`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill(1)");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

// ---------------------------------------------------------------------------------------------
// Collected output lines
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    closed: bool,
}

/// The lines of a child's output stream, collected as they come by a background task.
#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<LinesState>, Notify)>,
}

impl Lines {
    /// Starts collecting `reader`'s lines.
    pub fn collect<R: AsyncRead + Unpin + Send + 'static>(reader: R) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                        sink.state().lines.push(line);
                        sink.inner.1.notify_waiters();
                    }
                }
            }
            sink.state().closed = true;
            sink.inner.1.notify_waiters();
        });
        lines
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinesState> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// How many lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.state().lines.iter().filter(|l| pred(l)).count()
    }

    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let s = self.state();
        let start = s.lines.len().saturating_sub(n);
        s.lines[start..].join("\n")
    }

    /// Waits (at most `timeout`) for a line matching `pred`, looking at every line since the start.
    /// On timeout returns `Err` with every line seen.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String, String> {
        self.wait_until(timeout, |lines| lines.iter().find(|l| pred(l)).cloned()).await
    }

    /// Waits (at most `timeout`) until `check` of all lines so far gives `Some`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.state();
                if let Some(found) = check(&s.lines) {
                    return Ok(found);
                }
                if s.closed {
                    return Err(format!("stream closed; lines:\n{}", s.lines.join("\n")));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!("timed out after {timeout:?}; lines:\n{}", self.snapshot().join("\n")));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// A running `whatsap2p-server` bound to 127.0.0.1.
pub struct Server {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The `Server key fingerprint` it printed.
    pub fingerprint: String,
    pub stdout: Lines,
    pub stderr: Lines,
    _own_dir: Option<TempDir>,
}

impl Server {
    /// A server on a free port with its own temporary data dir.
    pub async fn start(extra: &[&str]) -> Server {
        let dir = tempdir();
        let mut s = Server::start_in(dir.path(), 0, extra).await;
        s._own_dir = Some(dir);
        s
    }

    /// A server on `port` (0: a free one) using `data_dir`. Its relay takes a free port unless
    /// `extra` says otherwise: the default, the next port, may be another test's.
    pub async fn start_in(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
        let relay_set = extra.iter().any(|a| a.starts_with("--relay") || *a == "--no-relay");
        let relay: &[&str] = if relay_set { &[] } else { &["--relay-port", "0"] };
        let mut child = Command::new(SERVER_BIN)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--data-dir")
            .arg(data_dir)
            .args(relay)
            .args(extra)
            .arg(port.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning whatsap2p-server");
        let stdout = Lines::collect(child.stdout.take().expect("server stdout"));
        let stderr = Lines::collect(child.stderr.take().expect("server stderr"));
        let fail = |what: &str, e: String| -> ! {
            panic!("server did not print {what}: {e}\nstderr:\n{}", stderr.tail(30))
        };
        let fp_line = stdout
            .wait_for(TIMEOUT, |l| l.starts_with("[+] Server key fingerprint: "))
            .await
            .unwrap_or_else(|e| fail("its fingerprint", e));
        let listening = stdout
            .wait_for(TIMEOUT, |l| l.starts_with("[+] Listening on "))
            .await
            .unwrap_or_else(|e| fail("Listening on", e));
        stdout
            .wait_for(TIMEOUT, |l| l == "[+] Server online")
            .await
            .unwrap_or_else(|e| fail("Server online", e));
        let bound: std::net::SocketAddr = listening
            .trim_start_matches("[+] Listening on ")
            .parse()
            .unwrap_or_else(|e| panic!("bad Listening line {listening:?}: {e}"));
        assert_eq!(bound.ip().to_string(), "127.0.0.1", "{listening}");
        if port != 0 {
            assert_eq!(bound.port(), port, "{listening}");
        }
        Server {
            child,
            port: bound.port(),
            data_dir: data_dir.to_path_buf(),
            fingerprint: fp_line.trim_start_matches("[+] Server key fingerprint: ").to_owned(),
            stdout,
            stderr,
            _own_dir: None,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for a stdout line matching `pred` (any line since the start); fails with every line.
    pub async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_within(TIMEOUT, what, pred).await
    }

    /// [`Server::wait_line`] with its own timeout.
    pub async fn wait_line_within(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        match self.stdout.wait_for(timeout, pred).await {
            Ok(l) => l,
            Err(e) => panic!("server: no line {what}: {e}\nstderr:\n{}", self.stderr.tail(30)),
        }
    }

    /// Waits until at least `n` stdout lines match `pred`.
    pub async fn wait_count(&self, what: &str, n: usize, pred: impl Fn(&str) -> bool) {
        let result = self
            .stdout
            .wait_until(TIMEOUT, |lines| (lines.iter().filter(|l| pred(l)).count() >= n).then_some(()))
            .await;
        if let Err(e) = result {
            panic!("server: fewer than {n} lines {what}: {e}");
        }
    }

    /// How many stdout lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.stdout.count(pred)
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    /// SIGKILL: dies at once, saying goodbye to nobody; waits until it is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM");
        }
        match tokio::time::timeout(TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("waiting for the server");
                assert!(status.success(), "server exited with {status} on SIGTERM");
            }
            Err(_) => panic!("server did not stop within {TIMEOUT:?} of SIGTERM:\n{}", self.stdout.tail(30)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Is `v` an event named `name`?
pub fn is(v: &Value, name: &str) -> bool {
    v["event"] == name
}

/// The `whatsap2p` menu (no `--json`) for the server on `server_port` with `profile` and the flags
/// `extra`, stdin, stdout and stderr piped: a command to adjust and spawn.
pub fn menu_command(server_port: u16, profile: &Path, extra: &[&str]) -> Command {
    let mut menu = Command::new(CLIENT_BIN);
    menu.args(extra)
        .arg("--profile")
        .arg(profile)
        .arg("127.0.0.1")
        .arg(server_port.to_string())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    menu
}

/// A `whatsap2p --json` process.
pub struct Client {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Value>,
    /// Every event read so far, in order.
    seen: Vec<Value>,
    pub number: String,
    pub stderr: Lines,
    /// The `online` event, once [`Client::online`] saw it.
    pub online: Value,
    _own_profile: Option<TempDir>,
}

impl Client {
    /// Spawns a client without waiting for anything.
    pub fn spawn(server_port: u16, number: &str, profile: &Path, extra: &[&str]) -> Client {
        Client::spawn_to("127.0.0.1", server_port, number, profile, extra)
    }

    /// [`Client::spawn`] with the server given as `host` (an IP or a host name).
    pub fn spawn_to(host: &str, server_port: u16, number: &str, profile: &Path, extra: &[&str]) -> Client {
        let mut command = Command::new(CLIENT_BIN);
        command.arg("--json").arg("--profile").arg(profile).arg("--number").arg(number).args(extra);
        command.arg(host).arg(server_port.to_string());
        Client::from_command(command, number)
    }

    /// Spawns `command` (a `whatsap2p --json` command line, made elsewhere: inside a lab host, say)
    /// as the client `number`, without waiting for anything.
    pub fn from_command(mut command: Command, number: &str) -> Client {
        let mut child = command
            .env("RUST_LOG", std::env::var("W2P_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning whatsap2p");
        let pid = child.id().expect("client pid");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("client stdout");
        let stderr = Lines::collect(child.stderr.take().expect("client stderr"));
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|_| json!({"event": "__not_json__", "line": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            pid,
            stdin,
            events,
            seen: Vec::new(),
            number: number.to_owned(),
            stderr,
            online: Value::Null,
            _own_profile: None,
        }
    }

    /// A client with a fresh profile, online.
    pub async fn start(server_port: u16, number: &str) -> Client {
        let dir = tempdir();
        let mut c = Client::start_with(server_port, number, dir.path(), &[]).await;
        c._own_profile = Some(dir);
        c
    }

    /// A client with `profile` and `extra` flags, online.
    pub async fn start_with(server_port: u16, number: &str, profile: &Path, extra: &[&str]) -> Client {
        let mut c = Client::spawn(server_port, number, profile, extra);
        c.online().await;
        c
    }

    /// Waits for the `online` event (failing on an `error` event) and keeps it.
    pub async fn online(&mut self) -> Value {
        let v = self.expect("online", |v| is(v, "online") || is(v, "error")).await;
        assert!(
            is(&v, "online"),
            "client {} did not come online: {v}\n{}",
            self.number.clone(),
            self.report()
        );
        assert_eq!(v["number"], self.number.as_str(), "{v}");
        self.online = v.clone();
        v
    }

    /// Spawns a client that must fail to start: returns its `error` message after checking that it
    /// exits with code 1.
    pub async fn start_refused(server_port: u16, number: &str, profile: &Path, extra: &[&str]) -> String {
        let mut c = Client::spawn(server_port, number, profile, extra);
        let v = c.expect("error at start", |v| is(v, "error") || is(v, "online")).await;
        assert!(is(&v, "error"), "client {number} should have been refused, got {v}\n{}", c.report());
        let status = c.wait_exit().await;
        assert_eq!(status.code(), Some(1), "refused client {number} exit status\n{}", c.report());
        v["message"].as_str().expect("error message").to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where its peer listener is (the `listen` of `online`).
    pub fn listen(&self) -> String {
        self.online["listen"].as_str().expect("online.listen").to_owned()
    }

    /// Its identity key (hex).
    pub fn key(&self) -> String {
        self.online["key"].as_str().expect("online.key").to_owned()
    }

    /// The server key it pinned (hex).
    pub fn server_key(&self) -> String {
        self.online["server_key"].as_str().expect("online.server_key").to_owned()
    }

    /// Writes one line to stdin.
    pub async fn send_line(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        let mut buf = line.to_vec();
        buf.push(b'\n');
        stdin.write_all(&buf).await.expect("writing to client stdin");
        stdin.flush().await.expect("flushing client stdin");
    }

    /// Writes `bytes` to stdin as they are (no newline added): part of a line, or several.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(bytes).await.expect("writing to client stdin");
        stdin.flush().await.expect("flushing client stdin");
    }

    /// Writes one command.
    pub async fn send(&mut self, cmd: Value) {
        self.send_line(cmd.to_string().as_bytes()).await;
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the first event matching `pred`, skipping (but recording) others.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_within(TIMEOUT, what, pred).await
    }

    /// [`Client::expect`] with its own timeout.
    pub async fn expect_within(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    assert!(
                        !is(&v, "__not_json__"),
                        "client {} wrote a non-JSON line on stdout: {v}",
                        self.number
                    );
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => {
                    // Stdout closed: give the exit status a moment to be reaped for the report.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
                    panic!(
                        "client {}: stdout closed while waiting for {what}\n{}",
                        self.number.clone(),
                        self.report()
                    )
                }
                Err(_) => {
                    panic!("client {}: no {what} within {timeout:?}\n{}", self.number.clone(), self.report())
                }
            }
        }
    }

    /// Waits for the answer to a command: the first event matching `pred`, or an `error` event.
    pub async fn reply(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect(what, |v| pred(v) || is(v, "error")).await
    }

    /// Every event read so far, including any already waiting in the channel.
    pub fn events_so_far(&mut self) -> Vec<Value> {
        while let Ok(v) = self.events.try_recv() {
            self.seen.push(v);
        }
        self.seen.clone()
    }

    /// Events seen so far, exit status and stderr tail, for failure messages.
    pub fn report(&mut self) -> String {
        let events: Vec<String> = self.events_so_far().iter().map(|v| format!("  {v}")).collect();
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited: {s}"),
            Ok(None) => "still running".to_owned(),
            Err(e) => format!("status unknown: {e}"),
        };
        format!(
            "events seen by {}:\n{}\n{status}\nstderr tail:\n{}",
            self.number,
            events.join("\n"),
            self.stderr.tail(20)
        )
    }

    /// The first event already seen that matches `pred`, else the next one to come (see
    /// [`Client::expect`]). For unsolicited events that may have been skipped by an earlier wait.
    pub async fn seen_or_expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.events_so_far();
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        self.expect(what, pred).await
    }

    /// `add_contact` of `number`, which must succeed. What a number that is not a contact sends is
    /// a message request, so a receiver adds its senders first.
    pub async fn add_contact(&mut self, number: &str) {
        self.send(json!({"cmd": "add_contact", "number": number})).await;
        let v = self.reply("contact_added", |v| is(v, "contact_added") && v["number"] == number).await;
        assert!(is(&v, "contact_added"), "{}: add_contact {number} failed: {v}", self.number.clone());
    }

    /// A client with `profile` registered once, with `contacts` added, then logged out: known to
    /// the directory, offline, and taking messages from `contacts` as soon as it is back.
    pub async fn register_with(port: u16, number: &str, profile: &Path, contacts: &[&str]) {
        let mut c = Client::start_with(port, number, profile, &[]).await;
        for contact in contacts {
            c.add_contact(contact).await;
        }
        c.logout().await;
    }

    /// `ping` of a registered number; returns the `presence` answer. The answer is told from
    /// pushed `presence` events (which never carry `key`) by its `key`.
    pub async fn ping(&mut self, number: &str) -> Value {
        self.send(json!({"cmd": "ping", "number": number})).await;
        let v = self
            .reply(&format!("presence of {number}"), |v| {
                is(v, "presence") && v["number"] == number && v.get("key").is_some()
            })
            .await;
        assert!(is(&v, "presence"), "{} ping {number} failed: {v}\n{}", self.number.clone(), self.report());
        v
    }

    /// `ping` of a number that never registered (and is not watched, so nothing is pushed about
    /// it); returns the `presence` answer after checking it is offline and has no key.
    pub async fn ping_unregistered(&mut self, number: &str) -> Value {
        self.send(json!({"cmd": "ping", "number": number})).await;
        let v = self
            .reply(&format!("presence of {number}"), |v| is(v, "presence") && v["number"] == number)
            .await;
        assert!(is(&v, "presence"), "{} ping {number} failed: {v}\n{}", self.number.clone(), self.report());
        assert_eq!(v["online"], false, "{v}");
        assert!(v.get("addr").is_none() && v.get("key").is_none(), "never registered: {v}");
        v
    }

    /// The answer to a `send`: `sent`, `queued` or `error`.
    async fn send_answer(&mut self, to: &str, text: &str) -> Value {
        self.send(json!({"cmd": "send", "to": to, "text": text})).await;
        self.reply(&format!("answer to send to {to}"), |v| {
            (is(v, "sent") || is(v, "queued")) && v["to"] == to && v.get("group").is_none()
        })
        .await
    }

    /// `send` that must be written at once; returns the message id of the `sent` answer.
    pub async fn send_text(&mut self, to: &str, text: &str) -> String {
        let v = self.send_answer(to, text).await;
        assert!(is(&v, "sent"), "{} send to {to} not sent: {v}\n{}", self.number.clone(), self.report());
        let id = v["id"].as_str().expect("sent.id").to_owned();
        assert_eq!(id.len(), 26, "a ULID has 26 characters: {v}");
        id
    }

    /// `send` that must be queued; returns the id and the reason.
    pub async fn send_queued(&mut self, to: &str, text: &str) -> (String, String) {
        let v = self.send_answer(to, text).await;
        assert!(is(&v, "queued"), "{} send to {to} not queued: {v}\n{}", self.number.clone(), self.report());
        (
            v["id"].as_str().expect("queued.id").to_owned(),
            v["reason"].as_str().expect("queued.reason").to_owned(),
        )
    }

    /// `send` that must fail; returns the error message.
    pub async fn send_refused(&mut self, to: &str, text: &str) -> String {
        let v = self.send_answer(to, text).await;
        assert!(
            is(&v, "error"),
            "{} send to {to} should fail, got {v}\n{}",
            self.number.clone(),
            self.report()
        );
        v["message"].as_str().expect("error.message").to_owned()
    }

    /// Waits for `delivered` of `id` from `to` (failing at once on `failed` of `id`).
    pub async fn delivered(&mut self, id: &str, to: &str) -> Value {
        let v = self
            .expect(&format!("delivered {id}"), |v| (is(v, "delivered") || is(v, "failed")) && v["id"] == id)
            .await;
        assert!(
            is(&v, "delivered"),
            "{}: message {id} not delivered: {v}\n{}",
            self.number.clone(),
            self.report()
        );
        assert_eq!(v["to"], to, "{v}");
        v
    }

    /// Waits for the `message` with `id`; checks `from` and `text`.
    pub async fn message(&mut self, id: &str, from: &str, text: &str) -> Value {
        let v = self.expect(&format!("message {id}"), |v| is(v, "message") && v["id"] == id).await;
        assert_eq!(v["from"], from, "{v}");
        assert_eq!(v["text"], text, "{v}");
        assert!(v["sent_at_ms"].as_u64().is_some_and(|t| t > 0), "sent_at_ms: {v}");
        v
    }

    /// `logout`: waits for `bye` and a clean exit.
    pub async fn logout(&mut self) {
        self.send(json!({"cmd": "logout"})).await;
        self.expect("bye", |v| is(v, "bye")).await;
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "{} exited with {status} after logout\n{}",
            self.number.clone(),
            self.report()
        );
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(TIMEOUT, self.child.wait()).await {
            Ok(s) => s.expect("waiting for the client"),
            Err(_) => {
                panic!("client {} did not exit within {TIMEOUT:?}\n{}", self.number.clone(), self.report())
            }
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `KILL`, ...).
    pub fn signal(&self, sig: &str) {
        signal(self.pid, sig);
    }

    /// SIGSTOP, then waits until every thread of the process is stopped: kill(1) returns once the
    /// signal is queued, and a thread running on another CPU can still do a little work (read a
    /// frame, answer it) before it stops.
    pub async fn stop(&self) {
        signal(self.pid, "STOP");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).expect("listing the threads");
            let all_stopped = tasks.filter_map(Result::ok).all(|t| {
                // The state is the first field after the parenthesised command name.
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|stat| {
                        stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T'))
                    })
                    .unwrap_or(true)
            });
            if all_stopped {
                return;
            }
            assert!(Instant::now() < deadline, "client {} did not stop within {TIMEOUT:?}", self.number);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("killing the client");
    }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------------------------

/// Connects a raw TCP stream; returns it and its local port (as the server logs it).
pub async fn connect_raw(addr: &str) -> (TcpStream, u16) {
    let s = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let port = s.local_addr().expect("local addr").port();
    (s, port)
}

/// Waits until the other side closes `stream` (EOF or reset); returns how long that took.
pub async fn wait_closed(stream: &mut TcpStream, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    if tokio::time::timeout(within, closed).await.is_err() {
        panic!("{what}: connection still open after {within:?}");
    }
    start.elapsed()
}

/// Deterministic pseudo-random bytes (xorshift), so a failing run can be replayed.
pub fn noise_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sticky proxy
// ---------------------------------------------------------------------------------------------

/// A TCP relay to 127.0.0.1:`upstream` that keeps each upstream connection open, silent, after its
/// client side has gone: the server keeps believing a killed client is online (until its heartbeat
/// timeout). Dropping the proxy closes everything.
pub struct StickyProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl StickyProxy {
    pub async fn start(upstream: u16) -> StickyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let task = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                relays.spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    let (mut client_r, mut client_w) = client.into_split();
                    let (mut server_r, mut server_w) = server.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut client_r, &mut server_w).await;
                        // The client is gone: hold the server side open, say nothing.
                        std::future::pending::<()>().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        StickyProxy { port, task }
    }
}

impl Drop for StickyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
