//! The stock-kernel VM, one boot for this whole file: its job runner reports guest
//! exit statuses faithfully, and the smoke test of the data path: an AES-GCM (rfc4106)
//! transport-mode ESP SA pair between two namespaces carries UDP, the SA counters rise,
//! and the link shows ESP and never the plaintext.
//!
//! The SAs here are installed with `ip xfrm`, in this one test only; the `xfrm` crate
//! replaces that in its own tests.

use ikemesh_testbed::capture::IPPROTO_ESP;
use ikemesh_testbed::vm::{self, Vm};
use ikemesh_testbed::{Host, Net};
use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[test]
fn shared_vm_reports_each_jobs_exit_status() {
    let vm = Vm::shared().unwrap();
    let fail = vm.run("echo before; exit 3", Duration::from_secs(60)).unwrap();
    assert_eq!((fail.status, fail.stdout.as_str()), (3, "before\n"));
    let ok = vm.run("uname -r", Duration::from_secs(60)).unwrap();
    assert!(ok.success());
    assert_eq!(ok.stdout.trim(), vm.kernel_release());
    let slow = vm.run("sleep 30", Duration::from_secs(1)).unwrap();
    assert_eq!(slow.status, 124, "a job over its time limit is killed and says so");
}

#[test]
fn a_panicking_guest_body_fails_on_the_host() {
    let vm = Vm::shared().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = vm
        .run(
            &format!(
                "export {}=1; exec '{}' --exact helper_panics_in_the_guest --include-ignored --test-threads=1",
                vm::IN_GUEST_ENV,
                exe.display()
            ),
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(out.status, 101, "libtest's failure status comes back\n{out:?}");
    assert!(out.stdout.contains("deliberate failure in the guest"), "{out:?}");
}

/// Helper for `a_panicking_guest_body_fails_on_the_host`.
#[test]
#[ignore = "helper, run inside the VM by a_panicking_guest_body_fails_on_the_host"]
fn helper_panics_in_the_guest() {
    assert!(!vm::in_guest(), "deliberate failure in the guest");
}

const DATAGRAMS: u32 = 20;
const PORT: u16 = 5555;
const MARKER: &[u8] = b"IKEMESH-PLAINTEXT-MARKER";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut buf).unwrap();
    buf.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Installs, on `host`, both SAs of the pair (they are per namespace) and the policies
/// that send `host`→`peer` traffic through ESP and require ESP on the way in.
fn install(
    host: &Host,
    peer: &Host,
    v6: bool,
    spi_out: u32,
    spi_in: u32,
    key_out: &str,
    key_in: &str,
) {
    let (me, them) = (host.addr(v6).to_string(), peer.addr(v6).to_string());
    let plen = if v6 { 128 } else { 32 };
    for (src, dst, spi, key) in [(&me, &them, spi_out, key_out), (&them, &me, spi_in, key_in)] {
        host.sh(&format!(
            "ip xfrm state add src {src} dst {dst} proto esp spi 0x{spi:08x} reqid {spi} \
             mode transport replay-window 32 aead 'rfc4106(gcm(aes))' 0x{key} 128"
        ))
        .unwrap();
    }
    for (dir, src, dst, spi) in [("out", &me, &them, spi_out), ("in", &them, &me, spi_in)] {
        host.sh(&format!(
            "ip xfrm policy add src {src}/{plen} dst {dst}/{plen} dir {dir} \
             tmpl src {src} dst {dst} proto esp reqid {spi} mode transport"
        ))
        .unwrap();
    }
}

