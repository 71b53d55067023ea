//! Child SAs and the kernel: a new child's pair installed make-before-break, replaced
//! ones retired, a previous run's pairs adopted, and the kernel's EXPIRE and ACQUIRE
//! events.

use super::peer::{Child, IkeState, Pair, PeerKey};
use super::{Action, INBOUND_LINGER, KernelEvent, OUTBOUND_FALLBACK, Supervisor, Timer};
use ike::endpoint::SaHandle;
use ike::sa::ChildSa;
use std::collections::HashMap;
use std::time::Instant;
use tracing::{debug, info, warn};
use xfrm::{Crypto, Key, Lifetime, Sa, SaId};

/// A child SA as the pair of transport-mode AES-GCM SAs (inbound, outbound) under
/// `reqid`, with kernel lifetimes a little past our own rekey time: the soft one makes
/// the kernel ask for a rekey (an `EXPIRE` event) should our timer not have, the hard
/// one ends an SA that a dead daemon can no longer rekey.
pub(crate) fn kernel_sas(pair: &Pair, reqid: u32, child: &ChildSa, rekey_seconds: u64) -> [Sa; 2] {
    let lifetime = Lifetime {
        soft_seconds: Some(rekey_seconds + rekey_seconds / 10 + 30),
        hard_seconds: Some(rekey_seconds + rekey_seconds / 5 + 60),
        ..Lifetime::default()
    };
    let sa = |src, dst, spi, key: &[u8]| {
        let mut sa =
            Sa::transport(src, dst, spi, reqid, Crypto::AesGcm16 { key: Key::new(key.to_vec()) });
        sa.esn = child.algorithms.esn;
        sa.lifetime = lifetime;
        sa
    };
    [
        sa(pair.remote, pair.local, pair.spi_in, &child.key_in),
        sa(pair.local, pair.remote, pair.spi_out, &child.key_out),
    ]
}

impl Supervisor {
    pub(super) fn child_up(
        &mut self,
        now: Instant,
        key: PeerKey,
        h: SaHandle,
        c: &ChildSa,
        replaces: Option<u32>,
        initiated: bool,
    ) {
        let rekeyed = replaces.is_some();
        let rekey_seconds = self.cfg.ike.child_rekey.as_secs();
        let esp = self.esp;
        let Some(p) = self.peers.get_mut(&key) else { return };
        let name = p.name.clone();
        let pair = Pair { local: p.local, remote: p.remote, spi_in: c.spi_in, spi_out: c.spi_out };
        let mut pending_out = None;
        if esp {
            let [sa_in, sa_out] = kernel_sas(&pair, p.reqid, c, rekey_seconds);
            // Inbound first, at once; outbound at once only when nothing older carries
            // the traffic, else a little later (make before break).
            let older = p.has_kernel_child() || !p.stale_out.is_empty();
            self.actions.push_back(Action::AddSa(Box::new(sa_in)));
            if older {
                pending_out = Some(Box::new(sa_out));
                self.timers.set_earliest(Timer::PendingOut(key), now + OUTBOUND_FALLBACK);
            } else {
                self.actions.push_back(Action::AddSa(Box::new(sa_out)));
            }
        }
        let Some(p) = self.peers.get_mut(&key) else { return };
        if rekeyed {
            p.last_rekey = Some(now);
        }
        p.children.push(Child { pair, sa: h, installed: esp, pending_out, from_auth: !rekeyed });
        if !esp {
            p.adopted.clear();
        }
        info!(peer = %name, spi_in = format_args!("{:#010x}", c.spi_in), spi_out = format_args!("{:#010x}", c.spi_out), installed = esp, "child SA up");
        // We asked for it (in IKE_AUTH or a rekey) and have the answer: the peer
        // installed its inbound SA before answering, so ours can carry the traffic now.
        // (Answering, we wait until the peer shows it has the answer.)
        if initiated {
            self.install_pending_of(now, key, |x| x.pair.spi_in == c.spi_in);
        }
        self.rollout.set_child_up(&name, true);
        self.dirty();
        self.step_rollout(now);
    }

    /// Installs every waiting outbound SA of a peer (a replacement is needed now, or its
    /// time has come); then what the last run left can go.
    pub(super) fn install_pending(&mut self, now: Instant, key: PeerKey) {
        self.install_pending_of(now, key, |_| true);
    }

