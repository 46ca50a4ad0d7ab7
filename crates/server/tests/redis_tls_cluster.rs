//! The shared directory on Redis over TLS (`rediss://`, a private CA made by the test) and on a
//! Redis Cluster (`redis+cluster://`, three primaries the test starts): instances that are one
//! directory, a store they cannot trust refused with the reason in the log, registration races on
//! a cluster, users going offline on whichever primary holds their entry.
//!
//! Instances run in this process on port 0; clients are raw protocol sessions (see `common`). Tests
//! that need redis-server skip with a message when it is missing.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{config, Account, Instance, Session, TIMEOUT};
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::directory::{ClientToServer, CloseCode, ServerToClient};
use whatsap2p_server::redis_store::{StoreAddress, StoreTls};
use whatsap2p_server::testing::{Redis, RedisCluster, TestCa};

/// Every log line of this test binary's instances (they run in this process).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("whatsap2p_server=info"))
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits for a log line that contains every one of `words`, and returns it.
async fn log_line(words: &[&str]) -> String {
    let logs = logs();
    let t0 = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
        if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_owned();
        }
        assert!(t0.elapsed() < TIMEOUT, "no log line with {words:?} within {TIMEOUT:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_taken(m: &ServerToClient) -> bool {
    matches!(m, ServerToClient::Closed { code: CloseCode::NumberTaken, .. })
}

fn is_unavailable(m: &ServerToClient) -> bool {
    matches!(m, ServerToClient::Closed { code: CloseCode::StoreUnavailable, .. })
}

fn address(url: &str) -> StoreAddress {
    url.parse().expect("store address")
}

