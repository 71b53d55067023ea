//! The manual network: datagrams wait until the driver (the fuzz target) delivers,
//! drops, duplicates, forges or replays them.

use super::{Ev, Sim};
use std::time::Duration;

impl Sim {
    // ---- the manual network ----

    /// Datagrams waiting for the driver.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Delivers waiting datagram `k` (modulo their number) now.
    pub fn deliver_waiting(&mut self, k: usize) {
        if self.waiting.is_empty() {
            return;
        }
        let d = self.waiting.remove(k % self.waiting.len());
        self.deliver(d.to, d.local, d.from, &d.bytes);
    }

    /// Loses waiting datagram `k`.
    pub fn drop_waiting(&mut self, k: usize) {
        if !self.waiting.is_empty() {
            let n = self.waiting.len();
            self.waiting.remove(k % n);
        }
    }

    /// Delivers a copy of waiting datagram `k` now, and keeps it waiting.
    pub fn duplicate_waiting(&mut self, k: usize) {
        if let Some(d) = self.waiting.get(k % self.waiting.len().max(1)).cloned() {
            self.deliver(d.to, d.local, d.from, &d.bytes);
        }
    }

    /// Delivers a forgery: waiting datagram `k` with byte `at` (modulo its length)
    /// `XORed` with `xor`, or cut to `at` bytes when `xor` is zero; the original waits on.
    pub fn forge_waiting(&mut self, k: usize, at: usize, xor: u8) {
        let Some(mut d) = self.waiting.get(k % self.waiting.len().max(1)).cloned() else {
            return;
        };
        if d.bytes.is_empty() {
            return;
        }
        let at = at % d.bytes.len();
        if xor == 0 {
            d.bytes.truncate(at);
        } else {
            d.bytes[at] ^= xor;
        }
        self.deliver(d.to, d.local, d.from, &d.bytes);
    }

    /// Delivers again one of the last datagrams sent (a replay).
    pub fn replay_sent(&mut self, k: usize) {
        if let Some(d) = self.history.get(k % self.history.len().max(1)).cloned() {
            self.deliver(d.to, d.local, d.from, &d.bytes);
        }
    }

    /// Back to the automatic network: what waits is sent on with the usual latency.
    pub fn automatic(&mut self) {
        self.opts.manual = false;
        let now = self.now;
        for d in std::mem::take(&mut self.waiting) {
            let (lo, hi) = self.opts.latency_us;
            let us = self.net.between(lo, hi);
            self.push(
                now + Duration::from_micros(us),
                Ev::Deliver { to: d.to, local: d.local, from: d.from, bytes: d.bytes },
            );
        }
    }
}
