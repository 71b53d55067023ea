//! The pair-rate benchmark's reference: how fast strongSwan's charon sets up IKE SAs
//! against another charon, and what they cost the responder in CPU and memory.
//!
//! ```no_run
//! use ikemesh_interop::KeyType;
//! use ikemesh_interop::charon_rate::charon_pair_rate;
//! use ikemesh_testbed::Net;
//!
//! let net = Net::new(2)?;
//! let run = charon_pair_rate(net.host(0), net.host(1), KeyType::Ed25519, 1000, 128)?;
//! println!("{:.0} IKE SAs/s, {:?} CPU per SA", run.rate(), run.cpu_per_sa());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # The run
//!
//! One throw-away CA issues one identity to each side. A responder charon runs in one
//! host, an initiator charon in the other, each with one connection: IKE proposal
//! [`IKE_AES256GCM_X25519`], certificate authentication both ways (each side verifies
//! the other's certificate against the CA), no child SA (childless IKE SAs, RFC 6023:
//! `childless = force` on the initiator, the default `allow` on the responder; the build
//! hosts' kernel has no ESP), no rekeying, no MOBIKE, and `unique = never` on both
//! sides, so that every initiation makes one more IKE SA and none replaces another
//! (with `INITIAL_CONTACT`, say).
//!
//! One driver thread sends vici's `initiate` with `ike = <connection>` and no `child`
//! (an IKE-only initiation, which strongSwan supports since 5.9.6) to the initiator and
//! polls the initiator's `stats` for its IKE SAs, total and half-open: it starts new
//! initiations while fewer than `window` are half-open, so that at most `window` are in
//! flight, and stops the clock when all `n` have been sent and none is half-open any
//! more (to within a millisecond and a `stats` round trip). Established IKE SAs are
//! then what the initiator counts; failed ones are gone.
//!
//! The initiations are asynchronous (`timeout = -1`): an `initiate` that waits for its
//! IKE SA (any `timeout` ≥ 0) registers a logger that asks charon 5.9 for every log
//! message of every subsystem at every level, for as long as it waits. With 128 of
//! them waiting, the initiator spent 18 ms of CPU per IKE SA formatting and handing out
//! log messages, against 2 ms for the responder, and became the bottleneck of the run
//! (on a 2-core build host; asynchronous, it spends about what the responder does).
//!
//! # Settings that differ from charon's defaults, and why
//!
//! Both charons run with the harness's settings ([`Charon`]: 8 worker threads,
//! `retransmit_timeout = 2.0`, `retransmit_tries = 3`), plus:
//! - a quiet log: level 0 (audit lines only: two per IKE SA on the responder) in every
//!   subsystem, but `ike` at level 1 on the initiator, where its retransmissions are
//!   logged (see below). The harness logs `ike`, `cfg` and `knl` at level 2, flushing
//!   every line, which for thousands of IKE SAs would be a good part of the CPU figure;
//! - on the responder, `dos_protection = no`: every initiation comes from one address,
//!   and charon's per-address denial-of-service limits take the run for an attack:
//!   beyond 3 half-open IKE SAs from one address it demands cookies
//!   (`cookie_threshold_ip`), beyond 5 it drops `IKE_SA_INIT` requests silently
//!   (`block_threshold`). With them, N = 1,000 in a window of 128 took 3.7 times as
//!   long, with 406 retransmissions and 80 IKE SAs failed (one run on a 2-core build
//!   host). strongSwan's own load-testing examples turn it off too;
//! - on the initiator, `reuse_ikesa = no`: by default an initiation reuses an IKE SA
//!   of the same connection that exists already, so `n` initiations made one.
//!
//! - on both, `ikesa_table_size = 4096` and `ikesa_table_segments = 16`: by default the
//!   IKE SA table has 1 bucket (a list), whose lookups dominated a profile at N = 5,000
//!   (with it, 273 and 357 IKE SAs/s with Ed25519; with 4,096 buckets, 482 and 398 on
//!   the same busy host). strongSwan's documentation recommends raising it for many
//!   IKE SAs, and an operator running thousands would: the comparison is with a charon
//!   set up for the job.
//!
//! Every other default stays.
//!
//! # Retransmissions
//!
//! The `counters` plugin (vici `get-counters`) counts messages once, when they are built
//! or parsed, not their retransmissions. So [`CharonRun::retransmits`] counts the
//! initiator's log lines `retransmit <i> of request with message ID <m>` (`ike`, level
//! 1) instead, from its log read before it stops.