/// Two instances on one store are one directory: a lookup and a presence push across them, an
/// impostor refused through the other instance, a logout heard across.
async fn one_directory(x: &Instance, y: &Instance, base: u32) {
    let n = |i: u32| (base + i).to_string();
    let (a, b, w) = (Account::new(&n(1)), Account::new(&n(2)), Account::new(&n(3)));
    let _a = Session::online(x.addr, &a, 1001).await;
    let mut watcher = Session::online(y.addr, &w, 1003).await;
    assert_eq!(watcher.lookup(&a.number).await, Some(1001), "a on x, seen from y");
    watcher.watch(&[&b.number]).await;
    watcher.presence(&b.number, None).await;
    let t0 = Instant::now();
    let mut b_session = Session::online(x.addr, &b, 1002).await;
    watcher.presence(&b.number, Some(1002)).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "push took {:?}", t0.elapsed());
    let impostor = Account::new(&n(1));
    assert!(is_taken(&Session::connect(y.addr, &impostor).await.register(1).await), "impostor got in");
    b_session.send(&ClientToServer::Logout).await;
    watcher.presence(&b.number, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_instances_on_redis_over_tls_then_they_are_one_directory() {
    logs();
    let Some(redis) = Redis::start_tls(false).await else { return };
    let ca = redis.ca().expect("TLS redis");
    let tls = StoreTls::from_files(Some(&ca.ca_file()), None, None).expect("CA file");
    let key = StaticKeypair::generate().expect("key");
    let at = address(&redis.url());
    assert!(redis.url().starts_with("rediss://"));
    let (x, y) = (Instance::store(&at, &tls, &key).await, Instance::store(&at, &tls, &key).await);
    one_directory(&x, &y, 11_000).await;
    x.stop().await;
    y.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_ca_that_did_not_sign_redis_then_registrations_are_refused_and_the_log_says_why() {
    logs();
    let Some(redis) = Redis::start_tls(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let stranger = TestCa::new();
    let (x, store) =
        Instance::store_unready(&address(&redis.url()), &StoreTls::with_ca(stranger.ca_pem), &key, config())
            .await;
    let a = Account::new("12001");
    let answer = Session::connect(x.addr, &a).await.register(1).await;
    assert!(is_unavailable(&answer), "registered on a store it cannot trust: {answer:?}");
    let line = log_line(&[&format!("127.0.0.1:{}", redis.port), "unreachable"]).await;
    eprintln!("the instance said: {line}");
    assert!(line.contains("certificate") && line.contains("refusing registrations"), "{line}");
    assert!(!store.is_up());
    // Still refused, still up: the instance keeps trying and never crashes.
    tokio::time::sleep(redis_check_period()).await;
    let answer = Session::connect(x.addr, &a).await.register(1).await;
    assert!(is_unavailable(&answer), "{answer:?}");
    x.stop().await;
}

fn redis_check_period() -> Duration {
    whatsap2p_server::redis_store::CHECK_PERIOD + Duration::from_millis(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_redis_asking_for_client_certificates_then_only_an_instance_with_one_gets_in() {
    logs();
    let Some(redis) = Redis::start_tls(true).await else { return };
    let ca = redis.ca().expect("TLS redis");
    let (cert, cert_key) = ca.client_files();
    let with_cert = StoreTls::from_files(Some(&ca.ca_file()), Some(&cert), Some(&cert_key)).expect("files");
    let key = StaticKeypair::generate().expect("key");
    let at = address(&redis.url());
    let x = Instance::store(&at, &with_cert, &key).await;
    let a = Account::new("13001");
    let _a = Session::online(x.addr, &a, 1001).await;
    let (y, _) = Instance::store_unready(&at, &StoreTls::with_ca(ca.ca_pem.clone()), &key, config()).await;
    let answer = Session::connect(y.addr, &Account::new("13002")).await.register(1).await;
    assert!(is_unavailable(&answer), "registered without a client certificate: {answer:?}");
    x.stop().await;
    y.stop().await;
}

/// Two instances on a fresh 3-primary cluster, once both have reached it.
async fn on_cluster(cluster: &RedisCluster, key: &StaticKeypair) -> (Instance, Instance) {
    let at = address(&cluster.url());
    (
        Instance::store(&at, &StoreTls::default(), key).await,
        Instance::store(&at, &StoreTls::default(), key).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_instances_on_a_cluster_then_they_are_one_directory() {
    logs();
    let Some(cluster) = RedisCluster::start(3).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let (x, y) = on_cluster(&cluster, &key).await;
    one_directory(&x, &y, 21_000).await;
    // The keys of those numbers are spread over the primaries: more than one holds some.
    let holding = {
        let mut n = 0;
        for port in &cluster.ports {
            let keys = cluster.cli(*port, &["dbsize"]).await;
            n += usize::from(keys.trim().parse::<usize>().unwrap_or(0) > 0);
        }
        n
    };
    assert!(holding >= 2, "the numbers' keys all landed on one primary");
    x.stop().await;
    y.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_instances_racing_to_bind_a_number_on_a_cluster_then_exactly_one_key_wins_every_time() {
    logs();
    let Some(cluster) = RedisCluster::start(3).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let (x, y) = on_cluster(&cluster, &key).await;
    for round in 0..50 {
        let number = format!("22{round:04}");
        let race = |addr, account: Account| async move {
            let mut s = Session::connect(addr, &account).await;
            let answer = s.register(1).await;
            (matches!(answer, ServerToClient::Registered { .. }), is_taken(&answer), s, account)
        };
        let ((won_a, refused_a, sa, a), (won_b, refused_b, sb, b)) =
            tokio::join!(race(x.addr, Account::new(&number)), race(y.addr, Account::new(&number)));
        assert!(won_a != won_b && refused_a != refused_b, "round {round}: {won_a} {won_b}");
        // The loser stays refused through either instance.
        let loser = if won_a { &b } else { &a };
        let mut again = Session::connect(if won_a { y.addr } else { x.addr }, loser).await;
        assert!(is_taken(&again.register(1).await), "round {round}: the loser got in later");
        drop((sa, sb));
    }
    x.stop().await;
    y.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_users_of_an_instance_on_a_cluster_then_they_go_offline_when_their_sessions_end_or_it_dies() {
    logs();
    let Some(cluster) = RedisCluster::start(3).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let at = address(&cluster.url());
    let x = Instance::store(&at, &StoreTls::default(), &key).await;
    // The watcher's instance waits long for heartbeats: the watcher sends none while it waits.
    let patient = common::Config { heartbeat_timeout: Duration::from_secs(10), ..config() };
    let y = Instance::store_with(&at, &StoreTls::default(), &key, patient).await;
    // Enough numbers that every primary holds the presence of some of them.
    let users: Vec<Account> = (0..9).map(|i| Account::new(&format!("2300{i}"))).collect();
    let mut sessions = Vec::new();
    for (i, u) in users.iter().enumerate() {
        sessions.push(Session::online(x.addr, u, 3000 + i as u16).await);
    }
    let w = Account::new("23100");
    let mut watcher = Session::online(y.addr, &w, 3100).await;
    let numbers: Vec<_> = users.iter().map(|u| &u.number).collect();
    watcher.watch(&numbers).await;
    for (i, u) in users.iter().enumerate() {
        watcher.presence(&u.number, Some(3000 + i as u16)).await;
    }
    // One session ends: heard across at once.
    let t0 = Instant::now();
    let mut first = sessions.remove(0);
    first.send(&ClientToServer::Logout).await;
    watcher.presence(&users[0].number, None).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "push took {:?}", t0.elapsed());
    // The instance dies: every other user goes offline when its entry expires, on whichever
    // primary holds it, within the heartbeat timeout.
    let t0 = Instant::now();
    x.die().await;
    for u in &users[1..] {
        watcher.presence(&u.number, None).await;
    }
    let took = t0.elapsed();
    assert!(took < config().heartbeat_timeout + Duration::from_secs(2), "offline after {took:?}");
    assert_eq!(watcher.lookup(&users[5].number).await, None);
    y.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_cluster_gone_then_registrations_are_refused_sessions_stay_and_it_recovers() {
    logs();
    let Some(mut cluster) = RedisCluster::start(3).await else { return };
    let key = StaticKeypair::generate().expect("key");
    // Sessions here wait through the cluster's restart without heartbeats.
    let patient = common::Config { heartbeat_timeout: Duration::from_secs(8), ..config() };
    let x = Instance::store_with(&address(&cluster.url()), &StoreTls::default(), &key, patient).await;
    let a = Account::new("24001");
    let mut a_session = Session::online(x.addr, &a, 4001).await;
    cluster.kill().await;
    let first = format!("127.0.0.1:{}", cluster.ports[0]);
    log_line(&["Store at cluster", &first, "unreachable", "refusing registrations"]).await;
    let answer = Session::connect(x.addr, &Account::new("24002")).await.register(1).await;
    assert!(is_unavailable(&answer), "registered without a store: {answer:?}");
    // The established session stays: its heartbeats are answered.
    a_session.heartbeat().await;
    // The cluster comes back (empty: no persistence here): registrations work again by themselves.
    cluster.restart().await;
    let t0 = Instant::now();
    let mut b_session = loop {
        let mut s = Session::connect(x.addr, &Account::new("24002")).await;
        match s.register(4002).await {
            ServerToClient::Registered { .. } => break s,
            m if is_unavailable(&m) && t0.elapsed() < TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("still refused after {:?}: {other:?}", t0.elapsed()),
        }
    };
    eprintln!("registrations again {:?} after the cluster was back", t0.elapsed());
    a_session.heartbeat().await;
    assert_eq!(b_session.lookup(&a.number).await, Some(4001), "a's heartbeat put its presence back");
    // The instance listens again on every primary: when another instance dies, its users go offline
    // for the watchers here.
    let z = Instance::store(&address(&cluster.url()), &StoreTls::default(), &key).await;
    let users: Vec<Account> = (0..6).map(|i| Account::new(&format!("2410{i}"))).collect();
    let mut held = Vec::new();
    for (i, u) in users.iter().enumerate() {
        held.push(Session::online(z.addr, u, 5000 + i as u16).await);
    }
    b_session.watch(&users.iter().map(|u| &u.number).collect::<Vec<_>>()).await;
    for (i, u) in users.iter().enumerate() {
        b_session.presence(&u.number, Some(5000 + i as u16)).await;
    }
    z.die().await;
    for u in &users {
        b_session.presence(&u.number, None).await;
    }
    drop(held);
    x.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_instances_on_a_cluster_over_tls_then_they_are_one_directory() {
    logs();
    let Some(cluster) = RedisCluster::start_tls(3).await else { return };
    let ca = cluster.ca().expect("TLS cluster");
    let tls = StoreTls::from_files(Some(&ca.ca_file()), None, None).expect("CA file");
    let key = StaticKeypair::generate().expect("key");
    let at = address(&cluster.url());
    assert!(at.is_tls());
    let (x, y) = (Instance::store(&at, &tls, &key).await, Instance::store(&at, &tls, &key).await);
    one_directory(&x, &y, 25_000).await;
    // Expiries are heard from every primary, over TLS too.
    let first = format!("127.0.0.1:{}", cluster.ports[0]);
    log_line(&["hearing the expiries of the cluster's primary", &first]).await;
    x.stop().await;
    y.stop().await;
}
