//! The UI's behaviour without a terminal: keys, mouse and client events in; state and the calls
//! it asks of the backend out.

mod common;

use common::*;
use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use whatsap2p_client::{Change, Event, FileFailCode, GroupId, MessageId, MessageState};
use whatsap2p_tui::app::{Ask, Focus, Overlay, Scroll, MAX_WINDOW, PAGE};
use whatsap2p_tui::backend::{Answer, Body, Chat, Online, Page, PageAt};
use whatsap2p_tui::calls::{Outcome, Request};
use whatsap2p_tui::App;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn alt(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::ALT)
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
}

fn three(app: &mut App) {
    list(
        app,
        vec![
            peer("456", Online::Yes, 0, Some(said(Some("456"), NOW - MINUTE, "hi", MessageState::Read))),
            peer(
                "789",
                Online::No,
                2,
                Some(said(Some("789"), NOW - 2 * MINUTE, "yo", MessageState::Received)),
            ),
            group(7, "Family", 0, Some(said(Some("789"), NOW - 3 * MINUTE, "dinner", MessageState::Read))),
        ],
    );
}

/// `n` messages, the oldest first, a minute apart.
fn history(n: usize) -> Vec<whatsap2p_tui::backend::Entry> {
    (0..n)
        .map(|i| {
            said(Some("456"), NOW - (n - i) as u64 * MINUTE, &format!("message {i}"), MessageState::Read)
        })
        .collect()
}

#[test]
fn given_text_and_enter_in_an_open_conversation_then_it_is_sent_and_the_input_cleared() {
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), history(3), false);
    typed(&mut app, "hello");
    app.on_key(alt(KeyCode::Enter));
    typed(&mut app, "world");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::SendText { chat: Chat::Peer(n("456")), text: "hello\nworld".into() }]
    );
    assert!(app.input.is_empty());
    assert_eq!(app.open.as_ref().map(|o| o.sending), Some(1));
    // `//` sends a text that starts with a slash.
    typed(&mut app, "//shrug");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::SendText { chat: Chat::Peer(n("456")), text: "/shrug".into() }]
    );
}

#[test]
fn given_text_with_no_conversation_open_then_nothing_is_sent_and_the_text_is_kept() {
    let mut app = app();
    three(&mut app);
    typed(&mut app, "hello");
    app.on_key(key(KeyCode::Enter));
    assert!(app.take_requests().is_empty());
    assert_eq!(app.input.text(), "hello");
    assert!(app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("open a conversation")));
}

#[test]
fn given_the_menu_numbers_on_an_empty_list_input_then_they_keep_their_meaning() {
    let mut app = app();
    three(&mut app);
    assert_eq!(app.focus, Focus::List);
    // 1: ping, the number asked in a dialog.
    app.on_key(key(KeyCode::Char('1')));
    assert!(matches!(&app.overlay, Some(Overlay::Dialog(d)) if d.ask == Ask::Ping));
    typed(&mut app, "12");
    app.on_key(key(KeyCode::Enter));
    assert!(
        matches!(&app.overlay, Some(Overlay::Dialog(d)) if d.error.is_some()),
        "a bad number keeps the dialog open"
    );
    typed(&mut app, "3");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.take_requests(), vec![Request::Ping(n("123"))]);
    assert!(app.overlay.is_none());
    // 2: write to a number (opens its conversation).
    app.on_key(key(KeyCode::Esc));
    app.on_key(key(KeyCode::Char('2')));
    typed(&mut app, "999");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.open.as_ref().map(|o| o.chat.clone()), Some(Chat::Peer(n("999"))));
    assert!(matches!(app.take_requests().as_slice(), [Request::Page { at: PageAt::Latest, .. }]));
    // 3: contacts; 4: add a contact; 5: logout.
    app.on_key(key(KeyCode::Esc));
    app.on_key(key(KeyCode::Char('3')));
    assert_eq!(app.take_requests(), vec![Request::Contacts]);
    assert!(matches!(app.overlay, Some(Overlay::Contacts { list: None, .. })));
    app.on_key(key(KeyCode::Esc));
    app.on_key(key(KeyCode::Char('4')));
    typed(&mut app, "555");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.take_requests(), vec![Request::AddContact(n("555"))]);
    // In a conversation the digits are text.
    app.open_chat(Chat::Peer(n("456")));
    app.take_requests();
    app.on_key(key(KeyCode::Char('5')));
    assert!(!app.quit);
    assert_eq!(app.input.text(), "5");
    app.input.take();
    app.on_key(key(KeyCode::Esc));
    app.on_key(key(KeyCode::Char('5')));
    assert!(app.quit);
}

