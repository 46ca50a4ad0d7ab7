//! The JSON-lines input: stdin bytes cut into arbitrary reads, some stalling and cancelled, come out
//! as exactly their lines, and the command parser takes each without panicking. The property checked
//! is `whatsap2p_cli::fuzzing::json_lines`.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run json_lines`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| whatsap2p_cli::fuzzing::json_lines(data));
