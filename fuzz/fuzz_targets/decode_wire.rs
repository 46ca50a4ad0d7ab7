//! Every decoder of bytes that come from the network, on arbitrary input: none may panic, and
//! whatever decodes must encode back to the same bytes (no two encodings of one message).
//!
//! Run: `cargo install cargo-fuzz && cd fuzz && cargo +nightly fuzz run decode_wire`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use whatsap2p_proto::chunk::view_chunk;
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, ServerToClient};
use whatsap2p_proto::group::SignedGroupState;
use whatsap2p_proto::handshake::{Hello, ServerHello};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::{decode, encode, IdentityProof};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode::<ClientToServer>(data) {
        assert_eq!(encode(&m).ok().as_deref(), Some(data));
    }
    if let Ok(m) = decode::<ServerToClient>(data) {
        assert_eq!(encode(&m).ok().as_deref(), Some(data));
    }
    let message = decode::<PeerMessage>(data);
    if let Ok(m) = &message {
        assert_eq!(encode(m).ok().as_deref(), Some(data));
    }
    // The in-place reading of chunks agrees with the ordinary decoder on every input.
    match (view_chunk(data), message) {
        (Some(Ok(view)), Ok(PeerMessage::FileChunk { id, offset, data: bytes })) => {
            assert_eq!((view.id, view.offset, &data[view.data]), (id, offset, &bytes[..]));
        }
        (Some(Ok(view)), other) => panic!("{view:?} read as a chunk, decoded as {other:?}"),
        (_, Ok(PeerMessage::FileChunk { .. })) => panic!("a chunk the in-place reader refused"),
        _ => {}
    }
    let _ = decode_struct::<Hello>(data);
    let _ = decode_struct::<ServerHello>(data);
    let _ = decode_struct::<IdentityProof>(data);
    let _ = decode_struct::<SignedGroupState>(data);
});
