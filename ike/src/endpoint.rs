//! The endpoint: every IKE SA of one UDP socket, and the routing of datagrams to them.
//!
//! Like quinn-proto's `Endpoint`, it owns no socket and reads no clock. The daemon
//! feeds it datagrams with [`Endpoint::handle`] and takes datagrams to send
//! ([`Endpoint::poll_transmit`]), events ([`Endpoint::poll_event`]) and its next
//! wake-up ([`Endpoint::poll_timeout`]) out.
//!
//! Routing (RFC 7296 sections 2.6 and 3.1): a datagram is for the SA holding the SPI
//! that the header gives to *us* — the responder's SPI when the sender is the original
//! initiator, the initiator's otherwise — including SPIs of IKE SAs replaced by a rekey
//! until they are deleted. An `IKE_SA_INIT` request (responder SPI zero) goes to the
//! half-open SA already made for that peer address and initiator SPI (a retransmission,
//! answered again from its cache) or makes a new responder SA. When too many SAs are
//! half open, new requests must carry a cookie first (section 2.6): the endpoint answers
//! `N(COOKIE)` and keeps nothing. Half-open SAs that do not finish in time are dropped.
//!
//! Each SA keeps the local address its datagrams arrived on (or, for an initiator, the
//! one given to [`Endpoint::connect`]): its [`Transmit`]s say to send from there, so a
//! host with several addresses answers from the address the peer talks to.
//!
//! Timers cost O(log n) in the number of SAs: the endpoint keeps the SAs' deadlines in a
//! min-heap, updated whenever an SA changes, with stale entries skipped when they reach
//! the top (lazy deletion).

use crate::cookie::{Cookies, Gate};
use crate::crypto::Random;
use crate::error::Error;
use crate::sa::{Config, Event, IkeSa, Role};
use crate::wire::{ExchangeType, HeaderPacket, HeaderRepr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Names one IKE SA of an endpoint (stable across rekeys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaHandle(pub u64);

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address to send from.
    pub local: SocketAddr,
    /// Where to.
    pub remote: SocketAddr,
    /// The datagram.
    pub datagram: Vec<u8>,
}

/// Chooses the configuration for a peer that starts an IKE SA with us, by its address;
/// `None` refuses it (the datagram is dropped).
pub type ResponderConfig = dyn Fn(SocketAddr) -> Option<Arc<Config>> + Send + Sync;

/// How the endpoint guards its responder side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Half-open SAs above which new `IKE_SA_INIT` requests must bring a cookie.
    pub cookie_threshold: usize,
    /// Half-open SAs at most; beyond this, new requests are dropped even with a cookie.
    pub max_half_open: usize,
    /// How long a responder SA may stay half open.
    pub half_open_timeout: Duration,
    /// How often the cookie secret changes.
    pub cookie_rotation: Duration,
}

impl Default for Limits {
    /// Cookies above 32 half-open SAs, at most 4096, 30 s to finish, a new cookie
    /// secret every 2 minutes.
    fn default() -> Self {
        Self {
            cookie_threshold: 32,
            max_half_open: 4096,
            half_open_timeout: Duration::from_secs(30),
            cookie_rotation: Duration::from_secs(120),
        }
    }
}

struct Slot {
    sa: IkeSa,
    /// Our address the SA's datagrams go out from: where the peer's last datagram
    /// arrived, or for an initiator before any, the one given to `connect`.
    local: SocketAddr,
    remote: SocketAddr,
    /// For a responder SA until it is established: when it was made.
    half_open_since: Option<Instant>,
    /// Its key in [`Endpoint::half_open`], while it is there.
    half_open_key: Option<(SocketAddr, u64)>,
    /// The SPIs this slot is routed under.
    spis: Vec<u64>,
    /// The deadline this slot has in the endpoint's timer heap; an entry of the heap
    /// for this slot with another instant is stale.
    timer: Option<Instant>,
}

