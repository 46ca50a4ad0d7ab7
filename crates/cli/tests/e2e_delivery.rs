//! End-to-end tests of "never lose a message": the outbox for offline contacts, restarts of the sender
//! and of the server, presence pushes, receipts, deduplication, history, and proof that no message
//! content reaches the directory server. Real `whatsap2p-server` and `whatsap2p --json` processes on
//! loopback.

mod common;

use std::time::{Duration, Instant};

use common::{is, tempdir, Client, Server, TIMEOUT};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Registers `number` with `profile` once (with 123 as a contact, unless it is 123) and logs out,
/// so the number is known (and offline).
async fn register_then_leave(port: u16, number: &str, profile: &std::path::Path) {
    let contacts: &[&str] = if number == "123" { &[] } else { &["123"] };
    Client::register_with(port, number, profile, contacts).await;
}

/// `delivered` of `id` to `to`, whether it already went by (skipped by an earlier wait) or is still to come.
async fn delivered(c: &mut Client, id: &str, to: &str) {
    let v = c.seen_or_expect(&format!("delivered {id}"), |v| is(v, "delivered") && v["id"] == id).await;
    assert_eq!(v["to"], to, "{v}");
}

/// Makes `a` and `b` contacts of each other (both online).
async fn befriend(a: &mut Client, b: &mut Client) {
    let (na, nb) = (a.number.clone(), b.number.clone());
    add_contact(a, &nb).await;
    add_contact(b, &na).await;
}

/// `add_contact`, waiting for its answer.
async fn add_contact(c: &mut Client, number: &str) {
    c.send(json!({"cmd": "add_contact", "number": number})).await;
    c.reply("contact_added", |v| is(v, "contact_added")).await;
}

#[tokio::test]
async fn given_offline_contact_then_messages_are_queued_and_arrive_in_order_once_when_it_logs_in() {
    let server = Server::start(&[]).await;
    let bob_profile = tempdir();
    register_then_leave(server.port, "456", bob_profile.path()).await;
    let mut alice = Client::start(server.port, "123").await;
    add_contact(&mut alice, "456").await;

    let mut ids = Vec::new();
    for i in 0..5 {
        let (id, reason) = alice.send_queued("456", &format!("queued {i}")).await;
        assert!(reason.contains("offline"), "{reason}");
        ids.push(id);
    }

    let mut bob = Client::start_with(server.port, "456", bob_profile.path(), &[]).await;
    for (i, id) in ids.iter().enumerate() {
        // `expect` skips nothing silently: any earlier message would be found first and fail here.
        let m = bob.expect("next message", |v| is(v, "message")).await;
        assert_eq!(m["id"], id.as_str(), "message {i} out of order: {m}");
        assert_eq!(m["text"], format!("queued {i}"));
        assert_eq!(m["from"], "123");
    }
    for id in &ids {
        alice.seen_or_expect(&format!("sent {id}"), |v| is(v, "sent") && v["id"] == id.as_str()).await;
        delivered(&mut alice, id, "456").await;
    }
    // Nothing comes twice: history holds each message once, in order.
    bob.send(json!({"cmd": "history", "with": "123"})).await;
    let h = bob.reply("history", |v| is(v, "history")).await;
    let got: Vec<&str> =
        h["messages"].as_array().expect("messages").iter().map(|m| m["id"].as_str().unwrap_or("")).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>(), "{h}");
    let extra = bob.events_so_far().iter().filter(|v| is(v, "message")).count();
    assert_eq!(extra, ids.len(), "each message shown exactly once");
}

#[tokio::test]
async fn given_sender_sigkilled_with_a_full_outbox_then_its_restart_still_delivers_it() {
    let server = Server::start(&[]).await;
    let bob_profile = tempdir();
    register_then_leave(server.port, "456", bob_profile.path()).await;
    let alice_profile = tempdir();
    let mut alice = Client::start_with(server.port, "123", alice_profile.path(), &[]).await;
    let (first, _) = alice.send_queued("456", "written before the crash").await;
    let (second, _) = alice.send_queued("456", "and this one too").await;
    alice.signal("KILL");
    alice.wait_exit().await;

    let mut alice = Client::start_with(server.port, "123", alice_profile.path(), &[]).await;
    let mut bob = Client::start_with(server.port, "456", bob_profile.path(), &[]).await;
    bob.message(&first, "123", "written before the crash").await;
    bob.message(&second, "123", "and this one too").await;
    delivered(&mut alice, &first, "456").await;
    delivered(&mut alice, &second, "456").await;
}

