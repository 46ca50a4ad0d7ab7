//! The menu's prompts on a terminal: real line editing, with what arrives printed above the line
//! being typed.
//!
//! `rustyline` reads each line on a thread of its own (it blocks on the terminal), asked for by
//! [`Printer::ask`] with the prompt to show; the lines come back through a channel the event loop
//! selects on. Everything the menu prints goes through rustyline's external printer: while a line
//! is being edited it clears the prompt, prints above it and draws the prompt again with the
//! half-typed text intact (outside a prompt it simply writes). Arrows, Home/End, history (↑/↓) and
//! the usual Emacs keys work. Only when both stdin and stdout are terminals: piped input keeps the
//! plain reader of `input.rs`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter;

use crate::input::Line;

/// Lines read and not yet taken: one at a time is asked for, so one is enough.
const LINE_QUEUE: usize = 1;

/// What reading a line gave.
enum Read {
    Line(String),
    /// Ctrl-D on an empty line, Ctrl-C, or the terminal went away.
    End,
}

/// The reading side: lines typed, one per [`Printer::ask`].
pub struct Editor {
    lines: tokio::sync::mpsc::Receiver<Read>,
}

/// The printing side, shared by whoever prints: prints above the prompt, and asks for lines.
#[derive(Clone)]
pub struct Printer {
    out: Arc<Mutex<Box<dyn ExternalPrinter + Send>>>,
    asks: std::sync::mpsc::Sender<String>,
}

/// The editor and its printer, if stdin and stdout are both terminals.
pub fn open() -> Option<(Editor, Printer)> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return None;
    }
    let mut editor = rustyline::DefaultEditor::new().ok()?;
    let out: Box<dyn ExternalPrinter + Send> = Box::new(editor.create_external_printer().ok()?);
    let (asks, asked) = std::sync::mpsc::channel::<String>();
    let (lines_tx, lines) = tokio::sync::mpsc::channel(LINE_QUEUE);
    // Ends when the printer's side is dropped (no more asks) or the loop stops taking lines.
    std::thread::Builder::new()
        .name("line-editor".into())
        .spawn(move || {
            while let Ok(prompt) = asked.recv() {
                let read = match editor.readline(&prompt) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        Read::Line(line)
                    }
                    Err(ReadlineError::Interrupted | ReadlineError::Eof) => Read::End,
                    Err(_) => Read::End,
                };
                let end = matches!(read, Read::End);
                if lines_tx.blocking_send(read).is_err() || end {
                    return;
                }
            }
        })
        .ok()?;
    Some((Editor { lines }, Printer { out: Arc::new(Mutex::new(out)), asks }))
}

impl Editor {
    /// The next line typed (after a [`Printer::ask`]); `None` at the end of input. Cancel safe.
    pub async fn next_line(&mut self) -> Option<Line> {
        match self.lines.recv().await? {
            Read::Line(line) => Some(Line::Text(line)),
            Read::End => None,
        }
    }
}

impl Printer {
    /// Prints `text` (one or more lines) above the prompt, leaving what is typed intact.
    pub fn say(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = text.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = out.print(text);
    }

    /// Shows `prompt` and reads the next line with it.
    pub fn ask(&self, prompt: &str) {
        let _ = self.asks.send(prompt.to_owned());
    }
}