#[test]
fn given_commands_then_each_asks_the_backend_or_a_dialog() {
    let mut app = app();
    three(&mut app);
    let run = |app: &mut App, line: &str| {
        typed(app, line);
        app.on_key(key(KeyCode::Enter));
        app.take_requests()
    };
    assert_eq!(run(&mut app, "/add 456"), vec![Request::AddContact(n("456"))]);
    assert_eq!(run(&mut app, "/ping 789"), vec![Request::Ping(n("789"))]);
    assert!(run(&mut app, "/open").is_empty());
    assert!(matches!(&app.overlay, Some(Overlay::Dialog(d)) if d.ask == Ask::Open));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(
        run(&mut app, "/group new Old friends 456 789"),
        vec![Request::GroupCreate { name: "Old friends".into(), members: vec![n("456"), n("789")] }]
    );
    assert!(run(&mut app, "/photo /tmp/x.png").is_empty(), "no conversation to send it to");
    assert!(run(&mut app, "/leave").is_empty(), "no group open");
    let family = Chat::Group(GroupId([7; 16]));
    app.open_chat(family.clone());
    app.take_requests();
    assert_eq!(
        run(&mut app, "/group add 555"),
        vec![Request::GroupChange { id: GroupId([7; 16]), who: n("555"), change: Change::Add }]
    );
    assert_eq!(
        run(&mut app, "/group remove 456"),
        vec![Request::GroupChange { id: GroupId([7; 16]), who: n("456"), change: Change::Remove }]
    );
    assert_eq!(run(&mut app, "/leave"), vec![Request::GroupLeave(GroupId([7; 16]))]);
    assert_eq!(
        run(&mut app, "/file /tmp/a.bin"),
        vec![Request::SendFile { chat: family, path: "/tmp/a.bin".into() }]
    );
    assert!(run(&mut app, "/bogus").is_empty());
    assert!(app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("unknown command")));
    assert_eq!(app.input.take(), "/bogus", "a refused command stays to be corrected");
    assert!(run(&mut app, "/quit").is_empty());
    assert!(app.quit);
}

#[test]
fn given_tab_on_a_photo_path_then_completion_is_asked_and_its_answer_fills_the_input() {
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), Vec::new(), false);
    typed(&mut app, "/photo ~/Pic");
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.take_requests(), vec![Request::Complete("~/Pic".into())]);
    let completion = whatsap2p_tui::complete::Completion { path: "~/Pictures/".into(), candidates: vec![] };
    app.on_outcome(Outcome::Completed { partial: "~/Pic".into(), completion });
    assert_eq!(app.input.text(), "/photo ~/Pictures/");
    // Without a path being typed, Tab moves to the next conversation.
    app.input.take();
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.open.as_ref().map(|o| o.chat.clone()), Some(Chat::Peer(n("789"))));
}

