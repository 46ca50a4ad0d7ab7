//! The slash commands typed in the input line (`/open 456`, `/group new Family 456 789`, …):
//! parsed into a [`Command`], or a [`CommandError`] that says what was wrong. An argument left out
//! is `None`: the UI then asks for it in a dialog.

use std::path::PathBuf;

use whatsap2p_client::Number;

/// A command the user typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/open [N]`: open (or start) the conversation with N.
    Open(Option<Number>),
    /// `/add [N]`: add a contact.
    Add(Option<Number>),
    /// `/photo [PATH]`: send a photo to the open conversation.
    Photo(Option<PathBuf>),
    /// `/file [PATH]`: send any file to the open conversation.
    File(Option<PathBuf>),
    /// `/group new NAME N…`: create a group.
    GroupNew {
        /// Its name.
        name: String,
        /// Its members besides us.
        members: Vec<Number>,
    },
    /// `/group add [N]`: add N to the open group.
    GroupAdd(Option<Number>),
    /// `/group remove [N]`: remove N from the open group.
    GroupRemove(Option<Number>),
    /// `/leave`: leave the open group.
    Leave,
    /// `/ping [N]`: is N online?
    Ping(Option<Number>),
    /// `/contacts`: every contact with its status.
    Contacts,
    /// `/requests`: the message requests waiting.
    Requests,
    /// `/ignore [N]`: drop N's message request.
    Ignore(Option<Number>),
    /// `/block [N]`: drop N's request and show nothing N sends again.
    Block(Option<Number>),
    /// `/unblock [N]`: let N write again.
    Unblock(Option<Number>),
    /// `/help`: keys and commands.
    Help,
    /// `/quit`: log out and leave.
    Quit,
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such command.
    #[error("unknown command /{0} (/help lists them)")]
    Unknown(String),
    /// A number that is not one.
    #[error("'{given}' is not a number: {reason}")]
    BadNumber {
        /// What was typed.
        given: String,
        /// Why it is refused.
        reason: String,
    },
    /// Missing or extra words.
    #[error("usage: {0}")]
    Usage(&'static str),
}

/// The commands, for the help and for completion.
pub const COMMANDS: &[(&str, &str)] = &[
    ("/open N", "open or start the conversation with N"),
    ("/add N", "add N to your contacts"),
    ("/photo PATH", "send a photo here (Tab completes paths)"),
    ("/file PATH", "send any file here (Tab completes paths)"),
    ("/group new NAME N…", "create a group with these contacts"),
    ("/group add N", "add N to this group (admins)"),
    ("/group remove N", "remove N from this group (admins)"),
    ("/leave", "leave this group"),
    ("/ping N", "is N online?"),
    ("/contacts", "your contacts and who is online"),
    ("/requests", "message requests waiting (from non-contacts)"),
    ("/ignore N", "drop N's message request (N is not told)"),
    ("/block N", "block N: nothing N sends is shown again (N is not told)"),
    ("/unblock N", "let N write to you again"),
    ("/help", "this help (also F1, or ? on an empty line in the list)"),
    ("/quit", "log out and leave (also Ctrl-C)"),
];

fn number(word: &str) -> Result<Number, CommandError> {
    Number::new(word).map_err(|e| CommandError::BadNumber { given: word.to_owned(), reason: e.to_string() })
}

fn optional_number(rest: &str, usage: &'static str) -> Result<Option<Number>, CommandError> {
    let mut words = rest.split_whitespace();
    match (words.next(), words.next()) {
        (None, _) => Ok(None),
        (Some(w), None) => number(w).map(Some),
        (Some(_), Some(_)) => Err(CommandError::Usage(usage)),
    }
}

fn optional_path(rest: &str) -> Option<PathBuf> {
    let rest = rest.trim();
    (!rest.is_empty()).then(|| expand_home(rest))
}

