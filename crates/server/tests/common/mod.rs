//! What the directory's integration tests share: a `redis-server` of their own on a free port (in
//! a temporary dir, stopped at the end), directory instances in this process on port 0, and a raw
//! protocol session (the real handshake, identity proof and messages) standing in for a client.
//!
//! Tests that need `redis-server` call [`Redis::start`] (from the crate's `test-utils`), which
//! returns `None` (and says so on stderr) when the program is not installed.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use whatsap2p_link::{Handshake, SessionReader, SessionWriter, StaticKeypair};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, CloseCode, LookupIntent, ServerToClient};
use whatsap2p_proto::handshake::{Hello, Purpose, ServerHello};
use whatsap2p_proto::version::{self, HelloForm, NoCommonVersion, ReplyError, Versions};
use whatsap2p_proto::{IdentityProof, Number};
use whatsap2p_server::identities::SqliteIdentities;
use whatsap2p_server::metrics::Metrics;
use whatsap2p_server::presence::MemoryPresence;
use whatsap2p_server::redis_store::{RedisStore, StoreAddress, StoreTls};
pub use whatsap2p_server::Config;

/// How the server said a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// `Refused`, with its words.
    Refused(String),
    /// `Closed`, with its code.
    Closed(CloseCode),
}

/// A newer session of the number took over.
pub const REPLACED: Option<Ending> = Some(Ending::Closed(CloseCode::Replaced));
use whatsap2p_server::Directory;

/// How long any one expected event may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

// Not every test file starts a Redis.
#[allow(unused_imports)]
pub use whatsap2p_server::testing::Redis;

/// A directory instance in this process.
pub struct Instance {
    /// Its TCP address.
    pub addr: SocketAddr,
    /// Its UDP probe port (the same port number).
    pub udp: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _data: Option<tempfile::TempDir>,
}

/// Limits for tests: presence expires 2 s after the last heartbeat.
pub fn config() -> Config {
    Config { heartbeat_timeout: Duration::from_secs(2), ..Config::default() }
}

impl Instance {
    /// An instance on `redis_url` with the directory's shared `key`.
    pub async fn redis(redis_url: &str, key: &StaticKeypair) -> Instance {
        Instance::redis_with(redis_url, key, config()).await
    }

