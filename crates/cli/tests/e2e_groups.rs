//! End-to-end tests of "Groups": a real directory server and real JSON-lines clients creating,
//! changing and talking in groups over loopback TCP. Each test starts its own server (free port,
//! temporary data dir) and clients (temporary profiles), so tests run in parallel.
//!
//! A forged change (signed by a non-admin, or by someone else than the member whose link it came
//! over) cannot be produced with the real client, which refuses to sign such a change in the first
//! place (checked below: `group_add` by a non-admin is an `error`); the signature and admin rules a
//! member applies to what it receives are covered by the unit tests in `crates/proto/src/group.rs`.

mod common;

use std::path::Path;

use common::{is, tempdir, Client, Server};
use serde_json::{json, Value};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn add_contact(c: &mut Client, number: &str) {
    c.send(json!({"cmd": "add_contact", "number": number})).await;
    let v = c.reply("contact_added", |v| is(v, "contact_added") && v["number"] == number).await;
    assert!(is(&v, "contact_added"), "{}: add_contact {number} failed: {v}", c.number);
}

/// `admin` and each of `members` add each other as contacts.
async fn befriend(admin: &mut Client, members: &mut [&mut Client]) {
    for m in members.iter_mut() {
        add_contact(admin, &m.number).await;
        add_contact(m, &admin.number).await;
    }
}

/// A client with its own profile (kept, so it can be restarted).
async fn start(port: u16, number: &str) -> (Client, TempDir) {
    let profile = tempdir();
    let c = Client::start_with(port, number, profile.path(), &[]).await;
    (c, profile)
}

async fn restart(port: u16, number: &str, profile: &Path) -> Client {
    Client::start_with(port, number, profile, &[]).await
}

/// The answer to a group command: a `group` event, or an `error`.
async fn group_reply(c: &mut Client, cmd: Value) -> Value {
    c.send(cmd.clone()).await;
    c.reply(&format!("answer to {cmd}"), |v| is(v, "group")).await
}

/// A group command that must succeed; returns its `group` answer.
async fn group_ok(c: &mut Client, cmd: Value) -> Value {
    let v = group_reply(c, cmd.clone()).await;
    assert!(is(&v, "group"), "{}: {cmd} failed: {v}\n{}", c.number.clone(), c.report());
    v
}

