//! SPA packets and the gatekeeper: sealing, every refusal, replay across a restart, the
//! rate limit, how random the packets look, and a flood of random datagrams.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use policy::spa::{
    Access, Admitted, DATAGRAM_LEN, GateConfig, Gatekeeper, Knock, MAX_NODE_ID, Rejected, SpaError,
    SpaKeys, os_random, seal,
};

const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn keys() -> SpaKeys {
    SpaKeys::new(SECRET, None).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn knock(addr: &str) -> Knock {
    Knock { node_id: "node-a".into(), access: Access::Ike, addr: ip(addr) }
}

/// A fixed "now", well after the epoch.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn sealed(k: &Knock, now: SystemTime) -> Vec<u8> {
    seal(&keys(), k, now, &mut os_random).unwrap()
}

/// No rate limit to speak of: for tests about the other checks.
fn open_cfg() -> GateConfig {
    GateConfig { per_source_rate: (1_000_000, Duration::from_secs(1)), ..GateConfig::default() }
}

fn gate(cfg: GateConfig) -> Gatekeeper {
    Gatekeeper::new_at(keys(), cfg, t0()).unwrap()
}

#[test]
fn round_trip_v4_and_v6() {
    let mut g = gate(open_cfg());
    for addr in ["10.77.0.1", "fd77::1"] {
        let d = sealed(&knock(addr), t0());
        let a = g.check(&d, ip(addr), t0()).unwrap();
        assert_eq!(
            a,
            Admitted {
                node_id: "node-a".into(),
                access: Access::Ike,
                addr: ip(addr),
                claimed: ip(addr)
            }
        );
    }
    // A dual-stack socket reports an IPv4 source as IPv4-mapped IPv6.
    let d = sealed(&knock("10.77.0.2"), t0());
    let a = g.check(&d, ip("::ffff:10.77.0.2"), t0()).unwrap();
    assert_eq!(a.addr, ip("10.77.0.2"));
    assert_eq!(g.stats().admitted, 3);
}

#[test]
fn every_packet_has_one_length() {
    let mut lens = std::collections::BTreeSet::new();
    for id in [
        "a".to_owned(),
        "node-b.example".to_owned(),
        "é".repeat(MAX_NODE_ID / 2),
        "x".repeat(MAX_NODE_ID),
    ] {
        for addr in ["10.0.0.1", "2001:db8::1234:5678"] {
            let k = Knock { node_id: id.clone(), access: Access::Ike, addr: ip(addr) };
            lens.insert(seal(&keys(), &k, t0(), &mut os_random).unwrap().len());
        }
    }
    assert_eq!(lens.into_iter().collect::<Vec<_>>(), [DATAGRAM_LEN]);
}

#[test]
fn bad_node_ids_are_not_sealed() {
    for id in [String::new(), "x".repeat(MAX_NODE_ID + 1), "a\nb".into()] {
        let k = Knock { node_id: id, access: Access::Ike, addr: ip("10.0.0.1") };
        assert!(matches!(seal(&keys(), &k, t0(), &mut os_random), Err(SpaError::NodeId { .. })));
    }
}

#[test]
fn any_changed_byte_is_unauthentic() {
    let mut g = gate(open_cfg());
    let d = sealed(&knock("10.77.0.1"), t0());
    for i in 0..d.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut bad = d.clone();
            bad[i] ^= mask;
            assert_eq!(
                g.check(&bad, ip("10.77.0.1"), t0()),
                Err(Rejected::Unauthentic),
                "byte {i}"
            );
        }
    }
    // Truncated or extended: not even an SPA packet.
    assert_eq!(g.check(&d[..255], ip("10.77.0.1"), t0()), Err(Rejected::Malformed { len: 255 }));
    let mut long = d.clone();
    long.push(0);
    assert_eq!(g.check(&long, ip("10.77.0.1"), t0()), Err(Rejected::Malformed { len: 257 }));
    assert_eq!(g.check(&[], ip("10.77.0.1"), t0()), Err(Rejected::Malformed { len: 0 }));
    // The original still opens: nothing above touched the replay cache.
    assert!(g.check(&d, ip("10.77.0.1"), t0()).is_ok());
}

