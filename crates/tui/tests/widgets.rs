//! Snapshots of what the terminal UI draws, on ratatui's `TestBackend`: the list, a conversation
//! with receipts, a photo in half-blocks, a transfer gauge, the help, tiny terminals, and text from
//! others that tries to repaint the screen. `cargo insta review` (or `INSTA_UPDATE=always`) after
//! an intended change.

mod common;

use common::*;
use ratatui::style::{Color, Modifier};
use whatsap2p_client::{Event, MessageState};
use whatsap2p_tui::backend::{Chat, Online};

fn sample(app: &mut whatsap2p_tui::App) {
    let yesterday = NOW - DAY;
    list(
        app,
        vec![
            peer(
                "456",
                Online::Yes,
                0,
                Some(said(None, NOW - 2 * MINUTE, "see you at 6 ✓", MessageState::Read)),
            ),
            group(
                0xab,
                "Family",
                3,
                Some(said(Some("789"), NOW - 30 * MINUTE, "dinner on sunday? 🍝", MessageState::Received)),
            ),
            peer(
                "789",
                Online::No,
                1,
                Some(said(Some("789"), yesterday, "call me when you can", MessageState::Received)),
            ),
            peer("+4915112345678", Online::Unknown, 0, None),
        ],
    );
    let entries = vec![
        said(Some("456"), yesterday, "hey, are you coming tomorrow?", MessageState::Read),
        said(None, yesterday + MINUTE, "yes! what time?", MessageState::Read),
        said(Some("456"), NOW - 10 * MINUTE, "6pm at the usual place — 日本料理 👍", MessageState::Read),
        said(None, NOW - 5 * MINUTE, "perfect", MessageState::Read),
        said(None, NOW - 4 * MINUTE, "I'll bring the photos", MessageState::Delivered),
        said(None, NOW - 3 * MINUTE, "and the charger", MessageState::Sent),
        said(None, NOW - 2 * MINUTE, "see you at 6", MessageState::Queued),
        said(None, NOW - MINUTE, "this one could not be delivered", MessageState::Failed),
    ];
    open(app, Chat::Peer(n("456")), entries, false);
}

#[test]
fn given_conversations_then_the_list_shows_status_unread_counts_and_last_messages() {
    let mut app = app();
    sample(&mut app);
    app.on_key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Esc));
    let terminal = draw(&mut app, 100, 16);
    insta::assert_snapshot!(screen(&terminal));
}

#[test]
fn given_our_messages_then_receipts_show_sent_delivered_read_queued_and_failed() {
    let mut app = app();
    sample(&mut app);
    let terminal = draw(&mut app, 100, 16);
    let shown = screen(&terminal);
    insta::assert_snapshot!(shown);
    // Read is ✓✓ in the read colour; delivered is ✓✓ in plain grey.
    let buf = terminal.backend().buffer();
    let find = |needle: &str| {
        let row = shown.lines().position(|l| l.contains(needle)).expect(needle) as u16;
        let line: String = (0..buf.area.width).map(|x| buf[(x, row)].symbol().to_owned()).collect();
        let col = line.find(needle).map(|b| line[..b].chars().count()).expect("column") as u16;
        let tick_col = (col..buf.area.width).find(|&x| buf[(x, row)].symbol() == "✓").expect("a tick");
        buf[(tick_col, row)].style()
    };
    let read = find("perfect");
    assert_eq!(read.fg, Some(Color::LightBlue));
    assert!(read.add_modifier.contains(Modifier::BOLD));
    assert_eq!(find("I'll bring the photos").fg, Some(Color::Gray));
}

#[test]
fn given_a_message_held_as_a_request_then_its_receipt_says_so() {
    let mut app = app();
    list(&mut app, vec![peer("789", Online::Yes, 0, None)]);
    let entry = said(None, NOW - MINUTE, "hello, we met at the conference", MessageState::Sent);
    let id = entry.id;
    open(&mut app, Chat::Peer(n("789")), vec![entry], false);
    app.on_event(Event::Pending { id, to: n("789") });
    let terminal = draw(&mut app, 80, 10);
    let shown = screen(&terminal);
    let line = shown.lines().find(|l| l.contains("conference")).expect("the message");
    assert!(line.contains("conference ✓?"), "held, not just sent: {line}");
    assert!(shown.contains("789 has not added you as a contact"), "said why:\n{shown}");
    let buf = terminal.backend().buffer();
    let row = shown.lines().position(|l| l.contains("conference")).expect("row") as u16;
    let tick = (0..buf.area.width).find(|&x| buf[(x, row)].symbol() == "✓").expect("a tick");
    assert_eq!(buf[(tick, row)].style().fg, Some(Color::Yellow));
    // Accepted later: delivered, as any other, and the notice says so.
    app.on_event(Event::Delivered { id, to: n("789") });
    let shown = screen(&draw(&mut app, 80, 10));
    assert!(shown.contains("conference ✓✓"), "{shown}");
    assert!(shown.contains("789 accepted your message request"), "{shown}");
}

