//! The interactive menu of the original design: numbered options, prompts, and what arrives
//! printed as it comes (`> Message from 123: Hello`).
//!
//! On a terminal the prompts are edited with `terminal.rs` (arrows, Home/End, history), and what
//! arrives is printed above the line being typed, which stays intact; piped input is read as it is.
//! Text from peers is printed with control and bidi characters neutralized
//! (`whatsap2p_client::display`). Each message gets one short line when delivered and one when
//! read (a group message: once every member has it), failures always.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use whatsap2p_client::display::{civil_from_days, clean, clean_lines, size};
use whatsap2p_client::{
    Change, Chat, ChatItem, Client, Event, FileRecord, GroupId, MessageId, Number, Presence, RequestItem,
    SendOutcome,
};

use crate::event_loop::{FrontEnd, Step};
use crate::input::{self, Line};
use crate::terminal::Printer;

const OPTIONS: &str = "[+] Options:
1 - Ping user
2 - Send Message
3 - View Contacts (rename, remove)
4 - Add New Contact
5 - Logout
6 - Conversation history
7 - Send Photo (or any file)
8 - Groups
9 - Message requests
10 - Settings (read receipts)";

const SHORT_OPTIONS: &str =
    "[+] 1 Ping · 2 Send · 3 Contacts · 4 Add contact · 5 Logout · 6 History · 7 Photo · \
                             8 Groups · 9 Requests · 10 Settings";

const GROUP_HELP: &str = "[+] Group commands: new NAME NUMBER… | send GROUP TEXT | add GROUP NUMBER | remove GROUP NUMBER | admin GROUP NUMBER | leave GROUP (GROUP: its name, or the start of its id; empty line: back)";

const CONTACT_HELP: &str = "[+] Contact commands: rename NUMBER NAME | remove NUMBER (empty line: back)";

const REQUEST_HELP: &str =
    "[+] Request commands: accept NUMBER | ignore NUMBER | block NUMBER | unblock NUMBER (empty line: back)";

/// Items a history page shows.
const HISTORY_LINES: usize = 20;
/// Sent messages remembered for their delivered and read lines (the oldest are forgotten).
const REMEMBERED_SENDS: usize = 1000;
/// Characters of a text quoted in a status line.
const PREVIEW: usize = 40;

/// What the next input line answers.
#[derive(Clone, Debug)]
enum Prompt {
    Choice,
    PingNumber,
    SendNumber,
    SendText(Number),
    AddNumber,
    HistoryWith,
    /// A page of `chat` was shown; Enter shows the one before `before`.
    HistoryMore {
        chat: Chat,
        before: MessageId,
    },
    FileNumber,
    FilePath(Number),
    GroupCommand,
    ContactCommand,
    RequestCommand,
    Settings,
}

impl Prompt {
    fn text(&self) -> &'static str {
        match self {
            Prompt::Choice => "Choose an option: ",
            Prompt::PingNumber => "Number to ping: ",
            Prompt::SendNumber => "Send to number: ",
            Prompt::SendText(_) => "Message: ",
            Prompt::AddNumber => "New contact's number (and a name, if you like): ",
            Prompt::HistoryWith => "Conversation with (a number, or a group's name): ",
            Prompt::HistoryMore { .. } => "Enter for older messages, or choose an option: ",
            Prompt::FileNumber => "Send photo to number: ",
            Prompt::FilePath(_) => "Path of the photo or file: ",
            Prompt::GroupCommand => "Group command: ",
            Prompt::ContactCommand => "Contact command: ",
            Prompt::RequestCommand => "Request command: ",
            Prompt::Settings => "Turn read receipts on or off (on/off, empty line: back): ",
        }
    }

    /// Whether a bare option number typed here goes back to the options and runs it.
    fn takes_options(&self) -> bool {
        matches!(
            self,
            Prompt::HistoryMore { .. }
                | Prompt::GroupCommand
                | Prompt::ContactCommand
                | Prompt::RequestCommand
        )
    }
}

/// Where the menu writes: stdout as it is, or above the line editor's prompt.
pub struct Screen {
    editor: Option<Printer>,
    /// Plain output: a prompt is printed and no newline came after it yet.
    prompt_open: Cell<bool>,
}

impl Screen {
    /// Stdout as it is (piped input, or no terminal).
    pub fn plain() -> Self {
        Self { editor: None, prompt_open: Cell::new(false) }
    }

