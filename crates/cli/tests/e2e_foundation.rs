//! End-to-end tests of the foundation: a real directory server and real JSON-lines clients, talking
//! over loopback TCP, and how both front ends read stdin (JSON lines and the menu). Each test starts
//! its own server (free port, temporary data dir) and clients (temporary profiles), so tests run in
//! parallel.

mod common;

use std::time::{Duration, Instant};

use common::{connect_raw, fingerprint, is, noise_bytes, tempdir, wait_closed, Client, Server, StickyProxy};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Asserts a `presence` event says online at `addr` with `key`.
#[track_caller]
fn assert_online(p: &serde_json::Value, addr: &str, key: &str) {
    assert_eq!(p["online"], true, "{p}");
    assert_eq!(p["addr"], addr, "{p}");
    assert_eq!(p["key"], key, "{p}");
}

/// A `presence` event pushed by the directory (it never carries `key`) about `number`.
fn pushed(v: &serde_json::Value, number: &str, online: bool) -> bool {
    is(v, "presence") && v["number"] == number && v["online"] == online && v.get("key").is_none()
}

/// Asserts a `presence` event says offline (and so has no address).
#[track_caller]
fn assert_offline(p: &serde_json::Value) {
    assert_eq!(p["online"], false, "{p}");
    assert!(p.get("addr").is_none(), "an offline user has no addr: {p}");
}

/// 1. Ping online/offline; a message each way with `sent`, `delivered` and `message`; a second
///    message each way reuses the link (no second address lookup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_clients_then_ping_and_messages_work_both_ways_over_one_link() {
    let server = Server::start(&[]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut c456 = Client::start(server.port, "456").await;
    let mut c789 = Client::start(server.port, "789").await;
    c456.add_contact("123").await;
    assert_eq!(c123.server_key(), c456.server_key());
    assert!(c123.server_key().starts_with(&server.fingerprint.replace(':', "")), "{}", server.fingerprint);

    // Online.
    let p = c123.ping("456").await;
    assert_online(&p, &c456.listen(), &c456.key());
    // Never registered: offline, no key.
    c123.ping_unregistered("999").await;
    // Registered, then logged out: offline, key still known.
    c789.logout().await;
    let p = c123.ping("789").await;
    assert_offline(&p);
    assert_eq!(p["key"], c789.key(), "{p}");
    // Sending to a number nobody registered.
    let err = c123.send_refused("999", "anyone?").await;
    assert_eq!(err, "999 is not a whatsap2p user");

    // 123 -> 456.
    let id = c123.send_text("456", "Hello").await;
    c123.delivered(&id, "456").await;
    c456.message(&id, "123", "Hello").await;
    // 456 -> 123.
    let id = c456.send_text("123", "Hi back").await;
    c456.delivered(&id, "123").await;
    c123.message(&id, "456", "Hi back").await;

    // Having written to each other, both watch each other: the directory pushes the first status.
    let v = c123.seen_or_expect("pushed presence of 456", |v| pushed(v, "456", true)).await;
    assert_eq!(v["addr"], c456.listen(), "{v}");
    let v = c456.seen_or_expect("pushed presence of 123", |v| pushed(v, "123", true)).await;
    assert_eq!(v["addr"], c123.listen(), "{v}");
    // A barrier: every earlier server line is printed before this one.
    c123.ping_unregistered("5550").await;
    server.wait_line("Pinging 5550", |l| l == "[+] Pinging 5550").await;
    let lookups = |server: &Server| {
        (
            server.count(|l| l == "[+] Retrieving Address of 456"),
            server.count(|l| l == "[+] Retrieving Address of 123"),
        )
    };
    let before = lookups(&server);
    assert!(before.0 >= 1 && before.1 >= 1, "{}", server.stdout.tail(40));

    // Second message each way, with a non-ASCII text.
    let id = c123.send_text("456", "Olá, ça va? 👋").await;
    c123.delivered(&id, "456").await;
    c456.message(&id, "123", "Olá, ça va? 👋").await;
    let id = c456.send_text("123", "second").await;
    c456.delivered(&id, "123").await;
    c123.message(&id, "456", "second").await;

    // No address lookup since the barrier: the later messages reused the link both ways.
    c123.ping_unregistered("5551").await;
    server.wait_line("Pinging 5551", |l| l == "[+] Pinging 5551").await;
    assert_eq!(lookups(&server), before, "{}", server.stdout.tail(40));
}

