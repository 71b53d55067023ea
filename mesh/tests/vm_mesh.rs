//! The mesh end to end on a stock kernel (Debian's, in the test VM): ESP on the wire,
//! live joins and leaves, the rollout under load, a daemon killed with SIGKILL, a CA rotation.
//! Every test runs in one VM boot (see `ikemesh_testbed::vm`).

mod common;

use common::{Mesh, Options, TcpStream, UdpLoop, meshctl, wait_for};
use ikemesh_testbed::vm::guest_test_with_timeout;
use std::time::Duration;

const VM_TIMEOUT: Duration = Duration::from_secs(600);

/// One mesh test at a time: each runs several daemons and traffic loops, and two at
/// once on the emulated VM's two CPUs slow both past their timers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `body` in the VM, after any other test of this file.
fn vm_test(body: impl FnOnce()) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guest_test_with_timeout(VM_TIMEOUT, body);
}
const CONVERGE: Duration = Duration::from_secs(90);

fn dns_exclusion() -> String {
    "\n[[mesh.exclusions]]\nname = \"dns\"\nprotocol = \"udp\"\nport = 53\n".into()
}

/// One second of host `i`'s link. A capture whose tcpdump bookkeeping fails under the
/// emulated VM's load (it lost a frame, or its counts went missing) is taken again, up
/// to three times: the frames asserted on are always a complete capture.
fn capture_a_while(m: &Mesh, i: usize, filter: &str) -> Vec<ikemesh_testbed::Frame> {
    let mut last = None;
    for _ in 0..3 {
        let cap = m.host(i).capture("eth0", filter).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        match cap.stop() {
            Ok(frames) => return frames,
            Err(e) => {
                eprintln!("capture on {} failed, taken again: {e}", m.nodes[i].name);
                last = Some(e);
            }
        }
    }
    panic!("three captures failed, the last: {last:?}");
}

/// XFRM state and policies of host `i`, as `ip` lists them.
fn xfrm(m: &Mesh, i: usize) -> String {
    let s = m.host(i).run(&["ip", "xfrm", "state"]).unwrap_or_default();
    let p = m.host(i).run(&["ip", "xfrm", "policy"]).unwrap_or_default();
    format!("{s}\n{p}")
}

/// Every pair of nodes `0..n`: UDP both ways, captured on the sender's link, is ESP, and
/// UDP to port 53 (excluded) stays in the clear; the byte counters moved.
#[allow(clippy::print_stdout)] // a test's helper: what it saw is the test's output
fn esp_between_every_pair_and_dns_in_the_clear(m: &Mesh, n: usize) {
    // Every pair: UDP both ways, captured on the sender's link.
    for i in 0..n {
        let cap = m.host(i).capture("eth0", "esp or udp port 7777 or udp port 53").unwrap();
        for j in 0..n {
            if i != j {
                let got = m
                    .host(i)
                    .udp_to(m.host(j), false, 7777, 3, b"mesh-secret", Duration::from_millis(20))
                    .unwrap();
                assert_eq!(
                    got,
                    3,
                    "{} -> {}: datagrams lost{}",
                    m.nodes[i].name,
                    m.nodes[j].name,
                    m.report(&[i, j])
                );
            }
        }
        let dns = m
            .host(i)
            .udp_to(m.host((i + 1) % n), false, 53, 3, b"dns-query", Duration::from_millis(20))
            .unwrap();
        assert_eq!(dns, 3, "DNS datagrams lost");
        let frames = cap.stop().unwrap();
        let esp = frames.iter().filter(|f| f.is_esp()).count();
        let clear = frames.iter().filter(|f| f.contains(b"mesh-secret")).count();
        let dns_clear = frames.iter().filter(|f| f.contains(b"dns-query")).count();
        println!(
            "{}: {esp} ESP frames, {clear} plaintext of the protected traffic, {dns_clear} DNS in the clear",
            m.nodes[i].name
        );
        assert!(esp >= 9, "{}: expected ESP for every pair, saw {esp}", m.nodes[i].name);
        assert_eq!(clear, 0, "{}: protected traffic in the clear", m.nodes[i].name);
        assert_eq!(
            dns_clear, 3,
            "{}: the excluded DNS port should stay in the clear",
            m.nodes[i].name
        );
    }
    // Byte counters moved.
    let s = m.status(0);
    assert!(s.peers.iter().all(|p| p.bytes_out > 0 && p.bytes_in > 0), "{s:?}");
}

