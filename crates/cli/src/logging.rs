//! Log output: the server's console lines (`[+] Connected: 123`) and the client's stderr logs.
//! `RUST_LOG` overrides the default level of either.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `[+] message` for info, `[!] message` for warnings and errors, `[.] message` below info.
struct Console;

impl<S, N> FormatEvent<S, N> for Console
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let prefix = match *event.metadata().level() {
            Level::ERROR | Level::WARN => "[!]",
            Level::INFO => "[+]",
            _ => "[.]",
        };
        write!(writer, "{prefix} ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// The server's console: info lines on stdout, one per action.
pub fn init_server() {
    tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .event_format(Console)
        .with_writer(std::io::stdout)
        .init();
}

/// The client's logs go to stderr (stdout belongs to the menu or the JSON events); quiet by default.
pub fn init_client() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter("error"))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// In the terminal UI stderr is the screen: logs go to stderr only when it is redirected
/// (`whatsap2p --tui … 2>tui.log`), and nowhere otherwise.
pub fn init_tui() {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        tracing_subscriber::fmt()
            .with_env_filter(filter("error"))
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
}
