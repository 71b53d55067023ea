//! The supervisor's decisions, in memory: two or three supervisors whose datagrams are
//! handed over directly, with a virtual clock. (The fleet simulator, `tests/sim`, runs
//! hundreds with a network, kernels and restarts.)

use super::*;
use crate::control::proto::{Reply, Request, Response};
use ca::authority::{generate_node_key, make_csr};
use ca::{Algorithm, Authority, InitOptions, IssueOptions, PrivateKey};

fn addr(i: usize) -> IpAddr {
    format!("192.0.2.{}", i + 1).parse().unwrap()
}

fn name(i: usize) -> String {
    format!("node{i}")
}

/// A CA and `n` nodes' configurations and credentials.
struct Fleet {
    _dir: tempfile::TempDir,
    authority: Authority,
    creds: Vec<Arc<Credentials>>,
    cfgs: Vec<Config>,
    members: Vec<(Member, String)>,
}

impl Fleet {
    fn new(n: usize, level: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::init(&dir.path().join("ca"), &InitOptions::new("t")).unwrap();
        let mut creds = Vec::new();
        let mut cfgs = Vec::new();
        for i in 0..n {
            let key = generate_node_key(Algorithm::Ed25519).unwrap();
            let csr = make_csr(&name(i), key.pem()).unwrap();
            let issued = authority.issue_with(&name(i), &csr, &IssueOptions::default()).unwrap();
            let certs = ca::keys::cert_chain_from_pem(issued.cert_pem.as_bytes()).unwrap();
            let private = PrivateKey::from_pem(key.pem().as_bytes()).unwrap();
            creds.push(Arc::new(Credentials::new(&private, certs).unwrap()));
            let text = format!(
                "[node]\nname = \"{}\"\naddresses = [\"{}\"]\n[pki]\nca = \"/c\"\ncert = \"/c\"\nkey = \"/c\"\n\
                 [spa]\nenabled = false\n[mesh]\nlevel = \"{level}\"\n",
                name(i),
                addr(i)
            );
            cfgs.push(Config::parse(&text).unwrap());
        }
        let members = (0..n)
            .map(|i| {
                (Member { name: name(i), addresses: vec![addr(i)], level: None }, "config".into())
            })
            .collect();
        Self { _dir: dir, authority, creds, cfgs, members }
    }

    fn start(&self, i: usize, now: Instant, state: State, kernel: KernelView) -> Supervisor {
        let (bundle, revocation) = self.authority.revocation_state().unwrap();
        let live = LiveMembers::default();
        let verifier = Arc::new(
            CertVerifier::new(bundle).with_revocation(revocation).with_members(live.clone()),
        );
        Supervisor::new(Start {
            now,
            cfg: self.cfgs[i].clone(),
            creds: self.creds[i].clone(),
            verifier,
            live,
            members: self.members.clone(),
            state,
            kernel: Some(kernel),
            esp_problem: None,
            gate: false,
            knock: false,
            rng: Box::new(crate::daemon::OsRandom),
        })
        .unwrap()
    }
}

/// Supervisors wired to each other with a fixed delay, and what they asked of their
/// kernels.
struct Net {
    now: Instant,
    sups: Vec<Supervisor>,
    in_flight: Vec<(Instant, usize, SocketAddr, SocketAddr, Vec<u8>)>,
    added: Vec<Vec<SaId>>,
    deleted: Vec<Vec<SaId>>,
    persisted: Vec<usize>,
    /// The last state each node saved.
    saved: Vec<Option<State>>,
}

impl Net {
    fn new(sups: Vec<Supervisor>, now: Instant) -> Self {
        let n = sups.len();
        let mut net = Self {
            now,
            sups,
            in_flight: Vec::new(),
            added: vec![Vec::new(); n],
            deleted: vec![Vec::new(); n],
            persisted: vec![0; n],
            saved: vec![None; n],
        };
        for i in 0..n {
            net.collect(i);
        }
        net
    }