/// 2. Contacts show online status with address; offline without one after the contact logs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_contact_then_contacts_show_its_online_status_until_it_logs_out() {
    let server = Server::start(&[]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut c456 = Client::start(server.port, "456").await;

    c123.send(json!({"cmd": "contacts"})).await;
    let v = c123.reply("contacts", |v| is(v, "contacts")).await;
    assert_eq!(v["contacts"], json!([]), "{v}");

    c123.send(json!({"cmd": "add_contact", "number": "456"})).await;
    let v = c123.reply("contact_added", |v| is(v, "contact_added")).await;
    assert_eq!(v, json!({"event": "contact_added", "number": "456", "new": true, "key": c456.key()}));
    c123.send(json!({"cmd": "add_contact", "number": "456"})).await;
    let v = c123.reply("contact_added", |v| is(v, "contact_added")).await;
    assert_eq!(v["new"], false, "adding again is not new: {v}");
    assert_eq!(v["key"], c456.key(), "{v}");
    // A number nobody registered yet: added with no key.
    c123.send(json!({"cmd": "add_contact", "number": "999"})).await;
    let v = c123.reply("contact_added", |v| is(v, "contact_added")).await;
    assert_eq!(v, json!({"event": "contact_added", "number": "999", "new": true, "key": null}));

    c123.send(json!({"cmd": "contacts"})).await;
    let v = c123.reply("contacts", |v| is(v, "contacts")).await;
    let list = v["contacts"].as_array().expect("contacts array");
    assert_eq!(list.len(), 2, "{v}");
    assert_eq!(list[0]["number"], "456", "{v}");
    assert_online(&list[0], &c456.listen(), &c456.key());
    assert_eq!(list[1]["number"], "999", "{v}");
    assert_offline(&list[1]);

    c456.logout().await;
    // Contacts are watched: the directory pushes that 456 left.
    let v = c123.seen_or_expect("pushed offline of 456", |v| pushed(v, "456", false)).await;
    assert_offline(&v);
    c123.send(json!({"cmd": "contacts"})).await;
    let v = c123.reply("contacts", |v| is(v, "contacts")).await;
    let list = v["contacts"].as_array().expect("contacts array");
    assert_eq!(list[0]["number"], "456", "{v}");
    assert_offline(&list[0]);
    assert_eq!(list[0]["key"], c456.key(), "the pinned key stays: {v}");
}

/// 3. Logout (and end of input) takes a user offline at once; the server says `Disconnecting`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_logout_or_end_of_input_then_user_is_offline_at_once_and_server_disconnects_it() {
    let server = Server::start(&[]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut c456 = Client::start(server.port, "456").await;
    let mut c789 = Client::start(server.port, "789").await;
    assert_online(&c123.ping("456").await, &c456.listen(), &c456.key());
    assert_online(&c123.ping("789").await, &c789.listen(), &c789.key());

    // `logout`: `bye`, exit 0, and the very next ping says offline.
    c456.logout().await;
    let p = c123.ping("456").await;
    assert_offline(&p);
    assert_eq!(p["key"], c456.key(), "{p}");
    server.wait_line("Disconnecting 456", |l| l == "[+] Disconnecting 456").await;
    // A message to it waits in the outbox.
    let (_, reason) = c123.send_queued("456", "still there?").await;
    assert_eq!(reason, "456 is offline");

    // End of input does the same.
    c789.close_stdin();
    c789.expect("bye", |v| is(v, "bye")).await;
    let status = c789.wait_exit().await;
    assert!(status.success(), "exit after EOF: {status}");
    assert_offline(&c123.ping("789").await);
    server.wait_line("Disconnecting 789", |l| l == "[+] Disconnecting 789").await;
}

/// 4a. A SIGKILLed client is offline as soon as its connection closes, long before the heartbeat
///     timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sigkilled_client_then_it_is_offline_as_soon_as_its_connection_closes() {
    let server = Server::start(&["--heartbeat-timeout", "60"]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut c789 = Client::start(server.port, "789").await;
    assert_online(&c123.ping("789").await, &c789.listen(), &c789.key());

    let killed = Instant::now();
    c789.kill().await;
    server
        .wait_line("Disconnecting 789: connection closed", |l| {
            l == "[+] Disconnecting 789: connection closed"
        })
        .await;
    assert_offline(&c123.ping("789").await);
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3), "offline {took:?} after SIGKILL");
}

/// 4b. A stopped client (connection open, silent) stays online just after, and is offline after
///     the server's heartbeat timeout (2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_stopped_client_then_it_is_offline_after_the_heartbeat_timeout() {
    let server = Server::start(&["--heartbeat-timeout", "2"]).await;
    // 123 pings every 100 ms while it watches; idle clients stay online too (see 4c).
    let mut c456 = Client::start(server.port, "456").await;
    let mut c123 = Client::start(server.port, "123").await;
    // A fresh frame from 456, then silence.
    c456.ping("123").await;
    c456.signal("STOP");
    let stopped = Instant::now();
    assert_online(&c123.ping("456").await, &c456.listen(), &c456.key());

    let offline_after = loop {
        let p = c123.ping("456").await;
        if p["online"] == false {
            assert_offline(&p);
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "456 still online {:?} after SIGSTOP",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        offline_after >= Duration::from_millis(1500) && offline_after <= Duration::from_secs(4),
        "456 went offline {offline_after:?} after SIGSTOP; the heartbeat timeout is 2 s"
    );
    server.wait_line("no heartbeat for 456", |l| l == "[!] Disconnecting 456: no heartbeat for 2s").await;

    // Woken up, 456 learns it lost the directory, reconnects by itself and is online again.
    c456.signal("CONT");
    let v = c456.expect("directory_lost", |v| is(v, "directory_lost")).await;
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    c456.expect("reconnected", |v| is(v, "reconnected")).await;
    assert_online(&c123.ping("456").await, &c456.listen(), &c456.key());
}