/// Node `i` gets its certificate by enrollment: node-1 runs the CA's enrollment service
/// (`meshctl ca serve`), node `i` redeems a join token (`meshctl enroll`).
fn enroll(m: &Mesh, i: usize) {
    let node = m.nodes[i].clone();
    let a0 = m.nodes[0].addr;
    let ca = m.ca.to_str().unwrap().to_owned();
    let token = meshctl(&["ca", "token", "--dir", &ca, "--name", &node.name]);
    let token =
        token.lines().find(|l| l.starts_with("ikm1.")).expect("a join token").trim().to_owned();
    let listen = format!("{a0}:8443");
    let _service = m
        .host(0)
        .spawn(&[
            common::MESHCTL,
            "ca",
            "serve",
            "--dir",
            &ca,
            "--listen",
            &listen,
            "--service-name",
            "enroll.test",
        ])
        .unwrap();
    let key = node.dir.join("node.key");
    let cert = node.dir.join("node.pem");
    let bundle = m.dir.path().join("ca.pem");
    wait_for(
        Duration::from_secs(30),
        || {
            m.host(i)
                .command(common::MESHCTL)
                .args([
                    "enroll",
                    "--server",
                    &listen,
                    "--service-name",
                    "enroll.test",
                    "--token",
                    &token,
                    "--name",
                    &node.name,
                ])
                .args([
                    "--key",
                    key.to_str().unwrap(),
                    "--cert",
                    cert.to_str().unwrap(),
                    "--ca",
                    bundle.to_str().unwrap(),
                    "--force",
                ])
                .output()
                .is_ok_and(|o| o.status.success())
        },
        || format!("enrollment of {} failed", node.name),
    );
}

/// Four nodes converge from their configurations alone; then a fifth joins live and
/// leaves again. (One test, so the VM brings the four up once.)
#[test]
fn four_nodes_converge_with_esp_and_dns_in_the_clear_then_a_fifth_joins_and_leaves() {
    vm_test(|| {
        let mut m = Mesh::new(
            5,
            Options {
                level: "require",
                members: Some(4),
                extra: dns_exclusion(),
                ..Options::default()
            },
        );
        // node-5 gets its certificate by enrollment, not from the fixture.
        let n5 = m.nodes[4].clone();
        std::fs::remove_file(n5.dir.join("node.key")).unwrap();
        std::fs::remove_file(n5.dir.join("node.pem")).unwrap();
        m.start_all();
        m.wait_converged(&[0, 1, 2, 3], "require", CONVERGE);
        println!("converged:\n{}", m.ctl_ok(0, &["status"]));
        esp_between_every_pair_and_dns_in_the_clear(&m, 4);

        // node-5 joins: the pair node-1/node-2 keeps talking throughout.
        let (a0, a1) = (m.nodes[0].addr, m.nodes[1].addr);
        let udp = UdpLoop::start(m.host(0), m.host(1), a1, a0, 7001);
        let tcp = TcpStream::start(m.host(0), m.host(1), a1, 7002);

        enroll(&m, 4);
        m.start(4);
        let addr5 = n5.addr.to_string();
        for i in 0..4 {
            let out = m.ctl_ok(i, &["peer", "add", &n5.name, &addr5]);
            assert!(out.contains("node-5"), "{out}");
        }
        m.wait_converged(&[0, 1, 2, 3, 4], "require", CONVERGE);
        let got = m
            .host(4)
            .udp_to(m.host(2), false, 7777, 3, b"joined", Duration::from_millis(20))
            .unwrap();
        assert_eq!(got, 3);

        // node-5 leaves: every other node drops its SAs, policies and pinhole.
        for i in 0..4 {
            m.ctl_ok(i, &["peer", "rm", &n5.name]);
        }
        for i in 0..4 {
            let x = xfrm(&m, i);
            assert!(
                !x.contains(&addr5),
                "{}: kernel entries for the removed node left:\n{x}",
                m.nodes[i].name
            );
            let nft = m.host(i).run(&["nft", "list", "table", "inet", "ikemesh"]).unwrap();
            assert!(!nft.contains(&addr5), "{}: pinhole left:\n{nft}", m.nodes[i].name);
        }
        let udp = udp.stop();
        let tcp = tcp.stop();
        println!(
            "existing pair during join and leave: UDP {}/{} answered, TCP {} chunks",
            udp.answered, udp.sent, tcp.answered
        );
        assert!(udp.failures.is_empty(), "UDP failures: {:?}", udp.failures);
        assert!(tcp.failures.is_empty(), "TCP failures: {:?}", tcp.failures);
        assert!(m.converged(&[0, 1, 2, 3], "require"), "{}", m.report(&[0, 1, 2, 3]));
    });
}

