//! The rollout's rules hold at every step: no peer reaches `require` before its child
//! SA is up and it announced at least `use`; going down is always allowed.
#![allow(clippy::print_stdout)] // the tests print their figures

use ikemesh_sim::{Options, Sim, replay, seeds};
use mesh::control::proto::{Request, Response};
use policy::Level;
use std::time::Duration;

#[test]
fn rollout_rules_hold_at_every_step() {
    for seed in seeds(1..6) {
        let mut opts = Options::new(8, seed);
        opts.probe = true;
        opts.check_rollout = true;
        opts.loss = 0.02;
        let mut sim = Sim::new(opts);
        sim.start_all();
        assert!(
            sim.run_until_converged(Duration::from_secs(120), Duration::from_millis(100)).is_some()
        );
        // Up: every node to require, one after another, while traffic flows.
        for i in 0..sim.len() {
            let r = sim.control(
                i,
                Request::RolloutSet {
                    level: Level::Require,
                    peer: None,
                    clear: false,
                    dry_run: false,
                },
            );
            assert!(matches!(r, Response::Ok { .. }), "{r:?}");
            sim.run_for(Duration::from_secs(1));
        }
        sim.run_for(Duration::from_secs(30));
        for i in 0..sim.len() {
            let report = sim.supervisor(i).unwrap().rollout().report();
            assert!(
                report.peers.iter().all(|p| p.current == Level::Require),
                "seed {seed}: {report:?}"
            );
        }
        // Down: at once, without waiting for anything.
        let r = sim.control(
            5,
            Request::RolloutSet { level: Level::Use, peer: None, clear: false, dry_run: false },
        );
        assert!(matches!(r, Response::Ok { .. }));
        let report = sim.supervisor(5).unwrap().rollout().report();
        assert!(report.peers.iter().all(|p| p.current == Level::Use), "{report:?}");
        sim.run_for(Duration::from_secs(30));
        assert!(
            sim.stats.rollout_violations.is_empty(),
            "seed {seed}: {:?}\nreplay: {}",
            sim.stats.rollout_violations,
            replay("rollout", "rollout_rules_hold_at_every_step", seed)
        );
        assert_eq!(sim.stats.plain_at_require, 0);
        assert_eq!(sim.stats.lost_at_require, 0, "seed {seed}: {}", sim.summary());
        println!("seed {seed}: {}", sim.summary());
    }
}
