//! Directory answers (`ServerToClient`).
//! The property checked is `whatsap2p_proto::fuzzing::server_to_client`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run server_to_client`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::server_to_client(data));
