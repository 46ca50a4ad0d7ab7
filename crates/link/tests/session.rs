//! A full XX handshake and encrypted exchange over an in-memory duplex stream, plus tampering.

use tokio::io::{duplex, AsyncWriteExt};
use whatsap2p_link::{Handshake, LinkError, StaticKeypair};

#[tokio::test]
async fn given_two_sides_then_handshake_authenticates_statics_and_frames_flow_both_ways() {
    let (a, b) = duplex(1 << 20);
    let ka = StaticKeypair::generate().expect("key");
    let kb = StaticKeypair::generate().expect("key");
    let (pa, pb) = (ka.public(), kb.public());
    let responder = tokio::spawn(async move {
        let mut hs = Handshake::responder(b, &kb)?;
        assert_eq!(hs.recv().await?, b"hello");
        hs.send(b"resp").await?;
        assert_eq!(hs.recv().await?, b"proof");
        hs.finish()
    });
    let mut hs = Handshake::initiator(a, &ka).expect("hs");
    hs.send(b"hello").await.expect("m1");
    assert_eq!(hs.recv().await.expect("m2"), b"resp");
    assert_eq!(hs.remote_static(), Some(pb));
    hs.send(b"proof").await.expect("m3");
    let s1 = hs.finish().expect("finish");
    let s2 = responder.await.expect("join").expect("responder");
    assert_eq!(s2.remote_static(), pa);

    let (mut r1, mut w1) = s1.split();
    let (mut r2, mut w2) = s2.split();
    let big = vec![7u8; 60_000];
    w1.send(&big).await.expect("send");
    w1.send(b"second").await.expect("send");
    w2.send(b"back").await.expect("send");
    assert_eq!(r2.recv().await.expect("recv"), Some(big));
    assert_eq!(r2.recv().await.expect("recv").as_deref(), Some(&b"second"[..]));
    assert_eq!(r1.recv().await.expect("recv").as_deref(), Some(&b"back"[..]));
    w1.close().await.expect("close");
    assert_eq!(r2.recv().await.expect("eof"), None);
}

#[tokio::test]
async fn given_frame_length_over_limit_then_refused_before_reading_it() {
    let (mut a, b) = duplex(1024);
    let kb = StaticKeypair::generate().expect("key");
    a.write_all(&(1u32 << 24).to_be_bytes()).await.expect("write");
    let mut hs = Handshake::responder(b, &kb).expect("hs");
    assert!(matches!(hs.recv().await, Err(LinkError::FrameTooLarge)));
}

#[tokio::test]
async fn given_garbage_handshake_then_noise_refuses() {
    let (mut a, b) = duplex(1024);
    let kb = StaticKeypair::generate().expect("key");
    a.write_all(&5u32.to_be_bytes()).await.expect("write");
    a.write_all(b"junk!").await.expect("write");
    let mut hs = Handshake::responder(b, &kb).expect("hs");
    assert!(matches!(hs.recv().await, Err(LinkError::Noise(_))));
}

#[tokio::test]
async fn given_frame_right_behind_last_handshake_message_then_session_still_reads_it() {
    let (a, b) = duplex(1 << 16);
    let ka = StaticKeypair::generate().expect("key");
    let kb = StaticKeypair::generate().expect("key");
    let mut init = Handshake::initiator(a, &ka).expect("hs");
    let mut resp = Handshake::responder(b, &kb).expect("hs");
    init.send(b"").await.expect("m1");
    resp.recv().await.expect("m1");
    resp.send(b"").await.expect("m2");
    init.recv().await.expect("m2");
    init.send(b"").await.expect("m3");
    let (_r, mut w) = init.finish().expect("finish").split();
    w.send(b"first").await.expect("send");
    // Both frames now sit in the pipe; the responder's handshake reader may buffer both.
    resp.recv().await.expect("m3");
    let (mut r, _w) = resp.finish().expect("finish").split();
    let got = tokio::time::timeout(std::time::Duration::from_secs(2), r.recv()).await;
    assert_eq!(got.expect("not stuck").expect("recv").as_deref(), Some(&b"first"[..]));
}

/// Two established sessions over a duplex pipe of `capacity` bytes.
async fn pair(
    capacity: usize,
) -> (whatsap2p_link::Session<tokio::io::DuplexStream>, whatsap2p_link::Session<tokio::io::DuplexStream>) {
    let (a, b) = duplex(capacity);
    let (ka, kb) = (StaticKeypair::generate().expect("key"), StaticKeypair::generate().expect("key"));
    let responder = tokio::spawn(async move {
        let mut hs = Handshake::responder(b, &kb)?;
        hs.recv().await?;
        hs.send(b"").await?;
        hs.recv().await?;
        hs.finish()
    });
    let mut hs = Handshake::initiator(a, &ka).expect("hs");
    hs.send(b"").await.expect("m1");
    hs.recv().await.expect("m2");
    hs.send(b"").await.expect("m3");
    (hs.finish().expect("finish"), responder.await.expect("join").expect("responder"))
}

