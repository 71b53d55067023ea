//! A deterministic fleet simulator for ikemesh.
//!
//! Many [`Supervisor`]s (the daemon's decisions, the same code `meshd` runs) in one
//! process, on a virtual clock, with real IKE, real certificates and real crypto.
//! Only the world around them is simulated:
//! - the network: per-datagram latency, loss, duplication, reordering, an MTU, and
//!   partitions; SPA pinholes at each node's gate (a knock opens one for its sender);
//! - each node's kernel: XFRM SAs (with their soft and hard lifetimes, which raise
//!   EXPIRE) and policies, and what they do to a packet ([`kernel`]);
//! - each node's disk: the last state the supervisor asked to persist;
//! - restarts: graceful, `kill -9` (the kernel tables and the disk stay), and the loss
//!   of the state directory;
//! - traffic: a flow per pair of members, counting what is delivered, dropped, and in
//!   the clear.
//!
//! Everything random comes from one seed, so a seed replays a run exactly.

mod checks;
pub mod drive;
pub mod kernel;
mod manual;
pub mod pki;
pub mod rng;
mod traffic;

use ca::verify::CertVerifier;
use kernel::SimKernel;
use mesh::config::Config;
use mesh::supervisor::State;
use mesh::supervisor::auth::{Credentials, LiveMembers};
use mesh::supervisor::{Action, KernelEvent, KernelView, PinholeOp, Start, Supervisor};
use pki::Pki;
use policy::{Level, Member};
use rng::SimRng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xfrm::SaId;

/// What a simulation runs.
#[derive(Debug, Clone)]
#[allow(clippy::struct_excessive_bools)] // independent switches
pub struct Options {
    /// How many nodes.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// One-way latency, lowest and highest, in microseconds.
    pub latency_us: (u64, u64),
    /// Share of datagrams lost.
    pub loss: f64,
    /// Share of datagrams delivered twice.
    pub duplicate: f64,
    /// Share of datagrams held back (delivered after later ones).
    pub reorder: f64,
    /// The largest datagram (IP and UDP headers included) the network carries.
    pub mtu: usize,
    /// SPA: IKE ports closed until a knock.
    pub spa: bool,
    /// How long a node's gate takes from a knock's arrival to its pinhole, lowest and
    /// highest, in microseconds (a real gate is a task of its own and a netlink
    /// transaction, slower under load).
    pub gate_delay_us: (u64, u64),
    /// The mesh's rollout target.
    pub level: Level,
    /// The `[ike]` settings of every node, as TOML lines.
    pub ike: String,
    /// A packet each way on every pair this often (no traffic when `None`).
    pub traffic: Option<Duration>,
    /// A packet each way on a pair after every change to either end's SAs or
    /// policies: every state the pair's data path goes through is tried.
    pub probe: bool,
    /// Check the rollout's rules after every input of every node (see
    /// [`Stats::rollout_violations`]).
    pub check_rollout: bool,
    /// The network delivers nothing by itself: datagrams wait until the driver
    /// delivers, drops, duplicates, forges or replays them (the fuzz target's mode).
    pub manual: bool,
}

impl Options {
    /// `nodes` nodes, seed `seed`: 1 to 5 ms latency, no loss, MTU 1500, SPA off, at
    /// `use`, default IKE settings, no traffic.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            latency_us: (1_000, 5_000),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            mtu: 1500,
            spa: false,
            gate_delay_us: (0, 0),
            level: Level::Use,
            ike: String::new(),
            traffic: None,
            probe: false,
            check_rollout: false,
            manual: false,
        }
    }
}

/// What happened, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// IKE datagrams sent.
    pub datagrams: u64,
    /// Lost on the way (loss, partitions, MTU, a node down).
    pub datagrams_lost: u64,
    /// Dropped at a gate with no pinhole for the sender.
    pub datagrams_gated: u64,
    /// SPA knocks sent.
    pub knocks: u64,
    /// Traffic packets sent.
    pub packets: u64,
    /// Delivered in ESP.
    pub delivered_esp: u64,
    /// Delivered in the clear.
    pub delivered_plain: u64,
    /// Sent under a `require` policy (at the sender).
    pub at_require: u64,
    /// Of those, not delivered.
    pub lost_at_require: u64,
    /// Delivered in the clear under a `require` policy at either end (must stay 0).
    pub plain_at_require: u64,
    /// Lost to a partition (not counted as lost at `require`).
    pub partitioned: u64,
    /// Dropped for want of an SA at the sender.
    pub no_sa_out: u64,
    /// Dropped for want of an inbound SA at the receiver.
    pub no_sa_in: u64,
    /// Plaintext refused by a receiver's `require` policy.
    pub plain_refused: u64,
    /// Child SAs installed (inbound halves), by the second of virtual time.
    pub installs_by_second: BTreeMap<u64, u32>,
    /// Breaches of the rollout's rules, one line each: a peer promoted to `require`
    /// without a child SA or without having announced at least `use`.
    pub rollout_violations: Vec<String>,
    /// The first packets lost at `require`: when, which pair, why.
    pub losses: Vec<String>,
}

