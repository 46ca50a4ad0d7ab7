//! The event loop both text front ends share (the menu and JSON lines).
//!
//! It reads stdin a line at a time and the client's events, and runs each line's command as a
//! future polled beside them: a command that waits (a dial of several seconds, a directory that
//! does not answer) never stops events from being taken off the client's queue or shown, and a
//! signal still ends the run. Lines are handled one at a time, in order: one typed while a command
//! runs waits (up to [`MAX_WAITING_LINES`], then stdin is not read) until the command is done. What
//! a front end shows, and whether it holds events back while a command runs (JSON lines does, so
//! a command's answer comes before the events it caused), is its own business: see [`FrontEnd`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
use whatsap2p_client::{Client, Event};

use crate::input::{self, Line};

/// Lines read while a command runs and waiting for their turn.
pub const MAX_WAITING_LINES: usize = 64;

/// A command under way; it borrows the client, never the front end.
pub type Job<'c, T> = Pin<Box<dyn Future<Output = T> + 'c>>;

/// What a front end makes of a line.
pub enum Step<'c, T> {
    /// Handled (or refused) already.
    Done,
    /// A command to run; its result goes to [`FrontEnd::finished`].
    Run(Job<'c, T>),
    /// Log out and stop.
    Quit,
}

/// A text front end driven by [`run`].
pub trait FrontEnd {
    /// What a command gives back when it is done.
    type Done;

    /// Once, before anything is read.
    fn start(&mut self, client: &Client);

    /// The next line of input, taken when no command runs.
    fn line<'c>(&mut self, client: &'c Client, line: Line) -> Step<'c, Self::Done>;

    /// A command is done; returns whether to go on.
    fn finished(&mut self, client: &Client, done: Self::Done) -> bool;

    /// An event from the client; `busy` while a command runs. May wait briefly (a read of the
    /// profile database), never on the network.
    fn event(&mut self, client: &Client, event: Event, busy: bool) -> impl Future<Output = ()>;

    /// The loop ends: the client is still up; a command that was running has been dropped.
    fn stopping(&mut self, client: &Client);

    /// An event that arrived while logging out, with the client gone.
    fn late_event(&mut self, event: Event);

    /// Last, after logging out.
    fn stopped(&mut self);
}

/// Waits for the running command, or forever when there is none.
async fn finish<T>(running: &mut Option<Job<'_, T>>) -> T {
    match running.as_mut() {
        Some(job) => job.await,
        None => std::future::pending().await,
    }
}

/// Runs `front` until a command asks to quit, input ends, or a signal comes; then logs out.
pub async fn run<F: FrontEnd>(
    client: Client,
    mut events: mpsc::Receiver<Event>,
    mut stdin: input::Source,
    mut front: F,
) -> anyhow::Result<()> {
    front.start(&client);
    // Texts a crash kept from the user last time come first (both front ends report what they
    // show, see `Client::shown`).
    client.replay_unshown();
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    let mut waiting: VecDeque<Line> = VecDeque::new();
    let mut running: Option<Job<'_, F::Done>> = None;
    let mut input_ended = false;
    'run: loop {
        while running.is_none() {
            let Some(line) = waiting.pop_front() else { break };
            match front.line(&client, line) {
                Step::Done => {}
                Step::Run(job) => running = Some(job),
                Step::Quit => break 'run,
            }
        }
        if input_ended && running.is_none() && waiting.is_empty() {
            break;
        }
        tokio::select! {
            _ = &mut signal => break,
            done = finish(&mut running) => {
                running = None;
                if !front.finished(&client, done) {
                    break;
                }
            }
            Some(e) = events.recv() => front.event(&client, e, running.is_some()).await,
            // Cancel safe: a line partly read when another branch wins is finished on the next turn.
            line = stdin.next_line(), if !input_ended && waiting.len() < MAX_WAITING_LINES => match line? {
                Some(line) => waiting.push_back(line),
                None => input_ended = true,
            },
        }
    }
    drop(running);
    front.stopping(&client);
    while let Ok(e) = events.try_recv() {
        front.event(&client, e, false).await;
    }
    client.logout().await;
    // Events that arrived while logging out still reach the user.
    while let Ok(e) = events.try_recv() {
        front.late_event(e);
    }
    front.stopped();
    Ok(())
}