/// 4c. A healthy idle client stays online under a short server heartbeat timeout: the server
///     announces its timeout and clients beat at a third of it (before that fix, clients beat every
///     10 s whatever the server's timeout, so with `--heartbeat-timeout 2` an idle client was dropped
///     every 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_short_server_heartbeat_timeout_then_an_idle_healthy_client_stays_online() {
    let server = Server::start(&["--heartbeat-timeout", "2"]).await;
    let mut c456 = Client::start(server.port, "456").await;
    // Wait out twice the timeout, watching for the server dropping 456.
    let dropped =
        server.stdout.wait_for(Duration::from_secs(4), |l| l.starts_with("[!] Disconnecting 456")).await;
    assert!(dropped.is_err(), "the server dropped idle, healthy 456: {dropped:?}");
    let mut c123 = Client::start(server.port, "123").await;
    assert_online(&c123.ping("456").await, &c456.listen(), &c456.key());
    let events = c456.events_so_far();
    assert!(!events.iter().any(|v| is(v, "directory_lost")), "{events:?}");
}

/// 5. A second key claiming a bound number is refused, the owner keeps working, and the binding
///    survives a server restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_bound_number_then_a_second_key_is_refused_even_after_server_restart() {
    let data = tempdir();
    let (profile_a, profile_b, profile_123) = (tempdir(), tempdir(), tempdir());
    let server = Server::start_in(data.path(), 0, &[]).await;
    let mut a = Client::start_with(server.port, "456", profile_a.path(), &[]).await;
    a.add_contact("123").await;
    let fp_a = fingerprint(&a.key());
    server.wait_line("Bound 456", |l| l == format!("[+] Bound 456 to key {fp_a}")).await;

    let err = Client::start_refused(server.port, "456", profile_b.path(), &[]).await;
    assert!(err.contains("registered to another key"), "{err}");
    let refused = server.wait_line("Refused 456", |l| l.starts_with("[!] Refused 456 from 127.0.0.1/")).await;
    assert!(refused.contains(&format!("number is bound to key {fp_a}, not ")), "{refused}");

    // The owner is untouched: still online where it was, and reachable.
    let mut c123 = Client::start_with(server.port, "123", profile_123.path(), &[]).await;
    assert_online(&c123.ping("456").await, &a.listen(), &a.key());
    let id = c123.send_text("456", "still you?").await;
    c123.delivered(&id, "456").await;
    a.message(&id, "123", "still you?").await;
    a.logout().await;
    c123.logout().await;

    // Restart on the same data dir and port: same key, same bindings.
    let port = server.port;
    let fp_server = server.fingerprint.clone();
    server.stop().await;
    let server = Server::start_in(data.path(), port, &[]).await;
    assert_eq!(server.fingerprint, fp_server, "the server key persists");
    let err = Client::start_refused(server.port, "456", profile_b.path(), &[]).await;
    assert!(err.contains("registered to another key"), "after restart: {err}");
    server.wait_line("Refused 456", |l| l.starts_with("[!] Refused 456 from 127.0.0.1/")).await;
    // The owner's key still works, and is not bound anew.
    let a = Client::start_with(server.port, "456", profile_a.path(), &[]).await;
    let mut c123 = Client::start_with(server.port, "123", profile_123.path(), &[]).await;
    assert_online(&c123.ping("456").await, &a.listen(), &a.key());
    assert_eq!(server.count(|l| l.starts_with("[+] Bound 456")), 0, "{}", server.stdout.tail(30));
}

