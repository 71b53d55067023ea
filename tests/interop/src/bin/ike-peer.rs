//! `ike-peer`: one IKEv2 SA over UDP with certificate files, for pairing ikemesh's IKE
//! with another implementation (strongSwan's charon in the interop tests) by hand or
//! from a test.
//!
//! ```text
//! ike-peer --local 10.77.0.1 --remote 10.77.0.2 --cert a.pem --key a.key --ca ca.pem \
//!          --peer-id b.mesh [--initiate] [--install] [--port 500]
//! ```
//!
//! It prints one line per event on stdout (`ike-up`, `child-up`, `child-rekeyed`,
//! `child-down`, `ike-rekeyed`, `alive`, `closed`, `failed`) and takes one command per
//! line on stdin: `rekey-child`, `rekey-ike`, `create-child`, `delete-child`, `delete`,
//! `liveness`, `quit`. With `--install` it puts each child SA into the kernel (transport
//! mode ESP, AES-GCM) with a pair of `require` policies between the two hosts, so that
//! traffic between them shows whether both sides derived the same keys.

#![allow(clippy::print_stdout)] // its event lines on stdout are its interface

use ca::keys::{PrivateKey, ike_id, load_cert_chain};
use ca::verify::{CertVerifier, PeerId, TrustBundle};
use ike::crypto::Random;
use ike::crypto::auth::SigAlg;
use ike::endpoint::{Endpoint, Limits, SaHandle};
use ike::proposal::Policy;
use ike::sa::{ChildSa, Config, Event, IkeSa, Retransmit};
use ike::wire::id::IdRepr;
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::fill(out).expect("the OS has randomness");
    }
}

#[derive(Debug)]
struct Args {
    local: IpAddr,
    remote: IpAddr,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    peer_id: String,
    initiate: bool,
    install: bool,
    groups: Vec<ike::crypto::dh::Group>,
    /// The mesh SPA secret: knock on the peer's SPA port before our requests.
    spa_secret: Option<PathBuf>,
    spa_port: u16,
}

const USAGE: &str = "usage: ike-peer --local ADDR --remote ADDR --cert PEM --key PEM --ca PEM \
--peer-id NAME [--initiate] [--install] [--port N] [--group x25519|ecp256|modp2048]... \
[--spa-secret FILE [--spa-port N]]";

fn need<T>(v: Option<T>, what: &str) -> Result<T, String> {
    v.ok_or(format!("{what} is required\n{USAGE}"))
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut local, mut remote, mut cert, mut key, mut ca, mut peer_id) =
        (None, None, None, None, None, None);
    let (mut port, mut initiate, mut install, mut groups) = (500, false, false, Vec::new());
    let (mut spa_secret, mut spa_port) = (None, policy::model::DEFAULT_SPA_PORT);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--local" => local = Some(value()?.parse().map_err(|e| format!("--local: {e}"))?),
            "--remote" => remote = Some(value()?.parse().map_err(|e| format!("--remote: {e}"))?),
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--peer-id" => peer_id = Some(value()?),
            "--group" => groups.push(match value()?.as_str() {
                "x25519" | "curve25519" => ike::crypto::dh::Group::Curve25519,
                "ecp256" => ike::crypto::dh::Group::Ecp256,
                "modp2048" => ike::crypto::dh::Group::Modp2048,
                other => return Err(format!("--group: unknown group {other:?}")),
            }),
            "--spa-secret" => spa_secret = Some(PathBuf::from(value()?)),
            "--spa-port" => spa_port = value()?.parse().map_err(|e| format!("--spa-port: {e}"))?,
            "--initiate" => initiate = true,
            "--install" => install = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        local: need(local, "--local")?,
        remote: need(remote, "--remote")?,
        port,
        cert: need(cert, "--cert")?,
        key: need(key, "--key")?,
        ca: need(ca, "--ca")?,
        peer_id: need(peer_id, "--peer-id")?,
        initiate,
        install,
        groups,
        spa_secret,
        spa_port,
    })
}

