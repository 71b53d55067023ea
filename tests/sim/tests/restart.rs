//! Restarts at `require`: `kill -9` keeps the kernel's SAs, which the next run adopts;
//! the traffic loses nothing, and the next rekey works.
#![allow(clippy::print_stdout)] // the tests print their figures

use ikemesh_sim::{Options, Sim, replay, seeds};
use mesh::control::proto::Request;
use policy::Level;
use std::time::Duration;

fn mesh_at_require(seed: u64) -> Sim {
    let mut opts = Options::new(4, seed);
    opts.level = Level::Require;
    opts.probe = true;
    opts.check_rollout = true;
    // Rekeys soon enough to see one after the restart.
    opts.ike = "child_rekey = \"5m\"\nrekey = \"20m\"\n".into();
    let mut sim = Sim::new(opts);
    sim.start_all();
    assert!(
        sim.run_until_converged(Duration::from_secs(120), Duration::from_millis(100)).is_some()
    );
    // Everyone promoted everyone.
    sim.run_for(Duration::from_secs(5));
    for i in 0..sim.len() {
        let report = sim.supervisor(i).unwrap().rollout().report();
        assert!(report.peers.iter().all(|p| p.current == Level::Require), "{report:?}");
    }
    sim
}

#[test]
fn kill_9_at_require_adopts_and_loses_nothing() {
    for seed in seeds(1..6) {
        let mut sim = mesh_at_require(seed);
        let lost_before = sim.stats.lost_at_require;
        sim.kill(2);
        sim.run_for(Duration::from_secs(3));
        let kernel_sas = sim.kernel(2).sa_count();
        sim.start(2);
        let adopted: usize = sim.counts(2).unwrap().values().map(|c| c.adopted).sum();
        assert_eq!(
            adopted,
            3,
            "seed {seed}: kernel had {kernel_sas} SAs; replay: {}",
            replay("restart", "kill_9_at_require_adopts_and_loses_nothing", seed)
        );
        // The new IKE SAs come up and replace what was adopted.
        assert!(
            sim.run_until_converged(Duration::from_secs(60), Duration::from_millis(100)).is_some(),
            "seed {seed}: {}\nreplay: {}",
            sim.problems(6).join("\n"),
            replay("restart", "kill_9_at_require_adopts_and_loses_nothing", seed)
        );
        // Past the next child rekey of every pair.
        let installs = sim.stats.installs_by_second.values().sum::<u32>();
        sim.run_for(Duration::from_secs(400));
        assert!(sim.converged(), "seed {seed}: {}", sim.problems(6).join("\n"));
        assert!(sim.stats.installs_by_second.values().sum::<u32>() > installs, "no rekey");
        assert_eq!(
            sim.stats.lost_at_require,
            lost_before,
            "seed {seed}: packets lost at require around the restart: {}\n{}\nreplay: {}",
            sim.summary(),
            sim.stats.losses.join("\n"),
            replay("restart", "kill_9_at_require_adopts_and_loses_nothing", seed)
        );
        assert_eq!(sim.stats.plain_at_require, 0);
        assert!(sim.stats.rollout_violations.is_empty(), "{:?}", sim.stats.rollout_violations);
        println!("seed {seed}: {}", sim.summary());
    }
}

#[test]
fn graceful_restart_and_lost_state_directory() {
    for seed in seeds(1..4) {
        let mut sim = mesh_at_require(seed);
        sim.stop(1);
        sim.start(1);
        assert!(
            sim.run_until_converged(Duration::from_secs(60), Duration::from_millis(100)).is_some()
        );
        sim.stop(3);
        sim.lose_disk(3);
        sim.start(3);
        // Without its state, node 3 adopts by the kernel alone and comes back at the
        // configuration's level.
        assert!(
            sim.run_until_converged(Duration::from_secs(60), Duration::from_millis(100)).is_some(),
            "seed {seed}: {}",
            sim.problems(6).join("\n")
        );
        assert_eq!(
            sim.stats.lost_at_require,
            0,
            "seed {seed}: {}\n{}",
            sim.summary(),
            sim.stats.losses.join("\n")
        );
        let _ = sim.control(0, Request::Status);
    }
}
