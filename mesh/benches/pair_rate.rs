//! The pair-rate benchmark, side by side with strongSwan: in the same run, on the same
//! two network namespaces, charon against charon, then ikemesh's load generator
//! against one real `meshd`, each making N IKE SAs (X25519, AES-GCM, certificates
//! verified on both sides) with at most W in flight. For Ed25519 and then ECDSA P-256
//! certificates and each N it prints both rates, their ratio, and the responder's CPU
//! and RSS per IKE SA; then one larger ikemesh run for the responder's memory per IKE
//! SA. Run as root (`tests/bench/pair-rate` installs strongSwan and builds in release):
//!
//! ```text
//! cargo bench -p mesh --bench pair_rate                  # N = 1,000 and 5,000; 10,000 for memory
//! cargo bench -p mesh --bench pair_rate -- 2000 --window 64 --key p256 --memory 0
//! cargo bench -p mesh --bench pair_rate -- --smoke       # N = 10
//! ```
//!
//! What differs, and favours charon: charon's IKE SAs are childless (the host kernel
//! has no ESP), while each of ikemesh's carries one child SA, as a mesh peer's does
//! (meshd negotiates it and, without ESP, does not install it). Charon's initiator is
//! one identity initiating the same connection N times; ikemesh's is N member
//! identities on N addresses, since meshd keeps one IKE SA per member.
//!
//! Traffic stays inside the namespaces this run creates. Figures, not a test: it fails
//! only when a side cannot be set up or makes fewer IKE SAs than asked.

#![allow(clippy::print_stdout, missing_docs)] // a benchmark prints its figures

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/procfs.rs"]
mod procfs;

use ca::authority::{Algorithm, IssueOptions, generate_node_key, issue_detached, make_csr};
use ca::keys::{PrivateKey, cert_chain_from_pem};
use ca::verify::TrustBundle;
use common::{MESHD, meshctl};
use ikemesh_interop::KeyType;
use ikemesh_interop::charon_rate::{CharonRun, charon_pair_rate};
use ikemesh_interop::load::{self, LoadIdentity, LoadRun, Target};
use ikemesh_testbed::{Host, Net};
use mesh::control::client;
use mesh::control::proto::{Reply, Request, Response, Status};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The load's addresses: `10.201.0.0/16`, on the initiating host's loopback, routed to
/// from the responder's host through the initiating host (one neighbour entry).
fn load_addr(i: usize) -> IpAddr {
    let i = u32::try_from(i).expect("fewer than 2^32 identities");
    IpAddr::V4(Ipv4Addr::new(10, 201, (i / 250) as u8, (i % 250 + 1) as u8))
}
const LOAD_NET: &str = "10.201.0.0/16";

const RESPONDER: &str = "zz-responder";

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// The CA, the responder's files and the load's identities of one ikemesh run.
struct Setup {
    dir: tempfile::TempDir,
    bundle: TrustBundle,
    identities: Vec<LoadIdentity>,
    names: Vec<String>,
}

fn algorithm(key: KeyType) -> Algorithm {
    match key {
        KeyType::Ed25519 => Algorithm::Ed25519,
        KeyType::EcdsaP256 => Algorithm::EcdsaP256,
    }
}

/// A CA of `key`'s algorithm, the responder's key and certificate in files, and `n`
/// load identities in memory (issued in this process: `meshctl ca issue` once per
/// identity would take minutes).
fn setup(key: KeyType, n: usize, responder_addr: IpAddr) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = dir.path().join("ca");
    let alg = algorithm(key).to_string();
    meshctl(&["ca", "init", "--dir", path(&ca), "--mesh", "bench", "--algorithm", &alg]);
    let bundle_path = dir.path().join("ca.pem");
    meshctl(&["ca", "bundle", "--dir", path(&ca), "--out", path(&bundle_path)]);
    let (ca_cert, ca_key) = (ca.join("ca-1.pem"), ca.join("ca-1.key"));
    let issue = |name: &str, ip: IpAddr| {
        let key = generate_node_key(algorithm(key)).expect("a node key");
        let csr = make_csr(name, key.pem()).expect("a CSR");
        let options = IssueOptions { ips: vec![ip], lifetime: None };
        let issued = issue_detached(&ca_cert, &ca_key, name, &csr, &options).expect("issued");
        (key, issued.cert_pem)
    };
    let (key_pem, cert_pem) = issue(RESPONDER, responder_addr);
    key_pem.write_new(&dir.path().join("node.key")).expect("node key written");
    std::fs::write(dir.path().join("node.pem"), cert_pem).unwrap();
    let mut identities = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("load-{i:05}");
        let (key, cert) = issue(&name, load_addr(i));
        identities.push(LoadIdentity {
            addr: load_addr(i),
            certs: cert_chain_from_pem(cert.as_bytes()).expect("a certificate"),
            key: PrivateKey::from_pem(key.pem().as_bytes()).expect("a key"),
        });
        names.push(name);
    }
    let bundle = TrustBundle::load(&bundle_path).expect("the bundle");
    Setup { dir, bundle, identities, names }
}

