//! NAT traversal end to end, in the network lab (`whatsap2p-netlab`): the real server and clients run
//! inside network namespaces, the directory and its relay on a public address, clients behind Linux
//! NAT routers. Skipped, saying why, on a machine that cannot host a lab (not root).
//!
//! - cone ↔ cone: a punched QUIC path; texts both ways and a 20 MiB photo.
//! - symmetric ↔ symmetric, cone ↔ symmetric: through the relay, with the reason, and a capture on
//!   the relay's host holds none of the plaintext.
//! - a relay run alone (`--relay-only`, the directory's key file) that the directory points clients
//!   at (`--relay`): the same as the relay beside the directory.
//! - two clients behind one router: direct on the LAN.
//! - upgrade: a pair starts relayed (UDP blocked), UDP is let through, and the link moves to a direct
//!   path while numbered messages flow: each arrives once, in order.
//! - a peer without version 3 (outside the lab: on loopback) links over TCP as before.
//! - a peer that punches through, or reaches over the relay, with the wrong key for its number:
//!   refused, said and logged; the real contact still gets through.
//!
//! Every relayed pair is logged by the relay when it ends, with both numbers, the bytes each way,
//! each side's address and the duration, and never content: checked for the relay beside the
//! directory and for one run alone.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{is, Client, Lines, Server, CLIENT_BIN, SERVER_BIN, TIMEOUT};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::process::Child;
use whatsap2p_netlab::{Host, Lab, LabError, Nat};

/// The directory's port in the lab (its relay listens on the next one).
const PORT: u16 = 7000;
/// How long a relayed or punched first link may take (relay pairing, QUIC retransmissions).
const LINK_WAIT: Duration = Duration::from_secs(20);

/// The lab, or `None` (and a line saying why) on a machine that cannot host one.
fn lab() -> Option<Lab> {
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(LabError::Unavailable(why)) => {
            eprintln!("SKIPPED: {why}");
            None
        }
        Err(e) => panic!("building the lab: {e}"),
    }
}

/// The directory (with its relay) on a public host.
struct LabServer {
    _child: Child,
    host: Host,
    stdout: Lines,
    _dir: Option<TempDir>,
}

impl LabServer {
    /// The directory with its relay beside it.
    async fn start(lab: &mut Lab) -> LabServer {
        let host = lab.public_host("dir").expect("public host");
        LabServer::spawn(host, PORT, &[], "[+] Server online").await
    }

    /// `whatsap2p-server PORT` with `extra` on `host`, once it printed `ready`.
    async fn spawn(host: Host, port: u16, extra: &[&str], ready: &str) -> LabServer {
        let dir = common::tempdir();
        let mut server = LabServer::spawn_in(host, dir.path(), port, extra, ready).await;
        server._dir = Some(dir);
        server
    }

