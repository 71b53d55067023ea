//! `meshd`'s shell: the IO around the [`Supervisor`], which makes every decision.
//!
//! One task owns the supervisor. UDP sockets, the control socket, the kernel's XFRM
//! events and signals feed it through a channel; it sleeps until the supervisor's next
//! wake-up or the next input, hands the input over, then carries out the supervisor's
//! actions: datagrams and SPA knocks sent, SAs and policies put into or taken out of the
//! kernel (single netlink round trips, made in place), pinholes kept or released, the
//! state written. Reading files (a reload) and the kernel's byte counters (a status)
//! happen here too; everything else is in [`crate::supervisor`].

pub mod auth;
pub mod kernel;
pub mod state;
pub mod udp;

use crate::config::{Config, MemberSource, OnStop};
use crate::control::proto::{Reply, Request, Response};
use crate::supervisor::auth::LiveMembers;
use crate::supervisor::{Action, KernelEvent, KernelView, PinholeOp, Reloaded, Start, Supervisor};
use ca::verify::CertVerifier;
use ike::crypto::Random;
use kernel::Kernel;
use policy::nft::Change;
use policy::{Member, Pinholes};
use state::StateDir;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

/// The operating system's randomness, for the IKE state machines.
pub(crate) struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::fill(out).expect("the operating system has randomness");
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Everything the event loop receives.
enum Input {
    Datagram { bytes: Vec<u8>, local: SocketAddr, from: SocketAddr },
    PortClosed(SocketAddr),
    Control(Request, oneshot::Sender<Response>),
    Kernel(xfrm::Event),
    Stop,
    Reload,
}

/// The daemon: the supervisor and the IO it needs.
pub struct Daemon {
    sup: Supervisor,
    cfg: Config,
    cfg_path: PathBuf,
    sockets: Vec<(IpAddr, Arc<UdpSocket>)>,
    knock_sockets: Vec<(IpAddr, Arc<UdpSocket>)>,
    /// IKE datagrams the kernel put off, until it takes them.
    outbox: udp::Outbox,
    readers: Arc<udp::ReaderCounters>,
    spa_keys: Option<Arc<policy::spa::SpaKeys>>,
    verifier: Arc<CertVerifier>,
    kernel: Option<Kernel>,
    pinholes: Option<Pinholes>,
    /// Pinhole changes, made by their own task in batches.
    pinhole_tx: Option<mpsc::Sender<Change>>,
    state_dir: StateDir,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("me", &self.sup.name()).finish_non_exhaustive()
    }
}

