//! Directory requests (`ClientToServer`), and the server's conversion of a requested number.
//! The property checked is `whatsap2p_proto::fuzzing::client_to_server`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run client_to_server`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::client_to_server(data));