    /// Installs the waiting outbound SAs of the peer's children that `which` picks
    /// (those the peer is known to hold the inbound SA of).
    pub(super) fn install_pending_of(
        &mut self,
        now: Instant,
        key: PeerKey,
        which: impl Fn(&Child) -> bool,
    ) {
        let Some(p) = self.peers.get_mut(&key) else { return };
        let mut any = false;
        for c in p.children.iter_mut().filter(|c| which(c)) {
            if let Some(sa) = c.pending_out.take() {
                any = true;
                self.actions.push_back(Action::AddSa(sa));
            }
        }
        if p.children.iter().all(|c| c.pending_out.is_none()) {
            self.timers.cancel(Timer::PendingOut(key));
        }
        // Outbound SAs of children we retired while the peer still held them.
        for id in std::mem::take(&mut p.stale_out) {
            self.actions.push_back(Action::DeleteSa(id));
        }
        if any && p.children.iter().any(|c| c.installed) {
            let adopted: Vec<Pair> = std::mem::take(&mut p.adopted);
            if !adopted.is_empty() {
                self.dirty();
            }
            for a in adopted {
                self.actions.push_back(Action::DeleteSa(a.out_id()));
                self.linger(now, a.in_id());
            }
        }
    }

    fn linger(&mut self, now: Instant, id: SaId) {
        let i = self.next_id();
        self.lingering.insert(i, id);
        self.timers.set(Timer::Linger(i), now + INBOUND_LINGER);
    }

    /// Takes replaced child SAs out of the kernel: a replacement's waiting outbound SA
    /// goes in first, the old outbound SA goes at once, its inbound SA a little later.
    pub(super) fn retire(&mut self, now: Instant, key: PeerKey, gone: Vec<Child>) {
        if gone.iter().all(|c| !c.installed) {
            return;
        }
        self.install_pending(now, key);
        self.retire_now(now, gone);
    }

    /// Takes replaced child SAs out whose peer still holds them: we asked for their
    /// delete, and the peer keeps their inbound SAs a while after it arrives (or, having
    /// restarted, holds them adopted). Their outbound SAs carry on until the waiting
    /// outbound SAs go in (see [`OUTBOUND_FALLBACK`]), so that the peer has installed
    /// the new inbound SA before we send on it.
    pub(super) fn retire_later(&mut self, now: Instant, key: PeerKey, gone: Vec<Child>) {
        for c in gone.into_iter().filter(|c| c.installed) {
            if c.pending_out.is_none()
                && let Some(p) = self.peers.get_mut(&key)
            {
                p.stale_out.push(c.pair.out_id());
            }
            self.linger(now, c.pair.in_id());
        }
        self.timers.set_earliest(Timer::PendingOut(key), now + OUTBOUND_FALLBACK);
        self.dirty();
    }

    fn retire_now(&mut self, now: Instant, gone: Vec<Child>) {
        for c in gone.into_iter().filter(|c| c.installed) {
            if c.pending_out.is_none() {
                self.actions.push_back(Action::DeleteSa(c.pair.out_id()));
            }
            self.linger(now, c.pair.in_id());
        }
        self.dirty();
    }

