//! The terminal UI's figures, on a real client whose profile holds a long conversation: opening it
//! (the conversation list, the backend's page of history, the state, the first frame at 300×100)
//! beside opening a short one, and drawing a frame beside ratatui drawing the same text as a plain
//! paragraph.
//!
//! The open time goes through [`Backend::conversations`] and [`Backend::history_page`], so it
//! measures the client core's queries: `Client::conversations` and `Client::history_page` on the
//! conversation index.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::backend::TestBackend;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Terminal;
use whatsap2p_client::store::Store;
use whatsap2p_client::{Client, ClientConfig, MessageId, Number, PublicKey};
use whatsap2p_tui::app::{App, Me, PAGE};
use whatsap2p_tui::backend::{Backend, Chat, PageAt};
use whatsap2p_tui::calls::Outcome;
use whatsap2p_tui::client_backend::ClientBackend;
use whatsap2p_tui::clock::{now_ms, Zone};
use whatsap2p_tui::view;

use crate::lean_session::number;
use crate::report::{Baseline, Row, Section, Target, Unit};
use crate::server_proc::ServerProcess;
use crate::stats::{millis, Summary};
use crate::Scale;

/// The screen the figures are drawn on.
const SCREEN: (u16, u16) = (300, 100);
/// Messages in the short conversation (the open-time baseline).
const SHORT: usize = 100;
/// Frames per timed frame run.
const FRAMES: usize = 200;

/// A text of about a line and a half at 300 columns, with a wide character and an emoji.
fn text(i: usize) -> String {
    format!("message {i}: {} — 日本 👍", "lorem ipsum dolor sit amet ".repeat(1 + i % 12))
}

/// Writes `count` received messages from `from` into the profile's database, before the client
/// opens it.
async fn fill(store: &Store, from: &Number, count: usize) -> anyhow::Result<()> {
    for i in 0..count {
        store.store_incoming(from, MessageId::new(), &text(i), now_ms(), None).await?;
    }
    Ok(())
}

fn terminal() -> anyhow::Result<Terminal<TestBackend>> {
    Ok(Terminal::new(TestBackend::new(SCREEN.0, SCREEN.1))?)
}

fn app(me: &Number) -> App {
    let mut app = App::new(Me { number: me.clone(), key: PublicKey([7; 32]) }, Zone::Local, Box::new(now_ms));
    app.take_requests();
    app
}

/// Opens `chat` as the UI does at start: the conversation list and the latest page from the
/// backend, into the state, one frame.
async fn open(backend: &ClientBackend, me: &Number, chat: &Chat) -> anyhow::Result<(Duration, App)> {
    let mut app = app(me);
    let mut terminal = terminal()?;
    let t0 = Instant::now();
    let list = backend.conversations().await?;
    app.on_outcome(Outcome::Conversations(Ok(list)));
    app.open_chat(chat.clone());
    app.take_requests();
    let page = backend.history_page(chat, PageAt::Latest, PAGE).await?;
    app.on_outcome(Outcome::Page { chat: chat.clone(), at: PageAt::Latest, result: Ok(page) });
    let mut drawn = None;
    terminal.draw(|f| drawn = Some(view::render(&app, f)))?;
    let took = t0.elapsed();
    if let Some(d) = drawn {
        app.drawn(d);
    }
    Ok((took, app))
}

/// Mean time of one frame over [`FRAMES`] frames, the view moving a row each frame so every
/// frame has cells to change.
fn frames(app: &mut App) -> anyhow::Result<f64> {
    let mut terminal = terminal()?;
    let t0 = Instant::now();
    for i in 0..FRAMES {
        app.scroll_by(if i % 2 == 0 { 1 } else { -1 });
        let mut drawn = None;
        terminal.draw(|f| drawn = Some(view::render(app, f)))?;
        if let Some(d) = drawn {
            app.drawn(d);
        }
    }
    Ok(millis(t0.elapsed()) / FRAMES as f64)
}

/// The same frames as a plain ratatui paragraph of the text the UI showed, moving a row a frame.
fn paragraph_frames(lines: &[String]) -> anyhow::Result<f64> {
    let mut terminal = terminal()?;
    let t0 = Instant::now();
    for i in 0..FRAMES {
        let text: Vec<Line> = lines.iter().map(|l| Line::raw(l.as_str())).collect();
        terminal.draw(|f| f.render_widget(Paragraph::new(text).scroll(((i % 2) as u16, 0)), f.area()))?;
    }
    Ok(millis(t0.elapsed()) / FRAMES as f64)
}

fn screen_lines(app: &App) -> anyhow::Result<Vec<String>> {
    let mut terminal = terminal()?;
    terminal.draw(|f| {
        view::render(app, f);
    })?;
    let buf = terminal.backend().buffer();
    Ok((0..buf.area.height)
        .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect())
}