use crate::charon::{Charon, CharonConfig, Connection, IKE_AES256GCM_X25519, NO_REKEY};
use crate::error;
use crate::pki::{KeyType, TestCa};
use crate::sa::Section;
use crate::vici::{self, Vici};
use ikemesh_testbed::Host;
use std::fs;
use std::io;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The connection's name on both sides.
const CONN: &str = "rate";

/// How long a vici request may take.
const VICI_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the driver asks the initiator how many IKE SAs are half-open while the
/// window is full.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// How long the run may go without an IKE SA established, failed or started before it
/// stops (longer than the harness's whole retransmission sequence, about 24 s with
/// `retransmit_timeout = 2.0` and 3 tries, after which charon gives an IKE SA up).
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// One timed run: `n` IKE SAs initiated by one charon against another.
#[derive(Debug, Clone)]
pub struct CharonRun {
    /// IKE SAs initiated.
    pub n: usize,
    /// The most initiations in flight (half-open on the initiator) at once.
    pub window: usize,
    /// From the first `initiate` sent to the last IKE SA up (or failed) on the
    /// initiator.
    pub wall: Duration,
    /// IKE SAs the responder counts at the end (vici `stats`: `ikesas.total` minus
    /// `ikesas.half-open`).
    pub established: usize,
    /// Initiations that failed or timed out: `n` minus the IKE SAs the initiator counts
    /// established at the end.
    pub failed: usize,
    /// The responder charon's user and system CPU time during the run.
    pub responder_cpu: Duration,
    /// The responder's resident memory (`VmRSS`) before the run, KiB.
    pub responder_rss_before_kib: u64,
    /// The responder's resident memory with all the run's IKE SAs up, KiB.
    pub responder_rss_after_kib: u64,
    /// The initiator's retransmissions of requests during the run, from its log (see
    /// the module documentation); `None` if they could not be counted.
    pub retransmits: Option<u64>,
}

impl CharonRun {
    /// IKE SAs per second: `n / wall` (see [`failed`](Self::failed) for how many
    /// of them did not come up).
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn rate(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 { self.n as f64 / secs } else { 0.0 }
    }

    /// The responder's CPU time per IKE SA: `responder_cpu / n`.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn cpu_per_sa(&self) -> Duration {
        if self.n == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.responder_cpu.as_secs_f64() / self.n as f64)
    }

    /// The responder's resident memory per IKE SA, bytes: the growth of `VmRSS` over the
    /// run divided by `n` (negative if it shrank).
    #[allow(clippy::cast_precision_loss)] // KiB counts and `n` far below 2^52
    pub fn rss_per_sa_bytes(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let growth = self.responder_rss_after_kib as f64 - self.responder_rss_before_kib as f64;
        growth * 1024.0 / self.n as f64
    }
}

/// The IKE SA table sized for thousands of IKE SAs (see the module documentation).
fn hash_table() -> [String; 2] {
    ["ikesa_table_size = 4096".to_owned(), "ikesa_table_segments = 16".to_owned()]
}

