//! A load generator for the pair-rate benchmark: many IKE SAs, each from its own member
//! identity and address, initiated against one real `meshd` responder, with at most a
//! window of them in flight. The figure it gives is the daemon's: every IKE SA is a
//! full `IKE_SA_INIT` and `IKE_AUTH` over UDP (X25519, AES-GCM, certificates verified
//! on both sides, one child SA, as a mesh peer makes it), answered by the daemon's
//! sockets, supervisor and authenticator.
//!
//! Each identity binds its own UDP socket on its own address (port 500), so that the
//! responder sees as many peers as there are identities, and keeps answering the
//! responder's requests (its level announcement) once its IKE SA is up, until the run
//! is stopped: the responder's figures are not those of retransmitting to a silent peer.
//!
//! The initiations run on a multi-threaded tokio runtime with one task per identity;
//! the crypto runs in those tasks, on as many worker threads as `workers` says (the
//! responder's host shares the same cores, as charon's initiator does in its run).

use ca::keys::{PrivateKey, ike_id};
use ca::verify::{CertVerifier, PeerId, TrustBundle};
use ike::crypto::Random;
use ike::crypto::auth::SigAlg;
use ike::proposal::Policy;
use ike::sa::{Config, Event, IkeSa, Retransmit};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::fill(out).expect("the OS has randomness");
    }
}

/// One identity of the load: its address, certificate chain (DER, leaf first) and key.
pub struct LoadIdentity {
    /// The address its socket binds (an alias on the load's host).
    pub addr: IpAddr,
    /// Its certificate chain, DER, leaf first.
    pub certs: Vec<Vec<u8>>,
    /// Its private key.
    pub key: PrivateKey,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// IKE SAs asked for.
    pub n: usize,
    /// From the first `IKE_SA_INIT` sent to the last IKE SA up.
    pub wall: Duration,
    /// IKE SAs that came up.
    pub established: usize,
    /// IKE SAs that failed (refused, or no answer through all retransmissions).
    pub failed: usize,
    /// Our retransmissions, all SAs together.
    pub retransmissions: u64,
    /// The first failures' reasons, for the report.
    pub errors: Vec<String>,
}

