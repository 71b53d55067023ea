//! A mesh of `meshd`s in network namespaces, built the way an operator builds one: a CA
//! and certificates made with `meshctl ca`, an SPA secret, one config per node, and
//! `meshd` started in each host of an `ikemesh_testbed::Net`.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part of the fixture

use ikemesh_testbed::{Host, Net, Proc};
use mesh::control::proto::{PeerStatus, Status};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `meshd`.
pub const MESHD: &str = env!("CARGO_BIN_EXE_meshd");
/// `meshctl`.
pub const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

/// What every node's config says beyond its own identity.
#[derive(Debug, Clone)]
pub struct Options {
    /// The mesh-wide level.
    pub level: &'static str,
    /// IPv6 instead of IPv4 addresses.
    pub v6: bool,
    /// Extra TOML appended to the `[ike]` table.
    pub ike: String,
    /// Extra TOML appended at the end (exclusions, networks).
    pub extra: String,
    /// How many of the hosts are members in the configs (the rest are outsiders or
    /// join later); `None` for all.
    pub members: Option<usize>,
    /// Extra TOML for the `[daemon]` table, per node (index: node).
    pub daemon: Vec<String>,
    /// meshd's `--log-level`.
    pub log_level: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            level: "use",
            v6: false,
            ike: "retransmit_base = \"1s\"\nliveness = \"5s\"\n".into(),
            extra: String::new(),
            members: None,
            daemon: Vec::new(),
            log_level: "mesh=debug,info",
        }
    }
}

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its member name.
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// Its folder: config, key, certificate, state, socket, log.
    pub dir: PathBuf,
}

impl Node {
    /// Its config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("meshd.toml")
    }
    /// Its control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("meshd.sock")
    }
    /// Its log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("meshd.log")
    }
}

/// The mesh.
pub struct Mesh {
    /// The hosts.
    pub net: Net,
    /// Everything on disk.
    pub dir: tempfile::TempDir,
    /// The nodes, one per host.
    pub nodes: Vec<Node>,
    /// The CA's folder.
    pub ca: PathBuf,
    procs: Vec<Option<Proc>>,
    /// The options the configs were written with.
    pub options: Options,
}

/// Runs `meshctl` (outside any namespace), failing the test on error.
pub fn meshctl(args: &[&str]) -> String {
    let out = Command::new(MESHCTL).args(args).output().expect("meshctl runs");
    assert!(
        out.status.success(),
        "meshctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 paths")
}

impl Mesh {
    /// `n` hosts, all with certificates; members as `options.members` says.
    pub fn new(n: usize, options: Options) -> Self {
        let net = Net::new(n).expect("namespaces");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ca = dir.path().join("ca");
        meshctl(&["ca", "init", "--dir", path(&ca), "--mesh", "test"]);
        let spa = dir.path().join("spa.key");
        std::fs::write(&spa, b"an SPA secret of the test mesh, 32+ bytes long").unwrap();
        std::fs::set_permissions(&spa, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut mesh = Mesh { net, dir, nodes: Vec::new(), ca, procs: Vec::new(), options };
        mesh.write_bundle();
        for i in 0..n {
            let name = format!("node-{}", i + 1);
            let addr = mesh.net.host(i).addr(mesh.options.v6);
            let nd = mesh.dir.path().join(&name);
            std::fs::create_dir_all(&nd).unwrap();
            let node = Node { name, addr, dir: nd };
            mesh.issue(&node);
            mesh.nodes.push(node);
            mesh.procs.push(None);
        }
        for i in 0..n {
            mesh.write_config(i);
        }
        mesh
    }

    /// Writes the CA's current trust bundle where every config points.
    pub fn write_bundle(&self) {
        let out = self.dir.path().join("ca.pem");
        let tmp = self.dir.path().join("ca.pem.new");
        let _ = std::fs::remove_file(&tmp);
        meshctl(&["ca", "bundle", "--dir", path(&self.ca), "--out", path(&tmp)]);
        std::fs::rename(&tmp, &out).unwrap();
    }

    /// Issues (or re-issues) a node's key and certificate from the CA's current
    /// generation.
    pub fn issue(&self, node: &Node) {
        let (key, cert) = (node.dir.join("node.key"), node.dir.join("node.pem"));
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(&cert);
        let ip = node.addr.to_string();
        meshctl(&[
            "ca",
            "issue",
            "--dir",
            path(&self.ca),
            "--name",
            &node.name,
            "--ip",
            &ip,
            "--key-out",
            path(&key),
            "--cert-out",
            path(&cert),
        ]);
    }

    /// The member list of the configs.
    pub fn member_count(&self) -> usize {
        self.options.members.unwrap_or(self.nodes.len())
    }

    /// The config of node `i`.
    pub fn config_text(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let d = self.dir.path();
        let mut s = format!(
            "[node]\nname = \"{}\"\naddresses = [\"{}\"]\n\n[pki]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [spa]\nsecret = \"{}\"\n\n[ike]\n{}\n[daemon]\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\n{}\n\
             [mesh]\nlevel = \"{}\"\n",
            node.name,
            node.addr,
            path(&d.join("ca.pem")),
            path(&node.dir.join("node.pem")),
            path(&node.dir.join("node.key")),
            path(&d.join("spa.key")),
            self.options.ike,
            path(&node.dir.join("state")),
            path(&node.socket()),
            self.options.daemon.get(i).map_or("", String::as_str),
            self.options.level,
        );
        for m in self.nodes.iter().take(self.member_count()) {
            let _ = write!(
                s,
                "\n[[mesh.members]]\nname = \"{}\"\naddresses = [\"{}\"]\n",
                m.name, m.addr
            );
        }
        if i >= self.member_count() {
            let _ = write!(
                s,
                "\n[[mesh.members]]\nname = \"{}\"\naddresses = [\"{}\"]\n",
                node.name, node.addr
            );
        }
        s.push_str(&self.options.extra);
        s
    }

    /// Writes node `i`'s config.
    pub fn write_config(&self, i: usize) {
        std::fs::write(self.nodes[i].config(), self.config_text(i)).unwrap();
    }

    /// The host of node `i`.
    pub fn host(&self, i: usize) -> &Host {
        self.net.host(i)
    }

    /// Starts meshd on node `i` (its output goes to its log).
    pub fn start(&mut self, i: usize) {
        self.spawn(i);
        let node = &self.nodes[i];
        let sock = node.socket();
        wait_for(
            Duration::from_secs(90),
            || sock.exists() && self.try_status(i).is_some(),
            || format!("meshd on {} did not open its control socket: {}", node.name, self.log(i)),
        );
    }

    /// Starts meshd on node `i` and does not wait for it.
    pub fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = node.log_path();
        let cmd = format!(
            "exec {MESHD} --config {} --log-level {} >>{} 2>&1",
            path(&node.config()),
            self.options.log_level,
            path(&log)
        );
        let proc = self.net.host(i).spawn(&["sh", "-c", &cmd]).expect("meshd starts");
        self.procs[i] = Some(proc);
    }