fn config(setup: &Setup, responder_addr: IpAddr) -> PathBuf {
    let d = setup.dir.path();
    let mut s = format!(
        "[node]\nname = \"{RESPONDER}\"\naddresses = [\"{responder_addr}\"]\n\n\
         [pki]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n[spa]\nenabled = false\n\n\
         [daemon]\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n\n[mesh]\nlevel = \"use\"\n",
        path(&d.join("ca.pem")),
        path(&d.join("node.pem")),
        path(&d.join("node.key")),
        path(&d.join("state")),
        path(&d.join("meshd.sock")),
    );
    let _ = write!(
        s,
        "\n[[mesh.members]]\nname = \"{RESPONDER}\"\naddresses = [\"{responder_addr}\"]\n"
    );
    for (i, name) in setup.names.iter().enumerate() {
        let _ = write!(
            s,
            "\n[[mesh.members]]\nname = \"{name}\"\naddresses = [\"{}\"]\n",
            load_addr(i)
        );
    }
    let file = d.join("meshd.toml");
    std::fs::write(&file, s).unwrap();
    file
}

fn status(socket: &Path) -> Option<Status> {
    match client::call(socket, &Request::Status, Duration::from_secs(30)) {
        Ok(Response::Ok { reply: Reply::Status(s) }) => Some(s),
        _ => None,
    }
}

/// Adds (or with `del`, removes) the load's addresses on `host`'s loopback, in one
/// `ip -batch`.
fn load_addresses(host: &Host, n: usize, dir: &Path, del: bool) {
    let mut batch = String::new();
    for i in 0..n {
        let _ =
            writeln!(batch, "addr {} {}/32 dev lo", if del { "del" } else { "add" }, load_addr(i));
    }
    let file = dir.join("addresses.batch");
    std::fs::write(&file, batch).unwrap();
    host.run(&["ip", "-batch", path(&file)]).expect("ip -batch");
}

/// The responder's figures, as both sides report them.
struct Responder {
    cpu: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
    established: usize,
    /// meshd's own retransmissions and datagrams it could not send.
    retransmissions: u64,
    send_failed: u64,
}

/// One ikemesh run: `meshd` in `net`'s host 1, the load generator in host 0.
fn ikemesh(net: &Net, key: KeyType, n: usize, window: usize) -> (LoadRun, Responder) {
    let (init, resp) = (net.host(0), net.host(1));
    let responder_addr = IpAddr::V4(resp.ipv4());
    let mut setup = setup(key, n, responder_addr);
    let file = config(&setup, responder_addr);
    let socket = setup.dir.path().join("meshd.sock");
    let log = setup.dir.path().join("meshd.log");
    load_addresses(init, n, setup.dir.path(), false);
    resp.run(&["ip", "route", "replace", LOAD_NET, "via", &init.ipv4().to_string()])
        .expect("route to the load");
    let cmd =
        format!("exec {MESHD} --config {} --log-level warn >>{} 2>&1", path(&file), path(&log));
    let proc = resp.spawn(&["sh", "-c", &cmd]).expect("meshd starts");
    let pid = proc.id();
    let started = Instant::now();
    while status(&socket).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "meshd did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Settled: its policies for every member in, nothing more to do.
    let mut last = procfs::cpu(pid);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = procfs::cpu(pid);
        if now.saturating_sub(last) < Duration::from_millis(10) {
            break;
        }
        last = now;
    }
    let (cpu_before, rss_before_kib) = (procfs::cpu(pid), procfs::rss_kib(pid));
    let target = Target {
        remote: SocketAddr::new(responder_addr, 500),
        remote_id: RESPONDER.to_owned(),
        bundle: setup.bundle.clone(),
    };
    let identities = std::mem::take(&mut setup.identities);
    let mut responder = None;
    let run = init
        .enter(|| {
            load::run(&target, identities, window, 2, Duration::from_secs(300), |_| {
                // Measured first, then checked: the status of thousands of peers is
                // work of its own.
                let cpu = procfs::cpu(pid).saturating_sub(cpu_before);
                let rss_after_kib = procfs::rss_kib(pid);
                let s = status(&socket);
                let established = s
                    .as_ref()
                    .map_or(0, |s| s.peers.iter().filter(|p| p.ike == "established").count());
                let (retransmissions, send_failed) =
                    s.map_or((0, 0), |s| (s.counters.retransmissions, s.counters.send_failed));
                responder = Some(Responder {
                    cpu,
                    rss_before_kib,
                    rss_after_kib,
                    established,
                    retransmissions,
                    send_failed,
                });
            })
        })
        .expect("the load's namespace")
        .expect("the load runs");
    let _ = proc.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    load_addresses(init, n, setup.dir.path(), true);
    let _ = resp.run(&["ip", "route", "del", LOAD_NET]);
    (run, responder.expect("measured"))
}