/// The configuration's members with their source, as the supervisor takes them.
fn config_members(cfg: &Config) -> Result<Vec<(Member, String)>, String> {
    Ok(cfg
        .members()?
        .into_iter()
        .map(|(m, source)| {
            let source = match source {
                MemberSource::Config => "config",
                MemberSource::MembersFile => "members-file",
            };
            (m, source.to_owned())
        })
        .collect())
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
    /// Sets everything up: credentials, kernel, sockets, gate, the supervisor (which
    /// reconciles the kernel), control socket and signals.
    #[allow(clippy::too_many_lines)] // one linear start-up sequence, step by step
    async fn start(
        cfg: Config,
        config_path: &Path,
        tx: &mpsc::Sender<Input>,
    ) -> Result<Self, String> {
        let now = Instant::now();
        let state_dir = StateDir::open(&cfg.daemon.state_dir)?;
        let state = state_dir.load()?;
        let creds = Arc::new(auth::load_credentials(&cfg.pki.cert, &cfg.pki.key)?);
        let (bundle, revocation) = auth::trust(&cfg.pki.ca, cfg.pki.crl.as_deref())?;
        let live = LiveMembers::default();
        let verifier = Arc::new(
            CertVerifier::new(bundle).with_revocation(revocation).with_members(live.clone()),
        );

        // The kernel: ESP or not, and what of ours is already there.
        let (mut kernel, esp_problem) = match Kernel::open() {
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
        let view = match kernel.as_mut() {
            Some(k) => {
                let sas = k.our_sas().unwrap_or_else(|e| {
                    warn!("{e}");
                    Vec::new()
                });
                Some(KernelView {
                    sas: sas.into_iter().map(|s| (s.id, s.reqid)).collect(),
                    policies: k.installed().to_vec(),
                })
            }
            None => None,
        };

        // The SPA keys and pinholes.
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
            (Some(Arc::new(keys)), pinholes)
        } else {
            (None, None)
        };

        let sup = Supervisor::new(Start {
            now,
            cfg: cfg.clone(),
            creds,
            verifier: verifier.clone(),
            live,
            members: config_members(&cfg)?,
            state,
            kernel: view,
            esp_problem,
            gate: pinholes.is_some(),
            knock: spa_keys.is_some(),
            rng: Box::new(OsRandom),
        })?;

        // The SPA gate, for members only.
        if let (Some(p), Some(secret)) = (&pinholes, cfg.spa.secret.as_deref()) {
            let gatekeeper = policy::spa::Gatekeeper::new(
                policy::spa::SpaKeys::load(secret).map_err(|e| format!("spa.secret: {e}"))?,
                policy::spa::GateConfig {
                    replay_path: Some(state_dir.path().join("spa-replay")),
                    ..policy::spa::GateConfig::default()
                },
            )
            .map_err(|e| format!("SPA gate: {e}"))?;
            let listen = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.spa.port);
            let members = sup.member_check();
            let mut gate =
                policy::SpaGate::bind(listen, gatekeeper, p.clone(), cfg.spa.pinhole_ttl)
                    .await
                    .map_err(|e| e.to_string())?
                    .with_knockers(Arc::new(members));
            tokio::spawn(async move {
                if let Err(e) = gate.run().await {
                    error!("the SPA gate stopped: {e}");
                }
            });
        }

        // IKE sockets, one per address, and the knock sockets.
        let mut sockets = Vec::new();
        let mut knock_sockets = Vec::new();
        let readers = Arc::new(udp::ReaderCounters::default());
        for &addr in &cfg.node.addresses {
            let local = SocketAddr::new(addr, cfg.ike.port);
            let s = udp::bind(local).map_err(|e| format!("cannot bind IKE: {e}"))?;
            let s = Arc::new(s);
            spawn_reader(s.clone(), Some(local), tx.clone(), readers.clone());
            sockets.push((addr, s));
            if spa_keys.is_some() {
                // With IP_RECVERR too: a knock refused because the peer's gate is not
                // listening yet (its daemon is starting) tells the supervisor, which
                // knocks and asks again soon.
                let k = udp::bind(SocketAddr::new(addr, 0))
                    .map_err(|e| format!("cannot bind a knock socket: {e}"))?;
                let k = Arc::new(k);
                spawn_reader(k.clone(), None, tx.clone(), readers.clone());
                knock_sockets.push((addr, k));
            }
        }

        let mut daemon = Daemon {
            sup,
            cfg,
            cfg_path: config_path.to_path_buf(),
            sockets,
            knock_sockets,
            outbox: udp::Outbox::new(udp::OUTBOX_LIMIT),
            readers,
            spa_keys,
            verifier,
            kernel,
            pinhole_tx: pinholes.clone().map(spawn_pinhole_task),
            pinholes,
            state_dir,
        };
        daemon.carry_out().await;

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
            node = %daemon.sup.name(),
            config = %config_path.display(),
            esp = daemon.kernel.is_some(),
            target = %daemon.sup.rollout().target(),
            "meshd started"
        );
        Ok(daemon)
    }

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
            if self.sup.poll_timeout().is_some_and(|t| t <= now) {
                self.sup.handle_timeout(now);
                self.carry_out().await;
            }
            if self.outbox.next_retry().is_some_and(|t| t <= now) {
                let (sockets, knocks) = (&self.sockets, &self.knock_sockets);
                self.outbox.flush(now, &mut |o| send_on(sockets, knocks, o));
            }
            let mut wake = self.sup.poll_timeout().unwrap_or(now + Duration::from_secs(1));
            if let Some(t) = self.outbox.next_retry() {
                wake = wake.min(t);
            }
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
                    self.stop(now).await;
                    return Ok(());
                }
                Some(Input::Datagram { bytes, local, from }) => {
                    self.sup.handle_datagram(now, local, from, &bytes);
                }
                Some(Input::PortClosed(to)) => self.sup.handle_unreachable(now, to),
                Some(Input::Control(req, answer)) => {
                    let resp = match req {
                        Request::Status => self.status(now),
                        Request::Reload => self.reload(now),
                        req => self.sup.control(now, req),
                    };
                    // The actions first: a command's changes are in the kernel and on
                    // disk when it is answered.
                    self.carry_out().await;
                    let _ = answer.send(resp);
                }
                Some(Input::Kernel(e)) => {
                    if let Some(e) = kernel_event(&e) {
                        self.sup.handle_kernel(now, &e);
                    }
                }
                Some(Input::Reload) => {
                    let resp = self.reload(now);
                    if let Response::Error { message } = resp {
                        error!("reload: {message}");
                    }
                }
            }
            self.carry_out().await;
        }
    }

    fn status(&mut self, now: Instant) -> Response {
        let kernel = &mut self.kernel;
        let mut status = self.sup.status(now, unix_now(), &mut |pair| {
            kernel.as_mut().map_or((0, 0), |k| k.counters(pair))
        });
        let out = self.outbox.counters();
        let c = &mut status.counters;
        c.sent = out.sent;
        c.deferred = out.deferred;
        c.send_failed = out.failed;
        c.errors_reported =
            out.errors_reported + self.readers.errors_reported.load(Ordering::Relaxed);
        Response::Ok { reply: Reply::Status(status) }
    }

    /// Reads trust, CRL, credentials, the configuration and the members file again, and
    /// hands them to the supervisor.
    fn reload(&mut self, now: Instant) -> Response {
        let err = |message| Response::Error { message };
        let cfg = match Config::load(&self.cfg_path) {
            Ok(cfg) => cfg,
            Err(problems) => return err(problems.join("; ")),
        };
        let (bundle, revocation) = match auth::trust(&self.cfg.pki.ca, self.cfg.pki.crl.as_deref())
        {
            Ok(t) => t,
            Err(e) => return err(e),
        };
        let creds = match auth::load_credentials(&self.cfg.pki.cert, &self.cfg.pki.key) {
            Ok(c) => Arc::new(c),
            Err(e) => return err(e),
        };
        let members = match config_members(&cfg) {
            Ok(m) => m,
            Err(e) => return err(e),
        };
        self.verifier.set_bundle(bundle);
        self.verifier.set_revocation(revocation);
        self.cfg.mesh = cfg.mesh.clone();
        self.sup.reload(now, Reloaded { cfg, members, creds })
    }

    async fn stop(&mut self, now: Instant) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let flush = self.cfg.daemon.on_stop == OnStop::Flush;
        self.sup.stop(now, flush);
        self.carry_out().await;
        if flush {
            info!("meshd stopping; our SAs, policies and pinholes removed");
        } else {
            info!(
                "meshd stopping; SAs and policies stay in the kernel (daemon.on_stop = \"keep\")"
            );
        }
        let _ = std::fs::remove_file(&self.cfg.daemon.control_socket);
    }

    /// Carries out every action the supervisor asks for, in order; a kernel refusal goes
    /// back to it as an input (and its own actions follow).
    async fn carry_out(&mut self) {
        while let Some(action) = self.sup.poll_action() {
            match action {
                Action::Send { local, remote, datagram } => {
                    self.send(udp::Outgoing::new(local, remote, datagram));
                }
                Action::Knock { local, remote, knock } => self.knock(local, remote, &knock),
                Action::AddSa(sa) => {
                    let Some(k) = self.kernel.as_mut() else { continue };
                    if let Err(error) = k.add(&sa) {
                        let id = sa.id();
                        self.sup.handle_kernel(
                            Instant::now(),
                            &KernelEvent::AddFailed { sa: id, error },
                        );
                    }
                }
                Action::DeleteSa(id) => {
                    if let Some(k) = self.kernel.as_mut() {
                        k.delete(&id);
                    }
                }
                Action::Policies { add, remove } => {
                    if let Some(k) = self.kernel.as_mut() {
                        for e in k.apply_diff(&add, &remove) {
                            error!("{e}");
                        }
                    }
                }
                Action::Pinhole(op) => self.pinhole(op).await,
                Action::Persist(state) => {
                    if let Err(e) = self.state_dir.save(&state) {
                        error!("{e}");
                    }
                }
                Action::FlushKernel => {
                    if let Some(k) = self.kernel.as_mut() {
                        match k.flush() {
                            Ok(f) => info!(
                                sas = f.sas,
                                policies = f.policies,
                                "our SAs and policies removed"
                            ),
                            Err(e) => error!("cannot flush our kernel entries: {e}"),
                        }
                    }
                }
                Action::RemoveGate => {
                    if let Some(p) = &self.pinholes
                        && let Err(e) = p.remove()
                    {
                        error!("cannot remove the pinholes' table: {e}");
                    }
                }
            }
        }
    }

    /// Hands a pinhole change to the pinhole task (see [`spawn_pinhole_task`]).
    async fn pinhole(&self, op: PinholeOp) {
        let Some(tx) = &self.pinhole_tx else { return };
        let change = match op {
            PinholeOp::Keep(a) => Change::Keep(a),
            PinholeOp::Release(a) => Change::Release(a),
            PinholeOp::Close(a) => Change::Close(a),
        };
        let _ = tx.send(change).await;
    }

    /// Sends through the outbox (behind anything the kernel put off).
    fn send(&mut self, item: udp::Outgoing) {
        let (sockets, knocks) = (&self.sockets, &self.knock_sockets);
        self.outbox.send(Instant::now(), item, &mut |o| send_on(sockets, knocks, o));
    }

    /// Sends a knock through the outbox, behind any IKE datagram the kernel put off
    /// (and ahead of the request it opens the way for).
    fn knock(&mut self, local: IpAddr, remote: SocketAddr, knock: &policy::spa::Knock) {
        let Some(keys) = &self.spa_keys else { return };
        let Some((_, sock)) = self.knock_sockets.iter().find(|(a, _)| *a == local) else { return };
        let from = sock.local_addr().ok();
        let datagram = match policy::knock::prepare(from, keys, knock) {
            Ok(d) => d,
            Err(e) => {
                warn!(peer = %remote.ip(), "SPA knock failed: {e}");
                return;
            }
        };
        let from = from.unwrap_or_else(|| SocketAddr::new(local, 0));
        self.send(udp::Outgoing::knock(from, remote, datagram));
    }
}

