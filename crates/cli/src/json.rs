//! JSON-lines mode: one command object per stdin line, one event object per stdout line, nothing
//! else on stdout. The schema is a public API, documented exactly in `docs/json-lines.md`.

use std::io::Write;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use whatsap2p_client::{
    Change, Client, ContactStatus, Event, FileFailCode, Group, GroupId, NatKind, Number, Path, Presence,
    RelayReason, Request, RequestItem, SendOutcome, StoredMessage, Transport,
};

use crate::event_loop::{FrontEnd, Step};
use crate::input::{self, Line};

/// A command from stdin.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Command {
    Ping { number: Number },
    Send { to: Option<Number>, group: Option<String>, text: String },
    Contacts,
    AddContact { number: Number, name: Option<String> },
    RenameContact { number: Number, name: String },
    RemoveContact { number: Number },
    Requests,
    Accept { number: Number },
    Ignore { number: Number },
    Block { number: Number },
    Unblock { number: Number },
    ReadReceipts { on: bool },
    History { with: Option<Number>, group: Option<String>, limit: Option<usize> },
    Read { id: String },
    SendFile { to: Number, path: std::path::PathBuf },
    CancelFile { id: String },
    GroupCreate { name: String, members: Vec<Number> },
    GroupAdd { id: String, number: Number },
    GroupRemove { id: String, number: Number },
    GroupAdmin { id: String, number: Number },
    GroupLeave { id: String },
    Groups,
    Logout,
}

/// Most messages one `history` answer carries.
pub const MAX_HISTORY: usize = 1000;
/// Messages a `history` answer carries when no limit is given.
pub const DEFAULT_HISTORY: usize = 50;

/// Writes one event line and flushes, so a script sees it at once.
pub fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The `error` event.
pub fn error(message: impl std::fmt::Display) {
    emit(&json!({"event": "error", "message": message.to_string()}));
}

fn presence(p: &Presence) -> Value {
    let mut v = json!({"number": p.number, "online": p.online.is_some()});
    if let Some(addr) = p.online {
        v["addr"] = json!(addr.to_string());
    }
    if let Some(key) = p.key {
        v["key"] = json!(key.to_hex());
    }
    if let (Some(path), Some(_)) = (p.path, p.online) {
        add_path(&mut v, path);
    }
    v
}

fn contact(c: &ContactStatus) -> Value {
    let mut v = presence(&Presence { number: c.number.clone(), online: c.online, key: c.key, path: c.path });
    if let Some(name) = &c.name {
        v["name"] = json!(name);
    }
    v
}

/// An item of a message request: its `kind` and what describes it.
fn request_item(item: &RequestItem) -> Value {
    match item {
        RequestItem::Text { id, text, sent_at_ms } => {
            json!({"kind": "text", "id": id.to_string(), "text": text, "sent_at_ms": sent_at_ms})
        }
        RequestItem::File { id, name, size, media_type } => {
            json!({"kind": "file", "id": id.to_string(), "name": name, "size": size, "media_type": media_type})
        }
        RequestItem::Group { id, name, members } => {
            json!({"kind": "group", "group": id.to_string(), "name": name, "members": members})
        }
        RequestItem::GroupText { group, from, id, text, sent_at_ms } => json!({
            "kind": "group_text", "group": group.to_string(), "from": from, "id": id.to_string(),
            "text": text, "sent_at_ms": sent_at_ms,
        }),
        other => json!({"kind": "unknown", "debug": format!("{other:?}")}),
    }
}

fn request(r: &Request) -> Value {
    json!({
        "from": r.from,
        "first_at_ms": r.first_at_ms,
        "items": r.items.iter().map(request_item).collect::<Vec<_>>(),
    })
}

