//! Test utilities for this crate's and other crates' tests (feature `test-utils`): a
//! `redis-server` of the test's own, on a free loopback port, in a temporary dir, ended with it.
//!
//! [`Redis::start`] returns `None` (and says so on stderr) when `redis-server` is not installed:
//! `scripts/test-deps` (which `.ci/run` runs) installs it, so in CI those tests always run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

/// A `redis-server` child of the test.
pub struct Redis {
    child: Option<Child>,
    /// Its loopback port.
    pub port: u16,
    dir: tempfile::TempDir,
    aof: bool,
}

impl Redis {
    /// A fresh redis-server (append-only file, fsync on every write, when `aof`), or `None` when
    /// the program is missing.
    pub async fn start(aof: bool) -> Option<Redis> {
        let found = std::process::Command::new("redis-server").arg("--version").output();
        if !found.map(|o| o.status.success()).unwrap_or(false) {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server; .ci/run does)");
            return None;
        }
        let mut r = Redis { child: None, port: free_port(), dir: tempfile::tempdir().expect("tempdir"), aof };
        r.spawn().await;
        Some(r)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }, "--appendfsync", "always"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not listen on {} within 5 s", self.port);
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills redis-server at once (SIGKILL: what a crash does; with AOF and `appendfsync always`
    /// every acknowledged write is on disk).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same port and dir.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Its data dir.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}
