//! What the tests check: convergence, the rollout's rules, and the figures.

use super::Sim;
use mesh::supervisor::{PeerCounts, Supervisor};
use policy::Level;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt::Write as _;

impl Sim {
    // ---- checks ----

    /// A peer that reached `require` since the last look must have a child SA up and
    /// have announced `use` or `require`.
    pub(crate) fn check_rollout(&mut self, i: usize) {
        let Some(sup) = self.nodes[i].sup.as_ref() else { return };
        let report = sup.rollout().report();
        let counts = sup.counts();
        let now = self.elapsed();
        let node = &mut self.nodes[i];
        for p in report.peers {
            let before = node.levels.insert(p.name.clone(), p.current);
            if p.current != Level::Require || before == Some(Level::Require) {
                continue;
            }
            let child = counts.get(&p.name).is_some_and(|c| c.children + c.adopted > 0);
            let announced = matches!(p.announced, Some(Level::Use | Level::Require));
            // A restart restores the saved level: that is not a promotion.
            if before.is_some() && !(child && announced) {
                self.stats.rollout_violations.push(format!(
                    "{:.3} s: {} put {} at require with child SA {} and announcement {:?}",
                    now.as_secs_f64(),
                    node.name,
                    p.name,
                    if child { "up" } else { "down" },
                    p.announced
                ));
            }
        }
    }

    /// Per running node, per peer: its IKE SAs and child SAs.
    pub fn counts(&self, i: usize) -> Option<BTreeMap<String, PeerCounts>> {
        self.nodes[i].sup.as_ref().map(Supervisor::counts)
    }

    /// Every pair of running nodes has exactly one established IKE SA and one child SA
    /// at both ends, and nothing adopted is left.
    pub fn converged(&self) -> bool {
        self.problems(1).is_empty()
    }

    /// Up to `max` pairs that are not settled, each as one line.
    pub fn problems(&self, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(sup) = node.sup.as_ref() else { continue };
            let counts = sup.counts();
            for (j, other) in self.nodes.iter().enumerate() {
                if i == j || other.sup.is_none() {
                    continue;
                }
                let c = counts.get(&other.name).copied().unwrap_or_default();
                if c.ike_established != 1 || c.children != 1 || c.adopted != 0 {
                    out.push(format!(
                        "{} -> {}: {} IKE SAs, {} child SAs, {} adopted",
                        node.name, other.name, c.ike_established, c.children, c.adopted
                    ));
                    if out.len() >= max {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// The busiest second's child SA installs, and which second.
    pub fn busiest_second(&self) -> (u64, u32) {
        self.stats
            .installs_by_second
            .iter()
            .max_by_key(|(s, n)| (**n, Reverse(**s)))
            .map_or((0, 0), |(s, n)| (*s, *n))
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = format!(
            "{} nodes, seed {}, virtual {:.1} s: {} datagrams ({} lost, {} gated), {} knocks",
            self.nodes.len(),
            self.opts.seed,
            self.elapsed().as_secs_f64(),
            s.datagrams,
            s.datagrams_lost,
            s.datagrams_gated,
            s.knocks
        );
        if s.packets > 0 {
            let _ = write!(
                out,
                "; traffic: {} packets, {} in ESP, {} in the clear, {} at require ({} lost), {} plaintext at require",
                s.packets,
                s.delivered_esp,
                s.delivered_plain,
                s.at_require,
                s.lost_at_require,
                s.plain_at_require
            );
        }
        out
    }
}
