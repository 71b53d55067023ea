//! The netns test bed on the host kernel: hosts talk over IPv4 and IPv6, captures see
//! what crosses the link, teardown happens on drop and on panic, concurrent runs do not
//! collide, and a run killed with SIGKILL leaves namespaces the next run removes.

use ikemesh_testbed::netns::{self, Net};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tests that start helper processes run one at a time: a helper's start-up cleanup
/// would otherwise remove the killed helper's namespaces before the test looks at them.
static HELPERS: Mutex<()> = Mutex::new(());

const HELPER_ENV: &str = "IKEMESH_TESTBED_HELPER";

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Sends `count` datagrams from host `from` to host `to` and returns how many arrived.
fn udp_between(net: &Net, from: usize, to: usize, v6: bool, count: u32) -> u32 {
    net.host(from).udp_to(net.host(to), v6, 7000, count, b"datagram", Duration::ZERO).unwrap()
}

#[test]
fn two_hosts_exchange_udp_over_ipv4_and_ipv6() {
    let net = Net::new(2).unwrap();
    assert_eq!(net.host(0).ipv4().to_string(), "10.77.0.1");
    assert_eq!(net.host(1).ipv6().to_string(), "fd77::2");
    for v6 in [false, true] {
        assert_eq!(udp_between(&net, 0, 1, v6, 20), 20, "v6={v6}");
        assert_eq!(udp_between(&net, 1, 0, v6, 20), 20, "v6={v6}");
    }
}

#[test]
fn a_bridged_net_connects_every_pair() {
    let net = Net::new(4).unwrap();
    assert_eq!(net.namespaces().len(), 5, "four hosts and a switch");
    for from in 0..4 {
        for to in 0..4 {
            if from != to {
                for v6 in [false, true] {
                    assert_eq!(udp_between(&net, from, to, v6, 3), 3, "{from}->{to} v6={v6}");
                }
            }
        }
    }
}

#[test]
fn commands_and_processes_run_inside_a_host() {
    let net = Net::new(2).unwrap();
    let h0 = net.host(0);
    let addrs = h0.run(&["ip", "-brief", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(addrs.contains("10.77.0.1/24") && addrs.contains("fd77::1/64"), "{addrs}");
    let err = h0.sh("echo oops >&2; exit 4").unwrap_err().to_string();
    assert!(err.contains("oops") && err.contains('4'), "{err}");
    // A spawned process lives in the host's namespace and dies with its handle.
    let mut proc = h0.spawn(&["sleep", "30"]).unwrap();
    let pid = proc.id();
    // `ip netns exec` joins the namespace and then execs sleep: wait for that.
    let in_ns = || {
        let pids = Command::new("ip").args(["netns", "pids", h0.ns()]).output().unwrap();
        String::from_utf8_lossy(&pids.stdout).split_whitespace().any(|p| p == pid.to_string())
    };
    let start = Instant::now();
    while !in_ns() {
        assert!(start.elapsed() < Duration::from_secs(5), "pid {pid} never showed in {}", h0.ns());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(proc.try_wait().unwrap().is_none());
    drop(proc); // kills and reaps
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} outlived its handle");
}

#[test]
fn capture_reads_back_what_crossed_the_link() {
    let net = Net::new(2).unwrap();
    let capture = net.host(0).capture("eth0", "udp").unwrap();
    let (h0, h1) = (net.host(0), net.host(1));
    let sink = h1.enter(|| UdpSocket::bind((h1.ipv4(), 7001))).unwrap().unwrap();
    h0.enter(|| {
        let s = UdpSocket::bind((h0.ipv4(), 0)).unwrap();
        for _ in 0..5 {
            s.send_to(b"visible-marker-42", (h1.ipv4(), 7001)).unwrap();
        }
    })
    .unwrap();
    let mut buf = [0u8; 32];
    for _ in 0..5 {
        sink.recv_from(&mut buf).unwrap();
    }
    let frames = capture.stop().unwrap();
    let marked: Vec<_> = frames.iter().filter(|f| f.contains(b"visible-marker-42")).collect();
    assert_eq!(marked.len(), 5, "the capture sees plaintext when there is some");
    assert!(marked.iter().all(|f| f.udp_ports().map(|p| p.1) == Some(7001) && !f.is_esp()));
}

#[test]
fn namespaces_are_removed_on_drop_and_on_panic() {
    let net = Net::new(3).unwrap();
    let names = net.namespaces().to_vec();
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|n| ns_exists(n)));
    drop(net);
    assert!(names.iter().all(|n| !ns_exists(n)), "dropped");

    let mut seen = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = Net::new(2).unwrap();
        seen = net.namespaces().to_vec();
        panic!("a test failing half-way");
    }));
    assert!(result.is_err());
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|n| !ns_exists(n)), "unwound");
}

