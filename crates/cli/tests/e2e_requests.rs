//! End-to-end tests of message requests and contact names: real servers and JSON-lines clients.
//!
//! Anything from a number that is not a contact (a text, a file, a group invitation, and the texts
//! of a group whose invitation is held) arrives as a `request`; its sender sees `pending` where it
//! would have seen `delivered`, until the receiver accepts (everything held is delivered: texts
//! shown, the file sent again, the group joined with its texts), ignores (dropped) or blocks
//! (dropped, and from the sender's side it looks exactly like an unanswered request).

mod common;

use std::path::Path;

use common::{is, tempdir, Client, Server};
use serde_json::{json, Value};
use tempfile::TempDir;

/// `c` runs `cmd` and must answer with the event `answer`; returns it.
async fn ok(c: &mut Client, cmd: Value, answer: &str) -> Value {
    c.send(cmd.clone()).await;
    let v = c.reply(answer, |v| is(v, answer)).await;
    assert!(is(&v, answer), "{}: {cmd} failed: {v}\n{}", c.number.clone(), c.report());
    v
}

/// `c` runs `cmd`, which must fail; returns the error message.
async fn refused(c: &mut Client, cmd: Value) -> String {
    c.send(cmd.clone()).await;
    let v = c.expect("error", |v| is(v, "error")).await;
    v["message"].as_str().expect("message").to_owned()
}

async fn add_contact(c: &mut Client, number: &str) {
    ok(c, json!({"cmd": "add_contact", "number": number}), "contact_added").await;
}

/// A client with its own profile, kept so it can be restarted.
async fn start(port: u16, number: &str) -> (Client, TempDir) {
    let profile = tempdir();
    (Client::start_with(port, number, profile.path(), &[]).await, profile)
}

/// The sender's `pending` for `id` to `to` (never a `delivered` before it).
async fn pending(c: &mut Client, id: &str, to: &str) {
    let v = c
        .expect(&format!("pending {id}"), |v| {
            (is(v, "pending") || is(v, "delivered")) && v["id"] == id && v["to"] == to
        })
        .await;
    assert!(is(&v, "pending"), "{}: {id} was not held as a request: {v}", c.number);
}

/// The receiver's `request` from `from` of `kind`.
async fn request(c: &mut Client, from: &str, kind: &str) -> Value {
    c.expect(&format!("request {kind} from {from}"), |v| {
        is(v, "request") && v["from"] == from && v["kind"] == kind
    })
    .await
}

/// Every event so far of `c` named `name` (for "nothing of the kind came").
fn seen(c: &mut Client, name: &str) -> Vec<Value> {
    c.events_so_far().into_iter().filter(|v| is(v, name)).collect()
}

/// A `ping` round trip: everything the other side sent before it has been handled by now.
async fn settle(c: &mut Client, other: &str) {
    c.ping(other).await;
}

fn write_file(dir: &Path, name: &str, len: usize) -> String {
    let path = dir.join(name);
    std::fs::write(&path, common::noise_bytes(7, len)).expect("writing the file to send");
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn given_a_strangers_text_then_it_waits_as_a_request_across_a_restart_and_is_delivered_once_accepted() {
    let server = Server::start(&[]).await;
    let (mut receiver, profile) = start(server.port, "100").await;
    let mut stranger = Client::start(server.port, "301").await;
    let id = stranger.send_text("100", "hello, it's me").await;
    pending(&mut stranger, &id, "100").await;
    let v = request(&mut receiver, "301", "text").await;
    assert_eq!((v["id"].as_str(), v["text"].as_str()), (Some(id.as_str()), Some("hello, it's me")), "{v}");
    assert!(seen(&mut receiver, "message").is_empty(), "a request is not a message");

    // It survives a restart of the receiver.
    receiver.logout().await;
    let mut receiver = Client::start_with(server.port, "100", profile.path(), &[]).await;
    let v = ok(&mut receiver, json!({"cmd": "requests"}), "requests").await;
    assert_eq!(v["requests"][0]["from"], "301", "{v}");
    assert_eq!(v["requests"][0]["items"][0]["text"], "hello, it's me", "{v}");

    let v = ok(&mut receiver, json!({"cmd": "accept", "number": "301"}), "accepted").await;
    assert_eq!(v["items"], 1, "{v}");
    receiver.message(&id, "301", "hello, it's me").await;
    stranger.delivered(&id, "100").await;
    let v = ok(&mut receiver, json!({"cmd": "contacts"}), "contacts").await;
    assert_eq!(v["contacts"][0]["number"], "301", "an accepted number is a contact: {v}");
    let v = ok(&mut receiver, json!({"cmd": "requests"}), "requests").await;
    assert_eq!(v["requests"], json!([]), "{v}");
    // From now on its texts are messages at once.
    let next = stranger.send_text("100", "thanks").await;
    receiver.message(&next, "301", "thanks").await;
    stranger.delivered(&next, "100").await;
    let v = ok(&mut receiver, json!({"cmd": "history", "with": "301"}), "history").await;
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(2), "shown once each: {v}");
}