#[tokio::test]
async fn given_server_restart_then_both_clients_reconnect_by_themselves_and_keep_chatting() {
    // The test owns the data dir, so the restarted server finds the same key and bindings.
    let data = tempdir();
    let mut server = Server::start_in(data.path(), 0, &[]).await;
    let port = server.port;
    let mut alice = Client::start(port, "123").await;
    let mut bob = Client::start(port, "456").await;
    befriend(&mut alice, &mut bob).await;
    let id = alice.send_text("456", "before").await;
    bob.message(&id, "123", "before").await;

    server.stop().await;
    alice.expect("directory_lost", |v| is(v, "directory_lost")).await;
    bob.expect("directory_lost", |v| is(v, "directory_lost")).await;
    let started = Instant::now();
    server = Server::start_in(data.path(), port, &[]).await;
    alice.expect_within(Duration::from_secs(8), "reconnected", |v| is(v, "reconnected")).await;
    bob.expect_within(Duration::from_secs(8), "reconnected", |v| is(v, "reconnected")).await;
    assert!(started.elapsed() < Duration::from_secs(8), "reconnected after {:?}", started.elapsed());
    server.wait_count("both registered again", 2, |l| l.starts_with("[+] Registered ")).await;

    // A fresh lookup works, and messages flow both ways.
    let p = alice.ping("456").await;
    assert_eq!(p["online"], true, "{p}");
    let id = alice.send_text("456", "after").await;
    bob.message(&id, "123", "after").await;
    delivered(&mut alice, &id, "456").await;
    let id = bob.send_text("123", "and back").await;
    alice.message(&id, "456", "and back").await;
    // Said once each, not once per attempt.
    for c in [&mut alice, &mut bob] {
        let lost = c.events_so_far().iter().filter(|v| is(v, "directory_lost")).count();
        assert_eq!(lost, 1, "directory_lost said once\n{}", c.report());
    }
}

#[tokio::test]
async fn given_watched_contact_then_its_presence_is_pushed_within_100ms() {
    let server = Server::start(&[]).await;
    let bob_profile = tempdir();
    register_then_leave(server.port, "456", bob_profile.path()).await;
    let mut alice = Client::start(server.port, "123").await;
    add_contact(&mut alice, "456").await;
    // The first status may come before or after the answer to add_contact.
    alice
        .seen_or_expect("first status", |v| is(v, "presence") && v["number"] == "456" && v["online"] == false)
        .await;

    let mut bob = Client::spawn(server.port, "456", bob_profile.path(), &[]);
    bob.online().await;
    let seen_online = Instant::now();
    let v = alice.expect("online push", |v| is(v, "presence") && v["number"] == "456").await;
    let latency = seen_online.elapsed();
    assert_eq!(v["online"], true, "{v}");
    assert_eq!(v["addr"], bob.listen().as_str(), "{v}");
    assert!(latency < Duration::from_millis(100), "online pushed after {latency:?}");

    bob.send(json!({"cmd": "logout"})).await;
    bob.expect("bye", |v| is(v, "bye")).await;
    let bye = Instant::now();
    let v = alice.expect("offline push", |v| is(v, "presence") && v["number"] == "456").await;
    assert_eq!(v["online"], false, "{v}");
    assert!(v.get("addr").is_none(), "{v}");
    assert!(bye.elapsed() < Duration::from_millis(100), "offline pushed after {:?}", bye.elapsed());

    // View Contacts answers from the pushed state.
    alice.send(json!({"cmd": "contacts"})).await;
    let c = alice.reply("contacts", |v| is(v, "contacts")).await;
    assert_eq!(c["contacts"][0]["online"], false, "{c}");
}

