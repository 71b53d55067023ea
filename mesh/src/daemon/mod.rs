//! `meshd`'s event loop: the IKE endpoint on UDP sockets, one supervisor per peer, the
//! kernel's XFRM tables, the SPA gate and pinholes, the rollout, the state directory and
//! the control socket.
//!
//! # Shape
//!
//! One task owns everything that changes: the sans-IO [`ike::endpoint::Endpoint`] (which
//! routes datagrams to IKE SAs by SPI), a [`Peer`] supervisor per member (its IKE SA,
//! its child SAs, its timers: connect, rekeys, liveness), the [`Rollout`], the
//! [`Kernel`]. Sockets, the control socket, the kernel's XFRM events and signals feed it
//! through channels; it wakes at the earliest timer of the endpoint or any peer. The
//! kernel calls are single netlink round trips, made in place.
//!
//! # Who initiates
//!
//! Of two members, the one whose name sorts first initiates; the other only answers,
//! and initiates itself only when nothing arrived from the peer for [`RESPONDER_GRACE`].
//! A daemon's first IKE SA with each peer after it starts, and every re-authentication,
//! carries `INITIAL_CONTACT`. When two IKE SAs with one peer are up at once, both ends
//! keep the same one (see [`Daemon::resolve_duplicate`]) and delete the other.
//!
//! # Restarts
//!
//! At start the daemon reads back its policies and SAs from the kernel. Policies are
//! brought to the rendering by diff (nothing changes when nothing changed); child SAs
//! of current peers are adopted (left in place and counted as up for the rollout) until
//! the new IKE SA's child is installed, then deleted; SAs of ours that belong to no
//! peer are deleted. On SIGTERM the kernel state is left in place (the default) or
//! flushed (`daemon.on_stop = "flush"`).

pub mod auth;
pub mod kernel;
pub mod state;

use crate::config::{Config, MemberSource, OnStop};
use crate::control::proto::{
    ChildStatus, EspStatus, PeerEntry, PeerStatus, Reply, Request, Response, Status,
};
use crate::rollout::{self, Rollout};
use auth::{Credentials, LiveMembers, PeerAuth};
use ca::verify::{CertVerifier, PeerId};
use ike::crypto::Random;
use ike::crypto::auth::SigAlg;
use ike::endpoint::{Endpoint, Limits, SaHandle, Transmit};
use ike::sa::{ChildSa, Event, Retransmit, Role};
use kernel::{Kernel, Pair};
use policy::{Knocker, Level, Member, MeshPolicy, Pinholes};
use state::{State, StateDir};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// How long the member that does not initiate waits for the other before it
/// initiates itself.
pub const RESPONDER_GRACE: Duration = Duration::from_secs(8);
/// The longest wait between two attempts to reach a peer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a new child SA's outbound SA waits while an older one carries the traffic,
/// so that the peer has installed its inbound SA before we send on it (make before
/// break). It goes in earlier when the older one is deleted.
pub const OUTBOUND_DELAY: Duration = Duration::from_secs(2);
/// How long a replaced child SA's inbound SA stays after its delete, for packets the
/// peer sent on it before it learnt of the delete.
pub const INBOUND_LINGER: Duration = Duration::from_secs(5);
/// Two IKE SAs with one peer that both claim to be the only one, the older at most this
/// old, were made at once (both ends started together): see [`Daemon::resolve_duplicate`].
pub const SIMULTANEOUS: Duration = Duration::from_secs(10);

/// How far apart the two ends' readings of one IKE SA's age may be (the time an
/// `IKE_AUTH` takes between them, retransmissions included): within this of
/// [`SIMULTANEOUS`], only one end settles a duplicate.
pub const AGE_SKEW: Duration = Duration::from_secs(5);

/// The operating system's randomness, for the IKE state machines.
struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::fill(out).expect("the operating system has randomness");
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    OsRandom.fill(&mut b);
    u64::from_le_bytes(b)
}

/// `d` less a random share of up to `percent` %, so that a fleet's timers spread out.
fn jittered(d: Duration, percent: u8) -> Duration {
    let span = d.as_millis() * u128::from(percent.min(90)) / 100;
    if span == 0 {
        return d;
    }
    let off = u128::from(random_u64()) % span;
    d.saturating_sub(Duration::from_millis(u64::try_from(off).unwrap_or(0)))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Where an IKE SA of a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IkeState {
    Down,
    Connecting,
    Established,
}

/// A child SA of a peer.
#[derive(Debug, Clone)]
struct Child {
    pair: Pair,
    /// The IKE SA it belongs to.
    sa: SaHandle,
    /// Its inbound SA is in the kernel.
    installed: bool,
    /// Its outbound SA, while it waits for [`OUTBOUND_DELAY`].
    pending_out: Option<(Instant, Box<xfrm::Sa>)>,
}

/// One peer's supervisor.
struct Peer {
    name: String,
    addresses: Vec<IpAddr>,
    local: IpAddr,
    remote: IpAddr,
    reqid: u32,
    ike: Arc<ike::sa::Config>,
    /// The IKE SA that carries the peer now (connecting or established).
    sa: Option<SaHandle>,
    state: IkeState,
    /// Child SAs, oldest first; the last one is current.
    children: Vec<Child>,
    /// Child SAs found in the kernel at start, kept until a new one is installed.
    adopted: Vec<Pair>,
    knocker: Knocker,
    next_connect: Option<Instant>,
    backoff: Duration,
    child_rekey_at: Option<Instant>,
    ike_rekey_at: Option<Instant>,
    liveness_at: Option<Instant>,
    last_rekey: Option<u64>,
    last_error: Option<String>,
    /// When set, the next IKE SA we initiate claims to be the only one (restart,
    /// re-authentication after a reload).
    claim_only: bool,
    /// When to re-authenticate: a new IKE SA beside the current one, which replaces it.
    reauth_at: Option<Instant>,
    /// When a datagram last came from the peer.
    last_heard: Option<Instant>,
    /// When [`Peer::sa`] was established.
    sa_up_at: Option<Instant>,
}

impl Peer {
    fn current_child(&self) -> Option<&Child> {
        self.children.last()
    }
}

/// Everything the event loop receives.
enum Input {
    Datagram { bytes: Vec<u8>, local: SocketAddr, from: SocketAddr },
    Control(Request, oneshot::Sender<Response>),
    Kernel(xfrm::Event),
    Stop,
    Reload,
}

/// The daemon.
pub struct Daemon {
    cfg: Config,
    me: Member,
    started: Instant,
    rng: OsRandom,
    ep: Endpoint,
    sockets: Vec<(IpAddr, Arc<UdpSocket>)>,
    knock_sockets: Vec<(IpAddr, Arc<UdpSocket>)>,
    spa_keys: Option<Arc<policy::spa::SpaKeys>>,
    creds: Arc<Credentials>,
    verifier: Arc<CertVerifier>,
    live: LiveMembers,
    responders: Arc<RwLock<HashMap<IpAddr, Arc<ike::sa::Config>>>>,
    peers: BTreeMap<String, Peer>,
    sources: BTreeMap<String, String>,
    by_handle: HashMap<SaHandle, String>,
    rollout: Rollout,
    kernel: Option<Kernel>,
    esp_problem: Option<String>,
    pinholes: Option<Pinholes>,
    state_dir: StateDir,
    state: State,
    cfg_path: PathBuf,
    held: Vec<(Instant, Transmit)>,
    /// Inbound SAs of replaced child SAs, deleted when their time comes.
    lingering: Vec<(Instant, xfrm::SaId)>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("me", &self.me.name).finish_non_exhaustive()
    }
}