fn config(args: &Args) -> Result<Arc<Config>, String> {
    let key = PrivateKey::load(&args.key).map_err(|e| e.to_string())?;
    let certs = load_cert_chain(&args.cert).map_err(|e| e.to_string())?;
    let leaf = certs.first().ok_or("the certificate file holds no certificate")?;
    key.check_matches(leaf).map_err(|e| e.to_string())?;
    let local_id: IdRepr = ike_id(leaf).map_err(|e| e.to_string())?;
    let bundle = TrustBundle::load(&args.ca).map_err(|e| e.to_string())?;
    let peer = PeerId::fqdn(&args.peer_id);
    let verifier = CertVerifier::new(bundle).with_members(move |id: &PeerId| *id == peer);
    let mut policy = Policy::default();
    if !args.groups.is_empty() {
        policy.groups.clone_from(&args.groups);
    }
    Ok(Arc::new(Config {
        policy,
        local_id,
        certs,
        signer: key.signer(),
        authenticator: Arc::new(verifier),
        signature_algorithms: SigAlg::ALL.to_vec(),
        retransmit: Retransmit::default(),
        local_addr: args.local,
        remote_addr: args.remote,
    }))
}

/// Child SAs in the kernel: one reqid, a pair of policies, a pair of SAs per child.
struct Kernel {
    x: xfrm::Xfrm,
    local: IpAddr,
    remote: IpAddr,
}

const REQID: u32 = 0x4D00_0101;
const PRIORITY: u32 = 0x4D00_0100;
const BYPASS_PRIORITY: u32 = 0x4D00_0010;

impl Kernel {
    fn new(local: IpAddr, remote: IpAddr, port: u16) -> Result<Self, String> {
        let mut x = xfrm::Xfrm::open().map_err(|e| e.to_string())?;
        let policy = |src, dst, dir| xfrm::Policy {
            selector: xfrm::Selector::hosts(src, dst),
            dir,
            priority: PRIORITY,
            action: xfrm::Action::Protect(xfrm::Template {
                src,
                dst,
                reqid: REQID,
                mode: xfrm::Mode::Transport,
                level: xfrm::Level::Require,
            }),
            mark: None,
        };
        // IKE itself must pass in the clear, ahead of the require policies (a daemon
        // would rather put a bypass policy on its socket).
        let bypass = |src, dst, dir, ports: (Option<u16>, Option<u16>)| xfrm::Policy {
            selector: xfrm::Selector {
                proto: Some(17),
                src_port: ports.0,
                dst_port: ports.1,
                ..xfrm::Selector::hosts(src, dst)
            },
            dir,
            priority: BYPASS_PRIORITY,
            action: xfrm::Action::Bypass,
            mark: None,
        };
        let ike = Some(port);
        let mut policies = vec![
            bypass(local, remote, xfrm::Direction::Out, (ike, None)),
            bypass(local, remote, xfrm::Direction::Out, (None, ike)),
            bypass(remote, local, xfrm::Direction::In, (ike, None)),
            bypass(remote, local, xfrm::Direction::In, (None, ike)),
        ];
        if local.is_ipv6() {
            // Neighbour solicitations and advertisements (ICMPv6 types 135 and 136; the
            // selector's source port holds the ICMP type): without them the hosts cannot
            // find each other's link address once the require policies are in.
            for icmp_type in [135, 136] {
                for (src, dst, dir) in
                    [(local, remote, xfrm::Direction::Out), (remote, local, xfrm::Direction::In)]
                {
                    let mut p = bypass(src, dst, dir, (Some(icmp_type), None));
                    p.selector.proto = Some(58);
                    policies.push(p);
                }
            }
        }
        policies.push(policy(local, remote, xfrm::Direction::Out));
        policies.push(policy(remote, local, xfrm::Direction::In));
        for p in &policies {
            x.update_policy(p).map_err(|e| e.to_string())?;
        }
        Ok(Self { x, local, remote })
    }

    fn install(&mut self, c: &ChildSa) -> Result<(), String> {
        let sa = |src, dst, spi, key: &[u8]| {
            let mut sa = xfrm::Sa::transport(
                src,
                dst,
                spi,
                REQID,
                xfrm::Crypto::AesGcm16 { key: xfrm::Key::new(key.to_vec()) },
            );
            sa.esn = c.algorithms.esn;
            sa
        };
        self.x
            .add_sa(&sa(self.remote, self.local, c.spi_in, &c.key_in))
            .map_err(|e| e.to_string())?;
        self.x
            .add_sa(&sa(self.local, self.remote, c.spi_out, &c.key_out))
            .map_err(|e| e.to_string())
    }

