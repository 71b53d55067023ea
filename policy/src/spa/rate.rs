//! Per-source rate limits, checked before any cryptography.
//!
//! A token bucket per source address, kept as GCRA (the generic cell rate algorithm):
//! one "theoretical arrival time" per source, in microseconds. `n` datagrams per
//! `period` are let through, in a burst of up to `n`. The map of sources is bounded:
//! a new source beyond the bound evicts the one seen least recently, so a flood from
//! many (spoofed) addresses costs a fixed amount of memory. Evicting a source forgets
//! its limit; that gives a flooder nothing it could not have by using a new address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

/// What the limiter says about one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let through.
    Pass,
    /// Over the limit; `first` when this is the first refusal since the source was last
    /// let through (to log at a louder level once).
    Limited { first: bool },
}

struct Source {
    /// The theoretical arrival time, in microseconds since the Unix epoch.
    tat: u64,
    /// The position in `recency`.
    seq: u64,
    /// A refusal was already logged loudly.
    limited: bool,
}

pub(crate) struct RateLimiter {
    /// Microseconds between datagrams at the sustained rate.
    interval: u64,
    /// How far ahead of now the arrival time may run: `period - interval`.
    tolerance: u64,
    max_sources: usize,
    sources: HashMap<IpAddr, Source>,
    /// Sources by the sequence number of their last datagram, oldest first.
    recency: BTreeMap<u64, IpAddr>,
    next_seq: u64,
}

impl RateLimiter {
    /// `count` datagrams per `period` per source (`count` >= 1, `period` > 0), for at
    /// most `max_sources` (>= 1) sources at once.
    pub(crate) fn new(count: u32, period: Duration, max_sources: usize) -> Self {
        let period = u64::try_from(period.as_micros()).unwrap_or(u64::MAX).max(1);
        let interval = (period / u64::from(count.max(1))).max(1);
        Self {
            interval,
            tolerance: period.saturating_sub(interval),
            max_sources: max_sources.max(1),
            sources: HashMap::new(),
            recency: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Counts one datagram from `source` at `now_us` (microseconds since the epoch).
    pub(crate) fn check(&mut self, source: IpAddr, now_us: u64) -> Verdict {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(s) = self.sources.get_mut(&source) {
            self.recency.remove(&s.seq);
            self.recency.insert(seq, source);
            s.seq = seq;
            // Past `now + period` only if the clock stepped back: start afresh rather
            // than shut the source out for as long as the step.
            if s.tat > now_us.saturating_add(self.tolerance.saturating_add(self.interval)) {
                s.tat = now_us;
            }
            let tat = s.tat.max(now_us);
            if tat - now_us > self.tolerance {
                let first = !s.limited;
                s.limited = true;
                return Verdict::Limited { first };
            }
            s.tat = tat.saturating_add(self.interval);
            s.limited = false;
            return Verdict::Pass;
        }
        while self.sources.len() >= self.max_sources {
            let Some((_, oldest)) = self.recency.pop_first() else { break };
            self.sources.remove(&oldest);
        }
        self.sources.insert(
            source,
            Source { tat: now_us.saturating_add(self.interval), seq, limited: false },
        );
        self.recency.insert(seq, source);
        Verdict::Pass
    }

    /// How many sources are tracked.
    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut r = RateLimiter::new(3, Duration::from_secs(3), 8);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t = 10_000_000_000;
        for _ in 0..3 {
            assert_eq!(r.check(a, t), Verdict::Pass);
        }
        assert_eq!(r.check(a, t), Verdict::Limited { first: true });
        assert_eq!(r.check(a, t), Verdict::Limited { first: false });
        // One interval (1 s) later, one more.
        assert_eq!(r.check(a, t + 1_000_000), Verdict::Pass);
        assert_eq!(r.check(a, t + 1_000_000), Verdict::Limited { first: true });
        // The clock steps back an hour: the source is not shut out for an hour.
        assert_eq!(r.check(a, t - 3_600_000_000), Verdict::Pass);
    }

    #[test]
    fn bounded_and_evicts_the_least_recent() {
        let mut r = RateLimiter::new(1, Duration::from_secs(60), 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        assert_eq!(r.check(a, 0), Verdict::Pass);
        assert_eq!(r.check(b, 0), Verdict::Pass);
        assert_eq!(r.check(a, 0), Verdict::Limited { first: true });
        // c evicts b (a was seen more recently).
        assert_eq!(r.check(c, 0), Verdict::Pass);
        assert_eq!(r.len(), 2);
        assert_eq!(r.check(a, 0), Verdict::Limited { first: false });
        assert_eq!(r.check(b, 0), Verdict::Pass);
    }
}
