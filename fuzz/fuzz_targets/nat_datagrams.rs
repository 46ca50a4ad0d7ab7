//! UDP datagrams (probe, reply, punch), relay tickets and the relay preamble's head.
//! The property checked is `whatsap2p_proto::fuzzing::nat_datagrams`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run nat_datagrams`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::nat_datagrams(data));
