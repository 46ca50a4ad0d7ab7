//! `whatsap2p-bench`: starts its own server and clients, measures each figure beside a baseline taken
//! in the same run, prints a table and writes `docs/benchmarks.md`.

fn main() {
    println!("whatsap2p-bench: not written yet");
}
