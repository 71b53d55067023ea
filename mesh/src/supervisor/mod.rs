//! The daemon's decisions, sans IO: every peer, its IKE SAs and child SAs, the
//! rollout, and the timers that drive them, as one state machine that is fed inputs
//! and gives actions back.
//!
//! Like the `ike` crate's endpoint (and quinn-proto), the supervisor opens no socket,
//! reads no clock, touches no file and draws no randomness of its own: `meshd`'s
//! shell ([`crate::daemon`]) and the fleet simulator feed it the same inputs and carry
//! out the same actions.
//!
//! Inputs: [`Supervisor::handle_datagram`], [`Supervisor::handle_kernel`],
//! [`Supervisor::control`] (and [`Supervisor::reload`], [`Supervisor::status`]),
//! [`Supervisor::handle_timeout`] when [`Supervisor::poll_timeout`] is due.
//! Outputs: [`Supervisor::poll_action`] until it gives `None`, after every input.
//!
//! # Who initiates
//!
//! Of two members, the one whose name sorts first initiates; the other only answers,
//! and initiates itself only when nothing arrived from the peer for [`RESPONDER_GRACE`].
//! A supervisor's first IKE SA with each peer, and every re-authentication, carries
//! `INITIAL_CONTACT`, and so does every new IKE SA after the last one with a peer ended
//! (we hold no other with it). When two IKE SAs with one peer are up at once, both ends
//! keep the same one (see [`Supervisor::resolve_duplicate`]) and delete the other.
//!
//! # Restarts
//!
//! At start the shell reads back the kernel's policies and SAs of ours. Policies are
//! brought to the rendering by diff; child SAs of current peers are adopted (left in
//! place and counted as up for the rollout) until the new IKE SA's child is installed,
//! then deleted; SAs of ours that belong to no peer are deleted.
//!
//! # Make before break
//!
//! A new child SA's inbound SA goes into the kernel at once; while an older child
//! carries the traffic, its outbound SA waits until the peer has shown that it holds
//! the new inbound SA (see [`OUTBOUND_FALLBACK`]), so that nothing is sent on it
//! before. A replaced child's outbound SA goes at once,
//! its inbound SA lingers [`INBOUND_LINGER`] for packets already on their way.

pub mod auth;
mod children;
mod control;
mod events;
mod members;
mod peer;
mod state;
#[cfg(test)]
mod tests;
mod timers;

pub use control::Reloaded;
pub use peer::Pair;
pub use state::State;

use crate::config::Config;
use crate::rollout::Rollout;
use auth::{Credentials, LiveMembers};
use ca::verify::CertVerifier;
use ike::crypto::Random;
use ike::endpoint::{Endpoint, Limits, SaHandle, Transmit};
use peer::{IkeState, Peer, PeerKey};
use policy::Member;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use timers::Timers;
use tracing::{debug, info};
use xfrm::{Policy, SaId};

/// How long the member that does not initiate waits for the other before it
/// initiates itself.
pub const RESPONDER_GRACE: Duration = Duration::from_secs(8);
/// How often a peer's connect timer looks again while an IKE SA the peer started is
/// half open here (it is given up after the endpoint's half-open timeout, 30 s).
pub const HALF_OPEN_RECHECK: Duration = Duration::from_secs(2);
/// How long the first request after a knock waits for an answer before it goes
/// again (see [`Supervisor::after_knock`]): a few of the gate's usual knock-to-pinhole
/// times, far below the retransmission wait.
pub const KNOCK_RECHECK: Duration = Duration::from_millis(300);
/// The state is saved at most this often: a save holds every peer, so saving after
/// each of a thousand IKE SAs coming up would cost the daemon more than making them.
/// A change is saved at once when the last save is older; else at the end of the
/// interval, with whatever else changed in it. An operator's change (a control request,
/// a reload) is saved at once.
pub const SAVE_EVERY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts to reach a peer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest a new child SA's outbound SA waits while an older one carries the
/// traffic (make before break). It goes in as soon as the peer has shown it holds the
/// new inbound SA: at once when we initiated the exchange that made it (the peer
/// installed it before answering), when the old child is deleted (the rekey's
/// initiator deletes it once it has the answer), or when the peer first speaks on
/// the new IKE SA after `IKE_AUTH`. A fixed delay instead lost packets whenever the
/// answer was lost and retransmitted.
pub const OUTBOUND_FALLBACK: Duration = Duration::from_secs(30);
/// How long a replaced child SA's inbound SA stays after its delete, for packets the
/// peer sent on it before it learnt of the delete.
pub const INBOUND_LINGER: Duration = Duration::from_secs(5);
/// Two IKE SAs with one peer that came up within this of each other may have crossed
/// (each end initiated one): the two ends can see them come up in opposite orders (by
/// up to the time an `IKE_AUTH` response takes between them, retransmissions
/// included), so only one end, the lower name, settles such a duplicate. See
/// [`Supervisor::resolve_duplicate`].
pub const CROSSING: Duration = Duration::from_secs(5);