/// `meshd --flush`: takes every SA and policy of ours and our nftables table out of the
/// kernel, with no daemon running (a running one would put them back; `control_socket`
/// answering means one is). For a node leaving for good, such as the package's removal:
/// a daemon stopped with `on_stop = "keep"` leaves its entries, which are no use without
/// it. Says what it removed.
///
/// # Errors
/// A daemon answering on `control_socket`, or the kernel refusing.
pub fn flush_kernel(control_socket: &Path) -> Result<String, String> {
    if std::os::unix::net::UnixStream::connect(control_socket).is_ok() {
        return Err(format!(
            "meshd is running (it answers on {}); stop it first",
            control_socket.display()
        ));
    }
    let mut kernel = Kernel::open()?;
    let flushed = kernel.flush()?;
    let config = policy::PinholeConfig::default();
    let table = config.table.clone();
    Pinholes::new(config)
        .and_then(|p| p.remove())
        .map_err(|e| format!("nftables table {table}: {e}"))?;
    Ok(format!(
        "removed {} SAs and {} policies of ours, and the nftables table {table}",
        flushed.sas, flushed.policies
    ))
}

/// Runs the daemon with a loaded, checked configuration until SIGTERM or SIGINT.
pub fn run(cfg: Config, config_path: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let (tx, mut rx) = mpsc::channel::<Input>(1024);
        let mut daemon = Daemon::start(cfg, config_path, &tx).await?;
        // Under systemd (Type=notify): started means sockets bound and the kernel
        // reconciled. Not under systemd, this does nothing.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        daemon.event_loop(&mut rx).await
    })
}

impl Daemon {
    /// Sets everything up: credentials, kernel, reconciliation, sockets, gate, control.
    #[allow(clippy::too_many_lines)] // one linear start-up sequence, step by step
    async fn start(
        cfg: Config,
        config_path: &Path,
        tx: &mpsc::Sender<Input>,
    ) -> Result<Self, String> {
        let started = Instant::now();
        let mut rng = OsRandom;
        let state_dir = StateDir::open(&cfg.daemon.state_dir)?;
        let mut state = state_dir.load()?;
        let creds = Arc::new(Credentials::load(&cfg.pki.cert, &cfg.pki.key)?);
        let (bundle, revocation) = auth::trust(&cfg.pki.ca, cfg.pki.crl.as_deref())?;
        let live = LiveMembers::default();
        let verifier = Arc::new(
            CertVerifier::new(bundle).with_revocation(revocation).with_members(live.clone()),
        );
        let me = Member {
            name: cfg.node.name.clone(),
            addresses: cfg.node.addresses.clone(),
            level: None,
        };

        // The kernel: ESP or not, and what of ours is already there.
        let (kernel, esp_problem) = match Kernel::open() {
            Ok(mut k) => match k.esp_problem() {
                None => (Some(k), None),
                Some(p) => (None, Some(p)),
            },
            Err(e) => (None, Some(e)),
        };
        if let Some(p) = &esp_problem {
            error!(
                "no ESP in this kernel, so no traffic is encrypted (IKE, SPA and the firewall still run): {p}"
            );
        }

        // The members' addresses, each with the IKE configuration towards it.
        let responders: Arc<RwLock<HashMap<IpAddr, Arc<ike::sa::Config>>>> = Arc::default();

        // The SPA gate and pinholes.
        let (spa_keys, pinholes) = if cfg.spa.enabled {
            let secret =
                cfg.spa.secret.as_deref().ok_or("spa.secret is required when SPA is enabled")?;
            let keys =
                policy::spa::SpaKeys::load(secret).map_err(|e| format!("spa.secret: {e}"))?;
            let pinholes = Pinholes::new(policy::PinholeConfig {
                ports: vec![cfg.ike.port, 4500],
                default_ttl: cfg.spa.pinhole_ttl,
                ..policy::PinholeConfig::default()
            })
            .and_then(|p| p.install().map(|()| p));
            let pinholes = match pinholes {
                Ok(p) => Some(p),
                Err(e) => {
                    error!("cannot install the SPA pinholes (the IKE ports stay open): {e}");
                    None
                }
            };
            let gatekeeper = policy::spa::Gatekeeper::new(
                policy::spa::SpaKeys::load(secret).map_err(|e| format!("spa.secret: {e}"))?,
                policy::spa::GateConfig {
                    replay_path: Some(state_dir.path().join("spa-replay")),
                    ..policy::spa::GateConfig::default()
                },
            )
            .map_err(|e| format!("SPA gate: {e}"))?;
            if let Some(p) = &pinholes {
                let listen = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.spa.port);
                // Pinholes only for members: a removed node keeps the secret, not access.
                let members = responders.clone();
                let mut gate =
                    policy::SpaGate::bind(listen, gatekeeper, p.clone(), cfg.spa.pinhole_ttl)
                        .await
                        .map_err(|e| e.to_string())?
                        .with_knockers(Arc::new(move |addr: IpAddr| {
                            members
                                .read()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .contains_key(&addr.to_canonical())
                        }));
                tokio::spawn(async move {
                    if let Err(e) = gate.run().await {
                        error!("the SPA gate stopped: {e}");
                    }
                });
            }
            (Some(Arc::new(keys)), pinholes)
        } else {
            (None, None)
        };

