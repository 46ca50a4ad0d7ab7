//! The test vectors of `docs/protocol-vectors.json`: every message kind, handshake payload and
//! signed structure with its exact bytes, inputs every receiver must refuse, and two complete
//! handshake transcripts (a directory session and a peer link) with fixed static and ephemeral
//! keys. The tests here read the file and hold the code to it, so the document cannot drift.
//!
//! Regenerate the file after a deliberate change of the protocol:
//! `cargo test -p whatsap2p-link --lib vectors::regenerate -- --ignored`.
//!
//! Here rather than in `tests/`: a fixed ephemeral key must not be reachable from outside the crate.

use std::fmt::Debug;

use ed25519_dalek::{Signer, SigningKey};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use whatsap2p_proto::codec::{decode_struct, kind, WireEnum};
use whatsap2p_proto::directory::{
    ClientToServer, CloseCode, LimitKind, Location, LookupIntent, ServerToClient,
};
use whatsap2p_proto::group::{GroupId, GroupState, SignedGroupState};
use whatsap2p_proto::handshake::{Hello, Purpose, ServerHello, NOISE_PARAMS, PROLOGUE};
use whatsap2p_proto::nat::{
    self, Candidate, Datagram, NatKind, RelayReason, RelayStatus, RelayTicket, Source, Transport,
    TICKET_MAC_LEN,
};
use whatsap2p_proto::peer::{FileFailCode, PeerMessage};
use whatsap2p_proto::version::{self, HelloForm, HelloReply, Versions};
use whatsap2p_proto::{decode, encode, DecodeError, IdentityProof, MessageId, Number, PublicKey, WireNumber};

use crate::{Handshake, SessionWriter, StaticKeypair};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol-vectors.json");

fn n(s: &str) -> Number {
    Number::new(s).expect("number")
}

fn id(low: u8) -> MessageId {
    // A ULID made on 2024-06-01 (its first 48 bits are the milliseconds), then fixed "random" bits.
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&0x018f_d0a6_3c00_u64.to_be_bytes()[2..]);
    b[6..].copy_from_slice(&[0x7a, 0x31, 0x9c, 0x04, 0xe5, 0x2b, 0x86, 0xd1, 0x0f, low]);
    MessageId(b)
}

fn key(byte: u8) -> PublicKey {
    PublicKey([byte; 32])
}

fn family() -> GroupState {
    GroupState {
        id: GroupId(*b"\x5e\x9a\x11\x02\xc4\x7d\x38\xe6\x90\x2f\x4b\xa8\x13\x6c\xd5\x77"),
        name: "Family".into(),
        members: [n("5550001"), n("5550002"), n("+5511987654321")].into_iter().collect(),
        admins: [n("5550001")].into_iter().collect(),
        version: 3,
    }
}

/// The group admin's Ed25519 identity (the initiator's of the transcripts).
fn admin() -> SigningKey {
    SigningKey::from_bytes(&[0x41; 32])
}

fn signed_family() -> SignedGroupState {
    family().sign(n("5550001"), &admin())
}

fn client_to_server() -> Vec<ClientToServer> {
    vec![
        ClientToServer::Register { listen: "0.0.0.0:40000".parse().expect("addr") },
        ClientToServer::Register { listen: "[2001:db8::7]:40000".parse().expect("addr") },
        ClientToServer::Lookup {
            req: 7,
            number: WireNumber::new("+5511987654321"),
            intent: LookupIntent::Address,
        },
        // Not a number: it still decodes, and the server answers Error { req: Some(300) }.
        ClientToServer::Lookup { req: 300, number: WireNumber::new("12x"), intent: LookupIntent::Ping },
        ClientToServer::Heartbeat,
        ClientToServer::Logout,
        ClientToServer::Watch { numbers: vec![WireNumber::new("5550002"), WireNumber::new("5550003")] },
        ClientToServer::Announce {
            candidates: vec![
                candidate(Transport::Tcp, "192.168.1.20:40000", Source::Local),
                candidate(Transport::Udp, "192.168.1.20:40001", Source::Local),
            ],
            nat: NatKind::Cone,
        },
        ClientToServer::Introduce { req: 9, number: WireNumber::new("5550002") },
        ClientToServer::RelayRequest {
            req: 10,
            number: WireNumber::new("5550002"),
            reason: RelayReason::PunchTimedOut,
        },
    ]
}

fn candidate(transport: Transport, addr: &str, source: Source) -> Candidate {
    Candidate { transport, addr: addr.parse().expect("addr"), source }
}

/// The relay ticket of the vectors, sealed with an all-zero MAC (the MAC's key is the directory's
/// own; its layout, not its value, is what a client needs).
fn sealed_ticket() -> Vec<u8> {
    let mut sealed = encode(&ticket()).expect("encode");
    sealed.extend_from_slice(&[0; TICKET_MAC_LEN]);
    sealed
}

fn ticket() -> RelayTicket {
    RelayTicket { a: n("5550001"), b: n("5550002"), expires_unix_ms: 1_717_200_030_000, nonce: [0x3c; 16] }
}

