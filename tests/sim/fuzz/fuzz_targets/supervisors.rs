//! Three supervisors (the daemon's decisions, real IKE and certificates) on a network
//! the fuzzer drives: it chooses which datagram is delivered, lost, duplicated,
//! forged or replayed, when time passes, and which node restarts or crashes
//! (`ikemesh_sim::drive`, where the checks are).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ikemesh_sim::drive::drive(data) {
        panic!("{e}");
    }
});