/// 6a. A contact whose key changed (the directory lost its bindings but kept its server key) is
///     refused both ways: sending to it, and it connecting to us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_pinned_contact_key_then_a_new_key_for_that_number_is_refused_both_ways() {
    let (data1, data2) = (tempdir(), tempdir());
    let (p123, p1, p2) = (tempdir(), tempdir(), tempdir());
    let server = Server::start_in(data1.path(), 0, &[]).await;
    let mut c123 = Client::start_with(server.port, "123", p123.path(), &[]).await;
    let mut old456 = Client::start_with(server.port, "456", p1.path(), &[]).await;
    let k1 = old456.key();
    c123.send(json!({"cmd": "add_contact", "number": "456"})).await;
    let v = c123.reply("contact_added", |v| is(v, "contact_added")).await;
    assert_eq!(v["key"], k1, "123 pins 456's first key: {v}");
    old456.logout().await;
    c123.logout().await;

    // Same server key, no bindings: a new key can take 456.
    let port = server.port;
    let fp_server = server.fingerprint.clone();
    server.stop().await;
    std::fs::copy(data1.path().join("server.key"), data2.path().join("server.key"))
        .expect("copying server.key");
    let server = Server::start_in(data2.path(), port, &[]).await;
    assert_eq!(server.fingerprint, fp_server);
    // A new key takes 456, and leaves.
    let mut new456 = Client::start_with(server.port, "456", p2.path(), &[]).await;
    let k2 = new456.key();
    assert_ne!(k1, k2);
    new456.logout().await;
    // While 456 is offline a message waits in 123's outbox...
    let mut c123 = Client::start_with(server.port, "123", p123.path(), &[]).await;
    let (queued, reason) = c123.send_queued("456", "secret for the old 456").await;
    assert_eq!(reason, "456 is offline");
    // ...and when the new key comes online as 456, the outbox refuses to deliver it.
    let mut new456 = Client::start_with(server.port, "456", p2.path(), &[]).await;
    let v = c123.expect("failed", |v| is(v, "failed")).await;
    assert_eq!((v["id"].as_str(), v["to"].as_str()), (Some(queued.as_str()), Some("456")), "{v}");
    let reason = v["reason"].as_str().expect("failed.reason");
    assert!(reason.contains("KEY CHANGED"), "{reason}");
    assert!(
        reason.contains(&fingerprint(&k1)) && reason.contains(&fingerprint(&k2)),
        "names both keys: {reason}"
    );
    assert_online(&c123.ping("456").await, &new456.listen(), &k2);

    // Sending to it now: the answer is the refusal, and that message is marked failed too.
    let err = c123.send_refused("456", "another secret").await;
    assert!(err.contains("KEY CHANGED"), "{err}");
    assert!(err.contains(&fingerprint(&k1)) && err.contains(&fingerprint(&k2)), "names both keys: {err}");
    let v = c123.expect("failed", |v| is(v, "failed") && v["id"] != queued.as_str()).await;
    assert_eq!(v["to"], "456", "{v}");
    assert!(v["reason"].as_str().is_some_and(|r| r.contains("KEY CHANGED")), "{v}");
    // Nothing reached 456: it was never dialed (a dial is checked by a lookup of the dialer).
    assert_eq!(server.count(|l| l == "[+] Retrieving Address of 123"), 0, "456 was never dialed");

    // It connecting to us: 123 refuses the link and warns; the text is never shown or confirmed.
    new456.send(json!({"cmd": "send", "to": "123", "text": "trust me"})).await;
    let answer =
        new456.expect("answer to send", |v| ["sent", "queued", "error"].iter().any(|e| is(v, e))).await;
    let w = c123.expect("warning", |v| is(v, "warning") || is(v, "message")).await;
    assert!(is(&w, "warning"), "123 accepted the new 456: {w}");
    let w = w["message"].as_str().expect("warning message");
    assert!(w.contains("KEY CHANGED"), "{w}");
    // Barriers on both stdouts, then: no message shown, nothing confirmed.
    c123.ping("456").await;
    new456.ping("123").await;
    let events = c123.events_so_far();
    assert!(!events.iter().any(|e| is(e, "message") || is(e, "delivered")), "{events:?}");
    let events = new456.events_so_far();
    assert!(!events.iter().any(|e| is(e, "message") || is(e, "delivered")), "{answer}; {events:?}");
}

/// 6b. The peer at the address the directory gives for 456 is someone else (789): refused with
///     `peer at ADDR is not 456`. To get there from outside, 456 reaches the server through a relay
///     that keeps its session open after 456 is SIGKILLed; 789 then takes 456's listen address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_directory_address_held_by_another_user_then_sending_is_refused_as_not_that_peer() {
    let server = Server::start(&["--heartbeat-timeout", "60"]).await;
    let proxy = StickyProxy::start(server.port).await;
    let mut c456 = Client::start(proxy.port, "456").await;
    let mut c123 = Client::start(server.port, "123").await;
    let addr456 = c456.listen();
    let key456 = c456.key();
    assert_online(&c123.ping("456").await, &addr456, &key456);
    // A contact, so watched from now on: the `send` below starts no watch (and no presence push
    // racing it; see the ignored test about first sends).
    c123.send(json!({"cmd": "add_contact", "number": "456"})).await;
    let v = c123.reply("contact_added", |v| is(v, "contact_added")).await;
    assert_eq!(v["key"], key456, "{v}");
    c123.seen_or_expect("pushed online of 456", |v| pushed(v, "456", true)).await;

    c456.kill().await;
    // The directory still lists 456 at its old address.
    assert_online(&c123.ping("456").await, &addr456, &key456);
    let p789 = tempdir();
    let mut c789 = Client::start_with(server.port, "789", p789.path(), &["--listen", &addr456]).await;
    assert_eq!(c789.listen(), addr456);

    let err = c123.send_refused("456", "for 456 only").await;
    assert!(err.starts_with(&format!("peer at {addr456} is not 456: ")), "{err}");
    let v = c123.expect("failed", |v| is(v, "failed")).await;
    assert_eq!(v["to"], "456", "{v}");
    assert!(v["reason"].as_str().is_some_and(|r| r.contains("is not 456")), "{v}");
    // Barrier on 789's stdout: it never got the text.
    c789.ping("123").await;
    let events = c789.events_so_far();
    assert!(!events.iter().any(|e| is(e, "message")), "{events:?}");
    drop(proxy);
}

