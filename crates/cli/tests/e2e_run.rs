//! End-to-end test of `./run`, the demo script: a copy of it in a folder of the test's own, with the
//! binaries under test as its `target/release` and a `cargo` on `PATH` that only records how it was
//! called (the build is cargo's business), and a tmux server of its own (`TMUX_TMPDIR`). Skipped,
//! saying so, where tmux is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tmux::{skipped, tmux_available};
use common::*;

/// The demo's folder, its tmux server and its port.
struct Demo {
    dir: tempfile::TempDir,
    port: u16,
}

impl Demo {
    fn new() -> Demo {
        let dir = tempdir();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../run");
        std::fs::copy(&script, dir.path().join("run")).expect("copying ./run");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        // Records its arguments; "builds" by linking the binaries under test where ./run runs them.
        let cargo = format!(
            "#!/bin/sh\necho \"$@\" >> '{log}'\nmkdir -p '{rel}'\nln -sf '{CLIENT_BIN}' '{rel}/whatsap2p'\nln -sf '{SERVER_BIN}' '{rel}/whatsap2p-server'\n",
            log = dir.path().join("cargo.log").display(),
            rel = dir.path().join("target/release").display(),
        );
        let path = bin.join("cargo");
        std::fs::write(&path, cargo).expect("fake cargo");
        std::process::Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
        std::fs::create_dir_all(dir.path().join("tmux")).expect("tmux dir");
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        Demo { dir, port }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `./run ARGS`, not on a terminal; its output.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command("./run").args(args).output().expect("running ./run");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "./run {args:?}: {}\n{text}", out.status);
        text
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = self.command("tmux").args(args).output().expect("running tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        let path =
            format!("{}:{}", self.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
        c.current_dir(self.path())
            .env("PATH", path)
            .env("TMUX_TMPDIR", self.path().join("tmux"))
            .env("WHATSAP2P_PORT", self.port.to_string())
            .env_remove("TMUX");
        c
    }

    /// Waits until pane `pane` of the demo (with what scrolled off it) shows `what` after
    /// `after`; returns what it shows after `after`.
    async fn wait_pane(&self, pane: usize, after: &str, what: &str) -> String {
        let target = format!("whatsap2p:0.{pane}");
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            // -J: lines wrapped by the narrow pane joined again.
            let all = self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &target]);
            let screen = match after {
                "" => all.clone(),
                after => all.rsplit_once(after).map_or("", |(_, rest)| rest).to_owned(),
            };
            if screen.contains(what) {
                return screen;
            }
            assert!(std::time::Instant::now() < deadline, "pane {pane} never showed {what:?}:\n{screen}");
            // Polling the screen: tmux has no way to wait for a change of a pane's content.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pane_pids(&self) -> String {
        self.tmux(&["list-panes", "-t", "whatsap2p", "-F", "#{pane_pid}"])
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.command("tmux").arg("kill-server").output();
    }
}

fn cargo_calls(demo: &Demo) -> Vec<String> {
    let log: PathBuf = demo.path().join("cargo.log");
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// The first build shows cargo's progress (later ones are quiet); profiles of the script's earlier
/// layout move to where a client without a number finds them; a client that logs out leaves its
/// pane saying how to start it again, and Enter does; run again, the script says the demo is
/// running and leaves it be; `./run stop` stops it.
#[tokio::test]
async fn given_the_demo_script_then_it_builds_visibly_keeps_logged_out_panes_and_a_rerun_leaves_the_session_running(
) {
    if !tmux_available() {
        skipped();
        return;
    }
    let demo = Demo::new();
    let old = demo.path().join(".demo/client-789");
    std::fs::create_dir_all(&old).expect("an old profile");
    std::fs::write(old.join("keep"), b"mine").expect("a file in it");

    let out = demo.run(&["menu"]);
    assert!(out.contains("[+] First build of whatsap2p in release mode"), "{out}");
    assert!(out.contains("attach with 'tmux attach -t whatsap2p'"), "{out}");
    let calls = cargo_calls(&demo);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].starts_with("build --release ") && !calls[0].contains("--quiet"),
        "progress shown: {calls:?}"
    );
    assert_eq!(
        std::fs::read(demo.path().join(".demo/whatsap2p/789/keep")).expect("the old profile, moved"),
        b"mine"
    );
    for pane in 1..=3 {
        let screen = demo.wait_pane(pane, "", "Choose an option:").await;
        assert!(screen.contains("[+] Connection successful!"), "{screen}");
    }

    // 123 logs out: its pane stays and says how to start it again; Enter does, with its profile.
    demo.tmux(&["send-keys", "-t", "whatsap2p:0.1", "5", "Enter"]);
    let stopped = "[+] whatsap2p 123 has stopped. Press Enter to start it again (Ctrl-b x closes this pane).";
    demo.wait_pane(1, "", stopped).await;
    demo.tmux(&["send-keys", "-t", "whatsap2p:0.1", "Enter"]);
    let screen = demo.wait_pane(1, stopped, "Choose an option:").await;
    assert!(screen.contains("[+] Connection successful!") && !screen.contains("[!]"), "{screen}");

    // Run again: said, and left running as it is.
    let panes = demo.pane_pids();
    let out = demo.run(&["menu"]);
    assert!(out.contains("already running in tmux session 'whatsap2p'"), "{out}");
    assert_eq!(demo.pane_pids(), panes, "the running demo was replaced");
    assert!(cargo_calls(&demo).iter().skip(1).all(|c| c.contains("--quiet")), "{:?}", cargo_calls(&demo));

    let out = demo.run(&["stop"]);
    assert!(out.contains("[+] Stopped tmux session 'whatsap2p'"), "{out}");
    assert_eq!(demo.pane_pids(), "", "still running");
}
