//! The interactive menu of the original design: numbered options, prompts, and new messages
//! printed under the menu as they arrive (`> Message from 123: Hello`).

use std::io::Write;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use whatsap2p_client::{Change, Client, Event, GroupId, MessageId, Number, Presence, SendOutcome};

use crate::input::{self, Line};

const OPTIONS: &str = "[+] Options:
1 - Ping user
2 - Send Message
3 - View Contacts
4 - Add New Contact
5 - Logout
6 - Conversation history
7 - Send Photo (or any file)
8 - Groups";

const SHORT_OPTIONS: &str =
    "[+] 1 Ping · 2 Send · 3 Contacts · 4 Add contact · 5 Logout · 6 History · 7 Photo · 8 Groups";

const GROUP_HELP: &str = "[+] Group commands: new NAME NUMBER… | send GROUP TEXT | add GROUP NUMBER | remove GROUP NUMBER | admin GROUP NUMBER | leave GROUP (GROUP: its name, or the start of its id; empty line: back)";

/// Messages option 6 shows.
const HISTORY_LINES: usize = 20;

/// What the next input line answers.
#[derive(Clone, Debug)]
enum Prompt {
    Choice,
    PingNumber,
    SendNumber,
    SendText(Number),
    AddNumber,
    HistoryNumber,
    FileNumber,
    FilePath(Number),
    GroupCommand,
}

impl Prompt {
    fn text(&self) -> &'static str {
        match self {
            Prompt::Choice => "Choose an option: ",
            Prompt::PingNumber => "Number to ping: ",
            Prompt::SendNumber => "Send to number: ",
            Prompt::SendText(_) => "Message: ",
            Prompt::AddNumber => "New contact's number: ",
            Prompt::HistoryNumber => "Conversation with (a number, or a group's name): ",
            Prompt::FileNumber => "Send photo to number: ",
            Prompt::FilePath(_) => "Path of the photo or file: ",
            Prompt::GroupCommand => "Group command: ",
        }
    }
}

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn prompt(p: &Prompt) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", p.text());
    let _ = out.flush();
}

/// `ip/port`, as the original printed addresses.
fn slash(addr: std::net::SocketAddr) -> String {
    format!("{}/{}", addr.ip(), addr.port())
}

fn describe(p: &Presence) -> String {
    match p.online {
        Some(addr) => format!("{} - Online ({})", p.number, slash(addr)),
        None => format!("{} - Offline", p.number),
    }
}

/// Files being sent, for their progress lines. A live bar would redraw over the prompt the user
/// is typing at, so progress comes as a line at each quarter, like any other event.
#[derive(Default)]
struct Transfers {
    running: HashMap<MessageId, Transfer>,
}

struct Transfer {
    name: String,
    to: Number,
    total: u64,
    started: Instant,
    /// The next quarter to report (1 to 3).
    next_quarter: u64,
}

impl Transfers {
    fn start(&mut self, id: MessageId, name: String, to: Number, total: u64) {
        self.running.insert(id, Transfer { name, to, total, started: Instant::now(), next_quarter: 1 });
    }

    /// A line when `bytes` passes the next quarter of the file.
    fn progress(&mut self, id: MessageId, bytes: u64) -> Option<String> {
        let t = self.running.get_mut(&id)?;
        let quarter = bytes.saturating_mul(4) / t.total.max(1);
        if quarter < t.next_quarter || quarter >= 4 {
            return None;
        }
        t.next_quarter = quarter + 1;
        Some(format!(
            "[+] {} to {}: {}% ({} of {}, {})",
            t.name,
            t.to,
            quarter * 25,
            size(bytes),
            size(t.total),
            rate(bytes, t.started.elapsed())
        ))
    }

    /// How the transfer went, once it is over.
    fn finish(&mut self, id: MessageId) -> Option<String> {
        let t = self.running.remove(&id)?;
        let took = t.started.elapsed();
        Some(format!("{}, {:.1} s, {}", size(t.total), took.as_secs_f64(), rate(t.total, took)))
    }
}

/// `812 MiB/s`.
fn rate(bytes: u64, took: Duration) -> String {
    let per_sec = bytes as f64 / took.as_secs_f64().max(1e-6);
    format!("{}/s", size(per_sec as u64))
}

