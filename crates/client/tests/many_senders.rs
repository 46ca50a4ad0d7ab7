//! Making a user unreachable by being many (issue 16, attack 1): thousands of distinct numbers,
//! each registered with the directory and authenticated on its own link, send one text each and
//! leave. The victim's open descriptors come back to where they were (the attack once cost one
//! descriptor per sender for ever, until `Too many open files`), and a contact still reaches it.
//! In a test binary of its own, since it counts the process's open descriptors.

mod support;

use std::time::Duration;

use futures::future::join_all;
use support::{next, number, TestDirectory};
use whatsap2p_client::store::{Store, MAX_HELD_ITEMS};
use whatsap2p_client::{Event, SendOutcome};

/// Distinct senders: more than the number of descriptors a process may have open here would
/// allow if each one kept even one (the test process holds the victim, the directory and the
/// senders' own sockets).
const SENDERS: u64 = 25_000;
/// Senders connected at once.
const WAVE: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_thousands_of_distinct_authenticated_senders_then_descriptors_return_and_a_contact_still_gets_through(
) {
    // Thousands of users on one loopback address: the directory's limits per address would stand
    // for thousands of addresses in the field.
    let config = whatsap2p_server::Config {
        heartbeat_timeout: support::NO_EXPIRY,
        limits: whatsap2p_server::config::Limits::off(),
        ..Default::default()
    };
    let key = whatsap2p_link::StaticKeypair::generate().expect("server key");
    let directory = TestDirectory::start_on("127.0.0.1:0".parse().expect("addr"), key, config).await;
    let root = tempfile::tempdir().expect("tempdir");
    let me = number(100);
    let (victim, mut events) = support::start(directory.addr, &me, root.path()).await;
    let (friend, mut friend_events) = support::start(directory.addr, &number(101), root.path()).await;
    victim.add_contact(&number(101), None).await.expect("adding the contact");
    let (addr, key) = (victim.published_addr(), victim.identity_key());
    let pins = Store::open(&root.path().join("bare-peers.sqlite")).expect("store");
    // The victim's events are taken as they come (its queue is bounded: a full one holds acks back).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let counter = tokio::spawn(async move {
        let mut stopped = stopped;
        let mut shown = 0u64;
        loop {
            tokio::select! {
                _ = &mut stopped => return (shown, events),
                e = events.recv() => match e {
                    // Strangers: each text is a message request, up to the bound on what is held.
                    Some(Event::Request { .. }) => shown += 1,
                    Some(_) => {}
                    None => return (shown, events),
                },
            }
        }
    });
    let (fds, rss) = (support::open_fds(), rss_kib());
    let started = tokio::time::Instant::now();
    let ids: Vec<u64> = (0..SENDERS).collect();
    for wave in ids.chunks(WAVE) {
        let visits =
            wave.iter().map(|i| support::visit(directory.addr, &pins, 2_000_000 + i, &me, key, addr));
        join_all(visits).await;
    }
    let _ = stop.send(());
    let (mut shown, mut events) = counter.await.expect("event counter");
    while let Ok(e) = events.try_recv() {
        shown += u64::from(matches!(e, Event::Request { .. }));
    }
    assert_eq!(shown, SENDERS.min(MAX_HELD_ITEMS as u64), "requests shown, up to the bound");
    // Every sender has left: the victim's descriptors come back, without anyone asking.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while support::open_fds() > fds + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} descriptors open after {SENDERS} senders left, {fds} before",
            support::open_fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And a contact still gets through.
    let (id, outcome) = friend.send(&me, "still reachable?").await.expect("send");
    assert_eq!(outcome, SendOutcome::Sent);
    next(&mut events, |e| matches!(e, Event::Message { id: got, .. } if got == id).then_some(())).await;
    next(&mut friend_events, |e| matches!(e, Event::Delivered { id: got, .. } if got == id).then_some(()))
        .await;
    // For docs/security.md: what the process (victim, directory and senders together) holds after.
    eprintln!(
        "{SENDERS} senders in {:?}; descriptors {fds} before, {} after; RSS {rss} KiB before, {} KiB after",
        started.elapsed(),
        support::open_fds(),
        rss_kib()
    );
    friend.shutdown().await;
    victim.shutdown().await;
    directory.stop().await;
}

/// The process's resident memory, from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
