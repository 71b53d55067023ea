//! The SPA gate in network namespaces on the host kernel: nftables pinholes, the
//! listener, and the client's knock (issue 7's acceptance). Needs root, `nft` (Debian's
//! nftables package) and `tcpdump`.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ikemesh_testbed::{Host, Net};
use policy::knock::send_blocking;
use policy::nft::Change;
use policy::spa::{Access, Knock, SpaKeys, os_random, seal};
use policy::{PinholeConfig, Pinholes};

/// The SPA port of these tests (fwknop's, the model's default).
const SPA_PORT: u16 = 62201;

/// A pinhole manager for `table`, with a short default timeout.
fn pinholes(table: &str) -> Pinholes {
    Pinholes::new(PinholeConfig {
        table: table.into(),
        default_ttl: Duration::from_secs(2),
        ..PinholeConfig::default()
    })
    .unwrap()
}

/// `nft -j list ruleset` in `host`, without our table and without the metainfo
/// object: what we must never change.
fn ruleset_outside(host: &Host, table: &str) -> Vec<serde_json::Value> {
    let out = host.run(&["nft", "-j", "list", "ruleset"]).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ours = |object: &serde_json::Value| {
        let Some((kind, body)) = object.as_object().and_then(|o| o.iter().next()) else {
            return false;
        };
        if kind == "metainfo" {
            return true;
        }
        let name = if kind == "table" { &body["name"] } else { &body["table"] };
        body["family"] == "inet" && name == table
    };
    doc["nftables"].as_array().unwrap().iter().filter(|o| !ours(o)).cloned().collect()
}

/// Whether a datagram from `from` reaches a socket listening on `to`:`port` (IPv4)
/// within `wait`; and how long it took.
fn probe(from: &Host, to: &Host, port: u16, wait: Duration) -> Option<Duration> {
    probe_family(from, to, false, port, wait)
}

/// [`probe`] over IPv4 or IPv6.
fn probe_family(from: &Host, to: &Host, v6: bool, port: u16, wait: Duration) -> Option<Duration> {
    let dst = SocketAddr::new(to.addr(v6), port);
    let sink = to.enter(|| UdpSocket::bind(dst)).unwrap().unwrap();
    sink.set_read_timeout(Some(wait)).unwrap();
    let sent = from
        .enter(|| {
            let sock = UdpSocket::bind((from.addr(v6), 0))?;
            let at = Instant::now();
            sock.send_to(b"probe", dst)?;
            std::io::Result::Ok(at)
        })
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 64];
    match sink.recv_from(&mut buf) {
        Ok((n, src)) if &buf[..n] == b"probe" && src.ip() == from.addr(v6) => Some(sent.elapsed()),
        Ok((_, src)) => panic!("unexpected datagram from {src}"),
        Err(_) => None,
    }
}

