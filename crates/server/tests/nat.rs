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
use whatsap2p_proto::directory::{ClientToServer, ServerToClient};
use whatsap2p_proto::nat::{
    decode_datagram, encode_datagram, Candidate, Datagram, NatKind, ProbeToken, RelayReason, Source,
    Transport, MAX_CANDIDATES,
};
use whatsap2p_proto::WireNumber;
use whatsap2p_relay::RelayKeys;
use whatsap2p_server::Config;

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

/// A UDP candidate the client says it has.
fn local_udp(addr: &str) -> Candidate {
    Candidate { transport: Transport::Udp, addr: addr.parse().expect("addr"), source: Source::Local }
}

/// Probes from a socket of its own until the server saw it; returns the socket's address.
async fn probed(dir: &Instance, s: &Session) -> SocketAddr {
    let (token, ..) = reachability(s);
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    probe(&socket, dir.udp, token, 9).await;
    assert!(matches!(reply(&socket).await.0, Datagram::ProbeReply { nonce: 9, .. }));
    socket.local_addr().expect("addr")
}

/// The answer to request `req`.
async fn answer(s: &mut Session, req: u32) -> ServerToClient {
    s.expect("the answer", |m| match m {
        ServerToClient::Introduction { req: r, .. } | ServerToClient::Error { req: Some(r), .. } => *r == req,
        ServerToClient::RelayOffer { req: Some(r), .. } => *r == req,
        _ => false,
    })
    .await
}

