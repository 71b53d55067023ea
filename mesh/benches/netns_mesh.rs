//! The mesh-scale benchmark: N `meshd`s in network namespaces on one bridge, started at
//! once with the default settings (SPA on; IKE only where the kernel has no ESP). For
//! each N it prints the time from the first start to the last IKE SA up at both ends,
//! what the start cost (retransmissions, datagrams put off or lost, the kernel's own
//! drop counters in every namespace, daemon CPU per IKE SA, RSS per node), then
//! restarts one node and prints how long until all its IKE SAs are back. Run as root
//! (`tests/bench/mesh-scale` builds and runs it in release):
//!
//! ```text
//! cargo bench -p mesh --bench netns_mesh               # 10, 30, 100 and 200 nodes
//! cargo bench -p mesh --bench netns_mesh -- 60 --max 120
//! cargo bench -p mesh --bench netns_mesh -- --smoke    # 10 nodes
//! ```
//!
//! Traffic stays inside the namespaces this run creates. Figures, not a test: it fails
//! only when the mesh cannot be set up or does not converge within `--max` seconds.

#![allow(clippy::print_stdout, missing_docs)] // a benchmark prints its figures

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/procfs.rs"]
mod procfs;

use common::{Mesh, Options};
use mesh::control::client;
use mesh::control::proto::{Counters, Reply, Request, Response, Status};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Node `i`'s status, straight from its control socket (a Unix socket on the
/// filesystem: no process per poll, which would load the machine being measured).
fn status(mesh: &Mesh, i: usize) -> Option<Status> {
    match client::call(&mesh.nodes[i].socket(), &Request::Status, Duration::from_secs(5)) {
        Ok(Response::Ok { reply: Reply::Status(s) }) => Some(s),
        _ => None,
    }
}

fn established(s: &Status) -> usize {
    s.peers.iter().filter(|p| p.ike == "established").count()
}

