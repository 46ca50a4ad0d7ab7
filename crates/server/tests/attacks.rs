//! Attacks on the directory from issue 16, each written as the attacker would run it, against an
//! instance in this process on 127.0.0.1:0 over real sockets: one address filling the session
//! slots, half-open handshakes, squatting numbers, enumerating who is online. Each checks that the
//! attacker is stopped, told why and when to retry, and that everyone else is still served.
//!
//! The limits are set small so each attack takes a few dozen requests; 127.0.0.2 is a second source
//! address (loopback answers every 127/8 address).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{hello_from, Account, Answer, Config, Ending, Instance, Session, TIMEOUT};
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::directory::{ClientToServer, CloseCode, LimitKind, LookupIntent, ServerToClient};
use whatsap2p_proto::handshake::Purpose;
use whatsap2p_proto::nat::RelayReason;
use whatsap2p_proto::version;
use whatsap2p_proto::Number;
use whatsap2p_server::config::Limits;
use whatsap2p_server::limits::DAY;

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const NEIGHBOUR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

async fn directory(limits: Limits) -> Instance {
    let key = StaticKeypair::generate().expect("server key");
    Instance::memory_with(&key, Config { limits, ..common::config() }).await
}

/// Whether a connection from `from` gets through the handshake (a refused one is closed at once).
async fn handshake_answered(from: IpAddr, server: &Instance, account: &Account) -> bool {
    let v3 = version::hello(Purpose::Directory, version::SPOKEN).expect("hello");
    let (_hs, answer) = hello_from(Some(from), server.addr, account, &v3, version::SPOKEN).await;
    !matches!(answer, Answer::Closed)
}