#[test]
fn given_tab_ctrl_keys_and_alt_a_then_conversations_change_in_list_order() {
    let mut app = app();
    three(&mut app);
    let open_now = |app: &App| app.open.as_ref().map(|o| o.chat.clone());
    app.on_key(key(KeyCode::Tab));
    assert_eq!(open_now(&app), Some(Chat::Peer(n("456"))));
    app.on_key(ctrl('n'));
    assert_eq!(open_now(&app), Some(Chat::Peer(n("789"))));
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(open_now(&app), Some(Chat::Peer(n("456"))));
    app.on_key(ctrl('p'));
    assert_eq!(open_now(&app), Some(Chat::Group(GroupId([7; 16]))), "wraps around");
    // Alt-A: the next conversation with unread messages.
    app.on_key(alt(KeyCode::Char('a')));
    assert_eq!(open_now(&app), Some(Chat::Peer(n("789"))));
    let pages: Vec<Request> = app.take_requests();
    assert_eq!(pages.iter().filter(|r| matches!(r, Request::Page { at: PageAt::Latest, .. })).count(), 5);
}

#[test]
fn given_a_message_in_another_conversation_then_the_list_updates_and_the_view_stays() {
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), history(200), true);
    draw(&mut app, 80, 20);
    app.on_key(key(KeyCode::PageUp));
    draw(&mut app, 80, 20);
    let scroll = app.open.as_ref().map(|o| o.scroll);
    assert!(matches!(scroll, Some(Scroll::At { .. })), "{scroll:?}");
    let before = screen(&draw(&mut app, 80, 20));
    app.on_event(Event::Message {
        id: MessageId::new(),
        from: n("789"),
        text: "are you there?".into(),
        sent_at_ms: NOW,
        group: None,
    });
    app.on_event(Event::Presence { number: n("456"), online: None });
    let top = &app.conversations[0];
    assert_eq!((top.chat.clone(), top.unread), (Chat::Peer(n("789")), 3));
    assert_eq!(app.conversation(&Chat::Peer(n("456"))).map(|c| c.online), Some(Online::No));
    assert_eq!(app.open.as_ref().map(|o| o.scroll), scroll);
    let after = screen(&draw(&mut app, 80, 20));
    let pane =
        |s: &str| s.lines().map(|l| l.chars().skip(26).collect::<String>()).take(15).collect::<Vec<_>>();
    assert_eq!(pane(&before)[1..], pane(&after)[1..], "the conversation did not move");
    // A message in the open conversation while scrolled up does not move the view either.
    app.on_event(Event::Message {
        id: MessageId::new(),
        from: n("456"),
        text: "new".into(),
        sent_at_ms: NOW,
        group: None,
    });
    assert_eq!(app.open.as_ref().map(|o| o.scroll), scroll);
}

#[test]
fn given_received_messages_on_screen_then_read_receipts_go_once_for_what_is_shown() {
    let mut app = app();
    list(&mut app, vec![peer("456", Online::Yes, 50, None)]);
    let entries: Vec<_> = (0..50)
        .map(|i| said(Some("456"), NOW - (50 - i) * MINUTE, &format!("unread {i}"), MessageState::Received))
        .collect();
    let oldest = entries[0].id;
    open(&mut app, Chat::Peer(n("456")), entries, false);
    // Opening goes to the first unread message, under a "new messages" rule.
    let (terminal, asked) = draw_asking(&mut app, 80, 12);
    let shown = screen(&terminal);
    assert!(shown.contains(" new messages ") && shown.contains("unread 0"), "{shown}");
    assert!(!shown.contains("unread 49"), "{shown}");
    let marked: Vec<Request> = asked.into_iter().filter(|r| matches!(r, Request::MarkRead(_))).collect();
    let [Request::MarkRead(ids)] = marked.as_slice() else { panic!("one MarkRead: {marked:?}") };
    let visible = app.drawn.chat.as_ref().map_or(0, |d| d.visible.len());
    assert_eq!(ids.len(), visible, "what is on screen, and only that");
    assert!(ids.contains(&oldest));
    let open = app.open.as_ref().expect("open");
    assert!(ids.iter().all(|id| open.entries.iter().any(|e| e.id == *id && e.state == MessageState::Read)));
    assert_eq!(open.entries.iter().filter(|e| e.state == MessageState::Read).count(), ids.len());
    assert_eq!(app.conversation(&Chat::Peer(n("456"))).map(|c| c.unread), Some(50 - ids.len() as u32));
    let (_, asked) = draw_asking(&mut app, 80, 12);
    assert!(!asked.iter().any(|r| matches!(r, Request::MarkRead(_))), "not twice");
    // Not while the terminal is in the background.
    app.on_terminal(TermEvent::FocusLost);
    app.on_key(key(KeyCode::PageDown));
    let (_, asked) = draw_asking(&mut app, 80, 12);
    assert!(!asked.iter().any(|r| matches!(r, Request::MarkRead(_))));
    let read =
        app.open.as_ref().map_or(0, |o| o.entries.iter().filter(|e| e.state == MessageState::Read).count());
    assert_eq!(read, ids.len());
    app.on_terminal(TermEvent::FocusGained);
    let (_, asked) = draw_asking(&mut app, 80, 12);
    assert!(asked.iter().any(|r| matches!(r, Request::MarkRead(_))), "back in front: what is shown now");
}