/// A group command that must be refused; returns the error message.
async fn group_refused(c: &mut Client, cmd: Value) -> String {
    let v = group_reply(c, cmd.clone()).await;
    assert!(is(&v, "error"), "{}: {cmd} should be refused, got {v}", c.number);
    v["message"].as_str().expect("error.message").to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn sorted(numbers: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = numbers.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// Checks a `group` event's state.
#[track_caller]
fn check_group(g: &Value, id: &str, members: &[&str], admins: &[&str], version: u64, by: &str, left: bool) {
    assert_eq!(g["id"], id, "{g}");
    let mut got = strings(&g["members"]);
    got.sort();
    assert_eq!(got, sorted(members), "members: {g}");
    let mut got = strings(&g["admins"]);
    got.sort();
    assert_eq!(got, sorted(admins), "admins: {g}");
    assert_eq!(g["version"], version, "{g}");
    assert_eq!(g["by"], by, "{g}");
    assert_eq!(g["left"], left, "{g}");
}

/// Waits for a `group` event about `id` at `version` (which may already have been seen).
async fn group_event(c: &mut Client, id: &str, version: u64) -> Value {
    c.seen_or_expect(&format!("group {id} v{version}"), |v| {
        is(v, "group") && v["id"] == id && v["version"] == version
    })
    .await
}

/// `send` to a group that must be accepted; returns the message id after checking `members`.
async fn send_group(c: &mut Client, group: &str, text: &str, members: u64) -> String {
    c.send(json!({"cmd": "send", "group": group, "text": text})).await;
    // The answer says `members`; each member's own `sent` says `to`.
    let v = c
        .reply("sent to the group", |v| is(v, "sent") && v["group"] == group && v.get("members").is_some())
        .await;
    assert!(is(&v, "sent"), "{}: send to group {group} failed: {v}\n{}", c.number.clone(), c.report());
    assert_eq!(v["members"], members, "{v}");
    let id = v["id"].as_str().expect("sent.id").to_owned();
    assert_eq!(id.len(), 26, "a ULID: {v}");
    id
}

/// `send` to a group that must be refused; returns the error message.
async fn send_group_refused(c: &mut Client, group: &str, text: &str) -> String {
    c.send(json!({"cmd": "send", "group": group, "text": text})).await;
    let v = c.reply("error", |v| is(v, "sent") && v["group"] == group).await;
    assert!(is(&v, "error"), "{}: send to group {group} should be refused, got {v}", c.number);
    v["message"].as_str().expect("error.message").to_owned()
}

/// Waits for the group `message` with `id` (which may already have been seen); checks it.
async fn group_message(c: &mut Client, id: &str, group: &str, from: &str, text: &str) -> Value {
    let v = c.seen_or_expect(&format!("group message {id}"), |v| is(v, "message") && v["id"] == id).await;
    assert_eq!(v["group"], group, "{v}");
    assert_eq!(v["from"], from, "{v}");
    assert_eq!(v["text"], text, "{v}");
    v
}

/// The ids of the `message` events for `group` seen so far, in order, from `from`.
fn group_messages_from(c: &mut Client, group: &str, from: &str) -> Vec<String> {
    c.events_so_far()
        .iter()
        .filter(|v| is(v, "message") && v["group"] == group && v["from"] == from)
        .map(|v| v["id"].as_str().expect("message.id").to_owned())
        .collect()
}

/// A direct message from `from` to `to`, shown by `to`: everything `from` queued for `to` before it
/// has been dealt with by `to` (one courier per recipient writes the outbox in order).
async fn barrier(from: &mut Client, to: &mut Client, text: &str) {
    // Members are not contacts of each other: a direct text would be a message request.
    to.add_contact(&from.number.clone()).await;
    let number = to.number.clone();
    from.send(json!({"cmd": "send", "to": number, "text": text})).await;
    let v = from
        .reply(&format!("answer to send to {number}"), |v| {
            // Not a member's copy of a group message, which says `group`.
            (is(v, "sent") || is(v, "queued")) && v["to"] == number && v.get("group").is_none()
        })
        .await;
    let id = v["id"].as_str().unwrap_or_else(|| panic!("{}: send to {number} failed: {v}", from.number));
    to.message(id, &from.number, text).await;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 1. A group of five where two members are offline: the online members get the creator's messages
///    once each, in order, with `group` and `from`; the offline two, back with the same profiles, get
///    the group and then every message once, in order. A message from a member who is not the
///    creator reaches everyone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_group_of_five_with_two_offline_then_everyone_gets_every_message_once_in_order() {
    let server = Server::start(&[]).await;
    let (mut c100, _p100) = start(server.port, "100").await;
    let (mut c201, _p201) = start(server.port, "201").await;
    let (mut c202, _p202) = start(server.port, "202").await;
    let (mut c203, p203) = start(server.port, "203").await;
    let (mut c204, p204) = start(server.port, "204").await;
    befriend(&mut c100, &mut [&mut c201, &mut c202, &mut c203, &mut c204]).await;
    c203.logout().await;
    c204.logout().await;

    let everyone = ["100", "201", "202", "203", "204"];
    let g = group_ok(
        &mut c100,
        json!({"cmd": "group_create", "name": "Five", "members": ["201", "202", "203", "204"]}),
    )
    .await;
    let gid = g["id"].as_str().expect("group.id").to_owned();
    assert_eq!(gid.len(), 32, "{g}");
    assert!(gid.chars().all(|c| c.is_ascii_hexdigit()), "{g}");
    assert_eq!(g["name"], "Five", "{g}");
    check_group(&g, &gid, &everyone, &["100"], 1, "100", false);
    for c in [&mut c201, &mut c202] {
        let g = group_event(c, &gid, 1).await;
        assert_eq!(g["name"], "Five", "{g}");
        check_group(&g, &gid, &everyone, &["100"], 1, "100", false);
    }

    let texts = ["one", "two", "three", "four"];
    let mut ids = Vec::new();
    for t in texts {
        ids.push(send_group(&mut c100, &gid, t, 4).await);
    }
    // A member who is not the creator writes to the group too.
    let reply_text = "hello from 201";
    let reply = send_group(&mut c201, &gid, reply_text, 4).await;

    // Online members: each message, in order.
    for c in [&mut c201, &mut c202] {
        for (id, t) in ids.iter().zip(texts) {
            group_message(c, id, &gid, "100", t).await;
        }
    }
    group_message(&mut c202, &reply, &gid, "201", reply_text).await;
    group_message(&mut c100, &reply, &gid, "201", reply_text).await;
    for id in &ids {
        for to in ["201", "202"] {
            c100.seen_or_expect(&format!("delivered {id} to {to}"), |v| {
                is(v, "delivered") && v["id"] == id.as_str() && v["to"] == to
            })
            .await;
        }
    }

    // The offline two come back: the group first, then every message.
    let mut c203 = restart(server.port, "203", p203.path()).await;
    let mut c204 = restart(server.port, "204", p204.path()).await;
    for c in [&mut c203, &mut c204] {
        let g = group_event(c, &gid, 1).await;
        check_group(&g, &gid, &everyone, &["100"], 1, "100", false);
        for (id, t) in ids.iter().zip(texts) {
            group_message(c, id, &gid, "100", t).await;
        }
        group_message(c, &reply, &gid, "201", reply_text).await;
    }

    // After a barrier from each sender, every member has seen each message exactly once, in order,
    // and the group before any of its messages.
    for c in [&mut c201, &mut c202, &mut c203, &mut c204] {
        barrier(&mut c100, c, "barrier from 100").await;
    }
    for c in [&mut c202, &mut c203, &mut c204] {
        barrier(&mut c201, c, "barrier from 201").await;
    }
    for c in [&mut c201, &mut c202, &mut c203, &mut c204] {
        assert_eq!(group_messages_from(c, &gid, "100"), ids, "{}: the creator's messages", c.number);
        let events = c.events_so_far();
        let group_at = events.iter().position(|v| is(v, "group") && v["id"] == gid.as_str()).expect("seen");
        let first = events.iter().position(|v| is(v, "message") && v["group"] == gid.as_str());
        assert!(first.is_some_and(|m| group_at < m), "{}: a message came before the group", c.number);
    }
    for c in [&mut c202, &mut c203, &mut c204] {
        assert_eq!(group_messages_from(c, &gid, "201"), vec![reply.clone()], "{}: 201's message", c.number);
    }
    assert_eq!(group_messages_from(&mut c100, &gid, "201"), vec![reply.clone()]);
    assert!(group_messages_from(&mut c201, &gid, "201").is_empty(), "201 got its own message back");
}

/// 2. A removed member learns it was removed (`left: true`) and gets nothing sent to the group
///    afterwards, by the admin or by another member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_member_removed_then_it_gets_nothing_sent_to_the_group_afterwards() {
    let server = Server::start(&[]).await;
    let mut c100 = Client::start(server.port, "100").await;
    let mut c201 = Client::start(server.port, "201").await;
    let mut c202 = Client::start(server.port, "202").await;
    befriend(&mut c100, &mut [&mut c201, &mut c202]).await;

    let g =
        group_ok(&mut c100, json!({"cmd": "group_create", "name": "Trio", "members": ["201", "202"]})).await;
    let gid = g["id"].as_str().expect("group.id").to_owned();
    group_event(&mut c201, &gid, 1).await;
    group_event(&mut c202, &gid, 1).await;
    // Before: 202 is a member and gets the group's messages.
    let before = send_group(&mut c100, &gid, "before the removal", 2).await;
    group_message(&mut c201, &before, &gid, "100", "before the removal").await;
    group_message(&mut c202, &before, &gid, "100", "before the removal").await;

    let g = group_ok(&mut c100, json!({"cmd": "group_remove", "id": gid, "number": "202"})).await;
    check_group(&g, &gid, &["100", "201"], &["100"], 2, "100", false);
    let g = group_event(&mut c202, &gid, 2).await;
    check_group(&g, &gid, &["100", "201"], &["100"], 2, "100", true);
    let g = group_event(&mut c201, &gid, 2).await;
    check_group(&g, &gid, &["100", "201"], &["100"], 2, "100", false);

    // After: neither the admin's nor the other member's messages go to 202.
    let after = send_group(&mut c100, &gid, "after the removal", 1).await;
    group_message(&mut c201, &after, &gid, "100", "after the removal").await;
    let after_201 = send_group(&mut c201, &gid, "201 after the removal", 1).await;
    group_message(&mut c100, &after_201, &gid, "201", "201 after the removal").await;
    // Whatever either queued for 202 before these barriers has reached it by now.
    barrier(&mut c100, &mut c202, "direct from 100").await;
    barrier(&mut c201, &mut c202, "direct from 201").await;
    let got: Vec<Value> =
        c202.events_so_far().into_iter().filter(|v| is(v, "message") && v["group"] == gid.as_str()).collect();
    assert_eq!(got.len(), 1, "202 got group messages after its removal: {got:?}");
    assert_eq!(got[0]["id"], before.as_str(), "{got:?}");
    // The admin only counts 201 for the later message.
    let delivered_to_202: Vec<Value> = c100
        .events_so_far()
        .into_iter()
        .filter(|v| is(v, "delivered") && v["id"] == after.as_str() && v["to"] == "202")
        .collect();
    assert!(delivered_to_202.is_empty(), "{delivered_to_202:?}");
}

/// 3. Refusals: a non-admin cannot change the group, an admin cannot add a non-contact, and a
///    removed member cannot write to the group (or leave it again); each is an `error` and changes
///    nothing. Made an admin, the member can add its own contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_non_admin_or_removed_member_then_group_commands_are_refused() {
    let server = Server::start(&[]).await;
    let mut c100 = Client::start(server.port, "100").await;
    let mut c201 = Client::start(server.port, "201").await;
    let mut c202 = Client::start(server.port, "202").await;
    let mut c203 = Client::start(server.port, "203").await;
    let _c204 = Client::start(server.port, "204").await;
    befriend(&mut c100, &mut [&mut c201, &mut c202]).await;
    // 203 is a contact of 201 (and knows it), not of the admin.
    add_contact(&mut c201, "203").await;
    add_contact(&mut c203, "201").await;

    let g =
        group_ok(&mut c100, json!({"cmd": "group_create", "name": "Rules", "members": ["201", "202"]})).await;
    let gid = g["id"].as_str().expect("group.id").to_owned();
    group_event(&mut c201, &gid, 1).await;
    group_event(&mut c202, &gid, 1).await;

    // A non-admin: refused locally, nothing is signed or sent.
    let err = group_refused(&mut c201, json!({"cmd": "group_add", "id": gid, "number": "203"})).await;
    assert!(err.contains("not an admin"), "{err}");
    let err = group_refused(&mut c201, json!({"cmd": "group_remove", "id": gid, "number": "202"})).await;
    assert!(err.contains("not an admin"), "{err}");
    let err = group_refused(&mut c201, json!({"cmd": "group_admin", "id": gid, "number": "201"})).await;
    assert!(err.contains("not an admin"), "{err}");
    // The admin may only add its contacts.
    let err = group_refused(&mut c100, json!({"cmd": "group_add", "id": gid, "number": "204"})).await;
    assert!(err.contains("not a contact"), "{err}");
    // Not a group id, or a group nobody has.
    let err = group_refused(&mut c100, json!({"cmd": "group_add", "id": "xyz", "number": "201"})).await;
    assert!(err.contains("not a group id"), "{err}");
    let err = group_refused(
        &mut c100,
        json!({"cmd": "group_add", "id": "0123456789abcdef0123456789abcdef", "number": "201"}),
    )
    .await;
    assert!(err.contains("no group"), "{err}");

    c100.send(json!({"cmd": "groups"})).await;
    let list = c100.reply("groups", |v| is(v, "groups")).await;
    assert_eq!(list["groups"][0]["version"], 1, "the refusals changed nothing: {list}");

    // A removed member can no longer write to the group, nor leave it again.
    group_ok(&mut c100, json!({"cmd": "group_remove", "id": gid, "number": "202"})).await;
    let g = group_event(&mut c202, &gid, 2).await;
    assert_eq!(g["left"], true, "{g}");
    let err = send_group_refused(&mut c202, &gid, "am I still in?").await;
    assert!(err.contains("not in"), "{err}");
    let err = group_refused(&mut c202, json!({"cmd": "group_leave", "id": gid})).await;
    assert!(err.contains("left"), "{err}");
    let err = group_refused(&mut c202, json!({"cmd": "group_add", "id": gid, "number": "100"})).await;
    assert!(err.contains("no longer"), "{err}");

    // Made an admin, 201 may add its own contact; everyone takes the change it signed.
    let g = group_ok(&mut c100, json!({"cmd": "group_admin", "id": gid, "number": "201"})).await;
    check_group(&g, &gid, &["100", "201"], &["100", "201"], 3, "100", false);
    group_event(&mut c201, &gid, 3).await;
    let g = group_ok(&mut c201, json!({"cmd": "group_add", "id": gid, "number": "203"})).await;
    check_group(&g, &gid, &["100", "201", "203"], &["100", "201"], 4, "201", false);
    let g = group_event(&mut c100, &gid, 4).await;
    check_group(&g, &gid, &["100", "201", "203"], &["100", "201"], 4, "201", false);
    let g = group_event(&mut c203, &gid, 4).await;
    check_group(&g, &gid, &["100", "201", "203"], &["100", "201"], 4, "201", false);
    let warnings: Vec<Value> = c100.events_so_far().into_iter().filter(|v| is(v, "warning")).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// 4. `groups` lists each group with its members, admins and who is online; a member's
///    `group_leave` shows as a `group` event without it on the others' side, and in `groups`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_group_then_groups_lists_members_with_status_and_a_leaving_member_disappears() {
    let server = Server::start(&[]).await;
    let mut c100 = Client::start(server.port, "100").await;
    let mut c201 = Client::start(server.port, "201").await;
    let mut c202 = Client::start(server.port, "202").await;
    befriend(&mut c100, &mut [&mut c201, &mut c202]).await;

    c100.send(json!({"cmd": "groups"})).await;
    let list = c100.reply("groups", |v| is(v, "groups")).await;
    assert_eq!(list, json!({"event": "groups", "groups": []}));

    let g = group_ok(&mut c100, json!({"cmd": "group_create", "name": "Status", "members": ["201", "202"]}))
        .await;
    let gid = g["id"].as_str().expect("group.id").to_owned();
    group_event(&mut c201, &gid, 1).await;
    group_event(&mut c202, &gid, 1).await;

    // 202 goes offline; 100 learns it from the directory.
    c202.logout().await;
    c100.seen_or_expect("202 offline", |v| is(v, "presence") && v["number"] == "202" && v["online"] == false)
        .await;
    c100.seen_or_expect("201 online", |v| is(v, "presence") && v["number"] == "201" && v["online"] == true)
        .await;

    c100.send(json!({"cmd": "groups"})).await;
    let list = c100.reply("groups", |v| is(v, "groups")).await;
    let groups = list["groups"].as_array().expect("groups array");
    assert_eq!(groups.len(), 1, "{list}");
    let g = &groups[0];
    assert_eq!(g["id"], gid.as_str(), "{g}");
    assert_eq!(g["name"], "Status", "{g}");
    assert_eq!(g["admins"], json!(["100"]), "{g}");
    assert_eq!(g["version"], 1, "{g}");
    assert_eq!(g["by"], "100", "{g}");
    assert_eq!(g["left"], false, "{g}");
    assert_eq!(
        g["members"],
        json!([
            {"number": "100", "admin": true, "online": true, "addr": c100.listen()},
            {"number": "201", "admin": false, "online": true, "addr": c201.listen()},
            {"number": "202", "admin": false, "online": false},
        ]),
        "{g}"
    );

    // 201 leaves: it sees `left`, the admin sees the group without it.
    let g = group_ok(&mut c201, json!({"cmd": "group_leave", "id": gid})).await;
    check_group(&g, &gid, &["100", "202"], &["100"], 2, "201", true);
    let g = group_event(&mut c100, &gid, 2).await;
    check_group(&g, &gid, &["100", "202"], &["100"], 2, "201", false);

    c100.send(json!({"cmd": "groups"})).await;
    let list = c100.reply("groups", |v| is(v, "groups")).await;
    let members: Vec<Value> = list["groups"][0]["members"].as_array().expect("members").clone();
    let numbers: Vec<&str> = members.iter().map(|m| m["number"].as_str().expect("number")).collect();
    assert_eq!(numbers, ["100", "202"], "{list}");
    c201.send(json!({"cmd": "groups"})).await;
    let list = c201.reply("groups", |v| is(v, "groups")).await;
    assert_eq!(list["groups"][0]["id"], gid.as_str(), "{list}");
    assert_eq!(list["groups"][0]["left"], true, "{list}");

    // The admin's next message is for 202 alone (queued for it while it is away); not for 201.
    let m = send_group(&mut c100, &gid, "after 201 left", 1).await;
    barrier(&mut c100, &mut c201, "direct after leaving").await;
    let got: Vec<Value> =
        c201.events_so_far().into_iter().filter(|v| is(v, "message") && v["id"] == m.as_str()).collect();
    assert!(got.is_empty(), "{got:?}");
}