#[test]
fn rollout_off_use_require_and_back_under_load_shuts_out_non_members() {
    vm_test(|| {
        let extra =
            "\n[[mesh.networks]]\nname = \"lan\"\nprefixes = [\"10.77.0.0/24\"]\n".to_owned();
        // node-4 is in the protected network but not a member.
        let mut m =
            Mesh::new(4, Options { level: "off", members: Some(3), extra, ..Options::default() });
        for i in 0..3 {
            m.start(i);
        }
        m.wait_converged(&[0, 1, 2], "off", CONVERGE);
        let (a0, a1) = (m.nodes[0].addr, m.nodes[1].addr);
        let udp = UdpLoop::start(m.host(0), m.host(1), a1, a0, 7001);
        let tcp = TcpStream::start(m.host(0), m.host(1), a1, 7002);
        let outsider = |m: &Mesh| {
            m.host(3)
                .udp_to(m.host(0), false, 7003, 2, b"outsider", Duration::from_millis(10))
                .unwrap()
                + m.host(0)
                    .udp_to(m.host(3), false, 7004, 2, b"to-outsider", Duration::from_millis(10))
                    .unwrap()
        };
        assert_eq!(outsider(&m), 4, "at off the outsider talks to members");
        for level in ["use", "require", "use", "off"] {
            for i in 0..3 {
                m.ctl_ok(i, &["rollout", "set", level]);
            }
            m.wait_converged(&[0, 1, 2], level, CONVERGE);
            let st = m.ctl_ok(0, &["rollout", "status"]);
            println!("at {level}:\n{st}");
            std::thread::sleep(Duration::from_secs(2));
            let reach = outsider(&m);
            if level == "require" {
                assert_eq!(
                    reach, 0,
                    "a non-member inside the protected network reached a member at require"
                );
                let frames = capture_a_while(&m, 0, "esp or udp port 7001");
                assert!(
                    frames.iter().all(ikemesh_testbed::Frame::is_esp),
                    "plaintext between members at require"
                );
                assert!(!frames.is_empty());
            } else {
                assert_eq!(reach, 4, "at {level} the outsider is not shut out");
            }
        }
        let udp = udp.stop();
        let tcp = tcp.stop();
        println!(
            "through off->use->require->use->off: UDP {}/{} answered, TCP {} chunks",
            udp.answered, udp.sent, tcp.answered
        );
        assert!(udp.failures.is_empty(), "UDP failures: {:?}", udp.failures);
        assert!(tcp.failures.is_empty(), "TCP failures: {:?}", tcp.failures);
        assert!(udp.answered > 50 && tcp.answered > 50);
    });
}