#[tokio::test]
async fn given_a_number_we_wrote_to_first_then_its_answer_is_a_message_not_a_request() {
    let server = Server::start(&[]).await;
    let mut a = Client::start(server.port, "100").await;
    let mut b = Client::start(server.port, "301").await;
    // 301 holds 100's first text as a request, but 100 wrote first: 301's answer is a message.
    let first = a.send_text("301", "are you there?").await;
    pending(&mut a, &first, "301").await;
    let answer = b.send_text("100", "who is this?").await;
    a.message(&answer, "301", "who is this?").await;
    b.delivered(&answer, "100").await;
}

#[tokio::test]
async fn given_a_strangers_file_then_the_request_names_it_and_accepting_transfers_it() {
    let server = Server::start(&[]).await;
    let mut receiver = Client::start(server.port, "100").await;
    let mut stranger = Client::start(server.port, "301").await;
    let dir = tempdir();
    let path = write_file(dir.path(), "notes.bin", 200_000);
    let v = ok(&mut stranger, json!({"cmd": "send_file", "to": "100", "path": path}), "file_queued").await;
    let id = v["id"].as_str().expect("id").to_owned();
    pending(&mut stranger, &id, "100").await;
    let v = request(&mut receiver, "301", "file").await;
    assert_eq!((v["name"].as_str(), v["size"].as_u64()), (Some("notes.bin"), Some(200_000)), "{v}");
    settle(&mut receiver, "301").await;
    assert!(seen(&mut receiver, "file_received").is_empty(), "nothing of the file before accepting");

    ok(&mut receiver, json!({"cmd": "accept", "number": "301"}), "accepted").await;
    let got = receiver.expect("file_received", |v| is(v, "file_received") && v["id"] == id.as_str()).await;
    assert_eq!((got["name"].as_str(), got["size"].as_u64()), (Some("notes.bin"), Some(200_000)), "{got}");
    let saved = std::fs::read(got["path"].as_str().expect("path")).expect("the saved file");
    assert_eq!(saved, common::noise_bytes(7, 200_000), "the bytes sent");
    stranger.expect("file_sent", |v| is(v, "file_sent") && v["id"] == id.as_str()).await;
    assert!(seen(&mut stranger, "file_failed").is_empty(), "a held file is not a failure");
}

#[tokio::test]
async fn given_a_group_invitation_from_a_stranger_then_nobody_is_told_delivered_until_it_is_accepted() {
    let server = Server::start(&[]).await;
    let mut invited = Client::start(server.port, "100").await;
    let mut admin = Client::start(server.port, "301").await;
    let mut member = Client::start(server.port, "789").await;
    // The admin and 789 know each other; 100 knows neither.
    add_contact(&mut admin, "100").await;
    add_contact(&mut admin, "789").await;
    add_contact(&mut member, "301").await;
    let g =
        ok(&mut admin, json!({"cmd": "group_create", "name": "Family", "members": ["100", "789"]}), "group")
            .await;
    let gid = g["id"].as_str().expect("group id").to_owned();
    let v = request(&mut invited, "301", "group").await;
    assert_eq!((v["name"].as_str(), v["group"].as_str()), (Some("Family"), Some(gid.as_str())), "{v}");
    member.expect("the group", |v| is(v, "group") && v["id"] == gid.as_str()).await;

    // Texts to the group wait for 100 with its invitation: pending, never delivered.
    let send = json!({"cmd": "send", "group": gid, "text": "dinner at 7?"});
    let from_admin = ok(&mut admin, send, "sent").await["id"].as_str().expect("id").to_owned();
    pending(&mut admin, &from_admin, "100").await;
    let to_789 = |v: &Value| is(v, "delivered") && v["id"] == from_admin.as_str() && v["to"] == "789";
    admin.seen_or_expect("delivered to 789", to_789).await;
    let send = json!({"cmd": "send", "group": gid, "text": "I'm in"});
    let from_member = ok(&mut member, send, "sent").await["id"].as_str().expect("id").to_owned();
    pending(&mut member, &from_member, "100").await;
    settle(&mut invited, "301").await;
    assert!(seen(&mut invited, "group").is_empty() && seen(&mut invited, "message").is_empty());
    assert!(
        !admin.events_so_far().iter().any(|v| is(v, "delivered") && v["to"] == "100"),
        "the admin was told delivered for a held invitation"
    );
    // Adding the admin as a contact accepts the request: the group is joined with its texts.
    add_contact(&mut invited, "301").await;
    invited.expect("the group joined", |v| is(v, "group") && v["id"] == gid.as_str()).await;
    invited.message(&from_admin, "301", "dinner at 7?").await;
    invited.message(&from_member, "789", "I'm in").await;
    admin.delivered(&from_admin, "100").await;
    member.delivered(&from_member, "100").await;
    // And 100 is a member like any other.
    let send = json!({"cmd": "send", "group": gid, "text": "see you"});
    let mine = ok(&mut invited, send, "sent").await["id"].as_str().expect("id").to_owned();
    admin.message(&mine, "100", "see you").await;
    member.message(&mine, "100", "see you").await;
    assert!(seen(&mut invited, "warning").is_empty(), "{:?}", seen(&mut invited, "warning"));
}

