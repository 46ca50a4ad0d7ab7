//! End-to-end tests of the numbered menu as a user sees it: on a terminal (the real `whatsap2p` in a
//! tmux pane, keys typed with `send-keys`, the screen read with `capture-pane`) for the line editing
//! and what peers' text may do to the screen, and piped for what each option answers. Peers are
//! JSON-lines clients of the harness; the directory is the real server.

mod common;

use std::path::Path;

use common::tmux::{skipped, tmux_available, Pane};
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

/// The last line of the screen that has anything on it: where the prompt is.
fn prompt_line(screen: &str) -> &str {
    screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim_end()
}

/// The menu in a pane, as 123, with its profile in `profile`; waits for its first prompt.
async fn menu_pane(port: u16, profile: &Path) -> Pane {
    let command = format!(
        "{CLIENT_BIN} --number 123 --profile {} 127.0.0.1 {port} 2>{}",
        profile.display(),
        profile.join("stderr.log").display()
    );
    let pane = Pane::start(&command, 120, 40).await;
    pane.wait_for("the options", |s| prompt_line(s) == "Choose an option:").await;
    pane
}

/// Waits until the prompt line reads `line` (a prompt and what is typed at it).
async fn wait_prompt(pane: &Pane, line: &str) -> String {
    pane.wait_for(&format!("the prompt line '{line}'"), |s| prompt_line(s) == line).await
}

/// What a contact's text with escape sequences and a bidi override does to the screen, and what a
/// user typing meanwhile sees: the text arrives above the line being typed, neutralized (it erases
/// and overwrites nothing, colours nothing), the half-typed line stays as it was and goes on being
/// edited with arrows, Home and End, the line history recalls an earlier message, and each message
/// gets one delivered line and one read line with no prompt reprinted for them. A JSON peer gets
/// the same text exactly.
#[tokio::test]
async fn given_a_line_half_typed_when_a_text_with_escape_sequences_arrives_then_it_shows_neutralized_above_the_intact_line(
) {
    if !tmux_available() {
        skipped();
        return;
    }
    let server = Server::start(&[]).await;
    let mut bob = Client::start(server.port, "456").await;
    bob.add_contact("123").await;
    let mut carol = Client::start(server.port, "789").await;
    carol.add_contact("456").await;
    let profile = tempdir();
    let pane = menu_pane(server.port, profile.path()).await;

    pane.enter("4").await;
    wait_prompt(&pane, "New contact's number (and a name, if you like):").await;
    pane.enter("456 Bob").await;
    pane.wait_for("456 added", |s| s.contains("[+] Added 456")).await;
    pane.enter("2").await;
    wait_prompt(&pane, "Send to number:").await;
    pane.enter("456").await;
    wait_prompt(&pane, "Message:").await;
    pane.type_text("hello wor").await;
    wait_prompt(&pane, "Message: hello wor").await;

    // Erase the line, move up two lines, paint red, reverse the rest.
    let evil = "\u{1b}[2K\u{1b}[2Aevil \u{1b}[31mred\u{202e}txet";
    bob.send_text("123", evil).await;
    let shown = "> Message from 456 (Bob): \u{241b}[2K\u{241b}[2Aevil \u{241b}[31mred\u{fffd}txet";
    let screen = pane.wait_for("bob's text", |s| s.contains(shown)).await;
    assert_eq!(prompt_line(&screen), "Message: hello wor", "the half-typed line:\n{screen}");
    assert!(screen.contains("[+] Added 456"), "earlier lines were overwritten:\n{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    let line = lines.iter().position(|l| l.contains(shown)).expect("the text's line");
    let prompt = lines.iter().rposition(|l| l.starts_with("Message: hello wor")).expect("the prompt");
    assert!(line < prompt, "the text is above the line being typed:\n{screen}");
    bob.send_text("789", evil).await;
    let m = carol.expect("bob's text as it was sent", |v| is(v, "message")).await;
    assert_eq!(m["text"], evil, "JSON keeps the exact text: {m}");

    // The line goes on being edited: End, Home and the arrows move in it.
    pane.type_text("ld").await;
    pane.press(&["Home"]).await;
    pane.type_text(">> ").await;
    pane.press(&["End"]).await;
    pane.type_text("!").await;
    pane.press(&["Left", "Left", "Left", "Left", "Left", "Left"]).await;
    pane.type_text("big ").await;
    wait_prompt(&pane, "Message: >> hello big world!").await;
    pane.press(&["Enter"]).await;
    let m = bob.expect("the edited line", |v| is(v, "message")).await;
    assert_eq!(m["text"], ">> hello big world!", "{m}");
    let quoted = "\">> hello big world!\"";
    pane.wait_for("one delivered line", |s| s.contains(&format!("[+] Delivered to 456: {quoted}"))).await;
    let id = m["id"].as_str().expect("id").to_owned();
    bob.send(json!({"cmd": "read", "id": id})).await;
    bob.reply("marked_read", |v| is(v, "marked_read")).await;
    let screen = pane.wait_for("one read line", |s| s.contains(&format!("[+] Read by 456: {quoted}"))).await;
    let about = |what: &str| screen.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        (about("[+] Sent to 456"), about("Delivered to 456"), about("Read by 456")),
        (1, 1, 1),
        "one line each for the send, its delivery and its reading:\n{screen}"
    );
    assert!(!screen.contains("Queued message sent"), "{screen}");
    // Events print above the prompt: it is never left behind, empty, on a line of its own.
    let prompts: Vec<&str> = screen.lines().filter(|l| l.trim_end() == "Choose an option:").collect();
    assert_eq!(prompts.len(), 1, "the options prompt was printed again:\n{screen}");
    assert_eq!(prompt_line(&screen), "Choose an option:", "{screen}");

    // The line history: ↑ recalls the lines typed before, the message among them.
    pane.enter("2").await;
    wait_prompt(&pane, "Send to number:").await;
    pane.enter("456").await;
    wait_prompt(&pane, "Message:").await;
    pane.press(&["Up", "Up", "Up"]).await;
    wait_prompt(&pane, "Message: >> hello big world!").await;
    pane.enter(" again").await;
    let m = bob.expect("the recalled line", |v| is(v, "message") && v["text"] != evil).await;
    assert_eq!(m["text"], ">> hello big world! again", "{m}");

    pane.enter("5").await;
    assert_eq!(pane.exit_status().await, "0");
    server.wait_line("123 logging out", |l| l == "[+] Disconnecting 123").await;
}

