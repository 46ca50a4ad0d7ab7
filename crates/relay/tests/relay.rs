//! The relay against raw clients: real TCP and UDP sockets on 127.0.0.1, a relay on port 0, the
//! preamble and probes written by hand as a second implementation would. Waits that the relay
//! itself times (a partner that never comes, an idle pair, a silent preamble) run on a paused clock
//! over in-memory streams, through the same connection code.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use whatsap2p_proto::nat::{
    decode_datagram, encode_datagram, relay_preamble, Datagram, RelayStatus, RelayTicket, MAX_TICKET_LEN,
};
use whatsap2p_proto::Number;
use whatsap2p_relay::{Flow, Limits, Observer, PipeEnd, ProbeOutcome, Relay, RelayKeys};

const WAIT: Duration = Duration::from_secs(5);
const SERVER_KEY: [u8; 32] = [7; 32];

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

fn keys() -> RelayKeys {
    RelayKeys::derive(&SERVER_KEY)
}

/// A ticket for `a` and `b`, valid 30 s, sealed with the directory's key.
fn ticket(a: &str, b: &str) -> Vec<u8> {
    ticket_until(a, b, now_ms() + 30_000)
}

fn ticket_until(a: &str, b: &str, expires_unix_ms: u64) -> Vec<u8> {
    let t = RelayTicket {
        a: Number::new(a).expect("n"),
        b: Number::new(b).expect("n"),
        expires_unix_ms,
        nonce: rand::random(),
    };
    keys().seal(&t).expect("seal")
}

/// Counts what the relay reports.
#[derive(Default)]
struct Counts {
    refused: Mutex<Vec<RelayStatus>>,
    ended: Mutex<Vec<Flow>>,
    probes: Mutex<Vec<ProbeOutcome>>,
}

impl Observer for Counts {
    fn probe(&self, outcome: ProbeOutcome) {
        self.probes.lock().expect("lock").push(outcome);
    }
    fn relay_refused(&self, status: RelayStatus) {
        self.refused.lock().expect("lock").push(status);
    }
    fn relay_ended(&self, flow: &Flow) {
        self.ended.lock().expect("lock").push(*flow);
    }
}

/// Log lines, captured from the relay running on this test's thread.
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
    /// Captures this thread's log (the tests' runtimes have one thread, so the relay's tasks log
    /// here) until the guard is dropped.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
        text.lines().filter(|l| pred(l)).map(str::to_owned).collect()
    }

    fn has(&self, words: &[&str]) -> bool {
        !self.lines(|l| words.iter().all(|w| l.contains(w))).is_empty()
    }
}

/// A relay on 127.0.0.1:0 (TCP, and UDP on the same port), stopped on `stop`.
struct Running {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(limits: Limits) -> Running {
        let (listener, udp) = bind_pair().await;
        let addr = listener.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let relay = Relay::new(keys(), limits, counts.clone());
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(whatsap2p_relay::run(listener, Some(udp), relay, shutdown));
        Running { addr, counts, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the relay stops").expect("join");
    }