    /// Above the prompts of the line editor.
    pub fn edited(printer: Printer) -> Self {
        Self { editor: Some(printer), prompt_open: Cell::new(false) }
    }

    /// Prints a line (or several).
    fn say(&self, line: impl AsRef<str>) {
        match &self.editor {
            Some(printer) => printer.say(line.as_ref()),
            None => {
                let mut out = std::io::stdout().lock();
                // An event after a prompt starts on a line of its own.
                if self.prompt_open.replace(false) {
                    let _ = writeln!(out);
                }
                let _ = writeln!(out, "{}", line.as_ref());
                let _ = out.flush();
            }
        }
    }

    /// Shows a prompt and reads the next line with it.
    fn ask(&self, prompt: &str) {
        match &self.editor {
            Some(printer) => printer.ask(prompt),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{prompt}");
                let _ = out.flush();
                self.prompt_open.set(true);
            }
        }
    }

    /// Input read: the prompt's line is done.
    fn answered(&self) {
        self.prompt_open.set(false);
    }
}

/// `ip:port`, as every address is printed.
fn addr(a: std::net::SocketAddr) -> String {
    a.to_string()
}

fn describe(p: &Presence) -> String {
    match (p.online, p.key) {
        (Some(a), _) => match p.path {
            Some(path) => format!("{} - Online ({}) · {}", p.number, addr(a), path.detail()),
            None => format!("{} - Online ({})", p.number, addr(a)),
        },
        (None, Some(_)) => format!("{} - Offline", p.number),
        (None, None) => format!("{} - never registered (not a whatsap2p user yet)", p.number),
    }
}

/// A text quoted in a status line: its first line, cut to [`PREVIEW`] characters, neutralized.
fn preview(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    let mut cut: String = first.chars().take(PREVIEW).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("\"{}\"", clean(&cut))
}

/// A message text for the screen: each line neutralized, continuation lines indented.
fn body(text: &str) -> String {
    clean_lines(text).collect::<Vec<_>>().join("\n    ")
}

/// Where a sent message went, for its delivered and read lines.
#[derive(Clone, Debug)]
enum Target {
    Peer(Number),
    Group { name: String, members: usize },
}

/// A message just sent: its id, where to, and its text.
type SentText = (MessageId, Target, String);

/// A sent message whose receipts are still to come.
struct Sent {
    target: Target,
    preview: String,
    /// Members (1 for a peer) that have not confirmed it yet, and not read it yet.
    undelivered: usize,
    unread: usize,
}

/// Sent messages and their receipts, the most recent [`REMEMBERED_SENDS`].
#[derive(Default)]
struct Receipts {
    sent: HashMap<MessageId, Sent>,
    order: VecDeque<MessageId>,
}

impl Receipts {
    fn remember(&mut self, id: MessageId, target: Target, text: &str) {
        let members = match &target {
            Target::Peer(_) => 1,
            Target::Group { members, .. } => *members,
        };
        if self.order.len() >= REMEMBERED_SENDS {
            if let Some(old) = self.order.pop_front() {
                self.sent.remove(&old);
            }
        }
        self.order.push_back(id);
        let sent = Sent { target, preview: preview(text), undelivered: members, unread: members };
        self.sent.insert(id, sent);
    }

    /// The line for `id` delivered to `to`: once per message, once every member has it.
    fn delivered(&mut self, id: MessageId, to: &Number) -> Option<String> {
        let Some(s) = self.sent.get_mut(&id) else { return Some(format!("[+] Delivered to {to}")) };
        s.undelivered = s.undelivered.checked_sub(1)?;
        (s.undelivered == 0).then(|| match &s.target {
            Target::Peer(n) => format!("[+] Delivered to {n}: {}", s.preview),
            Target::Group { name, members } => {
                format!("[+] Delivered to all {members} in {name}: {}", s.preview)
            }
        })
    }

    /// The line for `id` read by `by`: once per message, once every member read it.
    fn read(&mut self, id: MessageId, by: &Number) -> Option<String> {
        let Some(s) = self.sent.get_mut(&id) else { return Some(format!("[+] Read by {by}")) };
        s.unread = s.unread.checked_sub(1)?;
        (s.unread == 0).then(|| match &s.target {
            Target::Peer(n) => format!("[+] Read by {n}: {}", s.preview),
            Target::Group { name, members } => format!("[+] Read by all {members} in {name}: {}", s.preview),
        })
    }

