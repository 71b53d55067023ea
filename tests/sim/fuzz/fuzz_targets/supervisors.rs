//! Three supervisors (the daemon's decisions, real IKE and certificates) on a network
//! the fuzzer drives: it chooses which datagram is delivered, lost, duplicated,
//! forged or replayed, when time passes, and which node restarts or crashes.
//!
//! Checked: nothing panics; no pair ever carries plaintext at `require`; and once the
//! fuzzer's network gives way to a plain one, every pair settles with exactly one IKE
//! SA and one child SA at both ends.
#![no_main]

use ikemesh_sim::pki::Pki;
use ikemesh_sim::{Options, Sim, node_name};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const NODES: usize = 3;

fn pki() -> Arc<Pki> {
    static PKI: OnceLock<Arc<Pki>> = OnceLock::new();
    PKI.get_or_init(|| Arc::new(Pki::new(&(0..NODES).map(node_name).collect::<Vec<_>>()))).clone()
}

fuzz_target!(|data: &[u8]| {
    let mut opts = Options::new(NODES, u64::from(data.first().copied().unwrap_or(0)));
    opts.manual = true;
    opts.probe = true;
    opts.check_rollout = true;
    opts.spa = data.get(1).is_some_and(|b| b & 1 == 1);
    let mut sim = Sim::with_pki(opts, pki());
    sim.start_all();
    let mut ops = data.iter().skip(2).copied();
    // At most 200 operations a run.
    for _ in 0..200 {
        let Some(op) = ops.next() else { break };
        let arg = usize::from(ops.next().unwrap_or(0));
        match op % 12 {
            0..=3 => sim.deliver_waiting(arg),
            4 => sim.drop_waiting(arg),
            5 => sim.duplicate_waiting(arg),
            6 => sim.forge_waiting(
                arg,
                usize::from(ops.next().unwrap_or(0)),
                ops.next().unwrap_or(0),
            ),
            7 => sim.replay_sent(arg),
            8 | 9 => sim.run_for(Duration::from_millis(250 * (arg as u64 + 1))),
            10 => {
                let i = arg % NODES;
                if sim.supervisor(i).is_some() {
                    if arg & 0x80 == 0 { sim.stop(i) } else { sim.kill(i) }
                }
            }
            _ => {
                let i = arg % NODES;
                if sim.supervisor(i).is_none() {
                    sim.start(i);
                }
            }
        }
    }
    for i in 0..NODES {
        if sim.supervisor(i).is_none() {
            sim.start(i);
        }
    }
    sim.automatic();
    let settled = sim.run_until_converged(Duration::from_secs(900), Duration::from_secs(1));
    assert!(settled.is_some(), "never settled: {}\n{}", sim.summary(), sim.problems(6).join("\n"));
    assert_eq!(sim.stats.plain_at_require, 0);
    assert!(sim.stats.rollout_violations.is_empty(), "{:?}", sim.stats.rollout_violations);
});
