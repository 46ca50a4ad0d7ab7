//! Shared pieces of the whatsap2p binaries: logging setup and the two client front ends.
//!
//! # Layout
//! - [`logging`]: the `[+] …` console format of the server and the client's stderr logs.
//! - [`menu`]: the interactive menu of the original design.
//! - [`input`]: size-limited, cancel-safe reading of stdin lines, shared by both front ends.
//! - [`terminal`]: the menu's line editor on a terminal, printing above the line being typed.
//! - [`event_loop`]: the loop both front ends run: input, events and commands under way at once.
//! - [`json`]: the JSON-lines interface for scripts (schema in `docs/json-lines.md`).

#![forbid(unsafe_code)]

pub mod event_loop;
/// The JSON-lines input's fuzz property (for `fuzz/`, with the `fuzzing` feature).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod input;
pub mod json;
pub mod logging;
pub mod menu;
pub mod terminal;

/// Where the binaries keep their data by default: `$XDG_DATA_HOME`, falling back to
/// `~/.local/share` (and to the working directory when neither is set).
pub fn data_home() -> std::path::PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