    /// The same with its data in `data`, which the caller keeps (to start it again on the same).
    async fn spawn_in(
        host: Host,
        data: &std::path::Path,
        port: u16,
        extra: &[&str],
        ready: &str,
    ) -> LabServer {
        let mut child = host
            .tokio_command(SERVER_BIN)
            .args(["--bind", &host.ip.to_string(), "--data-dir"])
            .arg(data)
            .args(extra)
            .arg(port.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning the server");
        let stdout = Lines::collect(child.stdout.take().expect("stdout"));
        let stderr = Lines::collect(child.stderr.take().expect("stderr"));
        if let Err(e) = stdout.wait_for(TIMEOUT, |l| l.starts_with(ready)).await {
            panic!("server not online: {e}\n{}", stderr.tail(30));
        }
        LabServer { _child: child, host, stdout, _dir: None }
    }
}

impl LabServer {
    /// Kills it and waits until it is gone, so that its port is free for the next one.
    async fn kill(mut self) {
        let _ = self._child.kill().await;
    }
}

/// The directory (with its relay) on `host`, with its data in `data` and the server key in `key`.
async fn directory_on(host: &Host, data: &std::path::Path, key: &str) -> LabServer {
    LabServer::spawn_in(host.clone(), data, PORT, &["--key-file", key], "[+] Server online").await
}

/// A JSON-lines client inside `host`, online.
async fn client(host: &Host, server: &LabServer, number: &str, profiles: &TempDir) -> Client {
    let profile = profiles.path().join(number);
    let mut command = host.tokio_command(CLIENT_BIN);
    command.arg("--json").arg("--profile").arg(&profile).args(["--number", number]);
    command.arg(server.host.ip.to_string()).arg(PORT.to_string());
    let mut c = Client::from_command(command, number);
    c.online().await;
    c
}

/// `to` takes `from`'s texts as messages (a stranger's would wait as a request): it adds `from`
/// once, when `from` is already online (added earlier, its presence could still say offline).
async fn knows(to: &mut Client, from: &str) {
    let known = to.events_so_far().iter().any(|v| is(v, "contact_added") && v["number"] == from);
    if !known {
        to.add_contact(from).await;
    }
}

/// Waits for `c`'s `path` event about `peer`.
async fn path_to(c: &mut Client, peer: &str) -> Value {
    let peer = peer.to_owned();
    c.seen_or_expect("path", move |v| is(v, "path") && v["number"] == peer.as_str()).await
}

/// Sends `text` and waits until it is delivered.
async fn deliver(from: &mut Client, to: &mut Client, text: &str) {
    knows(to, &from.number.clone()).await;
    from.send(json!({"cmd": "send", "to": to.number, "text": text})).await;
    let to_number = to.number.clone();
    let sent =
        from.expect_within(LINK_WAIT, "sent", |v| is(v, "sent") || is(v, "queued") || is(v, "error")).await;
    if !is(&sent, "sent") {
        let report = from.report();
        panic!("{} could not send to {to_number}: {sent}\n{report}", from.number);
    }
    let id = sent["id"].as_str().expect("id").to_owned();
    let from_number = from.number.clone();
    let t = text.to_owned();
    to.expect_within(LINK_WAIT, "message", move |v| {
        is(v, "message") && v["from"] == from_number.as_str() && v["text"] == t.as_str()
    })
    .await;
    let to_id = id.clone();
    from.expect_within(LINK_WAIT, "delivered", move |v| is(v, "delivered") && v["id"] == to_id.as_str())
        .await;
}

/// A capture of TCP on the relay's port, on the relay's host.
struct Capture {
    child: Child,
    file: PathBuf,
    _dir: TempDir,
}

impl Capture {
    async fn start(relay: &LabServer) -> Capture {
        let dir = common::tempdir();
        let file = dir.path().join("relay.pcap");
        let mut child = relay
            .host
            .tokio_command("tcpdump")
            .args(["-i", "any", "-U", "-s", "0", "-w"])
            .arg(&file)
            .arg(format!("tcp port {}", PORT + 1))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning tcpdump");
        let stderr = Lines::collect(child.stderr.take().expect("stderr"));
        stderr.wait_for(TIMEOUT, |l| l.contains("listening on")).await.expect("tcpdump listening");
        Capture { child, file, _dir: dir }
    }

