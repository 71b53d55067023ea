//! A full mesh started at once converges: every pair ends with exactly one IKE SA and
//! one child SA at both ends, under loss and reordering.
#![allow(clippy::print_stdout)] // the tests print their figures

use ikemesh_sim::{Options, Sim, replay, seeds};
use std::time::{Duration, Instant};

fn converge(nodes: usize, seed: u64, test: &str) {
    let mut opts = Options::new(nodes, seed);
    opts.loss = 0.01;
    opts.reorder = 0.01;
    let wall = Instant::now();
    let mut sim = Sim::new(opts);
    sim.start_all();
    let took = sim.run_until_converged(Duration::from_secs(600), Duration::from_millis(250));
    let Some(took) = took else {
        panic!(
            "not converged after 600 s virtual: {}\n{}\nreplay: {}",
            sim.summary(),
            sim.problems(10).join("\n"),
            replay("converge", test, seed)
        );
    };
    println!(
        "{nodes} nodes, seed {seed}: converged in {:.2} s virtual, {:.1} s wall; {}",
        took.as_secs_f64(),
        wall.elapsed().as_secs_f64(),
        sim.summary()
    );
    // Settled means settled: a while later, still exactly one of each.
    sim.run_for(Duration::from_secs(30));
    assert!(
        sim.converged(),
        "unsettled later: {}\nreplay: {}",
        sim.problems(10).join("\n"),
        replay("converge", test, seed)
    );
}

#[test]
fn full_mesh_of_200_with_loss_and_reordering() {
    // CI runs two seeds (each ~20 s of wall time); the twenty of the acceptance
    // run with `SIM_SEEDS=20`.
    let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    for seed in seeds(1..1 + n) {
        converge(200, seed, "full_mesh_of_200_with_loss_and_reordering");
    }
}

#[test]
fn small_mesh_with_spa() {
    for seed in seeds(1..4) {
        let mut opts = Options::new(12, seed);
        opts.spa = true;
        opts.loss = 0.02;
        let mut sim = Sim::new(opts);
        sim.start_all();
        let took = sim.run_until_converged(Duration::from_secs(300), Duration::from_millis(250));
        assert!(
            took.is_some(),
            "not converged: {}\n{}\nreplay: {}",
            sim.summary(),
            sim.problems(10).join("\n"),
            replay("converge", "small_mesh_with_spa", seed)
        );
        assert!(sim.stats.knocks > 0, "no knocks with SPA on");
    }
}