    /// Starts every member.
    pub fn start_all(&mut self) {
        for i in 0..self.member_count() {
            self.start(i);
        }
    }

    /// The process id of node `i`'s meshd, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Proc::id)
    }

    /// SIGKILL.
    pub fn kill9(&mut self, i: usize) {
        if let Some(p) = self.procs[i].take() {
            let _ = p.stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5));
        }
    }

    /// SIGTERM, and waits for the exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(p) = self.procs[i].take() {
            let _ = p.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
        }
    }

    /// The log of node `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].log_path()).unwrap_or_default()
    }

    /// `meshctl --socket S ARGS` inside host `i`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        let sock = self.nodes[i].socket();
        let mut all = vec![MESHCTL, "--socket", path(&sock)];
        all.extend_from_slice(args);
        self.net.host(i).command(all[0]).args(&all[1..]).output().expect("meshctl runs")
    }

    /// `meshctl ARGS` that must succeed; its stdout.
    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.ctl(i, args);
        assert!(
            out.status.success(),
            "meshctl {args:?} on {}: {}\nlog:\n{}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(i), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `meshctl status -o json`, if the daemon answers.
    pub fn try_status(&self, i: usize) -> Option<Status> {
        let out = self.ctl(i, &["status", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `meshctl status -o json`.
    pub fn status(&self, i: usize) -> Status {
        self.try_status(i).unwrap_or_else(|| {
            panic!("no status from {}: {}", self.nodes[i].name, tail(&self.log(i), 40))
        })
    }

    /// Node `i`'s view of node `j`.
    pub fn peer(&self, i: usize, j: usize) -> Option<PeerStatus> {
        let name = &self.nodes[j].name;
        self.try_status(i)?.peers.into_iter().find(|p| &p.name == name)
    }

    /// Whether every pair of `nodes` has an established IKE SA and a child SA, at
    /// `level` both ways.
    pub fn converged(&self, nodes: &[usize], level: &str) -> bool {
        nodes.iter().all(|&i| {
            let Some(s) = self.try_status(i) else { return false };
            nodes.iter().filter(|&&j| j != i).all(|&j| {
                s.peers.iter().any(|p| {
                    p.name == self.nodes[j].name
                        && p.ike == "established"
                        && p.child.is_some()
                        && p.level.to_string() == level
                })
            })
        })
    }

    /// Waits until `converged(nodes, level)`, or fails with every node's status and log.
    pub fn wait_converged(&self, nodes: &[usize], level: &str, timeout: Duration) {
        wait_for(timeout, || self.converged(nodes, level), || self.report(nodes));
    }

    /// Every node's status and log tail, for a failure message.
    pub fn report(&self, nodes: &[usize]) -> String {
        let mut s = String::new();
        for &i in nodes {
            let st = self.ctl(i, &["status", "-o", "wide"]);
            let _ = write!(
                s,
                "\n--- {} status:\n{}{}\n--- log:\n{}",
                self.nodes[i].name,
                String::from_utf8_lossy(&st.stdout),
                String::from_utf8_lossy(&st.stderr),
                tail(&self.log(i), 30)
            );
        }
        s
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.stop(i);
        }
        // A failed test shows what the daemons said: their logs go when the tempdir does.
        // (stdout: in the VM it is what reaches the host's test output.)
        #[allow(clippy::print_stdout)]
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                println!(
                    "--- {} log (last 150 lines):\n{}",
                    self.nodes[i].name,
                    tail(&self.log(i), 150)
                );
            }
        }
    }
}

