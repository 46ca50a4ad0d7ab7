//! The terminal, taken and given back: raw mode, the alternate screen, mouse, bracketed paste and
//! focus reports on [`Term::enter`], all undone when the [`Term`] is dropped (however the UI ends:
//! a return, an error, or a panic unwinding through it), and by a panic hook before a panic's
//! message is printed. Giving back twice is harmless, so every way out gives back.

use std::io::{self, Stdout, Write};
use std::sync::Once;

use crossterm::cursor::Show;
use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, DisableMouseCapture, EnableBracketedPaste, EnableFocusChange,
    EnableMouseCapture,
};
use crossterm::execute;
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use ratatui_image::picker::Picker;

/// A screen while the UI owns it: the process's terminal ([`Term::enter`]), or any writer that
/// takes the terminal's escape sequences ([`Term::on`]).
pub struct Term<W: Write = Stdout> {
    /// The ratatui terminal.
    pub terminal: Terminal<CrosstermBackend<W>>,
    /// The process's terminal is in raw mode because of us.
    raw: bool,
}

static PANIC_HOOK: Once = Once::new();

/// Writes what gives a screen back: no focus, paste or mouse reports, the main screen, the cursor
/// shown.
pub fn give_back(out: &mut impl Write) {
    let _ = execute!(
        out,
        DisableFocusChange,
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        Show
    );
}

/// Gives the process's terminal back: cooked mode, and the screen (see [`give_back`]).
pub fn restore() {
    let _ = disable_raw_mode();
    give_back(&mut io::stdout());
}

impl Term {
    /// Takes the process's terminal over (raw mode, then the screen as [`Term::on`] does).
    pub fn enter() -> io::Result<Self> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        let terminal = Self::take(io::stdout(), Viewport::Fullscreen).inspect_err(|_| restore())?;
        Ok(Self { terminal, raw: true })
    }
}

impl<W: Write> Term<W> {
    /// Takes over the screen that `out` draws on, `area` large: the alternate screen, mouse,
    /// bracketed paste and focus reports. (The process's terminal, in raw mode: [`Term::enter`].)
    pub fn on(out: W, area: Rect) -> io::Result<Self> {
        Ok(Self { terminal: Self::take(out, Viewport::Fixed(area))?, raw: false })
    }

    fn take(mut out: W, viewport: Viewport) -> io::Result<Terminal<CrosstermBackend<W>>> {
        let entered =
            execute!(out, EnterAlternateScreen, EnableMouseCapture, EnableBracketedPaste, EnableFocusChange);
        if let Err(e) = entered {
            give_back(&mut out);
            return Err(e);
        }
        Terminal::with_options(CrosstermBackend::new(out), TerminalOptions { viewport })
    }
}

impl<W: Write> Drop for Term<W> {
    fn drop(&mut self) {
        if self.raw {
            let _ = disable_raw_mode();
        }
        give_back(self.terminal.backend_mut());
    }
}

/// How photos are drawn: half-blocks under tmux or when `WHATSAP2P_GRAPHICS=halfblocks`, else
/// what the terminal answers it can do (kitty, sixel, iTerm2), half-blocks when it answers
/// nothing. Asks the terminal, so it runs before terminal events are read.
pub fn graphics() -> Picker {
    let forced = std::env::var("WHATSAP2P_GRAPHICS").is_ok_and(|v| v == "halfblocks");
    if forced || std::env::var_os("TMUX").is_some() {
        return Picker::halfblocks();
    }
    Picker::from_query_stdio().unwrap_or_else(|_| Picker::halfblocks())
}