#[test]
fn given_scrolling_up_a_long_history_then_older_pages_load_and_the_window_stays_bounded() {
    let mut app = app();
    list(&mut app, vec![peer("456", Online::Yes, 0, None)]);
    let page = |from: u64| -> Vec<whatsap2p_tui::backend::Entry> {
        (0..PAGE as u64)
            .map(|k| said(Some("456"), NOW - (from + PAGE as u64 - k) * MINUTE, "x", MessageState::Read))
            .collect()
    };
    open(&mut app, Chat::Peer(n("456")), page(0), true);
    let mut pages = 1;
    for _ in 0..200 {
        draw(&mut app, 80, 24);
        app.on_key(key(KeyCode::PageUp));
        for r in app.take_requests() {
            if let Request::Page { chat, at: at @ PageAt::Before(_), limit } = r {
                assert_eq!(limit, PAGE);
                let entries = page(pages * PAGE as u64);
                pages += 1;
                app.on_outcome(Outcome::Page { chat, at, result: Ok(Page { entries, more: true }) });
            }
        }
        let held = app.open.as_ref().map_or(0, |o| o.entries.len());
        assert!(held <= MAX_WINDOW + PAGE, "{held} messages held");
    }
    assert!(pages > 10, "older pages were loaded as the view went up: {pages}");
    let open = app.open.as_ref().expect("open");
    assert!(open.more_after, "the newest were dropped from the window");
    // Back to the newest: the latest page is asked again.
    app.on_key(key(KeyCode::Esc));
    assert!(app.take_requests().iter().any(|r| matches!(r, Request::Page { at: PageAt::Latest, .. })));
}

#[test]
fn given_a_receipt_before_the_answer_to_its_send_then_it_is_not_lost() {
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), history(2), false);
    typed(&mut app, "quick");
    app.on_key(key(KeyCode::Enter));
    app.take_requests();
    let id = MessageId::new();
    app.on_event(Event::Delivered { id, to: n("456") });
    app.on_outcome(Outcome::Sent {
        chat: Chat::Peer(n("456")),
        result: Ok(text(id, None, NOW, "quick", MessageState::Sent)),
        text: None,
    });
    let open = app.open.as_ref().expect("open");
    let last = open.entries.back().expect("the sent message");
    assert_eq!((last.id, last.state), (id, MessageState::Delivered));
    assert_eq!(open.sending, 0);
    app.on_event(Event::Read { id, by: n("456") });
    app.on_event(Event::Delivered { id, to: n("456") });
    let state = app.open.as_ref().and_then(|o| o.entries.back()).map(|e| e.state);
    assert_eq!(state, Some(MessageState::Read), "a late receipt does not take it back");
    assert_eq!(app.conversations[0].chat, Chat::Peer(n("456")), "our message moved it to the top");
}