    fn remove(&mut self, spi_in: u32, spi_out: u32) {
        let id = |src, dst, spi| xfrm::SaId { dst, spi, src, mark: None };
        let _ = self.x.delete_sa(&id(self.remote, self.local, spi_in));
        let _ = self.x.delete_sa(&id(self.local, self.remote, spi_out));
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.x.flush_ours();
    }
}

fn describe(c: &ChildSa) -> String {
    format!(
        "in={:#010x} out={:#010x} mode={:?} gcm={} esn={} pfs={}",
        c.spi_in,
        c.spi_out,
        c.mode,
        c.algorithms.gcm_key_bits,
        u8::from(c.algorithms.esn),
        c.algorithms.group.map_or("none".to_string(), |g| format!("{g:?}")),
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ike-peer: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ike-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The running peer: its endpoint, its one IKE SA, and the kernel's copy of its children.
struct Peer {
    ep: Endpoint,
    rng: OsRandom,
    sa: Option<SaHandle>,
    children: Vec<(u32, u32)>,
    kernel: Option<Kernel>,
    knock: Option<Knocking>,
}

/// SPA before our IKE requests (`--spa-secret`): the peer's IKE port is dark to us
/// until its gate has our knock.
struct Knocking {
    keys: policy::spa::SpaKeys,
    knock: policy::spa::Knock,
    to: SocketAddr,
    knocker: policy::Knocker,
}

impl Knocking {
    /// Knocks first if the knocker says so (before a request or its retransmission).
    fn before(&mut self, socket: &UdpSocket, datagram: &[u8]) -> Result<(), String> {
        // Byte 19 of the IKE header holds the flags; 0x20 marks a response.
        let is_request = datagram.get(19).is_some_and(|f| f & 0x20 == 0);
        if !is_request {
            return Ok(());
        }
        if let policy::Step::Knock { then_wait } = self.knocker.before_request(Instant::now()) {
            policy::knock::send_blocking(socket, &self.keys, &self.knock, self.to)
                .map_err(|e| e.to_string())?;
            println!("knocked {}", self.to);
            std::thread::sleep(then_wait);
        }
        Ok(())
    }
}

impl Peer {
    /// Prints (and with `--install`, installs) what happened.
    fn on_event(&mut self, handle: SaHandle, event: Event) -> Result<(), String> {
        self.sa = Some(handle);
        match event {
            Event::IkeUp { peer, algorithms } => {
                let (i, r) = self.ep.sa(handle).map_or((0, 0), IkeSa::spis);
                println!(
                    "ike-up peer={} spis={i:016x}_{r:016x} alg={algorithms:?}",
                    String::from_utf8_lossy(&peer.data)
                );
            }
            Event::ChildUp(c) => {
                if let Some(k) = self.kernel.as_mut() {
                    k.install(&c)?;
                }
                self.children.push((c.spi_in, c.spi_out));
                println!("child-up {}", describe(&c));
            }
            Event::ChildRekeyed { old_spi_in, child, .. } => {
                if let Some(k) = self.kernel.as_mut() {
                    k.install(&child)?;
                }
                self.children.push((child.spi_in, child.spi_out));
                println!("child-rekeyed old={old_spi_in:#010x} {}", describe(&child));
            }
            Event::ChildDown { spi_in, spi_out } => {
                if let Some(k) = self.kernel.as_mut() {
                    k.remove(spi_in, spi_out);
                }
                self.children.retain(|c| c.0 != spi_in);
                println!("child-down in={spi_in:#010x} out={spi_out:#010x}");
            }
            Event::ChildFailed { error, .. } => println!("child-failed {error}"),
            Event::IkeRekeyed { spis, .. } => {
                println!("ike-rekeyed spis={:016x}_{:016x}", spis.0, spis.1);
            }
            Event::IkeRekeyFailed { error } => println!("ike-rekey-failed {error}"),
            Event::PeerAlive => println!("alive"),
            Event::Closed { error } => println!("closed {error}"),
            Event::Failed { error } => println!("failed {error}"),
            other => println!("event {other:?}"),
        }
        Ok(())
    }

    /// Runs one command from stdin; `false` for `quit`.
    fn on_command(&mut self, cmd: &str) -> bool {
        let now = Instant::now();
        if cmd == "quit" {
            return false;
        }
        let Some(h) = self.sa else {
            println!("error {cmd}: no IKE SA yet");
            return true;
        };
        let first_child = self.children.first().map(|c| c.0);
        let rng = &mut self.rng;
        let done = match cmd {
            "rekey-child" => {
                first_child.and_then(|c| self.ep.with_sa(h, |s| s.rekey_child(now, c, rng)))
            }
            "rekey-ike" => self.ep.with_sa(h, |s| s.rekey_ike(now, rng)),
            "create-child" => self.ep.with_sa(h, |s| s.create_child(now, rng)),
            "delete-child" => {
                first_child.and_then(|c| self.ep.with_sa(h, |s| s.delete_child(now, c, rng)))
            }
            "delete" => self.ep.with_sa(h, |s| s.delete(now, rng)),
            "liveness" => self.ep.with_sa(h, |s| s.check_liveness(now, rng)),
            _ => None,
        };
        println!("{} {cmd}", if done == Some(true) { "ok" } else { "error" });
        true
    }
}

fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    rx
}

fn run(args: &Args) -> Result<(), String> {
    let cfg = config(args)?;
    let kernel =
        if args.install { Some(Kernel::new(args.local, args.remote, args.port)?) } else { None };
    let socket = UdpSocket::bind(SocketAddr::new(args.local, args.port))
        .map_err(|e| format!("cannot bind {}:{}: {e}", args.local, args.port))?;
    let remote = SocketAddr::new(args.remote, args.port);
    let local = SocketAddr::new(args.local, args.port);
    let mut rng = OsRandom;
    let responder_cfg = cfg.clone();
    let expected = args.remote;
    let ep = Endpoint::new(
        Box::new(move |from: SocketAddr| (from.ip() == expected).then(|| responder_cfg.clone())),
        Limits::default(),
        &mut rng,
    );
    let knock = match &args.spa_secret {
        None => None,
        Some(path) => Some(Knocking {
            keys: policy::spa::SpaKeys::load(path).map_err(|e| e.to_string())?,
            knock: policy::spa::Knock {
                node_id: String::from_utf8_lossy(&cfg.local_id.data).into_owned(),
                access: policy::spa::Access::Ike,
                addr: args.local,
            },
            to: SocketAddr::new(args.remote, args.spa_port),
            knocker: policy::Knocker::default(),
        }),
    };
    let mut peer = Peer { ep, rng, sa: None, children: Vec::new(), kernel, knock };
    if args.initiate {
        peer.sa = Some(peer.ep.connect(Instant::now(), cfg.clone(), local, remote, &mut peer.rng));
    }
    let commands = stdin_lines();
    let mut buf = vec![0u8; 65_536];
    println!("ready {}:{}", args.local, args.port);
    loop {
        while let Some(t) = peer.ep.poll_transmit() {
            if let Some(k) = peer.knock.as_mut() {
                k.before(&socket, &t.datagram)?;
            }
            let _ = socket.send_to(&t.datagram, t.remote);
        }
        while let Some((handle, event)) = peer.ep.poll_event() {
            peer.on_event(handle, event)?;
        }
        while let Ok(cmd) = commands.try_recv() {
            if !peer.on_command(&cmd) {
                return Ok(());
            }
        }
        let now = Instant::now();
        let wait = peer
            .ep
            .poll_timeout()
            .map_or(Duration::from_millis(50), |t| t.saturating_duration_since(now))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                peer.ep.handle(Instant::now(), local, from, &buf[..n], &mut peer.rng);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
        let now = Instant::now();
        if peer.ep.poll_timeout().is_some_and(|t| t <= now) {
            peer.ep.handle_timeout(now, &mut peer.rng);
        }
    }
}
