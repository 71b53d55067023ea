//! The IKE side: initiating, the endpoint's events (an IKE SA up or gone, child SAs,
//! the peer's level), duplicate IKE SAs, and the per-peer timers that rekey, check
//! liveness and re-authenticate.

use super::peer::{Child, IkeState, PeerKey, we_initiate};
use super::{
    CROSSING, HALF_OPEN_RECHECK, MAX_BACKOFF, PinholeOp, RESPONDER_GRACE, Supervisor, Timer,
};
use crate::rollout;
use ca::verify::PeerId;
use ike::endpoint::SaHandle;
use ike::sa::{Event, Role};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What the duplicate rule reads of one IKE SA, alike at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Claim {
    /// It was made claiming to be the only one (`INITIAL_CONTACT`).
    pub(super) only: bool,
    /// The preferred initiator (the lower name) made it.
    pub(super) preferred: bool,
}

/// The duplicate rule (see [`Supervisor::resolve_duplicate`]): whether the new SA is
/// kept, and whether the two came up within [`CROSSING`] of each other (`gap`), where
/// the two ends may disagree on which is new and only the lower name acts.
pub(super) fn duplicate_rule(old: Claim, new: Claim, gap: Duration) -> (bool, bool) {
    let ambiguous = gap < CROSSING;
    if new.only {
        return (true, ambiguous);
    }
    (!old.preferred || new.preferred, ambiguous)
}

impl Supervisor {
    // ---- timers ----

    pub(super) fn on_connect_due(&mut self, now: Instant, key: PeerKey) {
        let me = self.me.name.clone();
        let port = self.cfg.ike.port;
        let Some(p) = self.peers.get(&key) else { return };
        if p.sa.is_some() {
            return;
        }
        let heard =
            p.last_heard.is_some_and(|t| now.saturating_duration_since(t) < RESPONDER_GRACE);
        if p.adopted.is_empty() {
            if heard && !we_initiate(&me, &p.name) {
                // The initiator's exchange is under way: give it time before ours.
                self.timers.set(Timer::Connect(key), now + RESPONDER_GRACE);
                return;
            }
            if self.ep.half_open_from(p.remote) {
                // An IKE SA the peer started is still being made (its retransmissions
                // may be far apart): no crossing one until it is done or given up.
                self.timers.set(Timer::Connect(key), now + HALF_OPEN_RECHECK);
                return;
            }
        }
        if self.initiating.len() >= self.cfg.ike.max_initiating {
            // The window is full: the peer waits its turn (see `admit`).
            if self.queued.insert(key) {
                self.waiting.push_back(key);
            }
            return;
        }
        let Some(p) = self.peers.get_mut(&key) else { return };
        let (cfg, claim) = (p.ike.clone(), p.claim_only);
        let (local, remote) = (SocketAddr::new(p.local, port), SocketAddr::new(p.remote, port));
        let h = self.ep.connect(now, cfg, local, remote, &mut *self.rng);
        if claim {
            let _ = self.ep.with_sa(h, ike::sa::IkeSa::set_initial_contact);
        }
        self.track(h, key);
        self.initiating.insert(h);
        let Some(p) = self.peers.get_mut(&key) else { return };
        p.sa = Some(h);
        p.state = IkeState::Connecting;
        debug!(peer = %p.name, "initiating IKE");
    }

    /// Starts the waiting peers' IKE SAs while the window has room; whether any
    /// started. Initiations are paced by completions, not by a clock: a node with
    /// hundreds of peers keeps `ike.max_initiating` handshakes in flight, and a lossy
    /// link slows only the handshakes that cross it.
    pub(super) fn admit(&mut self, now: Instant) -> bool {
        let before = self.initiating.len();
        while self.initiating.len() < self.cfg.ike.max_initiating {
            let Some(key) = self.waiting.pop_front() else { break };
            self.queued.remove(&key);
            self.on_connect_due(now, key);
        }
        self.initiating.len() > before
    }

