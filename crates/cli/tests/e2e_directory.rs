//! One directory on three real `whatsap2p-server` processes sharing a real `redis-server`, with
//! real clients spread over them: lookups, presence pushes and messages across servers, the shared
//! server key, metrics, and a server killed with SIGKILL and started again; and clients given every
//! address, which move to the other servers at once when theirs is killed under them.
//!
//! Skips (with a message) when redis-server is not installed; `.ci/run` installs it.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{is, tempdir, Client, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whatsap2p_server::testing::Redis;

/// Seconds of silence after which a server drops a session; its Redis entries expire after as long.
const HEARTBEAT: &str = "3";

fn pushed(v: &serde_json::Value, number: &str, online: bool) -> bool {
    is(v, "presence") && v["number"] == number && v["online"] == online
}

async fn add_contact(c: &mut Client, number: &str) {
    c.send(json!({"cmd": "add_contact", "number": number})).await;
    c.reply("contact_added", |v| is(v, "contact_added")).await;
}

/// The body of `GET /metrics` from the address a server printed.
async fn scrape(server: &Server) -> String {
    let line = server.wait_line("its metrics address", |l| l.starts_with("[+] Metrics at http://")).await;
    let addr = line.trim_start_matches("[+] Metrics at http://").trim_end_matches("/metrics");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connecting to the metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("asking");
    let mut page = String::new();
    s.read_to_string(&mut page).await.expect("reading the metrics");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_servers_on_one_redis_then_clients_on_each_chat_and_outlive_a_killed_server() {
    let Some(redis) = Redis::start(false).await else { return };
    let keys = tempdir();
    let key = keys.path().join("server.key");
    let key = key.to_str().expect("utf-8 path");
    let url = redis.url();
    let args =
        ["--store", &url, "--key-file", key, "--heartbeat-timeout", HEARTBEAT, "--metrics", "127.0.0.1:0"];
    let data = [tempdir(), tempdir(), tempdir()];
    let s0 = Server::start_in(data[0].path(), 0, &args).await;
    let mut s1 = Server::start_in(data[1].path(), 0, &args).await;
    let s2 = Server::start_in(data[2].path(), 0, &args).await;
    assert!(
        s0.fingerprint == s1.fingerprint && s1.fingerprint == s2.fingerprint,
        "one key for the directory"
    );

    let mut alice = Client::start(s0.port, "123").await;
    let mut bob = Client::start(s1.port, "456").await;
    let mut carol = Client::start(s2.port, "789").await;
    // Lookups across servers.
    let p = alice.ping("456").await;
    assert_eq!((p["online"].as_bool(), p["addr"].as_str()), (Some(true), Some(bob.listen().as_str())), "{p}");
    assert_eq!(carol.ping("123").await["online"], true);
    add_contact(&mut alice, "456").await;
    add_contact(&mut bob, "123").await;
    add_contact(&mut carol, "456").await;
    carol.seen_or_expect("456 online", |v| pushed(v, "456", true)).await;

    // A message between clients registered on different servers.
    let id = alice.send_text("456", "hello across servers").await;
    bob.message(&id, "123", "hello across servers").await;
    alice.delivered(&id, "456").await;

    // Bob's server dies without a goodbye: carol, on another server, hears 456 go offline within
    // the heartbeat timeout, when its entry in Redis expires.
    let port1 = s1.port;
    let killed = Instant::now();
    s1.kill().await;
    carol.expect_within(Duration::from_secs(8), "456 offline", |v| pushed(v, "456", false)).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(6), "456 offline {took:?} after its server was killed");

    // A message sent meanwhile is queued (the directory says 456 is offline) and delivered once
    // bob is back.
    alice.seen_or_expect("456 offline", |v| pushed(v, "456", false)).await;
    let (during, _) = alice.send_queued("456", "while bob's server is down").await;
    s1 = Server::start_in(data[1].path(), port1, &args).await;
    bob.expect_within(Duration::from_secs(8), "reconnected", |v| is(v, "reconnected")).await;
    carol.expect("456 online again", |v| pushed(v, "456", true)).await;
    bob.seen_or_expect("message sent during", |v| is(v, "message") && v["id"] == during).await;
    alice.seen_or_expect("delivered", |v| is(v, "delivered") && v["id"] == during).await;
    let after = alice.send_text("456", "after").await;
    bob.message(&after, "123", "after").await;
    for id in [&id, &during, &after] {
        let copies = bob.events_so_far().iter().filter(|v| is(v, "message") && v["id"] == **id).count();
        assert_eq!(copies, 1, "message {id} arrived {copies} times\n{}", bob.report());
    }

    let page = scrape(&s0).await;
    assert!(page.contains("whatsap2p_store_up 1"), "{page}");
    assert!(page.contains("whatsap2p_online_users 1"), "alice is on s0: {page}");
    for s in [s0, s1, s2] {
        s.stop().await;
    }
}

/// `--server` flags for every other address, in this order.
fn others(servers: &[&Server]) -> Vec<String> {
    servers.iter().flat_map(|s| ["--server".to_owned(), s.addr()]).collect()
}

/// A client for `number` with `profile`, registering with `port` first, knowing `more` addresses.
async fn start(port: u16, number: &str, profile: &std::path::Path, more: Vec<String>) -> Client {
    let more: Vec<&str> = more.iter().map(String::as_str).collect();
    Client::start_with(port, number, profile, &more).await
}