/// 1b. The same promise, made deterministic: a member comes back while the creator (the only one who
///     can tell it about the group) is still away, and another member's message reaches it first. It
///     must not be lost: once the creator is back and the member knows the group, the message is
///     there (docs/json-lines.md: "offline members get everything in order when they return").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_member_back_before_the_creator_then_another_members_message_is_not_lost() {
    let server = Server::start(&[]).await;
    let (mut c100, p100) = start(server.port, "100").await;
    let (mut c201, _p201) = start(server.port, "201").await;
    let (mut c203, p203) = start(server.port, "203").await;
    befriend(&mut c100, &mut [&mut c201, &mut c203]).await;
    c203.logout().await;

    let g =
        group_ok(&mut c100, json!({"cmd": "group_create", "name": "Late", "members": ["201", "203"]})).await;
    let gid = g["id"].as_str().expect("group.id").to_owned();
    group_event(&mut c201, &gid, 1).await;
    // The creator leaves with the group change for 203 still in its outbox.
    c100.logout().await;

    let early = send_group(&mut c201, &gid, "written before 203 knew the group", 2).await;
    // 203 is back while 201 is online: 201's courier writes to it before anyone told it about the group.
    let mut c203 = restart(server.port, "203", p203.path()).await;
    barrier(&mut c201, &mut c203, "direct from 201").await;

    // The creator is back: 203 learns the group, and then must have 201's message.
    let mut c100 = restart(server.port, "100", p100.path()).await;
    group_message(&mut c100, &early, &gid, "201", "written before 203 knew the group").await;
    let g = group_event(&mut c203, &gid, 1).await;
    check_group(&g, &gid, &["100", "201", "203"], &["100"], 1, "100", false);
    group_message(&mut c203, &early, &gid, "201", "written before 203 knew the group").await;
}