/// `~/x` as the shell reads it.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Parses a line that starts with `/`.
pub fn parse(line: &str) -> Result<Command, CommandError> {
    let line = line.trim();
    let body = line.strip_prefix('/').unwrap_or(line);
    let (verb, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    match verb {
        "open" => optional_number(rest, "/open N").map(Command::Open),
        "add" => optional_number(rest, "/add N").map(Command::Add),
        "ping" => optional_number(rest, "/ping N").map(Command::Ping),
        "photo" => Ok(Command::Photo(optional_path(rest))),
        "file" => Ok(Command::File(optional_path(rest))),
        "leave" => Ok(Command::Leave),
        "contacts" => Ok(Command::Contacts),
        "requests" => Ok(Command::Requests),
        "ignore" => optional_number(rest, "/ignore N").map(Command::Ignore),
        "block" => optional_number(rest, "/block N").map(Command::Block),
        "unblock" => optional_number(rest, "/unblock N").map(Command::Unblock),
        "help" => Ok(Command::Help),
        "quit" => Ok(Command::Quit),
        "group" => {
            let rest = rest.trim();
            let (sub, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            match sub {
                "new" => {
                    const USAGE: &str = "/group new NAME N…";
                    let mut words: Vec<&str> = args.split_whitespace().collect();
                    let first = words.iter().position(|w| Number::new(w).is_ok()).unwrap_or(words.len());
                    let members =
                        words.split_off(first).into_iter().map(number).collect::<Result<Vec<_>, _>>()?;
                    let name = words.join(" ");
                    if name.is_empty() || members.is_empty() {
                        return Err(CommandError::Usage(USAGE));
                    }
                    Ok(Command::GroupNew { name, members })
                }
                "add" => optional_number(args, "/group add N").map(Command::GroupAdd),
                "remove" => optional_number(args, "/group remove N").map(Command::GroupRemove),
                "leave" => Ok(Command::Leave),
                _ => Err(CommandError::Usage("/group new NAME N… | /group add N | /group remove N")),
            }
        }
        other => Err(CommandError::Unknown(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    #[test]
    fn given_each_command_then_it_parses_with_or_without_its_argument() {
        assert_eq!(parse("/open 456"), Ok(Command::Open(Some(n("456")))));
        assert_eq!(parse("/open"), Ok(Command::Open(None)));
        assert_eq!(parse("/add +4412345"), Ok(Command::Add(Some(n("+4412345")))));
        assert_eq!(parse("/ping  789 "), Ok(Command::Ping(Some(n("789")))));
        assert_eq!(parse("/photo /tmp/a b.png"), Ok(Command::Photo(Some("/tmp/a b.png".into()))));
        assert_eq!(parse("/file"), Ok(Command::File(None)));
        assert_eq!(
            parse("/group new Old Friends 456 789"),
            Ok(Command::GroupNew { name: "Old Friends".into(), members: vec![n("456"), n("789")] })
        );
        assert_eq!(parse("/group add 456"), Ok(Command::GroupAdd(Some(n("456")))));
        assert_eq!(parse("/group remove"), Ok(Command::GroupRemove(None)));
        assert_eq!(parse("/leave"), Ok(Command::Leave));
        assert_eq!(parse("/contacts"), Ok(Command::Contacts));
        assert_eq!(parse("/requests"), Ok(Command::Requests));
        assert_eq!(parse("/ignore 301"), Ok(Command::Ignore(Some(n("301")))));
        assert_eq!(parse("/block"), Ok(Command::Block(None)));
        assert_eq!(parse("/unblock +301"), Ok(Command::Unblock(Some(n("+301")))));
        assert_eq!(parse("/quit"), Ok(Command::Quit));
    }

    #[test]
    fn given_bad_input_then_the_error_says_what_is_wrong() {
        assert_eq!(parse("/dance"), Err(CommandError::Unknown("dance".into())));
        assert!(matches!(parse("/open 12"), Err(CommandError::BadNumber { .. })));
        assert_eq!(parse("/open 456 789"), Err(CommandError::Usage("/open N")));
        assert_eq!(parse("/group new 456"), Err(CommandError::Usage("/group new NAME N…")));
        assert_eq!(parse("/group new Family"), Err(CommandError::Usage("/group new NAME N…")));
        assert!(matches!(parse("/group frobnicate"), Err(CommandError::Usage(_))));
    }
}
