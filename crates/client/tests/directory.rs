//! The client's session with its directory, against real directories in this process (and
//! directories played by the test where a server would have to misbehave or be old): the version
//! it agrees on, the codes it acts on, several addresses of one directory with one pinned key, and
//! starting while the directory is down. Time-based behaviour runs on a paused clock.

mod support;

use std::time::Duration;

use support::{next, number, FakeDirectory, Speaks, TestDirectory, NO_EXPIRY};
use tokio::time::Instant;
use whatsap2p_client::config::ServerAddr;
use whatsap2p_client::{Client, ClientConfig, ClientError, Event};
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::directory::{CloseCode, LimitKind, ServerToClient};
use whatsap2p_proto::version::{self, Versions};

fn range(lowest: u16, highest: u16) -> Versions {
    Versions::new(lowest, highest).expect("range")
}

fn server_config(versions: Versions) -> whatsap2p_server::Config {
    whatsap2p_server::Config { heartbeat_timeout: NO_EXPIRY, versions, ..Default::default() }
}

/// A directory speaking `versions`, with `key`, on `addr` (port 0: a free one).
async fn directory_on(addr: std::net::SocketAddr, key: &StaticKeypair, versions: Versions) -> TestDirectory {
    TestDirectory::start_on(addr, key.clone(), server_config(versions)).await
}

async fn directory(key: &StaticKeypair) -> TestDirectory {
    directory_on(([127, 0, 0, 1], 0).into(), key, version::SPOKEN).await
}

/// A client configuration for `n` in `root` with these directory addresses.
fn config(servers: &[std::net::SocketAddr], n: u64, root: &std::path::Path) -> ClientConfig {
    let mut c = support::config(servers[0], &number(n), root);
    c.servers = servers.iter().map(|s| ServerAddr::from(*s)).collect();
    c
}

async fn start(config: ClientConfig) -> (Client, tokio::sync::mpsc::Receiver<Event>) {
    Client::start(config).await.expect("client start")
}

#[tokio::test]
async fn given_directories_speaking_only_newer_or_only_older_versions_then_start_fails_naming_both_ranges() {
    let root = tempfile::tempdir().expect("tempdir");
    let key = StaticKeypair::generate().expect("key");
    for (theirs, said) in [(range(5, 6), "versions 5 to 6"), (Versions::only(1), "version 1")] {
        let d = directory_on(([127, 0, 0, 1], 0).into(), &key, theirs).await;
        let e = Client::start(config(&[d.addr], 123, root.path())).await.err().expect("refused");
        assert!(matches!(e, ClientError::Version { .. }), "{e:?}");
        let text = e.to_string();
        let want = format!(
            "no protocol version in common: this side speaks versions 2 to 4, the other side speaks {said}"
        );
        assert!(text.contains(&want) && text.contains(&d.addr.to_string()), "{text}");
        d.stop().await;
    }
}

#[tokio::test]
async fn given_a_directory_from_before_version_3_then_the_client_retries_with_the_v2_hello_and_runs_at_version_2(
) {
    let old = FakeDirectory::start(Speaks::V2Only, StaticKeypair::generate().expect("key")).await;
    let root = tempfile::tempdir().expect("tempdir");
    let (client, _events) = start(config(&[old.addr], 123, root.path())).await;
    assert_eq!(client.directory_version(), Some(2));
    // The v3 Hello first (refused by closing, as version 2 does), then the v2 Hello.
    let hellos = old.hellos.lock().expect("hellos").clone();
    assert_eq!(hellos, vec![vec![4, 0, 2], vec![2, 0]]);
    client.shutdown().await;
}

#[tokio::test]
async fn given_a_current_directory_then_the_session_agrees_on_version_4() {
    let key = StaticKeypair::generate().expect("key");
    let d = directory(&key).await;
    let root = tempfile::tempdir().expect("tempdir");
    let (client, _events) = start(config(&[d.addr], 123, root.path())).await;
    assert_eq!(client.directory_version(), Some(4));
    client.shutdown().await;
    d.stop().await;
}

