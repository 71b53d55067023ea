//! The xfrm crate on Debian's stock kernel, which has ESP, inside the test VM (one boot
//! for this file): traffic over SA pairs installed through our API, levels shown by
//! behaviour, EXPIRE and ACQUIRE events, and a lossless switch from `use` to `require`.

mod common;

use common::{block_on, level_of, netns, pair_policies, reqid, udp, xfrm_stat};
use ikemesh_testbed::vm::guest_test;
use ikemesh_testbed::{Host, Net};
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use xfrm::{
    Crypto, Encap, Event, Events, Groups, Key, Level, Lifetime, Mark, Mode, Policy, Sa, SaId, Xfrm,
};

fn random_key(len: usize) -> Key {
    let mut buf = vec![0u8; len];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut buf).unwrap();
    Key::new(buf)
}

fn gcm(key_len: usize) -> Crypto {
    Crypto::AesGcm16 { key: random_key(key_len) }
}

/// Installs, through our API, the SA pair between `a` and `b` on both hosts (SAs live
/// per namespace) and the policies at `level`; returns the A->B and B->A SA IDs.
#[allow(clippy::too_many_arguments)]
fn install_pair(
    (xa, xb): (&mut Xfrm, &mut Xfrm),
    a: &Host,
    b: &Host,
    v6: bool,
    level: Level,
    crypto: impl Fn() -> Crypto,
    esn: bool,
    spi_base: u32,
) -> (SaId, SaId) {
    let (ia, ib) = (a.addr(v6), b.addr(v6));
    let (r_ab, r_ba) = (reqid(spi_base), reqid(spi_base + 1));
    let (c_ab, c_ba) = (crypto(), crypto());
    let mut ab = Sa::transport(ia, ib, spi_base, r_ab, c_ab);
    let mut ba = Sa::transport(ib, ia, spi_base + 1, r_ba, c_ba);
    ab.esn = esn;
    ba.esn = esn;
    for x in [&mut *xa, &mut *xb] {
        for r in x.add_sas(&[ab.clone(), ba.clone()]).unwrap() {
            r.unwrap();
        }
    }
    for r in xa.add_policies(&pair_policies(ia, ib, level, r_ab, r_ba)).unwrap() {
        r.unwrap();
    }
    for r in xb.add_policies(&pair_policies(ib, ia, level, r_ba, r_ab)).unwrap() {
        r.unwrap();
    }
    (ab.id(), ba.id())
}

const MARKER: &[u8] = b"IKEMESH-XFRM-PLAINTEXT";

#[test]
fn sa_pairs_carry_traffic_counters_rise_and_the_link_shows_only_esp() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let mut xa = Xfrm::open_in(&netns(a)).unwrap();
        let mut xb = Xfrm::open_in(&netns(b)).unwrap();
        // IPv4: AES-GCM-128 without ESN; IPv6: AES-GCM-256 with ESN.
        let v4 = install_pair(
            (&mut xa, &mut xb),
            a,
            b,
            false,
            Level::Require,
            || gcm(20),
            false,
            0x1000,
        );
        let v6 =
            install_pair((&mut xa, &mut xb), a, b, true, Level::Require, || gcm(36), true, 0x2000);
        let capture = a.capture("eth0", "").unwrap();
        let got = [udp(a, b, false, 5001, 30, MARKER), udp(a, b, true, 5001, 30, MARKER)];
        let frames = capture.stop().unwrap();
        let esp = frames.iter().filter(|f| f.is_esp()).count();
        let plain = frames.iter().filter(|f| f.contains(MARKER)).count();
        let udp_frames = frames.iter().filter(|f| f.udp_ports().is_some()).count();
        println!(
            "xfrm SA pairs: received {}+{} of 30+30; link: {} frames, {esp} ESP, {udp_frames} UDP, {plain} with plaintext",
            got[0],
            got[1],
            frames.len()
        );
        assert_eq!(got, [30, 30]);
        assert_eq!((plain, udp_frames), (0, 0), "only ESP on the link");
        assert!(esp >= 60);
        for (family, (ab, _), esn) in [("IPv4", v4, false), ("IPv6", v6, true)] {
            let out = xa.get_sa(&ab).unwrap();
            let inb = xb.get_sa(&ab).unwrap();
            println!(
                "xfrm counters {family} A->B: out on A {} bytes / {} packets, in on B {} bytes / {} packets, {} esn={}",
                out.bytes, out.packets, inb.bytes, inb.packets, out.algorithm, out.esn
            );
            assert_eq!((out.packets, inb.packets), (30, 30), "{family}");
            assert!(out.bytes > 0 && out.bytes == inb.bytes, "{family}");
            assert_eq!(
                (out.esn, out.algorithm.as_str(), out.reqid),
                (esn, "rfc4106(gcm(aes))", reqid(ab.spi))
            );
            assert!(out.is_ours() && inb.replay_drops == 0 && inb.integrity_failures == 0);
        }
        // dump sees all eight SAs (four per host), all ours.
        assert_eq!(xa.dump_sas().unwrap().iter().filter(|s| s.is_ours()).count(), 4);
    });
}

