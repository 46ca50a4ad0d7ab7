//! Requests a client author gets wrong, against a real server on 127.0.0.1:0: each gets the answer
//! `docs/protocol.md` promises, and the session stays or ends exactly as it says.
//!
//! The client here is raw: a Noise handshake and hand-made messages, as a second implementation
//! would send them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use whatsap2p_link::{Handshake, SessionReader, SessionWriter, StaticKeypair};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, LookupIntent, ServerToClient};
use whatsap2p_proto::handshake::{Purpose, ServerHello};
use whatsap2p_proto::version;
use whatsap2p_proto::{encode, IdentityProof, Number, WireNumber};
use whatsap2p_server::identities::SqliteIdentities;
use whatsap2p_server::presence::MemoryPresence;
use whatsap2p_server::{Directory, ServerError};

const WAIT: Duration = Duration::from_secs(5);

/// A directory on a free loopback port, stopped when dropped.
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let ids = SqliteIdentities::open(&data.path().join("ids.sqlite")).expect("identity db");
        let key = StaticKeypair::generate().expect("server key");
        let dir = Directory::new(Arc::new(MemoryPresence::new()), Arc::new(ids), key, Default::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(whatsap2p_server::run(listener, dir, shutdown));
        Self { addr, stop, task, _data: data }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("server");
    }
}

/// A client speaking the protocol by hand.
struct RawClient {
    reader: SessionReader<TcpStream>,
    writer: SessionWriter<TcpStream>,
    /// The `Reachability` the server sent, taken aside whenever it comes (as a client does).
    reachability: Option<ServerToClient>,
}

impl RawClient {
    /// Handshake as `number` with fresh keys; nothing sent after it.
    async fn connect(server: &Server, number: &str) -> Self {
        Self::connect_with(server, number, true).await
    }

    /// [`RawClient::connect`], writing records in frames as version 4 has it only if `batched`.
    async fn connect_with(server: &Server, number: &str, batched: bool) -> Self {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let noise = StaticKeypair::generate().expect("noise key");
        let identity = SigningKey::generate(&mut rand::rngs::OsRng);
        let mut hs = Handshake::initiator(stream, &noise).expect("handshake");
        let hello = version::hello(Purpose::Directory, version::SPOKEN).expect("hello");
        hs.send(&hello).await.expect("message 1");
        let message_2 = hs.recv().await.expect("message 2");
        let (agreed, rest) = version::read_reply(version::SPOKEN, &message_2).expect("a version");
        let server_hello: ServerHello = decode_struct(rest).expect("server hello");
        assert_eq!((agreed, server_hello.version), (version::V4, version::V4));
        let number = Number::new(number).expect("number");
        let proof = IdentityProof::sign(&identity, number, &hs.hash(), &noise.public().0);
        hs.send(&encode(&proof).expect("proof")).await.expect("message 3");
        let (mut reader, mut writer) = hs.finish().expect("finish").split();
        reader.set_batched();
        // Not batched, it writes each message as a frame of its own, records or not: to send the
        // server frames whose records are broken.
        if batched {
            writer.set_batched();
        }
        Self { reader, writer, reachability: None }
    }

    async fn send(&mut self, msg: &ClientToServer) {
        self.writer.send_msg(msg).await.expect("send");
    }