#[test]
fn given_a_failed_send_then_the_error_is_shown() {
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), history(2), false);
    app.on_outcome(Outcome::Sent {
        chat: Chat::Peer(n("456")),
        result: Err("message of 40000 bytes is over the limit".into()),
        text: Some("a very long text".into()),
    });
    assert_eq!(app.input.text(), "a very long text", "given back to edit");
    assert!(app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("over the limit")));
}

#[test]
fn given_a_transfer_then_progress_shows_and_ctrl_x_asks_to_cancel_it() {
    let mut app = app();
    three(&mut app);
    let path = std::path::Path::new("/tmp/big.bin");
    let big = file(None, NOW, "big.bin", path, 1 << 30, "application/octet-stream");
    let id = big.id;
    open(&mut app, Chat::Peer(n("456")), vec![big], false);
    app.on_event(Event::Progress { id, peer: n("456"), outgoing: true, bytes: 1 << 20, total: 1 << 30 });
    assert!(app.transfers.contains_key(&id));
    app.on_key(ctrl('x'));
    assert_eq!(app.take_requests(), vec![Request::CancelTransfer(id)]);
    app.on_outcome(Outcome::Cancelled { id, result: Err("no file transfer is under way".into()) });
    assert!(app.transfers.contains_key(&id), "still running when the cancel failed");
    app.on_event(Event::FileSent { id, to: n("456"), resumed_from: 0 });
    assert!(!app.transfers.contains_key(&id));
    assert_eq!(
        app.open.as_ref().and_then(|o| o.entries.back()).map(|e| e.state),
        Some(MessageState::Delivered)
    );
}

#[test]
fn given_a_cancel_that_succeeds_then_the_gauge_goes_and_the_file_is_marked_failed() {
    let mut app = app();
    three(&mut app);
    let path = std::path::Path::new("/tmp/big.bin");
    let waiting = file(None, NOW, "big.bin", path, 1 << 30, "application/octet-stream");
    let id = waiting.id;
    open(&mut app, Chat::Peer(n("456")), vec![waiting], false);
    // Queued for a recipient who is offline: no progress yet, and still cancellable.
    app.on_key(ctrl('x'));
    assert_eq!(app.take_requests(), vec![Request::CancelTransfer(id)]);
    app.on_outcome(Outcome::Cancelled { id, result: Ok(()) });
    let last = app.open.as_ref().and_then(|o| o.entries.back()).expect("the file");
    assert_eq!(last.state, MessageState::Failed);
    assert!(app.notice.as_ref().is_some_and(|n| !n.error && n.text == "transfer cancelled"));
    // Its end, as the core reports it, changes nothing more; nothing is left to cancel.
    app.on_event(Event::FileFailed {
        id,
        peer: n("456"),
        outgoing: true,
        reason: "cancelled by 123".into(),
        code: Some(FileFailCode::Cancelled),
    });
    assert!(app.notice.as_ref().is_some_and(|n| !n.error && n.text.contains("cancelled")));
    app.on_key(ctrl('x'));
    assert!(app.take_requests().is_empty());
    assert!(app.notice.as_ref().is_some_and(|n| n.text == "no transfer to cancel here"));
}

#[test]
fn given_an_incoming_file_then_its_line_and_gauge_show_and_ctrl_x_cancels_it() {
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), history(2), false);
    let id = MessageId::new();
    app.on_event(Event::FileIncoming {
        id,
        from: n("456"),
        name: "film.mkv".into(),
        size: 100 << 20,
        media_type: "video/x-matroska".into(),
        resumed_from: 0,
    });
    app.on_event(Event::Progress { id, peer: n("456"), outgoing: false, bytes: 40 << 20, total: 100 << 20 });
    let shown = screen(&draw(&mut app, 80, 24));
    assert!(shown.contains("[file] film.mkv · 100.0 MiB"), "{shown}");
    assert!(shown.contains("40%"), "the gauge: {shown}");
    assert_eq!(app.conversations[0].unread, 0, "not counted before it is here");
    app.on_key(ctrl('x'));
    assert_eq!(app.take_requests(), vec![Request::CancelTransfer(id)]);
    app.on_event(Event::FileFailed {
        id,
        peer: n("456"),
        outgoing: false,
        reason: "cancelled by 123".into(),
        code: Some(FileFailCode::Cancelled),
    });
    app.on_outcome(Outcome::Cancelled { id, result: Ok(()) });
    assert!(app.transfers.is_empty());
    let shown = screen(&draw(&mut app, 80, 24));
    assert!(shown.lines().any(|l| l.contains("film.mkv") && l.contains('✗')), "{shown}");
}

