//! The terminal, taken and given back: raw mode, the alternate screen, mouse, bracketed paste and
//! focus reports on [`Term::enter`], all undone on drop, and by a panic hook before a panic's
//! message is printed. Restoring twice is harmless, so every way out restores.

use std::io::{self, Stdout};
use std::sync::Once;

use crossterm::cursor::Show;
use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, DisableMouseCapture, EnableBracketedPaste, EnableFocusChange,
    EnableMouseCapture,
};
use crossterm::execute;
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use ratatui_image::picker::Picker;

/// The terminal while the UI owns it.
pub struct Term {
    /// The ratatui terminal.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

static PANIC_HOOK: Once = Once::new();

/// Gives the terminal back: cooked mode, main screen, no mouse reports, cursor shown.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableFocusChange,
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        Show
    );
}

impl Term {
    /// Takes the terminal over.
    pub fn enter() -> io::Result<Self> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        let entered = execute!(
            io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste,
            EnableFocusChange
        );
        if let Err(e) = entered {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        restore();
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