/// The kernel events the supervisor acts on.
fn kernel_event(e: &xfrm::Event) -> Option<KernelEvent> {
    match *e {
        xfrm::Event::Expire { sa, reqid, hard } => Some(KernelEvent::Expire { sa, reqid, hard }),
        xfrm::Event::Acquire { template: Some(ref t), .. } => {
            Some(KernelEvent::Acquire { reqid: t.reqid })
        }
        _ => None,
    }
}

/// The task that changes pinholes: each netlink transaction takes every change waiting
/// (up to 256), in order, so that IKE SAs coming up by the hundred cost a few, and the
/// event loop never waits for one.
fn spawn_pinhole_task(pinholes: Pinholes) -> mpsc::Sender<Change> {
    let (tx, mut rx) = mpsc::channel::<Change>(4096);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 256
                && let Ok(c) = rx.try_recv()
            {
                batch.push(c);
            }
            let p = pinholes.clone();
            let result = tokio::task::spawn_blocking(move || {
                let r = p.change(&batch);
                (r, batch)
            })
            .await;
            match result {
                Ok((Ok(()), _)) => {}
                Ok((Err(e), batch)) => {
                    let peers: Vec<String> = batch.iter().map(|c| c.addr().to_string()).collect();
                    warn!(peers = %peers.join(","), "cannot change the pinholes: {e}");
                }
                Err(e) => warn!("cannot change the pinholes: the nft task failed: {e}"),
            }
        }
    });
    tx
}