/// One simulated event.
#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        local: SocketAddr,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A knock arrives at `to`'s SPA port.
    Knock {
        to: usize,
        from: IpAddr,
        port: u16,
    },
    /// `to`'s gate opens the pinhole of an admitted knock.
    Open {
        to: usize,
        from: IpAddr,
    },
    Wake {
        node: usize,
    },
    Lifetime {
        node: usize,
        sa: SaId,
        added: Instant,
        hard: bool,
    },
    /// The network tells node `to` that `closed`'s port is closed (ICMP port
    /// unreachable for a datagram it sent while that node's daemon was down).
    PortClosed {
        to: usize,
        closed: SocketAddr,
    },
    Traffic,
}

/// A datagram on its way.
#[derive(Debug, Clone)]
struct Datagram {
    to: usize,
    local: SocketAddr,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// One node: its supervisor (while it runs) and what outlives it.
struct Node {
    name: String,
    addr: IpAddr,
    cfg: Config,
    creds: Arc<Credentials>,
    sup: Option<Supervisor>,
    kernel: SimKernel,
    disk: Option<State>,
    /// Pinholes at our gate: until when (`None`: kept open).
    pinholes: HashMap<IpAddr, Option<Instant>>,
    /// Whether our gate's table is in the kernel: installed at each start (empty),
    /// it stays when the daemon stops or dies, until removed.
    gate_up: bool,
    /// Where we sent to last (the gate lets the answers in, as conntrack does).
    sent_to: HashMap<IpAddr, Instant>,
    /// The supervisor's wake-up as last scheduled.
    wake: Option<Instant>,
    /// Starts so far (each gets its own randomness).
    starts: u64,
    /// Each peer's rollout level as last seen (for [`Options::check_rollout`]).
    levels: HashMap<String, Level>,
}

/// How long conntrack lets answers to our own datagrams through the gate.
const CONNTRACK: Duration = Duration::from_secs(30);
/// How long a knock opens the gate (the default `spa.pinhole_ttl`).
const PINHOLE_TTL: Duration = Duration::from_secs(30);

/// A simulated fleet.
pub struct Sim {
    opts: Options,
    base: Instant,
    now: Instant,
    net: SimRng,
    pki: Arc<Pki>,
    nodes: Vec<Node>,
    members: Vec<(Member, String)>,
    by_addr: HashMap<IpAddr, usize>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    /// Partition: each node's side; datagrams between sides are lost.
    sides: Option<Vec<u8>>,
    /// In manual mode: datagrams waiting for the driver, and the last ones sent.
    waiting: Vec<Datagram>,
    history: std::collections::VecDeque<Datagram>,
    /// Last ACQUIRE per (node, reqid).
    acquired: HashMap<(usize, u32), Instant>,
    /// Counters.
    pub stats: Stats,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.nodes.len())
            .field("seed", &self.opts.seed)
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

/// Node `i`'s name (names sort in index order).
pub fn node_name(i: usize) -> String {
    format!("n{i:04}")
}

/// Node `i`'s address (only ever inside the simulation).
///
/// # Panics
/// Past 2^32 nodes.
pub fn node_addr(i: usize) -> IpAddr {
    let i = u32::try_from(i).expect("fewer than 2^32 nodes");
    IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i + 1))
}

impl Sim {
    /// A fleet of `opts.nodes` nodes, each a member of the others, none started yet.
    ///
    /// # Panics
    /// When the PKI or a configuration cannot be made (a bug).
    pub fn new(opts: Options) -> Self {
        let names: Vec<String> = (0..opts.nodes).map(node_name).collect();
        Self::with_pki(opts, Arc::new(Pki::new(&names)))
    }

