//! The real event loop ([`drive`]) on a test terminal and the mock backend: a call that takes as
//! long as it likes never stops the screen from taking keys, showing messages and quitting.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use futures::StreamExt;
use ratatui::backend::{ClearType, TestBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};
use ratatui::Terminal;
use ratatui_image::picker::Picker;
use tokio::sync::Notify;
use whatsap2p_client::{Event, MessageId};
use whatsap2p_tui::backend::Online;
use whatsap2p_tui::calls::Calls;
use whatsap2p_tui::clock::Zone;
use whatsap2p_tui::{drive, App};

/// A test terminal whose screen the test can read while the loop owns it.
struct Watched {
    inner: TestBackend,
    screen: Arc<Mutex<String>>,
    changed: Arc<Notify>,
}

impl ratatui::backend::Backend for Watched {
    type Error = std::convert::Infallible;

    fn draw<'a, I: Iterator<Item = (u16, u16, &'a Cell)>>(&mut self, content: I) -> Result<(), Self::Error> {
        self.inner.draw(content)
    }
    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.hide_cursor()
    }
    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.show_cursor()
    }
    fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
        self.inner.get_cursor_position()
    }
    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Self::Error> {
        self.inner.set_cursor_position(position)
    }
    fn clear(&mut self) -> Result<(), Self::Error> {
        self.inner.clear()
    }
    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Self::Error> {
        self.inner.clear_region(clear_type)
    }
    fn size(&self) -> Result<Size, Self::Error> {
        self.inner.size()
    }
    fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
        self.inner.window_size()
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        *self.screen.lock().expect("screen") = self.inner.to_string();
        self.changed.notify_waiters();
        self.inner.flush()
    }
}

/// Waits (at most 10 s) until the screen satisfies `pred`.
async fn screen_shows(
    screen: &Arc<Mutex<String>>,
    changed: &Arc<Notify>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = screen.lock().expect("screen").clone();
        if pred(&now) {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!("the screen never showed {what}:\n{now}");
        }
    }
}

fn key(code: KeyCode) -> std::io::Result<TermEvent> {
    Ok(TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

#[tokio::test]
async fn given_a_call_that_never_answers_then_keys_and_messages_still_show_and_ctrl_c_quits() {
    let mock = Mock::default();
    *mock.conversations.lock().expect("conversations") = vec![peer("456", Online::Yes, 0, None)];
    let mut calls = Calls::new(Arc::new(mock.clone()), Picker::halfblocks());
    let mut app = App::new(me(), Zone::utc(), Box::new(|| NOW));
    let (screen, changed) = (Arc::new(Mutex::new(String::new())), Arc::new(Notify::new()));
    let backend =
        Watched { inner: TestBackend::new(80, 16), screen: screen.clone(), changed: changed.clone() };
    let mut terminal = Terminal::new(backend).expect("terminal");
    let (keys, mut input) = futures::channel::mpsc::unbounded();
    let (events, events_rx) = tokio::sync::mpsc::channel(16);

    let script = async {
        // The list comes from the backend, off the loop.
        screen_shows(&screen, &changed, "the conversation list", |s| s.contains("● 456")).await;
        for c in "/ping 456".chars() {
            keys.unbounded_send(key(KeyCode::Char(c))).expect("key");
        }
        keys.unbounded_send(key(KeyCode::Enter)).expect("key");
        mock.ping_started.notified().await;
        // The ping is stuck, as a dial to an unreachable address would be.
        for c in "still typing".chars() {
            keys.unbounded_send(key(KeyCode::Char(c))).expect("key");
        }
        screen_shows(&screen, &changed, "the typed text", |s| s.contains("› still typing")).await;
        let id = MessageId::new();
        events
            .send(Event::Message {
                id,
                from: n("789"),
                text: "hello from 789".into(),
                sent_at_ms: NOW,
                group: None,
            })
            .await
            .expect("event");
        screen_shows(&screen, &changed, "the new conversation", |s| {
            s.contains("hello from 789") && s.contains(" 1 ")
        })
        .await;
        keys.unbounded_send(Ok(TermEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))))
            .expect("key");
    };
    let (result, ()) = tokio::join!(
        drive(&mut terminal, &mut input, events_rx, &mut app, &mut calls, std::future::pending()),
        script
    );
    result.expect("the loop ends cleanly");
    assert!(app.quit);
    assert_eq!(app.input.text(), "still typing");
    let calls_made = mock.calls();
    assert!(calls_made.contains(&"ping 456".to_owned()), "{calls_made:?}");
    // Drawn, so reported shown: a crash from here on does not show it again.
    assert_eq!(calls_made.iter().filter(|c| *c == "shown 789").count(), 1, "{calls_made:?}");
    assert!(!app.notice.as_ref().is_some_and(|n| n.text.contains("456 is")), "the ping never answered");
    let first = app.conversations.first().map(|c| (c.name.clone(), c.unread));
    assert_eq!(first, Some(("789".to_owned(), 1)));
}

