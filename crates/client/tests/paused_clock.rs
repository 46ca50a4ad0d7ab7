//! The client core's timing logic on a paused Tokio clock: what waits how long before doing what,
//! checked against virtual time, with real sockets and no wall-clock sleeps. Each test starts the
//! real directory in-process (or a fake one that goes silent) and real clients; the peers that must
//! misbehave are bare peers built from the client's own handshake.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{next, number, Scene};
use tokio::net::TcpListener;
use tokio::time::Instant;
use whatsap2p_client::outbox::RETRY_MAX;
use whatsap2p_client::transfer::STALL_TIMEOUT;
use whatsap2p_client::{Event, MessageId, SendOutcome};
use whatsap2p_link::{Handshake, StaticKeypair};
use whatsap2p_proto::directory::{ClientToServer, ServerToClient};
use whatsap2p_proto::handshake::ServerHello;
use whatsap2p_proto::peer::{FileFailCode, PeerMessage, FILE_CHUNK_LEN};
use whatsap2p_proto::version;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A listener that takes connections and drops them at once, noting when (a peer whose handshake
/// always fails).
async fn slammer() -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let noted = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            noted.lock().expect("attempts").push(Instant::now());
            drop(stream);
        }
    });
    (addr, seen)
}

#[tokio::test(start_paused = true)]
async fn given_an_online_peer_that_cannot_be_linked_then_the_courier_backs_off_doubling_up_to_the_maximum() {
    let scene = Scene::start().await;
    let (a, _events) = scene.client(123).await;
    let (listen, attempts) = slammer().await;
    let (peer, _session) = scene.bare_peer(789, listen).await;
    let (_, outcome) = a.send(&peer.number, "are you there?").await.expect("send");
    assert!(matches!(outcome, SendOutcome::Queued { .. }), "{outcome:?}");
    let start = Instant::now();
    while attempts.lock().expect("attempts").len() < 24 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(start.elapsed() < Duration::from_secs(600), "{:?}", attempts.lock().expect("attempts"));
    }
    let mut times = attempts.lock().expect("attempts").clone();
    // A dial sends the version 3 hello, and when the connection is closed before an answer (as an
    // old peer would), the version 2 hello at once on a second connection: one attempt, two
    // connections at the same instant.
    times.dedup_by(|later, first| *later - *first < Duration::from_millis(1));
    // The send and the wake-ups around it (the directory's first push) try at once; then the
    // courier waits, twice as long each time, up to RETRY_MAX.
    let gaps: Vec<f64> = times.windows(2).map(|w| secs(w[1] - w[0])).collect();
    let waits: Vec<f64> = gaps.iter().copied().skip_while(|g| *g < 0.5).collect();
    assert!(waits.len() >= 7 && waits[0] <= 4.0 + 0.05, "gaps {gaps:?}");
    for pair in waits.windows(2) {
        let want = (pair[0] * 2.0).min(secs(RETRY_MAX));
        assert!(
            (pair[1] - want).abs() < 0.05,
            "after {}s the courier waited {}s: gaps {gaps:?}",
            pair[0],
            pair[1]
        );
    }
    assert!((waits[waits.len() - 1] - secs(RETRY_MAX)).abs() < 0.05, "never reached the maximum: {gaps:?}");
    a.shutdown().await;
    scene.stop().await;
}

#[tokio::test(start_paused = true)]
async fn given_a_receiver_that_stops_answering_then_the_sender_calls_it_stalled_and_offers_again() {
    let scene = Scene::start().await;
    let (a, mut a_events) = scene.client(123).await;
    // A receiver that accepts the file, reads every chunk and never confirms any.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listen = listener.local_addr().expect("addr");
    let (peer, _session) = scene.bare_peer(789, listen).await;
    let peer = Arc::new(peer);
    let offers = Arc::new(Mutex::new(Vec::new()));
    let (noted, receiver) = (offers.clone(), peer.clone());
    tokio::spawn(async move {
        let (stream, addr) = listener.accept().await.expect("accept");
        let (mut reader, mut writer) = receiver.answer(stream, addr).await.split();
        while let Ok(Some(msg)) = reader.recv_msg::<PeerMessage>().await {
            if let PeerMessage::FileOffer { id, .. } = msg {
                noted.lock().expect("offers").push(Instant::now());
                writer.send_msg(&PeerMessage::FileAccept { id, offset: 0 }).await.expect("accept");
            }
        }
    });
    let path = scene.root.path().join("photo.bin");
    std::fs::write(&path, vec![7u8; 4 * FILE_CHUNK_LEN]).expect("write");
    let file = a.send_file(&peer.number, &path).await.expect("send_file");
    while offers.lock().expect("offers").len() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times = offers.lock().expect("offers").clone();
    // Stalled after STALL_TIMEOUT with nothing from the receiver, then offered again after the
    // first retry pause (one second).
    let gap = secs(times[1] - times[0]);
    let want = secs(STALL_TIMEOUT) + 1.0;
    assert!((want..want + 0.1).contains(&gap), "offered again after {gap}s, expected {want}s");
    // A stall is worth retrying: nothing tells the user the file failed.
    while let Ok(e) = a_events.try_recv() {
        assert!(!matches!(e, Event::FileFailed { id, .. } if id == file.id), "{e:?}");
    }
    a.shutdown().await;
    scene.stop().await;
}

