//! The interactive menu of the original design: numbered options, prompts, and new messages
//! printed under the menu as they arrive (`> Message from 123: Hello`).

use std::io::Write;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use std::future::Future;

use whatsap2p_client::{
    Change, Client, Event, FileRecord, GroupId, MessageId, Number, Presence, SendOutcome,
};

use crate::event_loop::{FrontEnd, Step};
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
        Some(addr) => match p.path {
            Some(path) => format!("{} - Online ({}) · {}", p.number, slash(addr), path.detail()),
            None => format!("{} - Online ({})", p.number, slash(addr)),
        },
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
        Event::Replaced { message } => say(format!("\n[!] {message}")),
        other => say(format!("\n[+] {other:?}")),
    }
    true
}

/// The groups we are in, each with its members and their status.
async fn show_groups(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    match client.groups().await {
        Ok(groups) if groups.is_empty() => out.push("[+] No groups yet".to_owned()),
        Ok(groups) => {
            for g in groups.iter().filter(|g| !g.left) {
                out.push(format!("[+] {} ({})", g.state.name, g.state.id));
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
                    out.push(format!("    {m}{admin} - {status}"));
                }
            }
        }
        Err(e) => out.push(format!("[!] {e}")),
    }
    out
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
async fn show_history(client: &Client, with: &str) -> Vec<String> {
    let mut out = Vec::new();
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
        Ok(list) if list.is_empty() => out.push(format!("[+] No messages with {whom} yet")),
        Ok(list) => {
            out.push(format!("[+] Last {} messages with {whom}:", list.len()));
            for m in list {
                let who = if m.outgoing { "You".to_owned() } else { m.peer.to_string() };
                // A group message went to every member: its state is one member's, so none is shown.
                let state = if m.outgoing && m.group.is_none() {
                    format!("  [{}]", m.state.as_str())
                } else {
                    String::new()
                };
                out.push(format!(
                    "    {} {who}: {}{state}",
                    clock(m.received_at_ms.unwrap_or(m.sent_at_ms)),
                    m.text
                ));
            }
        }
        Err(e) => out.push(format!("[!] {e}")),
    }
    out
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
    if client.directory_version().is_some() {
        say("[+] Connection successful!");
    } else {
        // Why follows at once, as a `DirectoryLost` event.
        say("[!] Started without the directory server: whatsap2p keeps trying, and says when it is connected. Messages wait in the outbox meanwhile.");
    }
    say(format!("[+] Server key: {}", client.server_key()));
    say(format!("[+] Your key: {}", client.identity_key()));
    say(format!("[+] Listening at {}", slash(client.published_addr())));
}

/// What a menu command gives back: the lines to show, and the file it queued, if any.
#[derive(Default)]
struct Done {
    lines: Vec<String>,
    file: Option<FileRecord>,
}

impl Done {
    /// `lines`, then the short list of options.
    fn then_options(mut lines: Vec<String>) -> Self {
        lines.push(SHORT_OPTIONS.to_owned());
        Self { lines, file: None }
    }
}

/// The menu's state: what the next line answers, and the files it follows.
struct Menu {
    state: Prompt,
    transfers: Transfers,
}

impl Menu {
    /// Starts `job`, whose answer the user sees before the prompt of `next`.
    fn run<'c>(&mut self, next: Prompt, job: impl Future<Output = Done> + 'c) -> Step<'c, Done> {
        self.state = next;
        Step::Run(Box::pin(job))
    }

    /// Shows `line` and stays at the main options.
    fn back(&mut self, line: Option<String>) -> Step<'static, Done> {
        if let Some(line) = line {
            say(line);
        }
        say(SHORT_OPTIONS);
        self.state = Prompt::Choice;
        prompt(&self.state);
        Step::Done
    }

    /// Moves to `next` and asks for it.
    fn ask(&mut self, next: Prompt) -> Step<'static, Done> {
        self.state = next;
        prompt(&self.state);
        Step::Done
    }
}

impl FrontEnd for Menu {
    type Done = Done;

    fn start(&mut self, client: &Client) {
        banner(client);
        say(format!("\n{OPTIONS}\n\n[+] New Messages:"));
        prompt(&self.state);
    }

