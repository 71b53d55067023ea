//! The strongSwan harness proves itself: charon against charon, in the stock-kernel VM.
//!
//! Two namespaced hosts each run a [`Charon`]; A initiates a transport-mode child SA,
//! both sides must list the same IKE SA (SPIs, algorithms) and matching child SAs, UDP
//! between them must cross the link as ESP under the child's SPI and never in the clear,
//! and each rekeying and deletion must show on both sides. Once with Ed25519
//! certificates over IPv4 (X25519, no ESN), once with ECDSA P-256 over IPv6 (P-256,
//! ESN). This is the harness's own test; the interop tests pit charon against ikemesh.
#![allow(clippy::print_stdout)] // the SPIs, algorithms and timings it prints are its report

use ikemesh_interop::charon::{
    ESP_AES256GCM, ESP_AES256GCM_ESN, IKE_AES256GCM_ECP256, IKE_AES256GCM_X25519,
};
use ikemesh_interop::{Charon, CharonConfig, ChildSa, Connection, IkeSa, KeyType, Report, TestCa};
use ikemesh_testbed::vm::guest_test_with_timeout;
use ikemesh_testbed::{Host, Net};
use std::time::{Duration, Instant};

const CONN: &str = "peer";
const PORT: u16 = 5601;
const DATAGRAMS: u32 = 10;
const MARKER: &[u8] = b"IKEMESH-INTEROP-PLAINTEXT";

struct Case {
    key: KeyType,
    v6: bool,
    ike: &'static str,
    esp: &'static str,
    dh_group: &'static str,
    esn: bool,
}

/// The one IKE SA of `CONN` and its one installed child.
fn one_sa(sas: &[IkeSa]) -> (IkeSa, ChildSa) {
    assert_eq!(sas.len(), 1, "one IKE SA: {sas:#?}");
    let sa = sas[0].clone();
    let child =
        sa.installed_child(CONN).unwrap_or_else(|| panic!("installed child: {sa:#?}")).clone();
    (sa, child)
}

/// Checks that A's and B's views are of the same SAs, with the expected algorithms.
fn check_pair(case: &Case, a: &Charon, b: &Charon) -> (IkeSa, ChildSa, ChildSa) {
    let (sa_a, child_a) = one_sa(&a.list_sas().unwrap());
    // B may still be installing when A's initiate returns: wait for B's child.
    let listed_by_b = b
        .wait_for_sas("B's child SA", Duration::from_secs(10), |sas| {
            sas.len() == 1
                && sas[0].installed_child(CONN).is_some_and(|c| c.spi_in == child_a.spi_out)
        })
        .unwrap();
    let (sa_b, child_b) = one_sa(&listed_by_b);
    for (sa, initiator) in [(&sa_a, true), (&sa_b, false)] {
        assert!(sa.is_established(), "{sa:#?}");
        assert_eq!(sa.initiator, initiator);
        assert_eq!(sa.encr_alg.as_deref(), Some("AES_GCM_16"));
        assert_eq!(sa.encr_keysize, Some(256));
        assert_eq!(sa.prf_alg.as_deref(), Some("PRF_HMAC_SHA2_256"));
        assert_eq!(sa.dh_group.as_deref(), Some(case.dh_group));
    }
    assert_eq!(sa_a.spis(), sa_b.spis(), "both sides list the same IKE SA");
    assert_ne!(sa_a.responder_spi, 0);
    assert_eq!(
        (sa_a.local_id.as_str(), sa_a.remote_id.as_str()),
        ("a.ikemesh.test", "b.ikemesh.test")
    );
    assert_eq!(
        (sa_b.local_id.as_str(), sa_b.remote_id.as_str()),
        ("b.ikemesh.test", "a.ikemesh.test")
    );
    for child in [&child_a, &child_b] {
        assert_eq!((child.mode.as_str(), child.protocol.as_str()), ("TRANSPORT", "ESP"));
        assert_eq!(child.encr_alg.as_deref(), Some("AES_GCM_16"));
        assert_eq!(child.esn, case.esn, "ESN as proposed: {child:#?}");
        assert!(!child.encap);
    }
    assert_eq!((child_a.spi_in, child_a.spi_out), (child_b.spi_out, child_b.spi_in));
    (sa_a, child_a, child_b)
}