#[test]
fn wrong_secret_or_node_key_is_unauthentic() {
    let mut g = gate(open_cfg());
    let other = SpaKeys::new(b"another mesh's secret, 32+ bytes long", None).unwrap();
    let d = seal(&other, &knock("10.77.0.1"), t0(), &mut os_random).unwrap();
    assert_eq!(g.check(&d, ip("10.77.0.1"), t0()), Err(Rejected::Unauthentic));

    // With a node key: only the gate holding that node key opens it.
    let node_b = [7u8; 32];
    let for_b = SpaKeys::new(SECRET, Some(&node_b)).unwrap();
    let d = seal(&for_b, &knock("10.77.0.1"), t0(), &mut os_random).unwrap();
    assert_eq!(g.check(&d, ip("10.77.0.1"), t0()), Err(Rejected::Unauthentic));
    let mut gb = Gatekeeper::new_at(for_b, open_cfg(), t0()).unwrap();
    assert!(gb.check(&d, ip("10.77.0.1"), t0()).is_ok());
    let for_c = SpaKeys::new(SECRET, Some(&[8u8; 32])).unwrap();
    let mut gc = Gatekeeper::new_at(for_c, open_cfg(), t0()).unwrap();
    assert_eq!(gc.check(&d, ip("10.77.0.1"), t0()), Err(Rejected::Unauthentic));
}

#[test]
fn outside_the_window_both_ways_is_stale() {
    let mut g = gate(open_cfg());
    let k = knock("10.77.0.1");
    for (offset, ahead) in [(31_i64, true), (-31, false), (3600, true), (-86_400, false)] {
        let at = if offset > 0 {
            t0() + Duration::from_secs(offset.unsigned_abs())
        } else {
            t0() - Duration::from_secs(offset.unsigned_abs())
        };
        let r = g.check(&sealed(&k, at), ip("10.77.0.1"), t0()).unwrap_err();
        match &r {
            Rejected::Stale { skew, ahead: a, .. } => {
                assert_eq!(*skew, Duration::from_secs(offset.unsigned_abs()));
                assert_eq!(*a, ahead);
            }
            other => panic!("{other}"),
        }
        println!("{r}");
    }
    // Just inside, both ways.
    for at in [t0() + Duration::from_secs(29), t0() - Duration::from_secs(29)] {
        assert!(g.check(&sealed(&k, at), ip("10.77.0.1"), t0()).is_ok());
    }
}

#[test]
fn a_replay_is_refused() {
    let mut g = gate(open_cfg());
    let d = sealed(&knock("10.77.0.1"), t0());
    assert!(g.check(&d, ip("10.77.0.1"), t0()).is_ok());
    let later = t0() + Duration::from_secs(5);
    let r = g.check(&d, ip("10.77.0.1"), later).unwrap_err();
    assert_eq!(r, Rejected::Replayed { node_id: "node-a".into() });
    println!("{r}");
    // A fresh knock from the same node is fine.
    assert!(g.check(&sealed(&knock("10.77.0.1"), later), ip("10.77.0.1"), later).is_ok());
}

#[test]
fn a_replay_is_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spa-replay");
    let cfg = GateConfig { replay_path: Some(path.clone()), ..open_cfg() };
    let d = sealed(&knock("10.77.0.1"), t0());
    let other = sealed(&knock("10.77.0.1"), t0() + Duration::from_secs(1));
    {
        let mut g = gate(cfg.clone());
        assert!(g.check(&d, ip("10.77.0.1"), t0()).is_ok());
    }
    // The daemon restarts 10 s later: same file, new gatekeeper.
    let later = t0() + Duration::from_secs(10);
    let mut g = Gatekeeper::new_at(keys(), cfg.clone(), later).unwrap();
    assert_eq!(g.stats().replay_entries, 1);
    assert_eq!(
        g.check(&d, ip("10.77.0.1"), later),
        Err(Rejected::Replayed { node_id: "node-a".into() })
    );
    assert!(g.check(&other, ip("10.77.0.1"), later).is_ok());
    drop(g);

    // A crash mid-write leaves a torn record: dropped, the rest still holds.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    fs::write(&path, &bytes).unwrap();
    let mut g = Gatekeeper::new_at(keys(), cfg.clone(), later).unwrap();
    assert!(matches!(g.check(&d, ip("10.77.0.1"), later), Err(Rejected::Replayed { .. })));
    assert!(matches!(g.check(&other, ip("10.77.0.1"), later), Err(Rejected::Replayed { .. })));
    drop(g);

    // A file that is not ours refuses to start, saying what to do.
    fs::write(&path, b"something else entirely").unwrap();
    let e = Gatekeeper::new_at(keys(), cfg, later).unwrap_err();
    assert!(matches!(e, SpaError::ReplayFile { .. }), "{e}");
    println!("{e}");
}

