//! The fuzz target's driver, here so that a crash it finds replays as a plain test
//! (`tests/fuzz_regressions.rs`): three supervisors on the manual network, the bytes
//! choosing which datagram is delivered, lost, duplicated, forged or replayed, when
//! time passes, and which node stops or is killed and comes back.

use crate::pki::Pki;
use crate::{Options, Sim, node_name};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Nodes in a driven run.
pub const NODES: usize = 3;

fn pki() -> Arc<Pki> {
    static PKI: OnceLock<Arc<Pki>> = OnceLock::new();
    PKI.get_or_init(|| Arc::new(Pki::new(&(0..NODES).map(node_name).collect::<Vec<_>>()))).clone()
}

/// Runs the operations `data` spells, then a plain network until every pair settles.
/// Checked: every pair settles with one IKE SA and one child SA; nothing in the clear
/// at `require`; no rollout rule broken.
///
/// # Errors
/// What broke, with the figures.
pub fn drive(data: &[u8]) -> Result<(), String> {
    let mut options = Options::new(NODES, u64::from(data.first().copied().unwrap_or(0)));
    options.manual = true;
    options.probe = true;
    options.check_rollout = true;
    options.spa = data.get(1).is_some_and(|b| b & 1 == 1);
    let mut sim = Sim::with_pki(options, pki());
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
    if sim.run_until_converged(Duration::from_secs(900), Duration::from_secs(1)).is_none() {
        return Err(format!("never settled: {}\n{}", sim.summary(), sim.problems(6).join("\n")));
    }
    if sim.stats.plain_at_require > 0 || !sim.stats.rollout_violations.is_empty() {
        return Err(format!("{}\n{:?}", sim.summary(), sim.stats.rollout_violations));
    }
    Ok(())
}
