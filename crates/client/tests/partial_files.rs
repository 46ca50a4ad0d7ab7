//! Filling the receiver's disk with files (issue 16, attack 5): a contact that abandons offer after
//! offer just before their end leaves partial files behind; they stay within their limit, expire,
//! and a restart keeps nothing beyond that; an offer that would leave the disk below its
//! free-space floor is refused for now, with the reason, and nothing is written. The sender is a
//! bare peer speaking the protocol over a real socket to a real client.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use support::{next, number, send_file, BarePeer, Scene};
use tokio::net::TcpStream;
use whatsap2p_client::{Client, Event, StorageLimits};
use whatsap2p_link::{SessionReader, SessionWriter};
use whatsap2p_proto::peer::{FileFailCode, PeerMessage};

const MIB: usize = 1024 * 1024;
const VICTIM: u64 = 200;
const CONTACT: u64 = 300;

/// The victim, started with `storage`, with the bare peer `CONTACT` as a contact.
async fn victim(scene: &Scene, storage: StorageLimits) -> (Client, tokio::sync::mpsc::Receiver<Event>) {
    let mut config = support::config(scene.directory.addr, &number(VICTIM), scene.root.path());
    config.storage = storage;
    let (client, events) = Client::start(config).await.expect("client start");
    client.add_contact(&number(CONTACT), None).await.expect("adding the contact");
    (client, events)
}

type Link = (SessionReader<TcpStream>, SessionWriter<TcpStream>);

async fn link(peer: &BarePeer, victim: &Client) -> Link {
    peer.dial(victim.number(), victim.identity_key(), victim.published_addr()).await.split()
}

/// The partial files on disk: name and length.
fn partials(downloads: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(dir) = std::fs::read_dir(downloads.join(".whatsap2p-partial")) else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        Some((e.path(), e.metadata().ok()?.len()))
    })
    .collect()
}

/// Offers a file of `size` distinct bytes and gives up on it one chunk before its end; waits until
/// the victim has let go of it.
async fn abandon(link: &mut Link, events: &mut tokio::sync::mpsc::Receiver<Event>, seed: u8, size: usize) {
    let data: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    let (id, answer) = send_file(&mut link.0, &mut link.1, "big.bin", "", &data, Some(size - 1000)).await;
    assert!(matches!(answer, PeerMessage::FileAccept { .. }), "offer {seed}: {answer:?}");
    next(events, |e| {
        matches!(e, Event::FileFailed { id: got, outgoing: false, .. } if got == id).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_contact_abandoning_offers_before_their_end_then_partial_files_stay_within_their_bound_across_restart(
) {
    let scene = Scene::start().await;
    let (peer, _session) = scene.bare_peer(CONTACT, "127.0.0.1:9".parse().expect("addr")).await;
    let limit = 3 * MIB as u64;
    let storage = StorageLimits { max_partial_bytes: limit, min_free_space: 0, ..Default::default() };
    let (client, mut events) = victim(&scene, storage.clone()).await;
    let downloads = client.config().downloads.clone();
    let mut link = link(&peer, &client).await;
    for seed in 0..8 {
        abandon(&mut link, &mut events, seed, MIB).await;
        let held = partials(&downloads);
        let total: u64 = held.iter().map(|(_, len)| len).sum();
        assert!(total <= limit && held.len() <= 3, "{} partial files, {total} bytes: {held:?}", held.len());
    }
    assert_eq!(partials(&downloads).len(), 3, "the newest are kept for a resume");
    drop(link);
    client.shutdown().await;

    // Two of them are older than the expiry by the next start.
    let mut held = partials(&downloads);
    held.sort();
    let old = SystemTime::now() - StorageLimits::DEFAULT_PARTIAL_EXPIRY - Duration::from_secs(60);
    for (path, _) in &held[..2] {
        std::fs::File::options().write(true).open(path).expect("open").set_modified(old).expect("mtime");
    }
    let kept = held[2].0.clone();
    let (client, _events) = victim(&scene, storage).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while partials(&downloads).len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "not swept at start: {:?}", partials(&downloads));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(partials(&downloads).into_iter().map(|(p, _)| p).collect::<Vec<_>>(), [kept]);
    client.shutdown().await;
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_file_that_would_leave_the_disk_below_its_floor_then_it_is_refused_for_now_saying_why() {
    let scene = Scene::start().await;
    let (peer, _session) = scene.bare_peer(CONTACT, "127.0.0.1:9".parse().expect("addr")).await;
    // A floor above any disk's size, so even five bytes would go below it.
    let floor = u64::MAX / 2;
    let storage = StorageLimits { min_free_space: floor, ..Default::default() };
    let (client, mut events) = victim(&scene, storage).await;
    let mut link = link(&peer, &client).await;
    let (id, answer) = send_file(&mut link.0, &mut link.1, "a.txt", "text/plain", b"hello", None).await;
    let PeerMessage::FileAbort { code, reason, .. } = answer else { panic!("{answer:?}") };
    assert_eq!(code, FileFailCode::Disk, "{reason}");
    assert!(!code.is_final(), "the sender retries later");
    assert!(reason.contains("free") && reason.contains(&floor.to_string()), "{reason}");
    let told = next(&mut events, |e| match e {
        Event::FileFailed { id: got, outgoing: false, reason, .. } if got == id => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(told, reason, "the user is told too");
    assert!(partials(&client.config().downloads).is_empty(), "nothing was written");
    client.shutdown().await;
    scene.stop().await;
}
