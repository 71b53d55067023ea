//! A node's simulated XFRM tables: SAs with their lifetimes, and policies, enough to
//! decide what happens to one packet between two members as the real kernel would
//! (the lowest-priority matching policy; the newest outbound SA of its template; the
//! inbound SA by SPI; `use` lets plaintext through, `require` drops it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use xfrm::{Action, Direction, Level, Policy, PolicyId, Sa, SaId};

/// One SA in the table.
#[derive(Debug, Clone)]
struct Entry {
    reqid: u32,
    added: Instant,
    /// Packets it carried.
    packets: u64,
}

/// The protocol and ports of simulated traffic (UDP, not an excluded port).
pub const FLOW_PROTO: u8 = 17;
/// The flow's source port.
pub const FLOW_SPORT: u16 = 40_000;
/// The flow's destination port.
pub const FLOW_DPORT: u16 = 7_000;

/// A node's tables.
#[derive(Debug, Default)]
pub struct SimKernel {
    sas: HashMap<SaId, Entry>,
    /// Outbound SAs by (source, destination, reqid), oldest first.
    outbound: HashMap<(IpAddr, IpAddr, u32), Vec<SaId>>,
    policies: HashMap<PolicyId, Policy>,
    /// Policies whose destination is one host, by (direction, host).
    by_host: HashMap<(bool, IpAddr), Vec<PolicyId>>,
    /// The others (networks, catch-alls).
    general: Vec<PolicyId>,
}

/// How a packet went at the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// Sent in ESP with this SPI.
    Esp(u32),
    /// Sent in the clear.
    Plain,
    /// Dropped: a `require` policy and no SA (the kernel asks for one).
    NoSa(u32),
    /// Dropped by a blocking policy.
    Blocked,
}

/// How a packet went at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// Delivered.
    Delivered,
    /// Dropped: no inbound SA with that SPI.
    NoSa,
    /// Dropped: plaintext where a policy requires ESP.
    PlainRefused,
}

/// Lifetimes of an SA added now: (soft, hard).
pub type Deadlines = (Option<Instant>, Option<Instant>);

impl SimKernel {
    /// Adds an SA; refuses one that exists, as the kernel does (EEXIST).
    pub fn add(&mut self, sa: &Sa, now: Instant) -> Result<Deadlines, String> {
        let id = sa.id();
        if self.sas.contains_key(&id) {
            return Err(format!("SA {:#010x} exists (EEXIST)", id.spi));
        }
        self.sas.insert(id, Entry { reqid: sa.reqid, added: now, packets: 0 });
        self.outbound.entry((sa.src, sa.dst, sa.reqid)).or_default().push(id);
        let at = |s: Option<u64>| s.map(|s| now + Duration::from_secs(s));
        Ok((at(sa.lifetime.soft_seconds), at(sa.lifetime.hard_seconds)))
    }

    /// Deletes an SA; `false` when it was not there.
    pub fn delete(&mut self, id: &SaId) -> bool {
        let Some(e) = self.sas.remove(id) else { return false };
        if let Some(v) = self.outbound.get_mut(&(id.src, id.dst, e.reqid)) {
            v.retain(|i| i != id);
        }
        true
    }

    /// Whether the SA is there and was added at `added` (a lifetime timer's check).
    pub fn is(&self, id: &SaId, added: Instant) -> Option<u32> {
        self.sas.get(id).filter(|e| e.added == added).map(|e| e.reqid)
    }

    /// Every SA, with its reqid.
    pub fn sas(&self) -> Vec<(SaId, u32)> {
        let mut v: Vec<(SaId, u32)> = self.sas.iter().map(|(i, e)| (*i, e.reqid)).collect();
        v.sort_by_key(|(i, _)| (i.spi, i.dst));
        v
    }

    /// How many SAs.
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Every policy.
    pub fn policies(&self) -> Vec<Policy> {
        let mut v: Vec<Policy> = self.policies.values().copied().collect();
        v.sort_by_key(|p| (p.priority, p.selector.src, p.selector.dst, p.dir == Direction::In));
        v
    }

