//! Peer links between clients of different protocol versions, over real sockets: a peer from
//! before version 3 (driven by hand here, byte for byte as version 2 speaks) links with a current
//! client both ways, and a peer that speaks only newer versions is refused with a warning that
//! names both ranges, both ways, once, while the message waits.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{next, number, BarePeer, Scene, TestDirectory, NO_EXPIRY};
use tokio::net::{TcpListener, TcpStream};
use whatsap2p_client::{Client, Event, MessageId, SendOutcome};
use whatsap2p_link::{Handshake, Session};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::handshake::{Hello, Purpose};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::version::Versions;
use whatsap2p_proto::{encode, IdentityProof};

/// Version 2's hello for a peer link: `02 01`.
fn v2_hello() -> Vec<u8> {
    encode(&Hello { version: 2, purpose: Purpose::Peer }).expect("hello")
}

fn prove(peer: &BarePeer, hash: &[u8]) -> Vec<u8> {
    let proof = IdentityProof::sign(
        &peer.identity.signing,
        peer.number.clone(),
        hash,
        &peer.identity.noise.public().0,
    );
    encode(&proof).expect("proof")
}

/// Message 2 as version 2 reads it: the responder's identity proof and nothing else.
fn v2_proof(payload: &[u8], hash: &[u8], hs: &Handshake<TcpStream>) -> IdentityProof {
    let proof: IdentityProof = decode_struct(payload).expect("the v2 layout: a proof alone");
    let remote = hs.remote_static().expect("remote static");
    proof.verify(hash, &remote.0).expect("the proof verifies");
    proof
}

/// A version 2 peer's listener: it refuses a hello it cannot read (the v3 one: a byte too many)
/// by closing, as version 2 does; it answers a v2 hello, then acknowledges every text. Notes
/// every hello it got.
async fn v2_listener(peer: Arc<BarePeer>) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let noted = hellos.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).expect("nodelay");
            let mut hs = Handshake::responder(stream, &peer.identity.noise).expect("handshake");
            let Ok(hello) = hs.recv().await else { continue };
            noted.lock().expect("hellos").push(hello.clone());
            if decode_struct::<Hello>(&hello).is_err() {
                continue;
            }
            let proof = prove(&peer, &hs.hash());
            hs.send(&proof).await.expect("message 2");
            let _ = hs.recv().await.expect("message 3");
            let (mut reader, mut writer) = hs.finish().expect("finish").split();
            tokio::spawn(async move {
                while let Ok(Some(msg)) = reader.recv_msg::<PeerMessage>().await {
                    if let PeerMessage::Text { id, .. } = msg {
                        writer.send_msg(&PeerMessage::Ack { id }).await.expect("ack");
                    }
                }
            });
        }
    });
    (addr, hellos)
}

/// Dials `addr` as a version 2 peer does: the v2 hello, message 2 read as a bare proof.
async fn v2_dial(peer: &BarePeer, addr: SocketAddr) -> (IdentityProof, Session<TcpStream>) {
    let stream = TcpStream::connect(addr).await.expect("dialing");
    stream.set_nodelay(true).expect("nodelay");
    let mut hs = Handshake::initiator(stream, &peer.identity.noise).expect("handshake");
    hs.send(&v2_hello()).await.expect("message 1");
    let hash = hs.hash();
    let payload = hs.recv().await.expect("message 2");
    let theirs = v2_proof(&payload, &hash, &hs);
    let mine = prove(peer, &hs.hash());
    hs.send(&mine).await.expect("message 3");
    (theirs, hs.finish().expect("finish"))
}

