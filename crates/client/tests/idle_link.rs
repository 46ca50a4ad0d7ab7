//! Idle-link expiry on a paused clock: a link without traffic closes after `link_idle`, and its
//! socket is released on both sides. In a test binary of its own, since it counts the process's
//! open descriptors.

mod support;

use std::time::Duration;

use support::{next, Scene};
use tokio::time::Instant;
use whatsap2p_client::{Event, SendOutcome, Timeouts};

#[tokio::test(start_paused = true)]
async fn given_an_idle_link_then_it_closes_after_link_idle_and_its_socket_is_released() {
    let scene = Scene::start().await;
    let (a, mut a_events) = scene.client(123).await;
    let (b, mut b_events) = scene.client(456).await;
    b.add_contact(a.number(), None).await.expect("add_contact");
    let (id, outcome) = a.send(b.number(), "hello").await.expect("send");
    assert_eq!(outcome, SendOutcome::Sent);
    next(&mut b_events, |e| matches!(e, Event::Message { id: got, .. } if got == id).then_some(())).await;
    next(&mut a_events, |e| matches!(e, Event::Delivered { id: got, .. } if got == id).then_some(())).await;
    let linked = Instant::now();
    let fds = support::open_fds();
    assert_eq!((a.stats().links, b.stats().links), (1, 1), "one link, seen from both sides");
    let idle = Timeouts::default().link_idle;
    // Traffic-free from here: the link must stay up until `link_idle`, and go right after.
    tokio::time::sleep(idle - Duration::from_secs(1)).await;
    assert_eq!((a.stats().links, b.stats().links), (1, 1), "closed before {idle:?} without traffic");
    while a.stats().links + b.stats().links > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(linked.elapsed() < idle + Duration::from_secs(2), "still linked at {:?}", linked.elapsed());
    }
    // Both ends of the loopback connection are closed, not just forgotten.
    assert!(support::open_fds() <= fds - 2, "{} descriptors, {fds} while linked", support::open_fds());
    // And the next message dials a new link.
    let (_, outcome) = a.send(b.number(), "again").await.expect("send");
    assert_eq!(outcome, SendOutcome::Sent);
    a.shutdown().await;
    b.shutdown().await;
    scene.stop().await;
}
