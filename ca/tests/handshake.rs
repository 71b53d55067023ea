//! IKE handshakes between two in-memory `ike::sa::IkeSa` endpoints whose `Config`s are
//! built from real certificates, keys loaded by `ca::keys`, and `CertVerifier`s: what
//! establishes, and how each bad certificate ends the handshake.

mod common;

use ca::{CertVerifier, PeerId, PrivateKey, Revocation, TrustBundle, keys};
use common::{Alg, Ca, node_params, now, with_serial};
use ike::crypto::Random;
use ike::crypto::auth::SigAlg;
use ike::error::AuthFailure;
use ike::proposal::Policy;
use ike::sa::{Config, Event, IkeSa, Retransmit};
use ike::wire::id::{IdRepr, IdType};
use std::sync::Arc;
use std::time::Instant;

/// A deterministic generator for tests (splitmix64): reproducible, never for real keys.
struct TestRng(u64);

impl Random for TestRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// One side's credentials, loaded the way the daemon loads them (PEM through
/// `ca::keys`).
struct Node {
    id: IdRepr,
    certs: Vec<Vec<u8>>,
    key: PrivateKey,
    addr: &'static str,
}

impl Node {
    fn new(leaf: &common::Leaf, addr: &'static str) -> Node {
        let certs = keys::cert_chain_from_pem(leaf.pem.as_bytes()).unwrap();
        let key = PrivateKey::from_pem(leaf.key.serialize_pem().as_bytes()).unwrap();
        key.check_matches(&certs[0]).unwrap();
        Node { id: keys::ike_id(&certs[0]).unwrap(), certs, key, addr }
    }

    fn with_id(mut self, id: IdRepr) -> Node {
        self.id = id;
        self
    }
}

/// A verifier trusting `ca` that expects exactly `peer`.
fn expecting(ca: &Ca, peer: PeerId) -> CertVerifier {
    CertVerifier::new(TrustBundle::from_pem(ca.pem.as_bytes()).unwrap())
        .with_clock(now())
        .with_members(move |p: &PeerId| *p == peer)
}

fn config(me: &Node, verifier: CertVerifier, peer_addr: &str) -> Arc<Config> {
    Arc::new(Config {
        policy: Policy::default(),
        local_id: me.id.clone(),
        certs: me.certs.clone(),
        signer: me.key.signer(),
        authenticator: Arc::new(verifier),
        signature_algorithms: vec![SigAlg::Ed25519, SigAlg::EcdsaP256Sha256, SigAlg::RsaPssSha256],
        retransmit: Retransmit::default(),
        local_addr: me.addr.parse().unwrap(),
        remote_addr: peer_addr.parse().unwrap(),
    })
}

/// Runs the exchanges between a fresh initiator and the responder its first request
/// creates (the driver loop of the `ike` crate's own tests).
fn run(i_cfg: Arc<Config>, r_cfg: &Arc<Config>, rng: &mut TestRng) -> (IkeSa, Option<IkeSa>) {
    let now = Instant::now();
    let mut initiator = IkeSa::initiate(i_cfg, now, rng);
    let mut responder: Option<IkeSa> = None;
    for _ in 0..20 {
        let mut moved = false;
        while let Some(d) = initiator.poll_transmit() {
            moved = true;
            if let Some(r) = responder.as_mut() {
                r.handle(now, &d, rng);
            } else {
                let (sa, refusal) = IkeSa::respond(r_cfg.clone(), &d, rng);
                responder = sa;
                if let Some(answer) = refusal {
                    initiator.handle(now, &answer, rng);
                }
            }
        }
        if let Some(r) = responder.as_mut() {
            while let Some(d) = r.poll_transmit() {
                moved = true;
                initiator.handle(now, &d, rng);
            }
        }
        if !moved {
            break;
        }
    }
    (initiator, responder)
}

fn events(sa: &mut IkeSa) -> Vec<Event> {
    std::iter::from_fn(|| sa.poll_event()).collect()
}