impl LoadRun {
    /// IKE SAs per second.
    #[allow(clippy::cast_precision_loss)] // a figure
    pub fn rate(&self) -> f64 {
        self.established as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// The shared part of every identity's IKE configuration.
#[derive(Clone)]
pub struct Target {
    /// The responder's address and IKE port.
    pub remote: SocketAddr,
    /// The responder's IKE identity (an FQDN, as its certificate's first dNSName).
    pub remote_id: String,
    /// The mesh's trust bundle.
    pub bundle: TrustBundle,
}

fn config(target: &Target, id: &LoadIdentity) -> io::Result<Arc<Config>> {
    let leaf = id.certs.first().ok_or_else(|| crate::error("an identity without certificate"))?;
    let local_id = ike_id(leaf).map_err(|e| crate::error(e.to_string()))?;
    let peer = PeerId::fqdn(&target.remote_id);
    let verifier =
        CertVerifier::new(target.bundle.clone()).with_members(move |p: &PeerId| *p == peer);
    Ok(Arc::new(Config {
        policy: Policy::default(),
        local_id,
        certs: id.certs.clone(),
        signer: id.key.signer(),
        authenticator: Arc::new(verifier),
        signature_algorithms: SigAlg::ALL.to_vec(),
        retransmit: Retransmit::default(),
        local_addr: id.addr,
        remote_addr: target.remote.ip(),
    }))
}

/// Counts shared by the tasks.
#[derive(Default)]
struct Tally {
    established: AtomicUsize,
    failed: AtomicUsize,
    retransmissions: AtomicU64,
    /// Nanoseconds from the start to the last IKE SA up.
    last_up: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// Runs the load from the calling thread's network namespace: one IKE SA per identity
/// against `target`, at most `window` of them between their first request and their
/// IKE SA up (or failure), on `workers` threads. Returns once every IKE SA is up or
/// failed, or `max` has passed; the established IKE SAs are then kept, answering the
/// responder, until `hold` returns (the caller measures the responder meanwhile).
///
/// # Errors
/// A socket that cannot be bound, an identity whose configuration cannot be built.
pub fn run(
    target: &Target,
    identities: Vec<LoadIdentity>,
    window: usize,
    workers: usize,
    max: Duration,
    hold: impl FnOnce(&LoadRun),
) -> io::Result<LoadRun> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let n = identities.len();
        // Every socket first, so that none of the responder's datagrams meets a closed
        // port, and no bind is timed.
        let mut prepared = Vec::with_capacity(n);
        for id in &identities {
            let socket = tokio::net::UdpSocket::bind(SocketAddr::new(id.addr, 500)).await?;
            prepared.push((socket, config(target, id)?));
        }
        drop(identities);
        let tally = Arc::new(Tally::default());
        let window = Arc::new(Semaphore::new(window.max(1)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for (socket, cfg) in prepared {
            let (tally, window, stop) = (tally.clone(), window.clone(), stop_rx.clone());
            let remote = target.remote;
            tasks.push(tokio::spawn(async move {
                one(socket, cfg, remote, (&window, &tally, start), stop).await;
            }));
        }
        let deadline = start + max;
        loop {
            let done =
                tally.established.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed);
            if done >= n || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let established = tally.established.load(Ordering::Relaxed);
        let report = LoadRun {
            n,
            wall: Duration::from_nanos(tally.last_up.load(Ordering::Relaxed)),
            established,
            failed: n - established,
            retransmissions: tally.retransmissions.load(Ordering::Relaxed),
            errors: tally.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        };
        // The IKE SAs stay up (and answer) while the caller measures the responder.
        let report = tokio::task::block_in_place(|| {
            hold(&report);
            report
        });
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        Ok(report)
    })
}

/// One identity's IKE SA: initiated once a window slot is free, the slot given back
/// when it is up or has failed, then kept answering until `stop`.
async fn one(
    socket: tokio::net::UdpSocket,
    cfg: Arc<Config>,
    remote: SocketAddr,
    (window, tally, start): (&Semaphore, &Tally, Instant),
    mut stop: watch::Receiver<bool>,
) {
    let Ok(permit) = window.acquire().await else { return };
    let mut permit = Some(permit);
    let mut rng = OsRandom;
    let mut sa = IkeSa::initiate(cfg, Instant::now(), &mut rng);
    let mut buf = vec![0u8; 65_536];
    let mut up = false;
    loop {
        while let Some(d) = sa.poll_transmit() {
            // A send that fails is retransmitted by the SA like a lost one; count it.
            if socket.send_to(&d, remote).await.is_err() {
                tally.errors.lock().map(|mut e| e.push("a send failed".into())).ok();
            }
        }
        while let Some(event) = sa.poll_event() {
            match event {
                Event::IkeUp { .. } if !up => {
                    up = true;
                    let t = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    tally.last_up.fetch_max(t, Ordering::Relaxed);
                    tally.established.fetch_add(1, Ordering::Relaxed);
                    permit = None;
                }
                Event::Failed { error } | Event::Closed { error } => {
                    if !up {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut e) = tally.errors.lock()
                        && e.len() < 10
                    {
                        e.push(error.to_string());
                    }
                    tally
                        .retransmissions
                        .fetch_add(u64::from(sa.retransmissions()), Ordering::Relaxed);
                    return;
                }
                _ => {}
            }
        }
        let _ = &permit;
        let wake = sa.poll_timeout();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((len, from)) = r
                    && from == remote
                {
                    sa.handle(Instant::now(), &buf[..len], &mut rng);
                }
            }
            () = sleep => sa.handle_timeout(Instant::now(), &mut rng),
            _ = stop.changed() => {
                tally.retransmissions.fetch_add(u64::from(sa.retransmissions()), Ordering::Relaxed);
                return;
            }
        }
    }
}
