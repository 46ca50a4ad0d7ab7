//! What the client core's in-process tests share: a directory server on 127.0.0.1:0, clients in
//! temporary profiles, and bare peers built from the client's own handshake (no `Client`), which
//! can play a peer that misbehaves on purpose.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use whatsap2p_client::directory::{self, Registered};
use whatsap2p_client::profile::Identity;
use whatsap2p_client::store::Store;
use whatsap2p_client::{Client, ClientConfig, Event, Number, Timeouts};
use whatsap2p_link::{Handshake, Session, SessionReader, SessionWriter, StaticKeypair};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, ServerToClient};
use whatsap2p_proto::handshake::{Hello, ServerHello};
use whatsap2p_proto::peer::{FileFailCode, PeerMessage, FILE_CHUNK_LEN};
use whatsap2p_proto::version::{self, Versions};
use whatsap2p_server::identities::SqliteIdentities;
use whatsap2p_server::presence::MemoryPresence;

/// A directory server in this process, on a port of its own.
pub struct TestDirectory {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

impl TestDirectory {
    /// Starts one whose sessions expire after `heartbeat_timeout` without a frame.
    pub async fn start(heartbeat_timeout: Duration) -> Self {
        let config = whatsap2p_server::Config { heartbeat_timeout, ..Default::default() };
        let key = StaticKeypair::generate().expect("server key");
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), key, config).await
    }

    /// Starts one on `addr` (port 0: a free one) with `key` and `config`.
    pub async fn start_on(addr: SocketAddr, key: StaticKeypair, config: whatsap2p_server::Config) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let identities = SqliteIdentities::open(&data.path().join("identities.sqlite")).expect("identities");
        let directory = whatsap2p_server::Directory::new(
            Arc::new(MemoryPresence::new()),
            Arc::new(identities),
            key,
            config,
        );
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = whatsap2p_server::run(listener, directory, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self { addr, stop: Some(stop), task, _data: data }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// How a [`FakeDirectory`] answers a Hello.
#[derive(Clone, Copy)]
pub enum Speaks {
    /// As version 3 does, speaking these versions.
    Versions(Versions),
    /// As a server from before version 3: the v2 Hello only; anything else is refused by
    /// closing, as version 2 refuses the v3 Hello's extra byte.
    V2Only,
}

/// A directory played by the test: real handshakes, then each session answers its `Register` with
/// the next of the queued answers (`Registered` when none is queued; a session answered otherwise
/// closes), acknowledges heartbeats, and can be told to send something and close.
pub struct FakeDirectory {
    pub addr: SocketAddr,
    /// Every Hello received, in order.
    pub hellos: Arc<Mutex<Vec<Vec<u8>>>>,
    answers: Arc<Mutex<VecDeque<ServerToClient>>>,
    sessions: Arc<Mutex<Vec<mpsc::Sender<ServerToClient>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDirectory {
    pub async fn start(speaks: Speaks, key: StaticKeypair) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hellos: Arc<Mutex<Vec<Vec<u8>>>> = Default::default();
        let answers: Arc<Mutex<VecDeque<ServerToClient>>> = Default::default();
        let sessions: Arc<Mutex<Vec<mpsc::Sender<ServerToClient>>>> = Default::default();
        let (h, a, all) = (hellos.clone(), answers.clone(), sessions.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).expect("nodelay");
                let (tx, told) = mpsc::channel(4);
                all.lock().expect("sessions").push(tx);
                tokio::spawn(fake_session(stream, key.clone(), speaks, h.clone(), a.clone(), told));
            }
        });
        Self { addr, hellos, answers, sessions, task }
    }

    /// The answer the next `Register` gets.
    pub fn answer_next(&self, answer: ServerToClient) {
        self.answers.lock().expect("answers").push_back(answer);
    }

    /// Sends `msg` on every open session, which then closes.
    pub async fn tell_all(&self, msg: ServerToClient) {
        let sessions: Vec<_> = self.sessions.lock().expect("sessions").drain(..).collect();
        for s in sessions {
            let _ = s.send(msg.clone()).await;
        }
    }
}

