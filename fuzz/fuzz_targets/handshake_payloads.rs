//! Handshake payloads: Hello in both forms, ServerHello, IdentityProof, the version reply.
//! The property checked is `whatsap2p_proto::fuzzing::handshake_payloads`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run handshake_payloads`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::handshake_payloads(data));