    /// Applies a policy diff.
    pub fn apply(&mut self, add: &[Policy], remove: &[Policy]) {
        for p in remove {
            self.unindex(&p.id());
            self.policies.remove(&p.id());
        }
        for p in add {
            let id = p.id();
            if self.policies.insert(id, *p).is_none() {
                match host(p) {
                    Some(k) => self.by_host.entry(k).or_default().push(id),
                    None => self.general.push(id),
                }
            }
        }
    }

    /// Forgets everything (a flush).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn unindex(&mut self, id: &PolicyId) {
        let Some(p) = self.policies.get(id) else { return };
        match host(p) {
            Some(k) => {
                if let Some(v) = self.by_host.get_mut(&k) {
                    v.retain(|i| i != id);
                }
            }
            None => self.general.retain(|i| i != id),
        }
    }

    /// The policy that decides a flow packet from `src` to `dst` in direction `dir`.
    fn lookup(&self, dir: Direction, src: IpAddr, dst: IpAddr) -> Option<&Policy> {
        let key = (dir == Direction::In, dst);
        self.by_host
            .get(&key)
            .into_iter()
            .flatten()
            .chain(self.general.iter())
            .filter_map(|id| self.policies.get(id))
            .filter(|p| p.dir == dir)
            .filter(|p| {
                let s = &p.selector;
                s.src.contains(&src)
                    && s.dst.contains(&dst)
                    && s.proto.is_none_or(|x| x == FLOW_PROTO)
                    && s.src_port.is_none_or(|x| x == FLOW_SPORT)
                    && s.dst_port.is_none_or(|x| x == FLOW_DPORT)
            })
            .min_by_key(|p| p.priority)
    }

    /// The level of the protecting policy a flow packet from `src` to `dst` meets in
    /// direction `dir`, if one protects it.
    pub fn level(&self, dir: Direction, src: IpAddr, dst: IpAddr) -> Option<Level> {
        match self.lookup(dir, src, dst)?.action {
            Action::Protect(t) => Some(t.level),
            _ => None,
        }
    }

    /// A packet from us (`src`) to `dst`.
    pub fn send(&mut self, src: IpAddr, dst: IpAddr) -> Out {
        let Some(p) = self.lookup(Direction::Out, src, dst) else { return Out::Plain };
        match p.action {
            Action::Bypass => Out::Plain,
            Action::Block => Out::Blocked,
            Action::Protect(t) => {
                let newest =
                    self.outbound.get(&(t.src, t.dst, t.reqid)).and_then(|v| v.last().copied());
                match newest {
                    Some(id) => {
                        if let Some(e) = self.sas.get_mut(&id) {
                            e.packets += 1;
                        }
                        Out::Esp(id.spi)
                    }
                    None if t.level == Level::Use => Out::Plain,
                    None => Out::NoSa(t.reqid),
                }
            }
        }
    }

    /// A packet from `src` to us (`dst`), in ESP with `spi` or in the clear.
    pub fn receive(&mut self, src: IpAddr, dst: IpAddr, spi: Option<u32>) -> In {
        if let Some(spi) = spi {
            let id = SaId { dst, spi, src, mark: None };
            return match self.sas.get_mut(&id) {
                Some(e) => {
                    e.packets += 1;
                    In::Delivered
                }
                None => In::NoSa,
            };
        }
        match self.lookup(Direction::In, src, dst).map(|p| p.action) {
            Some(Action::Protect(t)) if t.level == Level::Require => In::PlainRefused,
            Some(Action::Block) => In::PlainRefused,
            _ => In::Delivered,
        }
    }

    /// Packets an SA carried (0 when it is gone).
    pub fn packets(&self, id: &SaId) -> u64 {
        self.sas.get(id).map_or(0, |e| e.packets)
    }
}

fn host(p: &Policy) -> Option<(bool, IpAddr)> {
    let d = p.selector.dst;
    (d.prefix_len() == d.max_prefix_len()).then_some((p.dir == Direction::In, d.addr()))
}