/// `path`, `transport`, `detail` (and `lan` or `reason`) of a link's path, added to `v`.
fn add_path(v: &mut Value, path: Path) {
    v["path"] = json!(if path.is_direct() { "direct" } else { "relayed" });
    v["transport"] = json!(transport_name(path.transport()));
    v["detail"] = json!(path.detail());
    match path {
        Path::Relayed { reason } => v["reason"] = json!(relay_reason_name(reason)),
        p => v["lan"] = json!(matches!(p, Path::DirectLan { .. })),
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        _ => "tcp",
    }
}

fn relay_reason_name(r: RelayReason) -> &'static str {
    match r {
        RelayReason::BothSymmetric => "both_symmetric",
        RelayReason::Symmetric => "symmetric",
        RelayReason::UdpBlocked => "udp_blocked",
        RelayReason::PunchTimedOut => "punch_timed_out",
        RelayReason::NoDirectTransport => "no_direct_transport",
        _ => "other",
    }
}

fn nat_name(n: NatKind) -> &'static str {
    match n {
        NatKind::Open => "open",
        NatKind::Cone => "cone",
        NatKind::Symmetric => "symmetric",
        NatKind::NoUdp => "no_udp",
        _ => "unmeasured",
    }
}

fn group_id(s: &str) -> anyhow::Result<GroupId> {
    s.parse().map_err(|_| anyhow::anyhow!("'{s}' is not a group id (32 hex digits)"))
}

fn group_event(g: &Group) -> Value {
    json!({
        "event": "group",
        "id": g.state.id.to_string(),
        "name": g.state.name,
        "members": g.state.members,
        "admins": g.state.admins,
        "version": g.state.version,
        "by": g.changed_by,
        "left": g.left,
    })
}

fn stored(m: &StoredMessage) -> Value {
    let mut v = json!({
        "id": m.id.to_string(),
        "direction": if m.outgoing { "out" } else { "in" },
        "text": m.text,
        "sent_at_ms": m.sent_at_ms,
        "state": m.state.as_str(),
    });
    if let Some(g) = m.group {
        v["group"] = json!(g.to_string());
    }
    if !m.outgoing {
        v["from"] = json!(m.peer);
    } else if m.group.is_none() {
        v["to"] = json!(m.peer);
    }
    if let Some(at) = m.received_at_ms {
        v["received_at_ms"] = json!(at);
    }
    v
}

