//! A mesh cut in two reconverges after the heal.
#![allow(clippy::print_stdout)] // the tests print their figures

use ikemesh_sim::{Options, Sim, replay, seeds};
use std::time::{Duration, Instant};

#[test]
fn mesh_of_100_partitioned_for_10_minutes_reconverges() {
    for seed in seeds(1..2) {
        let wall = Instant::now();
        let mut sim = Sim::new(Options::new(100, seed));
        sim.start_all();
        let first = sim.run_until_converged(Duration::from_secs(300), Duration::from_millis(250));
        assert!(first.is_some(), "{}", sim.problems(5).join("\n"));
        sim.partition(50);
        sim.run_for(Duration::from_secs(600));
        assert!(!sim.converged(), "the partition ended nothing");
        sim.heal();
        let again = sim.run_until_converged(Duration::from_secs(600), Duration::from_millis(250));
        let Some(again) = again else {
            panic!(
                "not reconverged 10 minutes after the heal: {}\n{}\nreplay: {}",
                sim.summary(),
                sim.problems(10).join("\n"),
                replay("partition", "mesh_of_100_partitioned_for_10_minutes_reconverges", seed)
            );
        };
        println!(
            "100 nodes, seed {seed}: up in {:.1} s, cut for 600 s, whole again {:.1} s after the heal ({:.1} s wall); {}",
            first.unwrap_or_default().as_secs_f64(),
            again.as_secs_f64(),
            wall.elapsed().as_secs_f64(),
            sim.summary()
        );
    }
}
