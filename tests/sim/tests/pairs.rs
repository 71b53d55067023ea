//! Both ends of a pair start at once, over many seeds of latency and loss: after
//! settling, exactly one IKE SA and one child SA at both ends, never two, never none.
#![allow(clippy::print_stdout)] // the tests print their figures

use ikemesh_sim::pki::Pki;
use ikemesh_sim::rng::SimRng;
use ikemesh_sim::{Options, Sim, node_name, replay, seeds};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn both_ends_start_at_once_over_1000_seeds() {
    let pki = Arc::new(Pki::new(&[node_name(0), node_name(1)]));
    let mut worst = Duration::ZERO;
    let list = seeds(1..1001);
    for &seed in &list {
        // Each seed its own network: 0.1 ms to 2.5 s of latency, up to 15% loss, some
        // reordering and duplication.
        let mut r = SimRng::new(seed, 7);
        let mut opts = Options::new(2, seed);
        let hi = r.between(100, 2_500_000);
        opts.latency_us = (r.between(50, hi), hi);
        opts.loss = r.share(15);
        opts.reorder = r.share(10);
        opts.duplicate = r.share(10);
        opts.spa = r.chance(0.5);
        let mut sim = Sim::with_pki(opts.clone(), pki.clone());
        sim.start_all();
        let took = sim.run_until_converged(Duration::from_secs(900), Duration::from_millis(100));
        // Settled for good: for two minutes on, never two IKE SAs for long (a
        // duplicate lives at most until its delete is answered), and at the end one of
        // each (or soon again, when the link's loss just ended one and it is remade).
        let mut doubled = 0u32;
        let settled = took.is_some_and(|_| {
            for _ in 0..120 {
                sim.run_for(Duration::from_secs(1));
                let two =
                    (0..2).any(|i| sim.counts(i).unwrap().values().any(|c| c.ike_established > 1));
                doubled = if two { doubled + 1 } else { 0 };
                assert!(doubled < 30, "seed {seed}: two IKE SAs for 30 s");
            }
            sim.run_until_converged(Duration::from_secs(300), Duration::from_millis(100)).is_some()
        });
        assert!(
            settled,
            "seed {seed} ({opts:?}): {}\n{}\nreplay: {}",
            sim.summary(),
            sim.problems(4).join("\n"),
            replay("pairs", "both_ends_start_at_once_over_1000_seeds", seed)
        );
        worst = worst.max(took.unwrap_or_default());
    }
    println!(
        "{} seeds: every pair settled with one IKE SA and one child SA; slowest {:.1} s virtual",
        list.len(),
        worst.as_secs_f64()
    );
}