#[tokio::test]
async fn given_a_peer_not_reading_then_send_or_buffer_returns_at_once_and_a_flush_finishes_it() {
    let (s1, s2) = pair(4096).await;
    let (_r1, mut w1) = s1.split();
    let (mut r2, _w2) = s2.split();
    assert!(w1.send_or_buffer(b"fits").expect("small frame"), "a small frame is written at once");
    let big = vec![3u8; 20_000];
    // The pipe holds 4 KiB and nobody reads: the rest stays buffered instead of waiting.
    assert!(!w1.send_or_buffer(&big).expect("big frame"));
    let reader = tokio::spawn(async move {
        let first = r2.recv().await.expect("recv");
        let second = r2.recv().await.expect("recv");
        (first, second)
    });
    w1.flush().await.expect("flush");
    let (first, second) = reader.await.expect("join");
    assert_eq!(first.as_deref(), Some(&b"fits"[..]));
    assert_eq!(second, Some(big));
}

/// Two sessions over an in-memory stream; `batched` turns batches on at the initiator and the
/// responder respectively.
async fn batched_pair(
    batched: (bool, bool),
) -> (whatsap2p_link::Session<tokio::io::DuplexStream>, whatsap2p_link::Session<tokio::io::DuplexStream>) {
    let (mut s1, mut s2) = pair(1 << 20).await;
    if batched.0 {
        s1.set_batched();
    }
    if batched.1 {
        s2.set_batched();
    }
    (s1, s2)
}

#[tokio::test]
async fn given_batched_sessions_then_a_batch_of_messages_arrives_whole_and_in_order() {
    let (s1, s2) = batched_pair((true, true)).await;
    let (_r1, mut w1) = s1.split();
    let (mut r2, _w2) = s2.split();
    // Small messages, and large ones that cannot share a frame: each arrives as sent.
    let sent: Vec<Vec<u8>> = (0..200u32)
        .map(|i| if i % 50 == 7 { vec![i as u8; 30_000] } else { i.to_le_bytes().repeat(1 + i as usize % 5) })
        .collect();
    for m in &sent {
        w1.queue_msg(m).expect("queue");
    }
    w1.flush().await.expect("flush");
    w1.send(b"last").await.expect("send");
    let mut out = Vec::new();
    for m in &sent {
        let n = r2.recv_into(&mut out).await.expect("recv").expect("a message");
        let got: Vec<u8> = whatsap2p_proto::codec::decode_struct(&out[..n]).expect("decodes");
        assert_eq!(&got, m);
    }
    assert_eq!(r2.recv().await.expect("recv").as_deref(), Some(&b"last"[..]));
    w1.close().await.expect("close");
    assert_eq!(r2.recv().await.expect("eof"), None);
}

#[tokio::test]
async fn given_a_batched_reader_then_a_frame_with_a_broken_record_is_refused_after_the_good_ones() {
    for (plaintext, good) in [
        (&[0x00, 0x01][..], 0),                   // a record of length zero
        (&[0x01, 0x41, 0x05, 0x41][..], 1),       // the second runs past the frame
        (&[0x01, 0x41, 0x81, 0x00, 0x41][..], 1), // a non-canonical length (1 as two bytes)
        (&[][..], 0),                             // no record at all
    ] {
        // The initiator writes raw frames; the responder reads records.
        let (s1, s2) = batched_pair((false, true)).await;
        let (_r1, mut w1) = s1.split();
        let (mut r2, _w2) = s2.split();
        w1.send(plaintext).await.expect("send");
        for _ in 0..good {
            assert_eq!(r2.recv().await.expect("a good record").as_deref(), Some(&b"A"[..]));
        }
        assert!(matches!(r2.recv().await, Err(LinkError::BadRecord)), "{plaintext:02x?}");
    }
}

#[tokio::test]
async fn given_a_batched_writer_then_an_empty_or_oversized_message_is_refused_and_nothing_is_sent() {
    let (s1, s2) = batched_pair((true, true)).await;
    let (_r1, mut w1) = s1.split();
    let (mut r2, _w2) = s2.split();
    assert!(matches!(w1.send(b"").await, Err(LinkError::BadRecord)));
    let too_big = vec![1u8; whatsap2p_proto::MAX_PLAINTEXT_LEN];
    assert!(matches!(w1.send(&too_big).await, Err(LinkError::FrameTooLarge)));
    w1.send(b"fine").await.expect("send");
    assert_eq!(r2.recv().await.expect("recv").as_deref(), Some(&b"fine"[..]));
}
