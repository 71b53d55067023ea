//! `ike-peer` against itself over real UDP between two namespaced hosts (on the build
//! host's kernel: IKE only, no ESP): establishment, rekeys and deletes from either side,
//! with certificates from strongSwan's `pki`, Ed25519 and ECDSA P-256 (SEC1 keys).
#![allow(clippy::print_stdout)] // the event lines it prints are its report

use ikemesh_interop::{IkePeer, KeyType, PeerOptions, TestCa};
use ikemesh_testbed::Net;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn options(
    ca: &TestCa,
    id: &ikemesh_interop::Identity,
    peer: &str,
    addrs: (std::net::IpAddr, std::net::IpAddr),
    initiate: bool,
) -> PeerOptions {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ike-peer"));
    PeerOptions { initiate, ..PeerOptions::new(bin, id, ca.cert_pem(), peer, addrs) }
}

#[test]
fn two_ike_peers_establish_rekey_and_delete_over_udp() {
    for (key, v6) in [(KeyType::Ed25519, false), (KeyType::EcdsaP256, true)] {
        let net = Net::new(2).unwrap();
        let (a, b) = (net.host(0), net.host(1));
        let ca = TestCa::new(key).unwrap();
        let (id_a, id_b) =
            (ca.issue("a.ikemesh.test").unwrap(), ca.issue("b.ikemesh.test").unwrap());
        let (addr_a, addr_b) = (a.addr(v6), b.addr(v6));
        let mut pb =
            IkePeer::start(b, &options(&ca, &id_b, &id_a.id, (addr_b, addr_a), false)).unwrap();
        let mut pa =
            IkePeer::start(a, &options(&ca, &id_a, &id_b.id, (addr_a, addr_b), true)).unwrap();
        if let Err(e) = pa.expect("ike-up", WAIT) {
            std::thread::sleep(Duration::from_millis(200));
            let _ = pb.expect("never", Duration::from_millis(100));
            panic!("{e}\nB said: {:?}", pb.seen());
        }
        pb.expect("ike-up", WAIT).unwrap();
        let (up_a, up_b) =
            (pa.expect("child-up", WAIT).unwrap(), pb.expect("child-up", WAIT).unwrap());
        assert_eq!(IkePeer::spi(&up_a, "in"), IkePeer::spi(&up_b, "out"), "{up_a} / {up_b}");
        // Each side rekeys the child and the IKE SA once; each side deletes something.
        pa.command("rekey-child").unwrap();
        for p in [&mut pa, &mut pb] {
            p.expect("child-rekeyed", WAIT).unwrap();
            p.expect("child-down", WAIT).unwrap();
        }
        pb.command("rekey-child").unwrap();
        for p in [&mut pa, &mut pb] {
            p.expect("child-rekeyed", WAIT).unwrap();
            p.expect("child-down", WAIT).unwrap();
        }
        pb.command("rekey-ike").unwrap();
        let (ra, rb) =
            (pa.expect("ike-rekeyed", WAIT).unwrap(), pb.expect("ike-rekeyed", WAIT).unwrap());
        assert_eq!(ra, rb, "the same new SPIs");
        pa.command("rekey-ike").unwrap();
        let (ra, rb) =
            (pa.expect("ike-rekeyed", WAIT).unwrap(), pb.expect("ike-rekeyed", WAIT).unwrap());
        assert_eq!(ra, rb);
        pa.command("liveness").unwrap();
        pa.expect("alive", WAIT).unwrap();
        pb.command("delete-child").unwrap();
        for p in [&mut pa, &mut pb] {
            p.expect("child-down", WAIT).unwrap();
        }
        pa.command("delete").unwrap();
        pa.expect("closed deleted by us", WAIT).unwrap();
        pb.expect("closed deleted by the peer", WAIT).unwrap();
        let (la, lb) = (pa.quit().unwrap(), pb.quit().unwrap());
        println!("{key} over IPv{}:\n  A: {la:?}\n  B: {lb:?}", if v6 { 6 } else { 4 });
    }
}