/// Runs alice (initiator) against bob (responder); both must come up, each having
/// authenticated the other as expected.
fn establishes(alice: &Node, a_verifier: CertVerifier, bob: &Node, b_verifier: CertVerifier) {
    let mut rng = TestRng(1);
    let i_cfg = config(alice, a_verifier, bob.addr);
    let r_cfg = config(bob, b_verifier, alice.addr);
    let (mut init, resp) = run(i_cfg, &r_cfg, &mut rng);
    let mut resp = resp.expect("a responder");
    let (ie, re) = (events(&mut init), events(&mut resp));
    assert!(init.is_established() && resp.is_established(), "{ie:?} {re:?}");
    assert!(matches!(&ie[0], Event::IkeUp { peer, .. } if *peer == bob.id), "{ie:?}");
    assert!(matches!(&re[0], Event::IkeUp { peer, .. } if *peer == alice.id), "{re:?}");
    assert!(ie.iter().any(|e| matches!(e, Event::ChildUp(_))), "{ie:?}");
    assert!(re.iter().any(|e| matches!(e, Event::ChildUp(_))), "{re:?}");
}

/// The reason the one `Failed` event gives, if that is all there is.
fn failure(events: &[Event]) -> String {
    match events {
        [Event::Failed { error }] => error.to_string(),
        other => panic!("expected one Failed event, got {other:?}"),
    }
}

/// Runs alice against bob where bob must refuse alice's certificate with a reason that
/// contains `class`; alice must hear `AUTHENTICATION_FAILED`.
fn responder_refuses(alice: &Node, bob: &Node, b_verifier: CertVerifier, class: &str) {
    let mut rng = TestRng(2);
    let a_verifier = CertVerifier::new(TrustBundle::new()); // never reached
    let i_cfg = config(alice, a_verifier, bob.addr);
    let r_cfg = config(bob, b_verifier, alice.addr);
    let (mut init, resp) = run(i_cfg, &r_cfg, &mut rng);
    let mut resp = resp.expect("a responder");
    let (ie, re) = (events(&mut init), events(&mut resp));
    assert!(!init.is_established() && !resp.is_established());
    let refused = failure(&re);
    assert!(refused.contains(class), "responder: {refused}");
    assert!(refused.starts_with("IKE_AUTH: peer not authenticated: "), "{refused}");
    assert!(
        matches!(
            &ie[..],
            [Event::Failed { error: ike::Error::Authentication(AuthFailure::Refused) }]
        ),
        "initiator: {ie:?}"
    );
}

#[test]
fn ed25519_and_p256_nodes_establish_with_fqdn_ids() {
    for (ca_alg, alg) in [
        (Alg::Ed25519, Alg::Ed25519),
        (Alg::P256, Alg::P256),
        (Alg::Ed25519, Alg::P256),
        (Alg::P256, Alg::Ed25519),
    ] {
        let ca = Ca::new("mesh CA", ca_alg);
        let alice = Node::new(&ca.node(&["a.mesh"], alg), "10.0.0.1");
        let bob = Node::new(&ca.node(&["b.mesh"], alg), "10.0.0.2");
        assert_eq!(alice.id, IdRepr { id_type: IdType::Fqdn, data: b"a.mesh".to_vec() });
        establishes(
            &alice,
            expecting(&ca, PeerId::fqdn("b.mesh")),
            &bob,
            expecting(&ca, PeerId::fqdn("a.mesh")),
        );
    }
}

#[test]
fn rsa_nodes_establish() {
    for (ca_alg, a_alg, b_alg) in
        [(Alg::Rsa, Alg::Rsa, Alg::P256), (Alg::Ed25519, Alg::Ed25519, Alg::Rsa)]
    {
        let ca = Ca::new("mesh CA", ca_alg);
        let alice = Node::new(&ca.node(&["a.mesh"], a_alg), "10.0.0.1");
        let bob = Node::new(&ca.node(&["b.mesh"], b_alg), "10.0.0.2");
        establishes(
            &alice,
            expecting(&ca, PeerId::fqdn("b.mesh")),
            &bob,
            expecting(&ca, PeerId::fqdn("a.mesh")),
        );
    }
}

#[test]
fn an_ipv4_id_and_a_dn_id_establish() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let a_leaf = ca.node(&["a.mesh", "10.0.0.1"], Alg::P256);
    let alice = Node::new(&a_leaf, "10.0.0.1")
        .with_id(IdRepr { id_type: IdType::Ipv4Addr, data: vec![10, 0, 0, 1] });
    let b_leaf = ca.node(&["b.mesh"], Alg::Ed25519);
    let b_subject = {
        use x509_parser::prelude::{FromDer, X509Certificate};
        X509Certificate::from_der(&b_leaf.der).unwrap().1.subject().as_raw().to_vec()
    };
    let bob = Node::new(&b_leaf, "10.0.0.2")
        .with_id(IdRepr { id_type: IdType::DerAsn1Dn, data: b_subject.clone() });
    establishes(
        &alice,
        expecting(&ca, PeerId::dn_from_der(&b_subject).unwrap()),
        &bob,
        expecting(&ca, PeerId::Ip([10, 0, 0, 1].into())),
    );
}