    /// Sends bytes as one frame, whatever they are.
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.send(bytes).await.expect("send");
    }

    /// The next message other than `Reachability`, or `None` when the server closed the session.
    async fn next(&mut self) -> Option<ServerToClient> {
        loop {
            match tokio::time::timeout(WAIT, self.reader.recv_msg::<ServerToClient>()).await {
                Ok(Ok(Some(m @ ServerToClient::Reachability { .. }))) => self.reachability = Some(m),
                Ok(Ok(msg)) => return msg,
                Ok(Err(e)) => panic!("reading from the server: {e}"),
                Err(_) => panic!("no answer within {WAIT:?}"),
            }
        }
    }

    async fn lookup(&mut self, req: u32, number: &str) -> ServerToClient {
        let number = WireNumber::new(number);
        self.send(&ClientToServer::Lookup { req, number, intent: LookupIntent::Ping }).await;
        self.next().await.expect("an answer")
    }

    /// Checks the session is alive: a heartbeat is answered.
    async fn still_served(&mut self) {
        self.send(&ClientToServer::Heartbeat).await;
        assert_eq!(self.next().await, Some(ServerToClient::HeartbeatAck));
    }

    async fn register(&mut self) -> SocketAddr {
        self.send(&ClientToServer::Register { listen: "127.0.0.1:4000".parse().expect("addr") }).await;
        match self.next().await {
            Some(ServerToClient::Registered { listen }) => listen,
            other => panic!("registration answered {other:?}"),
        }
    }
}

#[tokio::test]
async fn given_lookup_of_an_invalid_number_then_an_error_for_that_request_and_the_session_stays() {
    let server = Server::start().await;
    let mut c = RawClient::connect(&server, "5550001").await;
    for (req, bad) in [(7, "12x"), (8, "12"), (9, " 5550001"), (10, "1234567890123456")] {
        match c.lookup(req, bad).await {
            ServerToClient::Error { req: Some(r), message } => {
                assert_eq!(r, req);
                assert!(message.contains(&format!("{bad:?}")), "{message:?} names {bad:?}");
            }
            other => panic!("lookup of {bad:?} answered {other:?}"),
        }
    }
    // A handshake binds nothing (section 3.1): the number is bound by its registration.
    assert!(matches!(c.lookup(11, "5550001").await, ServerToClient::LookupResult { req: 11, key: None, .. }));
    c.register().await;
    match c.lookup(12, "5550001").await {
        ServerToClient::LookupResult { req: 12, number, key: Some(_), online: Some(_) } => {
            assert_eq!(number.as_str(), "5550001");
        }
        other => panic!("lookup answered {other:?}"),
    }
    c.still_served().await;
    server.stop().await;
}

#[tokio::test]
async fn given_watch_with_invalid_numbers_then_one_error_without_req_and_the_valid_ones_watched() {
    let server = Server::start().await;
    let mut watcher = RawClient::connect(&server, "5550001").await;
    let mut watched = RawClient::connect(&server, "5550002").await;
    let listen = watched.register().await;
    let numbers = ["abc", "5550002", "1"].map(WireNumber::new).to_vec();
    watcher.send(&ClientToServer::Watch { numbers }).await;
    match watcher.next().await {
        Some(ServerToClient::Error { req: None, message }) => {
            assert!(message.contains("\"abc\"") && message.contains("\"1\""), "{message}");
            assert!(!message.contains("5550002"), "{message}");
        }
        other => panic!("watch answered {other:?}"),
    }
    match watcher.next().await {
        Some(ServerToClient::Presence { number, online: Some(at), .. }) => {
            assert_eq!((number.as_str(), at.addr), ("5550002", listen));
        }
        other => panic!("expected the watched number's presence, got {other:?}"),
    }
    watched.send(&ClientToServer::Logout).await;
    match watcher.next().await {
        Some(ServerToClient::Presence { number, online: None, .. }) => assert_eq!(number.as_str(), "5550002"),
        other => panic!("expected the logout to be pushed, got {other:?}"),
    }
    watcher.still_served().await;
    server.stop().await;
}

#[tokio::test]
async fn given_a_session_that_never_registers_then_lookups_work_and_register_may_be_repeated() {
    let server = Server::start().await;
    let mut c = RawClient::connect(&server, "5550001").await;
    assert!(matches!(
        c.lookup(1, "5550009").await,
        ServerToClient::LookupResult { key: None, online: None, .. }
    ));
    let first = c.register().await;
    assert_eq!(c.register().await, first);
    let mut other = RawClient::connect(&server, "5550002").await;
    assert!(matches!(
        other.lookup(2, "5550001").await,
        ServerToClient::LookupResult { online: Some(at), .. } if at.addr == first
    ));
    server.stop().await;
}

