//! IKE behind Single Packet Authorization, end to end between two namespaced hosts (host
//! kernel): B's IKE port is dark (nftables pinholes, `inet ikemesh`) and its SPA gate
//! listens; an initiator that does not knock never gets an answer, one that knocks
//! before its IKE requests (`ike-peer --spa-secret`) establishes, and knocks again
//! before its later requests (a rekey).
#![allow(clippy::print_stdout)] // the steps it prints are its report

use ikemesh_interop::{IkePeer, KeyType, PeerOptions, TestCa};
use ikemesh_testbed::Net;
use policy::spa::{GateConfig, Gatekeeper, SpaKeys};
use policy::{PinholeConfig, Pinholes, SpaGate};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SPA_PORT: u16 = 62201;

#[test]
fn ike_behind_spa_needs_the_knock_and_gets_through_with_it() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let ca = TestCa::new(KeyType::Ed25519).unwrap();
    let (id_a, id_b) = (ca.issue("a.ikemesh.test").unwrap(), ca.issue("b.ikemesh.test").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("spa.secret");
    std::fs::write(
        &secret,
        [0x5a_u8; 32].iter().zip(0u8..).map(|(x, i)| x ^ i).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    // B: the pinhole table, and the SPA gate on a thread inside B's namespace.
    let pinholes = || Pinholes::new(PinholeConfig::default()).unwrap();
    b.enter(|| pinholes().install()).unwrap().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gate_addr = std::net::SocketAddr::new(b.addr(false), SPA_PORT);
    let keys_path = secret.clone();
    std::thread::scope(|scope| {
        let gate = scope.spawn(move || {
            b.enter(move || {
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let keeper =
                        Gatekeeper::new(SpaKeys::load(&keys_path).unwrap(), GateConfig::default())
                            .unwrap();
                    let mut gate =
                        SpaGate::bind(gate_addr, keeper, pinholes(), Duration::from_secs(30))
                            .await
                            .unwrap();
                    tokio::select! {
                        r = gate.run() => r.unwrap(),
                        _ = stopped => {}
                    }
                    gate.stats()
                })
            })
            .unwrap()
        });

        let options =
            |id: &ikemesh_interop::Identity, peer: &str, local, remote, initiate, extra| {
                let bin = PathBuf::from(env!("CARGO_BIN_EXE_ike-peer"));
                let base = PeerOptions::new(bin, id, ca.cert_pem(), peer, (local, remote));
                PeerOptions { initiate, extra, ..base }
            };
        let (addr_a, addr_b) = (a.addr(false), b.addr(false));
        let mut pb =
            IkePeer::start(b, &options(&id_b, &id_a.id, addr_b, addr_a, false, vec![])).unwrap();

        // Without a knock: IKE_SA_INIT and its first retransmission (4 s) go unanswered.
        let mut silent =
            IkePeer::start(a, &options(&id_a, &id_b.id, addr_a, addr_b, true, vec![])).unwrap();
        let err = silent.expect("ike-up", Duration::from_secs(5)).unwrap_err();
        println!("without a knock: {err}");
        assert!(err.to_string().contains("no \"ike-up\""), "{err}");
        silent.quit().unwrap();

        // With the mesh's SPA secret: a knock, then IKE.
        let extra = vec![
            "--spa-secret".to_string(),
            secret.display().to_string(),
            "--spa-port".into(),
            SPA_PORT.to_string(),
        ];
        let started = Instant::now();
        let mut pa =
            IkePeer::start(a, &options(&id_a, &id_b.id, addr_a, addr_b, true, extra)).unwrap();
        pa.expect("knocked", Duration::from_secs(5)).unwrap();
        pa.expect("ike-up", Duration::from_secs(5)).unwrap();
        pb.expect("ike-up", Duration::from_secs(5)).unwrap();
        println!(
            "with a knock: IKE SA up {:.0} ms after start",
            started.elapsed().as_secs_f64() * 1e3
        );
        std::thread::sleep(Duration::from_millis(1100)); // the knocker's least gap
        pa.command("rekey-ike").unwrap();
        pa.expect("knocked", Duration::from_secs(5)).unwrap();
        pa.expect("ike-rekeyed", Duration::from_secs(5)).unwrap();
        pb.expect("ike-rekeyed", Duration::from_secs(5)).unwrap();
        println!("a rekey later: knocked again first, rekeyed");

        stop.send(()).unwrap();
        let stats = gate.join().unwrap();
        println!("gate: {stats:?}");
        assert!(stats.admitted >= 2, "{stats:?}");
        println!("A said: {:?}", pa.quit().unwrap());
    });
    b.enter(|| pinholes().remove()).unwrap().unwrap();
}