#[test]
fn given_an_incoming_attempt_that_fails_then_the_gauge_waits_for_the_retry_and_the_file_replaces_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.png");
    gradient_png(&path);
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), history(2), false);
    let id = MessageId::new();
    let incoming = |resumed_from| Event::FileIncoming {
        id,
        from: n("456"),
        name: "p.png".into(),
        size: 100,
        media_type: "image/png".into(),
        resumed_from,
    };
    app.on_event(incoming(0));
    let shown = screen(&draw(&mut app, 80, 24));
    assert!(shown.contains("[file] p.png"), "a line, not a picture, until it is here: {shown}");
    assert!(app.photos.is_empty(), "nothing to decode yet");
    app.on_event(Event::FileFailed {
        id,
        peer: n("456"),
        outgoing: false,
        reason: "link closed".into(),
        code: Some(FileFailCode::LinkClosed),
    });
    assert!(app.transfers.is_empty());
    assert!(app.notice.as_ref().is_some_and(|n| n.error && n.text.contains("resumes")));
    app.on_event(incoming(40));
    assert_eq!(app.transfers.get(&id).map(|t| t.bytes), Some(40));
    app.on_event(Event::FileReceived {
        id,
        from: n("456"),
        name: "p.png".into(),
        path: path.clone(),
        size: 100,
        blake3: [0; 32],
        media_type: "image/png".into(),
        dimensions: Some((96, 64)),
        resumed_from: 40,
    });
    assert!(app.transfers.is_empty());
    let open = app.open.as_ref().expect("open");
    let ours: Vec<_> = open.entries.iter().filter(|e| e.id == id).collect();
    assert_eq!(ours.len(), 1, "one line for the file");
    assert!(matches!(&ours[0].body, Body::File(f) if f.path == path && f.is_photo()));
    let shown = screen(&draw(&mut app, 80, 24));
    assert!(shown.contains("p.png (96×64"), "{shown}");
    assert!(shown.matches(['▀', '▄']).count() > 20, "drawn: {shown}");
}

#[test]
fn given_a_received_photo_then_selecting_it_and_enter_show_it_large() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.png");
    gradient_png(&path);
    let mut app = app();
    three(&mut app);
    open(&mut app, Chat::Peer(n("456")), history(2), false);
    let id = MessageId::new();
    app.on_event(Event::FileReceived {
        id,
        from: n("456"),
        name: "p.png".into(),
        path: path.clone(),
        size: 100,
        blake3: [0; 32],
        media_type: "image/png".into(),
        dimensions: Some((96, 64)),
        resumed_from: 0,
    });
    let shown = screen(&draw(&mut app, 80, 24));
    assert!(shown.contains("p.png (96×64"), "{shown}");
    assert!(matches!(
        &app.open.as_ref().and_then(|o| o.entries.back()).map(|e| &e.body),
        Some(Body::File(_))
    ));
    app.focus = Focus::Chat;
    app.on_key(key(KeyCode::Up));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.overlay, Some(Overlay::Photo(id)));
    let large = screen(&draw(&mut app, 80, 24));
    assert!(large.matches('▄').count() + large.matches('▀').count() > 300, "{large}");
    app.on_key(key(KeyCode::Esc));
    assert!(app.overlay.is_none());
}

