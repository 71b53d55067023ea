//! Traffic through the simulated kernels: one packet at a time between two members,
//! counting what is delivered, lost and sent in the clear.

use super::{
    Sim,
    kernel::{In, Out},
};
use mesh::supervisor::KernelEvent;
use std::time::Duration;

impl Sim {
    // ---- traffic ----

    pub(crate) fn traffic(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    self.packet(a, b);
                }
            }
        }
    }

    /// One packet from node `a` to node `b`, through both kernels.
    pub(crate) fn packet(&mut self, a: usize, b: usize) {
        let (src, dst) = (self.nodes[a].addr, self.nodes[b].addr);
        self.stats.packets += 1;
        let require_out = self.nodes[a].kernel.level(xfrm::Direction::Out, src, dst)
            == Some(xfrm::Level::Require);
        let require_in =
            self.nodes[b].kernel.level(xfrm::Direction::In, src, dst) == Some(xfrm::Level::Require);
        if require_out {
            self.stats.at_require += 1;
        }
        let out = self.nodes[a].kernel.send(src, dst);
        let spi = match out {
            Out::Esp(spi) => Some(spi),
            Out::Plain => None,
            Out::NoSa(reqid) => {
                self.stats.no_sa_out += 1;
                if require_out {
                    self.lost(a, b, "no outbound SA");
                }
                self.acquire(a, reqid);
                return;
            }
            Out::Blocked => {
                if require_out {
                    self.lost(a, b, "blocked");
                }
                return;
            }
        };
        if !self.linked(a, b) {
            self.stats.partitioned += 1;
            return;
        }
        match self.nodes[b].kernel.receive(src, dst, spi) {
            In::Delivered if spi.is_some() => self.stats.delivered_esp += 1,
            In::Delivered => {
                self.stats.delivered_plain += 1;
                if require_out || require_in {
                    self.stats.plain_at_require += 1;
                }
            }
            In::NoSa => {
                self.stats.no_sa_in += 1;
                if require_out {
                    self.lost(a, b, &format!("no inbound SA {:#010x}", spi.unwrap_or(0)));
                }
            }
            In::PlainRefused => {
                self.stats.plain_refused += 1;
                if require_out {
                    self.lost(a, b, "plaintext refused");
                }
            }
        }
    }

    fn lost(&mut self, a: usize, b: usize, why: &str) {
        self.stats.lost_at_require += 1;
        if self.stats.losses.len() < 20 {
            let line = format!(
                "{:.3} s: {} -> {}: {why}",
                self.elapsed().as_secs_f64(),
                self.nodes[a].name,
                self.nodes[b].name
            );
            self.stats.losses.push(line);
        }
    }

    fn acquire(&mut self, i: usize, reqid: u32) {
        let now = self.now;
        let last = self.acquired.get(&(i, reqid)).copied();
        if last.is_some_and(|t| now < t + Duration::from_secs(1)) {
            return;
        }
        self.acquired.insert((i, reqid), now);
        if let Some(sup) = self.nodes[i].sup.as_mut() {
            sup.handle_kernel(now, &KernelEvent::Acquire { reqid });
            self.carry_out(i);
        }
    }
}