    /// Adopts the child SAs a previous run left (of current peers, between the peer's
    /// addresses), and deletes SAs of ours that belong to no peer. The pairs recorded
    /// in the state directory are kept together; SAs installed after the last save (a
    /// crash in between) are adopted too, each on its own.
    pub(super) fn adopt(&mut self, now: Instant, sas: &[(SaId, u32)]) {
        if !self.esp {
            return;
        }
        let mut stale = Vec::new();
        let mut found: HashMap<PeerKey, Vec<SaId>> = HashMap::new();
        for (id, reqid) in sas {
            let owner = self.by_reqid.get(reqid).and_then(|k| self.peers.get(k));
            match owner {
                Some(p)
                    if (id.dst == p.local && id.src == p.remote)
                        || (id.dst == p.remote && id.src == p.local) =>
                {
                    found.entry(p.key).or_default().push(*id);
                }
                _ => stale.push(*id),
            }
        }
        for (key, ids) in found {
            let Some(p) = self.peers.get_mut(&key) else { continue };
            let recorded = self.state.children.get(&p.name).cloned().unwrap_or_default();
            let mut inbound: Vec<u32> =
                ids.iter().filter(|i| i.dst == p.local).map(|i| i.spi).collect();
            let mut outbound: Vec<u32> =
                ids.iter().filter(|i| i.dst == p.remote).map(|i| i.spi).collect();
            for (spi_in, spi_out) in recorded {
                let has_in = inbound.contains(&spi_in);
                let has_out = outbound.contains(&spi_out);
                if has_in || has_out {
                    inbound.retain(|s| *s != spi_in);
                    outbound.retain(|s| *s != spi_out);
                    p.adopted.push(Pair { local: p.local, remote: p.remote, spi_in, spi_out });
                }
            }
            // Unrecorded halves: paired in the order found (a pair's two halves are
            // only ever deleted together, so a wrong pairing costs nothing).
            let n = inbound.len().max(outbound.len());
            for i in 0..n {
                let spi_in = inbound.get(i).copied().unwrap_or(0);
                let spi_out = outbound.get(i).copied().unwrap_or(0);
                p.adopted.push(Pair { local: p.local, remote: p.remote, spi_in, spi_out });
            }
            info!(peer = %p.name, children = p.adopted.len(), "adopted child SAs left in the kernel by the previous run");
            let name = p.name.clone();
            self.rollout.set_child_up(&name, true);
            // We restarted and the peer may still hold its IKE SA with us: make the new
            // one at once, claiming to be the only one, whoever's turn it is.
            if !self.cfg.ike.on_demand {
                let at = now + self.spread(500);
                self.timers.set(Timer::Connect(key), at);
            }
        }
        if !stale.is_empty() {
            info!(count = stale.len(), "deleting SAs of ours that belong to no current peer");
            for id in stale {
                self.actions.push_back(Action::DeleteSa(id));
            }
        }
        self.dirty();
    }

    pub(super) fn on_kernel(&mut self, now: Instant, e: &KernelEvent) {
        match e {
            KernelEvent::Expire { sa, reqid, hard } => {
                let Some(key) = self.by_reqid.get(reqid).copied() else { return };
                let Some(p) = self.peers.get(&key) else { return };
                let Some((h, spi_in)) = p
                    .children
                    .iter()
                    .find(|c| c.pair.spi_in == sa.spi || c.pair.spi_out == sa.spi)
                    .map(|c| (c.sa, c.pair.spi_in))
                else {
                    return;
                };
                if *hard {
                    warn!(peer = %p.name, "a child SA reached its hard lifetime: the kernel deleted it");
                } else if p.state == IkeState::Established && Some(h) == p.sa {
                    info!(peer = %p.name, "the kernel asks for a rekey (soft lifetime)");
                    let rng = &mut *self.rng;
                    let _ = self.ep.with_sa(h, |s| s.rekey_child(now, spi_in, rng));
                }
            }
            KernelEvent::Acquire { reqid } if self.cfg.ike.on_demand => {
                let Some(key) = self.by_reqid.get(reqid).copied() else { return };
                if let Some(p) = self.peers.get(&key)
                    && p.sa.is_none()
                    && self.timers.get(Timer::Connect(key)).is_none()
                {
                    debug!(peer = %p.name, "traffic for the peer: initiating (on demand)");
                    self.timers.set(Timer::Connect(key), now);
                }
            }
            KernelEvent::AddFailed { sa, error } => {
                let Some(key) = self
                    .by_addr
                    .get(&sa.src.to_canonical())
                    .or_else(|| self.by_addr.get(&sa.dst.to_canonical()))
                    .copied()
                else {
                    return;
                };
                let Some(p) = self.peers.get_mut(&key) else { return };
                warn!(peer = %p.name, spi = format_args!("{:#010x}", sa.spi), "cannot install a child SA: {error}");
                p.last_error = Some(format!("install: {error}"));
                if let Some(c) = p
                    .children
                    .iter_mut()
                    .find(|c| c.pair.spi_in == sa.spi || c.pair.spi_out == sa.spi)
                {
                    // A child whose inbound SA did not go in is not installed; its other
                    // half goes too.
                    if c.installed {
                        c.installed = false;
                        c.pending_out = None;
                        let other =
                            if c.pair.spi_in == sa.spi { c.pair.out_id() } else { c.pair.in_id() };
                        self.actions.push_back(Action::DeleteSa(other));
                        self.dirty();
                    }
                }
            }
            KernelEvent::Acquire { .. } => {}
        }
    }
}