    pub(super) fn on_reauth_due(&mut self, now: Instant, key: PeerKey) {
        let port = self.cfg.ike.port;
        let Some(p) = self.peers.get(&key) else { return };
        if p.state != IkeState::Established {
            return;
        }
        let cfg = p.ike.clone();
        let (local, remote) = (SocketAddr::new(p.local, port), SocketAddr::new(p.remote, port));
        let h = self.ep.connect(now, cfg, local, remote, &mut *self.rng);
        let _ = self.ep.with_sa(h, ike::sa::IkeSa::set_initial_contact);
        self.track(h, key);
        self.initiating.insert(h);
        info!(peer = %self.peers[&key].name, "re-authenticating: a new IKE SA to replace the current one");
    }

    /// The peer's established IKE SA, if it has one.
    fn established(&self, key: PeerKey) -> Option<SaHandle> {
        let p = self.peers.get(&key)?;
        p.sa.filter(|_| p.state == IkeState::Established)
    }

    pub(super) fn on_child_rekey_due(&mut self, now: Instant, key: PeerKey) {
        let Some(h) = self.established(key) else { return };
        let next = self.jittered(self.cfg.ike.child_rekey, self.cfg.ike.jitter);
        self.timers.set(Timer::ChildRekey(key), now + next);
        let p = &self.peers[&key];
        if let Some(spi) = p.children.iter().rev().find(|c| c.sa == h).map(|c| c.pair.spi_in) {
            let rng = &mut *self.rng;
            let _ = self.ep.with_sa(h, |s| s.rekey_child(now, spi, rng));
        }
    }

    pub(super) fn on_ike_rekey_due(&mut self, now: Instant, key: PeerKey) {
        let Some(h) = self.established(key) else { return };
        let next = self.jittered(self.cfg.ike.rekey, self.cfg.ike.jitter);
        self.timers.set(Timer::IkeRekey(key), now + next);
        let rng = &mut *self.rng;
        let _ = self.ep.with_sa(h, |s| s.rekey_ike(now, rng));
    }

    /// Checks that the peer is alive on its IKE SA, and on any other established one
    /// we still hold with it: one left over from a duplicate whose Delete never came
    /// (the peer restarted, or the Delete was lost) goes when the peer does not answer.
    pub(super) fn on_liveness_due(&mut self, now: Instant, key: PeerKey) {
        let Some(current) = self.established(key) else { return };
        let next = self.jittered(self.cfg.ike.liveness, self.cfg.ike.jitter);
        self.timers.set(Timer::Liveness(key), now + next);
        let others: Vec<SaHandle> = self.peers[&key]
            .ike_sas
            .iter()
            .copied()
            .filter(|h| *h != current && !self.deleting.contains(h))
            .collect();
        for h in std::iter::once(current).chain(others) {
            let rng = &mut *self.rng;
            let _ = self.ep.with_sa(h, |s| s.check_liveness(now, rng));
        }
    }

    // ---- IKE events ----

    /// Which of two IKE SAs with one peer both ends keep, by what both ends see alike:
    /// a new SA that claims to be the only one (`INITIAL_CONTACT`: a restart, a
    /// re-authentication, a reconnection) replaces the old one, whatever the old one
    /// claimed: the end that made the claim holds no other SA with us, so the old one is
    /// dead there (a restart a few seconds after the old SA came up must not lose to
    /// it). Without a claim, the one the preferred initiator (the lower name) made, else
    /// the newer.
    ///
    /// Also says whether the two came up within [`CROSSING`] of each other: then the
    /// ends may see them in opposite orders, and only the lower name acts on the rule.
    pub(super) fn resolve_duplicate(
        &self,
        name: &str,
        old: SaHandle,
        new: SaHandle,
        old_age: Duration,
    ) -> (SaHandle, bool) {
        let facts = |h: SaHandle| Claim {
            only: self.ep.sa(h).is_some_and(ike::sa::IkeSa::initial_contact),
            preferred: self.ep.sa(h).is_some_and(|s| s.role() == Role::Initiator)
                == we_initiate(&self.me.name, name),
        };
        let (keep_new, ambiguous) = duplicate_rule(facts(old), facts(new), old_age);
        (if keep_new { new } else { old }, ambiguous)
    }

