//! ikemesh's IKEv2 against strongSwan's charon (Debian's packages), in the stock-kernel
//! VM where both sides install their child SAs: charon on host A, `ike-peer` on host B.
//!
//! For Ed25519 certificates over IPv4 (X25519) and ECDSA P-256 certificates over IPv6
//! (ECP-256, ESN), and in both roles (we initiate; charon initiates): the IKE SA and the
//! transport-mode child SA come up with the same SPIs on both sides as charon lists them;
//! UDP crosses the link as ESP under the child's SPIs both ways and arrives (so both
//! sides derived the same keys); each side rekeys the child SA and the IKE SA once, and
//! traffic flows under the new child SA; then one side deletes the child SA and the
//! other the IKE SA, each confirmed from charon's side. The child rekeys use PFS. And
//! with charon told not to use RFC 7427 signatures, ECDSA P-256 with the classic AUTH
//! method 9, in both roles.
#![allow(clippy::print_stdout)] // the SPIs and steps it prints are its report

use ikemesh_interop::charon::{IKE_AES256GCM_ECP256, IKE_AES256GCM_X25519};
use ikemesh_interop::{
    Charon, CharonConfig, ChildSa, Connection, IkePeer, IkeSa, KeyType, PeerOptions, Report, TestCa,
};
use ikemesh_testbed::vm::guest_test_with_timeout;
use ikemesh_testbed::{Host, Net};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CONN: &str = "peer";
const PORT: u16 = 5602;
const DATAGRAMS: u32 = 5;
const MARKER: &[u8] = b"IKEMESH-CHARON-PLAINTEXT";
const WAIT: Duration = Duration::from_secs(15);

#[allow(clippy::struct_excessive_bools)] // a test case is a row of switches
struct Case {
    key: KeyType,
    v6: bool,
    ike: &'static str,
    /// charon's ESP proposal: with a D-H group, for PFS on rekeys.
    esp: &'static str,
    groups: &'static [&'static str],
    esn: bool,
    we_initiate: bool,
    /// charon without RFC 7427 (`signature_authentication = no`): both sides then use
    /// the classic ECDSA method 9.
    classic: bool,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{} over IPv{}, {} initiates{}",
            self.key,
            if self.v6 { 6 } else { 4 },
            if self.we_initiate { "ikemesh" } else { "charon" },
            if self.classic { ", classic AUTH method (no RFC 7427)" } else { "" }
        )
    }
}

/// charon's one established IKE SA and its one installed child, once they are as `ok`
/// wants them.
fn charon_view(
    charon: &Charon,
    what: &str,
    ok: impl Fn(&IkeSa, &ChildSa) -> bool,
) -> (IkeSa, ChildSa) {
    let sas = charon
        .wait_for_sas(what, WAIT, |sas| {
            sas.len() == 1
                && sas[0].is_established()
                && sas[0].installed_child(CONN).is_some_and(|c| ok(&sas[0], c))
        })
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", charon.log_tail(40)));
    let child = sas[0].installed_child(CONN).unwrap().clone();
    (sas[0].clone(), child)
}

/// UDP both ways; each direction must arrive, cross as ESP under the sender's outbound
/// SPI, and never in the clear.
fn check_traffic(case: &Case, a: &Host, b: &Host, charon_child: &ChildSa) -> String {
    let capture = a.capture("eth0", "").unwrap();
    let a_to_b = a.udp_to(b, case.v6, PORT, DATAGRAMS, MARKER, Duration::from_millis(5)).unwrap();
    let b_to_a = b.udp_to(a, case.v6, PORT, DATAGRAMS, MARKER, Duration::from_millis(5)).unwrap();
    let frames = capture.stop().unwrap();
    let under =
        |spi: u32| frames.iter().filter(|f| f.is_esp() && f.contains(&spi.to_be_bytes())).count();
    let (out_a, out_b) = (under(charon_child.spi_out), under(charon_child.spi_in));
    let clear = frames.iter().filter(|f| f.contains(MARKER)).count();
    assert_eq!((a_to_b, b_to_a), (DATAGRAMS, DATAGRAMS), "every datagram arrived, both ways");
    assert!(out_a >= DATAGRAMS as usize && out_b >= DATAGRAMS as usize, "ESP: {out_a} {out_b}");
    assert_eq!(clear, 0, "no plaintext on the link");
    format!(
        "UDP both ways {a_to_b}+{b_to_a}/{}: {out_a} ESP frames under {:08x} (charon->us), \
         {out_b} under {:08x} (us->charon), {clear} in the clear",
        2 * DATAGRAMS,
        charon_child.spi_out,
        charon_child.spi_in
    )
}

fn spis_of(line: &str) -> String {
    IkePeer::field(line, "spis").unwrap_or_default().to_string()
}