#[tokio::test]
async fn given_a_request_ignored_then_it_is_dropped_and_the_next_text_is_a_new_request() {
    let server = Server::start(&[]).await;
    let mut receiver = Client::start(server.port, "100").await;
    let mut stranger = Client::start(server.port, "301").await;
    let id = stranger.send_text("100", "buy now").await;
    pending(&mut stranger, &id, "100").await;
    request(&mut receiver, "301", "text").await;
    ok(&mut receiver, json!({"cmd": "ignore", "number": "301"}), "ignored").await;
    let v = ok(&mut receiver, json!({"cmd": "requests"}), "requests").await;
    assert_eq!(v["requests"], json!([]), "{v}");
    let again = refused(&mut receiver, json!({"cmd": "ignore", "number": "301"})).await;
    assert!(again.contains("no message request from 301"), "{again}");
    let next = stranger.send_text("100", "last chance").await;
    pending(&mut stranger, &next, "100").await;
    let v = request(&mut receiver, "301", "text").await;
    assert_eq!(v["text"], "last chance", "{v}");
    assert!(seen(&mut receiver, "message").is_empty());
    assert!(seen(&mut receiver, "contacts").is_empty());
}

#[tokio::test]
async fn given_a_number_blocked_then_nothing_it_sends_is_shown_and_it_sees_an_unanswered_request() {
    let server = Server::start(&[]).await;
    let mut receiver = Client::start(server.port, "100").await;
    let mut stranger = Client::start(server.port, "301").await;
    let first = stranger.send_text("100", "hi").await;
    pending(&mut stranger, &first, "100").await;
    request(&mut receiver, "301", "text").await;
    let v = ok(&mut receiver, json!({"cmd": "block", "number": "301"}), "blocked").await;
    assert_eq!(v["changed"], true, "{v}");
    // Exactly what an unanswered request looks like from its side: pending, for texts and files.
    let second = stranger.send_text("100", "why no answer?").await;
    pending(&mut stranger, &second, "100").await;
    let dir = tempdir();
    let path = write_file(dir.path(), "spam.bin", 1000);
    let v = ok(&mut stranger, json!({"cmd": "send_file", "to": "100", "path": path}), "file_queued").await;
    pending(&mut stranger, v["id"].as_str().expect("id"), "100").await;
    settle(&mut receiver, "301").await;
    let requests: Vec<Value> = seen(&mut receiver, "request");
    assert_eq!(requests.len(), 1, "only the request from before the block: {requests:?}");
    assert!(seen(&mut receiver, "message").is_empty() && seen(&mut receiver, "file_received").is_empty());
    let v = ok(&mut receiver, json!({"cmd": "requests"}), "requests").await;
    assert_eq!(v["requests"], json!([]), "blocking drops the request: {v}");

    // Unblocked, it is a stranger again: its next text is a request.
    let v = ok(&mut receiver, json!({"cmd": "unblock", "number": "301"}), "unblocked").await;
    assert_eq!(v["changed"], true, "{v}");
    let third = stranger.send_text("100", "hello?").await;
    pending(&mut stranger, &third, "100").await;
    let v = request(&mut receiver, "301", "text").await;
    assert_eq!(v["text"], "hello?", "{v}");
}