#[test]
fn authenc_cbc_sha256_pairs_carry_traffic() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let mut xa = Xfrm::open_in(&netns(a)).unwrap();
        let mut xb = Xfrm::open_in(&netns(b)).unwrap();
        let cbc = || Crypto::AesCbcHmacSha256 { enc_key: random_key(32), auth_key: random_key(32) };
        let (ab, _) =
            install_pair((&mut xa, &mut xb), a, b, false, Level::Require, cbc, false, 0x3000);
        assert_eq!(udp(a, b, false, 5002, 10, MARKER), 10);
        let out = xa.get_sa(&ab).unwrap();
        println!("xfrm authenc pair: {} packets, {}", out.packets, out.algorithm);
        assert_eq!(out.packets, 10);
        assert_eq!(out.algorithm, "cbc(aes)+hmac(sha256)");
    });
}

/// Policies at `level` between hosts 0 and 1, no SAs; an ACQUIRE subscription on A.
fn no_sa_setup(net: &Net, level: Level, reqids: (u32, u32)) -> (Xfrm, Xfrm) {
    let (a, b) = (net.host(0), net.host(1));
    let mut xa = Xfrm::open_in(&netns(a)).unwrap();
    let mut xb = Xfrm::open_in(&netns(b)).unwrap();
    let (ia, ib) = (a.ipv4().into(), b.ipv4().into());
    for r in xa.add_policies(&pair_policies(ia, ib, level, reqids.0, reqids.1)).unwrap() {
        r.unwrap();
    }
    for r in xb.add_policies(&pair_policies(ib, ia, level, reqids.1, reqids.0)).unwrap() {
        r.unwrap();
    }
    (xa, xb)
}

fn acquire_events(host: &Host) -> Events {
    Events::open_in(&netns(host), Groups { acquire: true, ..Groups::NONE }).unwrap()
}

// The kernel keeps a larval SA for about 30 s after an ACQUIRE and sends no second one
// for the same template meanwhile, so each level gets hosts and reqids of its own.

#[test]
fn level_use_without_an_sa_passes_plaintext_and_asks_for_one() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let _x = no_sa_setup(&net, Level::Use, (reqid(0x41), reqid(0x42)));
        block_on(async {
            let mut events = acquire_events(a);
            let capture = a.capture("eth0", "udp").unwrap();
            let got = udp(a, b, false, 5003, 10, MARKER);
            let plain = capture.stop().unwrap().iter().filter(|f| f.contains(MARKER)).count();
            let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
            println!(
                "xfrm level use without SA: {got}/10 arrived, {plain} plaintext frames on the link; {event:?}"
            );
            assert_eq!((got, plain), (10, 10));
            let event = event.expect("an ACQUIRE under use").unwrap();
            assert!(
                matches!(event, Event::Acquire { template: Some(t), .. } if t.reqid == reqid(0x41) && t.level == Level::Use),
                "{event:?}"
            );
        });
    });
}

#[test]
fn level_require_without_an_sa_drops_and_asks_for_one() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let (ia, ib) = (a.ipv4().into(), b.ipv4().into());
        let _x = no_sa_setup(&net, Level::Require, (reqid(0x43), reqid(0x44)));
        block_on(async {
            let mut events = acquire_events(a);
            let capture = a.capture("eth0", "udp or esp").unwrap();
            let got = udp(a, b, false, 5004, 5, MARKER);
            let on_link = capture.stop().unwrap().len();
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an ACQUIRE under require")
                .unwrap();
            println!(
                "xfrm level require without SA: {got}/5 arrived, {on_link} UDP/ESP frames on the link; {event:?}"
            );
            assert_eq!((got, on_link), (0, 0), "nothing flows");
            match event {
                Event::Acquire { template: Some(t), selector, policy_priority, .. } => {
                    assert_eq!(
                        (t.src, t.dst, t.reqid, t.level),
                        (ia, ib, reqid(0x43), Level::Require)
                    );
                    assert_eq!(
                        (selector.src.addr(), selector.dst.addr(), selector.dst_port),
                        (ia, ib, Some(5004))
                    );
                    assert!(xfrm::is_owned_priority(policy_priority));
                }
                other => panic!("expected an ACQUIRE with a template, got {other:?}"),
            }
        });
    });
}

