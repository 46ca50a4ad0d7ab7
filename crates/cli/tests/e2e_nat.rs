//! NAT traversal end to end, in the network lab (`whatsap2p-netlab`): the real server and clients run
//! inside network namespaces, the directory and its relay on a public address, clients behind Linux
//! NAT routers. Skipped, saying why, on a machine that cannot host a lab (not root).
//!
//! - cone ↔ cone: a punched QUIC path; texts both ways and a 20 MiB photo.
//! - symmetric ↔ symmetric, cone ↔ symmetric: through the relay, with the reason, and a capture on
//!   the relay's host holds none of the plaintext.
//! - two clients behind one router: direct on the LAN.
//! - upgrade: a pair starts relayed (UDP blocked), UDP is let through, and the link moves to a direct
//!   path while numbered messages flow: each arrives once, in order.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{is, Client, Lines, CLIENT_BIN, SERVER_BIN, TIMEOUT};
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
    _dir: TempDir,
}

impl LabServer {
    async fn start(lab: &mut Lab) -> LabServer {
        let host = lab.public_host("dir").expect("public host");
        let dir = common::tempdir();
        let mut child = host
            .tokio_command(SERVER_BIN)
            .args(["--bind", &host.ip.to_string(), "--data-dir"])
            .arg(dir.path())
            .arg(PORT.to_string())
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
        if let Err(e) = stdout.wait_for(TIMEOUT, |l| l == "[+] Server online").await {
            panic!("server not online: {e}\n{}", stderr.tail(30));
        }
        LabServer { _child: child, host, stdout, _dir: dir }
    }
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

/// Waits for `c`'s `path` event about `peer`.
async fn path_to(c: &mut Client, peer: &str) -> Value {
    let peer = peer.to_owned();
    c.expect_within(LINK_WAIT, "path", move |v| is(v, "path") && v["number"] == peer.as_str()).await
}

/// Sends `text` and waits until it is delivered.
async fn deliver(from: &mut Client, to: &mut Client, text: &str) {
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
    async fn start(server: &LabServer) -> Capture {
        let dir = common::tempdir();
        let file = dir.path().join("relay.pcap");
        let mut child = server
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
    assert_eq!((path["path"].as_str(), path["transport"].as_str()), (Some("direct"), Some("udp")), "{path}");
    assert_eq!(path["lan"], false, "{path}");
    let theirs = path_to(&mut bob, "111").await;
    assert_eq!(
        (theirs["path"].as_str(), theirs["transport"].as_str()),
        (Some("direct"), Some("udp")),
        "{theirs}"
    );
    deliver(&mut bob, &mut alice, "and back").await;
    // A 20 MiB photo on the punched path.
    let dir = common::tempdir();
    let photo = dir.path().join("photo.jpg");
    let bytes = common::noise_bytes(7, 20 * 1024 * 1024);
    std::fs::write(&photo, &bytes).expect("writing the photo");
    alice.send(json!({"cmd": "send_file", "to": "222", "path": photo})).await;
    let got = bob.expect_within(Duration::from_secs(60), "file_received", |v| is(v, "file_received")).await;
    assert_eq!(got["size"], bytes.len() as u64, "{got}");
    assert_eq!(got["blake3"], blake3::hash(&bytes).to_hex().as_str(), "{got}");
    alice.send(json!({"cmd": "contacts"})).await;
    let _ = alice.reply("contacts", |v| is(v, "contacts")).await;
}

/// Two clients behind NATs of these kinds reach each other through the relay, which sees no
/// plaintext; `reason` is what the `path` event says.
async fn relayed(n1: Nat, n2: Nat, reason: &str) {
    let Some(mut lab) = lab() else { return };
    let server = LabServer::start(&mut lab).await;
    let mut r1 = lab.router("net1", n1).expect("router");
    let mut r2 = lab.router("net2", n2).expect("router");
    let (h1, h2) =
        (lab.host_behind(&mut r1, "alice").expect("host"), lab.host_behind(&mut r2, "bob").expect("host"));
    let profiles = common::tempdir();
    let mut alice = client(&h1, &server, "111", &profiles).await;
    let mut bob = client(&h2, &server, "222", &profiles).await;
    let capture = Capture::start(&server).await;
    let secret = "the plaintext nobody on the way may read";
    deliver(&mut alice, &mut bob, secret).await;
    let path = path_to(&mut alice, "222").await;
    assert_eq!((path["path"].as_str(), path["reason"].as_str()), (Some("relayed"), Some(reason)), "{path}");
    let theirs = path_to(&mut bob, "111").await;
    assert_eq!(theirs["path"], "relayed", "{theirs}");
    let reply = "an answer just as secret";
    deliver(&mut bob, &mut alice, reply).await;
    let seen = capture.bytes().await;
    assert!(seen.len() > 1000, "the capture holds {} bytes: nothing went through the relay?", seen.len());
    assert!(
        !contains(&seen, secret.as_bytes()) && !contains(&seen, reply.as_bytes()),
        "plaintext on the relay"
    );
    // The server logs the pair without content.
    let _ = server.stdout.snapshot();
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
    assert_eq!(path["path"], "relayed", "{path}");
    r1.allow_udp().expect("allowing UDP");
    // Numbered messages flow while the link looks for a direct path, and a while after.
    let mut sent = 1;
    let mut moved_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while moved_at.is_none_or(|m| sent < m + 20) {
        assert!(tokio::time::Instant::now() < deadline, "never moved to a direct path\n{}", alice.report());
        alice.send(json!({"cmd": "send", "to": "222", "text": format!("m{sent}")})).await;
        sent += 1;
        let moved = tokio::time::timeout(Duration::from_millis(100), async {
            loop {
                let v = alice
                    .expect_within(Duration::from_secs(3600), "path", |v| is(v, "path") || is(v, "error"))
                    .await;
                if is(&v, "path") && v["path"] == "direct" {
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
    // Every message reaches bob once, in order.
    let mut got = Vec::new();
    while got.len() < sent {
        let v = bob.expect_within(Duration::from_secs(30), "message", |v| is(v, "message")).await;
        got.push(v["text"].as_str().expect("text").to_owned());
    }
    let want: Vec<String> = (0..sent).map(|k| format!("m{k}")).collect();
    assert_eq!(got, want);
    // And nothing more comes.
    let before = bob.events_so_far().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let extra: Vec<Value> =
        bob.events_so_far().split_off(before).into_iter().filter(|v| is(v, "message")).collect();
    assert!(extra.is_empty(), "duplicates: {extra:?}");
}