#[test]
fn a_clock_stepped_back_does_not_revive_a_forgotten_knock() {
    let mut g = gate(open_cfg());
    let d = sealed(&knock("10.77.0.1"), t0());
    assert!(g.check(&d, ip("10.77.0.1"), t0()).is_ok());
    // 40 s later another knock: the first leaves the cache (outside the window).
    let later = t0() + Duration::from_secs(40);
    assert!(g.check(&sealed(&knock("10.77.0.1"), later), ip("10.77.0.1"), later).is_ok());
    assert_eq!(g.stats().replay_entries, 1);
    // The clock steps back to t0 + 5 s: the first knock is inside the window again.
    let back = t0() + Duration::from_secs(5);
    let r = g.check(&d, ip("10.77.0.1"), back);
    assert!(matches!(r, Err(Rejected::Replayed { .. })), "{r:?}");
}

#[test]
fn what_the_cache_forgot_stays_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spa-replay");
    let cfg = GateConfig { replay_path: Some(path.clone()), replay_capacity: 8, ..open_cfg() };
    let d = sealed(&knock("10.77.0.1"), t0());
    let later = t0() + Duration::from_secs(40);
    {
        let mut g = gate(cfg.clone());
        assert!(g.check(&d, ip("10.77.0.1"), t0()).is_ok());
        // Enough knocks that the file is compacted more than once on the way.
        for i in 0..2500_u64 {
            let at = later + Duration::from_millis(i);
            assert!(g.check(&sealed(&knock("10.77.0.1"), at), ip("10.77.0.1"), at).is_ok());
        }
        assert_eq!(g.stats().replay_entries, 8);
    }
    let size = fs::metadata(&path).unwrap().len();
    assert!(size < 8 + 25 * 2048, "the file was compacted: {size} bytes");
    // Restart with the clock stepped back to t0 + 5 s: the first knock is inside the
    // window again, and long gone from the cache.
    let back = t0() + Duration::from_secs(5);
    let mut g = Gatekeeper::new_at(keys(), cfg, back).unwrap();
    assert!(matches!(g.check(&d, ip("10.77.0.1"), back), Err(Rejected::Replayed { .. })));
}

#[test]
fn the_replay_cache_is_bounded() {
    let cfg = GateConfig { replay_capacity: 8, ..open_cfg() };
    let mut g = gate(cfg);
    let mut first = Vec::new();
    for i in 0..20_u64 {
        let at = t0() + Duration::from_millis(i);
        let d = sealed(&knock("10.77.0.1"), at);
        assert!(g.check(&d, ip("10.77.0.1"), t0()).is_ok());
        first.push(d);
    }
    assert_eq!(g.stats().replay_entries, 8);
    // Forgotten or not, none of them opens twice.
    for d in &first {
        assert!(matches!(g.check(d, ip("10.77.0.1"), t0()), Err(Rejected::Replayed { .. })));
    }
}

#[test]
fn the_claimed_address_must_be_the_source_unless_nat() {
    let d = sealed(&knock("10.77.0.1"), t0());
    let mut g = gate(open_cfg());
    let r = g.check(&d, ip("10.77.0.3"), t0()).unwrap_err();
    assert_eq!(
        r,
        Rejected::AddressMismatch {
            node_id: "node-a".into(),
            claimed: ip("10.77.0.1"),
            source: ip("10.77.0.3")
        }
    );
    println!("{r}");
    // Refused without touching the replay cache: the genuine sender still gets in.
    assert!(g.check(&d, ip("10.77.0.1"), t0()).is_ok());

    let mut g = gate(GateConfig { nat: true, ..open_cfg() });
    let d = sealed(&knock("192.168.1.10"), t0());
    let a = g.check(&d, ip("10.77.0.3"), t0()).unwrap();
    assert_eq!((a.addr, a.claimed), (ip("10.77.0.3"), ip("192.168.1.10")));
}

