//! One directory on three real `whatsap2p-server` processes sharing a real `redis-server`, with
//! real clients spread over them: lookups, presence pushes and messages across servers, the shared
//! server key, metrics, and a server killed with SIGKILL and started again.
//!
//! Skips (with a message) when redis-server is not installed; `.ci/run` installs it.

mod common;

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