#[tokio::test(start_paused = true)]
async fn given_a_sender_that_stops_sending_then_the_receiver_aborts_as_stalled_after_the_stall_timeout() {
    let scene = Scene::start().await;
    let (b, mut b_events) = scene.client(456).await;
    let (peer, _session) = scene.bare_peer(789, "127.0.0.1:9".parse().expect("addr")).await;
    b.add_contact(&peer.number, None).await.expect("add_contact");
    let (mut reader, mut writer) = peer.dial(b.number(), b.identity_key(), b.published_addr()).await.split();
    let id = MessageId::new();
    let size = 16 * FILE_CHUNK_LEN as u64;
    let offer = PeerMessage::FileOffer {
        id,
        name: "half.bin".into(),
        size,
        media_type: "application/octet-stream".into(),
        blake3: [0; 32],
    };
    writer.send_msg(&offer).await.expect("offer");
    match reader.recv_msg::<PeerMessage>().await.expect("answer") {
        Some(PeerMessage::FileAccept { offset: 0, .. }) => {}
        other => panic!("expected the offer accepted from 0, got {other:?}"),
    }
    let accepted = Instant::now();
    for n in 0..2u64 {
        let chunk =
            PeerMessage::FileChunk { id, offset: n * FILE_CHUNK_LEN as u64, data: vec![1; FILE_CHUNK_LEN] };
        writer.send_msg(&chunk).await.expect("chunk");
    }
    // The receiver's disk writer is a blocking thread waiting for chunks, which stops the paused
    // clock from moving by itself: move it a second at a time, and see what comes back each time.
    let (tx, rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = reader.recv_msg::<PeerMessage>().await {
            let _ = tx.send(msg);
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let mut abort = None;
    for _ in 0..(STALL_TIMEOUT.as_secs() + 5) {
        tokio::time::advance(Duration::from_secs(1)).await;
        let rx = rx.clone();
        let got = tokio::task::spawn_blocking(move || {
            rx.lock().expect("channel").recv_timeout(Duration::from_millis(100)).ok()
        })
        .await
        .expect("waiting for the receiver");
        if let Some(PeerMessage::FileAbort { code, reason, .. }) = got {
            abort = Some((accepted.elapsed(), code, reason));
            break;
        }
    }
    let (after, code, reason) = abort.expect("the receiver never gave up");
    assert_eq!(code, FileFailCode::Stalled, "{reason}");
    assert!(
        after >= STALL_TIMEOUT && after <= STALL_TIMEOUT + Duration::from_secs(1),
        "gave up after {after:?}"
    );
    let reason = next(&mut b_events, |e| match e {
        Event::FileFailed { id: got, outgoing: false, reason, .. } if got == id => Some(reason),
        _ => None,
    })
    .await;
    assert!(reason.contains("stalled"), "{reason}");
    b.shutdown().await;
    scene.stop().await;
}

/// A directory that registers the client, then never says another word; it notes when each
/// heartbeat arrives.
async fn silent_directory(timeout: Duration) -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heartbeats = Arc::new(Mutex::new(Vec::new()));
    let noted = heartbeats.clone();
    tokio::spawn(async move {
        let key = StaticKeypair::generate().expect("key");
        let (stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut hs = Handshake::responder(stream, &key).expect("handshake");
        let offered = version::read_hello(&hs.recv().await.expect("hello")).expect("hello");
        let answer = version::answer(version::SPOKEN, &offered).expect("answer");
        let agreed = answer.outcome.expect("a version in common");
        let hello = ServerHello { version: agreed, heartbeat_timeout_ms: timeout.as_millis() as u64 };
        let mut payload = answer.prefix;
        payload.extend(whatsap2p_proto::encode(&hello).expect("encode"));
        hs.send(&payload).await.expect("server hello");
        let _proof = hs.recv().await.expect("proof");
        let mut session = hs.finish().expect("finish");
        if version::batches(whatsap2p_proto::handshake::Purpose::Directory, agreed) {
            session.set_batched();
        }
        let (mut reader, mut writer) = session.split();
        while let Ok(Some(msg)) = reader.recv_msg::<ClientToServer>().await {
            match msg {
                ClientToServer::Register { listen } => {
                    noted.lock().expect("heartbeats").push(Instant::now());
                    writer.send_msg(&ServerToClient::Registered { listen }).await.expect("registered");
                }
                ClientToServer::Heartbeat => noted.lock().expect("heartbeats").push(Instant::now()),
                _ => {}
            }
        }
        // Keep the listener: reconnections wait in its backlog.
        std::future::pending::<()>().await;
    });
    (addr, heartbeats)
}

#[tokio::test(start_paused = true)]
async fn given_a_directory_that_goes_silent_then_the_client_heartbeats_and_calls_it_lost_after_three_beats() {
    let timeout = Duration::from_secs(3);
    let (server, heard) = silent_directory(timeout).await;
    let root = tempfile::tempdir().expect("tempdir");
    let (client, mut events) = support::start(server, &number(123), root.path()).await;
    let reason = next(&mut events, |e| match e {
        Event::DirectoryLost { reason } => Some(reason),
        _ => None,
    })
    .await;
    let lost = Instant::now();
    let heard = heard.lock().expect("heartbeats").clone();
    let registered = heard[0];
    let beats: Vec<f64> = heard[1..].iter().map(|t| secs(*t - registered)).collect();
    // A heartbeat every third of the server's timeout; silence for three of them is a lost session.
    assert_eq!(beats.len(), 3, "heartbeats at {beats:?}");
    for (n, at) in beats.iter().enumerate() {
        assert!((at - (n + 1) as f64).abs() < 0.05, "heartbeats at {beats:?}");
    }
    let after = secs(lost - registered);
    assert!((after - 4.0).abs() < 0.05, "lost after {after}s: {reason}");
    assert!(reason.contains("no answer from the server"), "{reason}");
    client.shutdown().await;
}