impl Drop for FakeDirectory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One session of a [`FakeDirectory`].
async fn fake_session(
    stream: TcpStream,
    key: StaticKeypair,
    speaks: Speaks,
    hellos: Arc<Mutex<Vec<Vec<u8>>>>,
    answers: Arc<Mutex<VecDeque<ServerToClient>>>,
    mut told: mpsc::Receiver<ServerToClient>,
) {
    let mut hs = Handshake::responder(stream, &key).expect("handshake");
    let Ok(hello) = hs.recv().await else { return };
    hellos.lock().expect("hellos").push(hello.clone());
    let timeout_ms = 30_000;
    let (payload, agreed) = match speaks {
        Speaks::V2Only => {
            if decode_struct::<Hello>(&hello).is_err() {
                return;
            }
            let hello = ServerHello { version: 2, heartbeat_timeout_ms: timeout_ms };
            (whatsap2p_proto::encode(&hello).expect("encode"), 2)
        }
        Speaks::Versions(ours) => {
            let offered = version::read_hello(&hello).expect("a hello");
            let answer = version::answer(ours, &offered).expect("answer");
            let Ok(agreed) = answer.outcome else {
                let _ = hs.send(&answer.prefix).await;
                return;
            };
            let mut payload = answer.prefix;
            let server_hello = ServerHello { version: agreed, heartbeat_timeout_ms: timeout_ms };
            payload.extend(whatsap2p_proto::encode(&server_hello).expect("encode"));
            (payload, agreed)
        }
    };
    if hs.send(&payload).await.is_err() || hs.recv().await.is_err() {
        return;
    }
    let Ok(mut session) = hs.finish() else { return };
    if version::batches(whatsap2p_proto::handshake::Purpose::Directory, agreed) {
        session.set_batched();
    }
    let (mut reader, mut writer) = session.split();
    loop {
        tokio::select! {
            Some(msg) = told.recv() => {
                let _ = writer.send_msg(&msg).await;
                return;
            }
            msg = reader.recv_msg::<ClientToServer>() => match msg {
                Ok(Some(ClientToServer::Register { listen })) => {
                    let answer = answers.lock().expect("answers").pop_front();
                    let registered = answer.is_none();
                    let answer = answer.unwrap_or(ServerToClient::Registered { listen });
                    if writer.send_msg(&answer).await.is_err() || !registered {
                        return;
                    }
                }
                Ok(Some(ClientToServer::Heartbeat)) => {
                    if writer.send_msg(&ServerToClient::HeartbeatAck).await.is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
        }
    }
}

pub fn number(n: u64) -> Number {
    Number::new(&n.to_string()).expect("number")
}

/// A client's configuration in its own folder under `root`.
pub fn config(server: SocketAddr, number: &Number, root: &Path) -> ClientConfig {
    let dir = root.join(number.as_str());
    ClientConfig {
        number: number.clone(),
        profile_dir: dir.join("profile"),
        servers: vec![server.into()],
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        listen_udp: 0,
        timeouts: Timeouts::default(),
        downloads: dir.join("downloads"),
        max_file_size: ClientConfig::DEFAULT_MAX_FILE_SIZE,
        storage: Default::default(),
        versions: whatsap2p_proto::version::SPOKEN,
    }
}

pub async fn start(server: SocketAddr, number: &Number, root: &Path) -> (Client, mpsc::Receiver<Event>) {
    Client::start(config(server, number, root)).await.expect("client start")
}

/// Waits for the first event `pick` takes, skipping the others.
pub async fn next<T>(events: &mut mpsc::Receiver<Event>, pick: impl Fn(Event) -> Option<T>) -> T {
    loop {
        let e = events.recv().await.expect("the client's events ended");
        if let Some(t) = pick(e) {
            return t;
        }
    }
}

/// A directory whose sessions never expire during a test, a temporary folder, and a client in it.
pub struct Scene {
    pub directory: TestDirectory,
    pub root: tempfile::TempDir,
}

/// Long enough that no directory session expires during a test (bare peers send no heartbeats).
pub const NO_EXPIRY: Duration = Duration::from_secs(24 * 3600);

impl Scene {
    pub async fn start() -> Self {
        Self { directory: TestDirectory::start(NO_EXPIRY).await, root: tempfile::tempdir().expect("tempdir") }
    }

    /// A client with number `n`, online.
    pub async fn client(&self, n: u64) -> (Client, mpsc::Receiver<Event>) {
        start(self.directory.addr, &number(n), self.root.path()).await
    }

    /// A bare peer with number `n`, registered as listening at `listen`, and its session (the
    /// number stays bound to its key after the session ends).
    pub async fn bare_peer(&self, n: u64, listen: SocketAddr) -> (BarePeer, Registered) {
        let pins = Store::open(&self.root.path().join(format!("pins-{n}.sqlite"))).expect("store");
        let peer = BarePeer::new(number(n));
        let session = peer.register(self.directory.addr, listen, &pins).await;
        (peer, session)
    }

    pub async fn stop(self) {
        self.directory.stop().await;
    }
}

/// A peer without a `Client`: keys, a number, and the client's own handshakes.
pub struct BarePeer {
    pub number: Number,
    pub identity: Identity,
    /// The protocol versions its handshakes speak.
    pub versions: Versions,
}

impl BarePeer {
    pub fn new(number: Number) -> Self {
        let identity = Identity {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
            noise: StaticKeypair::generate().expect("noise key"),
        };
        Self { number, identity, versions: version::SPOKEN }
    }

    /// Registers with the directory, publishing `listen`; the session lasts as long as what is
    /// returned (the number stays bound to the key after).
    pub async fn register(&self, server: SocketAddr, listen: SocketAddr, pins: &Store) -> Registered {
        directory::connect(server, &self.number, &self.identity, listen, pins, &Timeouts::default())
            .await
            .expect("registering a bare peer")
    }

    /// Dials `client` at `addr` and proves who we are.
    pub async fn dial(
        &self,
        client: &Number,
        key: whatsap2p_client::PublicKey,
        addr: SocketAddr,
    ) -> Session<TcpStream> {
        self.dial_from(None, client, key, addr).await
    }

    /// [`BarePeer::dial`] from the address `from` (any on loopback: 127.0.0.2, …), or the one the
    /// system picks.
    pub async fn dial_from(
        &self,
        from: Option<std::net::IpAddr>,
        client: &Number,
        key: whatsap2p_client::PublicKey,
        addr: SocketAddr,
    ) -> Session<TcpStream> {
        let dial = || async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            if let Some(ip) = from {
                socket.bind(SocketAddr::new(ip, 0)).expect("binding the source address");
            }
            let stream = socket.connect(addr).await.expect("dialing the client");
            // As the client's own links: on a paused clock, Nagle's wait for an acknowledgement
            // would be real time during which virtual time runs on.
            stream.set_nodelay(true).expect("nodelay");
            Ok(stream)
        };
        let stream = dial().await.expect("dialing the client");
        let (me, identity) = (&self.number, &self.identity);
        whatsap2p_client::handshake::dial_peer(stream, dial, identity, me, client, key, addr, self.versions)
            .await
            .expect("handshake with the client")
            .session
    }

    /// Answers a client that dialed us on `stream`, trusting whoever it proves to be.
    pub async fn answer(&self, stream: TcpStream, addr: SocketAddr) -> Session<TcpStream> {
        stream.set_nodelay(true).expect("nodelay");
        whatsap2p_client::handshake::accept_peer(
            stream,
            &self.identity,
            &self.number,
            addr,
            self.versions,
            |_, _| async { Ok(()) },
        )
        .await
        .expect("handshake with the dialing client")
        .linked
        .session
    }
}

/// A stranger's one visit: a bare peer numbered `n` registers with the directory at `server`
/// (its session then ends; the number stays bound), dials `client` at `addr` (whose key is `key`),
/// sends one text and waits for its acknowledgement; then the link goes.
pub async fn visit(
    server: SocketAddr,
    pins: &Store,
    n: u64,
    client: &Number,
    key: whatsap2p_client::PublicKey,
    addr: SocketAddr,
) {
    let peer = BarePeer::new(number(n));
    drop(peer.register(server, "127.0.0.1:9".parse().expect("addr"), pins).await);
    let (mut reader, mut writer) = peer.dial(client, key, addr).await.split();
    let id = whatsap2p_client::MessageId::new();
    let text = PeerMessage::Text { id, sent_at_ms: 1, text: format!("hello from {n}") };
    writer.send_msg(&text).await.expect("sending");
    loop {
        match reader.recv_msg::<PeerMessage>().await.expect("reading") {
            // Acknowledged, or held as a message request (a stranger's text is one).
            Some(PeerMessage::Ack { id: acked } | PeerMessage::Pending { id: acked }) if acked == id => {
                return
            }
            Some(_) => continue,
            None => panic!("the client closed the link before acknowledging"),
        }
    }
}

/// Offers `data` as `name` of type `media_type` on a bare peer's link and, once accepted, sends
/// its bytes: all of them, or with `abandon_at` that many before giving up (`FileAbort`,
/// `SenderGaveUp`). Returns the transfer's id and the receiver's last word: `FileReceived`, the
/// refusal or abort it answered the offer with, or (abandoned) its `FileAccept`.
pub async fn send_file(
    reader: &mut SessionReader<TcpStream>,
    writer: &mut SessionWriter<TcpStream>,
    name: &str,
    media_type: &str,
    data: &[u8],
    abandon_at: Option<usize>,
) -> (whatsap2p_client::MessageId, PeerMessage) {
    let id = whatsap2p_client::MessageId::new();
    let blake3 = *blake3::hash(data).as_bytes();
    let size = data.len() as u64;
    let offer = PeerMessage::FileOffer { id, name: name.into(), size, media_type: media_type.into(), blake3 };
    writer.send_msg(&offer).await.expect("offering");
    loop {
        let msg = reader.recv_msg::<PeerMessage>().await.expect("reading").expect("the link closed");
        match &msg {
            PeerMessage::FileAccept { id: got, offset } if *got == id => {
                let end = abandon_at.unwrap_or(data.len());
                let mut at = *offset as usize;
                while at < end {
                    let next = (at + FILE_CHUNK_LEN).min(end);
                    let chunk =
                        PeerMessage::FileChunk { id, offset: at as u64, data: data[at..next].to_vec() };
                    writer.send_msg(&chunk).await.expect("sending the bytes");
                    at = next;
                }
                if abandon_at.is_some() {
                    let reason = "abandoned".to_owned();
                    let abort = PeerMessage::FileAbort { id, code: FileFailCode::SenderGaveUp, reason };
                    writer.send_msg(&abort).await.expect("giving up");
                    return (id, msg);
                }
            }
            PeerMessage::FileReceived { id: got }
            | PeerMessage::FileRefuse { id: got, .. }
            | PeerMessage::FileAbort { id: got, .. }
                if *got == id =>
            {
                return (id, msg)
            }
            _ => continue,
        }
    }
}

/// Descriptors this process holds open.
#[cfg(target_os = "linux")]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}