#[tokio::test]
async fn given_logout_then_the_server_closes_the_session() {
    let server = Server::start().await;
    let mut c = RawClient::connect(&server, "5550001").await;
    c.register().await;
    c.send(&ClientToServer::Logout).await;
    assert_eq!(c.next().await, None);
    server.stop().await;
}

#[tokio::test]
async fn given_a_malformed_request_then_the_session_is_dropped() {
    let server = Server::start().await;
    let mut c = RawClient::connect(&server, "5550001").await;
    // Lookup (kind 1) whose request id is an over-long varint: not the canonical encoding.
    c.send_raw(&[1, 0x80, 0, 3, b'1', b'2', b'3', 0]).await;
    assert_eq!(c.next().await, None);
    server.stop().await;
}

/// Log lines, captured from the server running on this test's thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
        text.lines().filter(|l| pred(l)).map(str::to_owned).collect()
    }
}

#[tokio::test]
async fn given_many_messages_of_an_unknown_kind_then_skipped_logged_once_at_info_and_the_session_stays() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime has one thread, so the server's sessions log into this subscriber. (Which
    // spans a line shows is not checked: tests on other threads race for tracing's callsite cache.)
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = Server::start().await;
    let mut c = RawClient::connect(&server, "5550001").await;
    for _ in 0..100 {
        c.send_raw(&[99, 1, 2, 3]).await;
    }
    assert!(matches!(c.lookup(1, "5550002").await, ServerToClient::LookupResult { req: 1, .. }));
    let unknown = |l: &str| l.contains("unknown kind");
    let lines = log.lines(unknown);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("INFO") && lines[0].contains("kind 99"), "{lines:?}");
    drop(c);
    // The rest is said once, when the session ends.
    let deadline = tokio::time::Instant::now() + WAIT;
    while log.lines(unknown).len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = log.lines(unknown);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1].contains("skipped 99 messages of unknown kinds"), "{lines:?}");
    server.stop().await;
}

#[tokio::test]
async fn given_a_batch_of_requests_in_one_frame_then_each_is_answered_in_order() {
    let server = Server::start().await;
    let mut b = RawClient::connect(&server, "5550002").await;
    b.register().await;
    let mut a = RawClient::connect(&server, "5550001").await;
    // Version 4: everything queued before a flush leaves as one frame of records.
    for req in 1..=16 {
        let number = WireNumber::new(if req % 4 == 0 { "12x" } else { "5550002" });
        a.writer
            .queue_msg(&ClientToServer::Lookup { req, number, intent: LookupIntent::Ping })
            .expect("queue");
    }
    a.writer.queue_msg(&ClientToServer::Heartbeat).expect("queue");
    a.writer.flush().await.expect("flush");
    for want in 1..=16 {
        match a.next().await {
            Some(ServerToClient::LookupResult { req, online, .. }) => {
                assert_eq!(req, want);
                assert!(online.is_some(), "5550002 is online");
            }
            Some(ServerToClient::Error { req: Some(req), .. }) => assert_eq!((req, req % 4), (want, 0)),
            other => panic!("answer {want}: {other:?}"),
        }
    }
    assert_eq!(a.next().await, Some(ServerToClient::HeartbeatAck));
    server.stop().await;
}

#[tokio::test]
async fn given_a_frame_whose_record_runs_past_its_end_then_the_requests_before_it_are_answered_and_the_session_dropped(
) {
    let server = Server::start().await;
    let mut c = RawClient::connect_with(&server, "5550001", false).await;
    // A heartbeat (kind 2) as a record of one byte, then a record announcing 9 bytes of 1.
    c.send_raw(&[1, 2, 9, 2]).await;
    assert_eq!(c.next().await, Some(ServerToClient::HeartbeatAck));
    assert_eq!(c.next().await, None);
    server.stop().await;
}
