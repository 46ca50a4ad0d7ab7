//! The version 3 handshake against a real directory on 127.0.0.1:0 (docs/protocol.md, section
//! 3.3), and the codes a version 3 session is closed with: clients speaking version 3, clients from
//! before it (the v2 Hello, byte for byte), and directories speaking only older or only newer
//! versions than their clients.

mod common;

use common::{config, hello, Account, Answer, Config, Ending, Instance, Session, REPLACED};
use whatsap2p_link::StaticKeypair;
use whatsap2p_proto::directory::{CloseCode, ServerToClient};
use whatsap2p_proto::handshake::{Hello, Purpose, ServerHello};
use whatsap2p_proto::version::{self, NoCommonVersion, Versions};

fn range(lowest: u16, highest: u16) -> Versions {
    Versions::new(lowest, highest).expect("range")
}

/// A directory speaking only `versions`.
async fn directory(versions: Versions) -> Instance {
    let key = StaticKeypair::generate().expect("key");
    Instance::memory_with(&key, Config { versions, ..config() }).await
}

fn v3_hello(versions: Versions) -> Vec<u8> {
    version::hello(Purpose::Directory, versions).expect("hello")
}

fn v2_hello() -> Vec<u8> {
    whatsap2p_proto::encode(&Hello { version: 2, purpose: Purpose::Directory }).expect("hello")
}

const HEARTBEAT_MS: u64 = 2000;

#[tokio::test]
async fn given_clients_of_both_versions_then_each_is_served_in_its_own_layout() {
    let x = directory(version::SPOKEN).await;
    let (a, b) = (Account::new("8001"), Account::new("8002"));
    let (_, answer) = hello(x.addr, &a, &v3_hello(version::SPOKEN), version::SPOKEN).await;
    let agreed = ServerHello { version: 4, heartbeat_timeout_ms: HEARTBEAT_MS };
    assert_eq!(answer, Answer::V3(Ok(4), Some(agreed)));
    // A client from before version 3: exactly the bytes it sends, exactly the message 2 it reads.
    assert_eq!(v2_hello(), [2, 0]);
    let (_, answer) = hello(x.addr, &b, &v2_hello(), Versions::only(2)).await;
    assert_eq!(answer, Answer::V2(ServerHello { version: 2, heartbeat_timeout_ms: HEARTBEAT_MS }));
    // And each gets a session that works: they find each other. A client of version 3 is
    // served one message a frame, as before version 4.
    let c = Account::new("8003");
    let mut a4 = Session::online(x.addr, &a, 8001).await;
    let mut b2 = Session::connect_v2(x.addr, &b).await;
    let mut c3 = Session::connect_v3(x.addr, &c).await;
    assert!(matches!(b2.register(8002).await, ServerToClient::Registered { .. }));
    assert!(matches!(c3.register(8003).await, ServerToClient::Registered { .. }));
    assert_eq!(a4.lookup(&b.number).await, Some(8002));
    assert_eq!(b2.lookup(&a.number).await, Some(8001));
    assert_eq!(c3.lookup(&a.number).await, Some(8001));
    assert_eq!(a4.lookup(&c.number).await, Some(8003));
    x.stop().await;
}

#[tokio::test]
async fn given_a_number_bound_to_another_key_then_a_v3_client_gets_a_code_and_a_v2_client_words() {
    let x = directory(version::SPOKEN).await;
    let owner = Account::new("8101");
    let _owner = Session::online(x.addr, &owner, 8101).await;
    let mut v3 = Session::connect(x.addr, &Account::new("8101")).await;
    match v3.register(1).await {
        ServerToClient::Closed { code: CloseCode::NumberTaken, .. } => {}
        other => panic!("a v3 impostor got {other:?}"),
    }
    assert_eq!(v3.closed().await, None, "nothing after the code");
    let mut v2 = Session::connect_v2(x.addr, &Account::new("8101")).await;
    match v2.register(1).await {
        ServerToClient::Refused { reason } => assert!(reason.contains("another key"), "{reason}"),
        other => panic!("a v2 impostor got {other:?}"),
    }
    x.stop().await;
}

#[tokio::test]
async fn given_a_directory_shutting_down_then_v3_sessions_are_told_and_v2_ones_just_closed() {
    let x = directory(version::SPOKEN).await;
    let mut v3 = Session::online(x.addr, &Account::new("8201"), 8201).await;
    let mut v2 = Session::connect_v2(x.addr, &Account::new("8202")).await;
    assert!(matches!(v2.register(8202).await, ServerToClient::Registered { .. }));
    x.stop().await;
    assert_eq!(v3.closed().await, Some(Ending::Closed(CloseCode::Shutdown)));
    assert_eq!(v2.closed().await, None);
}

#[tokio::test]
async fn given_a_v2_session_replaced_then_it_is_still_told_with_the_code() {
    let x = directory(version::SPOKEN).await;
    let a = Account::new("8301");
    let mut old = Session::connect_v2(x.addr, &a).await;
    assert!(matches!(old.register(8301).await, ServerToClient::Registered { .. }));
    let _new = Session::online(x.addr, &a, 8302).await;
    // A version 2 client skips the kind it does not know and sees the connection closed.
    assert_eq!(old.closed().await, REPLACED);
    x.stop().await;
}

#[tokio::test]
async fn given_a_directory_speaking_only_newer_versions_then_clients_of_either_form_learn_its_range() {
    let x = directory(range(4, 5)).await;
    let a = Account::new("8401");
    let (mut hs, answer) = hello(x.addr, &a, &v3_hello(range(2, 3)), range(2, 3)).await;
    let none = NoCommonVersion { ours: range(2, 3), theirs: range(4, 5) };
    assert_eq!(answer, Answer::V3(Err(none.clone()), None));
    assert_eq!(
        none.to_string(),
        "no protocol version in common: this side speaks versions 2 to 3, the other side speaks versions 4 to 5"
    );
    assert!(hs.recv().await.is_err(), "the directory closes after telling");
    // A version 2 client reads a ServerHello naming the directory's version, then the close.
    let (mut hs, answer) = hello(x.addr, &a, &v2_hello(), Versions::only(2)).await;
    assert_eq!(answer, Answer::V2(ServerHello { version: 5, heartbeat_timeout_ms: HEARTBEAT_MS }));
    assert!(hs.recv().await.is_err(), "the directory closes after telling");
    x.stop().await;
}

#[tokio::test]
async fn given_a_directory_speaking_only_older_versions_then_newer_clients_learn_its_range_and_others_agree()
{
    let x = directory(Versions::only(2)).await;
    let a = Account::new("8501");
    let (_, answer) = hello(x.addr, &a, &v3_hello(range(3, 4)), range(3, 4)).await;
    assert_eq!(
        answer,
        Answer::V3(Err(NoCommonVersion { ours: range(3, 4), theirs: Versions::only(2) }), None)
    );
    // A client speaking 2 to 3 agrees on 2 with it.
    let (_, answer) = hello(x.addr, &a, &v3_hello(range(2, 3)), range(2, 3)).await;
    let v2 = ServerHello { version: 2, heartbeat_timeout_ms: HEARTBEAT_MS };
    assert_eq!(answer, Answer::V3(Ok(2), Some(v2)));
    x.stop().await;
}