fn event(e: Event) -> Value {
    match e {
        Event::Message { id, from, text, sent_at_ms, group } => {
            let mut v = json!({"event": "message", "id": id.to_string(), "from": from, "text": text, "sent_at_ms": sent_at_ms});
            if let Some(g) = group {
                v["group"] = json!(g.to_string());
            }
            v
        }
        Event::Group(g) => group_event(&g),
        Event::Delivered { id, to } => json!({"event": "delivered", "id": id.to_string(), "to": to}),
        Event::Pending { id, to } => json!({"event": "pending", "id": id.to_string(), "to": to}),
        Event::Request { from, item } => {
            let mut v = request_item(&item);
            v["event"] = json!("request");
            v["from"] = json!(from);
            v
        }
        Event::Sent { id, to, group } => {
            let mut v = json!({"event": "sent", "id": id.to_string(), "to": to});
            if let Some(g) = group {
                v["group"] = json!(g.to_string());
            }
            v
        }
        Event::Read { id, by } => json!({"event": "read", "id": id.to_string(), "by": by}),
        Event::Failed { id, to, reason } => {
            json!({"event": "failed", "id": id.to_string(), "to": to, "reason": reason})
        }
        Event::Presence { number, online } => {
            let mut v =
                json!({"event": "presence", "number": number, "online": online.is_some(), "pushed": true});
            if let Some(addr) = online {
                v["addr"] = json!(addr.to_string());
            }
            v
        }
        Event::Reconnected => json!({"event": "reconnected"}),
        Event::Progress { id, peer, outgoing, bytes, total } => {
            let mut v = json!({"event": "progress", "id": id.to_string(), "bytes": bytes, "total": total});
            // An outgoing file's progress is as it always was; an incoming one says so.
            if !outgoing {
                v["direction"] = json!("in");
                v["from"] = json!(peer);
            }
            v
        }
        Event::FileIncoming { id, from, name, size, media_type, resumed_from } => json!({
            "event": "file_incoming",
            "id": id.to_string(),
            "from": from,
            "name": name,
            "size": size,
            "media_type": media_type,
            "resumed_from": resumed_from,
        }),
        Event::FileSent { id, to, resumed_from } => {
            json!({"event": "file_sent", "id": id.to_string(), "to": to, "resumed_from": resumed_from})
        }
        Event::FileReceived { id, from, name, path, size, blake3, media_type, dimensions, resumed_from } => {
            let mut v = json!({
                "event": "file_received",
                "id": id.to_string(),
                "from": from,
                "name": name,
                "path": path.to_string_lossy(),
                "size": size,
                "blake3": hex::encode(blake3),
                "media_type": media_type,
                "resumed_from": resumed_from,
            });
            if let Some((w, h)) = dimensions {
                v["width"] = json!(w);
                v["height"] = json!(h);
            }
            v
        }
        Event::FileFailed { id, peer, outgoing, reason, code } => {
            let mut v = json!({
                "event": "file_failed",
                "id": id.to_string(),
                "peer": peer,
                "direction": if outgoing { "out" } else { "in" },
                "reason": reason,
            });
            if let Some(code) = code {
                v["code"] = json!(fail_code(code));
            }
            v
        }
        Event::Warning { message } => json!({"event": "warning", "message": message}),
        Event::DirectoryLost { reason } => json!({"event": "directory_lost", "reason": reason}),
        Event::Replaced { message } => json!({"event": "replaced", "message": message}),
        Event::Path { number, path } => {
            let mut v = json!({"event": "path", "number": number});
            add_path(&mut v, path);
            v
        }
        other => json!({"event": "unknown", "debug": format!("{other:?}")}),
    }
}

/// A transfer's failure code as `file_failed` names it.
fn fail_code(code: FileFailCode) -> &'static str {
    match code {
        FileFailCode::HashMismatch => "hash_mismatch",
        FileFailCode::TooManyBytes => "too_many_bytes",
        FileFailCode::SourceChanged => "source_changed",
        FileFailCode::Busy => "busy",
        FileFailCode::Stalled => "stalled",
        FileFailCode::Disk => "disk",
        FileFailCode::LinkClosed => "link_closed",
        FileFailCode::Protocol => "protocol",
        FileFailCode::SenderGaveUp => "sender_gave_up",
        FileFailCode::Cancelled => "cancelled",
        _ => "unknown",
    }
}

/// Announces the client online.
pub fn online(client: &Client) {
    let mut v = json!({
        "event": "online",
        "number": client.number(),
        "listen": client.published_addr().to_string(),
        "key": client.identity_key().to_hex(),
        "server_key": client.server_key().to_hex(),
        "registered": client.directory_version().is_some(),
    });
    if client.reaches_through_nats() {
        v["nat"] = json!(nat_name(client.nat()));
    }
    emit(&v);
}

/// One input line as a command.
pub(crate) fn parse(line: &str) -> Result<Command, serde_json::Error> {
    serde_json::from_str(line)
}