/// The menu with its stdin piped: lines are read as they come, and every answer is a line.
struct PipedMenu {
    stdin: ChildStdin,
    out: Lines,
    _child: tokio::process::Child,
}

impl PipedMenu {
    async fn start(port: u16, profile: &Path) -> PipedMenu {
        let mut child = menu_command(port, profile, &["--number", "123"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning whatsap2p");
        let stdin = child.stdin.take().expect("menu stdin");
        let out = Lines::collect(child.stdout.take().expect("menu stdout"));
        out.wait_for(TIMEOUT, |l| l.contains("[+] Listening at")).await.expect("the menu is online");
        PipedMenu { stdin, out, _child: child }
    }

    /// Types `lines` (each ended by a newline).
    async fn type_lines(&mut self, lines: &[&str]) {
        for line in lines {
            self.stdin.write_all(format!("{line}\n").as_bytes()).await.expect("writing to the menu");
        }
    }

    /// Waits for a line satisfying `pred` (prompts in front of it taken off); returns it so.
    async fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.out.wait_for(TIMEOUT, |l| pred(unprompted(l))).await {
            Ok(line) => unprompted(&line).to_owned(),
            Err(_) => panic!("the menu never showed {what}:\n{}", self.out.tail(60)),
        }
    }

    /// Every line so far, prompts in front taken off.
    fn lines(&self) -> Vec<String> {
        self.out.snapshot().iter().map(|l| unprompted(l).to_owned()).collect()
    }
}

/// Prompts the tests answer. Piped input is not echoed, so what follows a prompt shares its line.
const PROMPTS: [&str; 8] = [
    "Choose an option: ",
    "Number to ping: ",
    "Send to number: ",
    "New contact's number (and a name, if you like): ",
    "Conversation with (a number, or a group's name): ",
    "Enter for older messages, or choose an option: ",
    "Request command: ",
    "Group command: ",
];

/// `line` without the prompts in front of it.
fn unprompted(mut line: &str) -> &str {
    while let Some(rest) = PROMPTS.iter().find_map(|p| line.strip_prefix(p)) {
        line = rest;
    }
    line
}

/// The Requests option: a stranger's text is announced as a request (its sender sees it pending),
/// option 9 lists it, `accept` shows the text and tells the sender delivered; a stranger's photo
/// is announced by name and size, and `block` drops it without telling its sender.
#[tokio::test]
async fn given_strangers_text_and_photo_then_the_requests_option_accepts_one_and_blocks_the_other() {
    let server = Server::start(&[]).await;
    let mut dave = Client::start(server.port, "301").await;
    let mut erin = Client::start(server.port, "302").await;
    let profile = tempdir();
    let mut menu = PipedMenu::start(server.port, profile.path()).await;

    let id = dave.send_text("123", "hi, we met at the station").await;
    menu.wait("the request", |l| {
        l == "> Message request from 301: \"hi, we met at the station\" (9 to accept, ignore or block)"
    })
    .await;
    dave.expect("pending", |v| is(v, "pending") && v["id"] == id.as_str()).await;
    let files = tempdir();
    let path = files.path().join("me.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3])).save(&path).expect("saving the photo");
    let len = std::fs::metadata(&path).expect("photo").len();
    erin.send(json!({"cmd": "send_file", "to": "123", "path": path})).await;
    menu.wait("the photo's request", |l| {
        l == format!("> Message request from 302: photo me.png ({len} B) (9 to accept, ignore or block)")
    })
    .await;

    menu.type_lines(&["9"]).await;
    menu.wait("the list", |l| l.starts_with("[+] Message requests")).await;
    menu.wait("dave's text in it", |l| l.trim() == "\"hi, we met at the station\"").await;
    menu.wait("erin's photo in it", |l| l.trim() == format!("photo me.png ({len} B)")).await;
    menu.type_lines(&["accept 301"]).await;
    menu.wait("the text, shown", |l| l == "> Message from 301: hi, we met at the station").await;
    menu.wait("the answer", |l| l.starts_with("[+] Accepted 301")).await;
    dave.expect("delivered once accepted", |v| is(v, "delivered") && v["id"] == id.as_str()).await;
    menu.type_lines(&["block 302"]).await;
    menu.wait("the block", |l| l.starts_with("[+] Blocked 302")).await;
    erin.send_text("123", "are you there?").await;
    menu.type_lines(&["", "3"]).await;
    menu.wait("the contacts", |l| l.trim_start().starts_with("301 - Online")).await;
    let out = menu.lines().join("\n");
    assert!(!out.contains("are you there?"), "a blocked number's text was shown:\n{out}");
    assert!(!out.contains("Message request from 302: \"are"), "{out}");
    assert!(
        !profile.path().join("downloads").join("me.png").exists(),
        "a blocked stranger's photo was saved"
    );
}

/// Ping tells a number that never registered from one that is offline; addresses print as
/// `ip:port`; history shows the day, files and photos with where they were saved, and pages back
/// beyond the last 20.
#[tokio::test]
async fn given_history_beyond_a_page_and_a_photo_then_option_6_pages_back_and_ping_tells_never_registered_from_offline(
) {
    let server = Server::start(&[]).await;
    let mut bob = Client::start(server.port, "456").await;
    bob.add_contact("123").await;
    let profile = tempdir();
    let mut menu = PipedMenu::start(server.port, profile.path()).await;
    menu.type_lines(&["4", "456"]).await;
    menu.wait("456 added", |l| l.starts_with("[+] Added 456")).await;

    let listen = bob.listen();
    menu.type_lines(&["1", "456"]).await;
    menu.wait("456 online, ip:port", |l| l == format!("[+] 456 - Online ({listen})")).await;
    Client::register_with(server.port, "457", &tempdir().path().join("457"), &[]).await;
    menu.type_lines(&["1", "457", "1", "458"]).await;
    menu.wait("457 offline", |l| l == "[+] 457 - Offline").await;
    menu.wait("458 never registered", |l| l.starts_with("[+] 458 - never registered")).await;

    for i in 1..=24 {
        bob.send_text("123", &format!("message {i:02}")).await;
    }
    menu.wait("the last text", |l| l.ends_with("message 24")).await;
    let files = tempdir();
    let path = files.path().join("beach.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9])).save(&path).expect("saving the photo");
    bob.send(json!({"cmd": "send_file", "to": "123", "path": path})).await;
    let saved = menu.wait("the photo", |l| l.starts_with("> Photo from 456")).await;
    let saved_to = saved.split(" saved to ").nth(1).expect("where it was saved").to_owned();

    menu.type_lines(&["6", "456"]).await;
    menu.wait("the page", |l| l == "[+] Last 20 messages with 456:").await;
    let day = menu.wait("the day", |l| l.trim_start().starts_with("── ") && l.ends_with(" (UTC) ──")).await;
    menu.wait("the photo in the history", |l| {
        l.contains("456: photo beach.png (") && l.ends_with(&format!("saved to {saved_to}"))
    })
    .await;
    menu.type_lines(&[""]).await;
    menu.wait("the older page", |l| l == "[+] 5 older messages with 456:").await;
    // Indented, as history is (the text was also shown as it arrived).
    menu.wait("the oldest", |l| l.starts_with("    ") && l.ends_with(" 456: message 01")).await;
    let lines = menu.lines();
    let days = lines.iter().filter(|l| **l == day).count();
    assert_eq!(days, 2, "the day heads each page once:\n{}", lines.join("\n"));
    assert!(
        !lines.iter().any(|l| l.contains('/') && l.contains(&listen.replace(':', "/"))),
        "ip/port printed"
    );
}

/// Less noise: a text to a group of two gets its answer and one line once both members have it
/// (then one once both read it), and nothing else: no line per member, no "queued message sent".
#[tokio::test]
async fn given_a_group_text_then_one_line_when_every_member_has_it_and_one_when_every_member_read_it() {
    let server = Server::start(&[]).await;
    let mut bob = Client::start(server.port, "456").await;
    let mut carol = Client::start(server.port, "789").await;
    bob.add_contact("123").await;
    carol.add_contact("123").await;
    let profile = tempdir();
    let mut menu = PipedMenu::start(server.port, profile.path()).await;
    menu.type_lines(&["4", "456", "4", "789"]).await;
    menu.wait("789 added", |l| l.starts_with("[+] Added 789")).await;
    menu.type_lines(&["8", "new Family 456 789"]).await;
    menu.wait("the group", |l| l.starts_with("[+] Family (")).await;
    let from = menu.out.snapshot().len();
    menu.type_lines(&["send Family dinner at 7?"]).await;
    let mut ids = Vec::new();
    for member in [&mut bob, &mut carol] {
        let m = member.expect("the group text", |v| is(v, "message") && v["text"] == "dinner at 7?").await;
        ids.push(m["id"].as_str().expect("id").to_owned());
    }
    menu.wait("delivered to both", |l| l == "[+] Delivered to all 2 in Family: \"dinner at 7?\"").await;
    for (member, id) in [(&mut bob, &ids[0]), (&mut carol, &ids[1])] {
        member.send(json!({"cmd": "read", "id": id})).await;
        member.reply("marked_read", |v| is(v, "marked_read")).await;
    }
    menu.wait("read by both", |l| l == "[+] Read by all 2 in Family: \"dinner at 7?\"").await;
    let lines: Vec<String> = menu.lines().split_off(from);
    let status: Vec<&String> =
        lines.iter().filter(|l| l.starts_with("[+]") || l.starts_with("[!]")).collect();
    assert_eq!(
        status,
        [
            "[+] Sent to 2 members",
            "[+] Delivered to all 2 in Family: \"dinner at 7?\"",
            "[+] Read by all 2 in Family: \"dinner at 7?\""
        ],
        "{}",
        lines.join("\n")
    );
}
