//! The records of a version 4 directory frame (`docs/protocol.md`, section 1.1): any plaintext
//! splits into records that give back exactly their bytes, stopping only at a broken one. The
//! property checked is `whatsap2p_link::fuzzing::check_records`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run frame_records`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_link::fuzzing::check_records(data));