    /// The same with other limits.
    pub async fn redis_with(redis_url: &str, key: &StaticKeypair, config: Config) -> Instance {
        // RUST_LOG=info shows the instances' logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let metrics = Arc::new(Metrics::with_shared_store());
        let (store, feed) =
            RedisStore::connect(redis_url, config.heartbeat_timeout, metrics.clone()).expect("redis store");
        let directory = Directory::new(store.clone(), store.clone(), key.clone(), config)
            .with_feed(feed)
            .with_metrics(metrics);
        let i = Instance::serve(directory, None).await;
        // Until it has subscribed it would miss changes: wait for its first health check.
        for _ in 0..200 {
            if store.is_up() {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the instance did not reach redis within 5 s");
    }

    /// An instance on the store at `address` (one node or a cluster), trusting `tls`, once it has
    /// reached the store.
    pub async fn store(address: &StoreAddress, tls: &StoreTls, key: &StaticKeypair) -> Instance {
        Instance::store_with(address, tls, key, config()).await
    }

    /// The same with other limits.
    pub async fn store_with(
        address: &StoreAddress,
        tls: &StoreTls,
        key: &StaticKeypair,
        config: Config,
    ) -> Instance {
        let (i, store) = Instance::store_unready(address, tls, key, config).await;
        let t0 = std::time::Instant::now();
        while !store.is_up() {
            assert!(t0.elapsed() < TIMEOUT, "the instance did not reach its store within {TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        i
    }

    /// The same without waiting for the store, which may never answer: the instance and its
    /// store.
    pub async fn store_unready(
        address: &StoreAddress,
        tls: &StoreTls,
        key: &StaticKeypair,
        config: Config,
    ) -> (Instance, Arc<RedisStore>) {
        let metrics = Arc::new(Metrics::with_shared_store());
        let (store, feed) =
            RedisStore::connect_to(address, tls, config.heartbeat_timeout, metrics.clone()).expect("store");
        let directory = Directory::new(store.clone(), store.clone(), key.clone(), config)
            .with_feed(feed)
            .with_metrics(metrics);
        (Instance::serve(directory, None).await, store)
    }

    /// A single instance with the embedded stores.
    pub async fn memory(key: &StaticKeypair) -> Instance {
        Instance::memory_with(key, config()).await
    }

    /// The same with other limits (or other protocol versions).
    pub async fn memory_with(key: &StaticKeypair, config: Config) -> Instance {
        let data = tempfile::tempdir().expect("tempdir");
        let ids = SqliteIdentities::open(&data.path().join("ids.sqlite")).expect("db");
        let directory = Directory::new(Arc::new(MemoryPresence::new()), Arc::new(ids), key.clone(), config);
        Instance::serve(directory, Some(data)).await
    }

    async fn serve(directory: Directory, data: Option<tempfile::TempDir>) -> Instance {
        let metrics = directory.metrics.clone();
        let (listener, udp) = bind_tcp_and_udp().await;
        let addr = listener.local_addr().expect("addr");
        let udp_addr = udp.local_addr().expect("addr");
        let directory = directory.with_udp(udp);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            whatsap2p_server::run(listener, directory, async {
                let _ = stopped.await;
            })
            .await
            .expect("run");
        });
        Instance { addr, udp: udp_addr, metrics, stop: Some(stop), task, _data: data }
    }

    /// Shuts down cleanly: every session says goodbye and takes its user offline.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Dies at once, as under `kill -9`: sessions and connections dropped, nothing written to Redis.
    pub async fn die(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A TCP listener and a UDP socket on the same loopback port number, as the directory binds them.
pub async fn bind_tcp_and_udp() -> (tokio::net::TcpListener, tokio::net::UdpSocket) {
    for _ in 0..50 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        if let Ok(udp) = tokio::net::UdpSocket::bind(listener.local_addr().expect("addr")).await {
            return (listener, udp);
        }
    }
    panic!("no loopback port free for both TCP and UDP");
}

/// A user's keys and number.
pub struct Account {
    pub number: Number,
    pub signing: SigningKey,
    pub noise: StaticKeypair,
}

impl Account {
    pub fn new(number: &str) -> Account {
        Account {
            number: Number::new(number).expect("number"),
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
            noise: StaticKeypair::generate().expect("noise key"),
        }
    }
}

/// A directory session speaking the protocol directly.
pub struct Session {
    reader: SessionReader<TcpStream>,
    writer: SessionWriter<TcpStream>,
    next_req: u32,
    /// Messages read while waiting for another, in order, for the next reads.
    backlog: std::collections::VecDeque<ServerToClient>,
    /// The `Reachability` the server sent, taken aside whenever it comes (as a client does).
    pub reachability: Option<ServerToClient>,
}

/// The answer to a Hello, message 2, as the initiator reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// After a v3 Hello: the reply, and the ServerHello that follows it (if any).
    V3(Result<u16, NoCommonVersion>, Option<ServerHello>),
    /// After a v2 Hello: the ServerHello.
    V2(ServerHello),
    /// The server closed the connection without message 2.
    Closed,
}

/// Sends `hello` (a payload, in either form) as message 1 for `account`, reads message 2 as an
/// initiator that speaks `ours`; returns the handshake to go on with.
pub async fn hello(
    server: SocketAddr,
    account: &Account,
    hello: &[u8],
    ours: Versions,
) -> (Handshake<TcpStream>, Answer) {
    hello_from(None, server, account, hello, ours).await
}

/// A TCP connection to `server` from the local address `from` (any 127/8 address on loopback: a
/// second source address for tests of limits per address).
pub async fn dial_from(from: Option<std::net::IpAddr>, server: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ip) = from else { return TcpStream::connect(server).await };
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(server).await
}

/// [`hello`] from the local address `from`.
pub async fn hello_from(
    from: Option<std::net::IpAddr>,
    server: SocketAddr,
    account: &Account,
    hello: &[u8],
    ours: Versions,
) -> (Handshake<TcpStream>, Answer) {
    let stream = dial_from(from, server).await.expect("connect");
    let mut hs = Handshake::initiator(stream, &account.noise).expect("handshake");
    hs.send(hello).await.expect("send hello");
    let message_2 = match tokio::time::timeout(TIMEOUT, hs.recv()).await.expect("message 2 in time") {
        Ok(m) => m,
        Err(_) => return (hs, Answer::Closed),
    };
    let answer = match version::read_hello(hello).expect("a hello").form {
        HelloForm::V2 => Answer::V2(decode_struct(&message_2).expect("server hello")),
        HelloForm::V3 => match version::read_reply(ours, &message_2) {
            Ok((agreed, rest)) => Answer::V3(Ok(agreed), Some(decode_struct(rest).expect("server hello"))),
            Err(ReplyError::NoCommonVersion(none)) => Answer::V3(Err(none), None),
            Err(e) => panic!("a bad reply: {e}"),
        },
    };
    (hs, answer)
}

impl Session {
    /// Connects and runs the handshake with `account`'s proof, as the client does: the v3 Hello,
    /// agreeing on version 4 (several messages a frame).
    pub async fn connect(server: SocketAddr, account: &Account) -> Session {
        let v3 = version::hello(Purpose::Directory, version::SPOKEN).expect("hello");
        let (hs, answer) = hello(server, account, &v3, version::SPOKEN).await;
        assert!(matches!(answer, Answer::V3(Ok(4), Some(ServerHello { version: 4, .. }))), "{answer:?}");
        Session::prove(hs, account, true).await
    }