#[tokio::test]
async fn given_contact_names_then_they_are_shown_renamed_and_removed() {
    let server = Server::start(&[]).await;
    let mut c = Client::start(server.port, "100").await;
    let _bob = Client::start(server.port, "456").await;
    let v =
        ok(&mut c, json!({"cmd": "add_contact", "number": "456", "name": " Bob "}), "contact_added").await;
    assert_eq!((v["new"].as_bool(), v["name"].as_str()), (Some(true), Some("Bob")), "{v}");
    ok(&mut c, json!({"cmd": "add_contact", "number": "789"}), "contact_added").await;
    let v = ok(&mut c, json!({"cmd": "contacts"}), "contacts").await;
    assert_eq!(v["contacts"][0]["name"], "Bob", "{v}");
    assert!(v["contacts"][1].get("name").is_none(), "no name, no field: {v}");
    ok(&mut c, json!({"cmd": "rename_contact", "number": "456", "name": "Bob Smith"}), "contact_renamed")
        .await;
    let v = ok(&mut c, json!({"cmd": "contacts"}), "contacts").await;
    assert_eq!(v["contacts"][0]["name"], "Bob Smith", "{v}");
    let bad = refused(&mut c, json!({"cmd": "rename_contact", "number": "456", "name": "a\u{1b}[2Kb"})).await;
    assert!(bad.contains("control characters"), "{bad}");
    ok(&mut c, json!({"cmd": "remove_contact", "number": "456"}), "contact_removed").await;
    let v = ok(&mut c, json!({"cmd": "contacts"}), "contacts").await;
    assert_eq!(v["contacts"].as_array().map(Vec::len), Some(1), "{v}");
    let gone = refused(&mut c, json!({"cmd": "remove_contact", "number": "456"})).await;
    assert!(gone.contains("456 is not a contact"), "{gone}");
}

/// Read receipts off: a message read sends its sender no receipt, for one run with
/// `--no-read-receipts` and for good with `read_receipts` (kept across a restart); turned on
/// again, the next message read is reported, and nothing before it. (Receipts owed to a peer go
/// out oldest first, from the profile's outbox, restarts or not: a receipt for an earlier message
/// would have come first.)
#[tokio::test]
async fn given_read_receipts_off_then_reading_sends_none_until_they_are_turned_on_again() {
    let server = Server::start(&[]).await;
    let (mut alice, _alice_profile) = start(server.port, "123").await;
    let bob_profile = tempdir();
    let mut bob = Client::start_with(server.port, "456", bob_profile.path(), &["--no-read-receipts"]).await;
    add_contact(&mut alice, "456").await;
    add_contact(&mut bob, "123").await;

    /// Alice writes `text`, bob reads it; returns its id.
    async fn read(alice: &mut Client, bob: &mut Client, text: &str) -> String {
        let id = alice.send_text("456", text).await;
        bob.message(&id, "123", text).await;
        ok(bob, json!({"cmd": "read", "id": id}), "marked_read").await;
        id
    }

    let one_run = read(&mut alice, &mut bob, "read in a run without").await;
    bob.logout().await;
    let mut bob = Client::start_with(server.port, "456", bob_profile.path(), &[]).await;
    let off = ok(&mut bob, json!({"cmd": "read_receipts", "on": false}), "read_receipts").await;
    assert_eq!(off["on"], false, "{off}");
    bob.logout().await;
    let mut bob = Client::start_with(server.port, "456", bob_profile.path(), &[]).await;
    // Alice writes once she knows bob is back (else her text waits in the outbox, which is not
    // what this test is about).
    let back = bob.listen();
    alice.seen_or_expect("bob back online", |v| is(v, "presence") && v["addr"] == back.as_str()).await;
    let kept = read(&mut alice, &mut bob, "read with them off in the profile").await;

    let on = ok(&mut bob, json!({"cmd": "read_receipts", "on": true}), "read_receipts").await;
    assert_eq!(on["on"], true, "{on}");
    let id = read(&mut alice, &mut bob, "on again").await;
    let receipt = alice.expect("the read receipt", |v| is(v, "read")).await;
    assert_eq!(
        (receipt["id"].as_str(), receipt["by"].as_str()),
        (Some(id.as_str()), Some("456")),
        "{receipt}"
    );
    let early: Vec<Value> =
        seen(&mut alice, "read").into_iter().filter(|v| v["id"] == one_run || v["id"] == kept).collect();
    assert!(early.is_empty(), "receipts sent while they were off: {early:?}");
}
