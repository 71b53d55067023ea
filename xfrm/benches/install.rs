//! How fast ikemesh programs the kernel, against `ip xfrm` in the same run.
//!
//! `cargo bench -p xfrm --bench install` (as root) installs, in fresh network namespaces:
//! - N policies on the host kernel (default 10,000);
//! - N SA pairs (2N SAs) in the stock-kernel VM, which has ESP;
//!
//! each three ways: through this crate's batched API, with `ip -batch` (one process, one
//! netlink request per entry), and with one `ip xfrm` process per entry. It prints
//! entries per second for each and the ratios, beside the targets of
//! `shared/notes/targets.md` (at least 20x one-process-per-entry, 2x `ip -batch`).
//! Every method's result is checked: all N entries must be in the kernel afterwards.
//!
//! The batched API and `ip -batch` run three rounds each, alternating, and the median is
//! reported: the kernel's slab caches warm up over the first runs, which otherwise
//! favours whichever method goes second (seen: the same 10,000 policies took 75, 49 and
//! 34 ms in three runs in a row). Each method keeps one namespace, emptied between
//! rounds with a synchronous `ip xfrm … flush`: a deleted namespace is torn down later by
//! a kernel worker, which would run during the next round's measurement.
//!
//! Before timing, the kernel's crypto is warmed up (the probe installs and deletes one
//! SA per algorithm): the first GCM SA of a fresh kernel costs seconds of algorithm
//! set-up and self-tests, which would otherwise land on whichever method ran first.
//!
//! Under software emulation one `ip` process per SA takes about a quarter of a second,
//! so in the VM that baseline is measured on a sample of at most 250 pairs (the cost is
//! per process, so the rate carries over); the output says so.
//!
//! Options after `--`: `--count N`; `--smoke` (N = 300 and a 20-pair sample, for CI:
//! proves the bench runs, its figures mean little); `--host-only`; `--vm-only`.
#![allow(clippy::print_stdout)] // the printed report is what a benchmark is for

use ikemesh_testbed::Net;
use ikemesh_testbed::vm::{self, Vm};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use xfrm::{
    Action, Crypto, Direction, Key, Level, Mode, OWNED_PRIORITIES, OWNED_REQIDS, Policy, Sa,
    Selector, Template, Xfrm,
};

/// The peer address of entry `i`: 10.100.0.0/14, one per entry.
fn peer(i: u32) -> IpAddr {
    let n = 0x0A64_0000 + i + 1;
    IpAddr::V4(Ipv4Addr::from(n))
}

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1));

fn reqid(i: u32) -> u32 {
    OWNED_REQIDS.start() + 0x1000 + i
}

/// A key that differs per entry (the values do not matter here, only the work).
fn key(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn policy(i: u32) -> Policy {
    let p = peer(i);
    Policy {
        selector: Selector::hosts(ME, p),
        dir: Direction::Out,
        priority: *OWNED_PRIORITIES.start() + 0x100,
        action: Action::Protect(Template {
            src: ME,
            dst: p,
            reqid: reqid(i),
            mode: Mode::Transport,
            level: Level::Require,
        }),
        mark: None,
    }
}

fn policy_line(i: u32) -> String {
    let p = peer(i);
    format!(
        "xfrm policy add src {ME}/32 dst {p}/32 dir out priority {} tmpl src {ME} dst {p} proto esp reqid {} mode transport",
        OWNED_PRIORITIES.start() + 0x100,
        reqid(i)
    )
}

/// The two SAs of pair `i`: ME -> peer and peer -> ME.
fn sa_pair(i: u32) -> [Sa; 2] {
    let p = peer(i);
    let gcm = |k| Crypto::AesGcm16 { key: Key::new(k) };
    [
        Sa::transport(ME, p, 0x10_0000 + 2 * i, reqid(i), gcm(key(i, 20))),
        Sa::transport(p, ME, 0x10_0001 + 2 * i, reqid(i), gcm(key(i + 1, 20))),
    ]
}

fn sa_lines(i: u32) -> [String; 2] {
    let p = peer(i);
    let line = |src: IpAddr, dst: IpAddr, spi: u32, k: Vec<u8>| {
        format!(
            "xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid {} mode transport replay-window 128 flag esn aead rfc4106(gcm(aes)) 0x{} 128",
            reqid(i),
            hex(&k)
        )
    };
    [line(ME, p, 0x10_0000 + 2 * i, key(i, 20)), line(p, ME, 0x10_0001 + 2 * i, key(i + 1, 20))]
}

fn ns_path(net: &Net) -> PathBuf {
    PathBuf::from("/run/netns").join(net.host(0).ns())
}

fn rate(entries: u32, took: Duration) -> f64 {
    f64::from(entries) / took.as_secs_f64()
}

struct Figures {
    ours: f64,
    batch: f64,
    per_process: f64,
}

fn report(what: &str, n: u32, sample: u32, f: &Figures) {
    println!("{what}, {n} entries:");
    println!("  ikemesh xfrm API (batched)   {:>10.0} entries/s", f.ours);
    println!("  ip -batch (one process)      {:>10.0} entries/s", f.batch);
    println!(
        "  ip xfrm, one process each    {:>10.0} entries/s{}",
        f.per_process,
        if sample < n { format!(" (measured on {sample} entries)") } else { String::new() }
    );
    println!(
        "  ratio vs one process each: {:.1}x (target >= 20x); vs ip -batch: {:.1}x (target >= 2x)",
        f.ours / f.per_process,
        f.ours / f.batch
    );
}

/// Runs `ip -n NS -batch FILE` with `lines`; the time it took.
fn ip_batch(ns: &str, lines: &[String]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let start = Instant::now();
    let out = Command::new("ip").args(["-n", ns, "-batch"]).arg(&file).output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "ip -batch failed: {}", String::from_utf8_lossy(&out.stderr));
    took
}

