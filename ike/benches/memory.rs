//! Heap memory per established IKE SA, responder side, as the daemon would hold it: a
//! counting allocator measures what `N` responder SAs (each with its child SA, after a
//! full handshake with certificates) keep alive once the initiators are gone.
//!
//! `cargo bench -p ike --bench memory` (`-- --smoke` for a quick run). The target is at
//! most 4 KiB per IKE SA (`../shared/notes/targets.md`; charon keeps 18.6 KB with
//! Ed25519 and 22.4 KB with P-256 on these machines). A report, not a test.

#![allow(clippy::print_stdout)] // the report is the benchmark's output

mod common;

use common::{Node, OsRandom, handshake, mesh};
use ike::proposal::Policy;
use ike::sa::IkeSa;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

/// The system allocator, instrumented (`stats_alloc`: no `unsafe` here).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn in_use() -> isize {
    let s = GLOBAL.stats();
    isize::try_from(s.bytes_allocated).unwrap_or(isize::MAX)
        - isize::try_from(s.bytes_deallocated).unwrap_or(isize::MAX)
        + s.bytes_reallocated
}

fn established_responder(a: &Node, b: &Node, rng: &mut OsRandom) -> IkeSa {
    let (_, mut resp) = handshake(a, b, rng);
    assert!(resp.is_established());
    while resp.poll_event().is_some() {}
    while resp.poll_transmit().is_some() {}
    resp
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let n = if smoke { 50 } else { 5000 };
    let mut rng = OsRandom;
    println!("ike memory per responder IKE SA ({n} SAs, each with one child SA)");
    for (name, alg) in
        [("Ed25519", &rcgen::PKCS_ED25519), ("P-256", &rcgen::PKCS_ECDSA_P256_SHA256)]
    {
        let (a, b) = mesh(alg, &Policy::default());
        let _warm = established_responder(&a, &b, &mut rng);
        let before = in_use();
        let mut kept = Vec::with_capacity(n); // counted: the SA values themselves
        for _ in 0..n {
            kept.push(established_responder(&a, &b, &mut rng));
        }
        let after = in_use();
        let per_sa = (after - before) / isize::try_from(n).unwrap_or(isize::MAX);
        println!(
            "{name:<8} {per_sa:>7.0} bytes per IKE SA (target <= 4096; charon {} bytes)",
            if name == "Ed25519" { "18,600" } else { "22,400" }
        );
        drop(kept);
    }
}
