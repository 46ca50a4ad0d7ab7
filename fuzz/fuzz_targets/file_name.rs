//! File names offered by a peer, made safe for the downloads folder: always one short, visible
//! path component. The property checked is `whatsap2p_proto::fuzzing::file_name`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run file_name`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_proto::fuzzing::file_name(data));