/// Regression: `send` must never answer `sent` ("written, encrypted, on the direct link") for a
/// message that was never written. The first `send` to a number wakes that number's outbox courier
/// (through the presence push of the watch it starts), which once raced `send`'s own delivery and
/// refused the message first. Amplified here over many numbers: each
/// number is registered at the same address through a relay that keeps its session alive after it
/// is killed, and an impostor (789) listens there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_first_sends_to_impostors_then_every_answer_is_an_error_never_sent() {
    const NUMBERS: usize = 100;
    // 102 users from one loopback address register new numbers: more than the 100 a day one
    // address may (in the field they would have addresses of their own).
    let server =
        Server::start(&["--heartbeat-timeout", "60", "--new-numbers-per-address-per-day", "1000"]).await;
    let proxy = StickyProxy::start(server.port).await;
    let mut addr = String::new();
    for i in 0..NUMBERS {
        let number = format!("{}", 1000 + i);
        let profile = tempdir();
        let listen: Vec<&str> = if addr.is_empty() { vec![] } else { vec!["--listen", &addr] };
        let mut c = Client::start_with(proxy.port, &number, profile.path(), &listen).await;
        addr = c.listen();
        c.kill().await;
    }
    let p789 = tempdir();
    let _impostor = Client::start_with(server.port, "789", p789.path(), &["--listen", &addr]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut wrong = Vec::new();
    for i in 0..NUMBERS {
        let number = format!("{}", 1000 + i);
        c123.send(json!({"cmd": "send", "to": number, "text": "for you only"})).await;
        let v = c123
            .expect("answer to send", |v| {
                ((is(v, "sent") || is(v, "queued")) && v["to"] == number.as_str()) || is(v, "error")
            })
            .await;
        if !is(&v, "error") {
            wrong.push(v);
        }
    }
    // Each wrongly answered message then fails anyway: the courier refused it.
    let mut report = Vec::new();
    for v in &wrong {
        let id = v["id"].as_str().expect("id").to_owned();
        let failed = c123.seen_or_expect("failed", |f| is(f, "failed") && f["id"] == id.as_str()).await;
        report.push(format!("{v} then {failed}"));
    }
    assert!(
        wrong.is_empty(),
        "{} of {NUMBERS} sends to impostors were answered:\n{}",
        wrong.len(),
        report.join("\n")
    );
}

/// 7. A server whose key changed is refused loudly by a client that pinned the old key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_server_key_changed_then_client_with_old_pin_refuses_loudly() {
    let (data1, data2, profile) = (tempdir(), tempdir(), tempdir());
    let server = Server::start_in(data1.path(), 0, &[]).await;
    let mut c123 = Client::start_with(server.port, "123", profile.path(), &[]).await;
    let old_key = c123.server_key();
    assert!(old_key.starts_with(&server.fingerprint.replace(':', "")), "{}", server.fingerprint);
    c123.logout().await;

    let port = server.port;
    let old_fp = server.fingerprint.clone();
    server.stop().await;
    let server = Server::start_in(data2.path(), port, &[]).await;
    assert_ne!(server.fingerprint, old_fp, "a fresh data dir makes a new server key");

    let err = Client::start_refused(server.port, "123", profile.path(), &[]).await;
    assert!(err.contains("SERVER KEY CHANGED"), "{err}");
    assert!(err.contains(&old_fp), "names the pinned key: {err}");
    assert!(err.contains(&server.fingerprint), "names the presented key: {err}");
    // It refused before proving who it is: the new server never bound 123.
    assert_eq!(server.count(|l| l.starts_with("[+] Bound 123 ")), 0, "{}", server.stdout.tail(20));
    // The refusal is about the pin: a fresh profile takes this server.
    let fresh = Client::start(server.port, "456").await;
    assert!(fresh.server_key().starts_with(&server.fingerprint.replace(':', "")));
}

/// A running client (123) whose server restarts on the same port with a new key; returns once the
/// client has lost the session and the new server is up.
async fn running_client_and_server_with_a_new_key() -> (Client, Server, [tempfile::TempDir; 2]) {
    let (data1, data2) = (tempdir(), tempdir());
    let server = Server::start_in(data1.path(), 0, &[]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let port = server.port;
    server.stop().await;
    c123.expect("directory_lost", |v| is(v, "directory_lost")).await;
    let server = Server::start_in(data2.path(), port, &[]).await;
    (c123, server, [data1, data2])
}

/// 7b. A running client whose server comes back with another key never reconnects to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_running_client_when_server_key_changes_then_it_never_reconnects_to_the_new_key() {
    let (mut c123, server, _dirs) = running_client_and_server_with_a_new_key().await;
    // Two reconnection attempts reach the new server, and both end in the handshake.
    server
        .wait_count("handshake failed (x2)", 2, |l| {
            l.starts_with("[!] Dropping 127.0.0.1/") && l.contains(": handshake failed: ")
        })
        .await;
    let identified = |l: &str| {
        ["[+] Bound 123 ", "[+] Connected: 123", "[+] Registered 123 ", "[!] Refused 123 "]
            .iter()
            .any(|p| l.starts_with(p))
    };
    assert_eq!(server.count(identified), 0, "123 never identified itself:\n{}", server.stdout.tail(20));
    let events = c123.events_so_far();
    assert!(!events.iter().any(|v| is(v, "reconnected")), "{events:?}");
}