fn server_to_client() -> Vec<ServerToClient> {
    let location =
        Location { addr: "203.0.113.5:40000".parse().expect("addr"), since_unix_ms: 1_717_200_000_000 };
    vec![
        ServerToClient::Registered { listen: "203.0.113.5:40000".parse().expect("addr") },
        ServerToClient::Refused { reason: "number 5550001 is registered to another key".into() },
        ServerToClient::LookupResult {
            req: 7,
            number: n("+5511987654321"),
            key: Some(key(0xa1)),
            online: Some(location),
        },
        ServerToClient::LookupResult { req: 8, number: n("5550009"), key: None, online: None },
        ServerToClient::HeartbeatAck,
        ServerToClient::Error { req: Some(300), message: "invalid number \"12x\"".into() },
        ServerToClient::Error { req: None, message: "not watching 1 of the numbers".into() },
        ServerToClient::Presence { number: n("5550002"), key: Some(key(0xa2)), online: None },
        ServerToClient::Closed { code: CloseCode::Replaced, reason: "a newer session for 5550001".into() },
        ServerToClient::Closed {
            code: CloseCode::NumberTaken,
            reason: "number 5550001 is registered to another key".into(),
        },
        ServerToClient::Closed { code: CloseCode::StoreUnavailable, reason: "try again later".into() },
        ServerToClient::Closed { code: CloseCode::Shutdown, reason: "shutting down".into() },
        ServerToClient::Reachability {
            token: [0x5a; 16],
            udp_port: Some(15001),
            relay: Some("0.0.0.0:15002".parse().expect("addr")),
        },
        ServerToClient::Introduction {
            req: 9,
            number: n("5550002"),
            candidates: vec![
                candidate(Transport::Udp, "10.2.0.2:50000", Source::Local),
                candidate(Transport::Udp, "203.0.113.102:50000", Source::Observed),
                candidate(Transport::Tcp, "203.0.113.102:40000", Source::Observed),
            ],
            nat: NatKind::Cone,
        },
        ServerToClient::Introduced {
            from: n("5550001"),
            candidates: vec![candidate(Transport::Udp, "203.0.113.101:50000", Source::Observed)],
            nat: NatKind::Symmetric,
        },
        ServerToClient::RelayOffer {
            req: Some(10),
            number: n("5550002"),
            relay: "203.0.113.1:15002".parse().expect("addr"),
            ticket: sealed_ticket(),
            reason: RelayReason::BothSymmetric,
        },
        ServerToClient::Limited { req: Some(11), limit: LimitKind::LookupRate, retry_after_ms: 250 },
        ServerToClient::Limited { req: None, limit: LimitKind::NewNumbers, retry_after_ms: 864_000 },
    ]
}

fn peer_messages() -> Vec<PeerMessage> {
    vec![
        PeerMessage::Text { id: id(1), sent_at_ms: 1_717_200_000_123, text: "Olá, 世界".into() },
        PeerMessage::Ack { id: id(1) },
        PeerMessage::Read { id: id(1) },
        PeerMessage::FileOffer {
            id: id(2),
            name: "photo.jpg".into(),
            size: 1_048_576,
            media_type: "image/jpeg".into(),
            blake3: [0xb3; 32],
        },
        PeerMessage::FileAccept { id: id(2), offset: 65_536 },
        PeerMessage::FileRefuse { id: id(2), reason: "not a contact".into() },
        PeerMessage::FileChunk { id: id(2), offset: 65_536, data: vec![0xff, 0xd8, 0xff, 0xe0] },
        PeerMessage::FileProgress { id: id(2), received: 1_048_576 },
        PeerMessage::FileReceived { id: id(2) },
        PeerMessage::FileFailed { id: id(2), reason: "disk full".into() },
        PeerMessage::GroupText {
            group: family().id,
            id: id(3),
            sent_at_ms: 1_717_200_000_456,
            text: "hi all".into(),
        },
        PeerMessage::GroupUpdate { id: id(4), update: signed_family() },
        PeerMessage::FileAbort {
            id: id(2),
            code: FileFailCode::HashMismatch,
            reason: "hash mismatch".into(),
        },
        PeerMessage::Pending { id: id(1) },
        PeerMessage::Accepted { id: id(5) },
    ]
}