    /// The same as a client of version 3: the v3 Hello speaking 2 to 3, one message a frame.
    #[allow(dead_code)] // Only the version tests are clients of version 3.
    pub async fn connect_v3(server: SocketAddr, account: &Account) -> Session {
        let ours = Versions::new(version::V2, version::V3).expect("a range");
        let v3 = version::hello(Purpose::Directory, ours).expect("hello");
        let (hs, answer) = hello(server, account, &v3, ours).await;
        assert!(matches!(answer, Answer::V3(Ok(3), Some(ServerHello { version: 3, .. }))), "{answer:?}");
        Session::prove(hs, account, false).await
    }

    /// [`Session::connect`] from the local address `from`.
    pub async fn connect_from(from: std::net::IpAddr, server: SocketAddr, account: &Account) -> Session {
        let v3 = version::hello(Purpose::Directory, version::SPOKEN).expect("hello");
        let (hs, answer) = hello_from(Some(from), server, account, &v3, version::SPOKEN).await;
        assert!(matches!(answer, Answer::V3(Ok(4), Some(ServerHello { version: 4, .. }))), "{answer:?}");
        Session::prove(hs, account, true).await
    }

    /// The same as a client from before version 3: the v2 Hello.
    pub async fn connect_v2(server: SocketAddr, account: &Account) -> Session {
        let v2 = whatsap2p_proto::encode(&Hello { version: version::V2, purpose: Purpose::Directory })
            .expect("hello");
        let (hs, answer) = hello(server, account, &v2, Versions::only(version::V2)).await;
        assert!(matches!(answer, Answer::V2(ServerHello { version: 2, .. })), "{answer:?}");
        Session::prove(hs, account, false).await
    }

    /// Message 3: the identity proof; then the session, carrying several messages a frame if
    /// `batched` (the version agreed has it).
    pub async fn prove(mut hs: Handshake<TcpStream>, account: &Account, batched: bool) -> Session {
        let proof = IdentityProof::sign(
            &account.signing,
            account.number.clone(),
            &hs.hash(),
            &account.noise.public().0,
        );
        hs.send(&whatsap2p_proto::encode(&proof).expect("proof")).await.expect("send proof");
        let mut link = hs.finish().expect("finish");
        if batched {
            link.set_batched();
        }
        let (reader, writer) = link.split();
        Session { reader, writer, next_req: 0, backlog: Default::default(), reachability: None }
    }

    /// Sends `msg`.
    pub async fn send(&mut self, msg: &ClientToServer) {
        self.writer.send_msg(msg).await.expect("send");
    }

    /// Sends `plaintext` as one message, whatever it holds (for malformed messages).
    #[allow(dead_code)] // Not every test file sends malformed messages.
    pub async fn send_raw(&mut self, plaintext: &[u8]) {
        self.writer.send(plaintext).await.expect("send");
    }

    /// Sends `msg`, or says why the link would not.
    #[allow(dead_code)] // Not every test file sends what a link refuses.
    pub async fn try_send(&mut self, msg: &ClientToServer) -> Result<(), whatsap2p_link::LinkError> {
        self.writer.send_msg(msg).await
    }