/// After a reconnection attempt meets a changed server key, the user is told why it stays offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_running_client_when_server_key_changes_then_it_says_so_loudly() {
    let (mut c123, _server, _dirs) = running_client_and_server_with_a_new_key().await;
    let v = c123
        .expect("event naming SERVER KEY CHANGED", |v| v.to_string().contains("SERVER KEY CHANGED"))
        .await;
    assert!(is(&v, "warning") || is(&v, "error") || is(&v, "directory_lost"), "{v}");
}

/// A valid-length first frame (Noise message 1) holding garbage.
fn framed_garbage() -> Vec<u8> {
    let body = noise_bytes(0x5eed, 200);
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

/// A length prefix far over the 65535 byte limit, then a little data.
fn oversized_frame() -> Vec<u8> {
    let mut bytes = vec![0xff, 0xff, 0xff, 0xff];
    bytes.extend_from_slice(&noise_bytes(0xbad, 64));
    bytes
}

/// Not our protocol at all: its first four bytes read as a length of 1.19 GB.
const HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: whatsap2p\r\n\r\n";

/// 8a. Garbage, oversized and silent connections to the server are dropped, and meanwhile the
///     clients keep pinging and messaging, and new clients still come online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_garbage_oversized_and_silent_connections_to_server_then_clients_keep_working() {
    let server = Server::start(&["--handshake-timeout", "1"]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut c456 = Client::start(server.port, "456").await;
    c123.add_contact("456").await;
    c123.add_contact("789").await;
    c456.add_contact("123").await;

    let (mut silent, silent_port) = connect_raw(&server.addr()).await;
    let mut garbage = Vec::new();
    for (name, bytes) in
        [("framed garbage", framed_garbage()), ("oversized", oversized_frame()), ("http", HTTP.to_vec())]
    {
        let (mut s, port) = connect_raw(&server.addr()).await;
        s.write_all(&bytes).await.expect("writing garbage");
        garbage.push((name, s, port));
    }
    let (closing, closing_port) = connect_raw(&server.addr()).await;
    drop(closing);

    // While the silent connection is still open: pings and messages work.
    assert_online(&c123.ping("456").await, &c456.listen(), &c456.key());
    let id = c123.send_text("456", "through the noise").await;
    c123.delivered(&id, "456").await;
    c456.message(&id, "123", "through the noise").await;

    for (name, mut s, port) in garbage {
        let prefix = format!("[!] Dropping 127.0.0.1/{port}: handshake failed: ");
        let line = server.wait_line(name, |l| l.starts_with(&prefix)).await;
        if name != "framed garbage" {
            assert!(line.ends_with("frame exceeds the 65535 byte limit"), "{name}: {line}");
        }
        wait_closed(&mut s, Duration::from_secs(5), name).await;
    }
    let prefix = format!("[!] Dropping 127.0.0.1/{closing_port}: handshake failed: ");
    server.wait_line("closed at once", |l| l.starts_with(&prefix)).await;
    let took = wait_closed(&mut silent, Duration::from_secs(5), "silent").await;
    server
        .wait_line("silent dropped", |l| {
            l == format!("[!] Dropping 127.0.0.1/{silent_port}: handshake not finished within 1s")
        })
        .await;
    assert!(took < Duration::from_secs(3), "silent connection dropped after {took:?}");

    // Afterwards too, and a newcomer gets in.
    let mut c789 = Client::start(server.port, "789").await;
    let id = c789.send_text("123", "hello from the newcomer").await;
    c789.delivered(&id, "123").await;
    c123.message(&id, "789", "hello from the newcomer").await;
    let id = c456.send_text("123", "reply").await;
    c456.delivered(&id, "123").await;
    c123.message(&id, "456", "reply").await;
}

/// 8b. The same at a client's peer listener: it drops the bad connections, and messages to that
///     client still arrive, over new links too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_garbage_oversized_and_silent_connections_to_a_client_listener_then_its_messages_still_arrive()
{
    let server = Server::start(&[]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut c456 = Client::start(server.port, "456").await;
    let mut c789 = Client::start(server.port, "789").await;
    c456.add_contact("123").await;
    c456.add_contact("789").await;
    let target = c456.listen();

    let (mut silent, _) = connect_raw(&target).await;
    let mut garbage = Vec::new();
    for (name, bytes) in
        [("framed garbage", framed_garbage()), ("oversized", oversized_frame()), ("http", HTTP.to_vec())]
    {
        let (mut s, _) = connect_raw(&target).await;
        s.write_all(&bytes).await.expect("writing garbage");
        garbage.push((name, s));
    }
    let (closing, _) = connect_raw(&target).await;
    drop(closing);

    // While the silent connection is open (it has 5 s to finish a handshake).
    let id = c123.send_text("456", "first").await;
    c123.delivered(&id, "456").await;
    c456.message(&id, "123", "first").await;
    for (name, mut s) in garbage {
        let took = wait_closed(&mut s, Duration::from_secs(3), name).await;
        assert!(took < Duration::from_secs(2), "{name} dropped after {took:?}");
    }
    let took = wait_closed(&mut silent, Duration::from_secs(9), "silent").await;
    assert!(took < Duration::from_secs(8), "silent peer dropped after {took:?} (handshake timeout 5 s)");

    // A new link after all that, and the old one still works.
    let id = c789.send_text("456", "new link").await;
    c789.delivered(&id, "456").await;
    c456.message(&id, "789", "new link").await;
    let id = c123.send_text("456", "old link").await;
    c123.delivered(&id, "456").await;
    c456.message(&id, "123", "old link").await;
    let id = c456.send_text("789", "back").await;
    c456.delivered(&id, "789").await;
    c789.message(&id, "456", "back").await;
}

/// 9. Bad input lines give an error event each, and the client keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_bad_input_lines_then_error_events_and_client_keeps_running() {
    let server = Server::start(&[]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let cases: &[(&[u8], &str)] = &[
        (b"this is not json", "bad command: "),
        (b"{\"cmd\":\"ping\"", "bad command: "),
        (b"[1,2,3]", "bad command: "),
        (b"{\"cmd\":\"fly\",\"to\":\"456\"}", "bad command: "),
        (b"{\"number\":\"456\"}", "bad command: "),
        (b"{\"cmd\":\"ping\"}", "bad command: "),
        (b"{\"cmd\":\"ping\",\"number\":456}", "bad command: "),
        (b"{\"cmd\":\"ping\",\"number\":\"456\",\"extra\":1}", "bad command: "),
        (b"\xff\xfe{\"cmd\":\"ping\"}", "not UTF-8"),
        // Invalid numbers.
        (b"{\"cmd\":\"ping\",\"number\":\"12x\"}", "a number holds only digits"),
        (b"{\"cmd\":\"ping\",\"number\":\"12\"}", "a number has 3 to 15 digits"),
        (b"{\"cmd\":\"send\",\"to\":\"../etc\",\"text\":\"hi\"}", "bad command: "),
        (b"{\"cmd\":\"add_contact\",\"number\":\"1234567890123456\"}", "a number has 3 to 15 digits"),
        (b"{\"cmd\":\"send\",\"to\":\"\",\"text\":\"hi\"}", "bad command: "),
    ];
    for (line, wanted) in cases {
        c123.send_line(line).await;
        let v = c123.expect("error", |v| is(v, "error") || is(v, "presence") || is(v, "sent")).await;
        assert!(is(&v, "error"), "{:?} gave {v}", String::from_utf8_lossy(line));
        let message = v["message"].as_str().expect("error message");
        assert!(
            message.contains(wanted),
            "{:?}: {message:?} lacks {wanted:?}",
            String::from_utf8_lossy(line)
        );
    }
    // Sending to ourselves is refused too.
    assert_eq!(c123.send_refused("123", "me").await, "that is your own number");
    // Still running and answering.
    c123.ping_unregistered("456").await;
    let mut c456 = Client::start(server.port, "456").await;
    c456.add_contact("123").await;
    let id = c123.send_text("456", "all good").await;
    c123.delivered(&id, "456").await;
    c456.message(&id, "123", "all good").await;
    c123.logout().await;
}

/// 9. Lines that arrive in parts, with events printed in between, are read whole; a line over the
///    256 KiB limit is skipped alone, and one of exactly 256 KiB is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_command_lines_split_around_events_then_each_is_read_whole() {
    const LIMIT: usize = 256 * 1024;
    let server = Server::start(&[]).await;
    let mut c123 = Client::start(server.port, "123").await;
    let mut c456 = Client::start(server.port, "456").await;
    c123.add_contact("456").await;
    c456.add_contact("123").await;
    // An event for 123 (a message from 456) each time it is waiting for the rest of a line.
    let mut n = 0;
    let mut meanwhile = async |c123: &mut Client, c456: &mut Client| {
        n += 1;
        let text = format!("meanwhile {n}");
        let id = c456.send_text("123", &text).await;
        c123.message(&id, "456", &text).await;
    };

    // A 30 KiB `send` in two halves.
    let text = "x".repeat(30 * 1024);
    let line = json!({"cmd": "send", "to": "456", "text": text}).to_string();
    let (head, tail) = line.split_at(line.len() / 2);
    c123.send_raw(head.as_bytes()).await;
    meanwhile(&mut c123, &mut c456).await;
    c123.send_raw(format!("{tail}\n").as_bytes()).await;
    let v = c123.reply("sent", |v| is(v, "sent")).await;
    assert!(is(&v, "sent"), "the split line was not read whole: {v}\n{}", c123.report());
    let id = v["id"].as_str().expect("sent.id").to_owned();
    c456.message(&id, "123", &text).await;

    // One byte over the limit, in two parts, followed at once by a valid command.
    c123.send_raw(&vec![b'{'; LIMIT / 2]).await;
    meanwhile(&mut c123, &mut c456).await;
    let mut rest = vec![b'{'; LIMIT / 2 + 1];
    rest.extend_from_slice(b"\n{\"cmd\":\"contacts\"}\n");
    c123.send_raw(&rest).await;
    let v = c123.expect("error", |v| is(v, "error") || is(v, "contacts")).await;
    let message = v["message"].as_str().unwrap_or_default();
    assert!(is(&v, "error") && message.contains("over the limit"), "{v}");
    c123.reply("contacts", |v| is(v, "contacts")).await;

    // Exactly at the limit (JSON allows the padding), in two parts.
    let mut line = br#"{"cmd":"contacts"}"#.to_vec();
    line.resize(LIMIT, b' ');
    let (head, tail) = line.split_at(LIMIT / 2);
    c123.send_raw(head).await;
    meanwhile(&mut c123, &mut c456).await;
    c123.send_line(tail).await;
    let v = c123.reply("contacts", |v| is(v, "contacts")).await;
    assert!(is(&v, "contacts"), "a line of exactly {LIMIT} bytes was refused: {v}");
    c123.logout().await;
}

/// The menu asks for the number on the same stdin it then reads options from: lines piped along with
/// the number (read ahead with it) are not lost between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_number_and_options_piped_at_once_then_the_menu_runs_them_all() {
    let server = Server::start(&[]).await;
    let profile = tempdir();
    let mut child =
        common::menu_command(server.port, profile.path(), &[]).spawn().expect("spawning whatsap2p");
    let mut stdin = child.stdin.take().expect("client stdin");
    // One write: the number, option 3 (contacts), option 5 (logout).
    stdin.write_all(b"123\n3\n5\n").await.expect("writing to client stdin");
    drop(stdin);
    let output = tokio::time::timeout(common::TIMEOUT, child.wait_with_output())
        .await
        .expect("the menu did not exit")
        .expect("waiting for the menu");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("[+] No contacts yet"), "option 3 was lost:\n{stdout}");
}