#[tokio::test]
async fn given_two_v3_sessions_then_an_introduction_gives_each_the_others_candidates_at_once() {
    let key = StaticKeypair::generate().expect("key");
    let dir = Instance::memory(&key).await;
    let (a, b) = (Account::new("5550001"), Account::new("5550002"));
    let mut sa = Session::online(dir.addr, &a, 4001).await;
    let mut sb = Session::online(dir.addr, &b, 4002).await;
    let (ua, ub) = (probed(&dir, &sa).await, probed(&dir, &sb).await);
    let lan = local_udp("10.0.0.2:5000");
    sb.send(&ClientToServer::Announce { candidates: vec![lan], nat: NatKind::Cone }).await;
    sb.heartbeat().await;
    sa.send(&ClientToServer::Introduce { req: 1, number: (&b.number).into() }).await;
    let observed = |addr, transport| Candidate { transport, addr, source: Source::Observed };
    match answer(&mut sa, 1).await {
        ServerToClient::Introduction { number, candidates, nat, .. } => {
            assert_eq!((number, nat), (b.number.clone(), NatKind::Cone));
            let tcp = SocketAddr::from(([127, 0, 0, 1], 4002));
            assert_eq!(candidates, vec![observed(ub, Transport::Udp), observed(tcp, Transport::Tcp), lan]);
        }
        other => panic!("{other:?}"),
    }
    let pushed = sb.expect("Introduced", |m| matches!(m, ServerToClient::Introduced { .. })).await;
    match pushed {
        ServerToClient::Introduced { from, candidates, nat } => {
            assert_eq!((from, nat), (a.number.clone(), NatKind::Unmeasured));
            assert!(candidates.contains(&observed(ua, Transport::Udp)), "{candidates:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(metric(&dir, "whatsap2p_meetings_total{result=\"Introduced\"}"), 1);
    dir.stop().await;
}

#[tokio::test]
async fn given_bad_announcements_then_refused_with_an_error_and_the_session_stays() {
    let key = StaticKeypair::generate().expect("key");
    let dir = Instance::memory(&key).await;
    let (a, b) = (Account::new("5550001"), Account::new("5550002"));
    let mut sa = Session::online(dir.addr, &a, 4001).await;
    let mut sb = Session::online(dir.addr, &b, 4002).await;
    let too_many: Vec<Candidate> =
        (0..=MAX_CANDIDATES as u16).map(|i| local_udp(&format!("10.0.0.2:{}", 5000 + i))).collect();
    sa.send(&ClientToServer::Announce { candidates: too_many, nat: NatKind::Cone }).await;
    let e = sa.expect("an error", |m| matches!(m, ServerToClient::Error { req: None, .. })).await;
    assert!(format!("{e:?}").contains("at most 8"), "{e:?}");
    // A client cannot say the directory observed it anywhere.
    let claimed = Candidate { source: Source::Observed, ..local_udp("192.0.2.1:9") };
    sa.send(&ClientToServer::Announce { candidates: vec![claimed], nat: NatKind::Cone }).await;
    sa.expect("an error", |m| matches!(m, ServerToClient::Error { req: None, .. })).await;
    // Nor point peers at nothing, or at everyone.
    for nowhere in ["0.0.0.0:5000", "10.0.0.2:0", "224.0.0.1:5000"] {
        sa.send(&ClientToServer::Announce { candidates: vec![local_udp(nowhere)], nat: NatKind::Cone }).await;
        sa.expect(nowhere, |m| matches!(m, ServerToClient::Error { req: None, .. })).await;
    }
    // Ten thousand: more than a frame holds; the link refuses to send it, and nobody is hurt.
    let flood: Vec<Candidate> = (0..10_000u32)
        .map(|i| local_udp(&format!("10.{}.{}.{}:5000", i >> 16, (i >> 8) & 0xff, i & 0xff)))
        .collect();
    let refused = sa.try_send(&ClientToServer::Announce { candidates: flood, nat: NatKind::Cone }).await;
    assert!(refused.is_err(), "10 000 candidates went out in one frame");
    // The other session was never told any of it.
    sb.send(&ClientToServer::Introduce { req: 1, number: (&a.number).into() }).await;
    match answer(&mut sb, 1).await {
        ServerToClient::Introduction { candidates, nat, .. } => {
            assert_eq!(nat, NatKind::Unmeasured);
            assert!(candidates.iter().all(|c| c.source == Source::Observed), "{candidates:?}");
        }
        other => panic!("{other:?}"),
    }
    sa.heartbeat().await;
    dir.stop().await;
}

#[tokio::test]
async fn given_thousands_of_candidates_in_one_frame_then_refused_and_everyone_else_unaffected() {
    let key = StaticKeypair::generate().expect("key");
    let dir = Instance::memory(&key).await;
    let (a, b, c) = (Account::new("5550001"), Account::new("5550002"), Account::new("5550003"));
    let mut sa = Session::online(dir.addr, &a, 4001).await;
    let mut sb = Session::online(dir.addr, &b, 4002).await;
    let mut sc = Session::online(dir.addr, &c, 4003).await;
    // As many as a frame holds: decoded (the frame bounds it), then refused; the session stays.
    let many: Vec<Candidate> =
        (0..6_000u32).map(|i| local_udp(&format!("10.0.{}.{}:5000", i >> 8, i & 0xff))).collect();
    let many = ClientToServer::Announce { candidates: many, nat: NatKind::Cone };
    assert!(whatsap2p_proto::encode(&many).expect("encode").len() < 65_000, "it fits in one frame");
    sa.send(&many).await;
    let e = sa.expect("an error", |m| matches!(m, ServerToClient::Error { req: None, .. })).await;
    assert!(format!("{e:?}").contains("not 6000"), "{e:?}");
    sa.heartbeat().await;
    // A frame that says 10 000 and holds one: malformed, the session is dropped (nothing is
    // allocated for what the count claims).
    let one = ClientToServer::Announce { candidates: vec![local_udp("10.0.0.2:5000")], nat: NatKind::Cone };
    let mut bytes = whatsap2p_proto::encode(&one).expect("encode");
    assert_eq!(&bytes[..2], [5, 1], "kind 5, then the count");
    bytes.splice(1..2, [0x90, 0x4e]); // 10 000 as a varint
    sb.send_raw(&bytes).await;
    assert_eq!(sb.closed().await, None, "the session was dropped without a word");
    // Nobody else noticed: the first session still meets the third, with nothing announced.
    sa.send(&ClientToServer::Introduce { req: 1, number: (&c.number).into() }).await;
    assert!(matches!(answer(&mut sa, 1).await, ServerToClient::Introduction { .. }));
    sc.expect("introduced", |m| matches!(m, ServerToClient::Introduced { .. })).await;
    dir.stop().await;
}

#[tokio::test]
async fn given_no_v3_session_to_meet_then_introduce_and_relay_request_get_errors_and_sessions_stay() {
    let key = StaticKeypair::generate().expect("key");
    let config = Config { relay: Some("0.0.0.0:7001".parse().expect("addr")), ..common::config() };
    let dir = Instance::memory_with(&key, config).await;
    let (a, old, gone) = (Account::new("5550001"), Account::new("5550002"), Account::new("5550003"));
    let mut sa = Session::online(dir.addr, &a, 4001).await;
    let mut so = Session::connect_v2(dir.addr, &old).await;
    assert!(matches!(so.register(4002).await, ServerToClient::Registered { .. }));
    let asks = [
        (1, old.number.to_string()),
        (2, gone.number.to_string()),
        (3, a.number.to_string()),
        (4, "not a number".to_owned()),
    ];
    for (req, number) in &asks {
        sa.send(&ClientToServer::Introduce { req: *req, number: WireNumber::new(number.as_str()) }).await;
        let reason = RelayReason::PunchTimedOut;
        sa.send(&ClientToServer::RelayRequest {
            req: req + 10,
            number: WireNumber::new(number.as_str()),
            reason,
        })
        .await;
    }
    for (req, number) in &asks {
        for req in [*req, req + 10] {
            let e = answer(&mut sa, req).await;
            assert!(matches!(e, ServerToClient::Error { .. }), "{number}: {e:?}");
        }
    }
    // The version 2 session was never told of the new kinds, and its requests of them are refused.
    so.send(&ClientToServer::Introduce { req: 5, number: (&a.number).into() }).await;
    assert!(matches!(answer(&mut so, 5).await, ServerToClient::Error { .. }));
    so.heartbeat().await;
    assert!(so.reachability.is_none());
    sa.heartbeat().await;
    assert_eq!(metric(&dir, "whatsap2p_meetings_total{result=\"Unreachable\"}"), 4);
    dir.stop().await;
}

#[tokio::test]
async fn given_a_relay_request_then_both_sides_get_one_sealed_ticket_naming_them() {
    let key = StaticKeypair::generate().expect("key");
    let relay: SocketAddr = "0.0.0.0:7001".parse().expect("addr");
    let dir = Instance::memory_with(&key, Config { relay: Some(relay), ..common::config() }).await;
    let (a, b) = (Account::new("5550001"), Account::new("5550002"));
    let mut sa = Session::online(dir.addr, &a, 4001).await;
    let mut sb = Session::online(dir.addr, &b, 4002).await;
    assert_eq!(reachability(&sa).2, Some(relay));
    let reason = RelayReason::BothSymmetric;
    sa.send(&ClientToServer::RelayRequest { req: 7, number: (&b.number).into(), reason }).await;
    let ServerToClient::RelayOffer { number, relay: at, ticket, reason: why, .. } = answer(&mut sa, 7).await
    else {
        panic!("no offer")
    };
    assert_eq!((number, at, why), (b.number.clone(), relay, reason));
    let theirs = sb.expect("the offer", |m| matches!(m, ServerToClient::RelayOffer { req: None, .. })).await;
    assert_eq!(
        theirs,
        ServerToClient::RelayOffer {
            req: None,
            number: a.number.clone(),
            relay,
            ticket: ticket.clone(),
            reason
        }
    );
    let opened = RelayKeys::derive(key.private()).open(&ticket).expect("sealed by the server key");
    assert_eq!((&opened.a, &opened.b), (&a.number, &b.number));
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as u64;
    assert!(opened.expires_unix_ms > now && opened.expires_unix_ms <= now + 31_000, "{opened:?}");
    dir.stop().await;
}

#[tokio::test]
async fn given_a_session_asking_too_often_then_refused_past_the_limit() {
    let key = StaticKeypair::generate().expect("key");
    let dir = Instance::memory(&key).await;
    let (a, b) = (Account::new("5550001"), Account::new("5550002"));
    let mut sa = Session::online(dir.addr, &a, 4001).await;
    let _sb = Session::online(dir.addr, &b, 4002).await;
    let limit = whatsap2p_server::session::MAX_MEETINGS;
    for req in 1..=limit + 1 {
        sa.send(&ClientToServer::Introduce { req, number: (&b.number).into() }).await;
    }
    for req in 1..=limit {
        assert!(matches!(answer(&mut sa, req).await, ServerToClient::Introduction { .. }));
    }
    let e = answer(&mut sa, limit + 1).await;
    assert!(format!("{e:?}").contains("a minute"), "{e:?}");
    assert_eq!(metric(&dir, "whatsap2p_meetings_total{result=\"Limited\"}"), 1);
    dir.stop().await;
}
