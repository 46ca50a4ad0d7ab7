//! File chunks read in place (`whatsap2p_proto::chunk`): they agree with the ordinary decoder.
//! The property checked is `whatsap2p_proto::fuzzing::chunk_view`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run chunk_view`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::chunk_view(data));