    /// Notes that IKE SA `h` is with peer `key`.
    pub(super) fn track(&mut self, h: SaHandle, key: PeerKey) {
        self.by_handle.insert(h, key);
        if let Some(p) = self.peers.get_mut(&key) {
            p.ike_sas.push(h);
        }
    }

    /// Forgets IKE SA `h`.
    fn untrack(&mut self, h: SaHandle) {
        self.initiating.remove(&h);
        if let Some(key) = self.by_handle.remove(&h)
            && let Some(p) = self.peers.get_mut(&key)
        {
            p.ike_sas.retain(|o| *o != h);
        }
    }

    /// Whether a child SA that came with IKE SA `h`'s `IKE_AUTH` waits to install its outbound SA.
    fn waits_on(&self, key: PeerKey, h: SaHandle) -> bool {
        self.peers.get(&key).is_some_and(|p| {
            p.children.iter().any(|c| c.sa == h && c.from_auth && c.pending_out.is_some())
        })
    }

    /// An IKE SA's SPIs for the log, as strongSwan and tcpdump show them.
    fn ike_spis(&self, h: SaHandle) -> String {
        self.ep.sa(h).map_or_else(String::new, |s| {
            let (i, r) = s.spis();
            format!("{i:016x}_i {r:016x}_r")
        })
    }

    /// The peer an event is about: the SA's, or for a responder SA that just came up,
    /// the member its certificate names (else the SA is deleted).
    fn owner(&mut self, now: Instant, h: SaHandle, event: &Event) -> Option<PeerKey> {
        if let Some(k) = self.by_handle.get(&h) {
            return Some(*k);
        }
        let Event::IkeUp { peer, .. } = event else { return None };
        let PeerId::Fqdn(name) = PeerId::from_ike(peer).ok()? else { return None };
        let Some(key) = self.key_of(&name) else {
            self.delete_ike(now, h);
            return None;
        };
        self.track(h, key);
        Some(key)
    }