/// Runs `n` IKE SAs from a charon in `initiator` to a charon in `responder`, with at
/// most `window` (at least 1) in flight, and measures them (see the module
/// documentation). Both charons are stopped before it returns.
///
/// A failed initiation is counted in [`CharonRun::failed`]; an error means that a
/// charon could not be set up or started, or the responder was gone after the run.
pub fn charon_pair_rate(
    initiator: &Host,
    responder: &Host,
    key: KeyType,
    n: usize,
    window: usize,
) -> io::Result<CharonRun> {
    let window = window.max(1);
    let ca = TestCa::new(key)?;
    let (id_i, id_r) = (ca.issue("initiator.ikemesh.test")?, ca.issue("responder.ikemesh.test")?);
    let ca_pem = ca.cert_pem().to_owned();

    let mut conn_r =
        Connection::host_to_host(CONN, responder.addr(false), initiator.addr(false), &id_i.id);
    explicit(&mut conn_r);
    conn_r.extra = vec!["unique = never".to_owned()];
    let mut config_r = CharonConfig::new(id_r.clone(), ca_pem.clone(), vec![conn_r]);
    config_r.strongswan_extra = quiet_logging(0);
    config_r.strongswan_extra.push("dos_protection = no".to_owned());
    config_r.strongswan_extra.extend(hash_table());

    let mut conn_i =
        Connection::host_to_host(CONN, initiator.addr(false), responder.addr(false), &id_r.id);
    explicit(&mut conn_i);
    conn_i.extra = vec!["unique = never".to_owned(), "childless = force".to_owned()];
    let mut config_i = CharonConfig::new(id_i, ca_pem, vec![conn_i]);
    config_i.strongswan_extra = quiet_logging(1);
    config_i.strongswan_extra.push("reuse_ikesa = no".to_owned());
    config_i.strongswan_extra.extend(hash_table());

    let charon_r = Charon::start(responder, config_r)?;
    let charon_i = Charon::start(initiator, config_i)?;
    let result = measure(&charon_i, &charon_r, n, window);
    // Stopping is not part of the figures: a charon that needs SIGKILL is still done.
    let _ = charon_i.stop();
    let _ = charon_r.stop();
    result
}

/// The run's settings of a connection, whatever [`Connection::host_to_host`]'s defaults:
/// X25519 and AES-GCM, no rekeying, no MOBIKE, no child SA.
fn explicit(conn: &mut Connection) {
    conn.ike_proposals = vec![IKE_AES256GCM_X25519.to_owned()];
    conn.rekey_time = NO_REKEY;
    conn.mobike = false;
    conn.children.clear();
}

/// strongswan.conf lines that lower the harness's file log to level 0 (audit lines:
/// IKE SAs established, deleted or failed) in every subsystem but `ike`, which is at
/// `ike_level`. They come after the harness's own `filelog.charon` section, and
/// strongswan.conf merges sections of the same name, the last value of a key winning.
fn quiet_logging(ike_level: u8) -> Vec<String> {
    let ike = format!("    ike = {ike_level}");
    ["filelog {", "  charon {", "    default = 0", &ike, "    knl = 0", "    cfg = 0", "  }", "}"]
        .map(str::to_owned)
        .into()
}

