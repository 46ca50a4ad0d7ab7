//! The link's frame reader fed a byte stream cut into arbitrary reads, some stalling: it gives the
//! same frames and the same end as a plain parse. The property checked is
//! `whatsap2p_link::fuzzing::check_splits`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run frame_reader`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_link::fuzzing::check_splits(data));