/// Sends UDP from A to B and checks it crossed the link as ESP under `spi` (A's
/// outbound SPI), and never in the clear; a line for the report.
fn check_esp(case: &Case, a: &Host, b: &Host, spi: u32) -> String {
    let capture = a.capture("eth0", "").unwrap();
    let got = a.udp_to(b, case.v6, PORT, DATAGRAMS, MARKER, Duration::from_millis(5)).unwrap();
    let frames = capture.stop().unwrap();
    let esp = frames.iter().filter(|f| f.is_esp() && f.is_ipv6() == case.v6).count();
    let esp_spi = frames.iter().filter(|f| f.is_esp() && f.contains(&spi.to_be_bytes())).count();
    let clear = frames.iter().filter(|f| f.contains(MARKER)).count();
    assert_eq!(got, DATAGRAMS, "every datagram arrived");
    assert!(esp_spi >= DATAGRAMS as usize, "the datagrams crossed as ESP under SPI {spi:08x}");
    assert_eq!(clear, 0, "no plaintext on the link");
    format!(
        "UDP A->B: {got}/{DATAGRAMS} arrived; link: {} frames, {esp} ESP, {esp_spi} with SPI \
         {spi:08x}, {clear} with the plaintext",
        frames.len()
    )
}

/// One case in a net of its own; its report.
fn run_case(case: &Case) -> Vec<String> {
    let mut report = Report::new();
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let ca = TestCa::new(case.key).unwrap();
    let (id_a, id_b) = std::thread::scope(|s| {
        let id_b = s.spawn(|| ca.issue("b.ikemesh.test").unwrap());
        (
            ca.issue("a.ikemesh.test").unwrap(),
            id_b.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    report.line(format_args!("certificates issued ({})", case.key));
    let conn = |me: &Host, peer: &Host, peer_id: &str| {
        Connection::host_to_host(CONN, me.addr(case.v6), peer.addr(case.v6), peer_id)
            .with_ike_proposals(&[case.ike])
            .with_esp_proposals(&[case.esp])
    };
    let config_a =
        CharonConfig::new(id_a.clone(), ca.cert_pem().to_owned(), vec![conn(a, b, &id_b.id)]);
    let config_b = CharonConfig::new(id_b, ca.cert_pem().to_owned(), vec![conn(b, a, &id_a.id)]);
    let (charon_a, charon_b) = std::thread::scope(|s| {
        let charon_b = s.spawn(|| Charon::start(b, config_b).unwrap());
        (
            Charon::start(a, config_a).unwrap(),
            charon_b.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    report.line("both charons up, configuration loaded");

    charon_a.initiate(CONN).unwrap();
    let (sa, child_a, _) = check_pair(case, &charon_a, &charon_b);
    report.line(format_args!(
        "established: IKE SA {:016x}_i {:016x}_r {}, child SA {:08x}_i {:08x}_o",
        sa.initiator_spi,
        sa.responder_spi,
        sa.dh_group.as_deref().unwrap_or("?"),
        child_a.spi_in,
        child_a.spi_out
    ));
    report.line(check_esp(case, a, b, child_a.spi_out));
    let on_b = charon_b.list_sas().unwrap()[0].installed_child(CONN).unwrap().clone();
    assert!(on_b.packets_in >= u64::from(DATAGRAMS), "B's kernel counted them: {on_b:#?}");

    // Child rekey, initiated by A.
    let rekeyed = charon_a.rekey_child(CONN).unwrap();
    assert_ne!((rekeyed.spi_in, rekeyed.spi_out), (child_a.spi_in, child_a.spi_out));
    let (_, child_a2, _) = check_pair(case, &charon_a, &charon_b);
    assert_eq!(child_a2.spi_in, rekeyed.spi_in);
    report.line(format_args!(
        "child SA rekeyed by A: {:08x}_i {:08x}_o",
        child_a2.spi_in, child_a2.spi_out
    ));
    report.line(check_esp(case, a, b, child_a2.spi_out));
    assert_eq!(charon_a.rekey_counts().unwrap(), (0, 1));
    assert_eq!(charon_b.rekey_counts().unwrap(), (0, 1));

    // IKE rekey, initiated by B (the original responder).
    let new_b = charon_b.rekey_ike(CONN).unwrap();
    assert_ne!(new_b.spis(), sa.spis());
    let sas_a = charon_a
        .wait_for_sas("A sees the new IKE SA", Duration::from_secs(10), |sas| {
            sas.len() == 1 && sas[0].spis() == new_b.spis() && sas[0].is_established()
        })
        .unwrap();
    assert_eq!(
        sas_a[0].installed_child(CONN).map(|c| c.spi_in),
        Some(child_a2.spi_in),
        "the child SA moved to the new IKE SA"
    );
    assert_eq!(charon_a.rekey_counts().unwrap(), (1, 1));
    assert_eq!(charon_b.rekey_counts().unwrap(), (1, 1));
    report.line(format_args!(
        "IKE SA rekeyed by B: {:016x}_i {:016x}_r, child SA moved to it",
        new_b.initiator_spi, new_b.responder_spi
    ));

    // Deletes, by A: the child, then the IKE SA.
    charon_a.terminate_child(CONN).unwrap();
    charon_b
        .wait_for_sas("B deletes the child SA", Duration::from_secs(10), |sas| {
            sas.len() == 1 && sas[0].is_established() && sas[0].children.is_empty()
        })
        .unwrap();
    report.line("child SA deleted by A, and on B");
    charon_a.terminate_ike(CONN).unwrap();
    charon_b
        .wait_for_sas("B deletes the IKE SA", Duration::from_secs(10), <[IkeSa]>::is_empty)
        .unwrap();
    report.line("IKE SA deleted by A, and on B");
    for host in [a, b] {
        assert_eq!(
            host.run(&["ip", "xfrm", "state"]).unwrap().trim(),
            "",
            "no SA left in {}",
            host.name()
        );
    }
    report.line("no SA left in either kernel");
    charon_a.stop().unwrap();
    charon_b.stop().unwrap();
    report.line("both charons stopped");
    report.lines
}

#[test]
fn charon_to_charon_transport_mode_with_ed25519_and_p256() {
    guest_test_with_timeout(Duration::from_secs(120), || {
        let started = Instant::now();
        let cases = [
            Case {
                key: KeyType::Ed25519,
                v6: false,
                ike: IKE_AES256GCM_X25519,
                esp: ESP_AES256GCM,
                dh_group: "CURVE_25519",
                esn: false,
            },
            Case {
                key: KeyType::EcdsaP256,
                v6: true,
                ike: IKE_AES256GCM_ECP256,
                esp: ESP_AES256GCM_ESN,
                dh_group: "ECP_256",
                esn: true,
            },
        ];
        // The cases run at once, each in a net of its own: four charons in one machine,
        // which their private PID files and sockets allow.
        let reports: Vec<Vec<String>> = std::thread::scope(|s| {
            let running: Vec<_> = cases.iter().map(|case| s.spawn(|| run_case(case))).collect();
            running
                .into_iter()
                .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for (case, report) in cases.iter().zip(reports) {
            println!(
                "{} certificates over {}, {} / {}:",
                case.key,
                if case.v6 { "IPv6" } else { "IPv4" },
                case.ike,
                case.esp
            );
            for line in report {
                println!("{line}");
            }
        }
        println!("both cases done in {:.1} s", started.elapsed().as_secs_f64());
    });
}

/// On the build host's kernel too (IKE needs no ESP): a child SA that cannot be agreed
/// on fails `initiate` with charon's reasons in the error, and the IKE SA stays up.
#[test]
fn a_failed_initiate_reports_why() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let ca = TestCa::new(KeyType::Ed25519).unwrap();
    let (id_a, id_b) = (ca.issue("a.ikemesh.test").unwrap(), ca.issue("b.ikemesh.test").unwrap());
    let conn_a = Connection::host_to_host(CONN, a.ipv4().into(), b.ipv4().into(), &id_b.id);
    let conn_b = Connection::host_to_host(CONN, b.ipv4().into(), a.ipv4().into(), &id_a.id)
        .with_esp_proposals(&["aes128gcm16"]);
    let charon_a =
        Charon::start(a, CharonConfig::new(id_a, ca.cert_pem().to_owned(), vec![conn_a])).unwrap();
    let charon_b =
        Charon::start(b, CharonConfig::new(id_b, ca.cert_pem().to_owned(), vec![conn_b])).unwrap();
    let err = charon_a.initiate(CONN).unwrap_err().to_string();
    assert!(err.contains("initiate failed"), "{err}");
    assert!(err.contains("NO_PROPOSAL_CHOSEN"), "the log tail says why: {err}");
    for charon in [&charon_a, &charon_b] {
        let sas = charon.list_sas().unwrap();
        assert_eq!(sas.len(), 1, "{sas:#?}");
        assert!(sas[0].is_established() && sas[0].children.is_empty(), "{sas:#?}");
    }
    assert!(charon_b.log().contains("no acceptable proposal found"), "{}", charon_b.log_tail(20));
}