/// The answers to the `n` `send`s written without waiting after the client's first `since` events
/// (`sent` or `queued`, each with a new id: a `sent` the outbox reports later for a queued message
/// repeats its id), waiting for those not in yet; their ids by recipient, in order.
async fn answers(c: &mut Client, since: usize, n: usize) -> HashMap<String, Vec<String>> {
    loop {
        let mut by_recipient: HashMap<String, Vec<String>> = HashMap::new();
        let mut ids = HashSet::new();
        for v in &c.events_so_far()[since..] {
            assert!(!is(v, "error"), "{v}\n{}", c.report());
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            if (is(v, "sent") || is(v, "queued")) && ids.insert(id.clone()) {
                by_recipient.entry(v["to"].as_str().expect("to").to_owned()).or_default().push(id);
            }
        }
        if ids.len() >= n {
            return by_recipient;
        }
        c.expect("an answer to send", |v| is(v, "sent") || is(v, "queued") || is(v, "error")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_clients_with_every_address_when_their_server_is_killed_then_they_move_at_once_and_every_message_arrives_once(
) {
    let Some(redis) = Redis::start(false).await else { return };
    let keys = tempdir();
    let key = keys.path().join("server.key");
    let key = key.to_str().expect("utf-8 path");
    let url = redis.url();
    let args = ["--store", &url, "--key-file", key, "--heartbeat-timeout", HEARTBEAT];
    let data = [tempdir(), tempdir(), tempdir()];
    let s0 = Server::start_in(data[0].path(), 0, &args).await;
    let s1 = Server::start_in(data[1].path(), 0, &args).await;
    let s2 = Server::start_in(data[2].path(), 0, &args).await;

    // Alice and bob register with s0 first, carol with s1; each knows every address.
    let profiles = [tempdir(), tempdir(), tempdir(), tempdir()];
    let mut alice = start(s0.port, "123", profiles[0].path(), others(&[&s1, &s2])).await;
    let mut bob = start(s0.port, "456", profiles[1].path(), others(&[&s2, &s1])).await;
    let mut carol = start(s1.port, "789", profiles[2].path(), others(&[&s2, &s0])).await;
    // Dave has been online once (on s2), and is away now.
    let mut dave = start(s2.port, "555", profiles[3].path(), others(&[&s0, &s1])).await;
    dave.logout().await;
    for (c, contacts) in
        [(&mut alice, ["456", "789", "555"].as_slice()), (&mut bob, &["123"]), (&mut carol, &["123"])]
    {
        for n in contacts {
            add_contact(c, n).await;
        }
    }
    let first = alice.send_text("456", "before").await;
    bob.message(&first, "123", "before").await;
    s0.wait_count("alice and bob on s0", 2, |l| l.starts_with("[+] Registered ")).await;

    // They chat, and s0 dies under them in the middle of it.
    let (alice_since, bob_since) = (alice.events_so_far().len(), bob.events_so_far().len());
    for i in 0..5 {
        alice.send(json!({"cmd": "send", "to": "789", "text": format!("to carol {i}")})).await;
        alice.send(json!({"cmd": "send", "to": "555", "text": format!("to dave {i}")})).await;
        bob.send(json!({"cmd": "send", "to": "123", "text": format!("to alice {i}")})).await;
    }
    let killed = Instant::now();
    s0.kill().await;
    for i in 5..10 {
        alice.send(json!({"cmd": "send", "to": "789", "text": format!("to carol {i}")})).await;
        alice.send(json!({"cmd": "send", "to": "555", "text": format!("to dave {i}")})).await;
        bob.send(json!({"cmd": "send", "to": "123", "text": format!("to alice {i}")})).await;
    }
    // Both move at once: a reconnection, not a loss.
    for c in [&mut alice, &mut bob] {
        c.seen_or_expect("reconnected", |v| is(v, "reconnected")).await;
        let took = killed.elapsed();
        assert!(took < Duration::from_secs(3), "{} moved {took:?} after the kill", c.number);
        let lost = c.events_so_far().iter().filter(|v| is(v, "directory_lost")).count();
        assert_eq!(lost, 0, "a move is not a loss\n{}", c.report());
    }
    let moved = |n: &'static str| move |l: &str| l.starts_with(&format!("[+] Registered {n} "));
    assert_eq!(s1.count(moved("123")) + s2.count(moved("123")), 1, "alice registered on one of the others");
    assert_eq!(s1.count(moved("456")) + s2.count(moved("456")), 1, "bob registered on one of the others");

    let mut from_alice = answers(&mut alice, alice_since, 20).await;
    let (to_carol, to_dave) =
        (from_alice.remove("789").unwrap_or_default(), from_alice.remove("555").unwrap_or_default());
    let to_alice = answers(&mut bob, bob_since, 10).await.remove("123").unwrap_or_default();
    assert_eq!((to_carol.len(), to_dave.len(), to_alice.len()), (10, 10, 10));
    // Dave comes back (on s1, through the others): everything queued for him arrives.
    let mut dave = start(s1.port, "555", profiles[3].path(), others(&[&s2])).await;
    for (receiver, ids, from) in
        [(&mut carol, &to_carol, "123"), (&mut dave, &to_dave, "123"), (&mut alice, &to_alice, "456")]
    {
        for id in ids {
            receiver
                .seen_or_expect(&format!("message {id}"), |v| is(v, "message") && v["id"] == id.as_str())
                .await;
        }
        let events = receiver.events_so_far();
        for id in ids {
            let copies = events.iter().filter(|v| is(v, "message") && v["id"] == id.as_str()).count();
            assert_eq!(copies, 1, "message {id} from {from} arrived {copies} times");
        }
    }
    for (sender, ids) in [(&mut alice, [to_carol, to_dave].concat()), (&mut bob, to_alice)] {
        for id in &ids {
            sender.seen_or_expect("delivered", |v| is(v, "delivered") && v["id"] == id.as_str()).await;
        }
    }
    for s in [s1, s2] {
        s.stop().await;
    }
}