    fn collect(&mut self, i: usize) {
        while let Some(a) = self.sups[i].poll_action() {
            match a {
                Action::Send { local, remote, datagram } => {
                    let to = (0..self.sups.len()).find(|j| addr(*j) == remote.ip()).unwrap();
                    let at = self.now + Duration::from_millis(10);
                    self.in_flight.push((at, to, remote, local, datagram));
                }
                Action::AddSa(sa) => self.added[i].push(sa.id()),
                Action::DeleteSa(id) => self.deleted[i].push(id),
                Action::Persist(state) => {
                    self.persisted[i] += 1;
                    self.saved[i] = Some(*state);
                }
                _ => {}
            }
        }
    }

    /// Runs `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next_dgram = self.in_flight.iter().map(|f| f.0).min();
            let next_timer = self.sups.iter_mut().filter_map(Supervisor::poll_timeout).min();
            let Some(t) = next_dgram.into_iter().chain(next_timer).min().filter(|t| *t <= end)
            else {
                break;
            };
            self.now = self.now.max(t);
            let now = self.now;
            if next_dgram == Some(t) {
                let k = self.in_flight.iter().position(|f| f.0 == t).unwrap();
                let (_, to, local, from, bytes) = self.in_flight.remove(k);
                self.sups[to].handle_datagram(now, local, from, &bytes);
                self.collect(to);
            } else {
                for i in 0..self.sups.len() {
                    if self.sups[i].poll_timeout().is_some_and(|w| w <= now) {
                        self.sups[i].handle_timeout(now);
                        self.collect(i);
                    }
                }
            }
        }
        self.now = end;
    }

    /// Every node of `fleet` started at once with nothing saved, run for `d`.
    fn started(fleet: &Fleet, d: Duration) -> Self {
        let t0 = Instant::now();
        let sups = (0..fleet.cfgs.len())
            .map(|i| fleet.start(i, t0, State::default(), KernelView::default()))
            .collect();
        let mut net = Net::new(sups, t0);
        net.run(d);
        net
    }

    fn counts(&self, i: usize, j: usize) -> PeerCounts {
        self.sups[i].counts()[&name(j)]
    }
}

/// A node whose peers all come up at once saves its state a few times a second, not
/// once per IKE SA and announcement (each save holds every peer), and the last save
/// holds everything.
#[test]
fn saves_are_coalesced_and_the_last_one_holds_every_child_sa() {
    let n = 40;
    let fleet = Fleet::new(n, "use");
    let run = Duration::from_secs(5);
    let mut net = Net::started(&fleet, run);
    // At most one save per 250 ms, and the first at start.
    assert_eq!(SAVE_EVERY, Duration::from_millis(250));
    let bound = 5 * 4 + 2;
    assert!(net.persisted[0] <= bound, "{} saves in {run:?}", net.persisted[0]);
    // Nothing changes any more: the last save came after the last change.
    net.run(SAVE_EVERY * 2);
    let saved = net.saved[0].as_ref().expect("saved");
    assert_eq!(saved.children.len(), n - 1, "{:?}", saved.children.keys().collect::<Vec<_>>());
}

#[test]
fn two_nodes_make_one_ike_sa_and_one_child_sa_each() {
    let fleet = Fleet::new(2, "use");
    let net = Net::started(&fleet, Duration::from_secs(5));
    for (i, j) in [(0, 1), (1, 0)] {
        let c = net.counts(i, j);
        assert_eq!((c.ike_established, c.children, c.adopted), (1, 1, 0), "{i} -> {j}");
        // Both halves of the child SA went in, the outbound one at once (nothing older).
        assert_eq!(net.added[i].len(), 2, "{i}: {:?}", net.added[i]);
    }
    assert!(net.persisted[0] > 0, "the child SA was never saved");
    // Only the lower name initiated: one IKE SA on each side, nothing to settle.
    assert_eq!(net.sups[0].ike_sas(), 1);
    assert_eq!(net.sups[1].ike_sas(), 1);
}

