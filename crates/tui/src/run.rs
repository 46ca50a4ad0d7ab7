//! The event loop. [`run`] takes the terminal, asks for the number if it was not given, starts the
//! client (the screen stays responsive while it connects), then [`drive`]s the UI until the user
//! leaves, and logs out. [`drive`] is one `select!` over terminal input, the client's events,
//! answers to calls, a clock tick and the shutdown signals; it redraws after each batch and never
//! awaits a backend call, so it is also what the tests drive with a test terminal and a mock.

use std::future::Future;
use std::io;
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::{Stream, StreamExt};
use ratatui::style::Style;
use ratatui::Terminal;
use tokio::sync::mpsc;
use whatsap2p_client::{Client, Event, Number};

use crate::app::{App, Me};
use crate::backend::Backend;
use crate::calls::Calls;
use crate::client_backend::ClientBackend;
use crate::clock::{self, Zone};
use crate::editor::Editor;
use crate::terminal::{self, Term};
use crate::text;
use crate::view::{self, overlay};

/// Client events handled before the next frame is drawn: a burst of messages costs one frame.
const EVENT_BATCH: usize = 256;
/// Redraw at least this often (times left, day labels).
const TICK: Duration = Duration::from_secs(1);

/// Draws a small centred box: a title, lines, and a field being typed.
fn splash<T: ratatui::backend::Backend>(
    terminal: &mut Terminal<T>,
    title: &str,
    lines: &[String],
    field: Option<&Editor>,
) -> io::Result<()>
where
    T::Error: Send + Sync + 'static,
{
    terminal
        .draw(|frame| {
            let screen = frame.area();
            let h = lines.len() as u16 + 2 + u16::from(field.is_some());
            let inner = overlay::boxed(frame, overlay::centred(screen, 64, h), title);
            let buf = frame.buffer_mut();
            for (k, line) in lines.iter().enumerate().take(usize::from(inner.height)) {
                buf.set_stringn(
                    inner.x,
                    inner.y + k as u16,
                    text::clean(line),
                    usize::from(inner.width),
                    Style::new(),
                );
            }
            let y = inner.y + lines.len() as u16;
            if let Some(editor) = field.filter(|_| y < inner.bottom()) {
                overlay::field(frame, inner, y, editor);
            }
        })
        .map(|_| ())
        .map_err(io::Error::other)
}

fn is_quit(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL)
        && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d'))
}

/// Asks for our number in a small dialog; `None` if the user gives up (Esc, Ctrl-C).
async fn ask_number<T: ratatui::backend::Backend>(
    terminal: &mut Terminal<T>,
    input: &mut (impl Stream<Item = io::Result<TermEvent>> + Unpin),
) -> io::Result<Option<Number>>
where
    T::Error: Send + Sync + 'static,
{
    let mut editor = Editor::default();
    let mut problem = String::new();
    loop {
        let lines =
            ["Welcome to whatsap2p!".to_owned(), String::new(), "Your number:".to_owned(), problem.clone()];
        splash(terminal, "whatsap2p", &lines, Some(&editor))?;
        let Some(event) = input.next().await else { return Ok(None) };
        let TermEvent::Key(key) = event? else { continue };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        match key.code {
            _ if is_quit(&key) => return Ok(None),
            KeyCode::Esc => return Ok(None),
            KeyCode::Enter => match Number::new(editor.text()) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => problem = format!("'{}': {e}", editor.text().trim()),
            },
            KeyCode::Backspace => editor.backspace(),
            KeyCode::Left => editor.left(),
            KeyCode::Right => editor.right(),
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                editor.insert_char(c);
            }
            _ => {}
        }
    }
}

/// Resolves on SIGTERM, SIGHUP (the terminal went away) or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let wait = |kind: SignalKind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(SignalKind::terminate()) => {}
            _ = wait(SignalKind::hangup()) => {}
            _ = wait(SignalKind::interrupt()) => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the terminal UI: asks for the number when `number` is `None`, starts the client with