#[test]
fn the_rate_limit_comes_before_any_crypto() {
    let cfg = GateConfig { per_source_rate: (3, Duration::from_secs(9)), ..GateConfig::default() };
    let mut g = gate(cfg);
    let junk = [0u8; DATAGRAM_LEN];
    let src = ip("10.77.0.9");
    for _ in 0..3 {
        assert_eq!(g.check(&junk, src, t0()), Err(Rejected::Unauthentic));
    }
    // The fourth, even a valid knock, is refused before it is opened.
    let d = sealed(&knock("10.77.0.9"), t0());
    assert_eq!(g.check(&d, src, t0()), Err(Rejected::RateLimited));
    assert_eq!(g.check(&junk, src, t0()), Err(Rejected::RateLimited));
    // Another source is not affected.
    assert!(g.check(&sealed(&knock("10.77.0.8"), t0()), ip("10.77.0.8"), t0()).is_ok());
    // One interval (3 s) later, one more datagram gets through, and the knock opens.
    let later = t0() + Duration::from_secs(3);
    assert!(g.check(&d, src, later).is_ok());
    assert_eq!(g.check(&junk, src, later), Err(Rejected::RateLimited));
    assert_eq!(g.stats().rate_limited, 3);
}

/// χ² of byte counts against a uniform distribution over 256 values.
fn chi_square(counts: &[u64; 256]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / 256.0;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

#[test]
fn sealed_packets_look_random() {
    // The same knock, at the same time, over and over: the worst case for patterns.
    const N: usize = 4096;
    let k = knock("10.77.0.1");
    let packets: Vec<Vec<u8>> = (0..N).map(|_| sealed(&k, t0())).collect();

    // All bytes together: χ² with 255 degrees of freedom has mean 255 and standard
    // deviation 22.6; 400 is more than six deviations out.
    let mut all = [0u64; 256];
    for p in &packets {
        for &b in p {
            all[usize::from(b)] += 1;
        }
    }
    let chi_all = chi_square(&all);

    // Each position on its own across packets: no fixed byte, no header, no padding
    // showing through. With 16 per cell, the worst of 256 positions stays under 400.
    let mut worst = (0.0_f64, 0);
    for pos in 0..DATAGRAM_LEN {
        let mut c = [0u64; 256];
        for p in &packets {
            c[usize::from(p[pos])] += 1;
        }
        let chi = chi_square(&c);
        if chi > worst.0 {
            worst = (chi, pos);
        }
    }

    // No two packets share an 8-byte prefix.
    let prefixes: std::collections::HashSet<&[u8]> = packets.iter().map(|p| &p[..8]).collect();

    println!(
        "{N} packets: chi-square of all bytes {chi_all:.1} (255 expected), worst position {} at {:.1}, {} distinct 8-byte prefixes",
        worst.1,
        worst.0,
        prefixes.len()
    );
    assert!(chi_all < 400.0, "byte histogram far from uniform: {chi_all}");
    assert!(worst.0 < 400.0, "position {} far from uniform: {}", worst.1, worst.0);
    assert_eq!(prefixes.len(), N);
}

fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A small deterministic generator: the flood must be the same every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// User and system CPU time of this process, from `/proc/self/stat` (in clock ticks of
/// 10 ms, Linux's `USER_HZ`).
fn cpu_time() -> Duration {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<u64> =
        after_name.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15 of the line; `fields` starts at field 4.
    Duration::from_millis((fields[10] + fields[11]) * 10)
}

/// The flood runs in a process of its own (this test binary, run again for this test
/// alone), so that the memory and CPU time it reports are the flood's, not those of
/// the tests running beside it.
#[test]
fn a_flood_of_random_datagrams_opens_nothing_in_bounded_memory() {
    const NAME: &str = "a_flood_of_random_datagrams_opens_nothing_in_bounded_memory";
    if std::env::var_os("IKEMESH_SPA_FLOOD_CHILD").is_some() {
        flood();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("IKEMESH_SPA_FLOOD_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints the test's name first, on the same line.
    for line in stdout.lines().filter_map(|l| l.find("flood:").map(|at| &l[at..])) {
        println!("{line}");
    }
    assert!(
        out.status.success() && stdout.contains("flood: done"),
        "the flood failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn flood() {
    const N: usize = 100_000;
    const WARM: usize = 10_000;
    const MAX_SOURCES: usize = 1024;
    let mut g = gate(GateConfig { max_sources: MAX_SOURCES, ..GateConfig::default() });
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buf = [0u8; 300];
    let (rss_start, cpu_start, start) = (rss_kib(), cpu_time(), Instant::now());
    let mut rss_warm = 0;
    let mut admitted = 0;
    for i in 0..N {
        if i == WARM {
            rss_warm = rss_kib();
        }
        // Mostly SPA-sized (so they reach the AEAD check), some not; from many
        // addresses of both families (so the source map fills), and a tenth from
        // one address (so the rate limit bites).
        let len = if i % 10 == 0 { (rng.next() % 300) as usize } else { DATAGRAM_LEN };
        rng.fill(&mut buf[..len]);
        let r = rng.next();
        let source: IpAddr = match i % 10 {
            1 => ip("10.77.0.66"),
            n if n % 2 == 0 => IpAddr::from((r as u32).to_be_bytes()),
            _ => IpAddr::from((u128::from(r) << 64 | u128::from(rng.next())).to_be_bytes()),
        };
        let now = t0() + Duration::from_millis(i as u64);
        if g.check(&buf[..len], source, now).is_ok() {
            admitted += 1;
        }
    }
    let (elapsed, cpu) = (start.elapsed(), cpu_time().saturating_sub(cpu_start));
    let rss_end = rss_kib();
    let s = g.stats();
    println!(
        "flood: {N} random datagrams, {admitted} admitted, {} rate limited; {:.2} µs per check, CPU time {:.2} s ({} build); {} sources tracked (bound {MAX_SOURCES}); RSS {rss_start} KiB at start, {rss_warm} KiB after {WARM}, {rss_end} KiB after {N}",
        s.rate_limited,
        elapsed.as_secs_f64() * 1e6 / N as f64,
        cpu.as_secs_f64(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        s.sources,
    );
    assert_eq!(admitted, 0);
    assert_eq!(s.admitted, 0);
    assert_eq!(s.rejected, N as u64);
    assert!(s.rate_limited > 9_000, "the one busy source was limited: {}", s.rate_limited);
    assert!(s.sources <= MAX_SOURCES);
    assert_eq!(s.replay_entries, 0);
    // Bounded: after the source map is full, 90,000 more datagrams add (next to) nothing.
    assert!(
        rss_end < rss_warm + 1024,
        "memory grew by {} KiB after the map filled",
        rss_end - rss_warm
    );
    assert!(rss_end < rss_start + 8 * 1024, "memory grew by {} KiB", rss_end - rss_start);
    // Bounded CPU: generous even for a debug build on a slow machine.
    assert!(cpu < Duration::from_secs(30), "CPU time {cpu:?}");
    println!("flood: done");
}

#[test]
fn keys_load_only_from_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spa.secret");
    fs::write(&path, SECRET).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let e = SpaKeys::load(&path).unwrap_err();
        assert!(matches!(e, SpaError::LooseMode { .. }), "{e}");
    }
    println!("{}", SpaKeys::load(&path).unwrap_err());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = SpaKeys::load(&path).unwrap();
    // The loaded key is the key of the same bytes.
    let d = seal(&loaded, &knock("10.77.0.1"), t0(), &mut os_random).unwrap();
    assert!(gate(open_cfg()).check(&d, ip("10.77.0.1"), t0()).is_ok());
    // The Debug output shows nothing of it.
    assert_eq!(format!("{loaded:?}"), "SpaKeys(<redacted>)");

    fs::write(&path, b"too short").unwrap();
    assert!(matches!(SpaKeys::load(&path), Err(SpaError::ShortSecret { len: 9, .. })));
    assert!(matches!(SpaKeys::load(dir.path()), Err(SpaError::NotAFile { .. })));
    assert!(matches!(SpaKeys::new(&[0; 31], None), Err(SpaError::ShortSecret { .. })));
    assert!(matches!(SpaKeys::new(SECRET, Some(&[0; 8])), Err(SpaError::ShortSecret { .. })));
}

#[test]
fn every_refusal_prints_one_line() {
    let all = [
        Rejected::RateLimited,
        Rejected::Malformed { len: 3 },
        Rejected::Unauthentic,
        Rejected::Invalid { reason: "padding is not zero" },
        Rejected::Stale {
            node_id: "a".into(),
            skew: Duration::from_secs(31),
            ahead: true,
            window: Duration::from_secs(30),
        },
        Rejected::Replayed { node_id: "a".into() },
        Rejected::AddressMismatch {
            node_id: "a".into(),
            claimed: ip("10.0.0.1"),
            source: ip("10.0.0.2"),
        },
        Rejected::ReplayStore { node_id: "a".into(), error: std::io::ErrorKind::StorageFull },
    ];
    for r in all {
        let line = r.to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
    }
}