#[tokio::test(start_paused = true)]
async fn given_a_peer_from_before_version_3_then_it_links_with_a_current_client_both_ways() {
    let scene = Scene::start().await;
    let (a, mut events) = scene.client(123).await;
    let old = Arc::new(BarePeer::new(number(789)));
    let (listen, hellos) = v2_listener(old.clone()).await;
    let _session = old.register(scene.directory.addr, listen, &pins(&scene, 789)).await;
    // A contact: a stranger's text would be held as a message request, answered `Pending`.
    a.add_contact(&old.number, None).await.expect("adding the old peer");

    // The old peer dials the client: answered in the version 2 layout, and its text is taken.
    let (proof, session) = v2_dial(&old, a.published_addr()).await;
    assert_eq!(proof.number, *a.number());
    let (mut reader, mut writer) = session.split();
    let id = MessageId::new();
    let text = PeerMessage::Text { id, sent_at_ms: 1, text: "from an old peer".into() };
    writer.send_msg(&text).await.expect("text");
    assert_eq!(reader.recv_msg::<PeerMessage>().await.expect("ack"), Some(PeerMessage::Ack { id }));
    let got = next(&mut events, |e| match e {
        Event::Message { from, text, .. } if from == old.number => Some(text),
        _ => None,
    })
    .await;
    assert_eq!(got, "from an old peer");
    drop((reader, writer));

    // The client dials the old peer: the v3 hello is refused by a close, the v2 hello on a second
    // connection links, and the text is delivered.
    let (_, outcome) = a.send(&old.number, "to an old peer").await.expect("send");
    assert_eq!(outcome, SendOutcome::Sent);
    next(&mut events, |e| matches!(e, Event::Delivered { .. }).then_some(())).await;
    assert_eq!(*hellos.lock().expect("hellos"), vec![vec![4, 1, 2], v2_hello()]);
    a.shutdown().await;
    scene.stop().await;
}

fn pins(scene: &Scene, n: u64) -> whatsap2p_client::store::Store {
    whatsap2p_client::store::Store::open(&scene.root.path().join(format!("pins-{n}.sqlite"))).expect("store")
}

/// Every warning so far that names no common version.
fn version_warnings(events: &mut tokio::sync::mpsc::Receiver<Event>) -> Vec<String> {
    let mut found = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::Warning { message } = e {
            if message.contains("no protocol version in common") {
                found.push(message);
            }
        }
    }
    found
}

#[tokio::test(start_paused = true)]
async fn given_a_peer_speaking_only_newer_versions_then_both_sides_warn_once_naming_both_ranges_and_the_messages_wait(
) {
    // A directory both can use.
    let config = whatsap2p_server::Config {
        heartbeat_timeout: NO_EXPIRY,
        versions: Versions::new(2, 6).expect("range"),
        ..Default::default()
    };
    let key = whatsap2p_link::StaticKeypair::generate().expect("key");
    let d = TestDirectory::start_on(([127, 0, 0, 1], 0).into(), key, config).await;
    let root = tempfile::tempdir().expect("tempdir");
    let (a, mut a_events) =
        Client::start(support::config(d.addr, &number(123), root.path())).await.expect("a");
    let mut newer = support::config(d.addr, &number(456), root.path());
    newer.versions = Versions::new(5, 6).expect("range");
    let (b, mut b_events) = Client::start(newer).await.expect("b");
    assert_eq!((a.directory_version(), b.directory_version()), (Some(4), Some(6)));

    let (_, outcome) = a.send(b.number(), "hello, newer").await.expect("send");
    let want_a = "no protocol version in common: this side speaks versions 2 to 4, the other side speaks versions 5 to 6";
    assert!(matches!(&outcome, SendOutcome::Queued { reason } if reason.contains(want_a)), "{outcome:?}");
    let (_, outcome) = b.send(a.number(), "hello, older").await.expect("send");
    let want_b = "no protocol version in common: this side speaks versions 5 to 6, the other side speaks versions 2 to 4";
    assert!(matches!(&outcome, SendOutcome::Queued { reason } if reason.contains(want_b)), "{outcome:?}");

    // The couriers retry for two minutes (a handful of dials each); each side was told once.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let (told_a, told_b) = (version_warnings(&mut a_events), version_warnings(&mut b_events));
    assert_eq!(told_a.len(), 1, "{told_a:?}");
    assert!(told_a[0].contains(want_a) && told_a[0].contains(b.number().as_str()), "{told_a:?}");
    assert_eq!(told_b.len(), 1, "{told_b:?}");
    assert!(told_b[0].contains(want_b), "{told_b:?}");
    a.shutdown().await;
    b.shutdown().await;
    d.stop().await;
}