/// Waits until every node in `nodes` shows all its peers established; the time from
/// `since`, or `None` after `max`. One node is asked at a time, the next only once it
/// is up: the daemons being measured answer at most about 50 status requests a second
/// between them (each holds every peer), rather than every node's 50 a second.
fn wait_all_up(mesh: &Mesh, nodes: &[usize], since: Instant, max: Duration) -> Option<Duration> {
    let n = mesh.nodes.len();
    let up = |i: usize| status(mesh, i).is_some_and(|s| established(&s) == n - 1);
    let mut left: Vec<usize> = nodes.to_vec();
    let mut last_print = Instant::now();
    loop {
        while left.first().is_some_and(|&i| up(i)) {
            left.remove(0);
        }
        let t = since.elapsed();
        if left.is_empty() {
            // Read each once more: nothing went down while the others came up.
            if nodes.iter().all(|&i| up(i)) {
                return Some(t);
            }
            left = nodes.to_vec();
        }
        if t > max {
            return None;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "  {:.0} s: {} of {} nodes not all up yet",
                t.as_secs_f64(),
                left.len(),
                nodes.len()
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The kernel's drop counters in host `i`'s namespace: UDP send-buffer errors, UDP
/// receive-buffer errors, IP output discards.
fn kernel_drops(mesh: &Mesh, i: usize) -> [u64; 3] {
    let snmp = mesh.net.host(i).run(&["cat", "/proc/net/snmp"]).unwrap_or_default();
    let value = |proto: &str, field: &str| -> u64 {
        let mut lines = snmp.lines().filter(|l| l.starts_with(&format!("{proto}:")));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
        let pos = names.split_whitespace().position(|n| n == field);
        pos.and_then(|p| values.split_whitespace().nth(p)?.parse().ok()).unwrap_or(0)
    };
    [value("Udp", "SndbufErrors"), value("Udp", "RcvbufErrors"), value("Ip", "OutDiscards")]
}

fn sum(counters: &[Counters]) -> Counters {
    let mut t = Counters::default();
    for c in counters {
        t.retransmissions += c.retransmissions;
        t.sent += c.sent;
        t.deferred += c.deferred;
        t.send_failed += c.send_failed;
        t.errors_reported += c.errors_reported;
    }
    t
}

/// With `BENCH_KEEP=DIR`: the daemons' logs, copied out before the namespaces and
/// files go.
fn keep_logs(mesh: &Mesh) {
    let Some(keep) = std::env::var_os("BENCH_KEEP") else { return };
    let keep = std::path::Path::new(&keep).join(mesh.nodes.len().to_string());
    let _ = std::fs::create_dir_all(&keep);
    for (i, node) in mesh.nodes.iter().enumerate() {
        let _ = std::fs::write(keep.join(format!("{}.log", node.name)), mesh.log(i));
    }
    println!("  logs in {}", keep.display());
}

#[allow(clippy::cast_precision_loss)] // figures
fn run(n: usize, max: Duration) -> bool {
    // BENCH_LOG=mesh=debug,info for the daemons' debug lines; BENCH_KEEP=DIR keeps
    // the logs.
    let log_level = std::env::var("BENCH_LOG").map_or("info", |l| &*l.leak());
    let options = Options { ike: String::new(), log_level, ..Options::default() };
    let mut mesh = Mesh::new(n, options);
    let pairs = n * (n - 1) / 2;
    let started = Instant::now();
    for i in 0..n {
        mesh.spawn(i);
    }
    let all: Vec<usize> = (0..n).collect();
    let Some(took) = wait_all_up(&mesh, &all, started, max) else {
        let up: usize = all.iter().filter_map(|&i| status(&mesh, i)).map(|s| established(&s)).sum();
        println!(
            "{n} nodes: NOT converged after {:.0} s: {up} / {} ends up",
            max.as_secs_f64(),
            n * (n - 1)
        );
        keep_logs(&mesh);
        return false;
    };
    let statuses: Vec<Status> = all.iter().filter_map(|&i| status(&mesh, i)).collect();
    let c = sum(&statuses.iter().map(|s| s.counters.clone()).collect::<Vec<_>>());
    let drops = all
        .iter()
        .map(|&i| kernel_drops(&mesh, i))
        .fold([0; 3], |a, d| [a[0] + d[0], a[1] + d[1], a[2] + d[2]]);
    let pids: Vec<u32> = all.iter().filter_map(|&i| mesh.pid(i)).collect();
    let cpu: f64 = pids.iter().map(|&p| procfs::cpu(p).as_secs_f64()).sum();
    let rss: Vec<u64> = pids.iter().map(|&p| procfs::rss_kib(p)).collect();
    let rss_mean = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64;
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    println!(
        "{n} nodes: {} / {} ends up in {:.2} s ({pairs} IKE SAs)",
        n * (n - 1),
        n * (n - 1),
        took.as_secs_f64()
    );
    println!(
        "  retransmissions {} ({:.2} per 100 IKE SAs); datagrams sent {}, put off {}, lost {}, errors reported {}",
        c.retransmissions,
        c.retransmissions as f64 * 100.0 / pairs as f64,
        c.sent,
        c.deferred,
        c.send_failed,
        c.errors_reported
    );
    println!(
        "  kernel drops over all namespaces: UDP SndbufErrors {}, RcvbufErrors {}, IP OutDiscards {}",
        drops[0], drops[1], drops[2]
    );
    println!(
        "  daemon CPU {:.2} s in all, {:.2} ms per IKE SA (both ends); RSS per node {:.0} KiB mean, {} KiB max",
        cpu,
        cpu * 1000.0 / pairs as f64,
        rss_mean,
        rss_max
    );
    // One node restarted (SIGTERM, then started again): its IKE SAs back.
    let k = n / 2;
    mesh.stop(k);
    let again = Instant::now();
    mesh.spawn(k);
    let back = wait_all_up(&mesh, &[k], again, Duration::from_secs(60));
    let back = back.map_or_else(
        || "NOT all back after 60 s".to_owned(),
        |t| format!("back in {:.2} s", t.as_secs_f64()),
    );
    println!("  node {k} restarted: its {} IKE SAs {back}", n - 1);
    keep_logs(&mesh);
    true
}

/// The kernel's neighbour (ARP and NDP) tables are shared by every namespace: N nodes
/// on one bridge need about N² entries, past the default limit of 1,024 from 33
/// nodes on, and a full table refuses sends (ENOBUFS, which meshd counts and logs).
/// Raised for the run, put back after. One kernel per node, as in a real fleet, has
/// no such limit to meet.
struct NeighbourTables {
    /// What each knob was, to put back.
    old: Vec<(String, String)>,
    /// IPv4's `gc_thresh3` for the run.
    limit: usize,
}

impl NeighbourTables {
    fn raise(n: usize) -> Self {
        let mut old = Vec::new();
        let mut limit = 0;
        for family in ["ipv4", "ipv6"] {
            for (knob, factor) in [("gc_thresh1", 1), ("gc_thresh2", 2), ("gc_thresh3", 4)] {
                let path = format!("/proc/sys/net/{family}/neigh/default/{knob}");
                let Ok(was) = std::fs::read_to_string(&path) else { continue };
                let want = (n * n * factor).max(was.trim().parse().unwrap_or(0));
                if std::fs::write(&path, want.to_string()).is_ok() {
                    old.push((path, was.trim().to_owned()));
                    if family == "ipv4" && knob == "gc_thresh3" {
                        limit = want;
                    }
                }
            }
        }
        Self { old, limit }
    }
}

impl Drop for NeighbourTables {
    fn drop(&mut self) {
        for (path, was) in &self.old {
            let _ = std::fs::write(path, was);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let max = args
        .iter()
        .position(|a| a == "--max")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(120), Duration::from_secs);
    let sizes: Vec<usize> = if args.iter().any(|a| a == "--smoke") {
        vec![10]
    } else {
        let given: Vec<usize> = args
            .iter()
            .enumerate()
            .filter(|(i, _)| *i == 0 || args[i - 1] != "--max")
            .filter_map(|(_, a)| a.parse().ok())
            .collect();
        if given.is_empty() { vec![10, 30, 100, 200] } else { given }
    };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let tables = NeighbourTables::raise(largest);
    println!(
        "neighbour tables: {} entries for the run (net.ipv4.neigh.default.gc_thresh3, \
         at least 4 x N^2; put back after)",
        tables.limit
    );
    let mut ok = true;
    for n in sizes {
        ok &= run(n, max);
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
