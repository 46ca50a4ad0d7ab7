//! The client's directory session as a user meets it, with the real binaries: a host name for the
//! server, a directory that speaks no version the client does, two copies of one profile (the
//! second takes the number, the first stops and says so), and a start while the directory is
//! down (it comes up later; the client connects and delivers).

mod common;

use std::time::{Duration, Instant};

use common::{is, tempdir, Client, Server};
use serde_json::json;

async fn add_contact(c: &mut Client, number: &str) {
    c.send(json!({"cmd": "add_contact", "number": number})).await;
    c.reply("contact_added", |v| is(v, "contact_added")).await;
}

/// Copies a profile folder (the same keys, somewhere else), as a user copying it to a second
/// machine would.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_host_name_for_the_server_then_the_client_resolves_it_and_registers() {
    let server = Server::start(&[]).await;
    let profile = tempdir();
    let mut c = Client::spawn_to("localhost", server.port, "123", profile.path(), &[]);
    let online = c.online().await;
    assert_eq!(online["registered"], true, "{online}");
    // Pinned under the name as given, and chosen a loopback listener as for 127.0.0.1.
    assert!(c.listen().starts_with("127.0.0.1:"), "{online}");
    server.wait_line("Registered 123", |l| l.starts_with("[+] Registered 123 ")).await;
    c.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_server_speaking_only_newer_versions_then_the_client_says_which_at_start() {
    let server = Server::start(&["--protocol-versions", "5-6"]).await;
    let profile = tempdir();
    let err = Client::start_refused(server.port, "123", profile.path(), &[]).await;
    let want = "no protocol version in common: this side speaks versions 2 to 4, the other side speaks versions 5 to 6";
    assert!(err.contains(want), "{err}");
    let theirs = "no protocol version in common: this side speaks versions 5 to 6, the other side speaks versions 2 to 4";
    server.wait_line("its refusal", |l| l.starts_with("[!] Refusing 127.0.0.1/") && l.contains(theirs)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_copies_of_one_profile_then_the_second_wins_and_the_first_stops_and_says_so() {
    let server = Server::start(&[]).await;
    let (first_profile, second_profile) = (tempdir(), tempdir());
    let mut first = Client::start_with(server.port, "123", first_profile.path(), &[]).await;
    first.logout().await;
    copy_dir(first_profile.path(), second_profile.path());
    let mut first = Client::start_with(server.port, "123", first_profile.path(), &[]).await;
    let mut second = Client::start_with(server.port, "123", second_profile.path(), &[]).await;
    assert_eq!(first.key(), second.key(), "two copies of one profile");

    let v = first.expect("replaced", |v| is(v, "replaced")).await;
    let message = v["message"].as_str().expect("message");
    assert!(message.contains("another copy of this profile") && message.contains("123"), "{v}");
    // No flapping: the first does not come back, so the server sees 123 connect twice in all.
    let connected = |l: &str| l == "[+] Connected: 123";
    let third = server.stdout.wait_until(Duration::from_secs(3), |lines| {
        (lines.iter().filter(|l| connected(l)).count() > 3).then_some(())
    });
    assert!(third.await.is_err(), "123 connected again:\n{}", server.stdout.tail(30));
    assert_eq!(server.count(connected), 3, "{}", server.stdout.tail(30));
    let first_events = first.events_so_far();
    assert!(!first_events.iter().any(|v| is(v, "reconnected")), "{first_events:?}");
    let second_events = second.events_so_far();
    assert!(!second_events.iter().any(|v| is(v, "replaced") || is(v, "directory_lost")), "{second_events:?}");
    // The number is the second copy's: found there.
    let mut other = Client::start(server.port, "456").await;
    let p = other.ping("123").await;
    assert_eq!(p["addr"], second.listen().as_str(), "{p}");
    second.logout().await;
    first.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_directory_down_at_start_then_a_known_profile_waits_for_it_and_delivers_and_a_new_one_is_told(
) {
    let data = tempdir();
    let (alice_profile, bob_profile) = (tempdir(), tempdir());
    let server = Server::start_in(data.path(), 0, &[]).await;
    let port = server.port;
    let mut bob = Client::start_with(port, "456", bob_profile.path(), &[]).await;
    let mut alice = Client::start_with(port, "123", alice_profile.path(), &[]).await;
    add_contact(&mut alice, "456").await;
    // Alice is bob's contact, or her texts would wait as a message request.
    add_contact(&mut bob, "123").await;
    bob.logout().await;
    let (before, _) = alice.send_queued("456", "written before").await;
    alice.logout().await;
    server.stop().await;

    // The directory is down: alice starts all the same, says why, and queues meanwhile.
    let mut alice = Client::spawn(port, "123", alice_profile.path(), &[]);
    let online = alice.online().await;
    assert_eq!(online["registered"], false, "{online}");
    let lost = alice.expect("directory_lost", |v| is(v, "directory_lost")).await;
    assert!(lost["reason"].as_str().is_some_and(|r| r.contains("cannot reach the directory")), "{lost}");
    let (during, _) = alice.send_queued("456", "written while it was down").await;
    // A profile that never reached this directory is told so, and stops.
    let fresh = tempdir();
    let started = Instant::now();
    let err = Client::start_refused(port, "789", fresh.path(), &[]).await;
    assert!(err.contains("cannot reach the directory") && err.contains("never been registered"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(8), "refused after {:?}", started.elapsed());

    // It comes up: alice connects by herself, and delivers everything once bob is back.
    let server = Server::start_in(data.path(), port, &[]).await;
    alice.expect_within(Duration::from_secs(8), "reconnected", |v| is(v, "reconnected")).await;
    let mut bob = Client::start_with(port, "456", bob_profile.path(), &[]).await;
    bob.message(&before, "123", "written before").await;
    bob.message(&during, "123", "written while it was down").await;
    for id in [&before, &during] {
        alice.seen_or_expect("delivered", |v| is(v, "delivered") && v["id"] == id.as_str()).await;
        let copies =
            bob.events_so_far().iter().filter(|v| is(v, "message") && v["id"] == id.as_str()).count();
        assert_eq!(copies, 1, "{}", bob.report());
    }
    alice.logout().await;
    bob.logout().await;
    server.stop().await;
}
