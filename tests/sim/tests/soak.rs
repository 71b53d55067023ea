//! Days of a mesh at `require` with jittered rekeys: no packet lost, and no rekey
//! storms (the busiest second's child SA installs are printed and bounded).
#![allow(clippy::print_stdout)] // the tests print their figures

use ikemesh_sim::{Options, Sim, replay, seeds};
use policy::Level;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[test]
fn days_at_require_with_jittered_rekeys() {
    // The run is 50 nodes for 30 days: SOAK_NODES=50 SOAK_DAYS=30. CI runs a
    // shorter one.
    let nodes = usize::try_from(env("SOAK_NODES", 12)).unwrap();
    let days = env("SOAK_DAYS", 2);
    for seed in seeds(1..2) {
        let mut opts = Options::new(nodes, seed);
        opts.level = Level::Require;
        opts.probe = true;
        opts.check_rollout = true;
        opts.loss = 0.005;
        opts.ike = "child_rekey = \"1h\"\nrekey = \"4h\"\nliveness = \"10m\"\njitter = 10\n".into();
        let wall = Instant::now();
        let mut sim = Sim::new(opts);
        sim.start_all();
        assert!(
            sim.run_until_converged(Duration::from_secs(300), Duration::from_millis(250)).is_some()
        );
        // Past the first, synchronized, installs: the storm test is about rekeys.
        let start = sim.elapsed().as_secs() + 60;
        for hour in 1..=days * 24 {
            sim.run_for(Duration::from_secs(3600));
            if hour % 24 == 0 {
                eprintln!("day {} done ({:.0} s wall)", hour / 24, wall.elapsed().as_secs_f64());
            }
            assert!(
                sim.stats.lost_at_require == 0 && sim.stats.rollout_violations.is_empty(),
                "seed {seed} at {:.0} s: {}\n{}\n{:?}\nreplay: {}",
                sim.elapsed().as_secs_f64(),
                sim.summary(),
                sim.stats.losses.join("\n"),
                sim.stats.rollout_violations,
                replay("soak", "days_at_require_with_jittered_rekeys", seed)
            );
        }
        assert!(sim.converged(), "{}", sim.problems(5).join("\n"));
        let rekeys: u32 = sim.stats.installs_by_second.range(start..).map(|(_, n)| *n).sum();
        let (second, busiest) = sim
            .stats
            .installs_by_second
            .range(start..)
            .max_by_key(|(_, n)| **n)
            .map_or((0, 0), |(s, n)| (*s, *n));
        let pairs = nodes * (nodes - 1) / 2;
        println!(
            "{nodes} nodes, {days} days, seed {seed}: {rekeys} child SA installs after the start, busiest second ({second} s) {busiest}; {} ({:.1} s wall)",
            sim.summary(),
            wall.elapsed().as_secs_f64()
        );
        // With 10% jitter on a 1 h rekey, a pair's rekeys spread over 6 minutes: the
        // busiest second holds a few of the mesh's pairs, not a storm.
        let bound = u32::try_from(pairs / 20).unwrap().max(8);
        assert!(
            busiest <= bound,
            "a rekey storm: {busiest} installs in one second (bound {bound})"
        );
        assert_eq!(sim.stats.plain_at_require, 0);
    }
}