#[test]
fn kill_9_keeps_traffic_flowing_and_the_restart_adopts_kernel_state() {
    vm_test(|| {
        let ike =
            "retransmit_base = \"1s\"\nliveness = \"5s\"\nchild_rekey = \"40s\"\njitter = 0\n"
                .to_owned();
        let mut m = Mesh::new(2, Options { level: "require", ike, ..Options::default() });
        m.start_all();
        m.wait_converged(&[0, 1], "require", CONVERGE);
        let (a0, a1) = (m.nodes[0].addr, m.nodes[1].addr);
        let udp = UdpLoop::start(m.host(0), m.host(1), a1, a0, 7001);
        std::thread::sleep(Duration::from_secs(1));
        let child = m.peer(1, 0).and_then(|p| p.child).expect("a child SA");
        m.kill9(1);
        std::thread::sleep(Duration::from_secs(3));
        let during = xfrm(&m, 1);
        for spi in [child.spi_in, child.spi_out] {
            assert!(
                during.contains(&format!("spi {spi:#010x}")),
                "SA {spi:#010x} gone with the daemon dead:\n{during}"
            );
        }
        m.start(1);
        assert!(m.log(1).contains("adopted child SAs"), "no adoption in the log:\n{}", m.log(1));
        m.wait_converged(&[0, 1], "require", CONVERGE);
        // The next rekey succeeds.
        wait_for(
            Duration::from_secs(90),
            || m.peer(1, 0).is_some_and(|p| p.last_rekey.is_some()),
            || m.report(&[0, 1]),
        );
        let udp = udp.stop();
        println!("through kill -9, restart and rekey: UDP {}/{} answered", udp.answered, udp.sent);
        assert!(udp.failures.is_empty(), "UDP failures: {:?}", udp.failures);
        let after = xfrm(&m, 1);
        assert!(after.matches("proto esp").count() >= 2, "{after}");
    });
}

#[test]
fn ca_rotation_at_require_driven_by_meshctl_fails_no_connection() {
    vm_test(|| {
        let mut m = Mesh::new(3, Options { level: "require", ..Options::default() });
        m.start_all();
        m.wait_converged(&[0, 1, 2], "require", CONVERGE);
        let (a0, a1) = (m.nodes[0].addr, m.nodes[1].addr);
        let udp = UdpLoop::start(m.host(0), m.host(1), a1, a0, 7001);
        let tcp = TcpStream::start(m.host(0), m.host(1), a1, 7002);
        let ca = m.ca.to_str().unwrap().to_owned();
        let reload_all = |m: &Mesh| {
            for i in 0..3 {
                m.ctl_ok(i, &["reload"]);
            }
            m.wait_converged(&[0, 1, 2], "require", CONVERGE);
            std::thread::sleep(Duration::from_secs(3));
        };
        // 1. Trust the new CA everywhere first.
        meshctl(&["ca", "rotate", "--dir", &ca, "--stage"]);
        m.write_bundle();
        reload_all(&m);
        // 2. Issue from the new CA, node by node.
        meshctl(&["ca", "rotate", "--dir", &ca]);
        for i in 0..3 {
            let node = m.nodes[i].clone();
            m.issue(&node);
            m.ctl_ok(i, &["reload"]);
        }
        m.wait_converged(&[0, 1, 2], "require", CONVERGE);
        std::thread::sleep(Duration::from_secs(3));
        // 3. Drop the old CA.
        meshctl(&["ca", "rotate", "--dir", &ca, "--drop-old"]);
        m.write_bundle();
        reload_all(&m);
        let udp = udp.stop();
        let tcp = tcp.stop();
        println!(
            "through the CA rotation: UDP {}/{} answered, TCP {} chunks",
            udp.answered, udp.sent, tcp.answered
        );
        assert!(udp.failures.is_empty(), "UDP failures: {:?}", udp.failures);
        assert!(tcp.failures.is_empty(), "TCP failures: {:?}", tcp.failures);
        let show = meshctl(&["ca", "show", "--dir", &ca, "-o", "json"]);
        println!("{show}");
    });
}