#[test]
fn given_mouse_clicks_and_wheel_then_conversations_open_and_the_view_scrolls() {
    let mut app = app();
    three(&mut app);
    draw(&mut app, 100, 20);
    let (_, rows) = app.drawn.list.clone().expect("list drawn");
    let (y, chat) = rows[1].clone();
    app.on_terminal(TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: 3,
        row: y + 1,
        modifiers: KeyModifiers::NONE,
    }));
    assert_eq!(app.open.as_ref().map(|o| o.chat.clone()), Some(chat.clone()));
    app.take_requests();
    app.on_outcome(Outcome::Page {
        chat,
        at: PageAt::Latest,
        result: Ok(Page { entries: history(100), more: false }),
    });
    draw(&mut app, 100, 20);
    app.on_terminal(TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollUp,
        column: 60,
        row: 5,
        modifiers: KeyModifiers::NONE,
    }));
    assert!(matches!(app.open.as_ref().map(|o| o.scroll), Some(Scroll::At { skip: 0, .. })));
    app.on_terminal(TermEvent::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollDown,
        column: 60,
        row: 5,
        modifiers: KeyModifiers::NONE,
    }));
    assert_eq!(app.open.as_ref().map(|o| o.scroll), Some(Scroll::Bottom));
}

#[test]
fn given_directory_lost_and_back_then_the_status_says_so_and_ctrl_c_quits() {
    let mut app = app();
    app.on_event(Event::DirectoryLost { reason: "the server closed the connection".into() });
    assert_eq!(app.directory, whatsap2p_tui::app::Directory::Reconnecting);
    assert!(screen(&draw(&mut app, 80, 12)).contains("reconnecting"));
    app.on_event(Event::Reconnected);
    assert!(screen(&draw(&mut app, 80, 12)).contains("connected"));
    app.on_terminal(TermEvent::Paste("pasted\r\ntext".into()));
    assert_eq!(app.input.text(), "pasted\ntext");
    app.on_key(ctrl('c'));
    assert!(app.quit);
}

#[test]
fn given_a_draft_then_it_stays_with_its_conversation_and_question_mark_is_text_in_a_chat() {
    let mut app = app();
    three(&mut app);
    app.on_key(key(KeyCode::Char('?')));
    assert_eq!(app.overlay, Some(Overlay::Help { scroll: 0 }), "? on an empty line in the list");
    app.on_key(key(KeyCode::Esc));
    open(&mut app, Chat::Peer(n("456")), history(2), false);
    typed(&mut app, "? half-written for 456");
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.open.as_ref().map(|o| o.chat.clone()), Some(Chat::Peer(n("789"))));
    assert!(app.input.is_empty(), "the draft did not follow to 789");
    app.on_key(key(KeyCode::Enter));
    assert!(!app.take_requests().iter().any(|r| matches!(r, Request::SendText { .. })));
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(app.input.text(), "? half-written for 456");
    app.on_key(key(KeyCode::Enter));
    assert!(app
        .take_requests()
        .contains(&Request::SendText { chat: Chat::Peer(n("456")), text: "? half-written for 456".into() }));
}

#[test]
fn given_a_group_message_then_one_member_s_receipt_does_not_mark_it_delivered() {
    let mut app = app();
    three(&mut app);
    let family = Chat::Group(GroupId([7; 16]));
    open(&mut app, family.clone(), history(1), false);
    let id = MessageId::new();
    app.on_outcome(Outcome::Sent {
        chat: family,
        result: Ok(text(id, None, NOW, "hi all", MessageState::Sent)),
        text: None,
    });
    app.on_event(Event::Delivered { id, to: n("456") });
    app.on_event(Event::Read { id, by: n("456") });
    assert_eq!(app.open.as_ref().and_then(|o| o.entries.back()).map(|e| e.state), Some(MessageState::Sent));
}