fn charon_spis(sa: &IkeSa) -> String {
    format!("{:016x}_{:016x}", sa.initiator_spi, sa.responder_spi)
}

/// Each side rekeys the child SA (with PFS) and the IKE SA once.
fn rekeys(
    case: &Case,
    (a, b): (&Host, &Host),
    charon: &Charon,
    ours: &mut IkePeer,
    report: &mut Report,
) {
    // Child rekey by us (with PFS), then by charon.
    ours.command("rekey-child").unwrap();
    let rekeyed = ours.expect("child-rekeyed", WAIT).unwrap();
    ours.expect("child-down", WAIT).unwrap();
    let new_in = IkePeer::spi(&rekeyed, "in").unwrap();
    let (_, child) =
        charon_view(charon, "charon has our rekeyed child", |_, c| c.spi_out == new_in);
    assert!(IkePeer::field(&rekeyed, "pfs").is_some_and(|g| g != "none"), "{rekeyed}");
    report.line(format_args!("child SA rekeyed by us ({rekeyed})"));
    report.line(check_traffic(case, a, b, &child));
    let by_charon = charon.rekey_child(CONN).unwrap();
    let rekeyed = ours.expect("child-rekeyed", WAIT).unwrap();
    ours.expect("child-down", WAIT).unwrap();
    assert_eq!(IkePeer::spi(&rekeyed, "out"), Some(by_charon.spi_in), "{rekeyed}");
    let (_, child) =
        charon_view(charon, "charon's rekeyed child", |_, c| c.spi_in == by_charon.spi_in);
    report.line(format_args!("child SA rekeyed by charon ({rekeyed})"));
    report.line(check_traffic(case, a, b, &child));

    // IKE SA rekey by us, then by charon; the child SA stays and carries traffic.
    ours.command("rekey-ike").unwrap();
    let line = ours.expect("ike-rekeyed", WAIT).unwrap();
    let (sa, _) =
        charon_view(charon, "charon has our new IKE SA", |sa, _| charon_spis(sa) == spis_of(&line));
    report.line(format_args!("IKE SA rekeyed by us: {}", charon_spis(&sa)));
    let new = charon.rekey_ike(CONN).unwrap();
    let line = ours.expect("ike-rekeyed", WAIT).unwrap();
    assert_eq!(spis_of(&line), charon_spis(&new), "charon's new IKE SA is ours");
    let (sa, child) =
        charon_view(charon, "after charon's IKE rekey", |sa, _| charon_spis(sa) == spis_of(&line));
    report.line(format_args!("IKE SA rekeyed by charon: {}", charon_spis(&sa)));
    report.line(check_traffic(case, a, b, &child));
    let (ike_rekeys, child_rekeys) = charon.rekey_counts().unwrap();
    assert_eq!((ike_rekeys, child_rekeys), (2, 2), "charon counted every rekey");
}

/// The initiator's side deletes the child SA, the other the IKE SA.
fn deletes(case: &Case, charon: &Charon, ours: &mut IkePeer, report: &mut Report) {
    if case.we_initiate {
        ours.command("delete-child").unwrap();
        ours.expect("child-down", WAIT).unwrap();
        charon
            .wait_for_sas("charon deletes the child", WAIT, |sas| {
                sas.len() == 1 && sas[0].is_established() && sas[0].installed_child(CONN).is_none()
            })
            .unwrap();
        report.line("child SA deleted by us; gone from charon");
        charon.terminate_ike(CONN).unwrap();
        ours.expect("closed deleted by the peer", WAIT).unwrap();
        report.line("IKE SA deleted by charon; ike-peer closed it");
    } else {
        charon.terminate_child(CONN).unwrap();
        ours.expect("child-down", WAIT).unwrap();
        report.line("child SA deleted by charon; ike-peer removed it");
        ours.command("delete").unwrap();
        ours.expect("closed deleted by us", WAIT).unwrap();
        charon.wait_for_sas("charon deletes the IKE SA", WAIT, <[IkeSa]>::is_empty).unwrap();
        report.line("IKE SA deleted by us; gone from charon");
    }
}

