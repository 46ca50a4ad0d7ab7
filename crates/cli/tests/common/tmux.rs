//! A program in a tmux pane of a tmux server of the test's own: keys typed with `send-keys`, the
//! screen read with `capture-pane`, for the tests of what a terminal shows (the terminal UI, the
//! menu's line editing). Tests skip, saying so, where tmux is not installed (CI installs it).

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use super::{tempdir, TIMEOUT};

/// A tmux server of the test's own (its own socket), running one session.
pub struct Pane {
    socket: String,
    _dir: tempfile::TempDir,
    exit_file: PathBuf,
}

/// Says the test did not run, on stderr itself: a passing test's `eprintln!` is captured and
/// never shown.
pub fn skipped() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: tmux is not installed (apt-get install -y tmux): what a terminal shows was not tested end to end"
    );
}

pub fn tmux_available() -> bool {
    std::process::Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success())
}

impl Pane {
    /// Starts `command` in a `width`×`height` pane; its exit status is written to a file.
    pub async fn start(command: &str, width: u16, height: u16) -> Pane {
        let dir = tempdir();
        // A socket of its own: the test never touches the user's tmux, nor another test's.
        let socket = dir.path().join("tmux.sock").display().to_string();
        let exit_file = dir.path().join("exit");
        // The shell stays after the program, so the pane shows the terminal state it left.
        let wrapped = format!("{command}; echo $? > {}; exec sleep 600", exit_file.display());
        let pane = Pane { socket, _dir: dir, exit_file };
        pane.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "tui",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &wrapped,
        ])
        .await;
        pane
    }

    pub async fn tmux(&self, args: &[&str]) -> String {
        let out =
            Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().await.expect("running tmux");
        assert!(
            out.status.success(),
            "tmux -S {} {args:?}: {}",
            self.socket,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally.
    pub async fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "tui", "-l", text]).await;
    }

    /// Presses keys by name (`Enter`, `Tab`, `C-c`).
    pub async fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        self.tmux(&args).await;
    }

    /// Types a line and presses Enter.
    pub async fn enter(&self, line: &str) {
        self.type_text(line).await;
        self.press(&["Enter"]).await;
    }

    pub async fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "tui"]).await
    }

    /// Waits (at most [`TIMEOUT`]) until the screen satisfies `pred`; returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let screen = self.screen().await;
            if pred(&screen) {
                return screen;
            }
            assert!(std::time::Instant::now() < deadline, "the screen never showed {what}:\n{screen}");
            // Polling the screen: tmux has no way to wait for a change of a pane's content.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A tmux format of the pane (`#{alternate_on}`…).
    pub async fn flag(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "tui", format]).await.trim().to_owned()
    }

    /// Waits until the program in the pane exits; returns its status.
    pub async fn exit_status(&self) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.exit_file) {
                return s.trim().to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "the UI did not exit:\n{}", self.screen().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
    }
}
