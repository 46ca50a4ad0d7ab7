//! Reaching clients behind NATs, the directory's side (`docs/protocol.md` section 8): probe tokens
//! and UDP probes, announced candidates, introductions and relay offers, on one instance and across
//! instances sharing a real `redis-server`.
//!
//! Instances run in this process on port 0 (TCP and UDP on the same port number); clients are raw
//! protocol sessions and raw UDP sockets on loopback.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Account, Instance, Session, TIMEOUT};
use tokio::net::UdpSocket;
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::directory::ServerToClient;
use whatsap2p_proto::nat::{decode_datagram, encode_datagram, Datagram, ProbeToken};

/// The token and UDP port a registered session was told.
fn reachability(s: &Session) -> (ProbeToken, Option<u16>, Option<SocketAddr>) {
    match &s.reachability {
        Some(ServerToClient::Reachability { token, udp_port, relay }) => (*token, *udp_port, *relay),
        other => panic!("no Reachability after the first registration: {other:?}"),
    }
}

/// Sends a probe with `token` and `nonce` from `socket` to `to`.
async fn probe(socket: &UdpSocket, to: SocketAddr, token: ProbeToken, nonce: u64) {
    let bytes = encode_datagram(&Datagram::ProbeRequest { token, nonce }).expect("encode");
    socket.send_to(&bytes, to).await.expect("send");
}

/// The next datagram `socket` receives, decoded, with its source.
async fn reply(socket: &UdpSocket) -> (Datagram, SocketAddr) {
    let mut buf = [0u8; 256];
    let (n, from) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("a reply in time")
        .expect("recv");
    (decode_datagram(&buf[..n]).expect("a datagram of ours"), from)
}

/// `count` of the metric line starting with `name`, 0 when absent.
fn metric(instance: &Instance, name: &str) -> u64 {
    let page = instance.metrics.render();
    page.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn given_a_registered_session_then_it_is_told_its_token_and_a_probe_is_answered_with_its_address() {
    let key = StaticKeypair::generate().expect("key");
    let dir = Instance::memory(&key).await;
    let a = Account::new("5550001");
    let mut s = Session::online(dir.addr, &a, 4001).await;
    s.heartbeat().await;
    let (token, udp_port, relay) = reachability(&s);
    assert_eq!(udp_port, Some(dir.addr.port()), "the same port number as TCP");
    assert_eq!(relay, None, "no relay configured");
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    probe(&socket, dir.udp, token, 77).await;
    let (answer, from) = reply(&socket).await;
    assert_eq!(from, dir.udp);
    assert_eq!(answer, Datagram::ProbeReply { nonce: 77, observed: socket.local_addr().expect("addr") });
    assert_eq!(metric(&dir, "whatsap2p_probes_total{outcome=\"Answered\"}"), 1);
    dir.stop().await;
}

#[tokio::test]
async fn given_a_forged_token_or_one_of_an_ended_session_then_no_answer_and_counted() {
    let key = StaticKeypair::generate().expect("key");
    let dir = Instance::memory(&key).await;
    let (a, b) = (Account::new("5550001"), Account::new("5550002"));
    let mut gone = Session::online(dir.addr, &a, 4001).await;
    gone.heartbeat().await;
    let (gone_token, ..) = reachability(&gone);
    gone.send(&whatsap2p_proto::directory::ClientToServer::Logout).await;
    assert_eq!(gone.closed().await, None);
    let mut live = Session::online(dir.addr, &b, 4002).await;
    live.heartbeat().await;
    let (token, ..) = reachability(&live);
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    // The session's end reaches the token map right after its goodbye: wait for it (bounded).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while metric(&dir, "whatsap2p_sessions ") > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    probe(&socket, dir.udp, [0x55; 16], 1).await;
    probe(&socket, dir.udp, gone_token, 2).await;
    let mut flipped = token;
    flipped[0] ^= 1;
    probe(&socket, dir.udp, flipped, 3).await;
    // Probes are answered in order: the first reply is the live token's, so none came before it.
    probe(&socket, dir.udp, token, 4).await;
    let (answer, _) = reply(&socket).await;
    assert!(matches!(answer, Datagram::ProbeReply { nonce: 4, .. }), "{answer:?}");
    assert_eq!(metric(&dir, "whatsap2p_probes_total{outcome=\"UnknownToken\"}"), 3);
    // Not a probe at all: a punch, QUIC, garbage.
    socket.send_to(&[0xc3, 0, 0, 0, 1], dir.udp).await.expect("send");
    probe(&socket, dir.udp, token, 5).await;
    assert!(matches!(reply(&socket).await.0, Datagram::ProbeReply { nonce: 5, .. }));
    assert_eq!(metric(&dir, "whatsap2p_probes_total{outcome=\"Ignored\"}"), 1);
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_instances_then_each_answers_only_the_probes_of_its_own_sessions() {
    let Some(redis) = common::Redis::start(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let (x, y) = (Instance::redis(&redis.url(), &key).await, Instance::redis(&redis.url(), &key).await);
    let mut s = Session::online(x.addr, &Account::new("5550001"), 4001).await;
    s.heartbeat().await;
    let (token, ..) = reachability(&s);
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    // The session lives on x: y knows no session with this token (though its own key made it).
    probe(&socket, y.udp, token, 1).await;
    probe(&socket, x.udp, token, 2).await;
    let (answer, from) = reply(&socket).await;
    assert_eq!((from, matches!(answer, Datagram::ProbeReply { nonce: 2, .. })), (x.udp, true), "{answer:?}");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while metric(&y, "whatsap2p_probes_total{outcome=\"UnknownToken\"}") < 1 {
        assert!(tokio::time::Instant::now() < deadline, "y never counted the probe");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    x.stop().await;
    y.stop().await;
}