#[test]
fn a_short_soft_lifetime_produces_a_soft_expire_event() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let mut xa = Xfrm::open_in(&netns(a)).unwrap();
        block_on(async {
            let mut events =
                Events::open_in(&netns(a), Groups { expire: true, ..Groups::NONE }).unwrap();
            let mut sa =
                Sa::transport(a.ipv6().into(), b.ipv6().into(), 0x5000, reqid(0x50), gcm(20));
            sa.lifetime =
                Lifetime { soft_seconds: Some(1), hard_seconds: Some(120), ..Lifetime::default() };
            xa.add_sa(&sa).unwrap();
            let start = Instant::now();
            let event = tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .expect("no EXPIRE in 20 s")
                .unwrap();
            println!(
                "xfrm soft lifetime 1 s: {event:?} after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            assert_eq!(event, Event::Expire { sa: sa.id(), reqid: sa.reqid, hard: false });
            // Soft: the SA is still there.
            assert!(xa.get_sa(&sa.id()).is_ok());
        });
    });
}

#[test]
fn switching_use_to_require_under_traffic_loses_no_packet() {
    guest_test(|| {
        const COUNT: u32 = 1500;
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let mut xa = Xfrm::open_in(&netns(a)).unwrap();
        let mut xb = Xfrm::open_in(&netns(b)).unwrap();
        install_pair((&mut xa, &mut xb), a, b, false, Level::Use, || gcm(20), true, 0x6000);
        let (ia, ib) = (a.ipv4().into(), b.ipv4().into());
        let on_a: Vec<Policy> = pair_policies(ia, ib, Level::Use, 0, 0).to_vec();
        let on_b: Vec<Policy> = pair_policies(ib, ia, Level::Use, 0, 0).to_vec();
        let stats = |h: &Host| {
            [
                "XfrmInNoStates",
                "XfrmOutNoStates",
                "XfrmInTmplMismatch",
                "XfrmOutPolBlock",
                "XfrmInNoPols",
            ]
            .map(|n| xfrm_stat(h, n))
        };
        let before = (stats(a), stats(b));

        let dst = SocketAddr::new(b.ipv4().into(), 5005);
        let sink = b.enter(|| UdpSocket::bind(dst)).unwrap().unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let sent = AtomicU32::new(0);
        let mut switched_at = 0;
        let mut seen = vec![false; COUNT as usize];
        std::thread::scope(|s| {
            s.spawn(|| {
                a.enter(|| {
                    let sock = UdpSocket::bind(SocketAddr::new(a.ipv4().into(), 0)).unwrap();
                    for i in 0..COUNT {
                        sock.send_to(&i.to_be_bytes(), dst).unwrap();
                        sent.store(i + 1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(500));
                    }
                })
                .unwrap();
            });
            s.spawn(|| {
                let mut buf = [0u8; 16];
                while let Ok((n, _)) = sink.recv_from(&mut buf) {
                    if n == 4 {
                        seen[u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize] = true;
                    }
                }
            });
            while sent.load(Ordering::SeqCst) < COUNT / 3 {
                std::thread::sleep(Duration::from_millis(1));
            }
            switched_at = sent.load(Ordering::SeqCst);
            for p in &on_a {
                xa.set_level(&p.id(), Level::Require).unwrap();
            }
            for p in &on_b {
                xb.set_level(&p.id(), Level::Require).unwrap();
            }
            assert!(
                sent.load(Ordering::SeqCst) < COUNT,
                "the switch finished while traffic still flowed"
            );
        });
        let received = seen.iter().filter(|s| **s).count();
        let after = (stats(a), stats(b));
        println!(
            "xfrm use->require under traffic: switched after datagram {switched_at} of {COUNT}; received {received}/{COUNT}; \
             XFRM drop counters (InNoStates, OutNoStates, InTmplMismatch, OutPolBlock, InNoPols) A {:?}->{:?}, B {:?}->{:?}",
            before.0, after.0, before.1, after.1
        );
        assert!(switched_at > 0 && switched_at < COUNT);
        assert_eq!(
            received,
            COUNT as usize,
            "lost: {:?}",
            seen.iter()
                .enumerate()
                .filter(|(_, s)| !**s)
                .map(|(i, _)| i)
                .take(20)
                .collect::<Vec<_>>()
        );
        assert_eq!(before, after, "no XFRM drop counter moved");
        for p in &on_a {
            assert_eq!(level_of(xa.get_policy(&p.id()).unwrap().action), Some(Level::Require));
        }
    });
}