/// What the supervisor asks its shell to do, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Send a datagram from our address `local` to `remote`.
    Send {
        /// Our address (and IKE port).
        local: SocketAddr,
        /// The peer's.
        remote: SocketAddr,
        /// The IKE message.
        datagram: Vec<u8>,
    },
    /// Send an SPA knock from our address `local` to the peer's SPA port.
    Knock {
        /// The address the knock claims and must be sent from.
        local: IpAddr,
        /// The peer's SPA address.
        remote: SocketAddr,
        /// What to seal.
        knock: policy::spa::Knock,
    },
    /// Add an SA to the kernel; report a failure with [`KernelEvent::AddFailed`].
    AddSa(Box<xfrm::Sa>),
    /// Delete an SA from the kernel (one already gone is fine).
    DeleteSa(SaId),
    /// Change our policies in the kernel: replace or add `add`, delete `remove`.
    Policies {
        /// New or changed policies.
        add: Vec<Policy>,
        /// Policies to delete.
        remove: Vec<Policy>,
    },
    /// Change the SPA gate's pinhole for a peer's address.
    Pinhole(PinholeOp),
    /// Write the state to the state directory.
    Persist(Box<State>),
    /// Delete every SA and policy of ours from the kernel (`on_stop = "flush"`).
    FlushKernel,
    /// Remove the SPA gate's nftables table (`on_stop = "flush"`).
    RemoveGate,
}

/// A change to one peer address's pinhole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinholeOp {
    /// Keep it open for the life of the IKE SA.
    Keep(IpAddr),
    /// Let it close with its timeout again.
    Release(IpAddr),
    /// Close it now (the peer left).
    Close(IpAddr),
}

/// What the kernel tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// An SA reached its soft (rekey now) or hard (deleted) lifetime.
    Expire {
        /// The SA.
        sa: SaId,
        /// Its request ID.
        reqid: u32,
        /// Hard: the kernel deleted it.
        hard: bool,
    },
    /// Traffic matched a policy whose SA is missing.
    Acquire {
        /// The policy template's request ID.
        reqid: u32,
    },
    /// An [`Action::AddSa`] failed.
    AddFailed {
        /// The SA.
        sa: SaId,
        /// Why, in one line.
        error: String,
    },
}

/// What of ours the kernel held when the shell started.
#[derive(Debug, Clone, Default)]
pub struct KernelView {
    /// Our SAs, with their request IDs.
    pub sas: Vec<(SaId, u32)>,
    /// Our policies.
    pub policies: Vec<Policy>,
}

/// Everything a supervisor starts from.
pub struct Start {
    /// The time now.
    pub now: Instant,
    /// The configuration (already checked).
    pub cfg: Config,
    /// Our certificate and key.
    pub creds: Arc<Credentials>,
    /// Checks peers' certificates.
    pub verifier: Arc<CertVerifier>,
    /// The member names the verifier accepts; kept up to date by the supervisor.
    pub live: LiveMembers,
    /// The members of the configuration and the members file, with their source.
    pub members: Vec<(Member, String)>,
    /// The state directory's content.
    pub state: State,
    /// The kernel's SAs and policies of ours; `None` when ESP is not available.
    pub kernel: Option<KernelView>,
    /// Why ESP is not available, when it is not.
    pub esp_problem: Option<String>,
    /// The SPA gate's pinholes are installed: keep and release them.
    pub gate: bool,
    /// Knock before IKE requests (the mesh uses SPA).
    pub knock: bool,
    /// Randomness for IKE and for jitter.
    pub rng: Box<dyn Random + Send>,
}

impl std::fmt::Debug for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Start").field("node", &self.cfg.node.name).finish_non_exhaustive()
    }
}