    fn line<'c>(&mut self, client: &'c Client, line: Line) -> Step<'c, Done> {
        let line = match line {
            Line::Text(t) => t,
            Line::TooLong(n) => {
                say(format!("[!] That line is {n} bytes; too long"));
                prompt(&self.state);
                return Step::Done;
            }
            Line::NotUtf8 => {
                say("[!] That line is not valid UTF-8");
                prompt(&self.state);
                return Step::Done;
            }
        };
        let state = std::mem::replace(&mut self.state, Prompt::Choice);
        match (state, line.trim()) {
            (Prompt::Choice, "") => self.ask(Prompt::Choice),
            (Prompt::Choice, "1") => self.ask(Prompt::PingNumber),
            (Prompt::Choice, "2") => self.ask(Prompt::SendNumber),
            (Prompt::Choice, "3") => self.run(Prompt::Choice, async move {
                let lines = match client.contacts().await {
                    Ok(list) if list.is_empty() => vec!["[+] No contacts yet: add one with 4".to_owned()],
                    Ok(list) => std::iter::once("[+] Contacts:".to_owned())
                        .chain(list.iter().map(|c| format!("    {}", describe(c))))
                        .collect(),
                    Err(e) => vec![format!("[!] {e}")],
                };
                Done::then_options(lines)
            }),
            (Prompt::Choice, "4") => self.ask(Prompt::AddNumber),
            (Prompt::Choice, "5") => Step::Quit,
            (Prompt::Choice, "6") => self.ask(Prompt::HistoryNumber),
            (Prompt::Choice, "7") => self.ask(Prompt::FileNumber),
            (Prompt::Choice, "8") => self.run(Prompt::GroupCommand, async move {
                let mut lines = show_groups(client).await;
                lines.push(GROUP_HELP.to_owned());
                Done { lines, file: None }
            }),
            (Prompt::GroupCommand, "") => self.back(None),
            (Prompt::GroupCommand, command) => {
                let command = command.to_owned();
                self.run(Prompt::GroupCommand, async move {
                    let line = match group_command(client, &command).await {
                        Ok(done) => format!("[+] {done}"),
                        Err(e) => format!("[!] {e}"),
                    };
                    Done { lines: vec![line], file: None }
                })
            }
            (Prompt::Choice, other) => self.back(Some(format!("[!] '{other}' is not an option"))),
            (
                Prompt::PingNumber
                | Prompt::SendNumber
                | Prompt::AddNumber
                | Prompt::HistoryNumber
                | Prompt::FileNumber,
                "",
            ) => self.back(None),
            (Prompt::HistoryNumber, with) => {
                let with = with.to_owned();
                self.run(Prompt::Choice, async move { Done::then_options(show_history(client, &with).await) })
            }
            (
                p @ (Prompt::PingNumber | Prompt::SendNumber | Prompt::AddNumber | Prompt::FileNumber),
                text,
            ) => match Number::new(text) {
                Err(e) => {
                    say(format!("[!] {e}"));
                    self.ask(p)
                }
                Ok(n) => match p {
                    Prompt::PingNumber => self.run(Prompt::Choice, async move {
                        let line = match client.ping(&n).await {
                            Ok(p) => format!("[+] {}", describe(&p)),
                            Err(e) => format!("[!] {e}"),
                        };
                        Done::then_options(vec![line])
                    }),
                    Prompt::AddNumber => self.run(Prompt::Choice, async move {
                        let line = match client.add_contact(&n).await {
                            Ok((true, Some(k))) => format!("[+] Added {n} (key {k})"),
                            Ok((true, None)) => format!("[+] Added {n} (not registered yet)"),
                            Ok((false, _)) => format!("[+] {n} is already a contact"),
                            Err(e) => format!("[!] {e}"),
                        };
                        Done::then_options(vec![line])
                    }),
                    Prompt::FileNumber => self.ask(Prompt::FilePath(n)),
                    _ => self.ask(Prompt::SendText(n)),
                },
            },
            (Prompt::FilePath(_), "") => self.back(None),
            (Prompt::FilePath(to), path) => {
                let path = std::path::PathBuf::from(path);
                self.run(Prompt::Choice, async move {
                    match client.send_file(&to, &path).await {
                        Ok(f) => {
                            let line = format!("[+] Sending {} ({}) to {to}", f.name, size(f.size));
                            Done { file: Some(f), ..Done::then_options(vec![line]) }
                        }
                        Err(e) => Done::then_options(vec![format!("[!] {e}")]),
                    }
                })
            }
            (Prompt::SendText(to), _) => self.run(Prompt::Choice, async move {
                let line = match client.send(&to, &line).await {
                    Ok((_, SendOutcome::Sent)) => format!("[+] Sent to {to}"),
                    Ok((_, SendOutcome::Queued { reason })) => {
                        format!("[+] Queued for {to} ({reason}); it goes out as soon as they are online")
                    }
                    Err(e) => format!("[!] {e}"),
                };
                Done::then_options(vec![line])
            }),
        }
    }

    fn finished(&mut self, _client: &Client, done: Done) -> bool {
        if let Some(f) = done.file {
            self.transfers.start(f.id, f.name, f.peer, f.size);
        }
        for line in done.lines {
            say(line);
        }
        prompt(&self.state);
        true
    }

    async fn event(&mut self, client: &Client, e: Event, busy: bool) {
        // While a command runs there is no prompt to draw again.
        if show_event(client, &mut self.transfers, e).await && !busy {
            prompt(&self.state);
        }
    }

    fn stopping(&mut self, _client: &Client) {
        say("\n[+] Logging out...");
    }

    fn late_event(&mut self, _event: Event) {}

    fn stopped(&mut self) {
        say("[+] Bye!");
    }
}

/// Runs the menu until Logout, end of input or a signal.
pub async fn run(client: Client, events: mpsc::Receiver<Event>, stdin: input::Stdin) -> anyhow::Result<()> {
    let menu = Menu { state: Prompt::Choice, transfers: Transfers::default() };
    crate::event_loop::run(client, events, stdin, menu).await
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