#[test]
fn flush_ours_leaves_foreign_sas_and_variants_read_back() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let mut xa = Xfrm::open_in(&netns(a)).unwrap();
        // An SA of someone else's, added with ip xfrm.
        a.sh(&format!(
            "ip xfrm state add src {} dst {} proto esp spi 0x7777 reqid 5 mode transport aead 'rfc4106(gcm(aes))' 0x{} 128",
            a.ipv4(), b.ipv4(), "11".repeat(20)
        ))
        .unwrap();
        // Ours, in several shapes: tunnel mode, UDP encapsulation, a mark, limits.
        let (ia, ib) = (a.ipv4().into(), b.ipv4().into());
        let mut tunnel = Sa::transport(ia, ib, 0x7001, reqid(0x70), gcm(36));
        tunnel.mode = Mode::Tunnel;
        let mut natt = Sa::transport(ia, ib, 0x7002, reqid(0x71), gcm(20));
        natt.encap = Some(Encap { sport: 4500, dport: 4500 });
        let mut marked = Sa::transport(ia, ib, 0x7003, reqid(0x72), gcm(20));
        marked.mark = Some(Mark { value: 0x42, mask: 0xff });
        marked.lifetime = Lifetime {
            soft_bytes: Some(1 << 30),
            hard_bytes: Some(2 << 30),
            soft_packets: Some(1 << 20),
            hard_packets: Some(2 << 20),
            ..Lifetime::default()
        };
        for sa in [&tunnel, &natt, &marked] {
            xa.add_sa(sa).unwrap();
            let got = xa.get_sa(&sa.id()).unwrap();
            assert_eq!((got.id, got.mode, got.reqid), (sa.id(), sa.mode, sa.reqid));
        }
        assert!(matches!(xa.add_sa(&natt), Err(xfrm::Error::Exists { .. })));
        xa.update_sa(&natt).unwrap();
        let shown = a.run(&["ip", "xfrm", "state"]).unwrap();
        assert!(shown.contains("encap type espinudp sport 4500 dport 4500"), "{shown}");
        assert!(shown.contains("mark 0x42/0xff") && shown.contains("mode tunnel"), "{shown}");

        let flushed = xa.flush_ours().unwrap();
        let left = xa.dump_sas().unwrap();
        println!(
            "xfrm flush_ours: removed {} SAs, left {:?}",
            flushed.sas,
            left.iter().map(|s| (s.id.spi, s.reqid)).collect::<Vec<_>>()
        );
        assert_eq!(flushed.sas, 3);
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].id.spi, left[0].reqid), (0x7777, 5));
    });
}

#[test]
fn the_probe_on_a_stock_kernel_finds_esp_and_gcm() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let mut x = Xfrm::open_in(&netns(net.host(0))).unwrap();
        let caps = x.probe().unwrap();
        println!("probe on the stock kernel: {}", caps.summary());
        assert!(caps.esp_ready(), "{caps:?}");
        assert!(caps.problem().is_none());
        assert!(caps.has(xfrm::AUTHENC_CBC_SHA256));
        assert!(x.dump_sas().unwrap().is_empty(), "the probe leaves nothing behind");
    });
}

#[test]
fn sa_events_arrive_for_adds_updates_and_deletes() {
    guest_test(|| {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let mut xa = Xfrm::open_in(&netns(a)).unwrap();
        block_on(async {
            let mut events =
                Events::open_in(&netns(a), Groups { sa: true, ..Groups::NONE }).unwrap();
            let sa = Sa::transport(a.ipv4().into(), b.ipv4().into(), 0x8000, reqid(0x80), gcm(20));
            xa.add_sa(&sa).unwrap();
            xa.update_sa(&sa).unwrap();
            xa.delete_sa(&sa.id()).unwrap();
            let mut seen = Vec::new();
            while seen.len() < 3 {
                let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                    .await
                    .unwrap_or_else(|_| panic!("only {seen:?}"))
                    .unwrap();
                seen.push(event);
            }
            println!(
                "xfrm SA events: {:?}",
                seen.iter()
                    .map(|e| match e {
                        Event::SaAdded(_) => "added",
                        Event::SaUpdated(_) => "updated",
                        Event::SaDeleted { .. } => "deleted",
                        _ => "other",
                    })
                    .collect::<Vec<_>>()
            );
            assert!(
                matches!(&seen[0], Event::SaAdded(s) if s.id == sa.id() && s.reqid == sa.reqid)
            );
            assert!(matches!(&seen[1], Event::SaUpdated(s) if s.id == sa.id()));
            assert!(
                matches!(&seen[2], Event::SaDeleted { sa: id, reqid: Some(r) } if id.spi == sa.spi && id.dst == sa.dst && *r == sa.reqid)
            );
        });
    });
}