/// The name serde gives a value's variant, as it shows in the JSON value.
fn variant(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

fn message_vector<T: Serialize>(ty: &str, msg: &T) -> Value {
    let bytes = encode(msg).expect("encode");
    let value = serde_json::to_value(msg).expect("json");
    json!({ "type": ty, "kind": kind(&bytes), "name": variant(&value), "value": value, "hex": hex::encode(&bytes) })
}

fn payload_vector<T: Serialize>(ty: &str, value: &T) -> Value {
    json!({ "type": ty, "value": serde_json::to_value(value).expect("json"), "hex": hex::encode(encode(value).expect("encode")) })
}

fn reject(ty: &str, bytes: &[u8], error: &str, why: &str) -> Value {
    let outcome = if error == "UnknownVariant" { "skip" } else { "drop" };
    json!({ "type": ty, "hex": hex::encode(bytes), "error": error, "outcome": outcome, "why": why })
}

fn rejects() -> Vec<Value> {
    let update = encode(&PeerMessage::GroupUpdate { id: id(4), update: signed_family() }).expect("encode");
    // The members of the signed state in another order: the same set, a second encoding of it.
    let sorted = hex::encode(b"\x0e+5511987654321\x075550001\x075550002");
    let swapped = hex::encode(b"\x075550001\x0e+5511987654321\x075550002");
    let unsorted = hex::decode(hex::encode(&update).replacen(&sorted, &swapped, 1)).expect("hex");
    assert_ne!(unsorted, update, "the members were found and swapped");
    let chunk = encode(&PeerMessage::FileChunk { id: id(2), offset: 1, data: vec![9] }).expect("encode");
    let mut long_offset = chunk[..17].to_vec();
    long_offset.extend([0x81, 0x00, 0x01, 0x09]);
    vec![
        reject(
            "ClientToServer",
            &[0x63, 0x01, 0x02, 0x03],
            "UnknownVariant",
            "kind 99 is not known: skip it",
        ),
        reject("PeerMessage", &[0x80, 0x01], "UnknownVariant", "kind 128 (two-byte varint) is not known"),
        reject(
            "ServerToClient",
            &[0x04, 0x00, 0x80, 0x00],
            "NonCanonical",
            "Error whose message length 0 is an over-long varint",
        ),
        reject(
            "ClientToServer",
            &[0x82, 0x00],
            "NonCanonical",
            "Heartbeat whose kind is an over-long varint",
        ),
        reject(
            "PeerMessage",
            &long_offset,
            "NonCanonical",
            "FileChunk whose offset 1 is an over-long varint",
        ),
        reject(
            "PeerMessage",
            &unsorted,
            "NonCanonical",
            "GroupUpdate whose members are not in ascending order",
        ),
        reject(
            "ServerToClient",
            b"\x05\x04 555\x00\x00",
            "NonCanonical",
            "Presence of a number with a space: numbers have one form",
        ),
        reject("ServerToClient", &[0x04, 0x02, 0x00], "Malformed", "Error whose Option tag is 2"),
        reject("ServerToClient", b"\x05\x03abc\x00\x00", "Malformed", "Presence of \"abc\", not a number"),
        reject(
            "ClientToServer",
            &[0x01, 0x07, 0x03, 0x31, 0x32, 0x33, 0x02],
            "Malformed",
            "Lookup whose intent 2 is not known",
        ),
        reject("ClientToServer", &[0x02, 0x00], "Trailing", "Heartbeat followed by a byte"),
        reject("PeerMessage", &[0x01, 0x00], "Malformed", "Ack cut short"),
    ]
}

fn error_name(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::UnknownVariant(_) => "UnknownVariant",
        DecodeError::Malformed(_) => "Malformed",
        DecodeError::Trailing(_) => "Trailing",
        DecodeError::NonCanonical => "NonCanonical",
    }
}

/// One side's fixed keys.
struct Side {
    noise_private: [u8; 32],
    ephemeral_private: [u8; 32],
    identity_seed: [u8; 32],
    number: Number,
}

impl Side {
    fn initiator() -> Self {
        Self {
            noise_private: [0x11; 32],
            ephemeral_private: [0x12; 32],
            identity_seed: [0x41; 32],
            number: n("5550001"),
        }
    }

    fn responder() -> Self {
        Self {
            noise_private: [0x21; 32],
            ephemeral_private: [0x22; 32],
            identity_seed: [0x42; 32],
            number: n("5550002"),
        }
    }

    fn noise(&self) -> StaticKeypair {
        StaticKeypair::from_private(&self.noise_private).expect("noise key")
    }

    fn identity(&self) -> SigningKey {
        SigningKey::from_bytes(&self.identity_seed)
    }

    fn proof(&self, h: &[u8]) -> IdentityProof {
        IdentityProof::sign(&self.identity(), self.number.clone(), h, &self.noise().public().0)
    }

    fn describe(&self, with_identity: bool) -> Value {
        let mut v = json!({
            "noise_static_private": hex::encode(self.noise_private),
            "noise_static_public": hex::encode(self.noise().public().0),
            "noise_ephemeral_private": hex::encode(self.ephemeral_private),
        });
        if with_identity {
            v["identity_seed"] = json!(hex::encode(self.identity_seed));
            v["identity_public"] = json!(hex::encode(self.identity().verifying_key().to_bytes()));
            v["number"] = json!(self.number.as_str());
        }
        v
    }

    fn handshake(&self, io: DuplexStream, initiator: bool) -> Handshake<DuplexStream> {
        Handshake::with_ephemeral(io, &self.noise(), initiator, &self.ephemeral_private).expect("handshake")
    }
}

/// Reads one whole frame (length and body) from the test's end of a pipe.
async fn read_frame(io: &mut DuplexStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.expect("frame length");
    let mut frame = len.to_vec();
    frame.resize(4 + u32::from_be_bytes(len) as usize, 0);
    io.read_exact(&mut frame[4..]).await.expect("frame body");
    frame
}

/// What the two transcripts differ in.
#[derive(Clone, Copy, PartialEq)]
enum Connection {
    Directory,
    Peer,
}

/// One end of a handshake under test, and the test's end of its pipe.
struct End {
    hs: Handshake<DuplexStream>,
    wire: DuplexStream,
}