    fn preview_of(&self, id: MessageId) -> String {
        self.sent.get(&id).map(|s| format!(": {}", s.preview)).unwrap_or_default()
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

/// Runs one line of the group sub-menu; returns what to tell the user, and the message it sent.
async fn group_command(client: &Client, line: &str) -> anyhow::Result<(String, Option<SentText>)> {
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
    let text = match verb {
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
            let (group, text) = id_and(rest).await?;
            let (id, members) = client.send_group(group, &text).await?;
            let target = Target::Group { name: group_name(client, group).await, members };
            return Ok((format!("Sent to {members} members"), Some((id, target, text))));
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
        _ => anyhow::bail!("unknown group command '{}'", clean(verb)),
    };
    Ok((text, None))
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
            .map(|g| clean(&g.state.name).into_owned())
            .unwrap_or_else(|| id.to_string()),
        Err(_) => id.to_string(),
    }
}

/// A number with its contact name, if it has one: `456 (Bob)`.
async fn who(client: &Client, number: &Number) -> String {
    let named = client
        .contacts()
        .await
        .ok()
        .and_then(|list| list.into_iter().find(|c| c.number == *number).and_then(|c| c.name));
    match named {
        Some(name) => format!("{number} ({})", clean(&name)),
        None => number.to_string(),
    }
}

/// The groups we are in, each with its members and their status.
async fn show_groups(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    match client.groups().await {
        Ok(groups) if groups.is_empty() => out.push("[+] No groups yet".to_owned()),
        Ok(groups) => {
            for g in groups.iter().filter(|g| !g.left) {
                out.push(format!("[+] {} ({})", clean(&g.state.name), g.state.id));
                for m in &g.state.members {
                    let admin = if g.state.admins.contains(m) { " (admin)" } else { "" };
                    let status = if m == client.number() {
                        "you".to_owned()
                    } else {
                        match client.presence_of(m) {
                            Some(Some(a)) => format!("Online ({})", addr(a)),
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

/// Contacts with their names and status.
async fn show_contacts(client: &Client) -> (Vec<String>, bool) {
    match client.contacts().await {
        Ok(list) if list.is_empty() => (vec!["[+] No contacts yet: add one with 4".to_owned()], false),
        Ok(list) => {
            let mut out = vec!["[+] Contacts:".to_owned()];
            for c in list {
                let p = Presence { number: c.number.clone(), online: c.online, key: c.key, path: c.path };
                let line = describe(&p);
                out.push(match c.name {
                    Some(name) => format!(
                        "    {}",
                        line.replacen(c.number.as_str(), &format!("{} {}", c.number, clean(&name)), 1)
                    ),
                    None => format!("    {line}"),
                });
            }
            out.push(CONTACT_HELP.to_owned());
            (out, true)
        }
        Err(e) => (vec![format!("[!] {e}")], false),
    }
}

/// Runs one line of the contacts sub-menu.
async fn contact_command(client: &Client, line: &str) -> anyhow::Result<String> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let (number, name) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
    let number = Number::new(number)?;
    Ok(match verb {
        "rename" => {
            client.rename_contact(&number, name).await?;
            match name.trim() {
                "" => format!("{number} has no name now"),
                name => format!("{number} is {name} now"),
            }
        }
        "remove" => {
            client.remove_contact(&number).await?;
            format!("Removed {number}")
        }
        _ => anyhow::bail!("unknown contact command '{}'", clean(verb)),
    })
}

/// One item of a request, in a few words.
fn request_item(item: &RequestItem) -> String {
    match item {
        RequestItem::Text { text, .. } => preview(text),
        RequestItem::File { name, size: bytes, media_type, .. } => {
            let kind = if media_type.starts_with("image/") { "photo" } else { "file" };
            format!("{kind} {} ({})", clean(name), size(*bytes))
        }
        RequestItem::Group { name, members, .. } => {
            format!("an invitation to group {} ({} members)", clean(name), members.len())
        }
        RequestItem::GroupText { from, text, .. } => format!("{from} in the group: {}", preview(text)),
        _ => "something this version cannot show".to_owned(),
    }
}

/// The message requests waiting, and the numbers blocked.
async fn show_requests(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    match client.requests().await {
        Ok(list) if list.is_empty() => out.push("[+] No message requests".to_owned()),
        Ok(list) => {
            out.push("[+] Message requests (from numbers that are not contacts):".to_owned());
            for r in list {
                out.push(format!("    {} since {}:", r.from, when(r.first_at_ms)));
                for item in &r.items {
                    out.push(format!("      {}", request_item(item)));
                }
            }
        }
        Err(e) => out.push(format!("[!] {e}")),
    }
    if let Ok(blocked) = client.blocked().await {
        if !blocked.is_empty() {
            let list: Vec<String> = blocked.iter().map(|n| n.to_string()).collect();
            out.push(format!("[+] Blocked: {}", list.join(", ")));
        }
    }
    out.push(REQUEST_HELP.to_owned());
    out
}

/// Runs one line of the requests sub-menu.
async fn request_command(client: &Client, line: &str) -> anyhow::Result<String> {
    let (verb, number) = line.split_once(' ').unwrap_or((line, ""));
    let number = Number::new(number.trim())?;
    Ok(match verb {
        "accept" => {
            let n = client.accept(&number).await?;
            format!("Accepted {number}: a contact now; {n} held item(s) delivered")
        }
        "ignore" => {
            client.ignore(&number).await?;
            format!("Ignored the request from {number}")
        }
        "block" => match client.block(&number).await? {
            true => format!("Blocked {number}: nothing it sends is shown (it is not told)"),
            false => format!("{number} was blocked already"),
        },
        "unblock" => match client.unblock(&number).await? {
            true => format!("Unblocked {number}"),
            false => format!("{number} was not blocked"),
        },
        _ => anyhow::bail!("unknown request command '{}'", clean(verb)),
    })
}

/// `2026-12-01` (UTC) of a millisecond timestamp.
fn date(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `HH:MM` (UTC) of a millisecond timestamp.
fn clock(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// `2026-12-01 14:02` (UTC).
fn when(ms: u64) -> String {
    format!("{} {}", date(ms), clock(ms))
}

/// A page of history: a date line wherever the day changes, then each text or file.
fn history_lines(client: &Client, items: &[ChatItem]) -> Vec<String> {
    let mut out = Vec::new();
    let mut day = String::new();
    for item in items {
        let at = item.at_ms();
        if date(at) != day {
            day = date(at);
            out.push(format!("    ── {day} (UTC) ──"));
        }
        let line = match item {
            ChatItem::Text(m) => {
                let who = if m.outgoing { "You".to_owned() } else { m.peer.to_string() };
                // A group message went to every member: its state is one member's, so none is shown.
                let state = if m.outgoing && m.group.is_none() {
                    format!("  [{}]", m.state.as_str())
                } else {
                    String::new()
                };
                format!("    {} {who}: {}{state}", clock(at), body(&m.text))
            }
            ChatItem::File(f) => {
                let kind = if f.media_type.starts_with("image/") { "photo" } else { "file" };
                let name = clean(&f.name);
                let path = f.path.display().to_string();
                if f.outgoing {
                    format!("    {} You: {kind} {name} ({})  [{}]", clock(at), size(f.size), f.state.as_str())
                } else {
                    format!(
                        "    {} {}: {kind} {name} ({}), saved to {}",
                        clock(at),
                        f.peer,
                        size(f.size),
                        clean(&path)
                    )
                }
            }
            _ => continue,
        };
        out.push(line);
    }
    let _ = client;
    out
}

/// The chat `with` names: a number, or a group by name or id start.
async fn chat_named(client: &Client, with: &str) -> anyhow::Result<(Chat, String)> {
    if let Ok(n) = Number::new(with) {
        return Ok((Chat::Peer(n.clone()), who(client, &n).await));
    }
    let groups = client.groups().await?;
    let id = pick_group(&groups, with)?;
    let name = groups
        .iter()
        .find(|g| g.state.id == id)
        .map_or_else(|| id.to_string(), |g| clean(&g.state.name).into_owned());
    Ok((Chat::Group(id), format!("group {name}")))
}

/// A page of `chat` before `before` (the newest without it); the lines and, when there may be
/// older ones, the cursor for them.
async fn history_page(
    client: &Client,
    chat: &Chat,
    title: &str,
    before: Option<MessageId>,
) -> (Vec<String>, Option<MessageId>) {
    match client.history_page(chat, before, HISTORY_LINES).await {
        Ok(items) if items.is_empty() && before.is_none() => {
            (vec![format!("[+] No messages with {title} yet")], None)
        }
        Ok(items) if items.is_empty() => (vec![format!("[+] Nothing older with {title}")], None),
        Ok(items) => {
            let head = match before {
                None => format!("[+] Last {} messages with {title}:", items.len()),
                Some(_) => format!("[+] {} older messages with {title}:", items.len()),
            };
            let more = (items.len() == HISTORY_LINES).then(|| items[0].id());
            let mut lines = vec![head];
            lines.extend(history_lines(client, &items));
            (lines, more)
        }
        Err(e) => (vec![format!("[!] {e}")], None),
    }
}

/// Asks for our number until a valid one is given; `None` at end of input.
pub async fn ask_number(source: &mut input::Source, screen: &Screen) -> anyhow::Result<Option<Number>> {
    screen.say("Welcome!");
    loop {
        screen.ask("Please insert your number: ");
        let line = source.next_line().await?;
        screen.answered();
        match line {
            None => return Ok(None),
            Some(Line::Text(t)) => match Number::new(t.trim()) {
                Ok(n) => return Ok(Some(n)),
                Err(e) => screen.say(format!("[!] {e}")),
            },
            Some(_) => screen.say("[!] That is not a number"),
        }
    }
}

/// Announces the client as the original did.
fn banner(screen: &Screen, client: &Client) {
    if client.directory_version().is_some() {
        screen.say("[+] Connection successful!");
    } else {
        // Why follows at once, as a `DirectoryLost` event.
        screen.say("[!] Started without the directory server: whatsap2p keeps trying, and says when it is connected. Messages wait in the outbox meanwhile.");
    }
    screen.say(format!("[+] Server key: {}", client.server_key()));
    screen.say(format!("[+] Your key: {}", client.identity_key()));
    screen.say(format!("[+] Listening at {}", addr(client.published_addr())));
    if !client.read_receipts() {
        screen.say("[+] Read receipts are off (10 to change)");
    }
}

/// What a menu command gives back: the lines to show, and what to follow.
#[derive(Default)]
struct Done {
    lines: Vec<String>,
    file: Option<FileRecord>,
    /// A message sent, for its receipt lines.
    sent: Option<SentText>,
    /// Where the next prompt goes, when the command decides it.
    next: Option<Prompt>,
}

impl Done {
    /// `lines`, then the short list of options.
    fn then_options(mut lines: Vec<String>) -> Self {
        lines.push(SHORT_OPTIONS.to_owned());
        Self { lines, ..Self::default() }
    }

    fn lines(lines: Vec<String>) -> Self {
        Self { lines, ..Self::default() }
    }
}

/// The menu's state: what the next line answers, what it prints to, and what it follows.
struct Menu {
    state: Prompt,
    screen: Screen,
    transfers: Transfers,
    receipts: Receipts,
}
impl Menu {
    /// Starts `job`, whose answer the user sees before the prompt of `next`.
    fn run<'c>(&mut self, next: Prompt, job: impl Future<Output = Done> + 'c) -> Step<'c, Done> {
        self.state = next;
        Step::Run(Box::pin(job))
    }

    /// Shows `line` and goes back to the options.
    fn back(&mut self, line: Option<String>) -> Step<'static, Done> {
        if let Some(line) = line {
            self.screen.say(line);
        }
        self.screen.say(SHORT_OPTIONS);
        self.ask(Prompt::Choice)
    }

    /// Moves to `next` and asks for it.
    fn ask(&mut self, next: Prompt) -> Step<'static, Done> {
        self.state = next;
        self.screen.ask(self.state.text());
        Step::Done
    }

    /// Shows an event; a message shown is a message read, so its sender gets a read receipt (if
    /// read receipts are on).
    async fn show(&mut self, client: &Client, e: Event) {
        let line = match e {
            Event::Progress { id, bytes, .. } => self.transfers.progress(id, bytes),
            Event::FileSent { id, to, .. } => Some(match self.transfers.finish(id) {
                Some(how) => format!("[+] File delivered to {to} ({how})"),
                None => format!("[+] File delivered to {to}"),
            }),
            Event::FileFailed { id, peer, reason, .. } => {
                self.transfers.finish(id);
                Some(format!("[!] File transfer with {peer} failed: {}", clean(&reason)))
            }
            Event::FileReceived { from, name, path, size: bytes, dimensions, .. } => {
                let kind = if dimensions.is_some() { "Photo" } else { "File" };
                let details = match dimensions {
                    Some((w, h)) => format!("{w}x{h}, {}", size(bytes)),
                    None => size(bytes),
                };
                let path = path.display().to_string();
                Some(format!("> {kind} from {from}: {} ({details}) saved to {}", clean(&name), clean(&path)))
            }
            Event::Message { id, from, text, group, .. } => {
                let sender = who(client, &from).await;
                let line = match group {
                    Some(g) => {
                        format!("> [{}] Message from {sender}: {}", group_name(client, g).await, body(&text))
                    }
                    None => format!("> Message from {sender}: {}", body(&text)),
                };
                self.screen.say(line);
                if let Err(e) = client.mark_read(id).await {
                    self.screen.say(format!("[!] {e}"));
                }
                None
            }
            Event::Request { from, item } => Some(format!(
                "> Message request from {from}: {} (9 to accept, ignore or block)",
                request_item(&item)
            )),
            Event::Pending { id, to } => Some(format!(
                "[+] Waiting for {to} to accept your message request{}",
                self.receipts.preview_of(id)
            )),
            Event::Delivered { id, to } => self.receipts.delivered(id, &to),
            Event::Read { id, by } => self.receipts.read(id, &by),
            // Delivered follows: one line is enough.
            Event::Sent { .. } => None,
            Event::Failed { id, to, reason } => Some(format!(
                "[!] Message to {to} failed{}: {}",
                self.receipts.preview_of(id),
                clean(&reason)
            )),
            Event::Presence { number, online: Some(a) } => {
                Some(format!("> {number} is online ({})", addr(a)))
            }
            Event::Presence { number, online: None } => Some(format!("> {number} is offline")),
            Event::Reconnected => Some("[+] Reconnected to the directory server".to_owned()),
            Event::Group(g) if g.left => {
                Some(format!("[+] You are no longer in group {}", clean(&g.state.name)))
            }
            Event::Group(g) => {
                let members: Vec<String> = g.state.members.iter().map(|m| m.to_string()).collect();
                Some(format!(
                    "[+] Group {} ({}) by {}: {}",
                    clean(&g.state.name),
                    g.state.id,
                    g.changed_by,
                    members.join(", ")
                ))
            }
            Event::Warning { message } => Some(format!("[!] WARNING: {}", clean(&message))),
            Event::DirectoryLost { reason } => {
                Some(format!("[!] Lost the directory server: {}", clean(&reason)))
            }
            Event::Replaced { message } => Some(format!("[!] {}", clean(&message))),
            // A direct link is what a user expects, and the contacts list shows every path; a
            // relayed one is worth a line (its reason).
            Event::Path { number, path } if !path.is_direct() => {
                Some(format!("[+] The link to {number} is {}", path.detail()))
            }
            Event::Path { .. } => None,
            other => Some(format!("[+] {other:?}")),
        };
        if let Some(line) = line {
            self.screen.say(line);
        }
    }
}

/// Sends `text` to `to`; the answer line and what to follow.
async fn send_text(client: &Client, to: Number, text: String) -> Done {
    match client.send(&to, &text).await {
        Ok((id, outcome)) => {
            let line = match outcome {
                SendOutcome::Sent => format!("[+] Sent to {to}"),
                SendOutcome::Queued { reason } => {
                    format!("[+] Queued for {to} ({reason}); it goes out as soon as they are online")
                }
            };
            Done { sent: Some((id, Target::Peer(to), text)), ..Done::then_options(vec![line]) }
        }
        Err(e) => Done::then_options(vec![format!("[!] {e}")]),
    }
}

impl FrontEnd for Menu {
    type Done = Done;

    fn start(&mut self, client: &Client) {
        banner(&self.screen, client);
        self.screen.say(format!("\n{OPTIONS}\n\n[+] New Messages:"));
        self.screen.ask(self.state.text());
    }

    fn line<'c>(&mut self, client: &'c Client, line: Line) -> Step<'c, Done> {
        self.screen.answered();
        let line = match line {
            Line::Text(t) => t,
            Line::TooLong(n) => {
                self.screen.say(format!("[!] That line is {n} bytes; too long"));
                return self.ask(self.state.clone());
            }
            Line::NotUtf8 => {
                self.screen.say("[!] That line is not valid UTF-8");
                return self.ask(self.state.clone());
            }
        };
        let mut state = std::mem::replace(&mut self.state, Prompt::Choice);
        // A bare option number in a sub-menu goes back to the options and runs it.
        if state.takes_options() && line.trim().parse::<u8>().is_ok_and(|n| (1..=10).contains(&n)) {
            state = Prompt::Choice;
        }
        match (state, line.trim()) {
            (Prompt::Choice, "") => self.ask(Prompt::Choice),
            (Prompt::Choice, "1") => self.ask(Prompt::PingNumber),
            (Prompt::Choice, "2") => self.ask(Prompt::SendNumber),
            (Prompt::Choice, "3") => self.run(Prompt::Choice, async move {
                let (mut lines, any) = show_contacts(client).await;
                if !any {
                    lines.push(SHORT_OPTIONS.to_owned());
                }
                Done { next: any.then_some(Prompt::ContactCommand), ..Done::lines(lines) }
            }),
            (Prompt::Choice, "4") => self.ask(Prompt::AddNumber),
            (Prompt::Choice, "5") => Step::Quit,
            (Prompt::Choice, "6") => self.ask(Prompt::HistoryWith),
            (Prompt::Choice, "7") => self.ask(Prompt::FileNumber),
            (Prompt::Choice, "8") => self.run(Prompt::GroupCommand, async move {
                let mut lines = show_groups(client).await;
                lines.push(GROUP_HELP.to_owned());
                Done::lines(lines)
            }),
            (Prompt::Choice, "9") => {
                self.run(Prompt::RequestCommand, async move { Done::lines(show_requests(client).await) })
            }
            (Prompt::Choice, "10") => {
                let on = if client.read_receipts() { "on" } else { "off" };
                self.screen.say(format!(
                    "[+] Read receipts are {on}: who sends you a message sees when you read it"
                ));
                self.ask(Prompt::Settings)
            }
            (Prompt::Settings, "") => self.back(None),
            (Prompt::Settings, choice) => {
                let on = match choice.to_lowercase().as_str() {
                    "on" | "yes" | "y" => true,
                    "off" | "no" | "n" => false,
                    _ => {
                        self.screen.say("[!] Say on or off");
                        return self.ask(Prompt::Settings);
                    }
                };
                self.run(Prompt::Choice, async move {
                    let line = match client.set_read_receipts(on, true).await {
                        Ok(()) if on => "[+] Read receipts on".to_owned(),
                        Ok(()) => {
                            "[+] Read receipts off: nobody sees when you read their messages".to_owned()
                        }
                        Err(e) => format!("[!] {e}"),
                    };
                    Done::then_options(vec![line])
                })
            }
            (Prompt::GroupCommand | Prompt::ContactCommand | Prompt::RequestCommand, "") => self.back(None),
            (Prompt::GroupCommand, command) => {
                let command = command.to_owned();
                self.run(Prompt::GroupCommand, async move {
                    let (line, sent) = match group_command(client, &command).await {
                        Ok((done, sent)) => (format!("[+] {done}"), sent),
                        Err(e) => (format!("[!] {e}"), None),
                    };
                    Done { sent, ..Done::lines(vec![line]) }
                })
            }
            (Prompt::ContactCommand, command) => {
                let command = command.to_owned();
                self.run(Prompt::ContactCommand, async move {
                    let line = match contact_command(client, &command).await {
                        Ok(done) => format!("[+] {done}"),
                        Err(e) => format!("[!] {e}"),
                    };
                    Done::lines(vec![line])
                })
            }
            (Prompt::RequestCommand, command) => {
                let command = command.to_owned();
                self.run(Prompt::RequestCommand, async move {
                    let line = match request_command(client, &command).await {
                        Ok(done) => format!("[+] {done}"),
                        Err(e) => format!("[!] {e}"),
                    };
                    Done::lines(vec![line])
                })
            }
            (Prompt::Choice, other) => self.back(Some(format!("[!] '{}' is not an option", clean(other)))),
            (
                Prompt::PingNumber
                | Prompt::SendNumber
                | Prompt::AddNumber
                | Prompt::HistoryWith
                | Prompt::FileNumber,
                "",
            ) => self.back(None),
            (Prompt::HistoryWith, with) => {
                let with = with.to_owned();
                self.run(Prompt::Choice, async move {
                    match chat_named(client, &with).await {
                        Ok((chat, title)) => {
                            let (lines, more) = history_page(client, &chat, &title, None).await;
                            match more {
                                Some(before) => Done {
                                    next: Some(Prompt::HistoryMore { chat, before }),
                                    ..Done::lines(lines)
                                },
                                None => Done::then_options(lines),
                            }
                        }
                        Err(e) => Done::then_options(vec![format!("[!] {e}")]),
                    }
                })
            }
            (Prompt::HistoryMore { chat, before }, "") => self.run(Prompt::Choice, async move {
                let title = match &chat {
                    Chat::Peer(n) => who(client, n).await,
                    Chat::Group(g) => format!("group {}", group_name(client, *g).await),
                };
                let (lines, more) = history_page(client, &chat, &title, Some(before)).await;
                match more {
                    Some(before) => {
                        Done { next: Some(Prompt::HistoryMore { chat, before }), ..Done::lines(lines) }
                    }
                    None => Done::then_options(lines),
                }
            }),
            (Prompt::HistoryMore { .. }, other) => {
                self.back(Some(format!("[!] '{}' is not an option", clean(other))))
            }
            (Prompt::AddNumber, text) => {
                let (number, name) = text.split_once(' ').unwrap_or((text, ""));
                match Number::new(number) {
                    Err(e) => {
                        self.screen.say(format!("[!] {e}"));
                        self.ask(Prompt::AddNumber)
                    }
                    Ok(n) => {
                        let name = name.trim().to_owned();
                        self.run(Prompt::Choice, async move {
                            let named = (!name.is_empty()).then_some(name.as_str());
                            let line = match client.add_contact(&n, named).await {
                                Ok((true, Some(k))) => format!("[+] Added {n} (key {k})"),
                                Ok((true, None)) => format!("[+] Added {n} (not registered yet)"),
                                Ok((false, _)) if named.is_some() => format!("[+] {n} is {name} now"),
                                Ok((false, _)) => format!("[+] {n} is already a contact"),
                                Err(e) => format!("[!] {e}"),
                            };
                            Done::then_options(vec![line])
                        })
                    }
                }
            }
            (p @ (Prompt::PingNumber | Prompt::SendNumber | Prompt::FileNumber), text) => {
                match Number::new(text) {
                    Err(e) => {
                        self.screen.say(format!("[!] {e}"));
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
                        Prompt::FileNumber => self.ask(Prompt::FilePath(n)),
                        _ => self.ask(Prompt::SendText(n)),
                    },
                }
            }
            (Prompt::FilePath(_), "") => self.back(None),
            (Prompt::FilePath(to), path) => {
                let path = std::path::PathBuf::from(path);
                self.run(Prompt::Choice, async move {
                    match client.send_file(&to, &path).await {
                        Ok(f) => {
                            let line = format!("[+] Sending {} ({}) to {to}", clean(&f.name), size(f.size));
                            Done { file: Some(f), ..Done::then_options(vec![line]) }
                        }
                        Err(e) => Done::then_options(vec![format!("[!] {e}")]),
                    }
                })
            }
            (Prompt::SendText(to), _) => self.run(Prompt::Choice, send_text(client, to, line)),
        }
    }

    fn finished(&mut self, _client: &Client, done: Done) -> bool {
        if let Some(f) = done.file {
            self.transfers.start(f.id, f.name, f.peer, f.size);
        }
        if let Some((id, target, text)) = done.sent {
            self.receipts.remember(id, target, &text);
        }
        if let Some(next) = done.next {
            self.state = next;
        }
        for line in done.lines {
            self.screen.say(line);
        }
        self.screen.ask(self.state.text());
        true
    }

    async fn event(&mut self, client: &Client, e: Event, _busy: bool) {
        // Printed above the prompt (or on a line of its own): the prompt is not printed again.
        self.show(client, e).await;
    }

    fn stopping(&mut self, _client: &Client) {
        self.screen.say("[+] Logging out...");
    }

    fn late_event(&mut self, _event: Event) {}

    fn stopped(&mut self) {
        self.screen.say("[+] Bye!");
    }
}

/// Runs the menu until Logout, end of input or a signal.
pub async fn run(
    client: Client,
    events: mpsc::Receiver<Event>,
    source: input::Source,
    screen: Screen,
) -> anyhow::Result<()> {
    let menu = Menu {
        state: Prompt::Choice,
        screen,
        transfers: Transfers::default(),
        receipts: Receipts::default(),
    };
    crate::event_loop::run(client, events, source, menu).await
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