    /// Registers as listening at `port` and returns the answer (`Registered` or `Refused`).
    pub async fn register(&mut self, port: u16) -> ServerToClient {
        self.send(&ClientToServer::Register { listen: SocketAddr::from(([127, 0, 0, 1], port)) }).await;
        self.next().await.expect("an answer to Register")
    }

    /// Connects and registers, expecting success.
    pub async fn online(server: SocketAddr, account: &Account, port: u16) -> Session {
        let mut s = Session::connect(server, account).await;
        match s.register(port).await {
            ServerToClient::Registered { .. } => s,
            other => panic!("{} not registered: {other:?}", account.number),
        }
    }

    /// The next message other than `Reachability`, `None` when the server closed the session.
    pub async fn next(&mut self) -> Option<ServerToClient> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        loop {
            match tokio::time::timeout(TIMEOUT, self.reader.recv_msg::<ServerToClient>()).await {
                Err(_) => panic!("no message from the server within {TIMEOUT:?}"),
                Ok(Ok(Some(m @ ServerToClient::Reachability { .. }))) => self.reachability = Some(m),
                Ok(Ok(msg)) => return msg,
                Ok(Err(_)) => return None,
            }
        }
    }

    /// The first message that matches `pred`; the others stay for the next reads.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&ServerToClient) -> bool) -> ServerToClient {
        let mut skipped = Vec::new();
        loop {
            match self.next().await {
                Some(m) if pred(&m) => {
                    for m in skipped.into_iter().rev() {
                        self.backlog.push_front(m);
                    }
                    return m;
                }
                Some(m) => skipped.push(m),
                None => panic!("the session closed while waiting for {what} (after {skipped:?})"),
            }
        }
    }

    /// Looks `number` up; returns whether it is online and at which port.
    pub async fn lookup(&mut self, number: &Number) -> Option<u16> {
        self.next_req += 1;
        let req = self.next_req;
        self.send(&ClientToServer::Lookup { req, number: number.into(), intent: LookupIntent::Ping }).await;
        match self
            .expect(
                "a lookup answer",
                |m| matches!(m, ServerToClient::LookupResult { req: r, .. } if *r == req),
            )
            .await
        {
            ServerToClient::LookupResult { online, .. } => online.map(|l| l.addr.port()),
            _ => unreachable!(),
        }
    }

    /// Watches `numbers`.
    pub async fn watch(&mut self, numbers: &[&Number]) {
        self.send(&ClientToServer::Watch { numbers: numbers.iter().map(|n| (*n).into()).collect() }).await;
    }

    /// Waits for a push saying `number` is online at `port` (`Some`) or offline (`None`).
    pub async fn presence(&mut self, number: &Number, port: Option<u16>) {
        self.expect(&format!("{number} at {port:?}"), |m| {
            matches!(m, ServerToClient::Presence { number: n, online, .. }
                if n == number && online.map(|l| l.addr.port()) == port)
        })
        .await;
    }

    /// Every presence push about `number` until a push about `marker` arrives.
    pub async fn pushes_until(&mut self, number: &Number, marker: &Number) -> Vec<Option<u16>> {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(ServerToClient::Presence { number: n, .. }) if n == *marker => return seen,
                Some(ServerToClient::Presence { number: n, online, .. }) if n == *number => {
                    seen.push(online.map(|l| l.addr.port()))
                }
                Some(_) => {}
                None => panic!("the session closed while waiting for {marker}"),
            }
        }
    }

    /// Sends a heartbeat and waits for its answer.
    pub async fn heartbeat(&mut self) {
        self.send(&ClientToServer::Heartbeat).await;
        self.expect("a heartbeat answer", |m| matches!(m, ServerToClient::HeartbeatAck)).await;
    }

    /// Reads until the server closes the session; returns how the server said it ended, if it did.
    pub async fn closed(&mut self) -> Option<Ending> {
        let mut ending = None;
        while let Some(m) = self.next().await {
            match m {
                ServerToClient::Refused { reason } => ending = Some(Ending::Refused(reason)),
                ServerToClient::Closed { code, .. } => ending = Some(Ending::Closed(code)),
                _ => {}
            }
        }
        ending
    }
}