#[allow(clippy::cast_precision_loss)] // figures
fn per_sa_bytes(before_kib: u64, after_kib: u64, n: usize) -> f64 {
    after_kib.saturating_sub(before_kib) as f64 * 1024.0 / n.max(1) as f64
}

#[allow(clippy::cast_precision_loss)] // figures
fn compare(net: &Net, key: KeyType, n: usize, window: usize) -> bool {
    let name = if key == KeyType::Ed25519 { "Ed25519" } else { "ECDSA P-256" };
    println!("{name}, N = {n}, at most {window} in flight:");
    let c: CharonRun = match charon_pair_rate(net.host(0), net.host(1), key, n, window) {
        Ok(c) => c,
        Err(e) => {
            println!("  charon could not run: {e}");
            return false;
        }
    };
    println!(
        "  charon  <-> charon : {:>7.0} IKE SAs/s ({} up, {} failed, {:.2} s); responder CPU {:.0} us/SA, RSS {:.1} KB/SA",
        c.rate(),
        c.established,
        c.failed,
        c.wall.as_secs_f64(),
        c.cpu_per_sa().as_secs_f64() * 1e6,
        c.rss_per_sa_bytes() / 1000.0,
    );
    let (m, r) = ikemesh(net, key, n, window);
    let cpu_per_sa = r.cpu.as_secs_f64() * 1e6 / m.established.max(1) as f64;
    println!(
        "  ikemesh -> meshd  : {:>7.0} IKE SAs/s ({} up, {} failed, {:.2} s, {} retransmissions); responder CPU {cpu_per_sa:.0} us/SA, RSS {:.1} KB/SA; meshd counts {} established, {} retransmissions, {} datagrams lost",
        m.rate(),
        m.established,
        m.failed,
        m.wall.as_secs_f64(),
        m.retransmissions,
        per_sa_bytes(r.rss_before_kib, r.rss_after_kib, m.established) / 1000.0,
        r.established,
        r.retransmissions,
        r.send_failed,
    );
    for e in m.errors.iter().take(3) {
        println!("    failure: {e}");
    }
    println!(
        "  ratio ikemesh / charon: {:.2}x the rate, {:.2}x the responder CPU per SA",
        m.rate() / c.rate().max(1e-9),
        cpu_per_sa / (c.cpu_per_sa().as_secs_f64() * 1e6).max(1e-9)
    );
    m.established == n && r.established == n && c.established == n
}

/// The responder's memory at `n` IKE SAs (Ed25519).
fn memory(net: &Net, n: usize, window: usize) -> bool {
    let (m, r) = ikemesh(net, KeyType::Ed25519, n, window);
    println!(
        "meshd responder memory at {} IKE SAs: RSS {} KiB before, {} KiB after: {:.0} bytes ({:.2} KiB) per IKE SA; {:.0} IKE SAs/s",
        m.established,
        r.rss_before_kib,
        r.rss_after_kib,
        per_sa_bytes(r.rss_before_kib, r.rss_after_kib, m.established),
        per_sa_bytes(r.rss_before_kib, r.rss_after_kib, m.established) / 1024.0,
        m.rate()
    );
    m.established == n && r.established == n
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<usize> {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok())
    };
    let smoke = args.iter().any(|a| a == "--smoke");
    let window = flag("--window").unwrap_or(128);
    let memory_n = flag("--memory").unwrap_or(if smoke { 0 } else { 10_000 });
    let sizes: Vec<usize> = if smoke {
        vec![10]
    } else {
        let given: Vec<usize> = args
            .iter()
            .enumerate()
            .filter(|(i, _)| *i == 0 || !args[i - 1].starts_with("--"))
            .filter_map(|(_, a)| a.parse().ok())
            .collect();
        if given.is_empty() { vec![1_000, 5_000] } else { given }
    };
    // A socket per identity.
    let want = (sizes.iter().copied().max().unwrap_or(0).max(memory_n) as u64 + 4096).max(65_536);
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, want, want);
    let net = Net::new(2).expect("two network namespaces");
    let mut ok = true;
    let keys: Vec<KeyType> =
        match args.iter().position(|a| a == "--key").and_then(|i| args.get(i + 1)) {
            Some(k) if k == "ed25519" => vec![KeyType::Ed25519],
            Some(k) if k == "p256" => vec![KeyType::EcdsaP256],
            _ => vec![KeyType::Ed25519, KeyType::EcdsaP256],
        };
    for key in keys {
        for &n in &sizes {
            ok &= compare(&net, key, n, window);
        }
    }
    if memory_n > 0 {
        ok &= memory(&net, memory_n, window);
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