#[tokio::test]
async fn given_message_read_then_sender_gets_delivered_then_read_and_history_says_so() {
    let server = Server::start(&[]).await;
    let mut alice = Client::start(server.port, "123").await;
    let mut bob = Client::start(server.port, "456").await;
    bob.add_contact("123").await;
    let id = alice.send_text("456", "did you see this?").await;
    bob.message(&id, "123", "did you see this?").await;
    delivered(&mut alice, &id, "456").await;
    bob.send(json!({"cmd": "read", "id": id})).await;
    let r = bob.reply("marked_read", |v| is(v, "marked_read")).await;
    assert!(is(&r, "marked_read"), "{r}");
    let read = alice.expect("read", |v| is(v, "read") && v["id"] == id.as_str()).await;
    assert_eq!(read["by"], "456");

    alice.send(json!({"cmd": "history", "with": "456"})).await;
    let h = alice.reply("history", |v| is(v, "history")).await;
    assert_eq!(h["messages"][0]["state"], "read", "{h}");
    assert_eq!(h["messages"][0]["direction"], "out", "{h}");
    bob.send(json!({"cmd": "history", "with": "123"})).await;
    let h = bob.reply("history", |v| is(v, "history")).await;
    assert_eq!(h["messages"][0]["state"], "read", "{h}");

    // Reading twice, or an id nobody sent, is an error that leaves the client running.
    bob.send(json!({"cmd": "read", "id": id})).await;
    assert!(is(&bob.reply("error", |_| false).await, "error"));
    bob.send(json!({"cmd": "read", "id": "not-an-id"})).await;
    assert!(is(&bob.reply("error", |_| false).await, "error"));
    let _ = bob.ping("123").await;
}

#[tokio::test]
async fn given_lost_acknowledgement_then_the_retried_message_is_stored_and_shown_once() {
    let server = Server::start(&[]).await;
    let alice_profile = tempdir();
    let mut alice = Client::start_with(server.port, "123", alice_profile.path(), &[]).await;
    let mut bob = Client::start(server.port, "456").await;
    bob.add_contact("123").await;
    let warm = alice.send_text("456", "warm the link").await;
    bob.message(&warm, "123", "warm the link").await;
    delivered(&mut alice, &warm, "456").await;

    // Bob freezes: the text reaches his socket, but no acknowledgement can come back before Alice dies.
    bob.stop().await;
    let id = alice.send_text("456", "exactly once").await;
    alice.signal("KILL");
    alice.wait_exit().await;
    bob.signal("CONT");
    bob.message(&id, "123", "exactly once").await;

    // Alice's outbox still holds it unconfirmed: her restart sends it again; Bob keeps one copy.
    let mut alice = Client::start_with(server.port, "123", alice_profile.path(), &[]).await;
    delivered(&mut alice, &id, "456").await;
    let marker = alice.send_text("456", "after the retry").await;
    bob.message(&marker, "123", "after the retry").await;
    let copies = bob.events_so_far().iter().filter(|v| is(v, "message") && v["id"] == id.as_str()).count();
    assert_eq!(copies, 1, "shown once\n{}", bob.report());
    bob.send(json!({"cmd": "history", "with": "123"})).await;
    let h = bob.reply("history", |v| is(v, "history")).await;
    let stored =
        h["messages"].as_array().expect("messages").iter().filter(|m| m["id"] == id.as_str()).count();
    assert_eq!(stored, 1, "stored once: {h}");
}