/// `start` (showing that it connects to `server`), and runs until the user leaves; then logs out.
/// The terminal is restored on every way out. An error is the reason the client could not run.
pub async fn run<F, Fut>(number: Option<Number>, server: String, start: F) -> Result<(), String>
where
    F: FnOnce(Number) -> Fut,
    Fut: Future<Output = Result<(Client, mpsc::Receiver<Event>), String>> + Send + 'static,
{
    let mut term = Term::enter().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let picker = terminal::graphics();
    let mut input = EventStream::new();
    let number = match number {
        Some(n) => n,
        None => match ask_number(&mut term.terminal, &mut input).await {
            Ok(Some(n)) => n,
            Ok(None) => return Err("no number given".into()),
            Err(e) => return Err(format!("terminal: {e}")),
        },
    };
    let connecting = [format!("Connecting to {server} as {number}…"), "Ctrl-C gives up.".to_owned()];
    let mut starting = tokio::spawn(start(number.clone()));
    let started = loop {
        splash(&mut term.terminal, "whatsap2p", &connecting, None).map_err(|e| format!("terminal: {e}"))?;
        tokio::select! {
            done = &mut starting => break done.map_err(|e| format!("starting the client: {e}"))?,
            event = input.next() => match event {
                Some(Ok(TermEvent::Key(key))) if is_quit(&key) => {
                    starting.abort();
                    return Err("cancelled while connecting".into());
                }
                None | Some(Err(_)) => {
                    starting.abort();
                    return Err("the terminal went away".into());
                }
                _ => {}
            },
        }
    };
    let (client, events) = started?;
    let me = Me { number, key: client.identity_key() };
    let mut app = App::new(me, Zone::Local, Box::new(clock::now_ms));
    let (backend, events) = ClientBackend::new(client, events);
    let mut calls = Calls::new(std::sync::Arc::new(backend), picker);
    let outcome =
        drive(&mut term.terminal, &mut input, events, &mut app, &mut calls, shutdown_signal()).await;
    let _ = splash(&mut term.terminal, "whatsap2p", &["Logging out…".to_owned()], None);
    if let Some(backend) = calls.finish().await {
        backend.logout().await;
    }
    drop(term);
    outcome.map_err(|e| format!("terminal: {e}"))
}

/// Runs `app` until it quits, the terminal input ends, the client's events end or `shutdown`
/// resolves.
pub async fn drive<B: Backend, T: ratatui::backend::Backend>(
    terminal: &mut Terminal<T>,
    input: &mut (impl Stream<Item = io::Result<TermEvent>> + Unpin),
    mut events: mpsc::Receiver<Event>,
    app: &mut App,
    calls: &mut Calls<B>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    T::Error: Send + Sync + 'static,
{
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if std::mem::take(&mut app.repaint) {
            terminal.clear().map_err(io::Error::other)?;
        }
        let mut drawn = None;
        terminal.draw(|frame| drawn = Some(view::render(app, frame))).map_err(io::Error::other)?;
        if let Some(d) = drawn {
            app.drawn(d);
        }
        for request in app.take_requests() {
            if let Err(busy) = calls.submit(request) {
                app.notice = Some(crate::app::Notice { text: busy.to_string(), error: true });
            }
        }
        if app.quit {
            return Ok(());
        }
        if std::mem::take(&mut app.redraw) {
            continue;
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            event = input.next() => match event {
                Some(Ok(TermEvent::Resize(..))) => terminal.autoresize().map_err(io::Error::other)?,
                Some(Ok(e)) => app.on_terminal(e),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            event = events.recv() => match event {
                Some(e) => {
                    app.on_event(e);
                    for _ in 0..EVENT_BATCH {
                        match events.try_recv() {
                            Ok(e) => app.on_event(e),
                            Err(_) => break,
                        }
                    }
                }
                None => return Ok(()),
            },
            outcome = calls.next(), if !calls.is_idle() => app.on_outcome(outcome),
            _ = tick.tick() => {}
        }
    }
}