#[tokio::test]
async fn given_the_number_bound_to_another_key_then_start_fails_explaining_the_key_conflict() {
    let key = StaticKeypair::generate().expect("key");
    let d = directory(&key).await;
    let (first, second) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (owner, _events) = start(config(&[d.addr], 456, first.path())).await;
    let e = Client::start(config(&[d.addr], 456, second.path())).await.err().expect("refused");
    assert!(matches!(e, ClientError::Closed { code: CloseCode::NumberTaken, .. }), "{e:?}");
    let text = e.to_string();
    for part in ["number 456 is registered to another key", "identity key of the profile", "--profile"] {
        assert!(text.contains(part), "{text}");
    }
    owner.shutdown().await;
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn given_a_directory_whose_store_is_down_then_the_client_starts_and_retries_with_backoff_until_registered(
) {
    let fake =
        FakeDirectory::start(Speaks::Versions(version::SPOKEN), StaticKeypair::generate().expect("key"))
            .await;
    let unavailable =
        || ServerToClient::Closed { code: CloseCode::StoreUnavailable, reason: "store down".into() };
    for _ in 0..3 {
        fake.answer_next(unavailable());
    }
    let root = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    // The directory answered (its key is pinned now): a store that is down is not a reason to
    // give up at start.
    let (client, mut events) = start(config(&[fake.addr], 123, root.path())).await;
    assert_eq!(client.directory_version(), None);
    let first = events.recv().await.expect("an event");
    assert!(matches!(&first, Event::DirectoryLost { reason } if reason.contains("store")), "{first:?}");
    next(&mut events, |e| matches!(e, Event::Reconnected).then_some(())).await;
    // Three refusals, then registered: pauses of 0.2, 0.4 and 0.8 s between the tries.
    let took = started.elapsed().as_secs_f64();
    assert!((took - 1.4).abs() < 0.05, "registered after {took}s");
    assert_eq!(client.directory_version(), Some(4));
    client.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn given_two_addresses_of_one_directory_when_the_one_in_use_shuts_down_then_the_client_moves_at_once_and_watches_again(
) {
    let key = StaticKeypair::generate().expect("key");
    let (a, b) = (directory(&key).await, directory(&key).await);
    let root = tempfile::tempdir().expect("tempdir");
    // 789 is online at b only (the two are not sharing a store here): a watch restored on b says so.
    let (contact, _contact_events) = start(config(&[b.addr], 789, root.path())).await;
    let (client, mut events) = start(config(&[a.addr, b.addr], 123, root.path())).await;
    client.add_contact(contact.number(), None).await.expect("add contact");
    next(&mut events, |e| matches!(e, Event::Presence { online: None, .. }).then_some(())).await;
    let (a_addr, moved) = (a.addr, Instant::now());
    a.stop().await;
    let mut seen = Vec::new();
    loop {
        match events.recv().await.expect("events") {
            Event::Reconnected => break,
            other => seen.push(other),
        }
    }
    assert!(moved.elapsed() < Duration::from_millis(100), "moved after {:?}", moved.elapsed());
    assert!(!seen.iter().any(|e| matches!(e, Event::DirectoryLost { .. })), "a move is not a loss: {seen:?}");
    let online = next(&mut events, |e| match e {
        Event::Presence { number, online: Some(addr) } if number == *contact.number() => Some(addr),
        _ => None,
    })
    .await;
    assert_eq!(online, contact.published_addr());
    // The second address was reached for the first time and presented the directory's key: no
    // warning, and it is pinned now like the first.
    assert!(!seen.iter().any(|e| matches!(e, Event::Warning { .. })), "{seen:?}");

    // Now b goes too, and nothing answers: the directory is lost (said once), and found again
    // when a comes back on its address.
    b.stop().await;
    let reason = next(&mut events, |e| match e {
        Event::DirectoryLost { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert!(reason.contains("shutting down"), "{reason}");
    let a = directory_on(a_addr, &key, version::SPOKEN).await;
    next(&mut events, |e| matches!(e, Event::Reconnected).then_some(())).await;
    assert_eq!(client.directory_version(), Some(4));
    client.shutdown().await;
    contact.shutdown().await;
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn given_an_address_presenting_another_key_then_it_is_refused_loudly_and_the_others_still_serve() {
    let (key, other_key) = (StaticKeypair::generate().expect("key"), StaticKeypair::generate().expect("key"));
    let (a, impostor) = (directory(&key).await, directory(&other_key).await);
    let root = tempfile::tempdir().expect("tempdir");
    let (client, mut events) = start(config(&[a.addr, impostor.addr], 123, root.path())).await;
    let pinned = client.server_key();
    let a_addr = a.addr;
    a.stop().await;
    let warning = next(&mut events, |e| match e {
        Event::Warning { message } => Some(message),
        _ => None,
    })
    .await;
    assert!(
        warning.contains("SERVER KEY CHANGED") && warning.contains(&impostor.addr.to_string()),
        "{warning}"
    );
    let a = directory_on(a_addr, &key, version::SPOKEN).await;
    next(&mut events, |e| matches!(e, Event::Reconnected).then_some(())).await;
    assert_eq!(client.server_key(), pinned);
    client.shutdown().await;
    // The profile used with the other address alone pins it under its own key (another
    // directory); given both again, the two pins say they are not one directory: refused at start.
    let (alone, _events) = start(config(&[impostor.addr], 123, root.path())).await;
    alone.shutdown().await;
    let e = Client::start(config(&[a.addr, impostor.addr], 123, root.path())).await.err();
    assert!(matches!(e, Some(ClientError::NotOneDirectory { .. })), "{e:?}");
    a.stop().await;
    impostor.stop().await;
}

#[tokio::test(start_paused = true)]
async fn given_a_profile_registered_before_when_its_directory_is_down_at_start_then_it_starts_and_connects_when_it_is_back(
) {
    let key = StaticKeypair::generate().expect("key");
    let d = directory(&key).await;
    let addr = d.addr;
    let root = tempfile::tempdir().expect("tempdir");
    let (client, _events) = start(config(&[addr], 123, root.path())).await;
    client.logout().await;
    d.stop().await;

    let (client, mut events) = start(config(&[addr], 123, root.path())).await;
    assert_eq!(client.directory_version(), None);
    let first = events.recv().await.expect("an event");
    assert!(
        matches!(&first, Event::DirectoryLost { reason } if reason.contains("cannot reach")),
        "{first:?}"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let d = directory_on(addr, &key, version::SPOKEN).await;
    let back = Instant::now();
    next(&mut events, |e| matches!(e, Event::Reconnected).then_some(())).await;
    // The backoff reached its longest pause (5 s) long ago: back within one.
    assert!(back.elapsed() <= Duration::from_secs(5), "{:?}", back.elapsed());
    assert_eq!(client.directory_version(), Some(4));
    client.shutdown().await;
    d.stop().await;
}

#[tokio::test]
async fn given_a_new_profile_and_no_directory_then_start_fails_after_one_round() {
    let key = StaticKeypair::generate().expect("key");
    let d = directory(&key).await;
    let addr = d.addr;
    d.stop().await;
    let root = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let e = Client::start(config(&[addr], 123, root.path())).await.err().expect("refused");
    assert!(matches!(e, ClientError::NeverReached { .. }), "{e:?}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn given_two_copies_of_one_profile_then_the_second_wins_and_the_first_stops_and_says_so() {
    let key = StaticKeypair::generate().expect("key");
    let d = directory(&key).await;
    let root = tempfile::tempdir().expect("tempdir");
    let first_root = root.path().join("first");
    let (first, _events) = start(config(&[d.addr], 123, &first_root)).await;
    first.logout().await;
    // A copy of the profile folder: the same keys, in another place.
    let second_root = root.path().join("second");
    copy_dir(&first_root, &second_root);
    let (first, mut first_events) = start(config(&[d.addr], 123, &first_root)).await;
    let (second, mut second_events) = start(config(&[d.addr], 123, &second_root)).await;
    let message = next(&mut first_events, |e| match e {
        Event::Replaced { message } => Some(message),
        _ => None,
    })
    .await;
    assert!(message.contains("another copy of this profile"), "{message}");
    assert_eq!(first.directory_version(), None);
    // No flapping: a minute later the first has not come back, the second was never displaced.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(first.directory_version(), None);
    assert_eq!(second.directory_version(), Some(4));
    while let Ok(e) = first_events.try_recv() {
        assert!(!matches!(e, Event::Reconnected), "the replaced copy came back");
    }
    while let Ok(e) = second_events.try_recv() {
        assert!(!matches!(e, Event::Replaced { .. } | Event::DirectoryLost { .. }), "{e:?}");
    }
    let (watcher, _w) = start(config(&[d.addr], 456, root.path())).await;
    let seen = watcher.ping(second.number()).await.expect("ping");
    assert_eq!(seen.online, Some(second.published_addr()));
    for c in [first, second, watcher] {
        c.shutdown().await;
    }
    d.stop().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// A directory with these limits (and no expiry), on a free port.
async fn limited_directory(limits: whatsap2p_server::config::Limits) -> TestDirectory {
    let config = whatsap2p_server::Config { limits, ..server_config(version::SPOKEN) };
    let key = StaticKeypair::generate().expect("key");
    TestDirectory::start_on(([127, 0, 0, 1], 0).into(), key, config).await
}

#[tokio::test]
async fn given_lookups_over_the_directorys_rate_then_a_ping_fails_naming_the_limit_and_succeeds_after_the_retry_time(
) {
    let limits = whatsap2p_server::config::Limits { lookups_per_second: 1, ..Default::default() };
    let d = limited_directory(limits).await;
    let root = tempfile::tempdir().expect("tempdir");
    let (client, _events) = start(config(&[d.addr], 123, root.path())).await;
    let me = number(123);
    let mut served = 0;
    let (limit, retry_after, text) = loop {
        match client.ping(&me).await {
            Ok(_) => served += 1,
            Err(e @ ClientError::Limited { .. }) => {
                let ClientError::Limited { limit, retry_after } = e else { unreachable!() };
                break (limit, retry_after, e.to_string());
            }
            Err(e) => panic!("ping {served} failed: {e}"),
        }
        assert!(served <= 70, "never limited");
    };
    // A burst of a minute's worth at one a second (the client looks up nothing else here).
    assert!((60..62).contains(&served), "{served}");
    assert_eq!(limit, LimitKind::LookupRate);
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1), "{retry_after:?}");
    assert!(text.starts_with("over the directory's limit of lookups per second; retry in "), "{text}");
    // The session stays: after the time it was told, the same request is served.
    tokio::time::sleep(retry_after).await;
    client.ping(&me).await.expect("served after the retry time");
    client.shutdown().await;
    d.stop().await;
}

#[tokio::test]
async fn given_an_address_out_of_new_numbers_for_the_day_then_start_fails_naming_the_limit_and_the_wait() {
    let limits =
        whatsap2p_server::config::Limits { new_numbers_per_address_per_day: 1, ..Default::default() };
    let d = limited_directory(limits).await;
    let (first, second) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (client, _events) = start(config(&[d.addr], 123, first.path())).await;
    let e = Client::start(config(&[d.addr], 456, second.path())).await.err().expect("limited");
    match &e {
        ClientError::Limited { limit: LimitKind::NewNumbers, retry_after } => {
            assert!(*retry_after > Duration::from_secs(23 * 3600), "{retry_after:?}");
        }
        other => panic!("a second new number from one address: {other:?}"),
    }
    let text = e.to_string();
    assert_eq!(
        text,
        "over the directory's limit of registrations of new numbers per address per day; retry in 24 h"
    );
    // The number already bound comes back as often as it likes.
    client.shutdown().await;
    let (again, _events) = start(config(&[d.addr], 123, first.path())).await;
    again.shutdown().await;
    d.stop().await;
}