/// Bytes and packets of one SA, read from `ip -s xfrm state get`.
fn sa_counters(host: &Host, src: &str, dst: &str, spi: u32) -> (u64, u64) {
    let text = host
        .sh(&format!("ip -s xfrm state get src {src} dst {dst} proto esp spi 0x{spi:08x}"))
        .unwrap();
    // "lifetime current:" is followed by "  N(bytes), M(packets)".
    let current =
        text.split("lifetime current:").nth(1).unwrap_or_else(|| panic!("no counters in:\n{text}"));
    let mut numbers = current
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn esp_transport_pair_carries_udp_and_the_link_shows_only_esp() {
    vm::guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        for (v6, base) in [(false, 0x100u32), (true, 0x200u32)] {
            let (k_ab, k_ba) = (random_hex(20), random_hex(20)); // AES-128 key + 4-byte salt
            install(a, b, v6, base + 1, base + 2, &k_ab, &k_ba);
            install(b, a, v6, base + 2, base + 1, &k_ba, &k_ab);
        }
        let capture = a.capture("eth0", "").unwrap();

        let mut received = [0u32; 2];
        for v6 in [false, true] {
            let dst = SocketAddr::new(b.addr(v6), PORT);
            let sink = b.enter(|| UdpSocket::bind(dst)).unwrap().unwrap();
            sink.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            a.enter(|| {
                let sock = UdpSocket::bind(SocketAddr::new(a.addr(v6), 0)).unwrap();
                for i in 0..DATAGRAMS {
                    let mut payload = MARKER.to_vec();
                    payload.extend_from_slice(format!(" #{i}").as_bytes());
                    sock.send_to(&payload, dst).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .unwrap();
            let mut buf = [0u8; 128];
            while let Ok((n, from)) = sink.recv_from(&mut buf) {
                assert_eq!(from.ip(), a.addr(v6));
                assert!(buf[..n].starts_with(MARKER), "decrypted payload is intact");
                received[usize::from(v6)] += 1;
                if received[usize::from(v6)] == DATAGRAMS {
                    break;
                }
            }
        }
        let frames = capture.stop().unwrap();

        let esp_v4 = frames.iter().filter(|f| f.is_esp() && !f.is_ipv6()).count();
        let esp_v6 = frames.iter().filter(|f| f.is_esp() && f.is_ipv6()).count();
        let plaintext = frames.iter().filter(|f| f.contains(MARKER)).count();
        let udp_to_port =
            frames.iter().filter(|f| f.udp_ports().is_some_and(|p| p.1 == PORT)).count();
        let mut counters = Vec::new();
        for (v6, base) in [(false, 0x100u32), (true, 0x200u32)] {
            let (ia, ib) = (a.addr(v6).to_string(), b.addr(v6).to_string());
            counters.push((
                if v6 { "IPv6" } else { "IPv4" },
                sa_counters(a, &ia, &ib, base + 1), // A's outbound SA
                sa_counters(b, &ia, &ib, base + 1), // the same SA, inbound on B
            ));
        }

        println!(
            "ESP smoke: sent {DATAGRAMS}+{DATAGRAMS} UDP datagrams (IPv4+IPv6), received {}+{}",
            received[0], received[1]
        );
        println!(
            "ESP smoke: link capture on A: {} frames, ESP (proto {IPPROTO_ESP}) IPv4 {esp_v4}, IPv6 {esp_v6}; \
             frames with the plaintext marker {plaintext}; UDP to port {PORT} {udp_to_port}",
            frames.len()
        );
        for (family, (out_bytes, out_packets), (in_bytes, in_packets)) in &counters {
            println!(
                "ESP smoke: {family} SA A->B counters: out on A {out_bytes} bytes / {out_packets} packets, \
                 in on B {in_bytes} bytes / {in_packets} packets"
            );
        }

        assert_eq!(received, [DATAGRAMS, DATAGRAMS], "every datagram arrived");
        assert!(
            esp_v4 >= DATAGRAMS as usize && esp_v6 >= DATAGRAMS as usize,
            "the link carried ESP"
        );
        assert_eq!(plaintext, 0, "the plaintext never crossed the link");
        assert_eq!(udp_to_port, 0, "no UDP to the service port crossed the link in the clear");
        for (family, (out_bytes, out_packets), (in_bytes, in_packets)) in counters {
            assert_eq!(out_packets, u64::from(DATAGRAMS), "{family} out packets");
            assert_eq!(in_packets, u64::from(DATAGRAMS), "{family} in packets");
            assert!(
                out_bytes > 0 && in_bytes == out_bytes,
                "{family} bytes {out_bytes} / {in_bytes}"
            );
        }
    });
}