/// Runs one command (never `logout`, which the loop handles) and gives its answer.
async fn run_command(client: &Client, cmd: Command) -> anyhow::Result<Value> {
    Ok(match cmd {
        Command::Ping { number } => {
            let mut v = presence(&client.ping(&number).await?);
            v["event"] = json!("presence");
            v
        }
        Command::Send { to: Some(to), group: None, text } => match client.send(&to, &text).await? {
            (id, SendOutcome::Sent) => json!({"event": "sent", "id": id.to_string(), "to": to}),
            (id, SendOutcome::Queued { reason }) => {
                json!({"event": "queued", "id": id.to_string(), "to": to, "reason": reason})
            }
        },
        Command::Send { to: None, group: Some(group), text } => {
            let group = group_id(&group)?;
            let (id, members) = client.send_group(group, &text).await?;
            json!({"event": "sent", "id": id.to_string(), "group": group.to_string(), "members": members})
        }
        Command::Send { .. } => anyhow::bail!("send needs exactly one of \"to\" and \"group\""),
        Command::GroupCreate { name, members } => group_event(&client.group_create(&name, &members).await?),
        Command::GroupAdd { id, number } => {
            group_event(&client.group_change(group_id(&id)?, &number, Change::Add).await?)
        }
        Command::GroupRemove { id, number } => {
            group_event(&client.group_change(group_id(&id)?, &number, Change::Remove).await?)
        }
        Command::GroupAdmin { id, number } => {
            group_event(&client.group_change(group_id(&id)?, &number, Change::MakeAdmin).await?)
        }
        Command::GroupLeave { id } => group_event(&client.group_leave(group_id(&id)?).await?),
        Command::Groups => {
            let groups: Vec<Value> = client
                .groups()
                .await?
                .iter()
                .map(|g| {
                    let mut v = group_event(g);
                    v.as_object_mut().map(|o| o.remove("event"));
                    v["members"] = json!(g
                        .state
                        .members
                        .iter()
                        .map(|m| {
                            let online = if m == client.number() {
                                Some(client.published_addr())
                            } else {
                                client.presence_of(m).flatten()
                            };
                            let mut e = json!({"number": m, "admin": g.state.admins.contains(m), "online": online.is_some()});
                            if let Some(addr) = online {
                                e["addr"] = json!(addr.to_string());
                            }
                            e
                        })
                        .collect::<Vec<_>>());
                    v
                })
                .collect();
            json!({"event": "groups", "groups": groups})
        }
        Command::History { with, group, limit } => {
            let limit = limit.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
            match (with, group) {
                (Some(with), None) => {
                    let messages: Vec<Value> =
                        client.history(&with, limit).await?.iter().map(stored).collect();
                    json!({"event": "history", "with": with, "messages": messages})
                }
                (None, Some(group)) => {
                    let group = group_id(&group)?;
                    let messages: Vec<Value> =
                        client.group_history(group, limit).await?.iter().map(stored).collect();
                    json!({"event": "history", "group": group.to_string(), "messages": messages})
                }
                _ => anyhow::bail!("history needs exactly one of \"with\" and \"group\""),
            }
        }
        Command::Read { id } => {
            let Ok(parsed) = id.parse() else { anyhow::bail!("'{id}' is not a message id") };
            if !client.mark_read(parsed).await? {
                anyhow::bail!("no unread received message has id {id}");
            }
            json!({"event": "marked_read", "id": id})
        }
        Command::Contacts => {
            let contacts: Vec<Value> = client.contacts().await?.iter().map(contact).collect();
            json!({"event": "contacts", "contacts": contacts})
        }
        Command::AddContact { number, name } => {
            let (new, key) = client.add_contact(&number, name.as_deref()).await?;
            let mut v = json!({"event": "contact_added", "number": number, "new": new, "key": key.map(|k| k.to_hex())});
            if let Some(name) = name {
                v["name"] = json!(name.trim());
            }
            v
        }
        Command::RenameContact { number, name } => {
            client.rename_contact(&number, &name).await?;
            json!({"event": "contact_renamed", "number": number, "name": name.trim()})
        }
        Command::RemoveContact { number } => {
            client.remove_contact(&number).await?;
            json!({"event": "contact_removed", "number": number})
        }
        Command::Requests => {
            let requests: Vec<Value> = client.requests().await?.iter().map(request).collect();
            json!({"event": "requests", "requests": requests})
        }
        Command::Accept { number } => {
            let items = client.accept(&number).await?;
            json!({"event": "accepted", "number": number, "items": items})
        }
        Command::Ignore { number } => {
            client.ignore(&number).await?;
            json!({"event": "ignored", "number": number})
        }
        Command::Block { number } => {
            let changed = client.block(&number).await?;
            json!({"event": "blocked", "number": number, "changed": changed})
        }
        Command::Unblock { number } => {
            let changed = client.unblock(&number).await?;
            json!({"event": "unblocked", "number": number, "changed": changed})
        }
        Command::ReadReceipts { on } => {
            client.set_read_receipts(on, true).await?;
            json!({"event": "read_receipts", "on": on})
        }
        Command::SendFile { to, path } => {
            let f = client.send_file(&to, &path).await?;
            json!({
                "event": "file_queued",
                "id": f.id.to_string(),
                "to": to,
                "name": f.name,
                "size": f.size,
                "media_type": f.media_type,
                "blake3": hex::encode(f.blake3),
            })
        }
        Command::CancelFile { id } => {
            let Ok(parsed) = id.parse() else { anyhow::bail!("'{id}' is not a transfer id") };
            client.cancel_transfer(parsed).await?;
            json!({"event": "file_cancelled", "id": id})
        }
        Command::Logout => anyhow::bail!("logout is not a command to run"),
    })
}