        // IKE sockets, one per address, and the knock sockets.
        let mut sockets = Vec::new();
        let mut knock_sockets = Vec::new();
        for &addr in &cfg.node.addresses {
            let s = UdpSocket::bind(SocketAddr::new(addr, cfg.ike.port))
                .await
                .map_err(|e| format!("cannot bind IKE on {addr}:{}: {e}", cfg.ike.port))?;
            let s = Arc::new(s);
            spawn_reader(s.clone(), tx.clone());
            sockets.push((addr, s));
            if spa_keys.is_some() {
                let k = UdpSocket::bind(SocketAddr::new(addr, 0))
                    .await
                    .map_err(|e| format!("cannot bind a knock socket on {addr}: {e}"))?;
                knock_sockets.push((addr, Arc::new(k)));
            }
        }

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
            &mut rng,
        );

        let rollout = rollout_from(&mut state, cfg.mesh.level);

        let mut daemon = Daemon {
            me,
            started,
            rng,
            ep,
            sockets,
            knock_sockets,
            spa_keys,
            creds,
            verifier,
            live,
            responders,
            peers: BTreeMap::new(),
            sources: BTreeMap::new(),
            by_handle: HashMap::new(),
            rollout,
            kernel,
            esp_problem,
            pinholes,
            state_dir,
            state,
            cfg_path: config_path.to_path_buf(),
            held: Vec::new(),
            lingering: Vec::new(),
            cfg,
        };
        daemon.sync_members(started)?;
        daemon.adopt();
        daemon.apply_policies();
        daemon.save();

        // The kernel's events: EXPIRE for rekeys, ACQUIRE for on-demand peers.
        if daemon.kernel.is_some() {
            match xfrm::Events::open(xfrm::Groups {
                acquire: true,
                expire: true,
                ..xfrm::Groups::NONE
            }) {
                Ok(mut events) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        loop {
                            match events.next().await {
                                Ok(e) => {
                                    if tx.send(Input::Kernel(e)).await.is_err() {
                                        break;
                                    }
                                }
                                Err(e) => warn!("XFRM event: {e}"),
                            }
                        }
                    });
                }
                Err(e) => warn!("cannot subscribe to XFRM events (rekeys run on timers only): {e}"),
            }
        }

        // The control socket.
        let listener = crate::control::server::bind(
            &daemon.cfg.daemon.control_socket,
            daemon.cfg.daemon.control_group.as_deref(),
        )
        .map_err(|e| {
            format!("control socket {}: {e}", daemon.cfg.daemon.control_socket.display())
        })?;
        let (ctl_tx, mut ctl_rx) = mpsc::channel(64);
        tokio::spawn(crate::control::server::serve(listener, ctl_tx));
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some((req, answer)) = ctl_rx.recv().await {
                if fwd.send(Input::Control(req, answer)).await.is_err() {
                    break;
                }
            }
        });
        spawn_signals(tx.clone())?;
        info!(
            node = %daemon.me.name,
            peers = daemon.peers.len(),
            config = %config_path.display(),
            esp = daemon.esp_problem.is_none(),
            target = %daemon.rollout.target(),
            "meshd started"
        );
        Ok(daemon)
    }

    // ---- membership ----

    /// The members now: configuration and members file, plus `meshctl` additions, less
    /// `meshctl` removals; this node first.
    fn wanted_members(&self) -> Result<Vec<(Member, String)>, String> {
        let mut out: Vec<(Member, String)> = Vec::new();
        for (m, source) in self.cfg.members()? {
            if self.state.removed.contains(&m.name) {
                continue;
            }
            let source = match source {
                MemberSource::Config => "config",
                MemberSource::MembersFile => "members-file",
            };
            out.push((m, source.to_owned()));
        }
        for m in &self.state.added {
            out.retain(|(o, _)| o.name != m.name);
            out.push((m.clone(), "meshctl".to_owned()));
        }
        Ok(out)
    }

    /// The policy model, with each peer at its rollout level.
    fn model(&self) -> MeshPolicy {
        let mut members: Vec<Member> = Vec::with_capacity(self.peers.len() + 1);
        // Our own level is the strongest: the pair's level is then the peer's rollout
        // level, and the network level the mesh's target.
        members.push(Member { level: Some(Level::Require), ..self.me.clone() });
        for p in self.peers.values() {
            // One child SA per peer, between one pair of addresses: the policies cover
            // that pair only (see `add_peer`).
            members.push(Member {
                name: p.name.clone(),
                addresses: vec![p.remote],
                level: Some(self.rollout.current(&p.name).unwrap_or(Level::Off)),
            });
        }
        let mut model = self.cfg.mesh_policy(members);
        model.level = self.rollout.target();
        model
    }

    /// Brings the peer supervisors to the wanted members: adds new ones, removes gone
    /// ones (their SAs, policies and pinholes), updates changed addresses.
    fn sync_members(&mut self, now: Instant) -> Result<Vec<String>, String> {
        let wanted = self.wanted_members()?;
        let mut changes = Vec::new();
        let names: Vec<String> = wanted.iter().map(|(m, _)| m.name.clone()).collect();
        // A model with every wanted member, to validate and to take the reqids from.
        let all: Vec<Member> = wanted.iter().map(|(m, _)| m.clone()).collect();
        let model = self.cfg.mesh_policy(all);
        let problems = model.validate();
        if !problems.is_empty() {
            return Err(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        }
        let reqids = policy::render::reqids(&model);
        let gone: Vec<String> = self.peers.keys().filter(|n| !names.contains(n)).cloned().collect();
        for name in gone {
            self.remove_peer(now, &name);
            changes.push(format!("removed peer {name}"));
        }
        for (m, source) in wanted {
            if m.name == self.me.name {
                continue;
            }
            self.sources.insert(m.name.clone(), source);
            let reqid = reqids.get(&m.name).copied().unwrap_or(policy::render::NETWORK_REQID);
            match self.peers.get(&m.name) {
                Some(p) if p.addresses == m.addresses && p.reqid == reqid => {}
                Some(_) => {
                    self.remove_peer(now, &m.name);
                    if self.add_peer(now, &m, reqid) {
                        changes.push(format!("changed peer {} to {}", m.name, join(&m.addresses)));
                    }
                }
                None => {
                    if self.add_peer(now, &m, reqid) {
                        changes.push(format!("added peer {} at {}", m.name, join(&m.addresses)));
                    }
                }
            }
        }
        // Peers the saved rollout still names but that are members no more.
        let stale: Vec<String> = self
            .rollout
            .peers()
            .filter(|n| !self.peers.contains_key(*n))
            .map(str::to_owned)
            .collect();
        for n in stale {
            self.rollout.remove_peer(&n);
        }
        self.live.set(self.peers.keys().cloned());
        Ok(changes)
    }

    fn add_peer(&mut self, now: Instant, m: &Member, reqid: u32) -> bool {
        let Some((local, remote)) = pick_pair(&self.me.addresses, &m.addresses) else {
            warn!(peer = %m.name, "no address of the peer shares a family with ours; skipped");
            return false;
        };
        if m.addresses.len() > 1 {
            warn!(peer = %m.name, %local, %remote, "the peer has several addresses: only {local} <-> {remote} is protected, traffic to its other addresses is not");
        }
        let ike = self.ike_config(&m.name, local, remote);
        self.set_responder(&m.addresses, Some(&ike));
        if self.rollout.current(&m.name).is_none() {
            self.rollout.add_peer(&m.name);
            if let Some(level) = m.level {
                let _ = self.rollout.set_peer_target(&m.name, Some(level));
            }
        }
        let first = if self.me.name < m.name {
            // We initiate: soon, spread a little so that a fleet does not start at once.
            now + Duration::from_millis(random_u64() % 500)
        } else {
            now + RESPONDER_GRACE + Duration::from_millis(random_u64() % 2000)
        };
        self.peers.insert(
            m.name.clone(),
            Peer {
                name: m.name.clone(),
                addresses: m.addresses.clone(),
                local,
                remote,
                reqid,
                ike,
                sa: None,
                state: IkeState::Down,
                children: Vec::new(),
                adopted: Vec::new(),
                knocker: Knocker::default(),
                next_connect: (!self.cfg.ike.on_demand).then_some(first),
                backoff: Duration::from_secs(1),
                child_rekey_at: None,
                ike_rekey_at: None,
                liveness_at: None,
                last_rekey: None,
                last_error: None,
                claim_only: true,
                reauth_at: None,
                last_heard: None,
                sa_up_at: None,
            },
        );
        info!(peer = %m.name, addresses = %join(&m.addresses), "peer added");
        true
    }

    fn remove_peer(&mut self, now: Instant, name: &str) {
        let Some(p) = self.peers.remove(name) else { return };
        // Every IKE SA with it: the current one, and any being made or replaced.
        let handles: Vec<SaHandle> = self
            .by_handle
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(h, _)| *h)
            .chain(p.sa)
            .collect();
        for h in handles {
            let rng = &mut self.rng;
            let _ = self.ep.with_sa(h, |s| s.delete(now, rng));
        }
        self.by_handle.retain(|_, n| n != name);
        if let Some(k) = self.kernel.as_mut() {
            for c in p.children.iter().filter(|c| c.installed) {
                k.remove(&c.pair);
            }
            for a in &p.adopted {
                k.remove(a);
            }
            // Inbound SAs of replaced children linger for a while; the peer is gone now.
            let (theirs, others): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.lingering).into_iter().partition(|(_, id)| {
                    p.addresses.contains(&id.src) || p.addresses.contains(&id.dst)
                });
            self.lingering = others;
            for (_, id) in theirs {
                k.delete(&id);
            }
        }
        if let Some(ph) = &self.pinholes {
            for a in &p.addresses {
                if let Err(e) = ph.close(*a) {
                    warn!(peer = name, "cannot close the pinholes: {e}");
                }
            }
        }
        self.set_responder(&p.addresses, None);
        self.rollout.remove_peer(name);
        self.sources.remove(name);
        self.state.children.remove(name);
        info!(peer = name, "peer removed");
    }

    // ---- kernel ----

    /// Adopts the child SAs a previous run left (of current peers, as recorded in the
    /// state directory), and deletes SAs of ours that belong to no peer.
    fn adopt(&mut self) {
        let Some(k) = self.kernel.as_mut() else { return };
        let sas = match k.our_sas() {
            Ok(s) => s,
            Err(e) => {
                warn!("{e}");
                return;
            }
        };
        let mut stale = Vec::new();
        for sa in sas {
            let owner = self.peers.values_mut().find(|p| p.reqid == sa.reqid);
            let Some(p) = owner else {
                stale.push(sa.id);
                continue;
            };
            let recorded = self.state.children.get(&p.name).cloned().unwrap_or_default();
            let pair = recorded.iter().find(|(i, o)| *i == sa.id.spi || *o == sa.id.spi);
            match pair {
                Some(&(spi_in, spi_out)) => {
                    let pair = Pair { local: p.local, remote: p.remote, spi_in, spi_out };
                    if !p.adopted.contains(&pair) {
                        p.adopted.push(pair);
                    }
                }
                None => stale.push(sa.id),
            }
        }
        let now = Instant::now();
        for p in self.peers.values_mut() {
            if !p.adopted.is_empty() {
                info!(peer = %p.name, children = p.adopted.len(), "adopted child SAs left in the kernel by the previous run");
                self.rollout.set_child_up(&p.name, true);
                // We restarted and the peer may still hold its IKE SA with us: make the
                // new one at once, claiming to be the only one, whoever's turn it is.
                p.next_connect = Some(now + Duration::from_millis(random_u64() % 500));
            }
        }
        if !stale.is_empty() {
            info!(count = stale.len(), "deleting SAs of ours that belong to no current peer");
            if let Some(k) = self.kernel.as_mut() {
                k.delete_sas(&stale);
            }
        }
    }

    /// Renders the model and installs the difference.
    fn apply_policies(&mut self) {
        if self.kernel.is_none() {
            return;
        }
        let model = self.model();
        let rendered = match policy::render(&model, &self.me.name) {
            Ok(r) => r,
            Err(e) => {
                error!("the mesh policy does not render, kernel policies left as they are: {e}");
                return;
            }
        };
        let Some(k) = self.kernel.as_mut() else { return };
        let (changed, errors) = k.apply(&rendered.policies);
        for e in errors {
            error!("{e}");
        }
        if changed > 0 {
            debug!(changed, total = rendered.policies.len(), "XFRM policies updated");
        }
    }

    fn save(&mut self) {
        self.state.rollout = Some(self.rollout.snapshot());
        self.state.children = self
            .peers
            .values()
            .filter(|p| !p.children.is_empty() || !p.adopted.is_empty())
            .map(|p| {
                let mut v: Vec<(u32, u32)> =
                    p.adopted.iter().map(|a| (a.spi_in, a.spi_out)).collect();
                v.extend(p.children.iter().map(|c| (c.pair.spi_in, c.pair.spi_out)));
                (p.name.clone(), v)
            })
            .collect();
        if let Err(e) = self.state_dir.save(&self.state) {
            error!("{e}");
        }
    }

    /// Runs the rollout machine; applies and announces what moved.
    fn step_rollout(&mut self, now: Instant) -> Vec<rollout::Change> {
        let changes = self.rollout.step();
        if changes.is_empty() {
            return changes;
        }
        for c in &changes {
            info!(peer = %c.peer, from = %c.from, to = %c.to, "rollout level changed");
        }
        self.apply_policies();
        for c in &changes {
            self.announce(now, &c.peer);
        }
        self.save();
        changes
    }

    /// Tells the peer our current level towards it (a private-use Notify).
    fn announce(&mut self, now: Instant, name: &str) {
        let Some(level) = self.rollout.current(name) else { return };
        let Some(p) = self.peers.get(name) else { return };
        if p.state != IkeState::Established {
            return;
        }
        let Some(h) = p.sa else { return };
        let rng = &mut self.rng;
        let data = rollout::encode_level(level);
        let _ = self.ep.with_sa(h, |s| s.notify(now, rollout::LEVEL_NOTIFY, data, rng));
    }

    // ---- the loop ----

    async fn event_loop(&mut self, rx: &mut mpsc::Receiver<Input>) -> Result<(), String> {
        // systemd's WatchdogSec: the loop itself says it is alive, at half the interval,
        // so a loop that hangs gets the daemon restarted.
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec) / 2)
            .filter(|d| !d.is_zero());
        let mut watchdog_at = Instant::now();
        loop {
            let now = Instant::now();
            if let Some(every) = watchdog
                && now >= watchdog_at
            {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                watchdog_at = now + every;
            }
            self.pump(now).await;
            let mut wake = self.next_wake().unwrap_or(now + Duration::from_secs(1));
            if watchdog.is_some() {
                wake = wake.min(watchdog_at);
            }
            let input = tokio::select! {
                i = rx.recv() => i,
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => continue,
            };
            let now = Instant::now();
            match input {
                None | Some(Input::Stop) => {
                    self.stop();
                    return Ok(());
                }
                Some(Input::Datagram { bytes, local, from }) => {
                    self.on_datagram(now, &bytes, local, from);
                }
                Some(Input::Control(req, answer)) => {
                    let resp = self.on_control(now, req);
                    let _ = answer.send(resp);
                }
                Some(Input::Kernel(e)) => self.on_kernel(now, &e),
                Some(Input::Reload) => {
                    let resp = self.reload(now);
                    if let Response::Error { message } = resp {
                        error!("reload: {message}");
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        match self.cfg.daemon.on_stop {
            OnStop::Keep => {
                self.save();
                info!(
                    "meshd stopping; SAs and policies stay in the kernel (daemon.on_stop = \"keep\")"
                );
            }
            OnStop::Flush => {
                let now = Instant::now();
                let names: Vec<String> = self.peers.keys().cloned().collect();
                for n in names {
                    if let Some(h) = self.peers.get(&n).and_then(|p| p.sa) {
                        let rng = &mut self.rng;
                        let _ = self.ep.with_sa(h, |s| s.delete(now, rng));
                    }
                }
                while let Some(t) = self.ep.poll_transmit() {
                    self.send_now(&t);
                }
                if let Some(k) = self.kernel.as_mut() {
                    match k.flush() {
                        Ok(f) => info!(
                            sas = f.sas,
                            policies = f.policies,
                            "meshd stopping; our SAs and policies removed"
                        ),
                        Err(e) => error!("cannot flush our kernel entries: {e}"),
                    }
                }
                if let Some(p) = &self.pinholes
                    && let Err(e) = p.remove()
                {
                    error!("cannot remove the pinholes' table: {e}");
                }
                self.state.children.clear();
                self.state.rollout = Some(self.rollout.snapshot());
                let _ = self.state_dir.save(&self.state);
            }
        }
        let _ = std::fs::remove_file(&self.cfg.daemon.control_socket);
    }

    fn next_wake(&self) -> Option<Instant> {
        let peers = self.peers.values().flat_map(|p| {
            [p.next_connect, p.reauth_at, p.child_rekey_at, p.ike_rekey_at, p.liveness_at]
                .into_iter()
                .flatten()
        });
        let held = self.held.iter().map(|(t, _)| *t);
        let pending = self.peers.values().flat_map(|p| {
            p.children.iter().filter_map(|c| c.pending_out.as_ref().map(|(t, _)| *t))
        });
        let lingering = self.lingering.iter().map(|(t, _)| *t);
        self.ep
            .poll_timeout()
            .into_iter()
            .chain(peers)
            .chain(held)
            .chain(pending)
            .chain(lingering)
            .min()
    }

    /// Timers, events, datagrams out: everything that is due.
    async fn pump(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now, &mut self.rng);
        }
        self.peer_timers(now);
        self.kernel_timers(now);
        while let Some((h, e)) = self.ep.poll_event() {
            self.on_event(now, h, e);
        }
        while let Some(t) = self.ep.poll_transmit() {
            self.transmit(now, t).await;
        }
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held).into_iter().partition(|(t, _)| *t <= now);
        self.held = later;
        for (_, t) in due {
            self.send_now(&t);
        }
    }

    fn peer_timers(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let names: Vec<String> = self
            .peers
            .values()
            .filter(|p| {
                due(p.next_connect)
                    || due(p.reauth_at)
                    || due(p.child_rekey_at)
                    || due(p.ike_rekey_at)
                    || due(p.liveness_at)
            })
            .map(|p| p.name.clone())
            .collect();
        let jitter = self.cfg.ike.jitter;
        for name in names {
            let Some(p) = self.peers.get_mut(&name) else { continue };
            let rng = &mut self.rng;
            if due(p.next_connect) {
                p.next_connect = None;
                let heard = p
                    .last_heard
                    .is_some_and(|t| now.saturating_duration_since(t) < RESPONDER_GRACE);
                if p.sa.is_none()
                    && heard
                    && p.adopted.is_empty()
                    && self.me.name.as_str() > name.as_str()
                {
                    // The initiator's exchange is under way: give it time before ours.
                    p.next_connect = Some(now + RESPONDER_GRACE);
                } else if p.sa.is_none() {
                    let h = self.ep.connect(
                        now,
                        p.ike.clone(),
                        SocketAddr::new(p.local, self.cfg.ike.port),
                        SocketAddr::new(p.remote, self.cfg.ike.port),
                        rng,
                    );
                    if p.claim_only {
                        let _ = self.ep.with_sa(h, ike::sa::IkeSa::set_initial_contact);
                    }
                    p.sa = Some(h);
                    p.state = IkeState::Connecting;
                    self.by_handle.insert(h, name.clone());
                    debug!(peer = %name, "initiating IKE");
                }
            }
            if due(p.reauth_at) {
                p.reauth_at = None;
                let h = self.ep.connect(
                    now,
                    p.ike.clone(),
                    SocketAddr::new(p.local, self.cfg.ike.port),
                    SocketAddr::new(p.remote, self.cfg.ike.port),
                    rng,
                );
                let _ = self.ep.with_sa(h, ike::sa::IkeSa::set_initial_contact);
                self.by_handle.insert(h, name.clone());
                info!(peer = %name, "re-authenticating: a new IKE SA to replace the current one");
            }
            let Some(h) = p.sa.filter(|_| p.state == IkeState::Established) else {
                p.child_rekey_at = None;
                p.ike_rekey_at = None;
                p.liveness_at = None;
                continue;
            };
            if due(p.child_rekey_at) {
                p.child_rekey_at = Some(now + jittered(self.cfg.ike.child_rekey, jitter));
                if let Some(c) = p.children.iter().rev().find(|c| c.sa == h) {
                    let spi = c.pair.spi_in;
                    let _ = self.ep.with_sa(h, |s| s.rekey_child(now, spi, rng));
                }
            }
            if due(p.ike_rekey_at) {
                p.ike_rekey_at = Some(now + jittered(self.cfg.ike.rekey, jitter));
                let _ = self.ep.with_sa(h, |s| s.rekey_ike(now, rng));
            }
            if due(p.liveness_at) {
                p.liveness_at = Some(now + jittered(self.cfg.ike.liveness, jitter));
                let _ = self.ep.with_sa(h, |s| s.check_liveness(now, rng));
            }
        }
    }

    /// Waiting outbound SAs whose time has come, and lingering inbound SAs to delete.
    fn kernel_timers(&mut self, now: Instant) {
        let due: Vec<String> = self
            .peers
            .values()
            .filter(|p| {
                p.children.iter().any(|c| c.pending_out.as_ref().is_some_and(|(t, _)| *t <= now))
            })
            .map(|p| p.name.clone())
            .collect();
        for name in due {
            self.install_pending(now, &name);
        }
        if self.lingering.iter().any(|(t, _)| *t <= now) {
            let (due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.lingering).into_iter().partition(|(t, _)| *t <= now);
            self.lingering = later;
            if let Some(k) = self.kernel.as_mut() {
                for (_, id) in due {
                    k.delete(&id);
                }
            }
        }
    }

    fn peer_by_addr(&mut self, addr: IpAddr) -> Option<&mut Peer> {
        let addr = addr.to_canonical();
        self.peers.values_mut().find(|p| p.addresses.iter().any(|a| a.to_canonical() == addr))
    }

    /// Sends a datagram, knocking first when it is a request to a peer whose gate has
    /// not seen us yet.
    async fn transmit(&mut self, now: Instant, t: Transmit) {
        // Byte 19 of the IKE header holds the flags; 0x20 marks a response.
        let is_request = t.datagram.get(19).is_some_and(|f| f & 0x20 == 0);
        let spa_port = self.cfg.spa.port;
        let keys = self.spa_keys.clone();
        if is_request && let Some(keys) = keys {
            let remote = t.remote.ip();
            let local = self.peer_by_addr(remote).map(|p| (p.local, p.knocker.before_request(now)));
            if let Some((local, policy::Step::Knock { then_wait })) = local {
                let sock =
                    self.knock_sockets.iter().find(|(a, _)| *a == local).map(|(_, s)| s.clone());
                if let Some(sock) = sock {
                    let knock = policy::spa::Knock {
                        node_id: self.me.name.clone(),
                        access: policy::spa::Access::Ike,
                        addr: local,
                    };
                    if let Err(e) =
                        policy::knock::send(&sock, &keys, &knock, SocketAddr::new(remote, spa_port))
                            .await
                    {
                        warn!(peer = %remote, "SPA knock failed: {e}");
                    }
                    self.held.push((now + then_wait, t));
                    return;
                }
            }
        }
        self.send_now(&t);
    }

    fn send_now(&self, t: &Transmit) {
        let remote = t.remote.ip().to_canonical();
        let local = self
            .peers
            .values()
            .find(|p| p.addresses.iter().any(|a| a.to_canonical() == remote))
            .map(|p| p.local);
        let sock = self
            .sockets
            .iter()
            .find(|(a, _)| Some(*a) == local)
            .or_else(|| self.sockets.iter().find(|(a, _)| a.is_ipv4() == remote.is_ipv4()));
        if let Some((_, s)) = sock
            && let Err(e) = s.try_send_to(&t.datagram, t.remote)
        {
            debug!(to = %t.remote, "IKE send failed: {e}");
        }
    }

    fn on_datagram(&mut self, now: Instant, bytes: &[u8], local: SocketAddr, from: SocketAddr) {
        if let Some(p) = self.peer_by_addr(from.ip()) {
            p.last_heard = Some(now);
        }
        self.ep.handle(now, local, from, bytes, &mut self.rng);
    }

    // ---- IKE events ----

    /// Which of two IKE SAs with one peer both ends keep, by what both ends see alike:
    /// a new SA claimed as the only one (`INITIAL_CONTACT`: a restart or a
    /// re-authentication) replaces the old one, unless the old one made that claim too
    /// and is itself only [`SIMULTANEOUS`] old (both ends started at once); then the one
    /// the preferred initiator (the lower name) made; else the newer one.
    ///
    /// Also says whether the choice hung on the old SA's age being near [`SIMULTANEOUS`]:
    /// each end reads that age on its own clock, so there the two ends may choose
    /// differently, and only the end that settles duplicates acts on it.
    fn resolve_duplicate(
        &self,
        name: &str,
        old: SaHandle,
        new: SaHandle,
        old_age: Duration,
    ) -> (SaHandle, bool) {
        let claims = |h: SaHandle| self.ep.sa(h).is_some_and(ike::sa::IkeSa::initial_contact);
        let near = old_age.abs_diff(SIMULTANEOUS) < AGE_SKEW;
        let ambiguous = claims(new) && claims(old) && near;
        if claims(new) && !(claims(old) && old_age < SIMULTANEOUS) {
            return (new, ambiguous);
        }
        let preferred = |h: SaHandle| {
            let we_initiated = self.ep.sa(h).is_some_and(|s| s.role() == Role::Initiator);
            we_initiated == (self.me.name.as_str() < name)
        };
        let keep = match (preferred(old), preferred(new)) {
            (true, false) => old,
            _ => new,
        };
        (keep, ambiguous)
    }

    #[allow(clippy::too_many_lines)] // one arm per event, each short
    fn on_event(&mut self, now: Instant, h: SaHandle, event: Event) {
        let name = match (&event, self.by_handle.get(&h)) {
            (_, Some(n)) => n.clone(),
            (Event::IkeUp { peer, .. }, None) => {
                let Some(name) = ca::verify::PeerId::from_ike(peer).ok().and_then(|id| match id {
                    PeerId::Fqdn(n) => Some(n),
                    _ => None,
                }) else {
                    return;
                };
                if !self.peers.contains_key(&name) {
                    let rng = &mut self.rng;
                    let _ = self.ep.with_sa(h, |s| s.delete(now, rng));
                    return;
                }
                self.by_handle.insert(h, name.clone());
                name
            }
            _ => return,
        };
        let jitter = self.cfg.ike.jitter;
        let child_rekey = self.cfg.ike.child_rekey;
        let rekeyed = matches!(event, Event::ChildRekeyed { .. });
        match event {
            Event::IkeUp { .. } => {
                let Some(p) = self.peers.get(&name) else { return };
                let mut keep = h;
                if let Some(old) = p.sa.filter(|o| *o != h && p.state == IkeState::Established) {
                    let old_age =
                        p.sa_up_at.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
                    let ambiguous;
                    (keep, ambiguous) = self.resolve_duplicate(&name, old, h, old_age);
                    let drop = if keep == h { old } else { h };
                    // Where the rule hangs on the old SA's age, which each end reads on its
                    // own clock, one end decides: the lower name. Two deciders could each
                    // keep the SA the other deletes, and lose both. The other end keeps both
                    // until the decider's Delete arrives, and falls back on whichever stays
                    // (`sa_gone`).
                    if !ambiguous || self.me.name.as_str() < name.as_str() {
                        info!(peer = %name, "two IKE SAs with the peer; deleting one");
                        let rng = &mut self.rng;
                        let _ = self.ep.with_sa(drop, |s| s.delete(now, rng));
                    } else {
                        debug!(peer = %name, "two IKE SAs with the peer; it deletes one");
                    }
                }
                if keep != h {
                    return;
                }
                let Some(p) = self.peers.get_mut(&name) else { return };
                if let Some(old) = p.sa.filter(|o| *o != h && p.state != IkeState::Established) {
                    // Our own attempt crossed theirs: let ours go on quietly; if it
                    // comes up too, the duplicate rule settles it.
                    debug!(peer = %name, ?old, "peer's IKE SA came up while ours was connecting");
                }
                p.sa = Some(h);
                p.sa_up_at = Some(now);
                p.state = IkeState::Established;
                p.claim_only = false;
                p.backoff = Duration::from_secs(1);
                p.next_connect = None;
                p.knocker.answered();
                p.last_error = None;
                p.ike_rekey_at = Some(now + jittered(self.cfg.ike.rekey, jitter));
                p.liveness_at = Some(now + jittered(self.cfg.ike.liveness, jitter));
                if let Some(ph) = &self.pinholes
                    && let Err(e) = ph.keep(p.remote)
                {
                    warn!(peer = %name, "cannot keep the pinhole open: {e}");
                }
                info!(peer = %name, "IKE SA established");
                self.announce(now, &name);
            }
            Event::ChildUp(c) | Event::ChildRekeyed { child: c, .. } => {
                self.child_up(now, &name, h, &c, rekeyed);
                if let Some(p) = self.peers.get_mut(&name) {
                    p.child_rekey_at = Some(now + jittered(child_rekey, jitter));
                }
            }
            Event::ChildDown { spi_in, spi_out } => {
                let Some(p) = self.peers.get_mut(&name) else { return };
                let gone: Vec<Child> =
                    p.children.extract_if(.., |c| c.pair.spi_in == spi_in).collect();
                debug!(peer = %name, spi_in = format_args!("{spi_in:#010x}"), spi_out = format_args!("{spi_out:#010x}"), "child SA down");
                self.retire(now, &name, gone);
                let Some(p) = self.peers.get(&name) else { return };
                if p.children.is_empty() && p.adopted.is_empty() {
                    self.rollout.set_child_up(&name, false);
                }
                self.save();
            }
            Event::ChildFailed { rekey, error } => {
                let reason = match rekey {
                    Some(old) => format!("rekey of child SA {old:#010x}: {error}"),
                    None => format!("new child SA: {error}"),
                };
                warn!(peer = %name, "child SA refused: {reason}");
                if let Some(p) = self.peers.get_mut(&name) {
                    p.last_error = Some(format!("child SA: {reason}"));
                }
            }
            Event::IkeRekeyed { .. } => {
                if let Some(p) = self.peers.get_mut(&name) {
                    p.last_rekey = Some(unix_now());
                }
                debug!(peer = %name, "IKE SA rekeyed");
            }
            Event::IkeRekeyFailed { error } => {
                let reason = error.to_string();
                warn!(peer = %name, "IKE rekey failed: {reason}");
                if let Some(p) = self.peers.get_mut(&name) {
                    p.last_error = Some(format!("IKE rekey: {reason}"));
                }
            }
            Event::Closed { error } | Event::Failed { error } => {
                self.sa_gone(now, &name, h, &error.to_string());
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

    fn child_up(&mut self, now: Instant, name: &str, h: SaHandle, c: &ChildSa, rekeyed: bool) {
        let rekey_seconds = self.cfg.ike.child_rekey.as_secs();
        let Some(p) = self.peers.get_mut(name) else { return };
        let pair = Pair { local: p.local, remote: p.remote, spi_in: c.spi_in, spi_out: c.spi_out };
        let mut installed = false;
        let mut pending_out = None;
        if let Some(k) = self.kernel.as_mut() {
            let [sa_in, sa_out] = Kernel::sas(&pair, p.reqid, c, rekey_seconds);
            // Inbound first, at once; outbound at once only when nothing older carries
            // the traffic, else a little later (make before break).
            let older = p.children.iter().any(|c| c.installed) || !p.adopted.is_empty();
            let result = k.add(&sa_in).and_then(|()| {
                if older {
                    pending_out = Some((now + OUTBOUND_DELAY, Box::new(sa_out)));
                    Ok(())
                } else {
                    k.add(&sa_out).inspect_err(|_| k.delete(&pair.in_id()))
                }
            });
            match result {
                Ok(()) => installed = true,
                Err(e) => {
                    error!(peer = %name, "cannot install the child SA: {e}");
                    p.last_error = Some(format!("install: {e}"));
                    pending_out = None;
                }
            }
        }
        if rekeyed {
            p.last_rekey = Some(unix_now());
        }
        p.children.push(Child { pair, sa: h, installed, pending_out });
        if self.kernel.is_none() {
            p.adopted.clear();
        }
        info!(peer = %name, spi_in = format_args!("{:#010x}", c.spi_in), spi_out = format_args!("{:#010x}", c.spi_out), installed, "child SA up");
        self.rollout.set_child_up(name, true);
        self.save();
        self.step_rollout(now);
    }

    /// Installs every waiting outbound SA of a peer (a replacement is needed now, or its
    /// time has come); then what the last run left can go.
    fn install_pending(&mut self, now: Instant, name: &str) {
        let Some(p) = self.peers.get_mut(name) else { return };
        let Some(k) = self.kernel.as_mut() else { return };
        let mut any = false;
        for c in &mut p.children {
            if let Some((_, sa)) = c.pending_out.take() {
                any = true;
                if let Err(e) = k.add(&sa) {
                    error!(peer = %name, "cannot install the outbound SA of a child SA: {e}");
                    p.last_error = Some(format!("install: {e}"));
                }
            }
        }
        if any && p.children.iter().any(|c| c.installed) {
            let adopted: Vec<Pair> = std::mem::take(&mut p.adopted);
            for a in adopted {
                k.delete(&a.out_id());
                self.lingering.push((now + INBOUND_LINGER, a.in_id()));
            }
        }
    }

    /// Takes replaced child SAs out of the kernel: a replacement's waiting outbound SA
    /// goes in first, the old outbound SA goes at once, its inbound SA a little later.
    fn retire(&mut self, now: Instant, name: &str, gone: Vec<Child>) {
        if gone.iter().all(|c| !c.installed) {
            return;
        }
        self.install_pending(now, name);
        let Some(k) = self.kernel.as_mut() else { return };
        for c in gone.into_iter().filter(|c| c.installed) {
            if c.pending_out.is_none() {
                k.delete(&c.pair.out_id());
            }
            self.lingering.push((now + INBOUND_LINGER, c.pair.in_id()));
        }
    }

    /// An IKE SA ended: its children go, and the peer is reached again unless another
    /// SA carries it.
    fn sa_gone(&mut self, now: Instant, name: &str, h: SaHandle, reason: &str) {
        self.by_handle.remove(&h);
        let Some(p) = self.peers.get_mut(name) else { return };
        let gone: Vec<Child> = p.children.extract_if(.., |c| c.sa == h).collect();
        self.retire(now, name, gone);
        let Some(p) = self.peers.get_mut(name) else { return };
        if p.sa != Some(h) {
            debug!(peer = %name, "a replaced IKE SA ended: {reason}");
            return;
        }
        // The peer (the end that settles duplicates) deleted the one we had taken as
        // current: another established SA with it carries on.
        let other = self.by_handle.iter().find_map(|(o, n)| {
            (n.as_str() == name && self.ep.sa(*o).is_some_and(ike::sa::IkeSa::is_established))
                .then_some(*o)
        });
        if let Some(other) = other {
            if let Some(p) = self.peers.get_mut(name) {
                p.sa = Some(other);
            }
            // (`retire` above already put in the waiting outbound SAs, if the ended SA's
            // children carried the traffic.)
            info!(peer = %name, "the IKE SA in use ended ({reason}); another established one carries on");
            return;
        }
        let Some(p) = self.peers.get_mut(name) else { return };
        let was = p.state;
        p.sa = None;
        p.state = IkeState::Down;
        p.knocker.reset();
        p.child_rekey_at = None;
        p.ike_rekey_at = None;
        p.liveness_at = None;
        if was == IkeState::Established {
            warn!(peer = %name, "IKE SA ended: {reason}");
            p.backoff = Duration::from_secs(1);
        } else {
            warn!(peer = %name, "cannot reach the peer: {reason}");
            p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
        }
        p.last_error = Some(reason.to_owned());
        if !self.cfg.ike.on_demand {
            let extra =
                if self.me.name.as_str() < name { Duration::ZERO } else { RESPONDER_GRACE / 2 };
            p.next_connect =
                Some(now + p.backoff + extra + Duration::from_millis(random_u64() % 1000));
        }
        if let Some(ph) = &self.pinholes
            && let Err(e) = ph.release(p.remote)
        {
            warn!(peer = %name, "cannot release the pinhole: {e}");
        }
        let empty = p.children.is_empty() && p.adopted.is_empty();
        self.rollout.forget_announcement(name);
        if empty {
            self.rollout.set_child_up(name, false);
        }
        self.save();
        self.step_rollout(now);
    }

    // ---- kernel events ----

    fn on_kernel(&mut self, now: Instant, e: &xfrm::Event) {
        match *e {
            xfrm::Event::Expire { ref sa, reqid, hard } => {
                let Some(p) = self.peers.values_mut().find(|p| p.reqid == reqid) else { return };
                let Some((h, spi_in)) = p
                    .children
                    .iter()
                    .find(|c| c.pair.spi_in == sa.spi || c.pair.spi_out == sa.spi)
                    .map(|c| (c.sa, c.pair.spi_in))
                else {
                    return;
                };
                if hard {
                    warn!(peer = %p.name, "a child SA reached its hard lifetime: the kernel deleted it");
                } else if p.state == IkeState::Established && Some(h) == p.sa {
                    info!(peer = %p.name, "the kernel asks for a rekey (soft lifetime)");
                    let rng = &mut self.rng;
                    let _ = self.ep.with_sa(h, |s| s.rekey_child(now, spi_in, rng));
                }
            }
            xfrm::Event::Acquire { template: Some(ref t), .. } if self.cfg.ike.on_demand => {
                if let Some(p) = self.peers.values_mut().find(|p| p.reqid == t.reqid)
                    && p.sa.is_none()
                    && p.next_connect.is_none()
                {
                    debug!(peer = %p.name, "traffic for the peer: initiating (on demand)");
                    p.next_connect = Some(now);
                }
            }
            _ => {}
        }
    }

    // ---- control ----

    fn on_control(&mut self, now: Instant, req: Request) -> Response {
        let ok = |reply| Response::Ok { reply };
        match req {
            Request::Status => ok(Reply::Status(self.status())),
            Request::PeerList => ok(Reply::Peers {
                peers: self
                    .peers
                    .values()
                    .map(|p| PeerEntry {
                        name: p.name.clone(),
                        addresses: p.addresses.clone(),
                        source: self.sources.get(&p.name).cloned().unwrap_or_default(),
                    })
                    .collect(),
            }),
            Request::RolloutStatus => ok(Reply::Rollout(self.rollout.report())),
            Request::PeerAdd { name, addresses, dry_run } => {
                self.peer_add(now, &name, addresses, dry_run)
            }
            Request::PeerRemove { name, dry_run } => self.peer_rm(now, &name, dry_run),
            Request::RolloutSet { level, peer, clear, dry_run } => {
                self.rollout_set(now, level, peer.as_deref(), clear, dry_run)
            }
            Request::Reload => self.reload(now),
        }
    }

    fn status(&mut self) -> Status {
        let mut peers = Vec::with_capacity(self.peers.len());
        for p in self.peers.values() {
            let child = p.current_child().cloned();
            let (bytes_in, bytes_out) = match (child.as_ref(), self.kernel.as_mut()) {
                (Some(c), Some(k)) if c.installed => k.counters(&c.pair),
                _ => p
                    .adopted
                    .last()
                    .and_then(|a| self.kernel.as_mut().map(|k| k.counters(a)))
                    .unwrap_or((0, 0)),
            };
            let ike = match p.state {
                IkeState::Established => "established",
                IkeState::Connecting if p.knocker.last_knock().is_some() => "knocking",
                IkeState::Connecting => "connecting",
                IkeState::Down if !p.adopted.is_empty() => "adopted",
                IkeState::Down => "down",
            };
            peers.push(PeerStatus {
                name: p.name.clone(),
                addresses: p.addresses.clone(),
                level: self.rollout.current(&p.name).unwrap_or(Level::Off),
                ike: ike.to_owned(),
                child: child.as_ref().map(|c| ChildStatus {
                    spi_in: c.pair.spi_in,
                    spi_out: c.pair.spi_out,
                    installed: c.installed,
                }),
                bytes_in,
                bytes_out,
                last_rekey: p.last_rekey,
                last_error: p.last_error.clone(),
            });
        }
        Status {
            node: self.me.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            esp: EspStatus {
                available: self.esp_problem.is_none(),
                message: self.esp_problem.clone(),
            },
            target: self.rollout.target(),
            peers,
        }
    }

    fn peer_add(
        &mut self,
        now: Instant,
        name: &str,
        addresses: Vec<IpAddr>,
        dry_run: bool,
    ) -> Response {
        if name == self.me.name {
            return err(format!("{name} is this node"));
        }
        if addresses.is_empty() {
            return err("give at least one address".into());
        }
        let before = self.state.clone();
        self.state.removed.retain(|n| *n != name);
        self.state.added.retain(|m| m.name != name);
        self.state.added.push(Member { name: name.to_owned(), addresses, level: None });
        let check = self
            .wanted_members()
            .map(|w| self.cfg.mesh_policy(w.into_iter().map(|(m, _)| m).collect()).validate());
        match check {
            Ok(problems) if problems.is_empty() => {}
            Ok(problems) => {
                self.state = before;
                return err(problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "));
            }
            Err(e) => {
                self.state = before;
                return err(e);
            }
        }
        if dry_run {
            let what = if self.peers.contains_key(name) { "would change" } else { "would add" };
            self.state = before;
            return Response::Ok {
                reply: Reply::Done { changes: vec![format!("{what} peer {name}")] },
            };
        }
        self.commit_members(now)
    }

    fn peer_rm(&mut self, now: Instant, name: &str, dry_run: bool) -> Response {
        if !self.peers.contains_key(name) {
            return err(format!("no peer named {name}"));
        }
        if dry_run {
            return Response::Ok {
                reply: Reply::Done { changes: vec![format!("would remove peer {name}")] },
            };
        }
        let in_config = self.cfg.members().is_ok_and(|m| m.iter().any(|(m, _)| m.name == name));
        self.state.added.retain(|m| m.name != name);
        if in_config && !self.state.removed.iter().any(|n| n == name) {
            self.state.removed.push(name.to_owned());
        }
        self.commit_members(now)
    }

    fn commit_members(&mut self, now: Instant) -> Response {
        match self.sync_members(now) {
            Ok(changes) => {
                self.apply_policies();
                self.save();
                self.step_rollout(now);
                Response::Ok { reply: Reply::Done { changes } }
            }
            Err(e) => err(e),
        }
    }

    fn rollout_set(
        &mut self,
        now: Instant,
        level: Level,
        peer: Option<&str>,
        clear: bool,
        dry_run: bool,
    ) -> Response {
        let mut next = self.rollout.clone();
        let what = if let Some(p) = peer {
            let target = (!clear).then_some(level);
            if let Err(e) = next.set_peer_target(p, target) {
                return err(e);
            }
            if clear {
                format!("target of {p}: mesh target")
            } else {
                format!("target of {p}: {level}")
            }
        } else {
            next.set_target(level);
            format!("mesh target: {level}")
        };
        if dry_run {
            let moves = next.step();
            let mut changes = vec![format!("would set {what}")];
            changes.extend(
                moves.iter().map(|c| format!("would move {} from {} to {}", c.peer, c.from, c.to)),
            );
            return Response::Ok { reply: Reply::Done { changes } };
        }
        self.rollout = next;
        let moves = self.step_rollout(now);
        if moves.is_empty() {
            // The target alone can change the network-wide policies.
            self.apply_policies();
            self.save();
        }
        let mut changes = vec![format!("set {what}")];
        changes
            .extend(moves.iter().map(|c| format!("moved {} from {} to {}", c.peer, c.from, c.to)));
        info!("rollout: set {what}");
        Response::Ok { reply: Reply::Done { changes } }
    }

    /// Reads trust, CRL, credentials and the members file again; re-authenticates
    /// every peer with a new IKE SA that replaces the old one (make before break).
    fn reload(&mut self, now: Instant) -> Response {
        let mut changes = Vec::new();
        match Config::load(&self.cfg_path()) {
            Ok(cfg) => {
                if self.state.config_level != Some(cfg.mesh.level) {
                    self.rollout.set_target(cfg.mesh.level);
                    self.state.config_level = Some(cfg.mesh.level);
                    changes.push(format!("mesh target from the configuration: {}", cfg.mesh.level));
                }
                self.cfg.mesh = cfg.mesh;
            }
            Err(problems) => return err(problems.join("; ")),
        }
        let (bundle, revocation) = match auth::trust(&self.cfg.pki.ca, self.cfg.pki.crl.as_deref())
        {
            Ok(t) => t,
            Err(e) => return err(e),
        };
        self.verifier.set_bundle(bundle);
        self.verifier.set_revocation(revocation);
        changes.push("trust bundle and CRL reloaded".to_owned());
        let creds = match Credentials::load(&self.cfg.pki.cert, &self.cfg.pki.key) {
            Ok(c) => Arc::new(c),
            Err(e) => return err(e),
        };
        let new_cert = creds.certs != self.creds.certs;
        self.creds = creds;
        match self.sync_members(now) {
            Ok(c) => changes.extend(c),
            Err(e) => return err(e),
        }
        // New IKE configurations carry the new credentials; every established peer
        // is re-authenticated by a new IKE SA that claims to be the only one.
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in &names {
            let Some(p) = self.peers.get(name) else { continue };
            let ike = self.ike_config(name, p.local, p.remote);
            let addresses = p.addresses.clone();
            self.set_responder(&addresses, Some(&ike));
            let Some(p) = self.peers.get_mut(name) else { continue };
            p.ike = ike;
            if p.state == IkeState::Established {
                p.reauth_at = Some(now + Duration::from_millis(random_u64() % 2000));
            }
        }
        if new_cert {
            changes.push("certificate reloaded; re-authenticating every peer".to_owned());
        } else {
            changes.push("re-authenticating every peer".to_owned());
        }
        self.apply_policies();
        self.save();
        self.step_rollout(now);
        info!("reloaded: {}", changes.join("; "));
        Response::Ok { reply: Reply::Done { changes } }
    }

    fn cfg_path(&self) -> PathBuf {
        self.cfg_path.clone()
    }

    /// The IKE configuration towards one peer, with our current credentials.
    fn ike_config(&self, name: &str, local: IpAddr, remote: IpAddr) -> Arc<ike::sa::Config> {
        Arc::new(ike::sa::Config {
            policy: self.cfg.ike_policy(),
            local_id: self.creds.local_id.clone(),
            certs: self.creds.certs.clone(),
            signer: self.creds.signer.clone(),
            authenticator: Arc::new(PeerAuth {
                verifier: self.verifier.clone(),
                expected: PeerId::fqdn(name),
            }),
            signature_algorithms: SigAlg::ALL.to_vec(),
            retransmit: Retransmit { base: self.cfg.ike.retransmit_base, ..Retransmit::default() },
            local_addr: local,
            remote_addr: remote,
        })
    }

    /// Points the responder side at `ike` for these addresses (or forgets them).
    fn set_responder(&self, addresses: &[IpAddr], ike: Option<&Arc<ike::sa::Config>>) {
        let mut r = self.responders.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for a in addresses {
            match ike {
                Some(ike) => r.insert(a.to_canonical(), ike.clone()),
                None => r.remove(&a.to_canonical()),
            };
        }
    }
}

/// The rollout at start: as saved, but with the configuration's level as the target
/// when the configuration changed it since it was last applied.
fn rollout_from(state: &mut State, config_level: Level) -> Rollout {
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

fn err(message: String) -> Response {
    Response::Error { message }
}

fn join(addrs: &[IpAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Our address and the peer's for IKE and the child SA: the first pair of one family,
/// IPv4 first.
fn pick_pair(ours: &[IpAddr], theirs: &[IpAddr]) -> Option<(IpAddr, IpAddr)> {
    for v4 in [true, false] {
        let l = ours.iter().find(|a| a.is_ipv4() == v4);
        let r = theirs.iter().find(|a| a.is_ipv4() == v4);
        if let (Some(l), Some(r)) = (l, r) {
            return Some((*l, *r));
        }
    }
    None
}

fn spawn_reader(sock: Arc<UdpSocket>, tx: mpsc::Sender<Input>) {
    tokio::spawn(async move {
        let Ok(local) = sock.local_addr() else { return };
        let mut buf = vec![0u8; 65_536];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let bytes = buf[..n].to_vec();
                    if tx.send(Input::Datagram { bytes, local, from }).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    debug!("IKE socket: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

fn spawn_signals(tx: mpsc::Sender<Input>) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = term.recv() => Input::Stop,
                _ = int.recv() => Input::Stop,
                _ = hup.recv() => Input::Reload,
            };
            if tx.send(input).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}