    /// Stops the capture and returns what it holds.
    async fn bytes(mut self) -> Vec<u8> {
        if let Some(pid) = self.child.id() {
            common::signal(pid, "INT");
        }
        let _ = tokio::time::timeout(TIMEOUT, self.child.wait()).await;
        std::fs::read(&self.file).expect("reading the capture")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `c` accepts files from `number`.
async fn add_contact(c: &mut Client, number: &str) {
    c.send(json!({"cmd": "add_contact", "number": number})).await;
    let v = c.reply("contact_added", |v| is(v, "contact_added")).await;
    assert!(is(&v, "contact_added"), "{}: add_contact {number} failed: {v}", c.number);
}

/// Sends a file of `size` noise bytes from `from` to `to` and waits until it arrives intact;
/// returns its bytes.
async fn deliver_file(from: &mut Client, to: &mut Client, size: usize) -> Vec<u8> {
    add_contact(to, &from.number.clone()).await;
    let dir = common::tempdir();
    let photo = dir.path().join("photo.jpg");
    let bytes = common::noise_bytes(7, size);
    std::fs::write(&photo, &bytes).expect("writing the photo");
    from.send(json!({"cmd": "send_file", "to": to.number, "path": photo})).await;
    let got = to.expect_within(Duration::from_secs(60), "file_received", |v| is(v, "file_received")).await;
    assert_eq!(got["size"], bytes.len() as u64, "{got}");
    assert_eq!(got["blake3"], blake3::hash(&bytes).to_hex().as_str(), "{got}");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_cone_nats_then_the_link_is_punched_over_udp_and_carries_texts_and_a_photo() {
    let Some(mut lab) = lab() else { return };
    let server = LabServer::start(&mut lab).await;
    let mut r1 = lab.router("home1", Nat::Cone).expect("router");
    let mut r2 = lab.router("home2", Nat::Cone).expect("router");
    let (h1, h2) =
        (lab.host_behind(&mut r1, "alice").expect("host"), lab.host_behind(&mut r2, "bob").expect("host"));
    let profiles = common::tempdir();
    let mut alice = client(&h1, &server, "111", &profiles).await;
    let mut bob = client(&h2, &server, "222", &profiles).await;
    assert_eq!(alice.online["nat"], "cone", "{}", alice.online);
    deliver(&mut alice, &mut bob, "hello through two NATs").await;
    let path = path_to(&mut alice, "222").await;
    if path["path"] != "direct" {
        panic!("{path}\n{}\n{}\nserver:\n{}", alice.report(), bob.report(), server.stdout.tail(40));
    }
    assert_eq!((path["path"].as_str(), path["transport"].as_str()), (Some("direct"), Some("udp")), "{path}");
    assert_eq!(path["lan"], false, "{path}");
    let theirs = path_to(&mut bob, "111").await;
    assert_eq!(
        (theirs["path"].as_str(), theirs["transport"].as_str()),
        (Some("direct"), Some("udp")),
        "{theirs}"
    );
    deliver(&mut bob, &mut alice, "and back").await;
    deliver_file(&mut alice, &mut bob, 20 * 1024 * 1024).await;
    // Still the one punched path, and the directory never offered the relay: it carried nothing.
    bob.send(json!({"cmd": "contacts"})).await;
    let contacts = bob.reply("contacts", |v| is(v, "contacts")).await;
    let entry =
        contacts["contacts"].as_array().and_then(|a| a.iter().find(|c| c["number"] == "111")).cloned();
    let entry = entry.unwrap_or_else(|| panic!("111 not in {contacts}"));
    assert_eq!(
        (entry["path"].as_str(), entry["transport"].as_str()),
        (Some("direct"), Some("udp")),
        "{entry}"
    );
    let offers = server.stdout.count(|l| l.contains("Relay offered"));
    assert_eq!(offers, 0, "the relay was offered:\n{}", server.stdout.tail(30));
}

/// Two clients behind NATs of these kinds reach each other through the relay, which sees no
/// plaintext; `reason` is what the `path` event says.
async fn relayed(n1: Nat, n2: Nat, reason: &str) {
    let Some(mut lab) = lab() else { return };
    let server = LabServer::start(&mut lab).await;
    relayed_in(lab, &server, &server, n1, n2, reason).await;
}

/// [`relayed`] in `lab`, with the directory `server` and the relay on `relay`'s host.
async fn relayed_in(mut lab: Lab, server: &LabServer, relay: &LabServer, n1: Nat, n2: Nat, reason: &str) {
    let mut r1 = lab.router("net1", n1).expect("router");
    let mut r2 = lab.router("net2", n2).expect("router");
    let (h1, h2) =
        (lab.host_behind(&mut r1, "alice").expect("host"), lab.host_behind(&mut r2, "bob").expect("host"));
    let profiles = common::tempdir();
    let mut alice = client(&h1, server, "111", &profiles).await;
    let mut bob = client(&h2, server, "222", &profiles).await;
    let capture = Capture::start(relay).await;
    let secret = "the plaintext nobody on the way may read";
    deliver(&mut alice, &mut bob, secret).await;
    let path = path_to(&mut alice, "222").await;
    assert_eq!((path["path"].as_str(), path["reason"].as_str()), (Some("relayed"), Some(reason)), "{path}");
    let theirs = path_to(&mut bob, "111").await;
    assert_eq!(
        (theirs["path"].as_str(), theirs["reason"].as_str()),
        (Some("relayed"), Some(reason)),
        "{theirs}"
    );
    let reply = "an answer just as secret";
    deliver(&mut bob, &mut alice, reply).await;
    let file = deliver_file(&mut alice, &mut bob, 1024 * 1024).await;
    let seen = capture.bytes().await;
    assert!(
        seen.len() > file.len(),
        "the capture holds {} bytes: the file did not go through the relay?",
        seen.len()
    );
    assert!(
        !contains(&seen, secret.as_bytes()) && !contains(&seen, reply.as_bytes()),
        "plaintext on the relay"
    );
    for at in [0, file.len() / 2, file.len() - 64] {
        assert!(!contains(&seen, &file[at..at + 64]), "the file's bytes at {at} in clear on the relay");
    }
    // The pair ends when bob leaves: the relay logs it with both numbers, the bytes each way (the
    // file's among them), each side's address (its router's) and the duration; never content.
    bob.logout().await;
    let pair = |l: &str| l.contains("Relayed 111 and 222") || l.contains("Relayed 222 and 111");
    let line = relay
        .stdout
        .wait_for(TIMEOUT, pair)
        .await
        .unwrap_or_else(|e| panic!("no line for the relayed pair: {e}\n{}", relay.stdout.tail(30)));
    let bytes: Vec<u64> = line
        .split([' ', ':', ','])
        .zip(line.split([' ', ':', ',']).skip(1))
        .filter(|(_, next)| *next == "bytes" || *next == "from")
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    assert!(bytes.len() == 2 && bytes.iter().any(|b| *b > file.len() as u64), "{line}");
    for router in [&r1, &r2] {
        assert!(line.contains(&format!("({}/", router.public_ip)), "{line}");
    }
    assert!(line.contains("closed by the clients"), "{line}");
    assert!(!line.contains(secret) && !line.contains(reply), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_symmetric_nats_then_the_link_is_relayed_and_the_relay_sees_only_ciphertext() {
    relayed(Nat::Symmetric, Nat::Symmetric, "both_symmetric").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_cone_and_a_symmetric_nat_then_the_link_is_relayed() {
    relayed(Nat::Cone, Nat::Symmetric, "symmetric").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_relay_run_alone_with_the_directory_key_then_the_directory_sends_clients_there() {
    let Some(mut lab) = lab() else { return };
    let keys = common::tempdir();
    let key = keys.path().join("server.key");
    let key = key.to_str().expect("utf-8 path");
    let relay_host = lab.public_host("relay").expect("public host");
    let relay_at = format!("{}:{}", relay_host.ip, PORT + 1);
    let alone = ["--relay-only", "--key-file", key];
    let relay = LabServer::spawn(relay_host, PORT + 1, &alone, "[+] Relay listening on").await;
    let host = lab.public_host("dir").expect("public host");
    let pointing = ["--relay", &relay_at, "--key-file", key];
    let server = LabServer::spawn(host, PORT, &pointing, "[+] Server online").await;
    relayed_in(lab, &server, &relay, Nat::Symmetric, Nat::Symmetric, "both_symmetric").await;
    assert_eq!(server.stdout.count(|l| l.starts_with("[+] Relay listening")), 0, "a second relay ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_clients_behind_one_router_then_they_link_directly_on_the_lan() {
    let Some(mut lab) = lab() else { return };
    let server = LabServer::start(&mut lab).await;
    let mut r = lab.router("home", Nat::Cone).expect("router");
    let (h1, h2) =
        (lab.host_behind(&mut r, "alice").expect("host"), lab.host_behind(&mut r, "bob").expect("host"));
    let profiles = common::tempdir();
    let mut alice = client(&h1, &server, "111", &profiles).await;
    let mut bob = client(&h2, &server, "222", &profiles).await;
    deliver(&mut alice, &mut bob, "next door").await;
    let path = path_to(&mut alice, "222").await;
    assert_eq!((path["path"].as_str(), path["lan"].as_bool()), (Some("direct"), Some(true)), "{path}");
    // Linked at bob's LAN address, not hairpinned through the router's public one.
    let line = alice.stderr.wait_for(TIMEOUT, |l| l.contains("linked to 222 at")).await.expect("linked line");
    assert!(line.contains(&format!("at {}:", h2.ip)), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_relayed_link_when_udp_opens_then_it_moves_to_direct_without_losing_or_reordering() {
    let Some(mut lab) = lab() else { return };
    let server = LabServer::start(&mut lab).await;
    let mut r1 = lab.router("home1", Nat::Cone).expect("router");
    let mut r2 = lab.router("home2", Nat::Cone).expect("router");
    r1.block_udp().expect("blocking UDP");
    let (h1, h2) =
        (lab.host_behind(&mut r1, "alice").expect("host"), lab.host_behind(&mut r2, "bob").expect("host"));
    let profiles = common::tempdir();
    let mut alice = client(&h1, &server, "111", &profiles).await;
    let mut bob = client(&h2, &server, "222", &profiles).await;
    assert_eq!(alice.online["nat"], "no_udp", "{}", alice.online);
    deliver(&mut alice, &mut bob, "m0").await;
    let path = path_to(&mut alice, "222").await;
    assert_eq!(
        (path["path"].as_str(), path["reason"].as_str()),
        (Some("relayed"), Some("udp_blocked")),
        "{path}"
    );
    r1.allow_udp().expect("allowing UDP");
    // Numbered messages flow while the link looks for a direct path, and a while after.
    let mut sent = 1;
    let mut moved_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while moved_at.is_none_or(|m| sent < m + 20) {
        if tokio::time::Instant::now() > deadline {
            panic!("never moved to a direct path\n{}\n{}", alice.report(), bob.report());
        }
        alice.send(json!({"cmd": "send", "to": "222", "text": format!("m{sent}")})).await;
        sent += 1;
        let moved = tokio::time::timeout(Duration::from_millis(100), async {
            loop {
                let v = alice.expect_within(Duration::from_secs(3600), "path", |v| is(v, "path")).await;
                if v["path"] == "direct" {
                    return v;
                }
            }
        })
        .await;
        if let (Ok(v), None) = (moved, moved_at) {
            assert_eq!(v["transport"], "udp", "{v}");
            moved_at = Some(sent);
        }
    }
    // Every message reaches bob once, in order (m0 was read by `deliver` already).
    let texts = |bob: &mut Client| -> Vec<String> {
        let events = bob.events_so_far();
        events
            .iter()
            .filter(|v| is(v, "message"))
            .filter_map(|v| v["text"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while texts(&mut bob).len() < sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And nothing more comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let want: Vec<String> = (0..sent).map(|k| format!("m{k}")).collect();
    assert_eq!(texts(&mut bob), want, "\n{}", alice.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_peer_without_version_3_then_it_links_over_tcp_as_before() {
    let server = Server::start(&[]).await;
    let profiles = common::tempdir();
    let mut new = Client::start_with(server.port, "111", &profiles.path().join("111"), &[]).await;
    let old_args = ["--protocol-versions", "2-2"];
    let mut old = Client::start_with(server.port, "222", &profiles.path().join("222"), &old_args).await;
    assert!(old.online.get("nat").is_none(), "a version 2 session measures nothing: {}", old.online);
    deliver(&mut new, &mut old, "to the old one").await;
    deliver(&mut old, &mut new, "and from it").await;
    let path = path_to(&mut new, "222").await;
    assert_eq!((path["path"].as_str(), path["transport"].as_str()), (Some("direct"), Some("tcp")), "{path}");
    assert_eq!(server.stdout.count(|l| l.contains("Introduced") || l.contains("Relay offered")), 0);
}

/// Bad input: a peer that punches through (or reaches over the relay) and then fails the identity
/// proof. The directory lost its bindings (it starts again on a fresh data dir with the same key:
/// to a client this is a directory that lists another key for a number), so a new key takes 111
/// and reaches bob, who pinned 111's first key: from behind `nat`, the way the server's log line
/// `through` says (an introduction and a punched path, or a relay offer). Bob refuses the link,
/// says why and logs it; once the directory is itself again, the real 111 reaches bob as before.
async fn impostor(nat: Nat, through: &str) {
    let Some(mut lab) = lab() else { return };
    let keys = common::tempdir();
    let key = keys.path().join("server.key");
    let key = key.to_str().expect("utf-8 path");
    let (bindings, lost) = (common::tempdir(), common::tempdir());
    let dir_host = lab.public_host("dir").expect("public host");
    let mut r1 = lab.router("home1", Nat::Cone).expect("router");
    let mut r2 = lab.router("home2", Nat::Cone).expect("router");
    let mut r3 = lab.router("home3", nat).expect("router");
    let (h1, h2, h3) = (
        lab.host_behind(&mut r1, "alice").expect("host"),
        lab.host_behind(&mut r2, "bob").expect("host"),
        lab.host_behind(&mut r3, "mallory").expect("host"),
    );
    let (profiles, mallory_profiles) = (common::tempdir(), common::tempdir());

    let server = directory_on(&dir_host, bindings.path(), key).await;
    let mut alice = client(&h1, &server, "111", &profiles).await;
    let mut bob = client(&h2, &server, "222", &profiles).await;
    deliver(&mut alice, &mut bob, "hello, it is me").await;
    let real_key = alice.key();
    alice.logout().await;
    bob.logout().await;
    server.kill().await;

    let server = directory_on(&dir_host, lost.path(), key).await;
    let mut bob = client(&h2, &server, "222", &profiles).await;
    let mut mallory = client(&h3, &server, "111", &mallory_profiles).await;
    assert_ne!(mallory.key(), real_key);
    mallory.send(json!({"cmd": "send", "to": "222", "text": "it is me, really"})).await;
    let w = bob.expect_within(LINK_WAIT, "warning", |v| is(v, "warning") || is(v, "message")).await;
    assert!(is(&w, "warning"), "bob accepted a new key for 111: {w}");
    assert!(w["message"].as_str().is_some_and(|m| m.contains("KEY CHANGED") && m.contains("111")), "{w}");
    bob.stderr.wait_for(TIMEOUT, |l| l.contains("KEY CHANGED")).await.expect("bob logs the refusal");
    // It came the way it should: behind two cone NATs only a punched path reaches bob from
    // outside; behind a symmetric one only the relay does.
    server.stdout.wait_for(TIMEOUT, |l| l.contains(through)).await.expect("introduced or relayed");
    // Barrier on bob's stdout: the text was never shown, and bob is still online and well.
    bob.send(json!({"cmd": "contacts"})).await;
    bob.reply("contacts", |v| is(v, "contacts")).await;
    let shown = bob.events_so_far().into_iter().find(|v| is(v, "message") || is(v, "request"));
    assert!(shown.is_none(), "bob showed the impostor's text: {shown:?}");
    mallory.logout().await;
    bob.logout().await;
    server.kill().await;

    let server = directory_on(&dir_host, bindings.path(), key).await;
    let mut alice = client(&h1, &server, "111", &profiles).await;
    let mut bob = client(&h2, &server, "222", &profiles).await;
    deliver(&mut alice, &mut bob, "still me").await;
    let path = path_to(&mut alice, "222").await;
    assert_eq!((path["path"].as_str(), path["transport"].as_str()), (Some("direct"), Some("udp")), "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_peer_that_punches_through_with_the_wrong_key_then_refused_and_the_real_contact_still_gets_through(
) {
    impostor(Nat::Cone, "Introduced 111 to 222").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_peer_that_reaches_over_the_relay_with_the_wrong_key_then_refused_and_the_real_contact_still_gets_through(
) {
    impostor(Nat::Symmetric, "Relay offered to 111 and 222").await;
}