fn run_case(case: &Case) -> Vec<String> {
    let mut report = Report::new();
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let ca = TestCa::new(case.key).unwrap();
    let (id_a, id_b) =
        (ca.issue("charon.ikemesh.test").unwrap(), ca.issue("ours.ikemesh.test").unwrap());
    let conn = Connection::host_to_host(CONN, a.addr(case.v6), b.addr(case.v6), &id_b.id)
        .with_ike_proposals(&[case.ike])
        .with_esp_proposals(&[case.esp]);
    let mut config = CharonConfig::new(id_a.clone(), ca.cert_pem().to_owned(), vec![conn]);
    if case.classic {
        config.strongswan_extra.push("signature_authentication = no".into());
    }
    let charon = Charon::start(a, config).unwrap();
    let mut ours = IkePeer::start(
        b,
        &PeerOptions {
            initiate: case.we_initiate,
            install: true,
            groups: case.groups.iter().map(ToString::to_string).collect(),
            ..PeerOptions::new(
                PathBuf::from(env!("CARGO_BIN_EXE_ike-peer")),
                &id_b,
                ca.cert_pem(),
                &id_a.id,
                (b.addr(case.v6), a.addr(case.v6)),
            )
        },
    )
    .unwrap();
    report.line("charon and ike-peer up");
    if !case.we_initiate {
        charon.initiate(CONN).unwrap();
    }
    let up = ours.expect("ike-up", WAIT).unwrap_or_else(|e| panic!("{e}\n{}", charon.log_tail(40)));
    let child_up = ours.expect("child-up", WAIT).unwrap();
    let our_in = IkePeer::spi(&child_up, "in").unwrap();
    let (sa, child) = charon_view(&charon, "charon lists the SAs", |_, c| c.spi_out == our_in);
    assert_eq!(spis_of(&up), charon_spis(&sa), "the same IKE SA");
    assert_eq!(sa.initiator, !case.we_initiate);
    assert_eq!(sa.remote_id, "ours.ikemesh.test");
    assert_eq!((child.mode.as_str(), child.protocol.as_str()), ("TRANSPORT", "ESP"));
    assert_eq!(child.esn, case.esn, "ESN: {child:#?}");
    assert_eq!(Some(child.spi_in), IkePeer::spi(&child_up, "out"));
    report.line(format_args!(
        "IKE SA {} ({}), child SA {:08x}/{:08x} on both sides",
        charon_spis(&sa),
        sa.dh_group.as_deref().unwrap_or("?"),
        child.spi_in,
        child.spi_out
    ));
    // How charon checked our AUTH payload, and how we checked its.
    let log = charon.log();
    let theirs = log
        .lines()
        .find(|l| l.contains("authentication of 'ours.ikemesh.test' with"))
        .unwrap_or_else(|| panic!("charon logs how it checked us:\n{}", charon.log_tail(40)));
    let how = theirs.split(" with ").nth(1).unwrap_or_default();
    let rfc7427 = how.contains("WITH_SHA") || how.contains("ED25519");
    assert_eq!(rfc7427, !case.classic, "charon checked us {how}");
    report.line(format_args!("charon authenticated us with {how}"));
    report.line(check_traffic(case, a, b, &child));

    rekeys(case, (a, b), &charon, &mut ours, &mut report);
    deletes(case, &charon, &mut ours, &mut report);
    let lines = ours.quit().unwrap();
    for host in [a, b] {
        let left = host.run(&["ip", "xfrm", "state"]).unwrap();
        assert_eq!(left.trim(), "", "no SA left in {}: {lines:?}", host.name());
    }
    report.line("no SA left in either kernel");
    charon.stop().unwrap();
    report.lines
}

#[test]
fn ikemesh_and_charon_in_both_roles_with_ed25519_p256_and_classic_ecdsa() {
    guest_test_with_timeout(Duration::from_secs(300), || {
        let started = Instant::now();
        let mut cases = Vec::new();
        for we_initiate in [true, false] {
            cases.push(Case {
                key: KeyType::Ed25519,
                v6: false,
                ike: IKE_AES256GCM_X25519,
                esp: "aes256gcm16-x25519-noesn",
                groups: &["x25519"],
                esn: false,
                we_initiate,
                classic: false,
            });
            cases.push(Case {
                key: KeyType::EcdsaP256,
                v6: true,
                ike: IKE_AES256GCM_ECP256,
                esp: "aes256gcm16-ecp256-esn",
                groups: &["ecp256"],
                esn: true,
                we_initiate,
                classic: false,
            });
        }
        // ECDSA without RFC 7427, once in each role.
        for we_initiate in [true, false] {
            cases.push(Case {
                key: KeyType::EcdsaP256,
                v6: false,
                ike: IKE_AES256GCM_ECP256,
                esp: "aes256gcm16-ecp256-noesn",
                groups: &["ecp256"],
                esn: false,
                we_initiate,
                classic: true,
            });
        }
        // Two at a time, each in a net of its own.
        for pair in cases.chunks(2) {
            let reports: Vec<Vec<String>> = std::thread::scope(|s| {
                let running: Vec<_> = pair.iter().map(|c| s.spawn(|| run_case(c))).collect();
                running
                    .into_iter()
                    .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            });
            for (case, report) in pair.iter().zip(reports) {
                println!("{}:", case.name());
                for line in report {
                    println!("{line}");
                }
            }
        }
        println!("all {} cases done in {:.1} s", cases.len(), started.elapsed().as_secs_f64());
    });
}
