//! Pairs that rekey their IKE SA at the same moment, over a network that loses 5% of
//! datagrams: the rekeys collide (RFC 7296 section 2.8.2), and whichever answers are
//! lost, the pair ends on one IKE SA without a packet lost at `require`. The 50-node soak found a loss here
//! (seed 1, day 3): a side whose answer to its own rekey was lost took the peer's
//! delete of the old IKE SA for the end of the IKE SA, and its child SAs with it.
#![allow(clippy::print_stdout)] // the tests print their figures

use ikemesh_sim::pki::Pki;
use ikemesh_sim::{Options, Sim, node_name, replay, seeds};
use policy::Level;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn colliding_ike_rekeys_on_a_lossy_link_lose_nothing() {
    let pki = Arc::new(Pki::new(&[node_name(0), node_name(1)]));
    let list = seeds(1..61);
    for &seed in &list {
        let mut opts = Options::new(2, seed);
        opts.level = Level::Require;
        opts.probe = true;
        opts.loss = 0.05;
        opts.latency_us = (20_000, 60_000);
        // No jitter: both ends' rekey timers run out within a round trip of each other.
        opts.ike = "rekey = \"5m\"\nchild_rekey = \"1h\"\njitter = 0\n".into();
        let mut sim = Sim::with_pki(opts, pki.clone());
        sim.start_all();
        let converged =
            sim.run_until_converged(Duration::from_secs(600), Duration::from_millis(100));
        assert!(converged.is_some(), "seed {seed}: {}", sim.summary());
        sim.run_for(Duration::from_secs(3600));
        assert!(
            sim.stats.lost_at_require == 0,
            "seed {seed}: {}\n{}\nreplay: {}",
            sim.summary(),
            sim.stats.losses.join("\n"),
            replay("rekeys", "colliding_ike_rekeys_on_a_lossy_link_lose_nothing", seed)
        );
        assert_eq!(sim.stats.plain_at_require, 0, "seed {seed}");
    }
    println!(
        "{} seeds, an hour each with IKE SA rekeys every 5 minutes: no packet lost",
        list.len()
    );
}