#[test]
fn pinholes_open_close_and_touch_nothing_else() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let table = "ikemesh_t1";
    let holes = pinholes(table);

    // The operator's own table, with a rule of its own, before we arrive.
    b.sh("nft add table inet operator && \
          nft add chain inet operator input '{ type filter hook input priority 0; policy accept; }' && \
          nft add rule inet operator input tcp dport 22 counter accept && \
          nft add table ip legacy && nft add set ip legacy blocked '{ type ipv4_addr; }'")
        .unwrap();
    let before = ruleset_outside(b, table);
    assert!(before.len() >= 5, "the operator's ruleset: {before:?}");

    assert!(probe(a, b, 500, Duration::from_millis(300)).is_some(), "open before install");
    b.enter(|| holes.install()).unwrap().unwrap();
    b.enter(|| holes.install()).unwrap().unwrap(); // idempotent
    println!("{}", b.run(&["nft", "list", "table", "inet", table]).unwrap());
    assert_eq!(ruleset_outside(b, table), before, "install touched another table");
    assert!(probe(a, b, 500, Duration::from_millis(500)).is_none(), "500 open after install");
    assert!(probe(a, b, 4500, Duration::from_millis(500)).is_none(), "4500 open after install");
    assert!(probe(a, b, 501, Duration::from_millis(500)).is_some(), "other ports must stay open");

    b.enter(|| holes.allow(a.ipv4().into(), Duration::from_secs(2))).unwrap().unwrap();
    b.enter(|| holes.allow(a.ipv4().into(), Duration::from_secs(2))).unwrap().unwrap(); // refresh
    assert!(probe(a, b, 500, Duration::from_millis(500)).is_some(), "500 dark after allow");
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].addr, IpAddr::V4(a.ipv4()));
    assert!(listed[0].expires.is_some_and(|e| e <= Duration::from_secs(2)), "{listed:?}");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(probe(a, b, 500, Duration::from_millis(500)).is_none(), "500 open after the timeout");

    b.enter(|| holes.keep(a.ipv4().into())).unwrap().unwrap();
    b.enter(|| holes.keep(a.ipv6().into())).unwrap().unwrap();
    b.enter(|| holes.keep(a.ipv4().into())).unwrap().unwrap(); // idempotent
    assert!(probe(a, b, 4500, Duration::from_millis(500)).is_some(), "kept peer shut out");
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|p| p.expires.is_none()), "{listed:?}");
    assert_eq!(ruleset_outside(b, table), before, "an update touched another table");
    b.enter(|| holes.release(a.ipv4().into())).unwrap().unwrap();
    b.enter(|| holes.release(a.ipv4().into())).unwrap().unwrap(); // idempotent
    assert!(probe(a, b, 4500, Duration::from_millis(500)).is_none(), "released peer let in");

    // close: a knocked and kept former member loses both, at once.
    b.enter(|| holes.allow(a.ipv6().into(), Duration::from_secs(60))).unwrap().unwrap();
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert_eq!(listed.len(), 2, "kept and knocked: {listed:?}");
    b.enter(|| holes.close(a.ipv6().into())).unwrap().unwrap();
    b.enter(|| holes.close(a.ipv6().into())).unwrap().unwrap(); // idempotent
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert!(listed.is_empty(), "closed address still let in: {listed:?}");
    assert_eq!(ruleset_outside(b, table), before, "close touched another table");

    // Many changes in one transaction, in order: what a burst of knocks or of IKE
    // SAs coming up makes.
    let (v4, v6): (IpAddr, IpAddr) = (a.ipv4().into(), a.ipv6().into());
    let batch = [
        Change::Allow(v4, Duration::from_secs(60)),
        Change::Keep(v6),
        Change::Keep(v4),
        Change::Release(v4),
        Change::Allow(v6, Duration::from_secs(60)),
        Change::Close(v6),
        Change::Keep(v6),
    ];
    b.enter(|| holes.change(&batch)).unwrap().unwrap();
    let mut listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    listed.sort_by_key(|p| p.expires.is_none());
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].addr == v4 && listed[0].expires.is_some(), "knocked v4: {listed:?}");
    assert!(listed[1].addr == v6 && listed[1].expires.is_none(), "kept v6: {listed:?}");
    b.enter(|| holes.change(&[Change::Close(v4), Change::Close(v6)])).unwrap().unwrap();
    assert!(b.enter(|| holes.allowed()).unwrap().unwrap().is_empty());

    b.enter(|| holes.remove()).unwrap().unwrap();
    b.enter(|| holes.remove()).unwrap().unwrap(); // idempotent
    assert!(probe(a, b, 500, Duration::from_millis(300)).is_some(), "500 dark after remove");
    assert_eq!(ruleset_outside(b, table), before, "remove touched another table");
    let err =
        b.enter(|| holes.allow(a.ipv4().into(), Duration::from_secs(1))).unwrap().unwrap_err();
    println!("allow without our table: {err}");
    assert!(!err.to_string().contains('\n'));
    assert!(err.to_string().contains("is the table installed?"), "{err}");
}