#[test]
fn a_peer_removed_loses_its_sas() {
    let fleet = Fleet::new(3, "use");
    let mut net = Net::started(&fleet, Duration::from_secs(15));
    assert_eq!(net.counts(0, 2).children, 1);
    let installed: Vec<SaId> =
        net.added[0].iter().filter(|id| id.src == addr(2) || id.dst == addr(2)).copied().collect();
    let now = net.now;
    let r = net.sups[0].control(now, Request::PeerRemove { name: name(2), dry_run: false });
    let Response::Ok { reply: Reply::Done { changes } } = r else { panic!("{r:?}") };
    assert_eq!(changes, vec![format!("removed peer {}", name(2))]);
    net.collect(0);
    for id in &installed {
        assert!(net.deleted[0].contains(id), "{id:?} stays in the kernel");
    }
    assert!(!net.sups[0].counts().contains_key(&name(2)));
    // The other peer is untouched.
    assert_eq!(net.counts(0, 1).ike_established, 1);
}

#[test]
fn a_restart_adopts_the_kernel_sas_and_deletes_strangers() {
    let fleet = Fleet::new(2, "use");
    let net = Net::started(&fleet, Duration::from_secs(5));
    let ours = net.added[1].clone();
    let reqid = 0x0100_0100; // a reqid no peer has
    let stranger = SaId { dst: addr(1), spi: 0x1234, src: addr(7), mark: None };
    let model_reqid = policy::render::reqids(
        &fleet.cfgs[1].mesh_policy(fleet.members.iter().map(|(m, _)| m.clone()).collect()),
    )[&name(0)];
    let mut sas: Vec<(SaId, u32)> = ours.iter().map(|id| (*id, model_reqid)).collect();
    sas.push((stranger, reqid));
    // No saved state at all: the kernel alone says what is ours.
    let mut again =
        fleet.start(1, net.now, State::default(), KernelView { sas, policies: Vec::new() });
    assert_eq!(again.counts()[&name(0)].adopted, 1);
    let mut deleted = Vec::new();
    while let Some(a) = again.poll_action() {
        if let Action::DeleteSa(id) = a {
            deleted.push(id);
        }
    }
    assert_eq!(deleted, vec![stranger]);
}

#[test]
fn duplicate_rule_table() {
    use super::events::{Claim, duplicate_rule};
    let c = |only, preferred| Claim { only, preferred };
    let old = Duration::from_secs(3600);
    let young = Duration::from_secs(8);
    let crossing = Duration::from_secs(1);
    // A claim replaces an SA that made none, one that claimed long ago, and one that
    // claimed a few seconds ago (its maker restarted since).
    assert_eq!(duplicate_rule(c(false, true), c(true, false), old), (true, false));
    assert_eq!(duplicate_rule(c(true, true), c(true, false), old), (true, false));
    assert_eq!(duplicate_rule(c(true, true), c(true, false), young), (true, false));
    // Two that came up together may have crossed: flagged, so only one end acts.
    assert_eq!(duplicate_rule(c(true, true), c(true, false), crossing), (true, true));
    assert!(duplicate_rule(c(false, true), c(false, false), crossing).1);
    assert!(!duplicate_rule(c(true, true), c(true, false), CROSSING).1);
    // No claim: the preferred initiator's, else the newer.
    assert_eq!(duplicate_rule(c(false, true), c(false, false), old), (false, false));
    assert_eq!(duplicate_rule(c(false, false), c(false, true), old), (true, false));
    assert_eq!(duplicate_rule(c(false, false), c(false, false), old), (true, false));
}

#[test]
fn a_node_initiates_at_most_its_window_at_once_and_reaches_every_peer() {
    let mut fleet = Fleet::new(12, "use");
    fleet.cfgs[0].ike.max_initiating = 1;
    let t0 = Instant::now();
    let sups =
        (0..12).map(|i| fleet.start(i, t0, State::default(), KernelView::default())).collect();
    let mut net = Net::new(sups, t0);
    let (mut most, mut waited) = (0, 0);
    for _ in 0..400 {
        net.run(Duration::from_millis(5));
        let c = net.sups[0].counters();
        most = most.max(c.initiating);
        waited = waited.max(c.waiting);
    }
    // node0 sorts first: it initiates to all eleven (spread over half a second, 40 ms
    // each here), one at a time.
    assert_eq!(most, 1, "the window was used and never passed");
    assert!(waited >= 2, "peers waited their turn: {waited}");
    for j in 1..12 {
        assert_eq!(net.counts(0, j).ike_established, 1, "node{j}");
    }
    let c = net.sups[0].counters();
    assert_eq!((c.initiating, c.waiting), (0, 0));
}