    fn refused(&self) -> Vec<RelayStatus> {
        self.counts.refused.lock().expect("lock").clone()
    }
}

/// A TCP listener and a UDP socket on the same loopback port.
async fn bind_pair() -> (TcpListener, UdpSocket) {
    for _ in 0..50 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        if let Ok(udp) = UdpSocket::bind(listener.local_addr().expect("addr")).await {
            return (listener, udp);
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// Connects and writes the preamble with `sealed`.
async fn present(relay: SocketAddr, sealed: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(relay).await.expect("connect");
    s.write_all(&relay_preamble(sealed).expect("preamble")).await.expect("preamble");
    s
}

/// The relay's status byte, then for a refusal, the close.
async fn status(s: &mut TcpStream) -> RelayStatus {
    let mut b = [0u8; 1];
    tokio::time::timeout(WAIT, s.read_exact(&mut b))
        .await
        .expect("an answer in time")
        .expect("a status byte");
    let status = RelayStatus::from_code(u32::from(b[0]));
    if status != RelayStatus::Paired {
        let mut rest = Vec::new();
        let n = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await.expect("closed").unwrap_or(0);
        assert_eq!(n, 0, "nothing after a refusal");
    }
    status
}

/// Two connections paired on one fresh ticket for `a` and `b`.
async fn paired(relay: SocketAddr, a: &str, b: &str) -> (TcpStream, TcpStream, Vec<u8>) {
    let sealed = ticket(a, b);
    let mut first = present(relay, &sealed).await;
    let mut second = present(relay, &sealed).await;
    assert_eq!(status(&mut second).await, RelayStatus::Paired);
    assert_eq!(status(&mut first).await, RelayStatus::Paired);
    (first, second, sealed)
}

/// Bytes go both ways through a pair (the pair still works).
async fn still_pipes(x: &mut TcpStream, y: &mut TcpStream) {
    x.write_all(b"ping").await.expect("write");
    let mut got = [0u8; 4];
    tokio::time::timeout(WAIT, y.read_exact(&mut got)).await.expect("in time").expect("read");
    assert_eq!(&got, b"ping");
    y.write_all(b"pong").await.expect("write");
    tokio::time::timeout(WAIT, x.read_exact(&mut got)).await.expect("in time").expect("read");
    assert_eq!(&got, b"pong");
}

#[tokio::test]
async fn given_two_clients_with_one_ticket_then_paired_and_bytes_flow_both_ways_and_the_pair_is_logged() {
    let (log, _guard) = Captured::start();
    let relay = Running::start(Limits::default()).await;
    let (mut first, mut second, _) = paired(relay.addr, "5550001", "5550002").await;
    // Each side as the relay sees it (ip/port), for the log line.
    let side = |s: &TcpStream| {
        let a = s.local_addr().expect("addr");
        format!("({}/{})", a.ip(), a.port())
    };
    let (first_side, second_side) = (side(&first), side(&second));
    // A megabyte one way, then an answer the other way: the relay copies, whatever the bytes.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let to_send = big.clone();
    let writer = tokio::spawn(async move {
        first.write_all(&to_send).await.expect("write");
        first
    });
    let mut got = vec![0u8; big.len()];
    second.read_exact(&mut got).await.expect("read");
    assert!(got == big, "the bytes arrive unchanged");
    let mut first = writer.await.expect("join");
    still_pipes(&mut second, &mut first).await;
    drop(first);
    drop(second);
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay.counts.ended.lock().expect("lock").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ended = relay.counts.ended.lock().expect("lock").clone();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!((ended[0].first_to_second, ended[0].second_to_first), ((1 << 20) + 4, 4));
    assert!(
        log.has(&[
            "Relayed 5550001 and 5550002",
            &format!("1048580 bytes from the first to connect {first_side}"),
            &format!("4 from the second {second_side}"),
            "closed by the clients"
        ]),
        "{:?}",
        log.lines(|l| l.contains("Relay"))
    );
    relay.stop().await;
}

#[tokio::test]
async fn given_a_guessed_or_damaged_ticket_then_bad_ticket_and_a_running_pair_is_unaffected() {
    let (log, _guard) = Captured::start();
    let relay = Running::start(Limits::default()).await;
    let (mut x, mut y, _) = paired(relay.addr, "5550001", "5550002").await;
    // Guessed: random bytes of a plausible length.
    let guessed: Vec<u8> = (0..80).map(|_| rand::random::<u8>()).collect();
    let mut c = present(relay.addr, &guessed).await;
    assert_eq!(status(&mut c).await, RelayStatus::BadTicket);
    // Damaged: a real ticket with one bit changed (its expiry, say).
    let mut damaged = ticket("5550003", "5550004");
    damaged[10] ^= 1;
    let mut c = present(relay.addr, &damaged).await;
    assert_eq!(status(&mut c).await, RelayStatus::BadTicket);
    // Sealed with another directory's key.
    let other = RelayKeys::derive(&[8; 32]);
    let t = RelayTicket {
        a: Number::new("5550003").expect("n"),
        b: Number::new("5550004").expect("n"),
        expires_unix_ms: now_ms() + 30_000,
        nonce: [1; 16],
    };
    let mut c = present(relay.addr, &other.seal(&t).expect("seal")).await;
    assert_eq!(status(&mut c).await, RelayStatus::BadTicket);
    still_pipes(&mut x, &mut y).await;
    assert_eq!(relay.refused(), vec![RelayStatus::BadTicket; 3]);
    // Anyone can send these: one line at once, the rest summed up later.
    let lines = log.lines(|l| l.contains("BadTicket"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("WARN") && lines[0].contains("refused 1 connection"), "{lines:?}");
    relay.stop().await;
}

#[tokio::test]
async fn given_a_ticket_that_paired_then_a_third_connection_and_the_same_pair_again_are_refused_used() {
    let (log, _guard) = Captured::start();
    let relay = Running::start(Limits::default()).await;
    let (mut x, mut y, sealed) = paired(relay.addr, "5550001", "5550002").await;
    let mut third = present(relay.addr, &sealed).await;
    assert_eq!(status(&mut third).await, RelayStatus::Used);
    still_pipes(&mut x, &mut y).await;
    drop((x, y));
    // After the pair ended, the ticket is still used until it expires.
    let mut again = present(relay.addr, &sealed).await;
    assert_eq!(status(&mut again).await, RelayStatus::Used);
    assert!(log.has(&["refused", "ticket of 5550001 and 5550002", "Used"]), "{:?}", log.lines(|_| true));
    relay.stop().await;
}

#[tokio::test]
async fn given_an_expired_ticket_then_expired() {
    let (log, _guard) = Captured::start();
    let relay = Running::start(Limits::default()).await;
    let mut c = present(relay.addr, &ticket_until("5550001", "5550002", now_ms() - 1)).await;
    assert_eq!(status(&mut c).await, RelayStatus::Expired);
    assert_eq!(relay.refused(), vec![RelayStatus::Expired]);
    assert!(log.has(&["refused", "5550001 and 5550002", "Expired"]));
    relay.stop().await;
}

#[tokio::test]
async fn given_the_pair_limits_then_busy_per_number_and_in_all_and_the_others_unaffected() {
    let (log, _guard) = Captured::start();
    let relay = Running::start(Limits { max_pairs: 3, pairs_per_number: 2, ..Limits::default() }).await;
    let (mut x1, mut y1, _) = paired(relay.addr, "1001", "2001").await;
    let (_x2, _y2, _) = paired(relay.addr, "2002", "1001").await;
    // A third pair for 1001.
    let mut c = present(relay.addr, &ticket("1001", "2003")).await;
    assert_eq!(status(&mut c).await, RelayStatus::Busy);
    // Others still get in, up to the total.
    let (_x3, _y3, _) = paired(relay.addr, "3001", "3002").await;
    let mut c = present(relay.addr, &ticket("4001", "4002")).await;
    assert_eq!(status(&mut c).await, RelayStatus::Busy);
    still_pipes(&mut x1, &mut y1).await;
    assert!(log.has(&["refused", "ticket of 1001 and 2003", "Busy"]));
    // A pair that ends frees its place (as soon as the relay has seen both sides close).
    drop((x1, y1));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sealed = ticket("1001", "2003");
        let mut c = present(relay.addr, &sealed).await;
        let mut d = present(relay.addr, &sealed).await;
        match status(&mut c).await {
            RelayStatus::Paired => {
                assert_eq!(status(&mut d).await, RelayStatus::Paired);
                break;
            }
            RelayStatus::Busy if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            s => panic!("1001 still refused {s:?} after its pair ended"),
        }
    }
    relay.stop().await;
}

#[tokio::test]
async fn given_bytes_that_are_not_a_preamble_then_bad_preamble() {
    let relay = Running::start(Limits::default()).await;
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[b'W', b'2', b'P', b'R', 2, 0, 10],
        &[b'W', b'2', b'P', b'R', 1, 0, 0],
    ] {
        let mut s = TcpStream::connect(relay.addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        assert_eq!(status(&mut s).await, RelayStatus::BadPreamble, "{bytes:?}");
    }
    // A ticket longer than any the relay reads.
    let mut s = TcpStream::connect(relay.addr).await.expect("connect");
    let len = (MAX_TICKET_LEN as u16 + 1).to_be_bytes();
    s.write_all(&[b'W', b'2', b'P', b'R', 1, len[0], len[1]]).await.expect("write");
    assert_eq!(status(&mut s).await, RelayStatus::BadPreamble);
    relay.stop().await;
}

#[tokio::test]
async fn given_udp_probes_then_a_token_the_directory_made_is_answered_with_the_source_and_a_forged_one_is_not(
) {
    let relay = Running::start(Limits::default()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = client.local_addr().expect("addr");
    let forged = encode_datagram(&Datagram::ProbeRequest { token: [5; 16], nonce: 1 }).expect("encode");
    let real =
        encode_datagram(&Datagram::ProbeRequest { token: keys().probe_token(), nonce: 2 }).expect("encode");
    client.send_to(&forged, relay.addr).await.expect("send");
    client.send_to(&real, relay.addr).await.expect("send");
    // The relay answers in order: had it answered the forged one, that answer would come first.
    let mut buf = [0u8; 128];
    let (n, from) =
        tokio::time::timeout(WAIT, client.recv_from(&mut buf)).await.expect("an answer").expect("recv");
    assert_eq!(from, relay.addr);
    assert_eq!(decode_datagram(&buf[..n]), Ok(Datagram::ProbeReply { nonce: 2, observed: me }));
    assert_eq!(
        *relay.counts.probes.lock().expect("lock"),
        vec![ProbeOutcome::UnknownToken, ProbeOutcome::Answered]
    );
    relay.stop().await;
}

// ---- Timed by the relay: paused clock, in-memory streams, the same connection code. ----

type MemRelay = Arc<Relay<DuplexStream>>;

fn mem_relay(limits: Limits) -> (MemRelay, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    (Arc::new(Relay::new(keys(), limits, counts.clone())), counts)
}

/// A client's end of a new connection to `relay`, served by a task of its own.
fn mem_connect(relay: &MemRelay) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let relay = relay.clone();
    let peer: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
    let task = tokio::spawn(async move { whatsap2p_relay::serve_connection(&relay, server, peer).await });
    (client, task)
}

async fn mem_status(s: &mut DuplexStream) -> RelayStatus {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("a status byte");
    RelayStatus::from_code(u32::from(b[0]))
}

#[tokio::test(start_paused = true)]
async fn given_a_partner_that_never_comes_then_no_partner_after_the_wait_and_the_place_is_free() {
    let (log, _guard) = Captured::start();
    let limits = Limits { max_pairs: 1, ..Limits::default() };
    let (relay, counts) = mem_relay(limits);
    let (mut first, task) = mem_connect(&relay);
    let start = tokio::time::Instant::now();
    first.write_all(&relay_preamble(&ticket("5550001", "5550002")).expect("preamble")).await.expect("write");
    assert_eq!(mem_status(&mut first).await, RelayStatus::NoPartner);
    assert_eq!(start.elapsed(), limits.partner_wait, "waited exactly the partner wait");
    task.await.expect("join");
    assert_eq!(relay.pairs(), 0);
    assert_eq!(*counts.refused.lock().expect("lock"), vec![RelayStatus::NoPartner]);
    assert!(log.has(&["refused", "5550001 and 5550002", "NoPartner"]));
    // The only place is free again.
    let sealed = ticket("5550003", "5550004");
    let (mut a, _) = mem_connect(&relay);
    let (mut b, _) = mem_connect(&relay);
    a.write_all(&relay_preamble(&sealed).expect("preamble")).await.expect("write");
    tokio::task::yield_now().await;
    b.write_all(&relay_preamble(&sealed).expect("preamble")).await.expect("write");
    assert_eq!(mem_status(&mut a).await, RelayStatus::Paired);
    assert_eq!(mem_status(&mut b).await, RelayStatus::Paired);
}

#[tokio::test(start_paused = true)]
async fn given_an_idle_pair_then_closed_at_the_idle_timeout_and_logged() {
    let (log, _guard) = Captured::start();
    let limits = Limits::default();
    let (relay, counts) = mem_relay(limits);
    let sealed = ticket("5550001", "5550002");
    let (mut a, _) = mem_connect(&relay);
    let (mut b, task_b) = mem_connect(&relay);
    a.write_all(&relay_preamble(&sealed).expect("preamble")).await.expect("write");
    tokio::task::yield_now().await;
    b.write_all(&relay_preamble(&sealed).expect("preamble")).await.expect("write");
    assert_eq!(mem_status(&mut a).await, RelayStatus::Paired);
    assert_eq!(mem_status(&mut b).await, RelayStatus::Paired);
    task_b.await.expect("the second side's task hands its stream over and ends");
    let start = tokio::time::Instant::now();
    a.write_all(b"hello").await.expect("write");
    let mut got = [0u8; 5];
    b.read_exact(&mut got).await.expect("read");
    // Nothing more: both sides see the close at the idle timeout.
    let mut x = [0u8; 1];
    assert_eq!(a.read(&mut x).await.expect("eof"), 0);
    assert_eq!(b.read(&mut x).await.expect("eof"), 0);
    assert_eq!(start.elapsed(), limits.idle_timeout);
    tokio::task::yield_now().await;
    let ended = counts.ended.lock().expect("lock").clone();
    assert_eq!(ended, vec![Flow { first_to_second: 5, second_to_first: 0, end: PipeEnd::Idle }]);
    assert!(log.has(&["Relayed 5550001 and 5550002", "idle"]), "{:?}", log.lines(|_| true));
    assert_eq!(relay.pairs(), 0);
}

#[tokio::test(start_paused = true)]
async fn given_a_first_side_that_leaves_or_writes_while_waiting_then_its_place_is_freed_at_once() {
    let (relay, counts) = mem_relay(Limits { max_pairs: 1, ..Limits::default() });
    let start = tokio::time::Instant::now();
    let (mut leaves, task) = mem_connect(&relay);
    leaves.write_all(&relay_preamble(&ticket("5550001", "5550002")).expect("p")).await.expect("write");
    tokio::task::yield_now().await;
    assert_eq!(relay.pairs(), 1);
    drop(leaves);
    task.await.expect("join");
    assert_eq!(relay.pairs(), 0);
    let (mut eager, task) = mem_connect(&relay);
    eager.write_all(&relay_preamble(&ticket("5550001", "5550002")).expect("p")).await.expect("write");
    eager.write_all(b"noise message 1").await.expect("write");
    assert_eq!(mem_status(&mut eager).await, RelayStatus::BadPreamble);
    task.await.expect("join");
    assert_eq!(relay.pairs(), 0);
    assert_eq!(start.elapsed(), Duration::ZERO, "no wait for the partner's time");
    assert_eq!(*counts.refused.lock().expect("lock"), vec![RelayStatus::BadPreamble]);
}

#[tokio::test(start_paused = true)]
async fn given_a_connection_that_never_finishes_its_preamble_then_bad_preamble_at_the_timeout() {
    let limits = Limits::default();
    let (relay, _) = mem_relay(limits);
    let (mut c, task) = mem_connect(&relay);
    let start = tokio::time::Instant::now();
    c.write_all(b"W2PR\x01\x00").await.expect("write");
    assert_eq!(mem_status(&mut c).await, RelayStatus::BadPreamble);
    assert_eq!(start.elapsed(), limits.preamble_timeout);
    task.await.expect("join");
}

#[tokio::test(start_paused = true)]
async fn given_shutdown_then_waiting_and_piping_connections_end() {
    let (relay, _) = mem_relay(Limits::default());
    let sealed = ticket("5550001", "5550002");
    let (mut waiting, waiting_task) = mem_connect(&relay);
    waiting.write_all(&relay_preamble(&ticket("5550003", "5550004")).expect("p")).await.expect("write");
    let (mut a, a_task) = mem_connect(&relay);
    let (mut b, _) = mem_connect(&relay);
    a.write_all(&relay_preamble(&sealed).expect("preamble")).await.expect("write");
    tokio::task::yield_now().await;
    b.write_all(&relay_preamble(&sealed).expect("preamble")).await.expect("write");
    assert_eq!(mem_status(&mut a).await, RelayStatus::Paired);
    relay.shut_down();
    waiting_task.await.expect("join");
    a_task.await.expect("join");
    let mut x = [0u8; 1];
    assert_eq!(a.read(&mut x).await.expect("eof"), 0);
    assert_eq!(relay.pairs(), 0);
}