#[test]
fn pinhole_changes_restart_clocks_and_go_in_large_batches() {
    let net = Net::new(2).unwrap();
    let b = net.host(0);
    let holes = pinholes("ikemesh_t2");
    b.enter(|| holes.install()).unwrap().unwrap();
    let a: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();

    // A knock again with a shorter time: the new time counts, not the old one.
    b.enter(|| holes.allow(a, Duration::from_secs(600))).unwrap().unwrap();
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert!(listed[0].expires.is_some_and(|e| e > Duration::from_secs(500)), "{listed:?}");
    b.enter(|| holes.allow(a, Duration::from_secs(5))).unwrap().unwrap();
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert!(listed[0].expires.is_some_and(|e| e <= Duration::from_secs(5)), "{listed:?}");

    // What a burst makes: 2,000 knocks and 2,000 kept peers, v4 and v6, in one change.
    let many: Vec<IpAddr> = (0..2000u32)
        .flat_map(|i| {
            let v6 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i as u16);
            [IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i)), IpAddr::V6(v6)]
        })
        .collect();
    let mut batch: Vec<Change> =
        many.iter().map(|&x| Change::Allow(x, Duration::from_secs(60))).collect();
    batch.extend(many.iter().map(|&x| Change::Keep(x)));
    b.enter(|| holes.change(&batch)).unwrap().unwrap();
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert_eq!(listed.len(), 1 + 2 * many.len(), "every knock and kept peer, and the first");

    // One change in a batch that the kernel refuses (its set is gone) and none of the
    // batch is made.
    b.sh("nft flush chain inet ikemesh_t2 input && nft delete set inet ikemesh_t2 keep6").unwrap();
    let c: IpAddr = Ipv4Addr::new(192, 0, 2, 8).into();
    let v6: IpAddr = "2001:db8::8".parse().unwrap();
    let err = b.enter(|| holes.change(&[Change::Keep(c), Change::Keep(v6)])).unwrap().unwrap_err();
    println!("a batch with a change the kernel refuses: {err}");
    assert!(!err.to_string().contains('\n'));
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert!(!listed.iter().any(|p| p.addr == c), "half a batch was made: {c} is kept");
    b.enter(|| holes.remove()).unwrap().unwrap();
}

/// A mesh secret file (mode 0600) in `dir`, and the keys from it.
fn secret(dir: &Path, name: &str, byte: u8) -> (PathBuf, SpaKeys) {
    let path = dir.join(name);
    let bytes = [byte; 32];
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, SpaKeys::new(&bytes, None).unwrap())
}