/// Starts this test binary again, running only the helper `name` with `arg`.
fn helper(name: &str, arg: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_file(path: &Path, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(start.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_run_killed_with_sigkill_is_cleaned_by_the_next() {
    let _serial = HELPERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let names_file = dir.path().join("names");
    let mut child = helper("helper_hold_a_net", names_file.to_str().unwrap());
    let text = wait_for_file(&names_file, Duration::from_secs(30));
    let names: Vec<&str> = text.lines().collect();
    assert_eq!(names.len(), 3, "{text}");
    assert!(names.iter().all(|n| n.contains(&format!("-{}-", child.id()))));

    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(names.iter().all(|n| ns_exists(n)), "a killed run leaves its namespaces");

    // The next run's start-up cleanup removes them. (With two runs at once, the other
    // run's cleanup may get there first: either way they must be gone.)
    let removed = netns::clean_stale().unwrap();
    for name in &names {
        assert!(!ns_exists(name), "{name} survived; cleanup removed {removed:?}");
    }
    // Our own live namespaces are never stale.
    let net = Net::new(2).unwrap();
    assert!(netns::clean_stale().unwrap().iter().all(|r| !net.namespaces().contains(r)));
    assert!(net.namespaces().iter().all(|n| ns_exists(n)));
}

#[test]
fn concurrent_runs_do_not_collide() {
    let _serial = HELPERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let files = [dir.path().join("a"), dir.path().join("b")];
    let children: Vec<_> =
        files.iter().map(|f| helper("helper_busy_nets", f.to_str().unwrap())).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent run failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let a = std::fs::read_to_string(&files[0]).unwrap();
    let b = std::fs::read_to_string(&files[1]).unwrap();
    assert_eq!(a.lines().count(), 3 * 4, "three nets of four namespaces");
    assert!(a.lines().all(|n| !b.lines().any(|m| m == n)), "names shared:\n{a}\n{b}");
}

/// Helper process for `a_run_killed_with_sigkill_is_cleaned_by_the_next`: makes a net,
/// writes its namespace names, and waits to be killed.
#[test]
#[ignore = "helper process, started by a_run_killed_with_sigkill_is_cleaned_by_the_next"]
fn helper_hold_a_net() {
    let Some(file) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let net = Net::new(2).unwrap();
    let other = Net::new(2).unwrap();
    let mut names =
        [net.namespaces()[0].clone(), net.namespaces()[1].clone(), other.namespaces()[0].clone()];
    names.sort();
    std::fs::write(&file, names.join("\n") + "\n").unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Helper process for `concurrent_runs_do_not_collide`: builds nets one after another,
/// checks traffic in each, and records every namespace name it used.
#[test]
#[ignore = "helper process, started by concurrent_runs_do_not_collide"]
fn helper_busy_nets() {
    let Some(file) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let mut names = Vec::new();
    for _ in 0..3 {
        let net = Net::new(3).unwrap();
        for v6 in [false, true] {
            assert_eq!(udp_between(&net, 0, 2, v6, 10), 10);
        }
        assert!(net.namespaces().iter().all(|n| ns_exists(n)));
        names.extend(net.namespaces().iter().cloned());
    }
    std::fs::write(&file, names.join("\n") + "\n").unwrap();
}
