//! One directory on several instances sharing a real `redis-server`, and one session per number on
//! a single instance: lookups and presence pushes across instances, registration races, replaced
//! sessions, an instance that dies, Redis restarted or gone.
//!
//! Instances run in this process on port 0; clients are raw protocol sessions (real Noise
//! handshake, identity proof and messages over loopback). Tests that need redis-server skip with a
//! message when it is missing.

mod common;

use std::time::{Duration, Instant};

use common::{config, Account, Instance, Redis, Session, REPLACED, TIMEOUT};
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::directory::{CloseCode, ServerToClient};

/// Three instances of one directory on `redis`.
async fn three(redis: &Redis, key: &StaticKeypair) -> Vec<Instance> {
    let mut i = Vec::new();
    for _ in 0..3 {
        i.push(Instance::redis(&redis.url(), key).await);
    }
    i
}

async fn stop_all(instances: Vec<Instance>) {
    for instance in instances {
        instance.stop().await;
    }
}

/// A version 3 session's refusal of a number bound to another key.
fn is_taken(m: &ServerToClient) -> bool {
    matches!(m, ServerToClient::Closed { code: CloseCode::NumberTaken, .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_instances_then_clients_find_and_watch_each_other_across_them() {
    let Some(redis) = Redis::start(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let i = three(&redis, &key).await;
    let (a, b, c, d) =
        (Account::new("1001"), Account::new("1002"), Account::new("1003"), Account::new("1004"));
    let _a = Session::online(i[0].addr, &a, 1001).await;
    let mut b_session = Session::online(i[1].addr, &b, 1002).await;
    let mut c_session = Session::online(i[2].addr, &c, 1003).await;
    assert_eq!(c_session.lookup(&a.number).await, Some(1001), "a on instance 0, seen from instance 2");
    assert_eq!(c_session.lookup(&b.number).await, Some(1002));
    assert_eq!(c_session.lookup(&d.number).await, None);

    c_session.watch(&[&a.number, &b.number, &d.number]).await;
    c_session.presence(&a.number, Some(1001)).await;
    c_session.presence(&b.number, Some(1002)).await;
    c_session.presence(&d.number, None).await;

    // Online on instance 0, heard on instance 2 within a second.
    let t0 = Instant::now();
    let mut d_session = Session::online(i[0].addr, &d, 1004).await;
    c_session.presence(&d.number, Some(1004)).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "push took {:?}", t0.elapsed());

    // Offline on instance 1.
    let t0 = Instant::now();
    b_session.send(&whatsap2p_proto::directory::ClientToServer::Logout).await;
    c_session.presence(&b.number, None).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "push took {:?}", t0.elapsed());

    // Moved: d registers again from another port on instance 1; its old session is replaced.
    let t0 = Instant::now();
    let _d2 = Session::online(i[1].addr, &d, 2004).await;
    c_session.presence(&d.number, Some(2004)).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "push took {:?}", t0.elapsed());
    assert_eq!(d_session.closed().await, REPLACED);
    stop_all(i).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_instances_racing_to_bind_a_number_then_exactly_one_key_wins_every_time() {
    let Some(redis) = Redis::start(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let (x, y) = (Instance::redis(&redis.url(), &key).await, Instance::redis(&redis.url(), &key).await);
    for round in 0..100 {
        let number = format!("77{round:04}");
        let (first, second) = (Account::new(&number), Account::new(&number));
        let race = |addr, account: Account| async move {
            let mut s = Session::connect(addr, &account).await;
            let answer = s.register(1).await;
            (matches!(answer, ServerToClient::Registered { .. }), is_taken(&answer), s, account)
        };
        let ((won_a, refused_a, sa, a), (won_b, refused_b, sb, b)) =
            tokio::join!(race(x.addr, first), race(y.addr, second));
        assert!(won_a != won_b && refused_a != refused_b, "round {round}: {won_a} {won_b}");
        // The loser stays refused, through either instance; the winner's number stays its own.
        let loser = if won_a { &b } else { &a };
        let mut again = Session::connect(if won_a { y.addr } else { x.addr }, loser).await;
        assert!(is_taken(&again.register(1).await), "round {round}: the loser got in later");
        drop((sa, sb));
    }
    x.stop().await;
    y.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_new_session_of_a_number_on_another_instance_then_the_old_one_is_replaced_and_never_shown_offline(
) {
    let Some(redis) = Redis::start(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let i = three(&redis, &key).await;
    let (a, w, marker) = (Account::new("2001"), Account::new("2002"), Account::new("2003"));
    let mut old = Session::online(i[0].addr, &a, 2001).await;
    // A session of the same number that never registers, on a third instance: it ends too.
    let mut idle = Session::connect(i[2].addr, &a).await;
    // The server has taken its handshake: the next session comes after it, not in a race with it.
    idle.heartbeat().await;
    let mut watcher = Session::online(i[2].addr, &w, 2002).await;
    watcher.watch(&[&a.number, &marker.number]).await;
    watcher.presence(&a.number, Some(2001)).await;
    watcher.presence(&marker.number, None).await;

    let _new = Session::online(i[1].addr, &a, 3001).await;
    assert_eq!(old.closed().await, REPLACED);
    assert_eq!(idle.closed().await, REPLACED);
    // The old session is gone: anything it published is before the marker's push.
    let _m = Session::online(i[0].addr, &marker, 2003).await;
    let seen = watcher.pushes_until(&a.number, &marker.number).await;
    assert_eq!(seen, vec![Some(3001)], "the watcher saw {seen:?}");
    assert_eq!(watcher.lookup(&a.number).await, Some(3001));
    assert!(i[0].metrics.render().contains("whatsap2p_refusals_total{reason=\"Replaced\"} 1"));
    stop_all(i).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_instance_that_dies_then_its_users_go_offline_within_the_heartbeat_timeout() {
    let Some(redis) = Redis::start(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    // The watcher's instance waits long for heartbeats: the watcher sends none while it waits.
    let patient = common::Config { heartbeat_timeout: Duration::from_secs(10), ..config() };
    let (x, y) =
        (Instance::redis(&redis.url(), &key).await, Instance::redis_with(&redis.url(), &key, patient).await);
    let (a, b, w) = (Account::new("3001"), Account::new("3002"), Account::new("3003"));
    let _a = Session::online(x.addr, &a, 3001).await;
    let _b = Session::online(x.addr, &b, 3002).await;
    let mut watcher = Session::online(y.addr, &w, 3003).await;
    watcher.watch(&[&a.number, &b.number]).await;
    watcher.presence(&a.number, Some(3001)).await;
    watcher.presence(&b.number, Some(3002)).await;

    let t0 = Instant::now();
    x.die().await;
    // b comes back at once on the surviving instance; a does not.
    let mut b_again = Session::online(y.addr, &b, 4002).await;
    watcher.presence(&b.number, Some(4002)).await;
    watcher.presence(&a.number, None).await;
    let took = t0.elapsed();
    assert!(took < config().heartbeat_timeout + Duration::from_secs(2), "offline after {took:?}");
    // Past the dead instance's expiry, b's new entry lives on: no offline push for b, ever.
    while t0.elapsed() < config().heartbeat_timeout * 2 {
        b_again.heartbeat().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let marker = Account::new("3004");
    watcher.watch(&[&marker.number]).await;
    assert_eq!(watcher.pushes_until(&b.number, &marker.number).await, Vec::<Option<u16>>::new());
    assert_eq!(watcher.lookup(&b.number).await, Some(4002));
    y.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_redis_restarted_with_aof_then_bindings_survive_and_an_impostor_is_refused() {
    let Some(mut redis) = Redis::start(true).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let (x, y) = (Instance::redis(&redis.url(), &key).await, Instance::redis(&redis.url(), &key).await);
    let a = Account::new("4001");
    let mut a_session = Session::online(x.addr, &a, 4001).await;
    redis.restart().await;
    let impostor = Account::new("4001");
    let t0 = Instant::now();
    loop {
        let mut s = Session::connect(y.addr, &impostor).await;
        match s.register(1).await {
            m if is_taken(&m) => break,
            ServerToClient::Closed { code: CloseCode::StoreUnavailable, .. } if t0.elapsed() < TIMEOUT => {
                // Still reconnecting to Redis: refused for that, not for the key. Try again.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("impostor: {other:?}"),
        }
    }
    // The owner's session lived through it, and is still found.
    a_session.heartbeat().await;
    let w = Account::new("4002");
    let mut w_session = Session::online(y.addr, &w, 4002).await;
    assert_eq!(w_session.lookup(&a.number).await, Some(4001));
    x.stop().await;
    y.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_redis_stopped_then_registrations_are_refused_sessions_stay_and_it_recovers() {
    let Some(mut redis) = Redis::start(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    // Sessions here wait through Redis's restart without heartbeats.
    let patient = common::Config { heartbeat_timeout: Duration::from_secs(8), ..config() };
    let x = Instance::redis_with(&redis.url(), &key, patient.clone()).await;
    let y = Instance::redis_with(&redis.url(), &key, patient).await;
    let (a, b, c, w) =
        (Account::new("5001"), Account::new("5002"), Account::new("5003"), Account::new("5004"));
    let mut a_session = Session::online(x.addr, &a, 5001).await;
    let mut c_session = Session::online(y.addr, &c, 5003).await;
    let mut watcher = Session::online(x.addr, &w, 5004).await;
    watcher.watch(&[&c.number]).await;
    watcher.presence(&c.number, Some(5003)).await;
    redis.kill().await;
    // c leaves while nothing can be published: its instance cannot tell anyone.
    c_session.send(&whatsap2p_proto::directory::ClientToServer::Logout).await;
    assert_eq!(c_session.closed().await, None);

    let mut b_session = Session::connect(x.addr, &b).await;
    match b_session.register(5002).await {
        ServerToClient::Closed { code: CloseCode::StoreUnavailable, .. } => {}
        other => panic!("registered without a store: {other:?}"),
    }
    // A version 2 client is told in words.
    let mut b_v2 = Session::connect_v2(y.addr, &b).await;
    match b_v2.register(5002).await {
        ServerToClient::Refused { reason } => assert!(reason.contains("store"), "{reason}"),
        other => panic!("registered without a store: {other:?}"),
    }
    // The established session stays: heartbeats answered, lookups answered with an error.
    a_session.heartbeat().await;
    a_session
        .send(&whatsap2p_proto::directory::ClientToServer::Lookup {
            req: 9,
            number: (&b.number).into(),
            intent: whatsap2p_proto::directory::LookupIntent::Ping,
        })
        .await;
    a_session.expect("an error", |m| matches!(m, ServerToClient::Error { req: Some(9), .. })).await;
    let render = x.metrics.render();
    assert!(render.contains("whatsap2p_store_up 0") || render.contains("StoreUnavailable"), "{render}");

    // Redis comes back empty (no AOF): registrations work again by themselves, and a's heartbeat
    // puts its presence back.
    redis.restart().await;
    let t0 = Instant::now();
    let mut b_session = loop {
        let mut s = Session::connect(x.addr, &b).await;
        match s.register(5002).await {
            ServerToClient::Registered { .. } => break s,
            _ if t0.elapsed() < TIMEOUT => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("still refused after {TIMEOUT:?}: {other:?}"),
        }
    };
    a_session.heartbeat().await;
    assert_eq!(b_session.lookup(&a.number).await, Some(5001));
    // The watcher missed c's goodbye; once the subscription is back it is told again.
    watcher.presence(&c.number, None).await;
    x.stop().await;
    y.stop().await;
}

#[tokio::test]
async fn given_one_instance_without_redis_then_a_second_session_of_a_number_replaces_the_first() {
    let key = StaticKeypair::generate().expect("key");
    let x = Instance::memory(&key).await;
    let (a, w, marker) = (Account::new("6001"), Account::new("6002"), Account::new("6003"));
    let mut old = Session::online(x.addr, &a, 6001).await;
    let mut watcher = Session::online(x.addr, &w, 6002).await;
    watcher.watch(&[&a.number, &marker.number]).await;
    watcher.presence(&a.number, Some(6001)).await;
    watcher.presence(&marker.number, None).await;
    let mut idle = Session::connect(x.addr, &a).await;
    // The server has taken its handshake: the next session comes after it, not in a race with it.
    idle.heartbeat().await;
    let _new = Session::online(x.addr, &a, 7001).await;
    assert_eq!(old.closed().await, REPLACED);
    assert_eq!(idle.closed().await, REPLACED);
    let _m = Session::online(x.addr, &marker, 6003).await;
    assert_eq!(watcher.pushes_until(&a.number, &marker.number).await, vec![Some(7001)]);
    assert_eq!(watcher.lookup(&a.number).await, Some(7001));
    x.stop().await;
}

#[tokio::test]
async fn given_many_lookups_in_flight_then_each_is_answered_once_in_order() {
    let key = StaticKeypair::generate().expect("key");
    let x = Instance::memory(&key).await;
    let (a, b) = (Account::new("8001"), Account::new("8002"));
    let _b = Session::online(x.addr, &b, 8002).await;
    let mut s = Session::online(x.addr, &a, 8001).await;
    // More than one batch's worth (64 answers per write), written before any answer is read.
    for req in 1..=200u32 {
        let wanted = if req % 2 == 0 { b.number.clone() } else { Account::new("8003").number };
        s.send(&whatsap2p_proto::directory::ClientToServer::Lookup {
            req,
            number: wanted.into(),
            intent: whatsap2p_proto::directory::LookupIntent::Address,
        })
        .await;
    }
    for want in 1..=200u32 {
        match s.next().await {
            Some(ServerToClient::LookupResult { req, online, .. }) => {
                assert_eq!(req, want);
                assert_eq!(online.map(|l| l.addr.port()), (want % 2 == 0).then_some(8002), "req {req}");
            }
            other => panic!("answer {want}: {other:?}"),
        }
    }
    assert!(x.metrics.render().contains("whatsap2p_lookups_total 200"));
    x.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_new_session_that_has_not_registered_then_the_number_stays_online_at_its_last_address_until_it_ends(
) {
    let Some(redis) = Redis::start(false).await else { return };
    let key = StaticKeypair::generate().expect("key");
    let i = three(&redis, &key).await;
    let (a, w) = (Account::new("9001"), Account::new("9002"));
    let mut old = Session::online(i[0].addr, &a, 9001).await;
    let mut watcher = Session::online(i[2].addr, &w, 9002).await;
    watcher.watch(&[&a.number]).await;
    watcher.presence(&a.number, Some(9001)).await;

    // Its handshake alone replaces the old session; the number is still where it last registered.
    let mut fresh = Session::connect(i[1].addr, &a).await;
    assert_eq!(old.closed().await, REPLACED);
    assert_eq!(watcher.lookup(&a.number).await, Some(9001));
    fresh.heartbeat().await;
    // It ends without registering: now the number is offline.
    fresh.send(&whatsap2p_proto::directory::ClientToServer::Logout).await;
    watcher.presence(&a.number, None).await;
    assert_eq!(watcher.lookup(&a.number).await, None);
    stop_all(i).await;
}
