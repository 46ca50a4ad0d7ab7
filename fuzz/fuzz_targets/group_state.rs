//! Signed group states, and the acceptance rule on states built from the bytes.
//! The property checked is `whatsap2p_proto::fuzzing::group_state`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run group_state`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::group_state(data));
