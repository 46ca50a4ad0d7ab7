//! End-to-end tests of the terminal UI: the real `whatsap2p --tui` in a tmux pane (keys typed with
//! `send-keys`, the screen read with `capture-pane`) against a real directory and JSON-lines peers
//! from the harness. Skipped, saying so, where tmux is not installed (CI installs it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::tmux::{skipped, tmux_available, Pane};
use common::*;
use serde_json::json;

/// The line of the screen that contains `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(needle))
}

fn half_blocks(screen: &str) -> usize {
    screen.matches(['▀', '▄']).count()
}

async fn add_contact(c: &mut Client, number: &str) {
    c.send(json!({"cmd": "add_contact", "number": number})).await;
    let v = c.reply("contact_added", |v| is(v, "contact_added")).await;
    assert!(is(&v, "contact_added"), "{v}");
}

fn photo(path: &Path) {
    let img = image::RgbImage::from_fn(160, 120, |x, y| {
        image::Rgb([(x * 255 / 159) as u8, (y * 255 / 119) as u8, 90])
    });
    img.save(path).expect("saving the photo");
}

#[tokio::test]
async fn given_the_tui_and_json_peers_then_messages_photos_unread_counts_and_a_directory_restart_show_on_screen(
) {
    if !tmux_available() {
        skipped();
        return;
    }
    let data = tempdir();
    let mut server = Server::start_in(data.path(), 0, &[]).await;
    let port = server.port;
    let mut bob = Client::start(port, "456").await;
    let mut carol = Client::start(port, "789").await;
    let profile = tempdir();
    let command = format!(
        "{CLIENT_BIN} --tui --number 123 --profile {} 127.0.0.1 {port} 2>{}",
        profile.path().display(),
        profile.path().join("stderr.log").display()
    );
    let pane = Pane::start(&command, 100, 30).await;
    pane.wait_for("the status line", |s| s.contains(" 123 ● connected")).await;
    assert_eq!(pane.flag("#{alternate_on} #{mouse_any_flag}").await, "1 1", "full screen, mouse on");

    // A message each way.
    pane.enter("/add 456").await;
    pane.wait_for("the contact added", |s| s.contains("added 456")).await;
    // 789 writes too: a contact, or its texts would be message requests.
    pane.enter("/add 789").await;
    pane.wait_for("the contact added", |s| s.contains("added 789")).await;
    add_contact(&mut bob, "123").await;
    add_contact(&mut carol, "123").await;
    pane.enter("/open 456").await;
    pane.wait_for("the conversation", |s| s.contains("456 · online")).await;
    pane.enter("hello bob, from the tui").await;
    let m = bob.expect("the message from the tui", |v| is(v, "message")).await;
    assert_eq!((m["from"].as_str(), m["text"].as_str()), (Some("123"), Some("hello bob, from the tui")));
    pane.wait_for("the delivered receipt", |s| {
        line_with(s, "hello bob, from the tui").is_some_and(|l| l.contains("✓✓"))
    })
    .await;
    let id = bob.send_text("123", "hi back from the json peer").await;
    pane.wait_for("the reply", |s| s.contains("hi back from the json peer")).await;
    // It is on screen, so it was read: the sender gets a read receipt.
    let read = bob.expect("a read receipt", |v| is(v, "read") && v["id"] == id.as_str()).await;
    assert_eq!(read["by"], "123", "{read}");

    // A photo from the peer, drawn in the pane.
    let pictures = tempdir();
    let path = pictures.path().join("sunset.png");
    photo(&path);
    bob.send(json!({"cmd": "send_file", "to": "123", "path": path})).await;
    bob.expect("file_sent", |v| is(v, "file_sent") || is(v, "file_failed")).await;
    let screen = pane
        .wait_for("the photo in half-blocks", |s| s.contains("sunset.png (160×120") && half_blocks(s) > 100)
        .await;
    assert!(line_with(&screen, "sunset.png").is_some(), "{screen}");

    // A message in another conversation: its unread count, the open one unmoved.
    carol.send_text("123", "psst, it is carol").await;
    let screen = pane
        .wait_for("carol's unread count", |s| line_with(s, "789").is_some_and(|l| l.contains(" 1 ")))
        .await;
    assert!(screen.contains("456 · online"), "the open conversation is still 456:\n{screen}");
    assert!(half_blocks(&screen) > 100, "still drawn:\n{screen}");
    // Reading carol, then back: the photo comes back with the page of history.
    pane.enter("/open 789").await;
    pane.wait_for("carol's conversation", |s| s.contains("789 · ") && s.contains("psst, it is carol")).await;
    pane.enter("/open 456").await;
    pane.wait_for("the photo again", |s| s.contains("sunset.png (160×120") && half_blocks(s) > 100).await;

    // The directory restarts: reconnecting, then connected again.
    server.stop().await;
    pane.wait_for("reconnecting", |s| s.contains("reconnecting")).await;
    server = Server::start_in(data.path(), port, &[]).await;
    pane.wait_for("connected again", |s| s.contains(" 123 ● connected")).await;
    pane.enter("still here after the restart").await;
    bob.expect("the message after the restart", |v| {
        is(v, "message") && v["text"] == "still here after the restart"
    })
    .await;

    // /quit logs out and gives the terminal back.
    pane.enter("/quit").await;
    assert_eq!(pane.exit_status().await, "0");
    assert_eq!(
        pane.flag("#{alternate_on} #{mouse_any_flag} #{cursor_flag}").await,
        "0 0 1",
        "terminal restored"
    );
    server.wait_line("123 logging out", |l| l == "[+] Disconnecting 123").await;

    // The next run finds the photo in history, and the conversations in the list.
    drop(pane);
    let pane = Pane::start(&command, 100, 30).await;
    pane.wait_for("the status line again", |s| s.contains(" 123 ● connected")).await;
    let screen = pane.wait_for("both conversations", |s| s.contains("456") && s.contains("789")).await;
    assert!(line_with(&screen, "789").is_some_and(|l| !l.contains(" 1 ")), "carol's was read:\n{screen}");
    pane.enter("/open 456").await;
    pane.wait_for("the photo of the last run", |s| s.contains("sunset.png (160×120") && half_blocks(s) > 100)
        .await;
    pane.enter("/quit").await;
    assert_eq!(pane.exit_status().await, "0");
}

