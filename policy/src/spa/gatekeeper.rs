//! The gatekeeper: every check a datagram must pass before it opens anything.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::packet::{self, Access, ms, unix_ms};
use super::rate::{RateLimiter, Verdict};
use super::replay::ReplayCache;
use super::{Rejected, SpaError, SpaKeys};

/// How the gatekeeper checks knocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateConfig {
    /// How far a knock's timestamp may be from our clock, either way (default 30 s).
    pub window: Duration,
    /// NAT mode: admit a knock whose claimed address differs from its source (the
    /// source is let in). Off by default.
    pub nat: bool,
    /// At most this many datagrams per this period from one source address, counted
    /// before any cryptography (default 5 per 10 s).
    pub per_source_rate: (u32, Duration),
    /// Where the replay cache persists, so that a restart forgets no admitted knock.
    /// `None` keeps it in memory only: then a knock admitted up to one window before a
    /// restart can be replayed once after it.
    pub replay_path: Option<PathBuf>,
    /// At most this many source addresses are rate-limited at once (default 4096); the
    /// least recently seen is forgotten first.
    pub max_sources: usize,
    /// At most this many admitted knocks are remembered (default 65536); when full, the
    /// oldest goes, and every knock at least as old counts as replayed.
    pub replay_capacity: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            nat: false,
            per_source_rate: (5, Duration::from_secs(10)),
            replay_path: None,
            max_sources: 4096,
            replay_capacity: 65536,
        }
    }
}

/// A knock that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The sender's node id, as sealed in the knock.
    pub node_id: String,
    /// The access it asked for.
    pub access: Access,
    /// The address to let in: the datagram's source (equal to `claimed` unless NAT
    /// mode is on). IPv4-mapped IPv6 sources are given as IPv4.
    pub addr: IpAddr,
    /// The address the sender sealed into the knock.
    pub claimed: IpAddr,
}

/// Counts of what the gatekeeper has seen, for tests and status output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Knocks admitted.
    pub admitted: u64,
    /// Datagrams refused, for any reason.
    pub rejected: u64,
    /// Of those, refused by the rate limit (before any cryptography).
    pub rate_limited: u64,
    /// Source addresses tracked by the rate limit now.
    pub sources: usize,
    /// Knocks in the replay cache now.
    pub replay_entries: usize,
}

/// Checks SPA datagrams: per-source rate, size, AEAD, contents, timestamp window,
/// address, replay, in that order. It has no sockets and sends nothing: the caller
/// receives datagrams and opens pinholes for what it admits.
///
/// Every refusal is logged here, in one line with the source address (`info` for
/// datagrams that are not authentic knocks, `warn` for authentic ones refused and for
/// the first datagram over a source's rate limit, `debug` for the rest of a flood
/// over the limit); every admission too (`info`). Callers need not log them again.
pub struct Gatekeeper {
    keys: SpaKeys,
    window_ms: u64,
    nat: bool,
    rate: RateLimiter,
    replay: ReplayCache,
    stats: GateStats,
}

impl std::fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("window_ms", &self.window_ms)
            .field("nat", &self.nat)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Gatekeeper {
    /// A gatekeeper with `keys`; loads the replay cache from `cfg.replay_path` (creating
    /// it if absent) as of the system clock now.
    pub fn new(keys: SpaKeys, cfg: GateConfig) -> Result<Self, SpaError> {
        Self::new_at(keys, cfg, SystemTime::now())
    }

    /// [`Gatekeeper::new`] as of `now` (what the clock says at start: the replay cache
    /// drops what is already outside the window).
    pub fn new_at(keys: SpaKeys, cfg: GateConfig, now: SystemTime) -> Result<Self, SpaError> {
        let GateConfig { window, nat, per_source_rate, replay_path, max_sources, replay_capacity } =
            cfg;
        let (count, period) = per_source_rate;
        if count == 0 || period.is_zero() {
            return Err(SpaError::Config(
                "per_source_rate must allow at least one datagram in a non-zero period",
            ));
        }
        if max_sources == 0 || replay_capacity == 0 {
            return Err(SpaError::Config("max_sources and replay_capacity must be at least 1"));
        }
        if window.is_zero() {
            return Err(SpaError::Config("the timestamp window must be longer than zero"));
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let replay =
            ReplayCache::open(replay_path.as_deref(), window_ms, replay_capacity, unix_ms(now))?;
        Ok(Self {
            keys,
            window_ms,
            nat,
            rate: RateLimiter::new(count, period, max_sources),
            replay,
            stats: GateStats::default(),
        })
    }

    /// Checks one datagram that arrived from `source` at `now`. Logs the outcome (see
    /// the type's docs).
    pub fn check(
        &mut self,
        datagram: &[u8],
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Admitted, Rejected> {
        let source = source.to_canonical();
        match self.verify(datagram, source, now) {
            Ok(a) => {
                self.stats.admitted += 1;
                info!(%source, node = %a.node_id, access = ?a.access, "SPA knock admitted");
                Ok(a)
            }
            Err((r, loud)) => {
                self.stats.rejected += 1;
                match (&r, loud) {
                    (Rejected::RateLimited, false) => {
                        self.stats.rate_limited += 1;
                        debug!(%source, "SPA datagram refused: {r}");
                    }
                    (Rejected::RateLimited, true) => {
                        self.stats.rate_limited += 1;
                        warn!(%source, "SPA datagram refused: {r} (further ones logged at debug until it slows down)");
                    }
                    (Rejected::Malformed { .. } | Rejected::Unauthentic, _) => {
                        info!(%source, "SPA datagram refused: {r}");
                    }
                    _ => warn!(%source, "SPA knock refused: {r}"),
                }
                Err(r)
            }
        }
    }

    fn verify(
        &mut self,
        datagram: &[u8],
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Admitted, (Rejected, bool)> {
        let quiet = |r| (r, false);
        // The rate limit comes first, before even the size check: every datagram a
        // source sends counts, so a flood of any shape costs one log line, not one each.
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        if let Verdict::Limited { first } = self.rate.check(source, micros) {
            return Err((Rejected::RateLimited, first));
        }
        if datagram.len() != packet::DATAGRAM_LEN {
            return Err(quiet(Rejected::Malformed { len: datagram.len() }));
        }
        let opened = packet::open(&self.keys, datagram).map_err(quiet)?;
        let node_id = opened.knock.node_id;
        let now_ms = unix_ms(now);
        let (skew, ahead) = if opened.timestamp_ms > now_ms {
            (opened.timestamp_ms - now_ms, true)
        } else {
            (now_ms - opened.timestamp_ms, false)
        };
        if skew > self.window_ms {
            return Err(quiet(Rejected::Stale {
                node_id,
                skew: ms(skew),
                ahead,
                window: ms(self.window_ms),
            }));
        }
        let claimed = opened.knock.addr.to_canonical();
        if claimed != source && !self.nat {
            return Err(quiet(Rejected::AddressMismatch { node_id, claimed, source }));
        }
        if self.replay.is_replay(opened.timestamp_ms, &opened.nonce) {
            return Err(quiet(Rejected::Replayed { node_id }));
        }
        if let Err(e) = self.replay.record(opened.timestamp_ms, opened.nonce, now_ms) {
            return Err(quiet(Rejected::ReplayStore { node_id, error: e.kind() }));
        }
        Ok(Admitted { node_id, access: opened.knock.access, addr: source, claimed })
    }

    /// What it has seen so far.
    pub fn stats(&self) -> GateStats {
        GateStats { sources: self.rate.len(), replay_entries: self.replay.len(), ..self.stats }
    }
}