/// What a handshake message carries.
enum Payload<'a> {
    /// Message 1: the v3 Hello of an initiator speaking these versions.
    Hello(Purpose, Versions),
    /// Message 2: the reply to the Hello, then the responder's payload of that version.
    Reply(HelloReply, Body<'a>),
    /// Message 3: the initiator's identity proof over the hash at that point.
    Proof(&'a Side),
}

/// What follows the reply in message 2.
enum Body<'a> {
    ServerHello(ServerHello),
    /// The responder's identity proof over the hash at that point.
    Proof(&'a Side),
}

/// A payload's type name, JSON value, bytes, and for a proof the bytes it signs.
fn body(body: Body<'_>, hash_before: &[u8]) -> (&'static str, Value, Vec<u8>, Option<Vec<u8>>) {
    match body {
        Body::ServerHello(h) => {
            ("ServerHello", serde_json::to_value(&h).expect("json"), encode(&h).expect("encode"), None)
        }
        Body::Proof(side) => {
            let proof = side.proof(hash_before);
            let noise = side.noise().public();
            let signed = whatsap2p_proto::handshake::signed_bytes(hash_before, &noise.0, &side.number);
            (
                "IdentityProof",
                serde_json::to_value(&proof).expect("json"),
                encode(&proof).expect("encode"),
                Some(signed),
            )
        }
    }
}

/// Sends the next handshake message from `from` with `payload`, relays its frame to `to`, checks
/// that it arrives, and records it.
async fn step(from: &mut End, to: &mut End, from_name: &str, tokens: &str, payload: Payload<'_>) -> Value {
    let hash_before = from.hs.hash();
    let mut reply = None;
    let (ty, value, bytes, signed) = match payload {
        Payload::Hello(purpose, versions) => {
            let value =
                json!({ "highest": versions.highest(), "purpose": purpose, "lowest": versions.lowest() });
            ("Hello", value, version::hello(purpose, versions).expect("hello"), None)
        }
        Payload::Reply(r, b) => {
            reply = Some(r);
            body(b, &hash_before)
        }
        Payload::Proof(side) => body(Body::Proof(side), &hash_before),
    };
    let reply_bytes = reply.map(|r| encode(&r).expect("encode")).unwrap_or_default();
    let whole = [reply_bytes.as_slice(), &bytes].concat();
    from.hs.send(&whole).await.expect("send");
    let frame = read_frame(&mut from.wire).await;
    to.wire.write_all(&frame).await.expect("relay");
    assert_eq!(to.hs.recv().await.expect("recv"), whole);
    let mut m = json!({
        "from": from_name, "tokens": tokens, "hash_before": hex::encode(&hash_before),
        "payload_type": ty, "payload": value, "payload_hex": hex::encode(&whole), "frame_hex": hex::encode(&frame),
    });
    if let Some(r) = reply {
        m["reply"] = serde_json::to_value(r).expect("json");
        m["reply_hex"] = json!(hex::encode(&reply_bytes));
        m["body_hex"] = json!(hex::encode(&bytes));
    }
    if let Some(signed) = signed {
        m["proof_signed_hex"] = json!(hex::encode(signed));
    }
    m
}

/// Runs a real initiator and a real responder with fixed keys, relaying and recording each frame.
async fn transcript(connection: Connection) -> Value {
    let (ini_side, res_side) = (Side::initiator(), Side::responder());
    let (ini_io, ini_wire) = duplex(1 << 16);
    let (res_io, res_wire) = duplex(1 << 16);
    let mut ini = End { hs: ini_side.handshake(ini_io, true), wire: ini_wire };
    let mut res = End { hs: res_side.handshake(res_io, false), wire: res_wire };
    let purpose = if connection == Connection::Peer { Purpose::Peer } else { Purpose::Directory };
    // Both sides speak what this code speaks, and agree on its highest version.
    let agreed = version::negotiate(version::SPOKEN, version::SPOKEN).expect("a version");
    let second = match connection {
        Connection::Directory => {
            Body::ServerHello(ServerHello { version: agreed, heartbeat_timeout_ms: 30_000 })
        }
        Connection::Peer => Body::Proof(&res_side),
    };
    let second = Payload::Reply(HelloReply::Agreed { version: agreed }, second);
    let messages = vec![
        step(&mut ini, &mut res, "initiator", "-> e", Payload::Hello(purpose, version::SPOKEN)).await,
        step(&mut res, &mut ini, "responder", "<- e, ee, s, es", second).await,
        step(&mut ini, &mut res, "initiator", "-> s, se", Payload::Proof(&ini_side)).await,
    ];
    let h3 = ini.hs.hash();
    assert_eq!(h3, res.hs.hash());
    let (End { hs: ini, wire: mut ini_wire }, End { hs: res, wire: mut res_wire }) = (ini, res);

    let batched = version::batches(purpose, agreed);
    let (mut ini, mut res) = (ini.finish().expect("finish"), res.finish().expect("finish"));
    if batched {
        ini.set_batched();
        res.set_batched();
    }
    let ((_ini_r, mut ini_w), (_res_r, mut res_w)) = (ini.split(), res.split());
    // A directory session of version 4 carries records: the client's first frame holds two
    // requests, to show how they follow each other.
    let (first, answer): (Vec<Value>, Vec<Value>) = match connection {
        Connection::Directory => (
            vec![to_json(&client_to_server()[0]), to_json(&client_to_server()[2])],
            vec![to_json(&ServerToClient::Registered { listen: "203.0.113.5:40000".parse().expect("addr") })],
        ),
        Connection::Peer => (vec![to_json(&peer_messages()[0])], vec![to_json(&peer_messages()[1])]),
    };
    let mut transport = Vec::new();
    for (from, w, wire, values, ty) in [
        (
            "initiator",
            &mut ini_w,
            &mut ini_wire,
            first,
            if connection == Connection::Peer { "PeerMessage" } else { "ClientToServer" },
        ),
        (
            "responder",
            &mut res_w,
            &mut res_wire,
            answer,
            if connection == Connection::Peer { "PeerMessage" } else { "ServerToClient" },
        ),
    ] {
        let mut messages = Vec::new();
        let mut encoded = Vec::new();
        for value in values {
            let bytes = encode_value(ty, &value);
            queue_value(w, ty, &value);
            messages.push(json!({ "type": ty, "value": value, "hex": hex::encode(&bytes) }));
            encoded.push(bytes);
        }
        w.flush().await.expect("flush");
        let frame = read_frame(wire).await;
        transport.push(json!({
            "from": from, "nonce": 0, "batched": batched, "messages": messages,
            "plaintext_hex": hex::encode(frame_plaintext(batched, &encoded)), "frame_hex": hex::encode(&frame),
        }));
    }
    let mut sides = json!({ "initiator": ini_side.describe(true) });
    sides["responder"] = res_side.describe(connection == Connection::Peer);
    json!({
        "connection": if connection == Connection::Peer { "peer" } else { "directory" },
        "keys": sides,
        "handshake": messages,
        "handshake_hash": hex::encode(&h3),
        "transport": transport,
    })
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("json")
}

/// The plaintext of a frame carrying `messages`: the one message, or records (section 2).
fn frame_plaintext(batched: bool, messages: &[Vec<u8>]) -> Vec<u8> {
    if !batched {
        assert_eq!(messages.len(), 1, "one message a frame");
        return messages[0].clone();
    }
    let mut out = Vec::new();
    for m in messages {
        let mut len = [0u8; 5];
        out.extend_from_slice(whatsap2p_proto::codec::put_varint(m.len() as u32, &mut len));
        out.extend_from_slice(m);
    }
    out
}

/// Queues the JSON `value` of a message of type `ty` on `w`, as the real code queues it.
fn queue_value(w: &mut SessionWriter<DuplexStream>, ty: &str, value: &Value) {
    fn queue<T: Serialize + DeserializeOwned>(w: &mut SessionWriter<DuplexStream>, value: &Value) {
        w.queue_msg(&serde_json::from_value::<T>(value.clone()).expect("value")).expect("queue");
    }
    match ty {
        "ClientToServer" => queue::<ClientToServer>(w, value),
        "ServerToClient" => queue::<ServerToClient>(w, value),
        "PeerMessage" => queue::<PeerMessage>(w, value),
        other => panic!("no message type {other}"),
    }
}

/// Encodes the JSON `value` of a message of type `ty`.
fn encode_value(ty: &str, value: &Value) -> Vec<u8> {
    fn enc<T: Serialize + DeserializeOwned>(value: &Value) -> Vec<u8> {
        encode(&serde_json::from_value::<T>(value.clone()).expect("value")).expect("encode")
    }
    match ty {
        "ClientToServer" => enc::<ClientToServer>(value),
        "ServerToClient" => enc::<ServerToClient>(value),
        "PeerMessage" => enc::<PeerMessage>(value),
        other => panic!("no message type {other}"),
    }
}

fn signatures() -> Value {
    let state = family();
    let signer = n("5550001");
    let signed = whatsap2p_proto::group::signed_bytes(&state, &signer);
    json!({
        "group_state": {
            "signer_identity_seed": hex::encode(admin().to_bytes()),
            "signer_key": hex::encode(admin().verifying_key().to_bytes()),
            "signer": signer.as_str(),
            "state": serde_json::to_value(&state).expect("json"),
            "state_hex": hex::encode(encode(&state).expect("encode")),
            "signed_hex": hex::encode(&signed),
            "signature": hex::encode(admin().sign(&signed).to_bytes()),
        }
    })
}

fn version_vectors() -> Value {
    let range = |a, b| Versions::new(a, b).expect("range");
    json!({
        "hello_v3": [
            { "purpose": "Directory", "lowest": 2, "highest": 4, "hex": hex::encode(version::hello(Purpose::Directory, range(2, 4)).expect("hello")) },
            { "purpose": "Directory", "lowest": 2, "highest": 3, "hex": hex::encode(version::hello(Purpose::Directory, range(2, 3)).expect("hello")) },
            { "purpose": "Peer", "lowest": 3, "highest": 3, "hex": hex::encode(version::hello(Purpose::Peer, range(3, 3)).expect("hello")) },
        ],
        "reply": [
            payload_vector("HelloReply", &HelloReply::Agreed { version: 4 }),
            payload_vector("HelloReply", &HelloReply::Agreed { version: 3 }),
            payload_vector("HelloReply", &HelloReply::NoCommonVersion { lowest: 4, highest: 5 }),
        ],
    })
}

/// Datagrams (with their magic), the relay ticket and the relay preamble and answers.
fn nat_vectors() -> Value {
    let datagrams = [
        Datagram::ProbeRequest { token: [0x5a; 16], nonce: 0x0102_0304 },
        Datagram::ProbeReply { nonce: 0x0102_0304, observed: "203.0.113.101:50000".parse().expect("addr") },
        Datagram::Punch { nonce: 7 },
    ];
    let datagrams: Vec<Value> = datagrams
        .iter()
        .map(|d| {
            let value = serde_json::to_value(d).expect("json");
            json!({ "name": variant(&value), "value": value, "hex": hex::encode(nat::encode_datagram(d).expect("encode")) })
        })
        .collect();
    let sealed = sealed_ticket();
    let statuses: Vec<Value> = [
        RelayStatus::Paired,
        RelayStatus::BadTicket,
        RelayStatus::Expired,
        RelayStatus::Used,
        RelayStatus::Busy,
        RelayStatus::NoPartner,
        RelayStatus::BadPreamble,
    ]
    .iter()
    .map(|s| json!({ "name": serde_json::to_value(s).expect("json"), "hex": hex::encode(encode(s).expect("encode")) }))
    .collect();
    json!({
        "datagrams": datagrams,
        "ticket": payload_vector("RelayTicket", &ticket()),
        "sealed_ticket_hex": hex::encode(&sealed),
        "relay_preamble_hex": hex::encode(nat::relay_preamble(&sealed).expect("preamble")),
        "relay_status": statuses,
    })
}

/// The whole document.
async fn generate() -> Value {
    let mut messages = Vec::new();
    messages.extend(client_to_server().iter().map(|m| message_vector("ClientToServer", m)));
    messages.extend(server_to_client().iter().map(|m| message_vector("ServerToClient", m)));
    messages.extend(peer_messages().iter().map(|m| message_vector("PeerMessage", m)));
    let payloads = vec![
        payload_vector("Hello", &Hello { version: 2, purpose: Purpose::Directory }),
        payload_vector("Hello", &Hello { version: 2, purpose: Purpose::Peer }),
        payload_vector("ServerHello", &ServerHello { version: 2, heartbeat_timeout_ms: 30_000 }),
        payload_vector("GroupState", &family()),
        payload_vector("SignedGroupState", &signed_family()),
    ];
    json!({
        "about": "Test vectors for docs/protocol.md (protocol version 4: version 3, which negotiates, with records in directory frames; and the version 2 forms a side still reads). Byte strings are lower-case hex; message ids are ULID text in values and 16 big-endian bytes on the wire. Regenerate: cargo test -p whatsap2p-link --lib vectors::regenerate -- --ignored",
        "noise": { "protocol": NOISE_PARAMS, "prologue_hex": hex::encode(PROLOGUE) },
        "messages": messages,
        "payloads": payloads,
        "rejects": rejects(),
        "signatures": signatures(),
        "version_negotiation": version_vectors(),
        "nat": nat_vectors(),
        "transcripts": [transcript(Connection::Directory).await, transcript(Connection::Peer).await],
    })
}

fn text(doc: &Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("json");
    s.push('\n');
    s
}

#[tokio::test]
#[ignore = "writes docs/protocol-vectors.json; run after a deliberate protocol change"]
async fn regenerate() {
    std::fs::write(FILE, text(&generate().await)).expect("write the vectors");
}

fn read() -> Value {
    let s = std::fs::read_to_string(FILE).expect("docs/protocol-vectors.json");
    serde_json::from_str(&s).expect("vectors are JSON")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("hex")
}

fn check_message<T>(v: &Value) -> u32
where
    T: Serialize + DeserializeOwned + WireEnum + PartialEq + Debug,
{
    let wire = bytes(&v["hex"]);
    let stated: T = serde_json::from_value(v["value"].clone()).expect("value");
    assert_eq!(decode::<T>(&wire).as_ref(), Ok(&stated), "{v}");
    assert_eq!(encode(&stated).expect("encode"), wire, "{v}");
    let k = kind(&wire).expect("kind");
    assert_eq!(Some(u64::from(k)), v["kind"].as_u64(), "{v}");
    k
}

fn check_payload<T>(v: &Value)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let wire = bytes(&v["hex"]);
    let stated: T = serde_json::from_value(v["value"].clone()).expect("value");
    assert_eq!(decode_struct::<T>(&wire).as_ref(), Ok(&stated), "{v}");
    assert_eq!(encode(&stated).expect("encode"), wire, "{v}");
}

