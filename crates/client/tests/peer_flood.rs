//! Filling a client's peer slots from one address (issue 16, attack 2, client side): 1 100 TCP
//! connections from 127.0.0.1 that never start a handshake (more than the client's 1 024 peer
//! connections), held open; a contact connecting from another address, 127.0.0.2, must still get
//! its message through while they are held. In a test binary of its own: it opens a few thousand
//! descriptors.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use support::{next, number, Scene};
use tokio::net::TcpStream;
use whatsap2p_client::link::MAX_PEER_CONNECTIONS;
use whatsap2p_client::{Event, MessageId};
use whatsap2p_proto::peer::PeerMessage;

const IDLE: usize = 1_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_one_address_holding_a_thousand_idle_connections_then_a_contact_from_another_still_delivers() {
    const { assert!(IDLE > MAX_PEER_CONNECTIONS, "the flood must be able to take every place") };
    let scene = Scene::start().await;
    let (victim, mut events) = scene.client(200).await;
    let (contact, _session) = scene.bare_peer(300, "127.0.0.1:9".parse().expect("addr")).await;
    victim.add_contact(&number(300), None).await.expect("adding the contact");
    let addr = victim.published_addr();

    // The flood: connections that say nothing. Each is made (the kernel's handshake done) before
    // the next, so all are in the client's queue before the contact's.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.expect("an idle connection"));
    }
    let flooded = tokio::time::Instant::now();

    // The contact, from another address, while the flood is held: well within the handshake
    // timeout, after which the flood's connections would be dropped anyway.
    let from = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let session = tokio::time::timeout(
        Duration::from_secs(3),
        contact.dial_from(from, victim.number(), victim.identity_key(), addr),
    )
    .await
    .expect("the contact's handshake was not answered while the flood was held");
    let (mut reader, mut writer) = session.split();
    let id = MessageId::new();
    let text = PeerMessage::Text { id, sent_at_ms: 1, text: "still here?".into() };
    writer.send_msg(&text).await.expect("sending");
    let acked = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match reader.recv_msg::<PeerMessage>().await.expect("reading") {
                Some(PeerMessage::Ack { id: got }) if got == id => return,
                Some(_) => continue,
                None => panic!("the client closed the contact's link"),
            }
        }
    });
    acked.await.expect("no acknowledgement while the flood was held");
    let shown = next(&mut events, |e| match e {
        Event::Message { id: got, text, .. } if got == id => Some(text),
        _ => None,
    })
    .await;
    assert_eq!(shown, "still here?");
    assert!(
        flooded.elapsed() < whatsap2p_client::Timeouts::default().handshake,
        "the flood was no longer held: took {:?}",
        flooded.elapsed()
    );
    // Most of the flood was turned away at once: its connections are closed from the other side.
    let mut closed = 0;
    for stream in &idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut buf)).await {
            closed += 1;
        }
    }
    assert!(closed >= IDLE - whatsap2p_client::link::FREE_HANDSHAKES, "{closed} of {IDLE} closed");
    drop(idle);
    victim.shutdown().await;
    scene.stop().await;
}
