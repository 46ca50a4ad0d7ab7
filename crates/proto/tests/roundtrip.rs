//! Property tests: every wire type survives encode → decode, and no input makes a decoder panic.

use std::net::SocketAddr;

use proptest::prelude::*;
use whatsap2p_proto::chunk::{view_chunk, write_chunk_header, MAX_CHUNK_HEADER_LEN};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{
    ClientToServer, CloseCode, LimitKind, Location, LookupIntent, ServerToClient,
};
use whatsap2p_proto::handshake::Hello;
use whatsap2p_proto::nat::{
    decode_datagram, encode_datagram, Candidate, Datagram, NatKind, RelayReason, Source, Transport,
    MAX_CANDIDATES,
};
use whatsap2p_proto::peer::{FileFailCode, PeerMessage};
use whatsap2p_proto::{decode, encode, DecodeError, IdentityProof, MessageId, Number, PublicKey, WireNumber};

fn number() -> impl Strategy<Value = Number> {
    "[0-9]{3,15}".prop_map(|s| Number::new(&s).expect("generated number"))
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)))
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (any::<u32>(), addr(), any::<u32>()).prop_map(|(transport, addr, source)| Candidate {
        transport: Transport::from_code(transport % 3),
        addr,
        source: Source::from_code(source % 3),
    })
}

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    proptest::collection::vec(candidate(), 0..=MAX_CANDIDATES)
}

fn nat() -> impl Strategy<Value = NatKind> {
    (0u32..7).prop_map(NatKind::from_code)
}

fn client_msg() -> impl Strategy<Value = ClientToServer> {
    prop_oneof![
        addr().prop_map(|listen| ClientToServer::Register { listen }),
        (any::<u32>(), ".{0,20}").prop_map(|(req, number)| ClientToServer::Lookup {
            req,
            number: WireNumber::new(number),
            intent: LookupIntent::Ping
        }),
        Just(ClientToServer::Heartbeat),
        Just(ClientToServer::Logout),
        proptest::collection::vec(".{0,20}".prop_map(WireNumber::new), 0..5)
            .prop_map(|numbers| ClientToServer::Watch { numbers }),
        (candidates(), nat()).prop_map(|(candidates, nat)| ClientToServer::Announce { candidates, nat }),
        (any::<u32>(), ".{0,20}")
            .prop_map(|(req, number)| ClientToServer::Introduce { req, number: WireNumber::new(number) }),
        (any::<u32>(), ".{0,20}", 0u32..6).prop_map(|(req, number, reason)| ClientToServer::RelayRequest {
            req,
            number: WireNumber::new(number),
            reason: RelayReason::from_code(reason)
        }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerToClient> {
    prop_oneof![
        addr().prop_map(|listen| ServerToClient::Registered { listen }),
        ".{0,40}".prop_map(|reason| ServerToClient::Refused { reason }),
        (
            any::<u32>(),
            number(),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of((addr(), any::<u64>()))
        )
            .prop_map(|(req, number, key, online)| ServerToClient::LookupResult {
                req,
                number,
                key: key.map(PublicKey),
                online: online.map(|(addr, since_unix_ms)| Location { addr, since_unix_ms }),
            }),
        Just(ServerToClient::HeartbeatAck),
        (proptest::option::of(any::<u32>()), ".{0,40}")
            .prop_map(|(req, message)| ServerToClient::Error { req, message }),
        (number(), proptest::option::of(any::<[u8; 32]>()), proptest::option::of((addr(), any::<u64>())))
            .prop_map(|(number, key, online)| ServerToClient::Presence {
                number,
                key: key.map(PublicKey),
                online: online.map(|(addr, since_unix_ms)| Location { addr, since_unix_ms }),
            }),
        (any::<u32>(), ".{0,40}")
            .prop_map(|(code, reason)| ServerToClient::Closed { code: CloseCode::from_code(code), reason }),
        (any::<[u8; 16]>(), proptest::option::of(any::<u16>()), proptest::option::of(addr()))
            .prop_map(|(token, udp_port, relay)| ServerToClient::Reachability { token, udp_port, relay }),
        (any::<u32>(), number(), candidates(), nat()).prop_map(|(req, number, candidates, nat)| {
            ServerToClient::Introduction { req, number, candidates, nat }
        }),
        (number(), candidates(), nat()).prop_map(|(from, candidates, nat)| ServerToClient::Introduced {
            from,
            candidates,
            nat
        }),
        (
            proptest::option::of(any::<u32>()),
            number(),
            addr(),
            proptest::collection::vec(any::<u8>(), 0..200),
            0u32..6
        )
            .prop_map(|(req, number, relay, ticket, reason)| ServerToClient::RelayOffer {
                req,
                number,
                relay,
                ticket,
                reason: RelayReason::from_code(reason)
            }),
        (proptest::option::of(any::<u32>()), 0u32..5, any::<u32>()).prop_map(
            |(req, limit, retry_after_ms)| {
                ServerToClient::Limited { req, limit: LimitKind::from_code(limit), retry_after_ms }
            }
        ),
    ]
}

fn datagram() -> impl Strategy<Value = Datagram> {
    prop_oneof![
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(token, nonce)| Datagram::ProbeRequest { token, nonce }),
        (any::<u64>(), addr()).prop_map(|(nonce, observed)| Datagram::ProbeReply { nonce, observed }),
        any::<u64>().prop_map(|nonce| Datagram::Punch { nonce }),
    ]
}

fn peer_msg() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![
        (any::<[u8; 16]>(), any::<u64>(), ".{0,200}").prop_map(|(id, sent_at_ms, text)| PeerMessage::Text {
            id: MessageId(id),
            sent_at_ms,
            text
        }),
        any::<[u8; 16]>().prop_map(|id| PeerMessage::Ack { id: MessageId(id) }),
        any::<[u8; 16]>().prop_map(|id| PeerMessage::Read { id: MessageId(id) }),
        (any::<[u8; 16]>(), ".{0,64}", any::<u64>(), "[a-z/]{0,20}", any::<[u8; 32]>()).prop_map(
            |(id, name, size, media_type, blake3)| PeerMessage::FileOffer {
                id: MessageId(id),
                name,
                size,
                media_type,
                blake3
            }
        ),
        (any::<[u8; 16]>(), any::<u64>())
            .prop_map(|(id, offset)| PeerMessage::FileAccept { id: MessageId(id), offset }),
        (any::<[u8; 16]>(), ".{0,40}")
            .prop_map(|(id, reason)| PeerMessage::FileRefuse { id: MessageId(id), reason }),
        (any::<[u8; 16]>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..2000))
            .prop_map(|(id, offset, data)| PeerMessage::FileChunk { id: MessageId(id), offset, data }),
        (any::<[u8; 16]>(), any::<u64>())
            .prop_map(|(id, received)| PeerMessage::FileProgress { id: MessageId(id), received }),
        any::<[u8; 16]>().prop_map(|id| PeerMessage::FileReceived { id: MessageId(id) }),
        (any::<[u8; 16]>(), ".{0,40}")
            .prop_map(|(id, reason)| PeerMessage::FileFailed { id: MessageId(id), reason }),
        (any::<[u8; 16]>(), any::<u32>(), ".{0,40}").prop_map(|(id, code, reason)| PeerMessage::FileAbort {
            id: MessageId(id),
            code: FileFailCode::from_code(code),
            reason
        }),
        any::<[u8; 16]>().prop_map(|id| PeerMessage::Pending { id: MessageId(id) }),
        any::<[u8; 16]>().prop_map(|id| PeerMessage::Accepted { id: MessageId(id) }),
    ]
}