/// `412 KiB`, `1.5 MiB`.
fn size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.0} KiB", b / K)
    } else if b < K * K * K {
        format!("{:.1} MiB", b / K / K)
    } else {
        format!("{:.2} GiB", b / K / K / K)
    }
}

/// Shows an event; a message shown is a message read, so its sender gets a read receipt.
/// Shows an event; returns whether it printed anything (a progress event between quarters does
/// not).
async fn show_event(client: &Client, transfers: &mut Transfers, e: Event) -> bool {
    match e {
        Event::Progress { id, bytes, .. } => match transfers.progress(id, bytes) {
            Some(line) => say(format!("\n{line}")),
            None => return false,
        },
        Event::FileSent { id, to, .. } => match transfers.finish(id) {
            Some(how) => say(format!("\n[+] File delivered to {to} ({how})")),
            None => say(format!("\n[+] File delivered to {to}")),
        },
        Event::FileFailed { id, peer, reason, .. } => {
            transfers.finish(id);
            say(format!("\n[!] File transfer with {peer} failed: {reason}"));
        }
        Event::FileReceived { from, name, path, size: bytes, dimensions, .. } => {
            let kind = if dimensions.is_some() { "Photo" } else { "File" };
            let details = match dimensions {
                Some((w, h)) => format!("{w}x{h}, {}", size(bytes)),
                None => size(bytes),
            };
            say(format!("\n> {kind} from {from}: {name} ({details}) saved to {}", path.display()));
        }
        Event::Message { id, from, text, group, .. } => {
            match group {
                Some(g) => {
                    let name = group_name(client, g).await;
                    say(format!("\n> [{name}] Message from {from}: {text}"));
                }
                None => say(format!("\n> Message from {from}: {text}")),
            }
            if let Err(e) = client.mark_read(id).await {
                say(format!("[!] {e}"));
            }
        }
        Event::Delivered { to, .. } => say(format!("\n[+] Delivered to {to}")),
        Event::Sent { to, .. } => say(format!("\n[+] Queued message sent to {to}")),
        Event::Read { by, .. } => say(format!("\n[+] Read by {by}")),
        Event::Failed { to, reason, .. } => say(format!("\n[!] Message to {to} failed: {reason}")),
        Event::Presence { number, online: Some(addr) } => {
            say(format!("\n> {number} is online ({})", slash(addr)))
        }
        Event::Presence { number, online: None } => say(format!("\n> {number} is offline")),
        Event::Reconnected => say("\n[+] Reconnected to the directory server"),
        Event::Group(g) if g.left => say(format!("\n[+] You are no longer in group {}", g.state.name)),
        Event::Group(g) => {
            let members: Vec<String> = g.state.members.iter().map(|m| m.to_string()).collect();
            say(format!(
                "\n[+] Group {} ({}) by {}: {}",
                g.state.name,
                g.state.id,
                g.changed_by,
                members.join(", ")
            ))
        }
        Event::Warning { message } => say(format!("\n[!] WARNING: {message}")),
        Event::DirectoryLost { reason } => say(format!("\n[!] Lost the directory server: {reason}")),
        other => say(format!("\n[+] {other:?}")),
    }
    true
}

async fn show_groups(client: &Client) {
    match client.groups().await {
        Ok(groups) if groups.is_empty() => say("[+] No groups yet"),
        Ok(groups) => {
            for g in groups.iter().filter(|g| !g.left) {
                say(format!("[+] {} ({})", g.state.name, g.state.id));
                for m in &g.state.members {
                    let admin = if g.state.admins.contains(m) { " (admin)" } else { "" };
                    let status = if m == client.number() {
                        "you".to_owned()
                    } else {
                        match client.presence_of(m) {
                            Some(Some(addr)) => format!("Online ({})", slash(addr)),
                            Some(None) => "Offline".to_owned(),
                            None => "?".to_owned(),
                        }
                    };
                    say(format!("    {m}{admin} - {status}"));
                }
            }
        }
        Err(e) => say(format!("[!] {e}")),
    }
}