/// Waits until a connection from `from` is served again (its address's slots come back when the
/// server has finished closing the sessions that held them).
async fn served_again(from: IpAddr, server: &Instance) {
    let account = Account::new("5559999");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !handshake_answered(from, server, &account).await {
        assert!(tokio::time::Instant::now() < deadline, "{from} never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a counter in the instance's metrics.
fn refusals(server: &Instance, reason: &str) -> u64 {
    let text = server.metrics.render();
    let prefix = format!("whatsap2p_refusals_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().expect("a count"))
}

fn n(s: &str) -> Number {
    Number::new(s).expect("number")
}

/// Attack 2: one address holds sessions alive to fill the instance.
#[tokio::test]
async fn given_one_address_at_its_session_limit_then_it_is_refused_and_another_address_is_served() {
    let server = directory(Limits { sessions_per_address: 5, ..Limits::default() }).await;
    let mut held = Vec::new();
    for i in 0..5 {
        let account = Account::new(&format!("555000{i}"));
        let mut s = Session::connect_from(ATTACKER, server.addr, &account).await;
        assert!(matches!(s.register(40000 + i).await, ServerToClient::Registered { .. }));
        held.push(s);
    }
    let sixth = Account::new("5550006");
    assert!(!handshake_answered(ATTACKER, &server, &sixth).await, "a sixth connection from one address");
    assert_eq!(refusals(&server, "SessionsPerAddress"), 1);

    // Someone behind another address comes online and is found, while the five stay.
    let neighbour = Account::new("5550100");
    let mut s = Session::connect_from(NEIGHBOUR, server.addr, &neighbour).await;
    assert!(matches!(s.register(41000).await, ServerToClient::Registered { .. }));
    assert_eq!(s.lookup(&n("5550000")).await, Some(40000));
    held[4].heartbeat().await;

    // One of the five leaves: its address may connect again.
    held.pop().expect("a session").send(&ClientToServer::Logout).await;
    served_again(ATTACKER, &server).await;
    server.stop().await;
}

/// Attack 2: connections that never finish their handshake hold an address's handshake slots,
/// and only that address's.
#[tokio::test]
async fn given_half_open_handshakes_from_one_address_then_other_addresses_still_come_online() {
    let limits = Limits { handshakes_per_address: 4, ..Limits::default() };
    let key = StaticKeypair::generate().expect("server key");
    let config = Config { limits, handshake_timeout: Duration::from_secs(60), ..common::config() };
    let server = Instance::memory_with(&key, config).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(common::dial_from(Some(ATTACKER), server.addr).await.expect("connect"));
    }
    // Accepted in order: the first four hold the slots, the rest and this one are refused.
    assert!(!handshake_answered(ATTACKER, &server, &Account::new("5550001")).await);
    assert_eq!(refusals(&server, "HandshakesPerAddress"), 17);

    let neighbour = Account::new("5550100");
    let mut s = Session::connect_from(NEIGHBOUR, server.addr, &neighbour).await;
    assert!(matches!(s.register(41000).await, ServerToClient::Registered { .. }));

    // The half-open connections go: their address is served again.
    drop(silent);
    served_again(ATTACKER, &server).await;
    assert_eq!(s.lookup(&n("5550100")).await, Some(41000));
    server.stop().await;
}

/// Attack 3: a handshake alone no longer binds a number; registrations of new numbers from one
/// address are limited per day, and the real owners, elsewhere, still register theirs.
#[tokio::test]
async fn given_a_squatter_then_handshakes_bind_nothing_and_its_new_numbers_are_limited_per_day() {
    let server = directory(Limits { new_numbers_per_address_per_day: 3, ..Limits::default() }).await;

    // The squatter proves the owner's number with its own key and sits on the session.
    let mut squatter = Session::connect_from(ATTACKER, server.addr, &Account::new("5550100")).await;
    squatter.heartbeat().await;
    // The owner arrives later, from elsewhere, and registers: the number is theirs.
    let owner = Account::new("5550100");
    let mut owner_session = Session::connect_from(NEIGHBOUR, server.addr, &owner).await;
    assert!(matches!(owner_session.register(41000).await, ServerToClient::Registered { .. }));
    // The squatter's registration now finds it taken (and costs one of its address's new numbers).
    squatter.send(&ClientToServer::Register { listen: "127.0.0.1:40000".parse().expect("addr") }).await;
    assert_eq!(squatter.closed().await, Some(Ending::Closed(CloseCode::NumberTaken)));

    // It registers fresh numbers from its address: two more pass, the next is limited.
    let mut registered = Vec::new();
    for i in 1..=2 {
        let mut s = Session::connect_from(ATTACKER, server.addr, &Account::new(&format!("555020{i}"))).await;
        assert!(matches!(s.register(40000).await, ServerToClient::Registered { .. }), "new number {i}");
        registered.push(s);
    }
    let mut limited = Session::connect_from(ATTACKER, server.addr, &Account::new("5550299")).await;
    match limited.register(40000).await {
        ServerToClient::Limited { req: None, limit: LimitKind::NewNumbers, retry_after_ms } => {
            let period = (DAY / 3).as_millis() as u32;
            assert!(retry_after_ms > period - 60_000 && retry_after_ms <= period, "{retry_after_ms}");
        }
        other => panic!("a fourth new number from one address got {other:?}"),
    }
    // Its session stays, unregistered, and the number stays free: its owner takes it.
    limited.heartbeat().await;
    assert_eq!(limited.lookup(&n("5550201")).await, Some(40000));
    let real = Account::new("5550299");
    let mut real_session = Session::connect_from(NEIGHBOUR, server.addr, &real).await;
    assert!(matches!(real_session.register(41001).await, ServerToClient::Registered { .. }));
    assert_eq!(refusals(&server, "NewNumbers"), 1);

    // A version 2 session is told in words.
    let v2_account = Account::new("5550298");
    let mut v2 = Session::connect_v2(server.addr, &v2_account).await;
    match v2.register(40000).await {
        ServerToClient::Error { req: None, message } => {
            assert!(message.contains("registrations of new numbers per address per day"), "{message}");
            assert!(message.contains("retry in"), "{message}");
        }
        other => panic!("a version 2 session got {other:?}"),
    }
    v2.heartbeat().await;
    registered[0].heartbeat().await;
    server.stop().await;
}

/// Sends `count` lookups of `number` at once; returns the answers in order.
async fn lookups(s: &mut Session, first_req: u32, numbers: &[Number]) -> Vec<ServerToClient> {
    for (i, number) in numbers.iter().enumerate() {
        let req = first_req + i as u32;
        s.send(&ClientToServer::Lookup { req, number: number.into(), intent: LookupIntent::Ping }).await;
    }
    let mut answers = Vec::new();
    while answers.len() < numbers.len() {
        answers.push(s.next().await.expect("an answer"));
    }
    answers
}

/// Attack 4: one session looks numbers up as fast as it can.
#[tokio::test]
async fn given_an_enumerator_then_lookups_per_second_are_limited_with_a_retry_time_and_the_session_stays() {
    let server = directory(Limits { lookups_per_second: 1, ..Limits::default() }).await;
    let target = Account::new("5550100");
    let _online = Session::online(server.addr, &target, 41000).await;
    let mut enumerator = Session::connect_from(ATTACKER, server.addr, &Account::new("5550666")).await;

    let answers = lookups(&mut enumerator, 1, &vec![n("5550100"); 80]).await;
    let (mut served, mut retry) = (0, Duration::ZERO);
    for (i, a) in answers.iter().enumerate() {
        match a {
            ServerToClient::LookupResult { req, .. } if *req == 1 + i as u32 => served += 1,
            ServerToClient::Limited { req: Some(req), limit: LimitKind::LookupRate, retry_after_ms }
                if *req == 1 + i as u32 =>
            {
                assert!((1..=1000).contains(retry_after_ms), "{retry_after_ms}");
                retry = Duration::from_millis((*retry_after_ms).into());
            }
            other => panic!("lookup {i} got {other:?}"),
        }
    }
    // A burst of a minute's worth, and perhaps one more as a second passes.
    assert!((60..63).contains(&served), "{served} served");
    // The session stays, and is served again after the time it was told.
    enumerator.heartbeat().await;
    tokio::time::sleep(retry).await;
    assert_eq!(enumerator.lookup(&n("5550100")).await, Some(41000));
    assert!(refusals(&server, "LookupRate") >= 17);
    server.stop().await;
}

/// Attack 4: an enumerator walks through numbers, with one number, then with fresh numbers from
/// the same address, then with a watch list.
#[tokio::test]
async fn given_an_enumerator_then_distinct_numbers_per_day_are_limited_per_number_and_per_address() {
    let limits =
        Limits { distinct_lookups_per_day: 30, address_distinct_lookups_per_day: 50, ..Limits::default() };
    let server = directory(limits).await;
    let range = |from: u32, to: u32| (from..to).map(|i| n(&format!("55{i:05}"))).collect::<Vec<_>>();

    let mut first = Session::connect_from(ATTACKER, server.addr, &Account::new("5550666")).await;
    let answers = lookups(&mut first, 1, &range(0, 31)).await;
    assert!(answers[..30].iter().all(|a| matches!(a, ServerToClient::LookupResult { .. })));
    match &answers[30] {
        ServerToClient::Limited { req: Some(31), limit: LimitKind::DistinctLookups, retry_after_ms } => {
            let day = DAY.as_millis() as u32;
            assert!(*retry_after_ms > day - 60_000 && *retry_after_ms <= day, "{retry_after_ms}");
        }
        other => panic!("a 31st distinct number got {other:?}"),
    }
    // Numbers it already looked up today are still answered: a user's contacts cost nothing more.
    let again = lookups(&mut first, 100, &range(0, 30)).await;
    assert!(again.iter().all(|a| matches!(a, ServerToClient::LookupResult { .. })));

    // A fresh number from the same address gets what is left of the address's 50.
    let mut second = Session::connect_from(ATTACKER, server.addr, &Account::new("5550667")).await;
    let answers = lookups(&mut second, 1, &range(100, 125)).await;
    let served = answers.iter().filter(|a| matches!(a, ServerToClient::LookupResult { .. })).count();
    assert_eq!(served, 20);
    assert!(matches!(answers[20], ServerToClient::Limited { limit: LimitKind::DistinctLookups, .. }));

    // A watch list is limited the same way: the numbers within the limit are watched, then one
    // Limited for the rest.
    let mut third = Session::connect_from(NEIGHBOUR, server.addr, &Account::new("5550668")).await;
    third.watch(&range(200, 240).iter().collect::<Vec<_>>()).await;
    let mut presences = 0;
    loop {
        match third.next().await.expect("an answer") {
            ServerToClient::Presence { .. } => presences += 1,
            ServerToClient::Limited { req: None, limit: LimitKind::DistinctLookups, .. } => break,
            other => panic!("watching got {other:?}"),
        }
    }
    assert_eq!(presences, 30);
    third.heartbeat().await;
    first.heartbeat().await;
    server.stop().await;
}

/// An `Introduce` or a `RelayRequest`, whose answer is `Limited`, `Introduction`, `RelayOffer` or
/// `Error`.
fn meeting(req: u32, number: &Number, relay: bool) -> ClientToServer {
    let number = number.into();
    if relay {
        ClientToServer::RelayRequest { req, number, reason: RelayReason::PunchTimedOut }
    } else {
        ClientToServer::Introduce { req, number }
    }
}

/// Sends `msgs` at once; returns the answers in order.
async fn answers(s: &mut Session, msgs: &[ClientToServer]) -> Vec<ServerToClient> {
    for m in msgs {
        s.send(m).await;
    }
    let mut answers = Vec::new();
    while answers.len() < msgs.len() {
        answers.push(s.next().await.expect("an answer"));
    }
    answers
}

/// The value of a meetings counter in the instance's metrics.
fn meetings(server: &Instance, result: &str) -> u64 {
    let text = server.metrics.render();
    let prefix = format!("whatsap2p_meetings_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().expect("a count"))
}

/// Attack 4, around the lookups: an introduction or a relay offer says whether a number is online
/// (and where) as a lookup does, so an enumerator asks for those instead. They take from the same
/// distinct numbers per day: past it, no answer says anything about a number, and its session is
/// never told; the numbers already looked up today are still introduced.
#[tokio::test]
async fn given_an_enumerator_asking_for_introductions_and_relays_then_they_count_as_distinct_lookups() {
    let limits = Limits { distinct_lookups_per_day: 6, ..Limits::default() };
    let key = StaticKeypair::generate().expect("server key");
    let relay = "0.0.0.0:7001".parse().expect("addr");
    let server = Instance::memory_with(&key, Config { limits, relay: Some(relay), ..common::config() }).await;
    let mut first = Session::online(server.addr, &Account::new("5550100"), 41000).await;
    let mut hidden = Session::online(server.addr, &Account::new("5550105"), 41005).await;
    let mut contact = Session::online(server.addr, &Account::new("5550109"), 41009).await;

    let mut enumerator = Session::connect_from(ATTACKER, server.addr, &Account::new("5550666")).await;
    // Two lookups (the second of an offline number), then introductions and relay requests in
    // turn through the range.
    let range: Vec<Number> = (100..110).map(|i| n(&format!("5550{i}"))).collect();
    let mut msgs = vec![
        ClientToServer::Lookup { req: 1, number: (&range[9]).into(), intent: LookupIntent::Ping },
        ClientToServer::Lookup { req: 2, number: (&range[8]).into(), intent: LookupIntent::Ping },
    ];
    msgs.extend(range.iter().enumerate().map(|(i, number)| meeting(10 + i as u32, number, i % 2 == 1)));
    let got = answers(&mut enumerator, &msgs).await;
    assert!(matches!(got[..2], [ServerToClient::LookupResult { .. }, ServerToClient::LookupResult { .. }]));
    // The first four numbers: 5550100 is online and introduced, the others are not.
    assert!(matches!(got[2], ServerToClient::Introduction { req: 10, .. }), "{:?}", got[2]);
    for (a, req) in got[3..6].iter().zip(11..) {
        assert!(matches!(a, ServerToClient::Error { req: Some(r), .. } if *r == req), "{a:?}");
    }
    // Then nothing about 5550104..5550107, 5550105 online among them: limited, with the time left
    // in the day.
    for (a, req) in got[6..10].iter().zip(14..) {
        match a {
            ServerToClient::Limited { req: Some(r), limit: LimitKind::DistinctLookups, retry_after_ms }
                if *r == req =>
            {
                let day = DAY.as_millis() as u32;
                assert!(*retry_after_ms > day - 60_000 && *retry_after_ms <= day, "{retry_after_ms}");
            }
            other => panic!("a fresh number past the limit got {other:?}"),
        }
    }
    // The numbers it looked up are still served: 5550108 is offline, 5550109 gets its relay offer.
    assert!(matches!(got[10], ServerToClient::Error { req: Some(18), .. }), "{:?}", got[10]);
    assert!(matches!(got[11], ServerToClient::RelayOffer { req: Some(19), .. }), "{:?}", got[11]);
    first.expect("the introduction", |m| matches!(m, ServerToClient::Introduced { .. })).await;
    contact.expect("the relay offer", |m| matches!(m, ServerToClient::RelayOffer { req: None, .. })).await;
    // The session past the limit was told nothing (each push is counted when made).
    assert_eq!((meetings(&server, "Introduced"), meetings(&server, "RelayOffered")), (1, 1));
    hidden.send(&ClientToServer::Heartbeat).await;
    let first_told = hidden.next().await.expect("the heartbeat's answer");
    assert_eq!(first_told, ServerToClient::HeartbeatAck, "5550105 was told of the enumerator");
    assert_eq!(refusals(&server, "DistinctLookups"), 4);
    enumerator.heartbeat().await;
    server.stop().await;
}

/// The same enumerator, faster than the lookups per second: introductions and relay requests take
/// from the same rate as lookups, and a lookup after them is limited.
#[tokio::test]
async fn given_introductions_and_relay_requests_then_they_take_from_the_lookup_rate() {
    let server = directory(Limits { lookups_per_second: 1, ..Limits::default() }).await;
    let target = Account::new("5550100");
    let _online = Session::online(server.addr, &target, 41000).await;
    let mut enumerator = Session::connect_from(ATTACKER, server.addr, &Account::new("5550666")).await;
    // A burst of a minute's worth at 1 a second, 60, half of it in meetings (at most 60 a minute
    // on their own), then lookups past it.
    let mut msgs: Vec<ClientToServer> = (0..30).map(|i| meeting(1 + i, &target.number, i % 2 == 1)).collect();
    let lookup =
        |req| ClientToServer::Lookup { req, number: (&target.number).into(), intent: LookupIntent::Ping };
    msgs.extend((31..=40).map(lookup));
    msgs.extend((41..=50).map(|i| meeting(i, &target.number, false)));
    msgs.extend((51..=80).map(lookup));
    let got = answers(&mut enumerator, &msgs).await;
    let limited = got
        .iter()
        .filter(|a| matches!(a, ServerToClient::Limited { limit: LimitKind::LookupRate, .. }))
        .count();
    // 80 asked; a burst of 60, and perhaps one or two more as seconds pass.
    assert!((18..=20).contains(&limited), "{limited} limited: {got:?}");
    assert!(got[..30].iter().all(|a| !matches!(a, ServerToClient::Limited { .. })), "{got:?}");
    assert!(matches!(got[79], ServerToClient::Limited { req: Some(80), limit: LimitKind::LookupRate, .. }));
    assert_eq!(refusals(&server, "LookupRate") as usize, limited);
    enumerator.heartbeat().await;
    server.stop().await;
}