#[test]
fn given_the_vectors_then_every_message_decodes_to_its_value_and_encodes_to_its_bytes() {
    let doc = read();
    let mut seen: [Vec<u32>; 3] = Default::default();
    for v in doc["messages"].as_array().expect("messages") {
        match v["type"].as_str() {
            Some("ClientToServer") => seen[0].push(check_message::<ClientToServer>(v)),
            Some("ServerToClient") => seen[1].push(check_message::<ServerToClient>(v)),
            Some("PeerMessage") => seen[2].push(check_message::<PeerMessage>(v)),
            other => panic!("unknown type {other:?}"),
        }
    }
    for (kinds, known) in seen.iter_mut().zip([
        ClientToServer::KNOWN_VARIANTS,
        ServerToClient::KNOWN_VARIANTS,
        PeerMessage::KNOWN_VARIANTS,
    ]) {
        kinds.dedup();
        assert_eq!(*kinds, (0..known).collect::<Vec<_>>(), "every kind has a vector, in order");
    }
    for v in doc["payloads"].as_array().expect("payloads") {
        match v["type"].as_str() {
            Some("Hello") => check_payload::<Hello>(v),
            Some("ServerHello") => check_payload::<ServerHello>(v),
            Some("GroupState") => check_payload::<GroupState>(v),
            Some("SignedGroupState") => check_payload::<SignedGroupState>(v),
            other => panic!("unknown type {other:?}"),
        }
    }
}

