//! Peer messages (`PeerMessage`), and the same bytes read in place as a file chunk.
//! The property checked is `whatsap2p_proto::fuzzing::peer_message`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run peer_message`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::peer_message(data));