/// The menu runs a command beside its events: while a send waits on a peer that takes the
/// connection and never answers the handshake (stopped with SIGSTOP, so the directory still lists
/// it), a message from someone else is shown at once, and the send's answer comes when the
/// handshake gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_send_waiting_on_a_stuck_peer_then_the_menu_shows_other_messages_meanwhile() {
    let server = Server::start(&[]).await;
    let mut c456 = Client::start(server.port, "456").await;
    let c789 = Client::start(server.port, "789").await;
    let profile = tempdir();
    let mut menu = common::menu_command(server.port, profile.path(), &["--number", "123"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning whatsap2p");
    let mut stdin = menu.stdin.take().expect("menu stdin");
    let out = common::Lines::collect(menu.stdout.take().expect("menu stdout"));
    out.wait_for(common::TIMEOUT, |l| l.contains("[+] Listening at")).await.expect("the menu is online");
    // 456 is a contact: its message is shown, not held as a request.
    stdin.write_all(b"4\n456\n").await.expect("writing to the menu");
    out.wait_for(common::TIMEOUT, |l| l.contains("Added 456")).await.expect("456 added");
    c789.stop().await;
    let started = Instant::now();
    stdin.write_all(b"2\n789\nare you there?\n").await.expect("writing to the menu");
    c456.send_text("123", "meanwhile").await;
    let shown = |l: &str| l.contains("> Message from 456: meanwhile");
    let answered = |l: &str| l.contains("Queued for 789") || l.contains("Sent to 789") || l.contains("[!]");
    out.wait_for(common::TIMEOUT, shown).await.expect("the message was shown");
    let shown_after = started.elapsed();
    out.wait_for(common::TIMEOUT, answered).await.expect("the send was answered");
    let lines = out.snapshot();
    let (message, answer) = (lines.iter().position(|l| shown(l)), lines.iter().position(|l| answered(l)));
    assert!(message < answer, "the message waited for the send:\n{}", lines.join("\n"));
    // The handshake gives up after 5 s; the message did not wait for that.
    assert!(shown_after < Duration::from_secs(4), "shown after {shown_after:?}");
    c789.signal("CONT");
    stdin.write_all(b"5\n").await.expect("writing to the menu");
    let status = tokio::time::timeout(common::TIMEOUT, menu.wait()).await.expect("menu exit").expect("menu");
    assert!(status.success(), "{status}");
}