#[test]
fn given_the_rejects_then_each_fails_as_stated() {
    for v in read()["rejects"].as_array().expect("rejects") {
        let wire = bytes(&v["hex"]);
        let got = match v["type"].as_str() {
            Some("ClientToServer") => decode::<ClientToServer>(&wire).map(drop),
            Some("ServerToClient") => decode::<ServerToClient>(&wire).map(drop),
            Some("PeerMessage") => decode::<PeerMessage>(&wire).map(drop),
            other => panic!("unknown type {other:?}"),
        };
        let error = got.expect_err("a reject must not decode");
        assert_eq!(Some(error_name(&error)), v["error"].as_str(), "{v}: {error}");
    }
}

#[test]
fn given_the_signed_group_state_then_its_bytes_and_signature_are_as_stated() {
    let doc = read();
    let g = &doc["signatures"]["group_state"];
    let state: GroupState = serde_json::from_value(g["state"].clone()).expect("state");
    let signer = n(g["signer"].as_str().expect("signer"));
    assert_eq!(encode(&state).expect("encode"), bytes(&g["state_hex"]));
    let signed = whatsap2p_proto::group::signed_bytes(&state, &signer);
    assert_eq!(signed, bytes(&g["signed_hex"]));
    let seed: [u8; 32] = bytes(&g["signer_identity_seed"]).try_into().expect("32 bytes");
    let key = SigningKey::from_bytes(&seed);
    assert_eq!(key.verifying_key().to_bytes().to_vec(), bytes(&g["signer_key"]));
    assert_eq!(key.sign(&signed).to_bytes().to_vec(), bytes(&g["signature"]));
    let update = state.clone().sign(signer.clone(), &key);
    let signer_key = PublicKey(key.verifying_key().to_bytes());
    assert_eq!(update.accept(None, &signer, &signer_key, &n("5550002")), Ok(()));
    assert_eq!(update.signature.to_bytes().to_vec(), bytes(&g["signature"]));
}