/// The run itself, with both charons up.
fn measure(
    initiator: &Charon,
    responder: &Charon,
    n: usize,
    window: usize,
) -> io::Result<CharonRun> {
    let pid = responder.pid();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))?;
    if comm.trim() != "charon" {
        return Err(error(format!("responder's PID {pid} is {}, not charon", comm.trim())));
    }
    let hz = clock_ticks_per_sec();
    let mut vici = Vici::connect(&initiator.dir().join("charon.vici"), VICI_TIMEOUT)?;
    // An asynchronous initiation (`timeout = -1`): see the module documentation.
    let initiate = vici::message(&[("ike", CONN), ("timeout", "-1")]);
    let stats = vici::message(&[]);

    let rss_before = rss_kib(pid)?;
    let cpu_before = cpu_ticks(pid)?;
    let start = Instant::now();
    let mut sent = 0;
    // When the IKE SA counts last changed, and to what.
    let mut progress = (start, 0, 0);
    let (total, half_open) = loop {
        let (total, half_open) = ike_sa_counts(&mut vici, &stats)?;
        let now = Instant::now();
        if sent == n && half_open == 0 {
            break (total, half_open);
        }
        if (total, half_open) != (progress.1, progress.2) {
            progress = (now, total, half_open);
        } else if now - progress.0 > STALL_LIMIT {
            break (total, half_open);
        }
        let room = window.saturating_sub(half_open).min(n - sent);
        for _ in 0..room {
            // An initiation charon refuses (`success = no`) makes no IKE SA, and counts
            // as failed below.
            vici.request("initiate", &initiate, None)?;
            sent += 1;
        }
        if room == 0 {
            thread::sleep(POLL_INTERVAL);
        }
    };
    let end = Instant::now();
    let cpu_after = cpu_ticks(pid)?;
    let rss_after = rss_kib(pid)?;

    let (total_r, half_open_r) = ike_sa_counts(&mut vici_to(responder)?, &stats)?;
    Ok(CharonRun {
        n,
        window,
        wall: end - start,
        established: total_r.saturating_sub(half_open_r),
        // Initiations that charon refused, that failed (their IKE SA is gone) and that
        // were still half-open when the run stalled.
        failed: n - total.saturating_sub(half_open).min(n),
        responder_cpu: Duration::from_nanos(
            cpu_after.saturating_sub(cpu_before).saturating_mul(1_000_000_000) / hz,
        ),
        responder_rss_before_kib: rss_before,
        responder_rss_after_kib: rss_after,
        retransmits: Some(count_retransmits(&initiator.log())),
    })
}

/// A vici connection to `charon`.
fn vici_to(charon: &Charon) -> io::Result<Vici> {
    Vici::connect(&charon.dir().join("charon.vici"), VICI_TIMEOUT)
}

/// `(ikesas.total, ikesas.half-open)` of charon's `stats`.
fn ike_sa_counts(vici: &mut Vici, stats: &Section) -> io::Result<(usize, usize)> {
    let (response, _) = vici.request("stats", stats, None)?;
    let count = |key: &str| -> io::Result<usize> {
        let value = response.section("ikesas").and_then(|s| s.value(key));
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| error(format!("vici stats: no number ikesas.{key}: {response:?}")))
    };
    Ok((count("total")?, count("half-open")?))
}

/// The retransmissions of requests in a charon log with `ike` at level 1 or more
/// (`retransmit <i> of request with message ID <m>`).
fn count_retransmits(log: &str) -> u64 {
    log.lines()
        .filter(|line| line.contains(" retransmit ") && line.contains(" of request "))
        .count() as u64
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s CPU times: `getconf
/// CLK_TCK`, or 100 (Linux's `USER_HZ` everywhere) if that does not answer.
fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// User plus system CPU time of process `pid` so far, in clock ticks (fields 14 and 15
/// of `/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the
    // last ')', after which field 3 comes first, so fields 14 and 15 are the 12th and 13th.
    let mut fields = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().skip(11));
    let mut field = || -> io::Result<u64> {
        fields
            .as_mut()
            .and_then(Iterator::next)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| error(format!("cannot read CPU times in /proc/{pid}/stat: {stat}")))
    };
    Ok(field()? + field()?)
}

/// Resident memory of process `pid` (`VmRSS` in `/proc/PID/status`), KiB.
fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| error(format!("no VmRSS in /proc/{pid}/status")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process_figures() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn per_sa_figures() {
        let run = CharonRun {
            n: 1000,
            window: 128,
            wall: Duration::from_secs(2),
            established: 1000,
            failed: 0,
            responder_cpu: Duration::from_secs(1),
            responder_rss_before_kib: 10_000,
            responder_rss_after_kib: 30_000,
            retransmits: Some(0),
        };
        assert!((run.rate() - 500.0).abs() < 1e-9);
        assert_eq!(run.cpu_per_sa(), Duration::from_millis(1));
        assert!((run.rss_per_sa_bytes() - 20_480.0).abs() < 1e-9);
    }
}