    pub(super) fn on_event(&mut self, now: Instant, h: SaHandle, event: Event) {
        if matches!(event, Event::Closed { .. } | Event::Failed { .. }) {
            self.deleting.remove(&h);
        }
        if matches!(event, Event::IkeUp { .. } | Event::Closed { .. } | Event::Failed { .. }) {
            // Established or over: a place in the window is free.
            self.initiating.remove(&h);
        }
        let Some(key) = self.owner(now, h, &event) else { return };
        let Some(name) = self.peers.get(&key).map(|p| p.name.clone()) else { return };
        match event {
            Event::IkeUp { .. } => self.ike_up(now, key, &name, h),
            Event::ChildUp(c) => {
                // From IKE_AUTH: we asked when we initiated the IKE SA.
                let initiated = self.ep.sa(h).is_some_and(|s| s.role() == Role::Initiator);
                self.child_up(now, key, h, &c, None, initiated);
                let next = self.jittered(self.cfg.ike.child_rekey, self.cfg.ike.jitter);
                self.timers.set(Timer::ChildRekey(key), now + next);
            }
            Event::ChildRekeyed { child: c, old_spi_in, initiated } => {
                self.child_up(now, key, h, &c, Some(old_spi_in), initiated);
                let next = self.jittered(self.cfg.ike.child_rekey, self.cfg.ike.jitter);
                self.timers.set(Timer::ChildRekey(key), now + next);
            }
            Event::ChildDown { spi_in, spi_out } => {
                let Some(p) = self.peers.get_mut(&key) else { return };
                let gone: Vec<Child> =
                    p.children.extract_if(.., |c| c.pair.spi_in == spi_in).collect();
                debug!(peer = %name, spi_in = format_args!("{spi_in:#010x}"), spi_out = format_args!("{spi_out:#010x}"), "child SA down");
                self.retire(now, key, gone);
                let Some(p) = self.peers.get(&key) else { return };
                if p.children.is_empty() && p.adopted.is_empty() {
                    self.rollout.set_child_up(&name, false);
                }
                self.dirty();
            }
            Event::ChildFailed { rekey, error } => {
                let reason = match rekey {
                    Some(old) => format!("rekey of child SA {old:#010x}: {error}"),
                    None => format!("new child SA: {error}"),
                };
                warn!(peer = %name, "child SA refused: {reason}");
                if let Some(p) = self.peers.get_mut(&key) {
                    p.last_error = Some(format!("child SA: {reason}"));
                }
            }
            Event::IkeRekeyed { .. } => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.last_rekey = Some(now);
                }
                debug!(peer = %name, "IKE SA rekeyed");
            }
            Event::IkeRekeyFailed { error } => {
                let reason = error.to_string();
                warn!(peer = %name, "IKE rekey failed: {reason}");
                if let Some(p) = self.peers.get_mut(&key) {
                    p.last_error = Some(format!("IKE rekey: {reason}"));
                }
            }
            Event::Closed { error } | Event::Failed { error } => {
                self.sa_gone(now, key, h, &error.to_string());
            }
            Event::PeerNotify { .. } if self.waits_on(key, h) => {
                // The peer asks something on the new IKE SA: it has the answer to
                // IKE_AUTH, and the inbound SA of the child SA that came with it. (Not an
                // answer to our own request: that says nothing of what it holds.)
                self.install_pending_of(now, key, |c| c.sa == h && c.from_auth);
                self.on_event(now, h, event);
            }
            Event::PeerNotify { kind, data } if kind == rollout::LEVEL_NOTIFY => {
                match rollout::decode_level(&data) {
                    Ok(level) => {
                        debug!(peer = %name, %level, "peer announced its level");
                        self.rollout.announced(&name, level);
                        self.step_rollout(now);
                    }
                    Err(e) => warn!(peer = %name, "bad level announcement: {e}"),
                }
            }
            _ => {}
        }
    }

    fn ike_up(&mut self, now: Instant, key: PeerKey, name: &str, h: SaHandle) {
        let Some(p) = self.peers.get(&key) else { return };
        let mut keep = h;
        if let Some(old) = p.sa.filter(|o| *o != h && p.state == IkeState::Established) {
            let old_age = p.sa_up_at.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            let ambiguous;
            (keep, ambiguous) = self.resolve_duplicate(name, old, h, old_age);
            let drop = if keep == h { old } else { h };
            // Where the two came up close together (they may have crossed), the ends may
            // see them in opposite orders: one end decides, the lower name. Two
            // deciders could each keep the SA the other deletes, and lose both. The
            // other end keeps both until the decider's Delete arrives, and falls back on
            // whichever stays (`sa_gone`); if none comes (the decider holds only one of
            // them), the other dies by its liveness check, which starts now.
            if !ambiguous || we_initiate(&self.me.name, name) {
                info!(peer = %name, ike_spi = %self.ike_spis(drop), "two IKE SAs with the peer; deleting one");
                self.delete_ike(now, drop);
            } else {
                debug!(peer = %name, "two IKE SAs with the peer; it deletes one");
                let rng = &mut *self.rng;
                let _ = self.ep.with_sa(drop, |s| s.check_liveness(now, rng));
            }
        }
        if keep != h {
            return;
        }
        let rekey = self.jittered(self.cfg.ike.rekey, self.cfg.ike.jitter);
        let liveness = self.jittered(self.cfg.ike.liveness, self.cfg.ike.jitter);
        let gate = self.gate;
        let Some(p) = self.peers.get_mut(&key) else { return };
        if let Some(old) = p.sa.filter(|o| *o != h && p.state != IkeState::Established) {
            // Our own attempt crossed theirs: let ours go on quietly; if it comes up
            // too, the duplicate rule settles it.
            debug!(peer = %name, ?old, "peer's IKE SA came up while ours was connecting");
        }
        p.sa = Some(h);
        p.sa_up_at = Some(now);
        p.state = IkeState::Established;
        p.claim_only = false;
        p.backoff = Duration::from_secs(1);
        p.knocker.answered();
        p.last_error = None;
        let remote = p.remote;
        self.timers.cancel(Timer::Connect(key));
        self.timers.set(Timer::IkeRekey(key), now + rekey);
        self.timers.set(Timer::Liveness(key), now + liveness);
        if gate {
            self.actions.push_back(super::Action::Pinhole(PinholeOp::Keep(remote)));
        }
        info!(peer = %name, ike_spi = %self.ike_spis(h), "IKE SA established");
        self.announce(now, name);
    }

    /// An IKE SA ended: its children go, and the peer is reached again unless another
    /// SA carries it.
    fn sa_gone(&mut self, now: Instant, key: PeerKey, h: SaHandle, reason: &str) {
        self.untrack(h);
        self.deleting.remove(&h);
        let Some(p) = self.peers.get_mut(&key) else { return };
        let name = p.name.clone();
        let gone: Vec<Child> = p.children.extract_if(.., |c| c.sa == h).collect();
        let current = p.sa == Some(h);
        self.retire(now, key, gone);
        if !current {
            debug!(peer = %name, "a replaced IKE SA ended: {reason}");
            return;
        }
        // The peer (the end that settles duplicates) deleted the one we had taken as
        // current: another established SA with it carries on.
        let other = self.by_handle.iter().find_map(|(o, k)| {
            (*k == key
                && !self.deleting.contains(o)
                && self.ep.sa(*o).is_some_and(ike::sa::IkeSa::is_established))
            .then_some(*o)
        });
        if let Some(other) = other {
            if let Some(p) = self.peers.get_mut(&key) {
                p.sa = Some(other);
            }
            // (`retire` above already put in the waiting outbound SAs, if the ended SA's
            // children carried the traffic.)
            info!(peer = %name, "the IKE SA in use ended ({reason}); another established one carries on");
            return;
        }
        let initiator = we_initiate(&self.me.name, &name);
        let jitter = self.spread(1000);
        let on_demand = self.cfg.ike.on_demand;
        let gate = self.gate;
        let Some(p) = self.peers.get_mut(&key) else { return };
        let was = p.state;
        p.sa = None;
        p.state = IkeState::Down;
        // We hold no IKE SA with the peer now: the next one claims to be the only one.
        p.claim_only = true;
        p.knocker.reset();
        if was == IkeState::Established {
            warn!(peer = %name, "IKE SA ended: {reason}");
            p.backoff = Duration::from_secs(1);
        } else {
            warn!(peer = %name, "cannot reach the peer: {reason}");
            p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
        }
        p.last_error = Some(reason.to_owned());
        let next = if on_demand {
            None
        } else {
            let extra = if initiator { Duration::ZERO } else { RESPONDER_GRACE / 2 };
            Some(now + p.backoff + extra + jitter)
        };
        let remote = p.remote;
        let empty = p.children.is_empty() && p.adopted.is_empty();
        for t in [Timer::ChildRekey(key), Timer::IkeRekey(key), Timer::Liveness(key)] {
            self.timers.cancel(t);
        }
        self.timers.set_opt(Timer::Connect(key), next);
        if gate {
            self.actions.push_back(super::Action::Pinhole(PinholeOp::Release(remote)));
        }
        self.rollout.forget_announcement(&name);
        if empty {
            self.rollout.set_child_up(&name, false);
        }
        self.dirty();
        self.step_rollout(now);
    }
}
