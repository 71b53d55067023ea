//! Every timer of the supervisor in one ordered structure.
//!
//! Each timer has a key (which peer, which kind); setting a key replaces its deadline,
//! cancelling it forgets it. Deadlines sit in a binary heap with lazy deletion: a heap
//! entry whose key has since been set again or cancelled is skipped when it surfaces.
//! The next wake-up and each expired timer cost O(log n), whatever the number of peers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Deadlines by key.
#[derive(Debug)]
pub(crate) struct Timers<K> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    /// The live deadline of each key, with the sequence number of its heap entry.
    live: HashMap<K, (Instant, u64)>,
    seq: u64,
}

impl<K: Copy + Eq + Hash + Ord> Default for Timers<K> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), live: HashMap::new(), seq: 0 }
    }
}

impl<K: Copy + Eq + Hash + Ord> Timers<K> {
    /// Sets `key` to fire at `at` (replacing any earlier setting).
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        if self.live.get(&key).is_some_and(|(t, _)| *t == at) {
            return;
        }
        self.seq += 1;
        self.live.insert(key, (at, self.seq));
        self.heap.push(Reverse((at, self.seq, key)));
        // Stale entries are dropped when they surface; a heap that is mostly stale is
        // rebuilt so that its size stays within a constant of the live timers.
        if self.heap.len() > 64 && self.heap.len() > 4 * self.live.len() {
            self.heap = self.live.iter().map(|(k, (t, s))| Reverse((*t, *s, *k))).collect();
        }
    }

    /// Sets `key` or cancels it.
    pub(crate) fn set_opt(&mut self, key: K, at: Option<Instant>) {
        match at {
            Some(at) => self.set(key, at),
            None => self.cancel(key),
        }
    }

    /// Sets `key` to `at` unless it is already set earlier.
    pub(crate) fn set_earliest(&mut self, key: K, at: Instant) {
        if self.get(key).is_none_or(|t| at < t) {
            self.set(key, at);
        }
    }

    /// Forgets `key`.
    pub(crate) fn cancel(&mut self, key: K) {
        self.live.remove(&key);
    }

    /// When `key` fires, if it is set.
    pub(crate) fn get(&self, key: K) -> Option<Instant> {
        self.live.get(&key).map(|(t, _)| *t)
    }

    /// The earliest deadline.
    pub(crate) fn next(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The key of an expired timer, which is forgotten; `None` when none is due.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        self.drop_stale();
        let Reverse((t, _, key)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.live.remove(&key);
        Some(key)
    }

    /// How many timers are set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, seq, key))) = self.heap.peek() {
            if self.live.get(key).is_some_and(|(_, s)| s == seq) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_order_and_honours_resets_and_cancels() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t: Timers<u32> = Timers::default();
        t.set(1, at(5));
        t.set(2, at(3));
        t.set(3, at(4));
        t.set(2, at(6)); // moved later
        t.cancel(3);
        t.set_earliest(1, at(7)); // later than the setting: ignored
        assert_eq!(t.next(), Some(at(5)));
        assert_eq!(t.pop_due(at(4)), None);
        assert_eq!(t.pop_due(at(10)), Some(1));
        assert_eq!(t.pop_due(at(10)), Some(2));
        assert_eq!(t.pop_due(at(10)), None);
        assert_eq!(t.next(), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn many_resets_keep_the_heap_small() {
        let t0 = Instant::now();
        let mut t: Timers<u32> = Timers::default();
        for i in 0..10_000u64 {
            t.set((i % 10) as u32, t0 + Duration::from_millis(i));
        }
        assert!(t.heap.len() <= 4 * 10 + 64, "heap of {}", t.heap.len());
        let mut fired = Vec::new();
        while let Some(k) = t.pop_due(t0 + Duration::from_secs(100)) {
            fired.push(k);
        }
        assert_eq!(fired, (0..10).collect::<Vec<_>>());
    }
}