#[test]
fn given_a_received_photo_then_it_is_drawn_inline_with_half_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gradient.png");
    gradient_png(&path);
    let mut app = app();
    list(&mut app, vec![peer("456", Online::Yes, 0, None)]);
    let entries = vec![
        said(Some("456"), NOW - 2 * MINUTE, "look at this", MessageState::Read),
        file(Some("456"), NOW - MINUTE, "gradient.png", &path, 12_345, "image/png"),
    ];
    open(&mut app, Chat::Peer(n("456")), entries, false);
    let terminal = draw(&mut app, 70, 16);
    let shown = screen(&terminal);
    insta::assert_snapshot!(shown);
    assert!(shown.matches('▀').count() + shown.matches('▄').count() > 50, "half-blocks drawn:\n{shown}");
    // The colours are the picture's: the top-left is dark, the bottom-right light.
    let buf = terminal.backend().buffer();
    let colours: Vec<Color> =
        buf.content().iter().filter_map(|c| c.style().fg).filter(|c| matches!(c, Color::Rgb(..))).collect();
    assert!(colours.len() > 50, "true colours: {}", colours.len());
}

#[test]
fn given_a_file_on_its_way_then_a_gauge_shows_percent_speed_and_time_left() {
    let mut app = app();
    list(&mut app, vec![peer("456", Online::Yes, 0, None)]);
    let big = file(
        None,
        NOW - MINUTE,
        "holiday.mkv",
        std::path::Path::new("/home/u/videos/holiday.mkv"),
        700 << 20,
        "video/x-matroska",
    );
    let id = big.id;
    open(&mut app, Chat::Peer(n("456")), vec![big], false);
    app.on_event(Event::Progress { id, peer: n("456"), outgoing: true, bytes: 0, total: 700 << 20 });
    // A second report two seconds later (the app's clock is fixed: the transfer is fed directly).
    if let Some(t) = app.transfers.get_mut(&id) {
        t.progress(280 << 20, 700 << 20, t.first.0 + 20_000);
    }
    let terminal = draw(&mut app, 80, 10);
    let shown = screen(&terminal);
    insta::assert_snapshot!(shown);
    assert!(shown.contains("40% · 14.0 MiB/s · 0:30 left"), "{shown}");
}

#[test]
fn given_f1_then_the_help_lists_keys_and_commands() {
    let mut app = app();
    sample(&mut app);
    app.on_key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::F(1)));
    let terminal = draw(&mut app, 90, 40);
    insta::assert_snapshot!(screen(&terminal));
}

#[test]
fn given_a_tiny_terminal_then_one_pane_at_a_time_fits_and_smaller_says_so() {
    let mut app = app();
    sample(&mut app);
    let chat = draw(&mut app, 40, 12);
    insta::assert_snapshot!("tiny_conversation", screen(&chat));
    app.on_key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Esc));
    let list = draw(&mut app, 40, 12);
    insta::assert_snapshot!("tiny_list", screen(&list));
    let too_small = draw(&mut app, 12, 4);
    assert!(screen(&too_small).contains("window too"), "{}", screen(&too_small));
    let huge = draw(&mut app, 300, 100);
    assert!(screen(&huge).contains("call me when you can"));
}

#[test]
fn given_control_and_bidi_characters_from_others_then_they_are_shown_neutralized() {
    let mut app = app();
    let evil_group = "\u{1b}[2J\u{1b}]0;pwned\u{7}Fam\u{202e}ylimaf";
    let mut g = group(
        0xcd,
        evil_group,
        1,
        Some(said(Some("456"), NOW, "\u{1b}[31mred\u{1b}[0m \u{2066}x\u{2069}", MessageState::Received)),
    );
    g.name = evil_group.into();
    list(&mut app, vec![g]);
    let entries = vec![said(Some("456"), NOW, "line1\nline2\u{1b}[1A\u{9b}up", MessageState::Received)];
    open(&mut app, Chat::Group(whatsap2p_client::GroupId([0xcd; 16])), entries, false);
    let terminal = draw(&mut app, 80, 10);
    let shown = screen(&terminal);
    insta::assert_snapshot!(shown);
    let buf = terminal.backend().buffer();
    for cell in buf.content() {
        assert!(
            !cell.symbol().chars().any(|c| c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)),
            "a control or bidi character reached the screen: {:?}",
            cell.symbol()
        );
    }
}