#[test]
fn an_expired_certificate_ends_in_authentication_failed() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let mut p = node_params(&["a.mesh"]);
    p.not_before = rcgen::date_time_ymd(2029, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let alice = Node::new(&ca.issue(&p, Alg::Ed25519), "10.0.0.1");
    let bob = Node::new(&ca.node(&["b.mesh"], Alg::Ed25519), "10.0.0.2");
    responder_refuses(&alice, &bob, expecting(&ca, PeerId::fqdn("a.mesh")), "certificate expired");
}

#[test]
fn another_cas_certificate_ends_in_authentication_failed() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let other = Ca::new("other CA", Alg::Ed25519);
    let alice = Node::new(&other.node(&["a.mesh"], Alg::Ed25519), "10.0.0.1");
    let bob = Node::new(&ca.node(&["b.mesh"], Alg::Ed25519), "10.0.0.2");
    responder_refuses(&alice, &bob, expecting(&ca, PeerId::fqdn("a.mesh")), "unknown issuer");
}

#[test]
fn a_wrong_identity_ends_in_authentication_failed() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    // Alice's certificate is for a.mesh, but she claims c.mesh (a member bob expects).
    let alice = Node::new(&ca.node(&["a.mesh"], Alg::Ed25519), "10.0.0.1")
        .with_id(IdRepr { id_type: IdType::Fqdn, data: b"c.mesh".to_vec() });
    let bob = Node::new(&ca.node(&["b.mesh"], Alg::Ed25519), "10.0.0.2");
    responder_refuses(&alice, &bob, expecting(&ca, PeerId::fqdn("c.mesh")), "wrong identity");
    // Honest about being a.mesh, but bob expects only c.mesh.
    let alice = Node::new(&ca.node(&["a.mesh"], Alg::Ed25519), "10.0.0.1");
    responder_refuses(
        &alice,
        &bob,
        expecting(&ca, PeerId::fqdn("c.mesh")),
        "identity not a member",
    );
}

#[test]
fn a_revoked_certificate_ends_in_authentication_failed() {
    let ca = Ca::new("mesh CA", Alg::P256);
    let a_leaf = ca.issue(&with_serial(node_params(&["a.mesh"]), &[0x2a]), Alg::P256);
    let alice = Node::new(&a_leaf, "10.0.0.1");
    let bob = Node::new(&ca.node(&["b.mesh"], Alg::P256), "10.0.0.2");
    let bundle = TrustBundle::from_pem(ca.pem.as_bytes()).unwrap();
    let mut revocation = Revocation::new();
    revocation.add_crl(&bundle, ca.crl_pem(&[&[0x2a]], 1).as_bytes()).unwrap();
    let verifier = expecting(&ca, PeerId::fqdn("a.mesh")).with_revocation(revocation);
    responder_refuses(&alice, &bob, verifier, "revoked");
    // And by key hash.
    let mut revocation = Revocation::new();
    revocation.refuse_key_of(&a_leaf.der).unwrap();
    let verifier = expecting(&ca, PeerId::fqdn("a.mesh")).with_revocation(revocation);
    responder_refuses(&alice, &bob, verifier, "revoked: the public key");
}

#[test]
fn the_initiator_refuses_a_bad_responder_certificate_too() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let other = Ca::new("other CA", Alg::Ed25519);
    let alice = Node::new(&ca.node(&["a.mesh"], Alg::Ed25519), "10.0.0.1");
    let bob = Node::new(&other.node(&["b.mesh"], Alg::Ed25519), "10.0.0.2");
    let mut rng = TestRng(3);
    let i_cfg = config(&alice, expecting(&ca, PeerId::fqdn("b.mesh")), bob.addr);
    // Bob trusts both CAs, so he accepts alice; alice must refuse him.
    let both = format!("{}{}", ca.pem, other.pem);
    let b_verifier =
        CertVerifier::new(TrustBundle::from_pem(both.as_bytes()).unwrap()).with_clock(now());
    let r_cfg = config(&bob, b_verifier, alice.addr);
    let (mut init, _) = run(i_cfg, &r_cfg, &mut rng);
    assert!(!init.is_established());
    let reason = failure(&events(&mut init));
    assert!(reason.contains("unknown issuer") && reason.contains("other CA"), "{reason}");
}