/// One send of `o` on the socket of its local address (or of its family): an IKE
/// socket, or for a knock the knock socket.
fn send_on(
    ike: &[(IpAddr, Arc<UdpSocket>)],
    knock: &[(IpAddr, Arc<UdpSocket>)],
    o: &udp::Outgoing,
) -> std::io::Result<usize> {
    let sockets = if o.knock { knock } else { ike };
    let sock = sockets
        .iter()
        .find(|(a, _)| *a == o.local.ip())
        .or_else(|| sockets.iter().find(|(a, _)| a.is_ipv4() == o.remote.is_ipv4()));
    match sock {
        Some((_, s)) => udp::send_now(s, &o.datagram, o.remote),
        None => Err(std::io::Error::other(format!("no socket for {}", o.local))),
    }
}

/// Reads a socket: an IKE socket's datagrams (`ike` is its address) and error
/// reports, or a knock socket's error reports only (`None`).
fn spawn_reader(
    sock: Arc<UdpSocket>,
    ike: Option<SocketAddr>,
    tx: mpsc::Sender<Input>,
    counters: Arc<udp::ReaderCounters>,
) {
    tokio::spawn(async move {
        udp::read_loop(&sock, &counters, |r| {
            let tx = tx.clone();
            let input = match (r, ike) {
                (udp::Received::Datagram(bytes, from), Some(local)) => {
                    Some(Input::Datagram { bytes, local, from })
                }
                // Nobody has business sending to a knock socket.
                (udp::Received::Datagram(..), None) => None,
                (udp::Received::PortClosed(to), _) => Some(Input::PortClosed(to)),
            };
            async move {
                match input {
                    Some(i) => tx.send(i).await.is_ok(),
                    None => true,
                }
            }
        })
        .await;
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