#[tokio::test]
async fn given_a_stuck_call_then_other_calls_answer_and_sends_keep_their_order() {
    let mock = Mock::default();
    let mut calls = Calls::new(Arc::new(mock.clone()), Picker::halfblocks());
    let chat = whatsap2p_tui::backend::Chat::Peer(n("456"));
    calls.submit(whatsap2p_tui::calls::Request::Ping(n("789"))).expect("submit");
    for text in ["first", "second", "third"] {
        calls
            .submit(whatsap2p_tui::calls::Request::SendText { chat: chat.clone(), text: text.into() })
            .expect("submit");
    }
    let mut sent = Vec::new();
    while sent.len() < 3 {
        let outcome = tokio::time::timeout(Duration::from_secs(10), calls.next()).await.expect("an answer");
        match outcome {
            whatsap2p_tui::calls::Outcome::Sent { text: Some(t), result: Ok(_), .. } => sent.push(t),
            _ => panic!("only the sends answer while the ping is stuck"),
        }
    }
    assert_eq!(sent, ["first", "second", "third"]);
    let made = mock.calls();
    let sends: Vec<&String> = made.iter().filter(|c| c.starts_with("send_text")).collect();
    assert!(sends[0].ends_with("first") && sends[2].ends_with("third"), "{made:?}");
    assert!(!calls.is_idle(), "the ping still runs");
    mock.release_ping();
    let outcome = tokio::time::timeout(Duration::from_secs(10), calls.next()).await.expect("the ping");
    assert!(matches!(outcome, whatsap2p_tui::calls::Outcome::Pinged { .. }));
    assert!(calls.is_idle());
}

/// What a screen was sent, readable while the UI writes to it.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Written {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("written").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A bug deep in the loop: the loop runs on a [`Term`] (as `run` does, drawing real escape
/// sequences into a buffer), takes a paste, then its input panics. The panic unwinds out of the
/// runtime as it would out of `main`, and the screen is given back on its way.
#[test]
fn given_a_panic_inside_the_loop_then_the_screen_is_given_back() {
    use whatsap2p_tui::terminal::{give_back, Term};
    let written = Written::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mock = Mock::default();
    *mock.conversations.lock().expect("conversations") = vec![peer("456", Online::Yes, 0, None)];
    let out = written.clone();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            let mut term = Term::on(out, ratatui::layout::Rect::new(0, 0, 80, 16)).expect("the screen");
            let mut calls = Calls::new(Arc::new(mock), Picker::halfblocks());
            let mut app = App::new(me(), Zone::utc(), Box::new(|| NOW));
            let typed = [Ok(TermEvent::Paste("typed-before-the-bug".into()))];
            let mut input = futures::stream::iter(typed)
                .chain(futures::stream::poll_fn(|_| -> std::task::Poll<Option<std::io::Result<TermEvent>>> {
                    panic!("a bug in the loop")
                }))
                .boxed();
            let (_events, events_rx) = tokio::sync::mpsc::channel(16);
            let _ = drive(
                &mut term.terminal,
                &mut input,
                events_rx,
                &mut app,
                &mut calls,
                std::future::pending(),
            )
            .await;
        })
    }));
    assert!(unwound.is_err(), "the loop panicked");
    let bytes = written.0.lock().expect("written").clone();
    let mut taken = Vec::new();
    crossterm::execute!(
        taken,
        crossterm::terminal::EnterAlternateScreen,
        crossterm::event::EnableMouseCapture
    )
    .expect("sequences");
    assert!(bytes.starts_with(&taken), "the screen was taken first");
    let shown = String::from_utf8_lossy(&bytes);
    assert!(shown.contains("typed-before-the-bug"), "the loop drew what came before it panicked");
    let mut given_back = Vec::new();
    give_back(&mut given_back);
    assert!(bytes.ends_with(&given_back), "the last thing written gives the screen back");
}