#[test]
fn given_a_message_request_or_a_pending_message_then_the_notice_says_what_to_do() {
    let mut app = app();
    three(&mut app);
    let item =
        whatsap2p_client::RequestItem::Text { id: MessageId::new(), text: "hi".into(), sent_at_ms: NOW };
    app.on_event(Event::Request { from: n("301"), item });
    let notice = app.notice.as_ref().expect("a notice");
    assert!(
        !notice.error && notice.text.contains("301") && notice.text.contains("/add 301"),
        "{}",
        notice.text
    );
    app.on_event(Event::Pending { id: MessageId::new(), to: n("456") });
    let notice = app.notice.as_ref().expect("a notice");
    assert!(notice.text.contains("456 has not added you"), "{}", notice.text);
}

#[test]
fn given_request_commands_then_requests_are_listed_ignored_blocked_and_unblocked() {
    let mut app = app();
    three(&mut app);
    let run = |app: &mut App, line: &str| {
        typed(app, line);
        app.on_key(key(KeyCode::Enter));
        app.take_requests()
    };
    let said = |app: &App| app.notice.as_ref().map(|n| (n.error, n.text.clone())).expect("a notice");
    // Listing: said even when none waits (at the start, nothing is said then).
    assert_eq!(run(&mut app, "/requests"), vec![Request::MessageRequests]);
    app.on_outcome(Outcome::MessageRequests(Ok(vec![])));
    assert_eq!(said(&app), (false, "no message requests wait".into()));
    assert_eq!(run(&mut app, "/requests"), vec![Request::MessageRequests]);
    app.on_outcome(Outcome::MessageRequests(Ok(vec![n("301")])));
    assert!(said(&app).1.contains("/add 301 accepts one, /ignore or /block refuses it"), "{:?}", said(&app));
    // Each answer goes to the client, and what came of it is said.
    let block = Request::AnswerRequest { number: n("301"), answer: Answer::Block };
    assert_eq!(run(&mut app, "/block 301"), vec![block]);
    app.on_outcome(Outcome::Answered { number: n("301"), answer: Answer::Block, result: Ok(true) });
    assert_eq!(said(&app), (false, "blocked 301: nothing 301 sends is shown (301 is not told)".into()));
    app.on_outcome(Outcome::Answered { number: n("301"), answer: Answer::Block, result: Ok(false) });
    assert_eq!(said(&app), (false, "301 was blocked already".into()));
    assert_eq!(
        run(&mut app, "/unblock 301"),
        vec![Request::AnswerRequest { number: n("301"), answer: Answer::Unblock }]
    );
    app.on_outcome(Outcome::Answered { number: n("301"), answer: Answer::Unblock, result: Ok(false) });
    assert_eq!(said(&app), (false, "301 was not blocked".into()));
    // Without a number, a dialog asks for it.
    assert!(run(&mut app, "/ignore").is_empty());
    assert!(matches!(&app.overlay, Some(Overlay::Dialog(d)) if d.ask == Ask::Ignore));
    assert_eq!(
        run(&mut app, "302"),
        vec![Request::AnswerRequest { number: n("302"), answer: Answer::Ignore }]
    );
    app.on_outcome(Outcome::Answered {
        number: n("302"),
        answer: Answer::Ignore,
        result: Err("no message request from 302".into()),
    });
    assert_eq!(said(&app), (true, "no message request from 302".into()));
    // Not oneself.
    assert!(run(&mut app, "/block 123").is_empty());
    assert!(said(&app).0, "refused");
}

#[test]
fn given_message_requests_held_from_before_then_the_start_says_so() {
    let mut app = App::new(me(), whatsap2p_tui::clock::Zone::utc(), Box::new(|| NOW));
    assert!(app.take_requests().contains(&Request::MessageRequests), "asked at the start");
    app.on_outcome(Outcome::MessageRequests(Ok(vec![n("301"), n("302")])));
    let notice = app.notice.as_ref().expect("a notice");
    assert!(notice.text.contains("301, 302") && notice.text.contains("/add 301"), "{}", notice.text);
}