proptest! {
    #[test]
    fn datagram_round_trips(d in datagram()) {
        prop_assert_eq!(decode_datagram(&encode_datagram(&d).expect("encode")), Ok(d));
    }

    #[test]
    fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = decode_datagram(&bytes);
    }

    #[test]
    fn client_to_server_round_trips(m in client_msg()) {
        prop_assert_eq!(decode::<ClientToServer>(&encode(&m).expect("encode")), Ok(m));
    }

    #[test]
    fn server_to_client_round_trips(m in server_msg()) {
        prop_assert_eq!(decode::<ServerToClient>(&encode(&m).expect("encode")), Ok(m));
    }

    #[test]
    fn peer_message_round_trips(m in peer_msg()) {
        prop_assert_eq!(decode::<PeerMessage>(&encode(&m).expect("encode")), Ok(m));
    }

    #[test]
    fn every_message_reads_in_place_as_a_chunk_exactly_when_it_is_one(m in peer_msg()) {
        let frame = encode(&m).expect("encode");
        match (&m, view_chunk(&frame)) {
            (PeerMessage::FileChunk { id, offset, data }, Some(Ok(view))) => {
                prop_assert_eq!((view.id, view.offset, &frame[view.data]), (*id, *offset, &data[..]));
            }
            (PeerMessage::FileChunk { .. }, other) => prop_assert!(false, "chunk read as {:?}", other),
            (_, None) => {}
            (_, Some(view)) => prop_assert!(false, "{:?} read as a chunk {:?}", m, view),
        }
    }

    #[test]
    fn a_chunk_header_and_its_bytes_are_the_encoded_chunk(
        id in any::<[u8; 16]>(),
        offset in any::<u64>(),
        data in proptest::collection::vec(any::<u8>(), 0..3000),
    ) {
        let mut frame = vec![0u8; MAX_CHUNK_HEADER_LEN + data.len()];
        let header = write_chunk_header(&mut frame, MessageId(id), offset, data.len()).expect("header");
        frame.truncate(header);
        frame.extend_from_slice(&data);
        let m = PeerMessage::FileChunk { id: MessageId(id), offset, data };
        prop_assert_eq!(frame, encode(&m).expect("encode"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = view_chunk(&bytes);
        let _ = decode::<ClientToServer>(&bytes);
        let _ = decode::<ServerToClient>(&bytes);
        let _ = decode::<PeerMessage>(&bytes);
        let _ = decode_struct::<Hello>(&bytes);
        let _ = decode_struct::<IdentityProof>(&bytes);
    }
}

#[test]
fn given_unknown_variant_then_reported_as_unknown_not_malformed() {
    assert_eq!(decode::<PeerMessage>(&[99, 1, 2, 3]), Err(DecodeError::UnknownVariant(99)));
}

#[test]
fn given_trailing_bytes_then_refused() {
    let mut b = encode(&ClientToServer::Heartbeat).expect("encode");
    b.push(0);
    assert_eq!(decode::<ClientToServer>(&b), Err(DecodeError::Trailing(1)));
}

#[test]
fn given_full_file_chunk_then_it_fits_in_one_frame() {
    let m = PeerMessage::FileChunk {
        id: MessageId::new(),
        offset: u64::MAX,
        data: vec![0xff; whatsap2p_proto::peer::FILE_CHUNK_LEN],
    };
    assert!(encode(&m).is_ok());
}

#[test]
fn given_oversized_text_then_encode_refuses() {
    let m = PeerMessage::Text { id: MessageId::new(), sent_at_ms: 0, text: "x".repeat(70_000) };
    assert!(encode(&m).is_err());
}