/// All IKE SAs of one socket.
pub struct Endpoint {
    responder: Box<ResponderConfig>,
    limits: Limits,
    cookies: Cookies,
    next_rotation: Option<Instant>,
    next_handle: u64,
    slots: HashMap<SaHandle, Slot>,
    by_spi: HashMap<u64, SaHandle>,
    /// Half-open responder SAs by (peer address, initiator SPI), ordered so that those
    /// of one peer address are found in O(log n).
    half_open: BTreeMap<(SocketAddr, u64), SaHandle>,
    /// Every slot's `timer`, earliest first, plus stale entries (see `Slot::timer`);
    /// the top entry is never stale.
    timers: BinaryHeap<Reverse<(Instant, SaHandle)>>,
    transmit: VecDeque<Transmit>,
    events: VecDeque<(SaHandle, Event)>,
    /// Requests sent again, over every SA this endpoint had.
    retransmissions: u64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("sas", &self.slots.len())
            .field("half_open", &self.half_open.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What the header of a datagram says about where it goes.
fn route_of(datagram: &[u8]) -> Option<HeaderRepr> {
    HeaderPacket::new_checked(datagram).ok().and_then(|p| HeaderRepr::parse(&p).ok())
}

impl Endpoint {
    /// An endpoint; `responder` picks the configuration for peers that start IKE SAs.
    pub fn new(responder: Box<ResponderConfig>, limits: Limits, rng: &mut dyn Random) -> Self {
        Self {
            responder,
            limits,
            cookies: Cookies::new(rng),
            next_rotation: None,
            next_handle: 1,
            slots: HashMap::new(),
            by_spi: HashMap::new(),
            half_open: BTreeMap::new(),
            timers: BinaryHeap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            retransmissions: 0,
        }
    }

    /// Starts an IKE SA with `remote` as initiator, sending from our address `local`.
    pub fn connect(
        &mut self,
        now: Instant,
        cfg: Arc<Config>,
        local: SocketAddr,
        remote: SocketAddr,
        rng: &mut dyn Random,
    ) -> SaHandle {
        let sa = IkeSa::initiate(cfg, now, rng);
        self.insert(sa, (local, remote), None)
    }

    fn insert(
        &mut self,
        sa: IkeSa,
        (local, remote): (SocketAddr, SocketAddr),
        half_open: Option<Instant>,
    ) -> SaHandle {
        let handle = SaHandle(self.next_handle);
        self.next_handle += 1;
        let slot = Slot {
            sa,
            local,
            remote,
            half_open_since: half_open,
            half_open_key: None,
            spis: Vec::new(),
            timer: None,
        };
        self.slots.insert(handle, slot);
        self.settle(handle);
        handle
    }

    /// The IKE SA behind a handle.
    pub fn sa(&self, handle: SaHandle) -> Option<&IkeSa> {
        self.slots.get(&handle).map(|s| &s.sa)
    }

    /// Runs `f` on an SA (to rekey it, delete it...), then collects what it produced.
    pub fn with_sa<T>(&mut self, handle: SaHandle, f: impl FnOnce(&mut IkeSa) -> T) -> Option<T> {
        let out = f(&mut self.slots.get_mut(&handle)?.sa);
        self.settle(handle);
        Some(out)
    }

    /// The SAs, in no particular order.
    pub fn handles(&self) -> Vec<SaHandle> {
        self.slots.keys().copied().collect()
    }

    /// Responder SAs not yet established.
    pub fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// Whether a peer at `ip` has an IKE SA with us under way that it started: the
    /// daemon does not start a crossing one while the peer's is making progress.
    #[must_use]
    pub fn half_open_from(&self, ip: IpAddr) -> bool {
        let first = (SocketAddr::new(ip, 0), 0);
        let last = (SocketAddr::new(ip, u16::MAX), u64::MAX);
        self.half_open.range(first..=last).next().is_some()
    }

    /// Feeds a datagram from `remote` that arrived on our address `local`. Datagrams for
    /// no SA of ours, and malformed ones, are dropped; the SA it went to, if any.
    pub fn handle(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        rng: &mut dyn Random,
    ) -> Option<SaHandle> {
        self.next_rotation.get_or_insert(now + self.limits.cookie_rotation);
        let h = route_of(datagram)?;
        // The sender's side decides which SPI is ours.
        let ours = if h.flags.initiator { h.spi_r } else { h.spi_i };
        let handle = if h.flags.initiator && h.spi_r == 0 {
            if h.exchange_type != ExchangeType::IkeSaInit || h.flags.response {
                return None;
            }
            match self.half_open.get(&(remote, h.spi_i)) {
                Some(&handle) => handle,
                None => return self.accept(now, (local, remote), datagram, rng),
            }
        } else {
            *self.by_spi.get(&ours)?
        };
        let slot = self.slots.get_mut(&handle)?;
        slot.local = local;
        slot.remote = remote;
        slot.sa.handle_parsed(now, h, datagram, rng);
        self.settle(handle);
        Some(handle)
    }

    /// A new `IKE_SA_INIT` request: through the cookie gate, then a new responder SA.
    fn accept(
        &mut self,
        now: Instant,
        (local, remote): (SocketAddr, SocketAddr),
        datagram: &[u8],
        rng: &mut dyn Random,
    ) -> Option<SaHandle> {
        let cfg = (self.responder)(remote)?;
        let load = self.half_open.len();
        if load >= self.limits.max_half_open {
            return None;
        }
        match self.cookies.gate(datagram, remote.ip(), load >= self.limits.cookie_threshold) {
            Gate::Pass => {}
            Gate::Challenge(reply) => {
                self.transmit.push_back(Transmit { local, remote, datagram: reply });
                return None;
            }
            Gate::Drop => return None,
        }
        let (sa, refusal) = IkeSa::respond(cfg, datagram, rng);
        if let Some(reply) = refusal {
            self.transmit.push_back(Transmit { local, remote, datagram: reply });
        }
        let sa = sa?;
        let spi_i = sa.spis().0;
        let handle = self.insert(sa, (local, remote), Some(now));
        self.half_open.insert((remote, spi_i), handle);
        if let Some(slot) = self.slots.get_mut(&handle) {
            slot.half_open_key = Some((remote, spi_i));
        }
        Some(handle)
    }

    /// Collects an SA's datagrams and events, updates its routes and its timer, and
    /// removes it once it is over.
    fn settle(&mut self, handle: SaHandle) {
        self.settle_slot(handle);
        self.prune_timers();
    }

    fn settle_slot(&mut self, handle: SaHandle) {
        let Some(slot) = self.slots.get_mut(&handle) else { return };
        while let Some(datagram) = slot.sa.poll_transmit() {
            self.transmit.push_back(Transmit { local: slot.local, remote: slot.remote, datagram });
        }
        while let Some(event) = slot.sa.poll_event() {
            self.events.push_back((handle, event));
        }
        if slot.half_open_since.is_some() && slot.sa.is_established() {
            slot.half_open_since = None;
            if let Some(k) = slot.half_open_key.take() {
                self.half_open.remove(&k);
            }
        }
        let spis = if slot.sa.is_closed() { Vec::new() } else { slot.sa.local_spis() };
        if spis != slot.spis {
            for old in &slot.spis {
                self.by_spi.remove(old);
            }
            for new in &spis {
                self.by_spi.insert(*new, handle);
            }
            slot.spis = spis;
        }
        if slot.sa.is_closed() {
            if let Some(k) = slot.half_open_key.take() {
                self.half_open.remove(&k);
            }
            self.slots.remove(&handle);
            return;
        }
        let half_open = slot.half_open_since.map(|t| t + self.limits.half_open_timeout);
        let deadline = match (slot.sa.poll_timeout(), half_open) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline != slot.timer {
            slot.timer = deadline;
            if let Some(t) = deadline {
                self.timers.push(Reverse((t, handle)));
            }
        }
    }

    /// Whether a heap entry is still its slot's deadline.
    fn is_current(&self, (t, handle): (Instant, SaHandle)) -> bool {
        self.slots.get(&handle).is_some_and(|s| s.timer == Some(t))
    }

    /// Drops stale entries from the top of the timer heap, so that its top is the
    /// earliest deadline of all SAs.
    fn prune_timers(&mut self) {
        while let Some(&Reverse(top)) = self.timers.peek() {
            if self.is_current(top) {
                return;
            }
            self.timers.pop();
        }
    }

    /// When [`Endpoint::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sas = self.timers.peek().map(|Reverse((t, _))| *t);
        match (sas, self.next_rotation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lets time pass for every SA: retransmissions, give-ups, held-back requests; drops
    /// half-open SAs that took too long; rotates the cookie secret.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Random) {
        match self.next_rotation {
            None => self.next_rotation = Some(now + self.limits.cookie_rotation),
            Some(t) if now >= t => {
                self.cookies.rotate(rng);
                self.next_rotation = Some(now + self.limits.cookie_rotation);
            }
            Some(_) => {}
        }
        // The due SAs, earliest first; each is taken off the heap (its `timer` cleared)
        // and put back by `settle` with its next deadline.
        let mut due = Vec::new();
        while let Some(&Reverse((t, handle))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(slot) = self.slots.get_mut(&handle)
                && slot.timer == Some(t)
            {
                slot.timer = None;
                due.push(handle);
            }
        }
        for &handle in &due {
            if let Some(slot) = self.slots.get_mut(&handle)
                && slot.sa.poll_timeout().is_some_and(|t| t <= now)
            {
                let before = slot.sa.retransmissions();
                slot.sa.handle_timeout(now, rng);
                self.retransmissions += u64::from(slot.sa.retransmissions() - before);
            }
            self.settle_slot(handle);
        }
        let half_open_timeout = self.limits.half_open_timeout;
        for handle in due {
            let expired = self.slots.get(&handle).is_some_and(|s| {
                s.sa.role() == Role::Responder
                    && s.half_open_since.is_some_and(|t| now >= t + half_open_timeout)
            });
            if !expired {
                continue;
            }
            if let Some(slot) = self.slots.remove(&handle) {
                for spi in &slot.spis {
                    self.by_spi.remove(spi);
                }
                if let Some(k) = slot.half_open_key {
                    self.half_open.remove(&k);
                }
                self.events.push_back((handle, Event::Failed { error: Error::HalfOpenExpired }));
            }
        }
        self.prune_timers();
    }

    /// Requests sent again (retransmissions), over every SA this endpoint had.
    #[must_use]
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
    }

    /// Next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    /// Next event, with the SA it is about.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<(SaHandle, Event)> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::dh::{Group, KeyPair};
    use crate::crypto::tests::TestRng;
    use crate::exchange::ike_sa_init;
    use crate::proposal::{Policy, ike_proposals};
    use crate::sa::Retransmit;
    use crate::sa::tests::pair_configs;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const A: &str = "10.0.0.1:500";
    const B: &str = "10.0.0.2:500";

    /// Two endpoints, A and B; B answers A.
    fn pair(rng: &mut TestRng, limits: Limits) -> (Endpoint, Endpoint, Arc<Config>) {
        let (a_cfg, b_cfg) = pair_configs(1);
        let a = Endpoint::new(Box::new(|_| None), limits, rng);
        let b = Endpoint::new(
            Box::new(move |from| (from == addr(A)).then(|| b_cfg.clone())),
            limits,
            rng,
        );
        (a, b, a_cfg)
    }

    /// Moves datagrams between A and B (and drops the ones to anyone else) until quiet.
    fn shuttle(a: &mut Endpoint, b: &mut Endpoint, now: Instant, rng: &mut TestRng) -> usize {
        let mut moved = 0;
        loop {
            let mut any = false;
            while let Some(t) = a.poll_transmit() {
                if t.remote == addr(B) {
                    b.handle(now, addr(B), addr(A), &t.datagram, rng);
                }
                moved += 1;
                any = true;
            }
            while let Some(t) = b.poll_transmit() {
                if t.remote == addr(A) {
                    a.handle(now, addr(A), addr(B), &t.datagram, rng);
                }
                moved += 1;
                any = true;
            }
            if !any {
                return moved;
            }
        }
    }

    fn drain(ep: &mut Endpoint) -> Vec<(SaHandle, Event)> {
        std::iter::from_fn(|| ep.poll_event()).collect()
    }

    #[test]
    fn datagrams_reach_their_sa_through_establishment_and_rekeys() {
        let mut rng = TestRng::new(60);
        let now = Instant::now();
        let (mut a, mut b, a_cfg) = pair(&mut rng, Limits::default());
        let ha = a.connect(now, a_cfg, addr(A), addr(B), &mut rng);
        shuttle(&mut a, &mut b, now, &mut rng);
        let hb = b.handles()[0];
        assert!(a.sa(ha).unwrap().is_established() && b.sa(hb).unwrap().is_established());
        assert_eq!(b.half_open(), 0);
        let before = a.sa(ha).unwrap().spis();
        assert!(b.with_sa(hb, |sa| sa.rekey_ike(now, &mut rng)).unwrap());
        shuttle(&mut a, &mut b, now, &mut rng);
        let after = a.sa(ha).unwrap().spis();
        assert_ne!(before, after);
        assert_eq!(b.sa(hb).unwrap().spis(), after);
        assert_eq!(a.by_spi.len(), 1, "the old SPI is gone with the old SA");
        assert!(a.with_sa(ha, |sa| sa.check_liveness(now, &mut rng)).unwrap());
        shuttle(&mut a, &mut b, now, &mut rng);
        assert!(drain(&mut a).iter().any(|(h, e)| *h == ha && matches!(e, Event::PeerAlive)));
        assert!(b.with_sa(hb, |sa| sa.delete(now, &mut rng)).unwrap());
        shuttle(&mut a, &mut b, now, &mut rng);
        assert!(a.handles().is_empty() && b.handles().is_empty(), "closed SAs are removed");
        assert!(a.by_spi.is_empty() && b.by_spi.is_empty());
    }

    #[test]
    fn stray_and_malformed_datagrams_are_dropped() {
        let mut rng = TestRng::new(61);
        let now = Instant::now();
        let (mut a, mut b, a_cfg) = pair(&mut rng, Limits::default());
        a.connect(now, a_cfg, addr(A), addr(B), &mut rng);
        let init = a.poll_transmit().unwrap().datagram;
        assert_eq!(
            b.handle(now, addr(B), addr("10.9.9.9:500"), &init, &mut rng),
            None,
            "not a member"
        );
        assert!(b.poll_transmit().is_none() && b.handles().is_empty());
        for junk in [&b""[..], b"short", &[0u8; 28], &init[..27]] {
            assert_eq!(b.handle(now, addr(B), addr(A), junk, &mut rng), None);
        }
        let mut wrong_spi = init.clone();
        wrong_spi[8..16].copy_from_slice(&[9; 8]); // a responder SPI we never gave out
        assert_eq!(b.handle(now, addr(B), addr(A), &wrong_spi, &mut rng), None);
        assert!(b.handles().is_empty());
    }

    #[test]
    fn a_retransmitted_ike_sa_init_reaches_the_same_half_open_sa() {
        let mut rng = TestRng::new(62);
        let now = Instant::now();
        let (mut a, mut b, a_cfg) = pair(&mut rng, Limits::default());
        a.connect(now, a_cfg, addr(A), addr(B), &mut rng);
        let init = a.poll_transmit().unwrap().datagram;
        let first = b.handle(now, addr(B), addr(A), &init, &mut rng).unwrap();
        let reply = b.poll_transmit().unwrap();
        assert_eq!(b.handle(now, addr(B), addr(A), &init, &mut rng), Some(first));
        assert_eq!(b.poll_transmit().unwrap(), reply, "the same answer again");
        assert_eq!((b.handles().len(), b.half_open()), (1, 1));
        assert!(b.half_open_from(addr(A).ip()) && !b.half_open_from(addr(B).ip()));
        // Half-open SAs that never finish go away.
        let later = now + Limits::default().half_open_timeout;
        b.handle_timeout(now, &mut rng);
        b.handle_timeout(later, &mut rng);
        assert_eq!((b.handles().len(), b.half_open()), (0, 0));
        assert!(!b.half_open_from(addr(A).ip()));
        assert!(
            drain(&mut b).iter().any(|(h, e)| *h == first && matches!(e, Event::Failed { .. }))
        );
    }

    /// An `IKE_SA_INIT` request from a spoofed source that never goes further.
    fn flood_request(rng: &mut TestRng, spi: u64) -> Vec<u8> {
        let p = Policy::default();
        let kp = KeyPair::generate(Group::Curve25519, rng);
        let offer = ike_proposals(&p.ciphers, &p.prfs, &p.groups, &[]);
        ike_sa_init::request(spi, &offer, &kp, &[spi as u8; 32], None)
    }

    #[test]
    fn under_a_half_open_flood_new_peers_must_bring_a_cookie_and_real_ones_get_through() {
        let mut rng = TestRng::new(63);
        let now = Instant::now();
        let limits = Limits { cookie_threshold: 8, max_half_open: 100, ..Limits::default() };
        let (a_cfg, b_cfg) = pair_configs(1);
        // B answers anyone (the flood comes from many addresses) with A's config.
        let mut b = Endpoint::new(Box::new(move |_| Some(b_cfg.clone())), limits, &mut rng);
        let mut a = Endpoint::new(Box::new(|_| None), limits, &mut rng);
        let mut challenged = 0;
        for i in 0..200u64 {
            let from = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 500));
            b.handle(now, addr(B), from, &flood_request(&mut rng, 1000 + i), &mut rng);
            while let Some(t) = b.poll_transmit() {
                assert_eq!(t.remote, from);
                let m = crate::wire::Message::parse(&t.datagram).unwrap();
                if m.payloads.iter().any(|p| matches!(p, crate::wire::Payload::Notify(n) if n.kind == crate::wire::notify::NotifyType::Cookie)) {
                    challenged += 1;
                }
            }
        }
        assert_eq!(b.half_open(), 8, "state stops growing at the threshold");
        assert_eq!(challenged, 192, "every later request was asked for a cookie");
        // A real initiator answers the challenge and completes.
        let ha = a.connect(now, a_cfg, addr(A), addr(B), &mut rng);
        shuttle(&mut a, &mut b, now, &mut rng);
        assert!(a.sa(ha).unwrap().is_established(), "through the cookie exchange");
        assert_eq!(b.half_open(), 8);
    }

    #[test]
    fn datagrams_go_out_from_the_local_address_they_came_in_on() {
        let mut rng = TestRng::new(64);
        let now = Instant::now();
        let (mut a, mut b, a_cfg) = pair(&mut rng, Limits::default());
        let (a_local, b_local) = (addr("10.0.0.1:4500"), addr("10.0.0.2:4500"));
        let ha = a.connect(now, a_cfg, a_local, addr(B), &mut rng);
        let mut seen = 0;
        for _ in 0..4 {
            while let Some(t) = a.poll_transmit() {
                assert_eq!((t.local, t.remote), (a_local, addr(B)));
                b.handle(now, b_local, addr(A), &t.datagram, &mut rng);
                seen += 1;
            }
            while let Some(t) = b.poll_transmit() {
                assert_eq!((t.local, t.remote), (b_local, addr(A)), "answered from where it came");
                a.handle(now, a_local, addr(B), &t.datagram, &mut rng);
                seen += 1;
            }
        }
        assert_eq!(seen, 4);
        assert!(a.sa(ha).unwrap().is_established());
        // The peer's datagrams now arrive on another of our addresses: we follow.
        let hb = b.handles()[0];
        assert!(a.with_sa(ha, |sa| sa.check_liveness(now, &mut rng)).unwrap());
        let t = a.poll_transmit().unwrap();
        b.handle(now, addr(B), addr(A), &t.datagram, &mut rng);
        assert_eq!(b.poll_transmit().unwrap().local, addr(B));
        assert!(b.with_sa(hb, |sa| sa.check_liveness(now, &mut rng)).unwrap());
        assert_eq!(b.poll_transmit().unwrap().local, addr(B));
    }

    #[test]
    fn many_sas_time_out_in_order_and_only_the_due_ones_are_touched() {
        const N: u64 = 500;
        let mut rng = TestRng::new(65);
        let start = Instant::now();
        let (a_cfg, _) = pair_configs(1);
        let mut a = Endpoint::new(Box::new(|_| None), Limits::default(), &mut rng);
        // SAs started 1 ms apart, in an order unrelated to their handles.
        let mut expected = Vec::new();
        for i in 0..N {
            let offset = Duration::from_millis((i * 211) % N);
            let remote = SocketAddr::from(([10, 2, (i / 250) as u8, (i % 250) as u8 + 1], 500));
            let h = a.connect(start + offset, a_cfg.clone(), addr(A), remote, &mut rng);
            let first = a.poll_transmit().unwrap();
            assert!(a.poll_transmit().is_none());
            // The first wait is the base, shortened by up to the jitter.
            let deadline = a.sa(h).unwrap().poll_timeout().unwrap();
            let r = Retransmit::default();
            let shortest = r.base.saturating_sub(r.base * u32::from(r.jitter) / 100);
            assert!(deadline >= start + offset + shortest && deadline <= start + offset + r.base);
            expected.push((deadline, h, first));
        }
        let spread: std::collections::BTreeSet<Instant> =
            expected.iter().map(|(t, ..)| *t).collect();
        assert!(spread.len() > N as usize * 9 / 10, "the jitter spreads the retransmissions");
        expected.sort_by_key(|(t, h, _)| (*t, *h));
        for group in expected.chunk_by(|x, y| x.0 == y.0) {
            let deadline = group[0].0;
            assert_eq!(a.poll_timeout(), Some(deadline));
            a.handle_timeout(deadline.checked_sub(Duration::from_micros(1)).unwrap(), &mut rng);
            assert!(a.poll_transmit().is_none(), "nothing before its time");
            a.handle_timeout(deadline, &mut rng);
            let mut again = Vec::new();
            while let Some(t) = a.poll_transmit() {
                again.push(t);
            }
            let due: Vec<&Transmit> = group.iter().map(|(_, _, first)| first).collect();
            assert_eq!(again.len(), due.len(), "the due SAs send their requests again, no other");
            assert!(again.iter().all(|t| due.contains(&t)), "SAs {group:?}");
        }
        assert_eq!(a.handles().len(), N as usize);
        assert!(a.timers.len() <= 2 * N as usize, "stale entries do not pile up");
    }
}