#[tokio::test]
async fn given_history_then_it_survives_a_restart_of_both_sides() {
    let server = Server::start(&[]).await;
    let (pa, pb) = (tempdir(), tempdir());
    let mut alice = Client::start_with(server.port, "123", pa.path(), &[]).await;
    let mut bob = Client::start_with(server.port, "456", pb.path(), &[]).await;
    bob.add_contact("123").await;
    let one = alice.send_text("456", "one").await;
    bob.message(&one, "123", "one").await;
    let two = bob.send_text("123", "two").await;
    alice.message(&two, "456", "two").await;
    delivered(&mut alice, &one, "456").await;
    alice.logout().await;
    bob.logout().await;

    let mut alice = Client::start_with(server.port, "123", pa.path(), &[]).await;
    alice.send(json!({"cmd": "history", "with": "456", "limit": 10})).await;
    let h = alice.reply("history", |v| is(v, "history")).await;
    let msgs = h["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{h}");
    assert_eq!(
        (msgs[0]["id"].as_str(), msgs[0]["direction"].as_str(), msgs[0]["text"].as_str()),
        (Some(one.as_str()), Some("out"), Some("one"))
    );
    assert_eq!(msgs[0]["state"], "delivered", "{h}");
    assert_eq!(
        (msgs[1]["id"].as_str(), msgs[1]["direction"].as_str(), msgs[1]["from"].as_str()),
        (Some(two.as_str()), Some("in"), Some("456"))
    );
    alice.send(json!({"cmd": "history", "with": "456", "limit": 1})).await;
    let h = alice.reply("history", |v| is(v, "history")).await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(1), "limit keeps the newest: {h}");
    assert_eq!(h["messages"][0]["id"], two.as_str(), "{h}");
}

/// Copies `from` to `to` until either ends, appending every byte to `record`.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    record: &std::sync::Mutex<Vec<u8>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        record.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&buf[..n]);
    }
    let _ = to.shutdown().await;
}

/// A TCP relay to the server that counts every byte and keeps a copy of the client → server stream.
async fn counting_proxy(upstream: u16) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let (cr, cw) = client.split();
                let (sr, sw) = server.split();
                tokio::join!(pump(cr, sw, &record), pump(sr, cw, &record));
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn given_messages_exchanged_then_no_content_ever_reaches_the_server() {
    let server = Server::start(&[]).await;
    let (proxy, traffic) = counting_proxy(server.port).await;
    let mut alice = Client::start(proxy, "123").await;
    let mut bob = Client::start(proxy, "456").await;
    befriend(&mut alice, &mut bob).await;
    // 30 KiB of text that would be unmistakable if it crossed the server, even compressed.
    let secret: String = common::noise_bytes(42, 30 * 1024).iter().map(|b| (b'a' + b % 26) as char).collect();
    let before = traffic.lock().map(|t| t.len()).unwrap_or(0);
    for _ in 0..3 {
        let id = alice.send_text("456", &secret).await;
        bob.message(&id, "123", &secret).await;
        delivered(&mut alice, &id, "456").await;
    }
    let id = bob.send_text("123", "short reply").await;
    alice.message(&id, "456", "short reply").await;
    let during = traffic.lock().map(|t| t.len()).unwrap_or(0) - before;
    // 90 KiB of messages went peer to peer; the directory saw only a few lookups' worth of bytes.
    assert!(during < 4 * 1024, "{during} bytes crossed the server while 90 KiB of messages were exchanged");
    let all = traffic.lock().map(|t| t.clone()).unwrap_or_default();
    assert!(!all.windows(32).any(|w| w == &secret.as_bytes()[..32]), "plaintext seen in server traffic");
    // Nor does the server keep anything of it.
    for entry in std::fs::read_dir(&server.data_dir).expect("data dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        assert!(
            !bytes.windows(32).any(|w| w == &secret.as_bytes()[..32]),
            "message content stored by the server"
        );
    }
    assert_eq!(server.count(|l| l.contains(&secret[..32])), 0, "message content in the server's log");
}

#[tokio::test]
async fn given_corrupt_profile_database_then_a_clear_error_and_exit_not_a_crash_loop() {
    let server = Server::start(&[]).await;
    let profile = tempdir();
    register_then_leave(server.port, "123", profile.path()).await;
    std::fs::write(profile.path().join("profile.sqlite"), b"this is not a database, just garbage bytes....")
        .expect("corrupt");
    let _ = std::fs::remove_file(profile.path().join("profile.sqlite-wal"));
    let _ = std::fs::remove_file(profile.path().join("profile.sqlite-shm"));
    let started = Instant::now();
    let message = Client::start_refused(server.port, "123", profile.path(), &[]).await;
    assert!(message.contains("profile database"), "{message}");
    assert!(started.elapsed() < TIMEOUT, "gave up quickly");
}

