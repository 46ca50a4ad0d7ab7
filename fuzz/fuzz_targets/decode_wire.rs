//! Every decoder of bytes that come from the network, on arbitrary input: none may panic, and
//! whatever decodes must encode back to the same bytes (no two encodings of one message).
//!
//! Run: `cargo install cargo-fuzz && cd fuzz && cargo +nightly fuzz run decode_wire`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::decode_wire(data));