struct Figures {
    open_long: Vec<f64>,
    open_short: Vec<f64>,
    frame: Vec<f64>,
    paragraph: Vec<f64>,
}

async fn measure(root: &Path, long: usize, runs: usize) -> anyhow::Result<Figures> {
    let server = ServerProcess::start().await?;
    let (me, talker, short_talker) = (number(56, 0)?, number(56, 1)?, number(56, 2)?);
    let dir = root.join(me.as_str());
    let profile_dir = dir.join("profile");
    std::fs::create_dir_all(&profile_dir)?;
    {
        let store = Store::open(&profile_dir.join("profile.sqlite"))?;
        fill(&store, &talker, long).await.context("writing the long conversation")?;
        fill(&store, &short_talker, SHORT).await.context("writing the short conversation")?;
    }
    let config = ClientConfig {
        number: me.clone(),
        profile_dir,
        servers: vec![server.addr.into()],
        listen: ([127, 0, 0, 1], 0).into(),
        listen_udp: 0,
        timeouts: Default::default(),
        downloads: dir.join("downloads"),
        max_file_size: ClientConfig::DEFAULT_MAX_FILE_SIZE,
        storage: Default::default(),
        versions: whatsap2p_proto::version::SPOKEN,
    };
    let (client, events) = Client::start(config).await.context("starting the client")?;
    // Held, so the client's tasks keep someone to tell.
    let _events = events;
    let backend = ClientBackend::new(client);
    let (long_chat, short_chat) = (Chat::Peer(talker), Chat::Peer(short_talker));
    let mut figures =
        Figures { open_long: Vec::new(), open_short: Vec::new(), frame: Vec::new(), paragraph: Vec::new() };
    // One untimed round of each, then the timed ones, alternating so both see the same machine.
    for run in 0..=runs {
        let (long_took, mut opened) = open(&backend, &me, &long_chat).await?;
        let (short_took, _) = open(&backend, &me, &short_chat).await?;
        let lines = screen_lines(&opened)?;
        let frame = frames(&mut opened)?;
        let paragraph = paragraph_frames(&lines)?;
        if run > 0 {
            figures.open_long.push(millis(long_took));
            figures.open_short.push(millis(short_took));
            figures.frame.push(frame);
            figures.paragraph.push(paragraph);
        }
    }
    backend.logout().await;
    server.stop().await?;
    Ok(figures)
}

/// The `tui` group.
pub async fn tui(scale: &Scale) -> Section {
    let result = async {
        let root = tempfile::Builder::new().prefix("whatsap2p-bench-tui").tempdir()?;
        measure(root.path(), scale.tui_messages, scale.runs).await
    }
    .await;
    let summary = |values: &Result<Figures, anyhow::Error>, pick: fn(&Figures) -> &Vec<f64>| match values {
        Ok(f) => Summary::of(pick(f)).ok_or_else(|| "no runs".to_owned()),
        Err(e) => Err(format!("{e:#}")),
    };
    let baseline = |pick: fn(&Figures) -> &Vec<f64>| match summary(&result, pick) {
        Ok(s) => Baseline::Measured(s),
        Err(e) => Baseline::Unavailable(e),
    };
    let n = scale.tui_messages;
    Section {
        group: "tui",
        rows: vec![
            Row {
                group: "tui",
                figure: format!("TUI: open a conversation of {n} messages (list + page + first frame)"),
                unit: Unit::Millis,
                ours: summary(&result, |f| &f.open_long),
                baseline: baseline(|f| &f.open_short),
                target: Target::Below(50.0),
            },
            Row {
                group: "tui",
                figure: format!("TUI: one frame at {}×{}, {n} messages", SCREEN.0, SCREEN.1),
                unit: Unit::Millis,
                ours: summary(&result, |f| &f.frame),
                baseline: baseline(|f| &f.paragraph),
                target: Target::Below(5.0),
            },
        ],
        details: vec![
            format!(
                "A profile holding a conversation of {n} received messages (and one of {SHORT}), written with \
                 `Store::store_incoming` before `Client::start`; texts of 1–2 lines at 300 columns with a wide \
                 character and an emoji."
            ),
            format!(
                "Open: `ClientBackend::conversations` (`Client::conversations`) into the state, `App::open_chat`, \
                 `ClientBackend::history_page(Latest, {PAGE})` (`Client::history_page` on the conversation index), \
                 the page into the state, one frame on a {}×{} `TestBackend`. Baseline: the same for the \
                 conversation of {SHORT} messages.",
                SCREEN.0, SCREEN.1
            ),
            format!(
                "Frame: the mean of {FRAMES} `Terminal::draw` of `view::render` (list, conversation, input, status), \
                 the view moving one row each frame. Baseline: ratatui's own `Paragraph` of the same screen's text, \
                 {FRAMES} frames moving one row each, on the same backend."
            ),
            format!("{} timed runs after one untimed round.", scale.runs),
        ],
    }
}