#[test]
fn on_demand_peers_get_an_sa_when_traffic_asks_for_one() {
    vm_test(|| {
        let ike = "retransmit_base = \"1s\"\nliveness = \"5s\"\non_demand = true\n".to_owned();
        let mut m = Mesh::new(3, Options { level: "use", ike, ..Options::default() });
        m.start_all();
        std::thread::sleep(Duration::from_secs(5));
        for i in 0..3 {
            let s = m.status(i);
            assert!(
                s.peers.iter().all(|p| p.ike == "down" && p.child.is_none()),
                "an SA without traffic: {s:?}"
            );
        }
        // Traffic from node-1 to node-2 only: at `use` the first datagrams go in the
        // clear while the kernel's ACQUIRE brings the SA up.
        m.host(0)
            .udp_to(m.host(1), false, 7777, 3, b"wake-up", Duration::from_millis(100))
            .unwrap();
        m.wait_converged(&[0, 1], "use", CONVERGE);
        let cap = m.host(0).capture("eth0", "esp or udp port 7777").unwrap();
        let got = m
            .host(0)
            .udp_to(m.host(1), false, 7777, 3, b"on-demand", Duration::from_millis(20))
            .unwrap();
        let frames = cap.stop().unwrap();
        assert_eq!(got, 3);
        assert!(frames.iter().any(ikemesh_testbed::Frame::is_esp), "no ESP once the SA is up");
        assert!(!frames.iter().any(|f| f.contains(b"on-demand")), "plaintext once the SA is up");
        // node-3 carried no traffic: still no SA with it.
        let s = m.status(2);
        assert!(s.peers.iter().all(|p| p.ike == "down"), "node-3 got SAs without traffic: {s:?}");
    });
}

#[test]
fn sigterm_leaves_kernel_state_by_default_and_flushes_when_configured() {
    vm_test(|| {
        let daemon = vec![String::new(), "on_stop = \"flush\"\n".to_owned()];
        let mut m = Mesh::new(2, Options { level: "require", daemon, ..Options::default() });
        m.start_all();
        m.wait_converged(&[0, 1], "require", CONVERGE);
        let child = m.peer(0, 1).and_then(|p| p.child).expect("a child SA");
        // node-1 keeps: its SAs, policies and pinhole table stay for a restart to adopt
        // (and it sends no delete, so node-2 keeps its SAs too).
        m.stop(0);
        let keeps = |m: &Mesh| {
            let x = xfrm(m, 0);
            for spi in [child.spi_in, child.spi_out] {
                assert!(
                    x.contains(&format!("spi {spi:#010x}")),
                    "SA {spi:#010x} gone after a keeping stop:\n{x}"
                );
            }
            assert!(
                m.host(0).run(&["nft", "list", "table", "inet", "ikemesh"]).is_ok(),
                "pinhole table gone"
            );
        };
        keeps(&m);
        // node-2 flushes: no SA, policy or pinhole table of ours is left there.
        m.stop(1);
        let x = xfrm(&m, 1);
        assert!(!x.contains("proto esp"), "SAs left after a flushing stop:\n{x}");
        assert!(
            !x.contains(&m.nodes[0].addr.to_string()),
            "policies left after a flushing stop:\n{x}"
        );
        assert!(
            m.host(1).run(&["nft", "list", "table", "inet", "ikemesh"]).is_err(),
            "pinhole table left"
        );
        assert!(m.log(1).contains("our SAs and policies removed"), "{}", m.log(1));
        // Its deletes reached no daemon on node-1: the kernel state there is as it was.
        keeps(&m);
    });
}