/// `spa-gate` running in a host, its stderr collected line by line.
struct Gate {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    /// Starts `spa-gate` in `host` on its IPv4 address, table `ikemesh`, with `extra`
    /// arguments, and waits until it listens.
    fn start(host: &Host, secret: &Path, extra: &[&str]) -> Self {
        let listen = SocketAddr::new(host.ipv4().into(), SPA_PORT).to_string();
        let mut child = host
            .command(env!("CARGO_BIN_EXE_spa-gate"))
            .args(["--listen", &listen, "--secret", secret.to_str().unwrap(), "--table", "ikemesh"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let gate = Self { child, lines, reader: Some(reader) };
        gate.wait_for("SPA gate listening", 1);
        gate
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines containing `needle` so far.
    fn matching(&self, needle: &str) -> Vec<String> {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Waits (at most 5 s) until `count` lines contain `needle`; returns the last.
    fn wait_for(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self.matching(needle);
            if found.len() >= count {
                return found[count - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "spa-gate never logged {count} x {needle:?}; it said:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` and waits for the process to end; every line it wrote.
    fn stop(mut self, signal: nix::sys::signal::Signal) -> Vec<String> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "spa-gate ignored {signal}");
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A knock from `node` claiming `claimed`, sealed under `keys`, timestamped `at`.
fn sealed(keys: &SpaKeys, claimed: IpAddr, at: SystemTime) -> Vec<u8> {
    let knock = Knock { node_id: "a.ikemesh.test".into(), access: Access::Ike, addr: claimed };
    seal(keys, &knock, at, &mut os_random).unwrap()
}

/// Sends `bytes` from `src` (an address of `host`) to `to`'s SPA port.
fn send_raw(host: &Host, src: IpAddr, to: &Host, bytes: &[u8]) {
    let dst = SocketAddr::new(to.ipv4().into(), SPA_PORT);
    host.enter(|| UdpSocket::bind((src, 0))?.send_to(bytes, dst)).unwrap().unwrap();
}

/// One datagram from `from` to UDP port 9 of `to`, where nothing listens and our table
/// does not gate: `to` answers with ICMP port unreachable, which captures must see.
fn send_to_closed_port(from: &Host, to: &Host) {
    from.enter(|| UdpSocket::bind((from.ipv4(), 0))?.send_to(b"control", (to.ipv4(), 9)))
        .unwrap()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
}

/// The pinholes open in `host`'s table `ikemesh`.
fn open_pinholes(host: &Host) -> Vec<policy::Pinhole> {
    let holes =
        Pinholes::new(PinholeConfig { table: "ikemesh".into(), ..PinholeConfig::default() })
            .unwrap();
    host.enter(|| holes.allowed()).unwrap().unwrap()
}

#[test]
fn a_knock_opens_the_ike_port_for_a_while() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let dir = tempfile::tempdir().unwrap();
    let (path, keys) = secret(dir.path(), "spa.key", 1);
    let gate = Gate::start(b, &path, &["--ttl", "2"]);
    // Whatever B sends to A in answer shows here: UDP, and ICMP or ICMPv6 errors (types
    // below 128; neighbour discovery is IPv6's ARP, not an answer).
    let cap = a
        .capture(
            "eth0",
            "icmp or (icmp6 and ip6[40] < 128) or (udp and (src host 10.77.0.2 or src host fd77::2))",
        )
        .unwrap();

    for (v6, port) in [(false, 500), (false, 4500), (true, 500)] {
        assert!(probe_family(a, b, v6, port, Duration::from_secs(1)).is_none(), "{port} not dark");
    }

    // The knock, then the same probe every 2 ms until it gets through.
    let sink = b.enter(|| UdpSocket::bind((b.ipv4(), 500))).unwrap().unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let prober = a.enter(|| UdpSocket::bind((a.ipv4(), 0))).unwrap().unwrap();
    let from_a = a.enter(|| UdpSocket::bind((a.ipv4(), 0))).unwrap().unwrap();
    let knock =
        Knock { node_id: "a.ikemesh.test".into(), access: Access::Ike, addr: a.ipv4().into() };
    let knocked = Instant::now();
    send_blocking(&from_a, &keys, &knock, SocketAddr::new(b.ipv4().into(), SPA_PORT)).unwrap();
    let mut buf = [0u8; 64];
    let through = loop {
        prober.send_to(b"probe", (b.ipv4(), 500)).unwrap();
        if let Ok((n, from)) = sink.recv_from(&mut buf) {
            assert_eq!((&buf[..n], from.ip()), (&b"probe"[..], IpAddr::V4(a.ipv4())));
            break knocked.elapsed();
        }
        assert!(knocked.elapsed() < Duration::from_secs(2), "the knock opened nothing");
    };
    println!(
        "the probe reached B's port 500 {:.1} ms after the knock",
        through.as_secs_f64() * 1e3
    );
    assert!(through < Duration::from_millis(100), "{through:?} from knock to open port");
    drop(sink);
    assert!(gate.wait_for("SPA knock admitted", 1).contains("source=10.77.0.1"));
    // Only the knocker: B's other ports and other addresses are unaffected, and IPv6
    // from A is still dark (the knock named A's IPv4 address).
    assert!(probe_family(a, b, true, 500, Duration::from_millis(300)).is_none());

    // After the 2 s timeout, dark again.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(knocked.elapsed()));
    let dark_after = knocked.elapsed();
    assert!(probe(a, b, 500, Duration::from_secs(1)).is_none(), "still open after the timeout");
    assert!(open_pinholes(b).is_empty());
    println!("dark again {:.1} s after the knock (timeout 2 s)", dark_after.as_secs_f64());

    // The control: a datagram to a closed port that our table does not gate gets B's
    // ICMP port unreachable, and the capture must see exactly that one.
    send_to_closed_port(a, b);
    let frames = cap.stop().unwrap();
    println!(
        "answers or ICMP errors seen at A: {} (the control's ICMP error included)",
        frames.len()
    );
    assert_eq!(frames.len(), 1, "B answered: {frames:?}");
    assert_eq!(frames[0].ip_protocol(), Some(1), "{frames:?}");
    drop(gate);
}

#[test]
fn refused_knocks_are_logged_once_each_and_never_answered() {
    let net = Net::new(3).unwrap();
    let (a, b, c) = (net.host(0), net.host(1), net.host(2));
    // The switch floods every frame to every port, so C sees A's knock to B.
    let switch = net.namespaces().last().unwrap();
    let hub = std::process::Command::new("ip")
        .args(["-n", switch, "link", "set", "br0", "type", "bridge", "ageing_time", "0"])
        .status()
        .unwrap();
    assert!(hub.success());
    let dir = tempfile::tempdir().unwrap();
    let (path, keys) = secret(dir.path(), "spa.key", 1);
    let (_, wrong) = secret(dir.path(), "other.key", 2);
    let gate = Gate::start(b, &path, &["--rate", "100/10"]);
    let from_b =
        b.capture("eth0", "(ip and src host 10.77.0.2) or (ip6 and src host fd77::2)").unwrap();
    let snoop = c.capture("eth0", "udp dst port 62201").unwrap();

    let a4 = IpAddr::V4(a.ipv4());
    let now = SystemTime::now;
    send_raw(a, a4, b, &sealed(&keys, a4, now()));
    gate.wait_for("SPA knock admitted", 1);

    // 1. C replays the knock it saw, from A's address.
    let seen = snoop.stop().unwrap();
    assert_eq!(seen.len(), 1, "C saw {} knocks", seen.len());
    let captured = &seen[0].data[seen[0].data.len() - policy::spa::DATAGRAM_LEN..];
    c.run(&["ip", "addr", "add", "10.77.0.1/32", "dev", "eth0"]).unwrap();
    send_raw(c, a4, b, captured);
    let replayed = gate.wait_for("seen before", 1);

    // 2. One byte changed.
    let mut altered = sealed(&keys, a4, now());
    altered[100] ^= 0x01;
    send_raw(a, a4, b, &altered);
    let altered = gate.wait_for("not authentic", 1);

    // 3. A timestamp two minutes old.
    send_raw(a, a4, b, &sealed(&keys, a4, now() - Duration::from_secs(120)));
    let stale = gate.wait_for("outside the", 1);

    // 4. Another mesh's secret.
    send_raw(a, a4, b, &sealed(&wrong, a4, now()));
    let foreign = gate.wait_for("not authentic", 2);

    // 5. Claiming another address than its source.
    send_raw(a, a4, b, &sealed(&keys, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9)), now()));
    let mismatch = gate.wait_for("claims address 10.77.0.9", 1);

    for (case, line) in [
        ("replayed", &replayed),
        ("one byte changed", &altered),
        ("stale", &stale),
        ("wrong secret", &foreign),
        ("claimed address", &mismatch),
    ] {
        println!("{case}: {line}");
        assert!(line.contains("source=10.77.0.1"), "{case}: no source in {line:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let refused = gate.matching("refused");
    assert_eq!(refused.len(), 5, "one line per refusal: {refused:#?}");
    // Only A's own valid knock opened anything.
    let holes = open_pinholes(b);
    assert_eq!(holes.iter().map(|p| p.addr).collect::<Vec<_>>(), [a4], "{holes:?}");

    // The control, as above: B's one ICMP error for a closed port shows.
    send_to_closed_port(a, b);
    let frames = from_b.stop().unwrap();
    println!("packets sent by B during all this: {} (the control's ICMP error)", frames.len());
    assert_eq!(frames.len(), 1, "B sent something: {frames:?}");
    assert_eq!(frames[0].ip_protocol(), Some(1), "{frames:?}");
    drop(gate);
}

/// CPU time (user + system) and resident memory of process `pid`.
fn usage(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout;
    let hz: u64 = String::from_utf8(hz).unwrap().trim().parse().unwrap();
    let cpu = Duration::from_millis(ticks * 1000 / hz);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    (cpu, rss)
}

#[test]
fn a_flood_of_random_datagrams_opens_nothing() {
    const DATAGRAMS: u32 = 100_000;
    const SOURCES: u8 = 100;
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = secret(dir.path(), "spa.key", 1);
    let gate = Gate::start(b, &path, &[]);
    // A floods from 100 addresses: its own and 10.77.0.101 to .199.
    a.sh("for i in $(seq 101 199); do ip addr add 10.77.0.$i/32 dev eth0; done").unwrap();
    let sources: Vec<IpAddr> = std::iter::once(a.ipv4())
        .chain((101..200).map(|i| Ipv4Addr::new(10, 77, 0, i)))
        .map(IpAddr::V4)
        .collect();
    assert_eq!(sources.len(), usize::from(SOURCES));
    let sockets: Vec<UdpSocket> =
        a.enter(|| sources.iter().map(|&s| UdpSocket::bind((s, 0)).unwrap()).collect()).unwrap();

    let (cpu0, rss0) = usage(gate.pid());
    let dst = SocketAddr::new(b.ipv4().into(), SPA_PORT);
    // Random bytes from a fixed-seed xorshift (test data, not keys): three in four
    // datagrams are exactly an SPA packet's size, the rest 1 to 600 bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let started = Instant::now();
    let mut buf = [0u8; 600];
    for i in 0..DATAGRAMS {
        for chunk in buf.chunks_mut(8) {
            let r = random().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        let len = if i % 4 == 0 {
            1 + usize::try_from(random() % 600).unwrap()
        } else {
            policy::spa::DATAGRAM_LEN
        };
        let sock = &sockets[usize::try_from(i).unwrap() % sockets.len()];
        // A full socket buffer on B drops datagrams; pacing keeps most of them coming.
        let _ = sock.send_to(&buf[..len], dst);
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the flood took too long");
    }
    let sent_in = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (cpu1, rss1) = usage(gate.pid());
    let holes = open_pinholes(b);
    let lines = gate.stop(nix::sys::signal::Signal::SIGTERM);
    let summary =
        lines.iter().find(|l| l.contains("spa-gate stopping")).cloned().unwrap_or_default();

    println!(
        "flood: {DATAGRAMS} random datagrams from {SOURCES} sources in {:.2} s",
        sent_in.as_secs_f64()
    );
    println!(
        "listener CPU time (user+sys): {} ms before, {} ms after (+{} ms)",
        cpu0.as_millis(),
        cpu1.as_millis(),
        cpu1.saturating_sub(cpu0).as_millis()
    );
    println!(
        "listener VmRSS: {rss0} kB before, {rss1} kB after (+{} kB)",
        rss1.saturating_sub(rss0)
    );
    println!("listener log: {} lines; {summary}", lines.len());
    println!("pinholes open: {}", holes.len());
    assert!(holes.is_empty(), "the flood opened {holes:?}");
    assert!(summary.contains("admitted=0"), "{summary}");
    assert!(rss1.saturating_sub(rss0) < 16 * 1024, "memory grew from {rss0} to {rss1} kB");
    assert!(cpu1.saturating_sub(cpu0) < Duration::from_secs(20), "CPU time {cpu0:?} -> {cpu1:?}");
}

#[test]
fn a_killed_listener_leaves_the_ports_dark() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let dir = tempfile::tempdir().unwrap();
    let (path, keys) = secret(dir.path(), "spa.key", 1);
    let gate = Gate::start(b, &path, &["--ttl", "2"]);
    let a4 = IpAddr::V4(a.ipv4());
    assert!(probe(a, b, 500, Duration::from_millis(500)).is_none());
    gate.stop(nix::sys::signal::Signal::SIGKILL);

    // No listener: the table stays, a knock opens nothing, the IKE ports stay dark.
    let table = b.run(&["nft", "list", "table", "inet", "ikemesh"]).unwrap();
    assert!(table.contains("drop"), "{table}");
    send_raw(a, a4, b, &sealed(&keys, a4, SystemTime::now()));
    std::thread::sleep(Duration::from_millis(200));
    for port in [500, 4500] {
        assert!(probe(a, b, port, Duration::from_secs(1)).is_none(), "{port} open after SIGKILL");
    }
    println!("after SIGKILL: table inet ikemesh still installed, UDP 500 and 4500 dark");
}