#[test]
fn given_the_version_vectors_then_hellos_and_replies_are_as_stated() {
    let doc = read();
    let vv = &doc["version_negotiation"];
    for h in vv["hello_v3"].as_array().expect("hellos") {
        let purpose: Purpose = serde_json::from_value(h["purpose"].clone()).expect("purpose");
        let range = Versions::new(
            h["lowest"].as_u64().expect("lowest") as u16,
            h["highest"].as_u64().expect("highest") as u16,
        )
        .expect("range");
        assert_eq!(version::hello(purpose, range).expect("hello"), bytes(&h["hex"]));
        let read = version::read_hello(&bytes(&h["hex"])).expect("read");
        assert_eq!((read.purpose, read.versions), (purpose, range));
    }
    for r in vv["reply"].as_array().expect("replies") {
        check_payload::<HelloReply>(r);
    }
}

#[test]
fn given_the_nat_vectors_then_datagrams_tickets_and_preambles_are_as_stated() {
    let doc = read();
    let v = &doc["nat"];
    let datagrams = v["datagrams"].as_array().expect("datagrams");
    assert_eq!(datagrams.len() as u32, <Datagram as WireEnum>::KNOWN_VARIANTS, "every datagram has a vector");
    for d in datagrams {
        let stated: Datagram = serde_json::from_value(d["value"].clone()).expect("value");
        assert_eq!(nat::decode_datagram(&bytes(&d["hex"])), Ok(stated.clone()), "{d}");
        assert_eq!(nat::encode_datagram(&stated).expect("encode"), bytes(&d["hex"]), "{d}");
    }
    check_payload::<RelayTicket>(&v["ticket"]);
    let sealed = bytes(&v["sealed_ticket_hex"]);
    assert_eq!(nat::relay_preamble(&sealed).expect("preamble"), bytes(&v["relay_preamble_hex"]));
    for s in v["relay_status"].as_array().expect("statuses") {
        let status: RelayStatus = serde_json::from_value(s["name"].clone()).expect("status");
        assert_eq!(encode(&status).expect("encode"), bytes(&s["hex"]));
    }
}

