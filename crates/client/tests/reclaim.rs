//! What a remote party makes the client hold ends with it: thousands of distinct, authenticated
//! peers connect, each sends a message and leaves, and the client's tasks, link slots, couriers
//! and sockets come back to where they were. None is a contact: their messages are message
//! requests, of which the client keeps no more than its bound.

mod support;

use std::time::Duration;

use futures::future::join_all;
use support::{number, TestDirectory};
use whatsap2p_client::store::{Store, MAX_HELD_ITEMS};
use whatsap2p_client::Event;
use whatsap2p_server::config::Limits;

const PEERS: u64 = 3_000;
/// Peers connected at once (the client takes 1 024).
const WAVE: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_thousand_peers_that_connect_and_leave_then_the_client_holds_nothing_for_them() {
    // 3 000 users on one loopback address: the directory's limits per address (and the client's
    // lookups of 3 000 distinct numbers) would stand for 3 000 addresses in the field.
    let config = whatsap2p_server::Config { limits: Limits::off(), ..Default::default() };
    let key = whatsap2p_link::StaticKeypair::generate().expect("server key");
    let directory = TestDirectory::start_on("127.0.0.1:0".parse().expect("addr"), key, config).await;
    let root = tempfile::tempdir().expect("tempdir");
    let me = number(100);
    let (client, mut events) = support::start(directory.addr, &me, root.path()).await;
    let counted = tokio::spawn(async move {
        let mut messages = 0u64;
        while let Some(e) = events.recv().await {
            if matches!(e, Event::Request { .. }) {
                messages += 1;
            }
        }
        messages
    });
    let (addr, key) = (client.published_addr(), client.identity_key());
    let pins = Store::open(&root.path().join("bare-peers.sqlite")).expect("store");
    let idle = client.stats();
    let fds = support::open_fds();
    let mut peak = client.stats();
    let ids: Vec<u64> = (0..PEERS).collect();
    for wave in ids.chunks(WAVE) {
        let visits =
            wave.iter().map(|i| support::visit(directory.addr, &pins, 1_000_000 + i, &me, key, addr));
        join_all(visits).await;
        let now = client.stats();
        peak.links = peak.links.max(now.links);
        peak.tasks = peak.tasks.max(now.tasks);
    }
    // Every peer has left: what the client held for them goes, without anyone asking.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while client.stats() != idle || support::open_fds() > fds {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still held after every peer left: {:?} (idle: {idle:?}), {} descriptors (idle: {fds})",
            client.stats(),
            support::open_fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        peak.links > 0 && peak.tasks > idle.tasks,
        "nothing was ever held, the test proves nothing: {peak:?}"
    );
    let client_requests = client.requests().await.expect("requests").len();
    client.shutdown().await;
    let requests = counted.await.expect("event counter");
    assert_eq!(requests, PEERS.min(MAX_HELD_ITEMS as u64), "requests shown, up to the bound");
    assert_eq!(client_requests, requests as usize, "requests kept, up to the bound");
    directory.stop().await;
}