/// Timers, by what they time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// Initiate an IKE SA with the peer.
    Connect(PeerKey),
    /// Re-authenticate: a new IKE SA beside the current one, which replaces it.
    Reauth(PeerKey),
    ChildRekey(PeerKey),
    IkeRekey(PeerKey),
    Liveness(PeerKey),
    /// The peer's waiting outbound SAs go in.
    PendingOut(PeerKey),
    /// A request held back after a knock.
    Held(u64),
    /// A replaced inbound SA goes.
    Linger(u64),
    /// The endpoint's own timers (retransmissions, half-open SAs, cookies).
    Endpoint,
    /// The state changed since the last save, which was less than [`SAVE_EVERY`] ago.
    Save,
}

/// A peer's IKE SAs by state, for tests and the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Established IKE SAs with the peer.
    pub ike_established: usize,
    /// Child SAs (ours, installed or not) with the peer.
    pub children: usize,
    /// Child SAs adopted from a previous run and not yet replaced.
    pub adopted: usize,
}

/// The daemon's decisions (see the [module docs](self)).
#[allow(clippy::struct_excessive_bools)] // settings and dirty flags, each its own
pub struct Supervisor {
    cfg: Config,
    me: Member,
    started: Instant,
    rng: Box<dyn Random + Send>,
    ep: Endpoint,
    creds: Arc<Credentials>,
    verifier: Arc<CertVerifier>,
    live: LiveMembers,
    /// IKE configuration by peer address, for the endpoint's responder side (and the
    /// SPA gate's member check, through [`Supervisor::member_check`]).
    responders: Arc<RwLock<HashMap<IpAddr, Arc<ike::sa::Config>>>>,
    /// The configuration's and members file's members, with their source.
    config_members: Vec<(Member, String)>,
    peers: HashMap<PeerKey, Peer>,
    by_name: BTreeMap<String, PeerKey>,
    by_addr: HashMap<IpAddr, PeerKey>,
    by_reqid: HashMap<u32, PeerKey>,
    by_handle: HashMap<SaHandle, PeerKey>,
    /// IKE SAs whose delete we asked for: no longer counted on, even while the peer
    /// has not answered (a peer that restarted never will).
    deleting: std::collections::HashSet<SaHandle>,
    /// IKE SAs we initiated that are not established yet: at most
    /// `ike.max_initiating` (see [`Supervisor::admit`]).
    initiating: std::collections::HashSet<SaHandle>,
    /// Peers due to be initiated to while the window was full, in order, and the same
    /// as a set.
    waiting: VecDeque<PeerKey>,
    queued: std::collections::HashSet<PeerKey>,
    next_key: u32,
    /// This run follows another (its state was on disk): at start we initiate to every
    /// peer at once, whichever name is lower, claiming to be the only IKE SA. Cleared
    /// once the start's peers are added.
    restarted: bool,
    sources: BTreeMap<String, String>,
    rollout: Rollout,
    /// ESP works: SAs and policies go into the kernel.
    esp: bool,
    esp_problem: Option<String>,
    gate: bool,
    knock: bool,
    /// Our policies in the kernel.
    installed: Vec<Policy>,
    state: State,
    timers: Timers<Timer>,
    held: HashMap<u64, Transmit>,
    /// Inbound SAs of replaced child SAs, deleted when their time comes.
    lingering: HashMap<u64, SaId>,
    next_id: u64,
    actions: VecDeque<Action>,
    /// Policies or state changed during the current input: applied or saved once, at
    /// its end.
    policies_dirty: bool,
    state_dirty: bool,
    /// When the state was last saved.
    saved_at: Option<Instant>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("me", &self.me.name)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor for the configuration's node: its peers added, the kernel's SAs of
    /// ours adopted or deleted, its policies brought to the rendering. Fails in one line
    /// on a membership that does not validate.
    pub fn new(start: Start) -> Result<Self, String> {
        let Start {
            now,
            cfg,
            creds,
            verifier,
            live,
            members,
            mut state,
            kernel,
            esp_problem,
            gate,
            knock,
            mut rng,
        } = start;
        let me = Member {
            name: cfg.node.name.clone(),
            addresses: cfg.node.addresses.clone(),
            level: None,
        };
        let responders: Arc<RwLock<HashMap<IpAddr, Arc<ike::sa::Config>>>> = Arc::default();
        let lookup = responders.clone();
        let ep = Endpoint::new(
            Box::new(move |from: SocketAddr| {
                lookup
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&from.ip().to_canonical())
                    .cloned()
            }),
            Limits::default(),
            &mut *rng,
        );
        // A state saved by an earlier run: the peers may still hold IKE SAs with that
        // run, and will not initiate to us until they find it gone.
        let restarted = state.config_level.is_some();
        let rollout = rollout_from(&mut state, cfg.mesh.level);
        let esp = kernel.is_some();
        let (kernel_sas, installed) = match kernel {
            Some(k) => (k.sas, k.policies),
            None => (Vec::new(), Vec::new()),
        };
        let mut sup = Supervisor {
            cfg,
            me,
            started: now,
            rng,
            ep,
            creds,
            verifier,
            live,
            responders,
            config_members: members,
            peers: HashMap::new(),
            by_name: BTreeMap::new(),
            by_addr: HashMap::new(),
            by_reqid: HashMap::new(),
            by_handle: HashMap::new(),
            deleting: std::collections::HashSet::new(),
            initiating: std::collections::HashSet::new(),
            waiting: VecDeque::new(),
            queued: std::collections::HashSet::new(),
            next_key: 0,
            restarted,
            sources: BTreeMap::new(),
            rollout,
            esp,
            esp_problem,
            gate,
            knock,
            installed,
            state,
            timers: Timers::default(),
            held: HashMap::new(),
            lingering: HashMap::new(),
            next_id: 0,
            actions: VecDeque::new(),
            policies_dirty: true,
            state_dirty: true,
            saved_at: None,
        };
        sup.sync_members(now)?;
        // Only the peers of the start: one added later waits for nothing of ours.
        sup.restarted = false;
        sup.adopt(now, &kernel_sas);
        sup.finish(now);
        info!(
            node = %sup.me.name,
            peers = sup.peers.len(),
            esp = sup.esp,
            target = %sup.rollout.target(),
            "supervisor started"
        );
        Ok(sup)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.me.name
    }

    /// A check the SPA gate runs on each knock's source: pinholes only for members (a
    /// removed node keeps the secret, not access).
    pub fn member_check(&self) -> impl Fn(IpAddr) -> bool + Send + Sync + 'static {
        let members = self.responders.clone();
        move |addr: IpAddr| {
            members
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(&addr.to_canonical())
        }
    }

    // ---- inputs ----

    /// A datagram arrived on our address `local` from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) {
        if let Some(key) = self.by_addr.get(&remote.ip().to_canonical()).copied()
            && let Some(p) = self.peers.get_mut(&key)
        {
            p.last_heard = Some(now);
        }
        self.ep.handle(now, local, remote, datagram, &mut *self.rng);
        self.finish(now);
    }

    /// The network reported `remote`'s port closed for a datagram we sent there (ICMP
    /// port unreachable): the peer's daemon is starting or restarting. An IKE SA we are
    /// starting with it sends its request again soon (knocking again first), rather
    /// than after the full retransmission wait.
    pub fn handle_unreachable(&mut self, now: Instant, remote: SocketAddr) {
        if let Some(key) = self.hurry_connecting(remote, |sa, rng| sa.unreachable(now, rng))
            && let Some(p) = self.peers.get_mut(&key)
        {
            p.knocker.reset();
            debug!(peer = %p.name, "the peer's IKE port is closed: asking again soon");
        }
        self.finish(now);
    }

    /// A request held for a knock went out: if it starts an IKE SA and goes
    /// unanswered for [`KNOCK_RECHECK`], it goes again then (the pinhole may have
    /// opened after it arrived: a gate under load takes longer than the knocker's
    /// settle time), rather than after the full retransmission wait.
    fn after_knock(&mut self, now: Instant, remote: SocketAddr) {
        let _ = self.hurry_connecting(remote, |sa, rng| sa.hurry(now, KNOCK_RECHECK, rng));
    }

    /// Has the IKE SA we are starting with the peer at `remote` send its request again
    /// soon, by `hurry` ([`ike::sa::IkeSa::unreachable`] or [`ike::sa::IkeSa::hurry`]);
    /// the peer, when it will.
    fn hurry_connecting(
        &mut self,
        remote: SocketAddr,
        hurry: impl FnOnce(&mut ike::sa::IkeSa, &mut dyn Random) -> bool,
    ) -> Option<PeerKey> {
        let key = self.by_addr.get(&remote.ip().to_canonical()).copied()?;
        let p = self.peers.get(&key)?;
        let h = p.sa.filter(|_| p.state == IkeState::Connecting)?;
        let rng = &mut *self.rng;
        (self.ep.with_sa(h, |s| hurry(s, rng)) == Some(true)).then_some(key)
    }

    /// An event from the kernel.
    pub fn handle_kernel(&mut self, now: Instant, event: &KernelEvent) {
        self.on_kernel(now, event);
        self.finish(now);
    }

    /// When [`Supervisor::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.next()
    }

    /// Lets time pass: every timer due at `now` fires.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            match t {
                Timer::Endpoint => self.ep.handle_timeout(now, &mut *self.rng),
                Timer::Connect(k) => self.on_connect_due(now, k),
                Timer::Reauth(k) => self.on_reauth_due(now, k),
                Timer::ChildRekey(k) => self.on_child_rekey_due(now, k),
                Timer::IkeRekey(k) => self.on_ike_rekey_due(now, k),
                Timer::Liveness(k) => self.on_liveness_due(now, k),
                Timer::PendingOut(k) => self.install_pending(now, k),
                Timer::Held(id) => {
                    if let Some(t) = self.held.remove(&id) {
                        let remote = t.remote;
                        self.send_now(t);
                        self.after_knock(now, remote);
                    }
                }
                Timer::Linger(id) => {
                    if let Some(sa) = self.lingering.remove(&id) {
                        self.actions.push_back(Action::DeleteSa(sa));
                    }
                }
                // The save itself comes at the end of this input.
                Timer::Save => {}
            }
            // Events and datagrams of what just fired are handled before the next timer.
            self.drain(now);
        }
        self.finish(now);
    }

    /// The next thing to do; call until `None` after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The daemon stops: with `flush`, our IKE SAs are deleted (their Delete sent), the
    /// kernel's entries and the gate's table removed; else everything stays for the next
    /// run to adopt. The state is saved either way.
    pub fn stop(&mut self, now: Instant, flush: bool) {
        if flush {
            let handles: Vec<SaHandle> = self.peers.values().filter_map(|p| p.sa).collect();
            for h in handles {
                self.delete_ike(now, h);
            }
            self.drain(now);
            self.actions.push_back(Action::FlushKernel);
            if self.gate {
                self.actions.push_back(Action::RemoveGate);
            }
            for p in self.peers.values_mut() {
                p.children.clear();
                p.adopted.clear();
            }
        }
        self.state_dirty = true;
        self.save();
    }

    // ---- for tests and the simulator ----

    /// Per peer name: its IKE SAs and child SAs.
    pub fn counts(&self) -> BTreeMap<String, PeerCounts> {
        let mut out: BTreeMap<String, PeerCounts> = self
            .by_name
            .iter()
            .map(|(n, k)| {
                let p = &self.peers[k];
                let counts = PeerCounts {
                    ike_established: 0,
                    children: p.children.len(),
                    adopted: p.adopted.len(),
                };
                (n.clone(), counts)
            })
            .collect();
        for (h, k) in &self.by_handle {
            if !self.deleting.contains(h)
                && self.ep.sa(*h).is_some_and(ike::sa::IkeSa::is_established)
                && let Some(c) = self.peers.get(k).and_then(|p| out.get_mut(&p.name))
            {
                c.ike_established += 1;
            }
        }
        out
    }

    /// The rollout: target, per-peer levels and what they wait for.
    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// How many IKE SAs the endpoint holds (any state).
    pub fn ike_sas(&self) -> usize {
        self.ep.handles().len()
    }

    // ---- internals ----

    fn key_of(&self, name: &str) -> Option<PeerKey> {
        self.by_name.get(name).copied()
    }

    fn random_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.rng.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A random span of up to `max_ms` milliseconds.
    fn spread(&mut self, max_ms: u64) -> Duration {
        Duration::from_millis(self.random_u64() % max_ms.max(1))
    }

    /// `d` less a random share of up to `percent` %, so that a fleet's timers spread out.
    fn jittered(&mut self, d: Duration, percent: u8) -> Duration {
        let span = d.as_millis() * u128::from(percent.min(90)) / 100;
        if span == 0 {
            return d;
        }
        let off = u128::from(self.random_u64()) % span;
        d.saturating_sub(Duration::from_millis(u64::try_from(off).unwrap_or(0)))
    }

    /// Asks the peer to delete an IKE SA; from now on it no longer counts, and its
    /// child SAs are retired at once (the peer retires its own when the Delete arrives;
    /// a peer that restarted holds none).
    fn delete_ike(&mut self, now: Instant, h: SaHandle) {
        let rng = &mut *self.rng;
        let _ = self.ep.with_sa(h, |s| s.delete(now, rng));
        self.deleting.insert(h);
        if let Some(key) = self.by_handle.get(&h).copied()
            && let Some(p) = self.peers.get_mut(&key)
        {
            let gone: Vec<peer::Child> = p.children.extract_if(.., |c| c.sa == h).collect();
            self.retire_later(now, key, gone);
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Collects the endpoint's events and datagrams, and everything they cause.
    fn drain(&mut self, now: Instant) {
        loop {
            if let Some((h, e)) = self.ep.poll_event() {
                self.on_event(now, h, e);
                continue;
            }
            if let Some(t) = self.ep.poll_transmit() {
                self.transmit(now, t);
                continue;
            }
            break;
        }
    }

    /// Ends every input: events drained, policies applied and state saved if they
    /// changed, the endpoint's next wake-up noted.
    fn finish(&mut self, now: Instant) {
        self.drain(now);
        if self.admit(now) {
            self.drain(now);
        }
        if self.policies_dirty {
            self.policies_dirty = false;
            self.apply_policies();
        }
        self.save_soon(now);
        let ep = self.ep.poll_timeout();
        self.timers.set_opt(Timer::Endpoint, ep);
    }

    /// Sends a datagram, knocking first when it is a request to a peer whose gate has
    /// not seen us yet.
    fn transmit(&mut self, now: Instant, t: Transmit) {
        // Byte 19 of the IKE header holds the flags; 0x20 marks a response.
        let is_request = t.datagram.get(19).is_some_and(|f| f & 0x20 == 0);
        if is_request && self.knock {
            let key = self.by_addr.get(&t.remote.ip().to_canonical()).copied();
            if let Some(p) = key.and_then(|k| self.peers.get_mut(&k))
                && let policy::Step::Knock { then_wait } = p.knocker.before_request(now)
            {
                let knock = policy::spa::Knock {
                    node_id: self.me.name.clone(),
                    access: policy::spa::Access::Ike,
                    addr: p.local,
                };
                let remote = SocketAddr::new(p.remote, self.cfg.spa.port);
                self.actions.push_back(Action::Knock { local: p.local, remote, knock });
                let id = self.next_id();
                self.held.insert(id, t);
                self.timers.set(Timer::Held(id), now + then_wait);
                return;
            }
        }
        self.send_now(t);
    }

    fn send_now(&mut self, t: Transmit) {
        // From the address the SA's datagrams arrive on (or it was started from).
        self.actions.push_back(Action::Send {
            local: t.local,
            remote: t.remote,
            datagram: t.datagram,
        });
    }

    /// Marks the state for saving at the end of this input.
    fn dirty(&mut self) {
        self.state_dirty = true;
    }

    /// Saves the state when it changed, at most once per [`SAVE_EVERY`].
    fn save_soon(&mut self, now: Instant) {
        if !self.state_dirty {
            return;
        }
        match self.saved_at {
            Some(t) if now < t + SAVE_EVERY => self.timers.set(Timer::Save, t + SAVE_EVERY),
            _ => {
                self.saved_at = Some(now);
                self.save();
            }
        }
    }

    /// Saves the state when it changed.
    fn save(&mut self) {
        if !self.state_dirty {
            return;
        }
        self.state_dirty = false;
        self.state.rollout = Some(self.rollout.snapshot());
        self.state.children = self
            .by_name
            .iter()
            .filter_map(|(name, k)| {
                let p = &self.peers[k];
                let mut v: Vec<(u32, u32)> =
                    p.adopted.iter().map(|a| (a.spi_in, a.spi_out)).collect();
                v.extend(
                    p.children
                        .iter()
                        .filter(|c| c.installed)
                        .map(|c| (c.pair.spi_in, c.pair.spi_out)),
                );
                (!v.is_empty()).then(|| (name.clone(), v))
            })
            .collect();
        self.actions.push_back(Action::Persist(Box::new(self.state.clone())));
    }
}

/// The rollout at start: as saved, but with the configuration's level as the target
/// when the configuration changed it since it was last applied.
fn rollout_from(state: &mut State, config_level: policy::Level) -> Rollout {
    let mut rollout = match &state.rollout {
        Some(s) => Rollout::restore(s),
        None => Rollout::new(config_level),
    };
    if state.config_level.is_some_and(|l| l != config_level) {
        info!(level = %config_level, "the configuration sets a new mesh level");
        rollout.set_target(config_level);
    }
    state.config_level = Some(config_level);
    rollout
}