/// The process id of the program a pane runs (the child of its shell).
async fn program_pid(pane: &Pane) -> u32 {
    let shell: u32 = pane.flag("#{pane_pid}").await.parse().expect("the pane's pid");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        assert!(std::time::Instant::now() < deadline, "the pane runs no program");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn given_the_tui_at_300x100_then_sigterm_and_sighup_log_out_and_restore_the_terminal() {
    if !tmux_available() {
        skipped();
        return;
    }
    let server = Server::start(&[]).await;
    let profile = tempdir();
    let command = format!(
        "{CLIENT_BIN} --tui --number 654 --profile {} 127.0.0.1 {} 2>/dev/null",
        profile.path().display(),
        server.port
    );
    for (round, (signal, name)) in [("TERM", "SIGTERM"), ("HUP", "SIGHUP")].into_iter().enumerate() {
        let pane = Pane::start(&command, 300, 100).await;
        let screen = pane.wait_for("the status line", |s| s.contains(" 654 ● connected")).await;
        // Wide: the list and the welcome side by side, the status line on the last row.
        assert!(screen.contains("│ Welcome, 654."), "{screen}");
        assert!(screen.lines().nth(99).is_some_and(|l| l.contains(" 654 ● connected")), "{screen}");
        assert_eq!(pane.flag("#{alternate_on} #{mouse_any_flag}").await, "1 1", "full screen, mouse on");
        common::signal(program_pid(&pane).await, signal);
        assert_eq!(pane.exit_status().await, "0", "{name}");
        assert_eq!(
            pane.flag("#{alternate_on} #{mouse_any_flag} #{cursor_flag}").await,
            "0 0 1",
            "terminal restored after {name}"
        );
        server.wait_count("654 logging out", round + 1, |l| l == "[+] Disconnecting 654").await;
    }
}

#[tokio::test]
async fn given_no_number_then_the_tui_asks_for_it_and_ctrl_c_restores_the_terminal() {
    if !tmux_available() {
        skipped();
        return;
    }
    let server = Server::start(&[]).await;
    let home = tempdir();
    let command = format!(
        "env XDG_DATA_HOME={} {CLIENT_BIN} --tui 127.0.0.1 {} 2>/dev/null",
        home.path().display(),
        server.port
    );
    let pane = Pane::start(&command, 40, 12).await;
    pane.wait_for("the number dialog", |s| s.contains("Your number:")).await;
    pane.enter("12").await;
    pane.wait_for("the refusal", |s| s.contains("'12'")).await;
    pane.press(&["BSpace", "BSpace"]).await;
    pane.enter("321").await;
    pane.wait_for("the tiny screen", |s| s.contains(" 321 ● connected")).await;
    // Narrow: the list alone. Resized wide: the list and the welcome side by side.
    assert!(!pane.screen().await.contains("Welcome, 321"));
    pane.tmux(&["resize-window", "-t", "tui", "-x", "120", "-y", "30"]).await;
    pane.wait_for("the wide layout", |s| s.contains("│ Welcome, 321.")).await;
    pane.tmux(&["resize-window", "-t", "tui", "-x", "40", "-y", "12"]).await;
    pane.wait_for("the narrow layout again", |s| {
        !s.contains("Welcome, 321") && s.contains(" 321 ● connected")
    })
    .await;
    pane.press(&["C-c"]).await;
    assert_eq!(pane.exit_status().await, "0");
    assert_eq!(
        pane.flag("#{alternate_on} #{mouse_any_flag} #{cursor_flag}").await,
        "0 0 1",
        "terminal restored"
    );
}