#[tokio::test]
async fn given_profile_in_use_then_a_second_client_on_it_is_refused() {
    let server = Server::start(&[]).await;
    let profile = tempdir();
    let _alice = Client::start_with(server.port, "123", profile.path(), &[]).await;
    let message = Client::start_refused(server.port, "123", profile.path(), &[]).await;
    assert!(message.contains("in use"), "{message}");
}

/// Reads `out` up to the first line of `event`.
async fn read_until(out: &mut tokio::io::BufReader<tokio::process::ChildStdout>, event: &str) {
    use tokio::io::AsyncBufReadExt;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, out.read_line(&mut line)).await.expect("an answer");
        assert!(n.expect("reading the output") > 0, "the output ended");
        if line.contains(&format!("\"event\":\"{event}\"")) {
            return;
        }
    }
}

/// Attack 7 of issue 16, "lose what was shown": the receiver's front end is stuck writing (nobody
/// reads its stdout: the pipe is full) while messages keep arriving; they are stored and
/// acknowledged, waiting to be shown, when the receiver is killed with `kill -9`. Every message
/// the sender was told arrived is shown: before the crash, or after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_receiver_sigkilled_with_messages_stored_but_not_shown_then_its_restart_shows_them() {
    const COUNT: usize = 300;
    let server = Server::start(&[]).await;
    let bob_profile = tempdir();
    // Bob's process, whose stdout is read only up to its answers, then left to fill.
    let mut bob = tokio::process::Command::new(common::CLIENT_BIN)
        .args(["--json", "--number", "456", "--profile"])
        .arg(bob_profile.path())
        .args(["127.0.0.1", &server.port.to_string()])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning bob");
    let bob_log = common::Lines::collect(bob.stderr.take().expect("stderr"));
    let mut bob_out = tokio::io::BufReader::new(bob.stdout.take().expect("stdout"));
    let mut bob_in = bob.stdin.take().expect("stdin");
    read_until(&mut bob_out, "online").await;
    bob_in.write_all(b"{\"cmd\":\"add_contact\",\"number\":\"123\"}\n").await.expect("writing to bob");
    read_until(&mut bob_out, "contact_added").await;

    let mut alice = Client::start(server.port, "123").await;
    add_contact(&mut alice, "456").await;
    // Each message's line is over 2 KiB: a few dozen fill the pipe, the rest wait in Bob's queue.
    let mut ids = Vec::new();
    for i in 0..COUNT {
        ids.push(alice.send_text("456", &format!("{i:04} {}", "x".repeat(2048))).await);
    }
    for id in &ids {
        delivered(&mut alice, id, "456").await;
    }
    common::signal(bob.id().expect("bob's pid"), "KILL");
    let _ = bob.wait().await;
    drop(bob_log);

    // What Bob wrote before he died, still in the pipe.
    let mut before = std::collections::HashSet::new();
    let mut rest = String::new();
    bob_out.read_to_string(&mut rest).await.expect("reading what bob wrote");
    // The write under way when he died may have put half a line in: that message was not shown.
    let complete = rest.rsplit_once('\n').map_or("", |(whole, _)| whole);
    for line in complete.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if is(&v, "message") {
            before.insert(v["id"].as_str().expect("message.id").to_owned());
        }
    }
    assert!(before.len() < COUNT / 2, "the pipe held {} of {COUNT}: nothing was left unshown", before.len());

    // After the restart, every message not shown before is shown.
    let mut bob = Client::start_with(server.port, "456", bob_profile.path(), &[]).await;
    for (i, id) in ids.iter().enumerate().filter(|(_, id)| !before.contains(*id)) {
        let m =
            bob.seen_or_expect(&format!("message {i}"), |v| is(v, "message") && v["id"] == id.as_str()).await;
        assert!(m["text"].as_str().is_some_and(|t| t.starts_with(&format!("{i:04} "))), "{m}");
    }
}