/// The last `n` lines.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `cond` every 200 ms until it holds or `timeout` passes (then panics with `why`).
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool, why: impl FnOnce() -> String) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if cond() {
        return;
    }
    panic!("timed out after {timeout:?}: {}", why());
}

/// Runs `f` on a new thread inside the namespace `ns` (for traffic that lasts).
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("namespace exists");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// What a traffic loop saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests (UDP) or chunks (TCP) sent.
    pub sent: u64,
    /// Answered (UDP) or acknowledged by the echo (TCP).
    pub answered: u64,
    /// Requests unanswered after every retry, or the TCP error that ended the stream.
    pub failures: Vec<String>,
}

/// Traffic running in the background until stopped: a client and a server thread.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: Option<std::thread::JoinHandle<Tally>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Stops the client and the server; what the client saw.
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = self.client.take().unwrap().join().expect("client thread");
        let _ = self.server.take().unwrap().join();
        t
    }
}

/// A UDP request/response loop from one host to another, with retries, until stopped.
pub struct UdpLoop;

impl UdpLoop {
    /// Starts an echo server on `to:port` and a client in `from` that sends a request
    /// every 50 ms, tries each up to 6 times 500 ms apart, and counts what fails.
    pub fn start(from: &Host, to: &Host, to_addr: IpAddr, from_addr: IpAddr, port: u16) -> Traffic {
        use std::net::{SocketAddr, UdpSocket};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let server = spawn_in(to.ns(), move || {
            let sock = UdpSocket::bind(SocketAddr::new(to_addr, port)).expect("bind echo");
            sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("echo server up");
        let s = stop.clone();
        let client = spawn_in(from.ns(), move || {
            let sock = UdpSocket::bind(SocketAddr::new(from_addr, 0)).expect("bind client");
            sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let dst = SocketAddr::new(to_addr, port);
            let mut tally = Tally::default();
            let mut buf = [0u8; 1500];
            let mut seq: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                tally.sent += 1;
                let msg = seq.to_be_bytes();
                let mut ok = false;
                let first = std::time::SystemTime::now();
                'tries: for _ in 0..6 {
                    let _ = sock.send_to(&msg, dst);
                    let deadline = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < deadline {
                        match sock.recv_from(&mut buf) {
                            Ok((8, _)) if buf[..8] == msg => {
                                ok = true;
                                break 'tries;
                            }
                            Ok(_) => {} // a late answer to an earlier try
                            Err(_) => break,
                        }
                    }
                }
                if ok {
                    tally.answered += 1;
                } else {
                    tally.failures.push(format!(
                        "request {seq} unanswered after 6 tries from {}",
                        humantime::format_rfc3339_millis(first)
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            tally
        });
        Traffic { stop, client: Some(client), server: Some(server) }
    }
}

/// A long TCP stream: the client writes a chunk every 20 ms and reads it back echoed.
pub struct TcpStream;

impl TcpStream {
    /// Starts the echo server on `to:port` and one connection from `from`.
    pub fn start(from: &Host, to: &Host, to_addr: IpAddr, port: u16) -> Traffic {
        use std::io::{Read as _, Write as _};
        use std::net::{SocketAddr, TcpListener};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = spawn_in(to.ns(), move || {
            let l = TcpListener::bind(SocketAddr::new(to_addr, port)).expect("bind tcp");
            ready_tx.send(()).unwrap();
            if let Ok((mut c, _)) = l.accept() {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("tcp server up");
        let s = stop.clone();
        let client = spawn_in(from.ns(), move || {
            let mut tally = Tally::default();
            let mut c = match std::net::TcpStream::connect_timeout(
                &SocketAddr::new(to_addr, port),
                Duration::from_secs(10),
            ) {
                Ok(c) => c,
                Err(e) => {
                    tally.failures.push(format!("connect: {e}"));
                    return tally;
                }
            };
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let chunk = [0x5au8; 1024];
            let mut back = [0u8; 1024];
            while !s.load(Ordering::Relaxed) {
                tally.sent += 1;
                if let Err(e) = c.write_all(&chunk).and_then(|()| c.read_exact(&mut back)) {
                    tally
                        .failures
                        .push(format!("stream broke after {} chunks: {e}", tally.answered));
                    break;
                }
                tally.answered += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            tally
        });
        Traffic { stop, client: Some(client), server: Some(server) }
    }
}