/// Runs one line of the group sub-menu; returns what to tell the user.
async fn group_command(client: &Client, line: &str) -> anyhow::Result<String> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let id_and = |rest: &str| {
        let (group, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let (group, arg) = (group.to_owned(), arg.trim().to_owned());
        async move {
            let groups = client.groups().await?;
            let id = pick_group(&groups, &group)?;
            Ok::<_, anyhow::Error>((id, arg))
        }
    };
    let describe = |g: whatsap2p_client::Group| {
        let members: Vec<String> = g.state.members.iter().map(|m| m.to_string()).collect();
        format!("{} ({}): {}", g.state.name, g.state.id, members.join(", "))
    };
    Ok(match verb {
        "new" => {
            let mut words: Vec<&str> = rest.split_whitespace().collect();
            let first_number = words.iter().position(|w| Number::new(w).is_ok()).unwrap_or(words.len());
            let members = words
                .split_off(first_number)
                .iter()
                .map(|w| Number::new(w))
                .collect::<Result<Vec<_>, _>>()?;
            let name = words.join(" ");
            describe(client.group_create(&name, &members).await?)
        }
        "send" => {
            let (id, text) = id_and(rest).await?;
            let (_, n) = client.send_group(id, &text).await?;
            format!("Sent to {n} members")
        }
        "add" | "remove" | "admin" => {
            let (id, number) = id_and(rest).await?;
            let change = match verb {
                "add" => Change::Add,
                "remove" => Change::Remove,
                _ => Change::MakeAdmin,
            };
            describe(client.group_change(id, &Number::new(&number)?, change).await?)
        }
        "leave" => {
            let (id, _) = id_and(rest).await?;
            let g = client.group_leave(id).await?;
            format!("You left {}", g.state.name)
        }
        _ => anyhow::bail!("unknown group command '{verb}'"),
    })
}

/// Shortest start of a group id the menu accepts in place of the whole id.
const MIN_ID_PREFIX: usize = 4;

/// The group `named` means among `groups`: its whole id, the start of its id (at least
/// [`MIN_ID_PREFIX`] characters), or its one-word name, any case. Refused when it fits none, or
/// more than one.
fn pick_group(groups: &[whatsap2p_client::Group], named: &str) -> anyhow::Result<GroupId> {
    if let Ok(id) = named.parse::<GroupId>() {
        return Ok(id);
    }
    let lower = named.to_lowercase();
    let fits: Vec<&whatsap2p_client::Group> = groups
        .iter()
        .filter(|g| !g.left)
        .filter(|g| {
            (named.len() >= MIN_ID_PREFIX && g.state.id.to_string().starts_with(&lower))
                || g.state.name.to_lowercase() == lower
        })
        .collect();
    match fits.as_slice() {
        [one] => Ok(one.state.id),
        [] => anyhow::bail!("no group called '{named}' (give its name, or the start of its id)"),
        many => {
            let listed: Vec<String> =
                many.iter().map(|g| format!("{} ({})", g.state.name, g.state.id)).collect();
            anyhow::bail!("'{named}' fits several groups: {}; give more of the id", listed.join(", "))
        }
    }
}

async fn group_name(client: &Client, id: GroupId) -> String {
    match client.groups().await {
        Ok(groups) => groups
            .into_iter()
            .find(|g| g.state.id == id)
            .map(|g| g.state.name)
            .unwrap_or_else(|| id.to_string()),
        Err(_) => id.to_string(),
    }
}

/// The last messages with a number or, when `with` is not one, in the group it names.
async fn show_history(client: &Client, with: &str) {
    let (list, whom) = match Number::new(with) {
        Ok(n) => (client.history(&n, HISTORY_LINES).await.map_err(anyhow::Error::from), n.to_string()),
        Err(_) => {
            let group = async {
                let groups = client.groups().await?;
                let id = pick_group(&groups, with)?;
                let name = groups
                    .iter()
                    .find(|g| g.state.id == id)
                    .map_or_else(|| id.to_string(), |g| g.state.name.clone());
                Ok::<_, anyhow::Error>((client.group_history(id, HISTORY_LINES).await?, name))
            };
            match group.await {
                Ok((list, name)) => (Ok(list), format!("group {name}")),
                Err(e) => (Err(e), String::new()),
            }
        }
    };
    match list {
        Ok(list) if list.is_empty() => say(format!("[+] No messages with {whom} yet")),
        Ok(list) => {
            say(format!("[+] Last {} messages with {whom}:", list.len()));
            for m in list {
                let who = if m.outgoing { "You".to_owned() } else { m.peer.to_string() };
                // A group message went to every member: its state is one member's, so none is shown.
                let state = if m.outgoing && m.group.is_none() {
                    format!("  [{}]", m.state.as_str())
                } else {
                    String::new()
                };
                say(format!(
                    "    {} {who}: {}{state}",
                    clock(m.received_at_ms.unwrap_or(m.sent_at_ms)),
                    m.text
                ));
            }
        }
        Err(e) => say(format!("[!] {e}")),
    }
}

