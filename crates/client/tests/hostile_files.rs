//! Attacks through what a contact's file claims to be (issue 16, attack 6): the media type
//! offered and the name's extension lie about the content, and the name hides its real extension
//! behind a right-to-left override. The sender is a bare peer speaking the documented protocol over
//! a real socket; the receiver is a real client.

mod support;

use std::io::Cursor;

use support::{next, number, send_file, Scene};
use whatsap2p_client::{Chat, ChatItem, Event};
use whatsap2p_proto::peer::PeerMessage;

/// A file's name and media type as offered, its content, then the name it is saved under, the
/// media type reported and its dimensions.
type Case = (&'static str, &'static str, Vec<u8>, &'static str, &'static str, Option<(u32, u32)>);

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::RgbImage::new(width, height).write_to(&mut out, image::ImageFormat::Png).expect("encoding a PNG");
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_contact_whose_files_lie_about_their_type_and_name_then_the_content_decides() {
    let scene = Scene::start().await;
    let (victim, mut events) = scene.client(200).await;
    let (peer, _session) = scene.bare_peer(300, "127.0.0.1:9".parse().expect("addr")).await;
    victim.add_contact(&number(300), None).await.expect("adding the contact");
    let (mut reader, mut writer) =
        peer.dial(victim.number(), victim.identity_key(), victim.published_addr()).await.split();
    let downloads = victim.config().downloads.clone();

    let html =
        b"<!DOCTYPE html>\n<html><body><script>document.location='https://evil'</script></body></html>";
    let exe =
        [b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".as_slice(), &[0u8; 240]].concat();
    let elf = [b"\x7fELF\x02\x01\x01\x00".as_slice(), &[0u8; 120]].concat();
    let cases: Vec<Case> = vec![
        // A photo labelled as a web page.
        ("cat.html", "text/html", png(3, 2), "cat.png", "image/png", Some((3, 2))),
        // A web page labelled as a photo.
        ("photo.png", "image/png", html.to_vec(), "photo.html", "text/html", None),
        // A program whose name reads "invoiceexe.pdf" on screen, labelled as a PDF.
        (
            "invoice\u{202e}fdp.exe",
            "application/pdf",
            exe,
            "invoicefdp.exe",
            "application/vnd.microsoft.portable-executable",
            None,
        ),
        // A program named as a document.
        ("report.pdf", "application/pdf", elf, "report.elf", "application/x-executable", None),
    ];
    for (offered, claimed, data, saved, media, dims) in cases {
        let (id, answer) = send_file(&mut reader, &mut writer, offered, claimed, &data, None).await;
        assert!(matches!(answer, PeerMessage::FileReceived { .. }), "{offered:?}: {answer:?}");
        let (name, path, media_type, dimensions) = next(&mut events, |e| match e {
            Event::FileReceived { id: got, name, path, media_type, dimensions, .. } if got == id => {
                Some((name, path, media_type, dimensions))
            }
            _ => None,
        })
        .await;
        assert_eq!((name.as_str(), media_type.as_str(), dimensions), (saved, media, dims), "{offered:?}");
        assert_eq!(path, downloads.join(saved));
        assert_eq!(std::fs::read(&path).expect("the saved file"), data);
        // What the history shows is what the content is, too.
        let page = victim.history_page(&Chat::Peer(number(300)), None, 1).await.expect("history");
        match page.as_slice() {
            [ChatItem::File(f)] => assert_eq!((f.name.as_str(), f.media_type.as_str()), (saved, media)),
            other => panic!("{other:?}"),
        }
    }
    let saved: Vec<_> = std::fs::read_dir(&downloads)
        .expect("downloads")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        saved
            .iter()
            .all(|n| !n.chars().any(|c| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'))),
        "{saved:?}"
    );
    victim.shutdown().await;
    scene.stop().await;
}