/// Runs one `ip -n NS …` process per line; the time it took.
fn ip_each(ns: &str, lines: &[String]) -> Duration {
    let start = Instant::now();
    for line in lines {
        let out = Command::new("ip").args(["-n", ns]).args(line.split(' ')).output().unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    }
    start.elapsed()
}

/// Rounds of the two fast methods; the median is reported.
const ROUNDS: usize = 3;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Times `ours` and `batch` over [`ROUNDS`] alternating rounds, each method in a
/// namespace of its own that `ip xfrm {table} flush` empties between rounds, and checks
/// after each round that the namespace holds `expect` entries (counted by `count`).
fn alternate(
    table: &str,
    expect: usize,
    count: impl Fn(&Net) -> usize,
    ours: impl Fn(&Net) -> Duration,
    batch: impl Fn(&Net) -> Duration,
) -> (Duration, Duration) {
    let (net_ours, net_batch) = (Net::new(2).unwrap(), Net::new(2).unwrap());
    let (mut t_ours, mut t_batch) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (net, time, method) in [
            (&net_ours, &mut t_ours, &ours as &dyn Fn(&Net) -> Duration),
            (&net_batch, &mut t_batch, &batch),
        ] {
            time.push(method(net));
            assert_eq!(count(net), expect);
            net.host(0).run(&["ip", "xfrm", table, "flush"]).unwrap();
        }
    }
    (median(t_ours), median(t_batch))
}

fn bench_policies(n: u32) -> Figures {
    let policies: Vec<Policy> = (0..n).map(policy).collect();
    let lines: Vec<String> = (0..n).map(policy_line).collect();
    let count = |net: &Net| Xfrm::open_in(&ns_path(net)).unwrap().dump_policies().unwrap().len();
    let ours = |net: &Net| {
        let mut x = Xfrm::open_in(&ns_path(net)).unwrap();
        let start = Instant::now();
        let results = x.add_policies(&policies).unwrap();
        let took = start.elapsed();
        assert!(results.iter().all(Result::is_ok));
        took
    };
    let (ours, batch) =
        alternate("policy", n as usize, count, ours, |net| ip_batch(net.host(0).ns(), &lines));

    let net = Net::new(2).unwrap();
    let each = ip_each(net.host(0).ns(), &lines);
    assert_eq!(count(&net), n as usize);
    Figures { ours: rate(n, ours), batch: rate(n, batch), per_process: rate(n, each) }
}

fn bench_sa_pairs(n: u32, sample: u32) -> Figures {
    {
        let warm = Net::new(2).unwrap();
        let caps = Xfrm::open_in(&ns_path(&warm)).unwrap().probe().unwrap();
        assert!(caps.esp_ready(), "{}", caps.summary());
    }
    let sas: Vec<Sa> = (0..n).flat_map(sa_pair).collect();
    let lines: Vec<String> = (0..n).flat_map(sa_lines).collect();
    let count = |net: &Net| Xfrm::open_in(&ns_path(net)).unwrap().dump_sas().unwrap().len();
    let ours = |net: &Net| {
        let mut x = Xfrm::open_in(&ns_path(net)).unwrap();
        let start = Instant::now();
        let results = x.add_sas(&sas).unwrap();
        let took = start.elapsed();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            panic!("{e}");
        }
        took
    };
    let (ours, batch) =
        alternate("state", 2 * n as usize, count, ours, |net| ip_batch(net.host(0).ns(), &lines));

    let net = Net::new(2).unwrap();
    let each = ip_each(net.host(0).ns(), &lines[..2 * sample as usize]);
    assert_eq!(count(&net), 2 * sample as usize);
    // A pair is the entry here: rates in pairs per second.
    Figures { ours: rate(n, ours), batch: rate(n, batch), per_process: rate(sample, each) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let mut n: u32 = if flag("--smoke") { 300 } else { 10_000 };
    if let Some(i) = args.iter().position(|a| a == "--count") {
        n = args.get(i + 1).and_then(|v| v.parse().ok()).expect("--count N");
    }
    if vm::in_guest() {
        let sample = n.min(if flag("--smoke") { 20 } else { 250 });
        let figures = bench_sa_pairs(n, sample);
        report("SA pairs in the VM (stock kernel, software emulation)", n, sample, &figures);
        return;
    }
    if !flag("--vm-only") {
        report("policies on the host kernel", n, n, &bench_policies(n));
    }
    if !flag("--host-only") {
        let vm = Vm::shared().unwrap_or_else(|e| panic!("cannot boot the test VM: {e}"));
        let exe = std::env::current_exe().unwrap();
        let out = vm
            .run(
                &format!(
                    "export {}=1\nexec '{}' --count {n}{}\n",
                    vm::IN_GUEST_ENV,
                    exe.display(),
                    if flag("--smoke") { " --smoke" } else { "" }
                ),
                Duration::from_secs(3600),
            )
            .unwrap();
        print!("{}", out.stdout);
        assert!(out.success(), "the VM part failed ({}):\n{}", out.status, out.stderr);
    }
}