/// `HH:MM` (UTC) of a millisecond timestamp.
fn clock(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// Asks for our number until a valid one is given; `None` at end of input.
pub async fn ask_number(stdin: &mut input::Stdin) -> anyhow::Result<Option<Number>> {
    say("Welcome!");
    loop {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "Please insert your number: ");
        let _ = out.flush();
        drop(out);
        match stdin.next_line().await? {
            None => return Ok(None),
            Some(Line::Text(t)) => match Number::new(&t) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => say(format!("[!] {e}")),
            },
            Some(_) => say("[!] That is not a number"),
        }
    }
}

/// Announces the client as the original did.
pub fn banner(client: &Client) {
    say("[+] Connection successful!");
    say(format!("[+] Server key: {}", client.server_key()));
    say(format!("[+] Your key: {}", client.identity_key()));
    say(format!("[+] Listening at {}", slash(client.published_addr())));
}

/// Runs the menu until Logout, end of input or a signal.
pub async fn run(
    client: Client,
    mut events: mpsc::Receiver<Event>,
    mut stdin: input::Stdin,
) -> anyhow::Result<()> {
    banner(&client);
    say(format!("\n{OPTIONS}\n\n[+] New Messages:"));
    let mut state = Prompt::Choice;
    let mut transfers = Transfers::default();
    prompt(&state);
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let line = tokio::select! {
            _ = &mut signal => break,
            Some(e) = events.recv() => {
                if show_event(&client, &mut transfers, e).await {
                    prompt(&state);
                }
                continue;
            }
            // Cancel safe: a line partly read when an event wins is finished on the next turn.
            line = stdin.next_line() => line?,
        };
        let line = match line {
            None => break,
            Some(Line::Text(t)) => t,
            Some(Line::TooLong(n)) => {
                say(format!("[!] That line is {n} bytes; too long"));
                prompt(&state);
                continue;
            }
            Some(Line::NotUtf8) => {
                say("[!] That line is not valid UTF-8");
                prompt(&state);
                continue;
            }
        };
        state = match (state, line.trim()) {
            (Prompt::Choice, "") => Prompt::Choice,
            (Prompt::Choice, "1") => Prompt::PingNumber,
            (Prompt::Choice, "2") => Prompt::SendNumber,
            (Prompt::Choice, "3") => {
                match client.contacts().await {
                    Ok(list) if list.is_empty() => say("[+] No contacts yet: add one with 4"),
                    Ok(list) => {
                        say("[+] Contacts:");
                        for c in &list {
                            say(format!("    {}", describe(c)));
                        }
                    }
                    Err(e) => say(format!("[!] {e}")),
                }
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (Prompt::Choice, "4") => Prompt::AddNumber,
            (Prompt::Choice, "5") => break,
            (Prompt::Choice, "6") => Prompt::HistoryNumber,
            (Prompt::Choice, "7") => Prompt::FileNumber,
            (Prompt::Choice, "8") => {
                show_groups(&client).await;
                say(GROUP_HELP);
                Prompt::GroupCommand
            }
            (Prompt::GroupCommand, "") => {
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (Prompt::GroupCommand, command) => {
                match group_command(&client, command).await {
                    Ok(done) => say(format!("[+] {done}")),
                    Err(e) => say(format!("[!] {e}")),
                }
                Prompt::GroupCommand
            }
            (Prompt::Choice, other) => {
                say(format!("[!] '{other}' is not an option"));
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (
                Prompt::PingNumber
                | Prompt::SendNumber
                | Prompt::AddNumber
                | Prompt::HistoryNumber
                | Prompt::FileNumber,
                "",
            ) => {
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (Prompt::HistoryNumber, with) => {
                show_history(&client, with).await;
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (
                p @ (Prompt::PingNumber | Prompt::SendNumber | Prompt::AddNumber | Prompt::FileNumber),
                text,
            ) => match Number::new(text) {
                Err(e) => {
                    say(format!("[!] {e}"));
                    p
                }
                Ok(n) => match p {
                    Prompt::PingNumber => {
                        match client.ping(&n).await {
                            Ok(p) => say(format!("[+] {}", describe(&p))),
                            Err(e) => say(format!("[!] {e}")),
                        }
                        say(SHORT_OPTIONS);
                        Prompt::Choice
                    }
                    Prompt::AddNumber => {
                        match client.add_contact(&n).await {
                            Ok((true, Some(k))) => say(format!("[+] Added {n} (key {k})")),
                            Ok((true, None)) => say(format!("[+] Added {n} (not registered yet)")),
                            Ok((false, _)) => say(format!("[+] {n} is already a contact")),
                            Err(e) => say(format!("[!] {e}")),
                        }
                        say(SHORT_OPTIONS);
                        Prompt::Choice
                    }
                    Prompt::FileNumber => Prompt::FilePath(n),
                    _ => Prompt::SendText(n),
                },
            },
            (Prompt::FilePath(_), "") => {
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (Prompt::FilePath(to), path) => {
                match client.send_file(&to, std::path::Path::new(path)).await {
                    Ok(f) => {
                        say(format!("[+] Sending {} ({}) to {to}", f.name, size(f.size)));
                        transfers.start(f.id, f.name, to.clone(), f.size);
                    }
                    Err(e) => say(format!("[!] {e}")),
                }
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
            (Prompt::SendText(to), _) => {
                match client.send(&to, &line).await {
                    Ok((_, SendOutcome::Sent)) => say(format!("[+] Sent to {to}")),
                    Ok((_, SendOutcome::Queued { reason })) => {
                        say(format!("[+] Queued for {to} ({reason}); it goes out as soon as they are online"))
                    }
                    Err(e) => say(format!("[!] {e}")),
                }
                say(SHORT_OPTIONS);
                Prompt::Choice
            }
        };
        prompt(&state);
    }
    say("\n[+] Logging out...");
    while let Ok(e) = events.try_recv() {
        show_event(&client, &mut transfers, e).await;
    }
    client.logout().await;
    say("[+] Bye!");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_progress_events_then_one_line_per_quarter_passed_and_none_at_the_end() {
        let mut t = Transfers::default();
        let id = MessageId::new();
        let to = Number::new("456").expect("number");
        t.start(id, "big.bin".into(), to, 400);
        let lines: Vec<Option<String>> =
            [10, 99, 100, 120, 310, 399, 400].iter().map(|&b| t.progress(id, b)).collect();
        let reported: Vec<usize> =
            lines.iter().enumerate().filter(|(_, l)| l.is_some()).map(|(i, _)| i).collect();
        // 100 passes the first quarter, 310 jumps over the second to the third: one line for it.
        assert_eq!(reported, vec![2, 4], "{lines:?}");
        assert!(lines[2]
            .as_deref()
            .is_some_and(|l| l.starts_with("[+] big.bin to 456: 25% (100 B of 400 B")));
        assert!(lines[4].as_deref().is_some_and(|l| l.contains(": 75% ")));
        assert!(t.finish(id).is_some_and(|how| how.starts_with("400 B, ")));
        assert_eq!(t.progress(id, 400), None, "nothing once finished");
    }

    fn group(first: u8, name: &str, left: bool) -> whatsap2p_client::Group {
        let mut id = [0x11; 16];
        id[0] = first;
        let me = Number::new("123").expect("number");
        whatsap2p_client::Group {
            state: whatsap2p_client::GroupState {
                id: GroupId(id),
                name: name.into(),
                members: [me.clone()].into(),
                admins: [me.clone()].into(),
                version: 1,
            },
            changed_by: me,
            left,
        }
    }

    #[test]
    fn given_a_group_named_by_name_or_id_start_then_it_is_found_and_ambiguity_refused() {
        let groups = [group(0xab, "Family", false), group(0xac, "Work", false), group(0xad, "Old", true)];
        let id = |i: usize| groups[i].state.id;
        assert_eq!(pick_group(&groups, "family").expect("by name"), id(0));
        assert_eq!(pick_group(&groups, "ac11").expect("by id start"), id(1));
        assert_eq!(pick_group(&groups, &id(1).to_string()).expect("by whole id"), id(1));
        assert!(pick_group(&groups, "a").is_err(), "too short a start is not an id");
        assert!(pick_group(&groups, "Old").is_err(), "a group we left is not offered");
        let err = pick_group(&[group(0xab, "Twin", false), group(0xab, "twin", false)], "twin")
            .expect_err("two fit");
        assert!(err.to_string().contains("several groups"), "{err}");
    }
}