/// Writes an event's line; a message written out (flushed) is a message shown, which the client
/// then does not show again at the next start.
fn show(client: &Client, e: Event) {
    let message = match &e {
        Event::Message { id, from, .. } => Some((from.clone(), *id)),
        _ => None,
    };
    emit(&event(e));
    if let Some((from, id)) = message {
        client.shown(&from, id);
    }
}

/// The JSON-lines front end: answers each command in order, and holds the events that arrive
/// while a command runs until its answer is out, so a message's `sent` always comes before its
/// `delivered`.
#[derive(Default)]
struct Json {
    held: Vec<Event>,
}

impl FrontEnd for Json {
    type Done = anyhow::Result<Value>;

    fn start(&mut self, client: &Client) {
        online(client);
    }

    fn line<'c>(&mut self, client: &'c Client, line: Line) -> Step<'c, Self::Done> {
        let line = match line {
            Line::Text(l) if l.trim().is_empty() => return Step::Done,
            Line::Text(l) => l,
            Line::TooLong(n) => {
                error(format!("input line of {n} bytes is over the limit"));
                return Step::Done;
            }
            Line::NotUtf8 => {
                error("input line is not UTF-8");
                return Step::Done;
            }
        };
        match parse(&line) {
            Ok(Command::Logout) => Step::Quit,
            Ok(cmd) => Step::Run(Box::pin(run_command(client, cmd))),
            Err(e) => {
                error(format!("bad command: {e}"));
                Step::Done
            }
        }
    }

    fn finished(&mut self, client: &Client, done: Self::Done) -> bool {
        match done {
            Ok(v) => emit(&v),
            Err(e) => error(e),
        }
        for e in self.held.drain(..) {
            show(client, e);
        }
        true
    }

    async fn event(&mut self, client: &Client, e: Event, busy: bool) {
        if busy {
            self.held.push(e);
        } else {
            show(client, e);
        }
    }

    fn stopping(&mut self, client: &Client) {
        // A signal stopped a command midway: what it held back still goes out.
        for e in self.held.drain(..) {
            show(client, e);
        }
    }

    fn late_event(&mut self, e: Event) {
        emit(&event(e));
    }

    fn stopped(&mut self) {
        emit(&json!({"event": "bye"}));
    }
}

/// Runs until `logout`, end of input, or a signal; then logs out and prints `bye`.
pub async fn run(client: Client, events: mpsc::Receiver<Event>, source: input::Source) -> anyhow::Result<()> {
    crate::event_loop::run(client, events, source, Json::default()).await
}