/// Replays one side of a transcript: the real code, with the transcript's keys, against the other
/// side's recorded frames. Every frame it writes must be the recorded one.
async fn replay(t: &Value, as_initiator: bool) {
    let me = if as_initiator { Side::initiator() } else { Side::responder() };
    let my_name = if as_initiator { "initiator" } else { "responder" };
    let mine = &t["keys"][my_name];
    assert_eq!(hex::encode(me.noise_private), mine["noise_static_private"]);
    assert_eq!(hex::encode(me.ephemeral_private), mine["noise_ephemeral_private"]);
    assert_eq!(hex::encode(me.noise().public().0), mine["noise_static_public"]);
    let (io, mut wire) = duplex(1 << 16);
    let mut hs = me.handshake(io, as_initiator);
    for m in t["handshake"].as_array().expect("handshake") {
        let payload = bytes(&m["payload_hex"]);
        // Message 2 starts with the reply to the Hello; the rest is the body of its type.
        let reply = m.get("reply_hex").map(bytes).unwrap_or_default();
        let body = m.get("body_hex").map(bytes).unwrap_or_else(|| payload.clone());
        assert_eq!([reply.as_slice(), &body].concat(), payload, "{m}");
        assert_eq!(hex::encode(hs.hash()), m["hash_before"], "{m}");
        if m["from"] == my_name {
            let ours = if m["payload_type"] == "IdentityProof" {
                let h = hs.hash();
                let proof = me.proof(&h);
                let signed = whatsap2p_proto::handshake::signed_bytes(&h, &me.noise().public().0, &me.number);
                assert_eq!(hex::encode(signed), m["proof_signed_hex"]);
                [reply.clone(), encode(&proof).expect("encode")].concat()
            } else {
                payload.clone()
            };
            assert_eq!(ours, payload, "{m}");
            hs.send(&ours).await.expect("send");
            assert_eq!(read_frame(&mut wire).await, bytes(&m["frame_hex"]), "{m}");
        } else {
            wire.write_all(&bytes(&m["frame_hex"])).await.expect("write");
            let h = hs.hash();
            assert_eq!(hs.recv().await.expect("recv"), payload, "{m}");
            if m["payload_type"] == "IdentityProof" {
                let proof: IdentityProof = decode_struct(&body).expect("proof");
                let remote = hs.remote_static().expect("remote static");
                assert_eq!(proof.verify(&h, &remote.0), Ok(()));
                assert_eq!(
                    whatsap2p_proto::handshake::signed_bytes(&h, &remote.0, &proof.number),
                    bytes(&m["proof_signed_hex"])
                );
            }
        }
        if let Some(r) = m.get("reply") {
            check_payload::<HelloReply>(&json!({ "value": r, "hex": m["reply_hex"] }));
            let HelloReply::Agreed { version } = serde_json::from_value(r.clone()).expect("reply") else {
                panic!("a transcript's handshake agrees: {m}");
            };
            assert_eq!(version::read_reply(version::SPOKEN, &payload), Ok((version, &body[..])), "{m}");
        }
        let stated = json!({ "value": m["payload"], "hex": hex::encode(&body) });
        match m["payload_type"].as_str() {
            Some("Hello") => {
                let v = &m["payload"];
                let purpose: Purpose = serde_json::from_value(v["purpose"].clone()).expect("purpose");
                let range = |k: &str| v[k].as_u64().and_then(|n| u16::try_from(n).ok()).expect("a version");
                let versions = Versions::new(range("lowest"), range("highest")).expect("range");
                assert_eq!(version::hello(purpose, versions).expect("hello"), body, "{m}");
                let read = version::read_hello(&body).expect("hello");
                assert_eq!((read.purpose, read.versions, read.form), (purpose, versions, HelloForm::V3));
            }
            Some("ServerHello") => check_payload::<ServerHello>(&stated),
            Some("IdentityProof") => check_payload::<IdentityProof>(&stated),
            other => panic!("payload type {other:?}"),
        }
    }
    assert_eq!(hex::encode(hs.hash()), t["handshake_hash"]);
    let mut session = hs.finish().expect("finish");
    let purpose = if t["connection"] == "peer" { Purpose::Peer } else { Purpose::Directory };
    let agreed = version::negotiate(version::SPOKEN, version::SPOKEN).expect("a version");
    if version::batches(purpose, agreed) {
        session.set_batched();
    }
    let (mut r, mut w) = session.split();
    for m in t["transport"].as_array().expect("transport") {
        assert_eq!(m["batched"], version::batches(purpose, agreed), "{m}");
        let messages = m["messages"].as_array().expect("messages");
        let encoded: Vec<Vec<u8>> = messages
            .iter()
            .map(|msg| {
                let ty = msg["type"].as_str().expect("type");
                let bytes = bytes(&msg["hex"]);
                assert_eq!(encode_value(ty, &msg["value"]), bytes, "{msg}");
                bytes
            })
            .collect();
        assert_eq!(frame_plaintext(m["batched"] == true, &encoded), bytes(&m["plaintext_hex"]), "{m}");
        if m["from"] == my_name {
            for msg in messages {
                queue_value(&mut w, msg["type"].as_str().expect("type"), &msg["value"]);
            }
            w.flush().await.expect("flush");
            assert_eq!(read_frame(&mut wire).await, bytes(&m["frame_hex"]), "{m}");
        } else {
            wire.write_all(&bytes(&m["frame_hex"])).await.expect("write");
            for message in encoded {
                assert_eq!(r.recv().await.expect("recv"), Some(message), "{m}");
            }
        }
    }
}

#[tokio::test]
async fn given_the_transcripts_then_each_side_replays_them_byte_for_byte() {
    let doc = read();
    assert_eq!(doc["noise"]["protocol"], NOISE_PARAMS);
    assert_eq!(bytes(&doc["noise"]["prologue_hex"]), PROLOGUE);
    let transcripts = doc["transcripts"].as_array().expect("transcripts");
    assert_eq!(transcripts.len(), 2);
    for t in transcripts {
        replay(t, true).await;
        replay(t, false).await;
    }
}

#[tokio::test]
async fn given_the_generator_then_the_file_is_exactly_what_it_writes() {
    let generated = text(&generate().await);
    let file = std::fs::read_to_string(FILE).expect("docs/protocol-vectors.json");
    assert!(generated == file, "docs/protocol-vectors.json is stale: regenerate it (see its \"about\")");
}

/// The kinds and names in the message tables of `docs/protocol.md`, table by table.
fn documented_kinds() -> Vec<Vec<(u32, String)>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md"))
        .expect("docs/protocol.md");
    let mut tables: Vec<Vec<(u32, String)>> = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(kind), Some(name)) = (cells.get(1), cells.get(2)) else { continue };
        let (Ok(kind), Some(name)) =
            (kind.parse::<u32>(), name.strip_prefix('`').and_then(|n| n.strip_suffix('`')))
        else {
            continue;
        };
        if kind == 0 {
            tables.push(Vec::new());
        }
        if let Some(table) = tables.last_mut() {
            table.push((kind, name.to_owned()));
        }
    }
    tables
}

#[test]
fn given_the_protocol_document_then_its_message_tables_name_every_kind_as_the_code_does() {
    let mut code: Vec<Vec<(u32, String)>> = vec![Vec::new(); 3];
    for v in read()["messages"].as_array().expect("messages") {
        let table = match v["type"].as_str() {
            Some("ClientToServer") => 0,
            Some("ServerToClient") => 1,
            _ => 2,
        };
        let entry = (v["kind"].as_u64().expect("kind") as u32, v["name"].as_str().expect("name").to_owned());
        if code[table].last() != Some(&entry) {
            code[table].push(entry);
        }
    }
    assert_eq!(documented_kinds(), code);
}