    /// [`Sim::new`] with a PKI made before (for many short runs): it must hold
    /// credentials for at least `opts.nodes` nodes, named by [`node_name`].
    ///
    /// # Panics
    /// When the PKI holds too few nodes, or a configuration cannot be made.
    pub fn with_pki(opts: Options, pki: Arc<Pki>) -> Self {
        log();
        assert!(pki.creds.len() >= opts.nodes, "the PKI holds {} nodes", pki.creds.len());
        let names: Vec<String> = (0..opts.nodes).map(node_name).collect();
        let members: Vec<(Member, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    Member { name: n.clone(), addresses: vec![node_addr(i)], level: None },
                    "config".to_owned(),
                )
            })
            .collect();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let text = format!(
                    "[node]\nname = \"{name}\"\naddresses = [\"{}\"]\n\n[pki]\nca = \"/sim/ca.pem\"\n\
                     cert = \"/sim/node.pem\"\nkey = \"/sim/node.key\"\n\n[spa]\nenabled = {}\n\
                     secret = \"/sim/spa.key\"\n\n[ike]\n{}\n\n[mesh]\nlevel = \"{}\"\n",
                    node_addr(i),
                    opts.spa,
                    opts.ike,
                    opts.level,
                );
                let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("config: {e:?}"));
                Node {
                    name: name.clone(),
                    addr: node_addr(i),
                    cfg,
                    creds: pki.creds[i].clone(),
                    sup: None,
                    kernel: SimKernel::default(),
                    disk: None,
                    pinholes: HashMap::new(),
                    gate_up: false,
                    sent_to: HashMap::new(),
                    wake: None,
                    starts: 0,
                    levels: HashMap::new(),
                }
            })
            .collect();
        let base = Instant::now();
        let by_addr = (0..opts.nodes).map(|i| (node_addr(i), i)).collect();
        let net = SimRng::new(opts.seed, u64::MAX);
        let mut sim = Sim {
            opts,
            base,
            now: base,
            net,
            pki,
            nodes,
            members,
            by_addr,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            sides: None,
            acquired: HashMap::new(),
            waiting: Vec::new(),
            history: std::collections::VecDeque::new(),
            stats: Stats::default(),
        };
        if let Some(every) = sim.opts.traffic {
            sim.push(base + every, Ev::Traffic);
        }
        sim
    }

    /// The options it runs with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s supervisor, while it runs.
    pub fn supervisor(&self, i: usize) -> Option<&Supervisor> {
        self.nodes[i].sup.as_ref()
    }

    /// Node `i`'s kernel tables.
    pub fn kernel(&self, i: usize) -> &SimKernel {
        &self.nodes[i].kernel
    }

    /// Node `i`'s persisted state.
    pub fn disk(&self, i: usize) -> Option<&State> {
        self.nodes[i].disk.as_ref()
    }

    /// The PKI (to revoke, to re-issue).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    // ---- nodes coming and going ----

    /// Starts every node at once.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// Starts node `i` from its disk and kernel, as `meshd` starts.
    ///
    /// # Panics
    /// When the node runs already, or its supervisor refuses to start (a bug here).
    pub fn start(&mut self, i: usize) {
        let _span = self.span(i);
        let now = self.now;
        let node = &mut self.nodes[i];
        assert!(node.sup.is_none(), "{} runs already", node.name);
        node.starts += 1;
        let (bundle, revocation) = self.pki.trust();
        let live = LiveMembers::default();
        let verifier = Arc::new(
            CertVerifier::new(bundle).with_revocation(revocation).with_members(live.clone()),
        );
        let sup = Supervisor::new(Start {
            now,
            cfg: node.cfg.clone(),
            creds: node.creds.clone(),
            verifier,
            live,
            members: self.members.clone(),
            state: node.disk.clone().unwrap_or_default(),
            kernel: Some(KernelView { sas: node.kernel.sas(), policies: node.kernel.policies() }),
            esp_problem: None,
            gate: self.opts.spa,
            knock: self.opts.spa,
            rng: Box::new(SimRng::new(self.opts.seed, (i as u64) << 16 | node.starts)),
        })
        .unwrap_or_else(|e| panic!("{} does not start: {e}", node.name));
        node.sup = Some(sup);
        node.wake = None;
        if self.opts.spa {
            // meshd installs its table at start, empty (`Pinholes::install`).
            node.pinholes.clear();
            node.gate_up = true;
        }
        self.carry_out(i);
    }

    /// Stops node `i` as SIGTERM does (`on_stop = "keep"`).
    pub fn stop(&mut self, i: usize) {
        let _span = self.span(i);
        let now = self.now;
        if let Some(sup) = self.nodes[i].sup.as_mut() {
            sup.stop(now, false);
        }
        self.carry_out(i);
        self.nodes[i].sup = None;
        self.nodes[i].wake = None;
    }

    /// Kills node `i` (`kill -9`): the kernel's tables and the disk stay as they are.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].sup = None;
        self.nodes[i].wake = None;
    }

    /// Node `i` loses its state directory.
    ///
    /// # Panics
    /// When the node runs.
    pub fn lose_disk(&mut self, i: usize) {
        assert!(self.nodes[i].sup.is_none());
        self.nodes[i].disk = None;
    }

    /// Splits the network: nodes below `at` on one side, the others on the other.
    pub fn partition(&mut self, at: usize) {
        self.sides = Some((0..self.nodes.len()).map(|i| u8::from(i >= at)).collect());
    }

    /// Heals a partition.
    pub fn heal(&mut self) {
        self.sides = None;
    }

    /// A control request to node `i`.
    ///
    /// # Panics
    /// When the node is not running.
    pub fn control(
        &mut self,
        i: usize,
        req: mesh::control::proto::Request,
    ) -> mesh::control::proto::Response {
        let _span = self.span(i);
        let now = self.now;
        let resp = self.nodes[i].sup.as_mut().expect("node runs").control(now, req);
        self.carry_out(i);
        resp
    }

    // ---- running ----

    /// Runs until virtual time `d` from now.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
    }

    /// Runs until every pair is up ([`Sim::converged`]), checking every `check`; the
    /// virtual time it took, or `None` when `max` passed first.
    pub fn run_until_converged(&mut self, max: Duration, check: Duration) -> Option<Duration> {
        let start = self.now;
        let end = start + max;
        while self.now < end {
            let next = (self.now + check).min(end);
            while self.step(next) {}
            self.now = next;
            if self.converged() {
                return Some(self.now - start);
            }
        }
        None
    }

    /// Handles the next event if it is due by `until`; `false` when none is.
    fn step(&mut self, until: Instant) -> bool {
        let Some(Reverse((t, seq))) = self.queue.peek().copied() else { return false };
        if t > until {
            return false;
        }
        self.queue.pop();
        let Some(ev) = self.events.remove(&seq) else { return true };
        self.now = self.now.max(t);
        match ev {
            Ev::Deliver { to, local, from, bytes } => self.deliver(to, local, from, &bytes),
            Ev::Knock { to, from, port } => {
                if self.nodes[to].sup.is_some() {
                    let (lo, hi) = self.opts.gate_delay_us;
                    let delay = Duration::from_micros(self.net.between(lo, hi));
                    self.push(self.now + delay, Ev::Open { to, from });
                } else {
                    // The knock listener is the daemon's: nobody listens on the SPA
                    // port while it is down, and the kernel says so.
                    let closed = SocketAddr::new(self.nodes[to].addr, port);
                    self.port_closed(to, from, closed);
                }
            }
            Ev::Open { to, from } => {
                let until = self.now + PINHOLE_TTL;
                let e = self.nodes[to].pinholes.entry(from).or_insert(Some(until));
                if let Some(t) = e {
                    *t = (*t).max(until);
                }
            }
            Ev::Wake { node } => {
                if self.nodes[node].wake == Some(t) {
                    let _span = self.span(node);
                    self.nodes[node].wake = None;
                    if let Some(sup) = self.nodes[node].sup.as_mut() {
                        sup.handle_timeout(t);
                        self.carry_out(node);
                    }
                }
            }
            Ev::Lifetime { node, sa, added, hard } => self.lifetime(node, sa, added, hard),
            Ev::PortClosed { to, closed } => {
                let _span = self.span(to);
                if let Some(sup) = self.nodes[to].sup.as_mut() {
                    sup.handle_unreachable(t, closed);
                    self.carry_out(to);
                }
            }
            Ev::Traffic => {
                self.traffic();
                if let Some(every) = self.opts.traffic {
                    self.push(t + every, Ev::Traffic);
                }
            }
        }
        true
    }

    /// The span a node's log lines go in: its name and the virtual time.
    fn span(&self, i: usize) -> tracing::span::EnteredSpan {
        tracing::info_span!("", t = format_args!("{:.3}", self.elapsed().as_secs_f64()), node = %self.nodes[i].name).entered()
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn deliver(&mut self, to: usize, local: SocketAddr, from: SocketAddr, bytes: &[u8]) {
        let _span = self.span(to);
        let now = self.now;
        let node = &mut self.nodes[to];
        if self.opts.spa && node.gate_up {
            let open = node.pinholes.get(&from.ip()).is_some_and(|t| t.is_none_or(|t| t > now))
                || node.sent_to.get(&from.ip()).is_some_and(|t| *t + CONNTRACK > now);
            if !open {
                self.stats.datagrams_gated += 1;
                return;
            }
        }
        let Some(sup) = node.sup.as_mut() else {
            // Through the gate (or no gate) to a port nobody listens on: the kernel
            // answers port unreachable, which can be lost like any datagram.
            self.stats.datagrams_lost += 1;
            self.port_closed(to, from.ip(), local);
            return;
        };
        sup.handle_datagram(now, local, from, bytes);
        self.carry_out(to);
    }

    /// Node `at` has nothing listening on `closed`: the kernel answers `from` with
    /// port unreachable, which can be lost like any datagram.
    fn port_closed(&mut self, at: usize, from: IpAddr, closed: SocketAddr) {
        let Some(&sender) = self.by_addr.get(&from) else { return };
        for d in self.delays(at, sender, 64) {
            self.push(self.now + d, Ev::PortClosed { to: sender, closed });
        }
    }

    fn lifetime(&mut self, i: usize, sa: SaId, added: Instant, hard: bool) {
        let _span = self.span(i);
        let node = &mut self.nodes[i];
        let Some(reqid) = node.kernel.is(&sa, added) else { return };
        if hard {
            node.kernel.delete(&sa);
        }
        let now = self.now;
        if let Some(sup) = node.sup.as_mut() {
            sup.handle_kernel(now, &KernelEvent::Expire { sa, reqid, hard });
            self.carry_out(i);
        }
    }

    /// Whether the network carries a datagram from node `a` to node `b` now.
    fn linked(&self, a: usize, b: usize) -> bool {
        self.sides.as_ref().is_none_or(|s| s[a] == s[b])
    }

    /// A datagram's one-way delay, or `None` when it is lost.
    fn delays(&mut self, a: usize, b: usize, len: usize) -> Vec<Duration> {
        if !self.linked(a, b) || len + 28 > self.opts.mtu || self.net.chance(self.opts.loss) {
            return Vec::new();
        }
        let (lo, hi) = self.opts.latency_us;
        let one = |net: &mut SimRng, reorder: f64| {
            let mut us = net.between(lo, hi);
            if net.chance(reorder) {
                us += net.between(hi, 3 * hi);
            }
            Duration::from_micros(us)
        };
        let mut out = vec![one(&mut self.net, self.opts.reorder)];
        if self.net.chance(self.opts.duplicate) {
            out.push(one(&mut self.net, self.opts.reorder));
        }
        out
    }

    /// Carries out one action of node `i`; notes the peers whose data path it changed.
    fn act(&mut self, i: usize, action: Action, touched: &mut Vec<usize>) {
        let now = self.now;
        match action {
            Action::Send { local, remote, datagram } => {
                self.stats.datagrams += 1;
                self.nodes[i].sent_to.insert(remote.ip(), now);
                let Some(&to) = self.by_addr.get(&remote.ip()) else { return };
                if self.opts.manual {
                    let d = Datagram { to, local: remote, from: local, bytes: datagram };
                    if self.history.len() == 64 {
                        self.history.pop_front();
                    }
                    self.history.push_back(d.clone());
                    self.waiting.push(d);
                    return;
                }
                let delays = self.delays(i, to, datagram.len());
                if delays.is_empty() {
                    self.stats.datagrams_lost += 1;
                }
                for d in delays {
                    let bytes = datagram.clone();
                    self.push(now + d, Ev::Deliver { to, local: remote, from: local, bytes });
                }
            }
            Action::Knock { local, remote, .. } => {
                self.stats.knocks += 1;
                let Some(&to) = self.by_addr.get(&remote.ip()) else { return };
                for d in self.delays(i, to, 100) {
                    self.push(now + d, Ev::Knock { to, from: local, port: remote.port() });
                }
            }
            Action::AddSa(sa) => match self.nodes[i].kernel.add(&sa, now) {
                Ok((soft, hard)) => {
                    let id = sa.id();
                    self.touch(i, &id, touched);
                    if id.dst == self.nodes[i].addr {
                        let second = (now - self.base).as_secs();
                        *self.stats.installs_by_second.entry(second).or_default() += 1;
                    }
                    if let Some(t) = soft {
                        self.push(t, Ev::Lifetime { node: i, sa: id, added: now, hard: false });
                    }
                    if let Some(t) = hard {
                        self.push(t, Ev::Lifetime { node: i, sa: id, added: now, hard: true });
                    }
                }
                Err(error) => {
                    let e = KernelEvent::AddFailed { sa: sa.id(), error };
                    if let Some(sup) = self.nodes[i].sup.as_mut() {
                        sup.handle_kernel(now, &e);
                    }
                }
            },
            Action::DeleteSa(id) if self.nodes[i].kernel.delete(&id) => {
                self.touch(i, &id, touched);
            }
            Action::Policies { add, remove } => {
                self.nodes[i].kernel.apply(&add, &remove);
                if self.opts.probe {
                    for p in add.iter().chain(&remove) {
                        let d = p.selector.dst;
                        let s = p.selector.src;
                        for a in [d, s] {
                            if a.prefix_len() == a.max_prefix_len()
                                && let Some(&j) = self.by_addr.get(&a.addr())
                                && j != i
                                && !touched.contains(&j)
                            {
                                touched.push(j);
                            }
                        }
                    }
                }
            }
            Action::Pinhole(op) => {
                let p = &mut self.nodes[i].pinholes;
                match op {
                    PinholeOp::Keep(a) => {
                        p.insert(a, None);
                    }
                    PinholeOp::Release(a) => {
                        p.insert(a, Some(now + PINHOLE_TTL));
                    }
                    PinholeOp::Close(a) => {
                        p.remove(&a);
                    }
                }
            }
            Action::Persist(state) => self.nodes[i].disk = Some(*state),
            Action::FlushKernel => self.nodes[i].kernel.clear(),
            Action::RemoveGate => {
                self.nodes[i].pinholes.clear();
                self.nodes[i].gate_up = false;
            }
            _ => {}
        }
    }

    /// Carries out node `i`'s actions, and schedules its next wake-up.
    fn carry_out(&mut self, i: usize) {
        let now = self.now;
        let mut touched: Vec<usize> = Vec::new();
        loop {
            let Some(action) = self.nodes[i].sup.as_mut().and_then(Supervisor::poll_action) else {
                break;
            };
            self.act(i, action, &mut touched);
        }
        for j in touched {
            self.packet(i, j);
            self.packet(j, i);
        }
        if self.opts.check_rollout {
            self.check_rollout(i);
        }
        let wake = self.nodes[i].sup.as_mut().and_then(Supervisor::poll_timeout);
        if wake != self.nodes[i].wake {
            self.nodes[i].wake = wake;
            if let Some(w) = wake {
                self.push(w.max(now), Ev::Wake { node: i });
                if w < now {
                    self.nodes[i].wake = Some(now);
                }
            }
        }
    }

    /// Notes the peer an SA of node `i` is with, for the probes.
    fn touch(&self, i: usize, id: &SaId, touched: &mut Vec<usize>) {
        if !self.opts.probe {
            return;
        }
        let other = if id.dst == self.nodes[i].addr { id.src } else { id.dst };
        if let Some(&j) = self.by_addr.get(&other)
            && !touched.contains(&j)
        {
            touched.push(j);
        }
    }
}

/// With `SIM_LOG` set (a `tracing` filter such as `debug`), the supervisors' logs go
/// to standard error, each line inside its node's span and with the virtual time.
pub fn log() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("SIM_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .without_time()
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// The seeds a test runs: `SIM_SEED` alone when it is set (to replay one), else
/// `default`.
pub fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => default.collect(),
    }
}

/// The command that replays one seed of a test.
pub fn replay(test_file: &str, test: &str, seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test -p ikemesh-sim --test {test_file} -- --exact {test} --nocapture"
    )
}
