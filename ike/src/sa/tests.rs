//! The IKE SA between two in-memory peers: establishment with every algorithm, refusals,
//! tampering, loss, retransmission, deletes and liveness checks.

use super::*;
use crate::crypto::auth::{EcdsaP256Signer, EcdsaP256Verifier, Ed25519Signer, Ed25519Verifier};
use crate::crypto::auth::{SigAlg, Signer, Verifier};
use crate::crypto::sk::SkCipher;
use crate::crypto::tests::TestRng;
use crate::error::AuthFailure;
use crate::proposal::Policy;
use crate::wire::id::IdRepr;
use crate::wire::id::IdType;
use std::net::IpAddr;

/// Test stand-in for the `ca` crate: the "certificate" is the raw public key, and
/// the identity must be the one expected.
struct RawKeys {
    expect: IdRepr,
    ed25519: Option<[u8; 32]>,
    p256: Option<Vec<u8>>,
    /// An RSA key's `SubjectPublicKeyInfo`.
    rsa: Option<Vec<u8>>,
}

impl PeerAuthenticator for RawKeys {
    fn authenticate(
        &self,
        id: &IdRepr,
        certs: &[Vec<u8>],
    ) -> Result<Box<dyn Verifier>, Box<dyn std::error::Error + Send + Sync>> {
        if *id != self.expect {
            return Err(format!(
                "identity {:?} is not the expected peer",
                String::from_utf8_lossy(&id.data)
            )
            .into());
        }
        let cert = certs.first().ok_or("no certificate")?;
        match (&self.ed25519, &self.p256, &self.rsa) {
            (Some(k), _, _) if cert.as_slice() == k => {
                Ok(Box::new(Ed25519Verifier::from_bytes(k).ok_or("bad key")?))
            }
            (_, Some(k), _) if cert == k => {
                Ok(Box::new(EcdsaP256Verifier::from_sec1(k).ok_or("bad key")?))
            }
            (_, _, Some(k)) if cert == k => Ok(crate::crypto::auth::verifier_from_spki(k)?),
            _ => Err("certificate does not match the peer's key".into()),
        }
    }
}

pub(super) fn fqdn(name: &str) -> IdRepr {
    IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() }
}

pub(super) struct Side {
    signer: Arc<dyn Signer + Send + Sync>,
    cert: Vec<u8>,
    ed25519: Option<[u8; 32]>,
    p256: Option<Vec<u8>>,
    rsa: Option<Vec<u8>>,
}

pub(super) fn side(ecdsa: bool, seed: u8) -> Side {
    if ecdsa {
        let s = EcdsaP256Signer::from_bytes(&[seed; 32]).unwrap();
        let pk = s.public_key();
        Side { signer: Arc::new(s), cert: pk.clone(), ed25519: None, p256: Some(pk), rsa: None }
    } else {
        let s = Ed25519Signer::from_seed(&[seed; 32]);
        let pk = s.public_key();
        Side { signer: Arc::new(s), cert: pk.to_vec(), ed25519: Some(pk), p256: None, rsa: None }
    }
}

/// A side with the 2048-bit RSA test key (RSA-PSS with SHA-256 under RFC 7427).
pub(super) fn rsa_side() -> Side {
    use crate::crypto::auth::tests::vectors::{RSA2048_PKCS8, RSA2048_SPKI};
    let s = crate::crypto::auth::RsaSigner::from_pkcs8(RSA2048_PKCS8).unwrap();
    let spki = RSA2048_SPKI.to_vec();
    Side { signer: Arc::new(s), cert: spki.clone(), ed25519: None, p256: None, rsa: Some(spki) }
}

pub(super) fn config(
    me: &Side,
    my_name: &str,
    peer: &Side,
    peer_name: &str,
    policy: Policy,
    addrs: (&str, &str),
) -> Arc<Config> {
    Arc::new(Config {
        policy,
        local_id: fqdn(my_name),
        certs: vec![me.cert.clone()],
        signer: me.signer.clone(),
        authenticator: Arc::new(RawKeys {
            expect: fqdn(peer_name),
            ed25519: peer.ed25519,
            p256: peer.p256.clone(),
            rsa: peer.rsa.clone(),
        }),
        signature_algorithms: SigAlg::ALL.to_vec(),
        retransmit: Retransmit::default(),
        local_addr: addrs.0.parse().unwrap(),
        remote_addr: addrs.1.parse().unwrap(),
    })
}

/// Runs the exchanges between a fresh initiator and the responder its first request
/// creates, passing every datagram through `tamper`; returns both and the count of
/// datagrams exchanged.
pub(super) fn run(
    i_cfg: Arc<Config>,
    r_cfg: &Arc<Config>,
    rng: &mut TestRng,
    tamper: &mut dyn FnMut(usize, &mut Vec<u8>),
) -> (IkeSa, Option<IkeSa>, usize) {
    let now = Instant::now();
    let mut initiator = IkeSa::initiate(i_cfg, now, rng);
    let mut responder: Option<IkeSa> = None;
    let mut count = 0;
    for _ in 0..20 {
        let mut moved = false;
        while let Some(mut d) = initiator.poll_transmit() {
            tamper(count, &mut d);
            count += 1;
            moved = true;
            if let Some(r) = responder.as_mut() {
                r.handle(now, &d, rng);
            } else {
                let (sa, refusal) = IkeSa::respond(r_cfg.clone(), &d, rng);
                responder = sa;
                if let Some(mut answer) = refusal {
                    tamper(count, &mut answer);
                    count += 1;
                    initiator.handle(now, &answer, rng);
                }
            }
        }
        if let Some(r) = responder.as_mut() {
            while let Some(mut d) = r.poll_transmit() {
                tamper(count, &mut d);
                count += 1;
                moved = true;
                initiator.handle(now, &d, rng);
            }
        }
        if !moved {
            break;
        }
    }
    (initiator, responder, count)
}

pub(super) fn events(sa: &mut IkeSa) -> Vec<Event> {
    std::iter::from_fn(|| sa.poll_event()).collect()
}

pub(super) fn child(events: &[Event]) -> &ChildSa {
    events
        .iter()
        .find_map(|e| if let Event::ChildUp(c) = e { Some(c) } else { None })
        .expect("a child SA")
}

#[test]
fn every_group_and_signature_algorithm_establishes_ike_and_child_sas() {
    let mut rng = TestRng::new(11);
    for group in [Group::Curve25519, Group::Ecp256, Group::Modp2048] {
        for key in ["Ed25519", "ECDSA P-256", "RSA-PSS"] {
            let (alice, bob) = match key {
                "RSA-PSS" => (rsa_side(), rsa_side()),
                _ => (side(key != "Ed25519", 1), side(key != "Ed25519", 2)),
            };
            let policy = Policy { groups: vec![group], ..Policy::default() };
            let i_cfg =
                config(&alice, "a.mesh", &bob, "b.mesh", policy.clone(), ("10.0.0.1", "10.0.0.2"));
            let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", policy, ("10.0.0.2", "10.0.0.1"));
            let (mut init, resp, count) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
            let mut resp = resp.expect("responder created");
            assert_eq!(count, 4, "{group:?}/{key}: two exchanges");
            assert!(init.is_established() && resp.is_established(), "{group:?}/{key}");
            assert_eq!(init.algorithms().unwrap().group, group);
            let (ie, re) = (events(&mut init), events(&mut resp));
            assert!(
                matches!(&ie[0], Event::IkeUp { peer, .. } if peer.data == b"b.mesh"),
                "{ie:?}"
            );
            assert!(
                matches!(&re[0], Event::IkeUp { peer, .. } if peer.data == b"a.mesh"),
                "{re:?}"
            );
            let (ic, rc) = (child(&ie), child(&re));
            assert_eq!((ic.spi_out, ic.spi_in), (rc.spi_in, rc.spi_out), "SPIs pair up");
            assert_eq!(
                (ic.key_out.as_slice(), ic.key_in.as_slice()),
                (rc.key_in.as_slice(), rc.key_out.as_slice()),
                "keys pair up"
            );
            assert_ne!(ic.key_in.as_slice(), ic.key_out.as_slice());
            assert_eq!(ic.key_out.len(), 36, "AES-256 key and salt");
            assert_eq!((ic.local, ic.remote), (rc.remote, rc.local));
            assert!(ic.algorithms.esn && ic.algorithms.gcm_key_bits == 256);
        }
    }
}

#[test]
fn a_ke_of_the_wrong_group_is_retried_with_the_group_the_responder_wants() {
    let mut rng = TestRng::new(12);
    let (alice, bob) = (side(false, 1), side(false, 2));
    let i_policy = Policy { groups: vec![Group::Curve25519, Group::Ecp256], ..Policy::default() };
    let r_policy = Policy { groups: vec![Group::Ecp256], ..Policy::default() };
    let i_cfg = config(&alice, "a.mesh", &bob, "b.mesh", i_policy, ("10.0.0.1", "10.0.0.2"));
    let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", r_policy, ("10.0.0.2", "10.0.0.1"));
    let mut seen = Vec::new();
    let (init, resp, count) = run(i_cfg, &r_cfg, &mut rng, &mut |_, d| seen.push(d.clone()));
    assert!(init.is_established() && resp.unwrap().is_established());
    assert_eq!(count, 6, "request, INVALID_KE_PAYLOAD, request again, response, IKE_AUTH x2");
    let refusal = Message::parse(&seen[1]).unwrap();
    assert!(
        matches!(&refusal.payloads[0], Payload::Notify(n) if n.kind == NotifyType::InvalidKePayload && n.data == [0, 19])
    );
    assert_eq!(init.algorithms().unwrap().group, Group::Ecp256);
}

#[test]
fn no_common_proposal_fails_cleanly() {
    let mut rng = TestRng::new(13);
    let (alice, bob) = (side(false, 1), side(false, 2));
    let r_policy =
        Policy { ciphers: vec![SkCipher::AesCbcHmacSha256 { key_bits: 256 }], ..Policy::default() };
    let i_cfg =
        config(&alice, "a.mesh", &bob, "b.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2"));
    let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", r_policy, ("10.0.0.2", "10.0.0.1"));
    let (mut init, resp, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
    assert!(resp.is_none(), "the responder keeps no state");
    let ev = events(&mut init);
    assert!(
        matches!(
            &ev[..],
            [Event::Failed { error: Error::PeerRefused(NotifyType::NoProposalChosen) }]
        ),
        "{ev:?}"
    );
}

#[test]
fn a_wrong_key_or_identity_ends_in_authentication_failed() {
    let mut rng = TestRng::new(14);
    let (alice, bob, mallory) = (side(false, 1), side(false, 2), side(false, 3));
    // The responder expects a.mesh with a's key; mallory presents itself as a.mesh.
    let i_cfg =
        config(&mallory, "a.mesh", &bob, "b.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2"));
    let r_cfg =
        config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("10.0.0.2", "10.0.0.1"));
    let (mut init, resp, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
    let mut resp = resp.unwrap();
    let (ie, re) = (events(&mut init), events(&mut resp));
    assert!(
        matches!(&re[..], [Event::Failed { error }] if error.to_string().contains("does not match")),
        "{re:?}"
    );
    assert!(
        matches!(&ie[..], [Event::Failed { error: Error::Authentication(AuthFailure::Refused) }]),
        "{ie:?}"
    );
    assert!(!init.is_established() && !resp.is_established());
    // The initiator refuses a responder that is not who it expects.
    let i_cfg =
        config(&alice, "a.mesh", &bob, "c.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2"));
    let r_cfg =
        config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("10.0.0.2", "10.0.0.1"));
    let (mut init, _, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
    let ie = events(&mut init);
    assert!(
        matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("not the expected peer")),
        "{ie:?}"
    );
}

#[test]
fn tampered_datagrams_are_dropped_and_the_real_ones_still_work() {
    let mut rng = TestRng::new(15);
    let (alice, bob) = (side(true, 1), side(true, 2));
    let i_cfg = config(&alice, "a.mesh", &bob, "b.mesh", Policy::default(), ("fd00::1", "fd00::2"));
    let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("fd00::2", "fd00::1"));
    let now = Instant::now();
    let mut initiator = IkeSa::initiate(i_cfg, now, &mut rng);
    let first = initiator.poll_transmit().unwrap();
    let (r, _) = IkeSa::respond(r_cfg, &first, &mut rng);
    let mut responder = r.unwrap();
    let answer = responder.poll_transmit().unwrap();
    initiator.handle(now, &answer, &mut rng);
    let auth = initiator.poll_transmit().unwrap();
    for i in [30, auth.len() / 2, auth.len() - 1] {
        let mut forged = auth.clone();
        forged[i] ^= 0x80;
        responder.handle(now, &forged, &mut rng);
        assert!(responder.poll_transmit().is_none() && !responder.is_established(), "byte {i}");
    }
    responder.handle(now, &auth, &mut rng);
    let reply = responder.poll_transmit().unwrap();
    let mut forged = reply.clone();
    forged[40] ^= 1;
    initiator.handle(now, &forged, &mut rng);
    assert!(!initiator.is_established());
    initiator.handle(now, &reply, &mut rng);
    assert!(initiator.is_established() && responder.is_established());
    let ie = events(&mut initiator);
    assert_eq!(child(&ie).local.start, "fd00::1".parse::<IpAddr>().unwrap());
}

/// How the in-memory network mistreats datagrams, by their running number.
#[derive(Clone, Copy)]
struct Network {
    drop_every: usize,
    duplicate_every: usize,
    reorder: bool,
    /// Drop everything the responder sends.
    silent_responder: bool,
}

/// Runs both ends over a lossy network in virtual time (10 ms latency, +-5 ms when
/// reordering) until nothing is in flight and no timer is armed; returns both ends,
/// the virtual time taken and the datagrams the initiator sent.
fn run_lossy(
    i_cfg: Arc<Config>,
    r_cfg: &Arc<Config>,
    rng: &mut TestRng,
    net: Network,
) -> (IkeSa, Option<IkeSa>, Duration, usize) {
    let start = Instant::now();
    let mut now = start;
    let mut initiator = IkeSa::initiate(i_cfg, now, rng);
    let mut responder: Option<IkeSa> = None;
    // (deliver at, to the responder?, bytes)
    let mut flight: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
    let mut sent = 0usize;
    let mut initiator_sent = 0usize;
    for _ in 0..10_000 {
        let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
        while let Some(d) = initiator.poll_transmit() {
            out.push((true, d));
        }
        if let Some(r) = responder.as_mut() {
            while let Some(d) = r.poll_transmit() {
                out.push((false, d));
            }
        }
        for (to_responder, d) in out {
            sent += 1;
            initiator_sent += usize::from(to_responder);
            if (!to_responder && net.silent_responder)
                || (net.drop_every > 0 && sent.is_multiple_of(net.drop_every))
            {
                continue;
            }
            let jitter = if net.reorder && sent.is_multiple_of(2) { 15 } else { 5 };
            let copies = if net.duplicate_every > 0 && sent.is_multiple_of(net.duplicate_every) {
                2
            } else {
                1
            };
            for c in 0..copies {
                flight.push((
                    now + Duration::from_millis(jitter + 10 * c),
                    to_responder,
                    d.clone(),
                ));
            }
        }
        flight.sort_by_key(|f| f.0);
        let next_delivery = flight.first().map(|f| f.0);
        let next_timer = initiator.poll_timeout();
        let wake = match (next_delivery, next_timer) {
            (Some(d), Some(t)) => d.min(t),
            (Some(d), None) => d,
            (None, Some(t)) => t,
            (None, None) => break,
        };
        now = wake;
        if next_delivery == Some(wake) {
            let (_, to_responder, d) = flight.remove(0);
            if to_responder {
                if let Some(r) = responder.as_mut() {
                    r.handle(now, &d, rng);
                } else {
                    let (sa, refusal) = IkeSa::respond(r_cfg.clone(), &d, rng);
                    responder = sa;
                    if let Some(answer) = refusal {
                        flight.push((now + Duration::from_millis(10), false, answer));
                    }
                }
            } else {
                initiator.handle(now, &d, rng);
            }
        } else {
            initiator.handle_timeout(now, rng);
        }
    }
    (initiator, responder, now - start, initiator_sent)
}

pub(crate) fn pair_configs(rng_seed: u8) -> (Arc<Config>, Arc<Config>) {
    let (alice, bob) = (side(false, rng_seed), side(false, rng_seed + 1));
    (
        config(&alice, "a.mesh", &bob, "b.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2")),
        config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("10.0.0.2", "10.0.0.1")),
    )
}

#[test]
fn a_lossy_network_still_converges() {
    let mut rng = TestRng::new(16);
    // Dropping every 2nd datagram would drop every response forever: each request is
    // followed by exactly one answer.
    for (drop_every, duplicate_every, reorder) in
        [(3, 0, false), (3, 2, true), (0, 1, true), (5, 3, true)]
    {
        let (i_cfg, r_cfg) = pair_configs(1);
        let net = Network { drop_every, duplicate_every, reorder, silent_responder: false };
        let (mut init, resp, took, sent) = run_lossy(i_cfg, &r_cfg, &mut rng, net);
        let mut resp = resp.expect("responder created");
        assert!(
            init.is_established() && resp.is_established(),
            "drop {drop_every} dup {duplicate_every} reorder {reorder}"
        );
        let (ie, re) = (events(&mut init), events(&mut resp));
        // Each side reports the IKE SA and its child exactly once, duplicates or not.
        assert_eq!(ie.iter().filter(|e| matches!(e, Event::IkeUp { .. })).count(), 1);
        assert_eq!(re.iter().filter(|e| matches!(e, Event::ChildUp(_))).count(), 1);
        assert_eq!(child(&ie).spi_out, child(&re).spi_in);
        assert!(init.poll_timeout().is_none(), "nothing left to retransmit");
        assert!(took < Duration::from_secs(60), "took {took:?} with {sent} datagrams");
    }
}

#[test]
fn a_silent_peer_is_given_up_after_the_last_retransmission() {
    let mut rng = TestRng::new(17);
    let (i_cfg, r_cfg) = pair_configs(1);
    let net = Network { drop_every: 0, duplicate_every: 0, reorder: false, silent_responder: true };
    let (mut init, _, took, sent) = run_lossy(i_cfg, &r_cfg, &mut rng, net);
    let ie = events(&mut init);
    assert!(
        matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("did not answer (5 sends")),
        "{ie:?}"
    );
    assert_eq!(sent, 5, "the request went out five times");
    // 4 + 7.2 + 12.96 + 23.33 + 41.99 s of waiting, each shortened by up to 20%.
    assert!(took > Duration::from_secs(71) && took < Duration::from_secs(90), "{took:?}");
    assert!(init.poll_timeout().is_none() && !init.is_established());
}

/// An established pair (initiator, responder) with their set-up events drained.
pub(super) fn established(rng: &mut TestRng) -> (IkeSa, IkeSa) {
    let (i_cfg, r_cfg) = pair_configs(1);
    let (mut init, resp, _) = run(i_cfg, &r_cfg, rng, &mut |_, _| {});
    let mut resp = resp.unwrap();
    assert!(init.is_established() && resp.is_established());
    let _ = (events(&mut init), events(&mut resp));
    (init, resp)
}

/// Moves datagrams both ways until none is left; how many moved.
pub(super) fn shuttle(a: &mut IkeSa, b: &mut IkeSa, now: Instant, rng: &mut TestRng) -> usize {
    let mut moved = 0;
    loop {
        let mut any = false;
        while let Some(d) = a.poll_transmit() {
            b.handle(now, &d, rng);
            moved += 1;
            any = true;
        }
        while let Some(d) = b.poll_transmit() {
            a.handle(now, &d, rng);
            moved += 1;
            any = true;
        }
        if !any {
            return moved;
        }
    }
}

#[test]
fn either_side_deletes_the_ike_sa() {
    let mut rng = TestRng::new(18);
    let now = Instant::now();
    for initiator_deletes in [true, false] {
        let (mut init, mut resp) = established(&mut rng);
        let (del, other) =
            if initiator_deletes { (&mut init, &mut resp) } else { (&mut resp, &mut init) };
        assert!(del.delete(now, &mut rng));
        assert!(!del.delete(now, &mut rng), "one request at a time");
        assert_eq!(shuttle(del, other, now, &mut rng), 2);
        let (de, oe) = (events(del), events(other));
        assert!(matches!(&de[..], [Event::Closed { error: Error::DeletedByUs }]), "{de:?}");
        assert!(matches!(&oe[..], [Event::Closed { error: Error::DeletedByPeer }]), "{oe:?}");
        assert!(!del.is_established() && !other.is_established());
        assert!(del.poll_timeout().is_none());
    }
}

#[test]
fn a_child_sa_is_deleted_and_both_sides_name_the_same_spis() {
    let mut rng = TestRng::new(19);
    let now = Instant::now();
    let (i_cfg, r_cfg) = pair_configs(1);
    let (mut init, resp, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
    let mut resp = resp.unwrap();
    let (ie, re) = (events(&mut init), events(&mut resp));
    let (ic, rc) = (child(&ie), child(&re));
    assert!(!init.delete_child(now, 12345, &mut rng), "no such child");
    assert!(resp.delete_child(now, rc.spi_in, &mut rng));
    assert_eq!(shuttle(&mut resp, &mut init, now, &mut rng), 2);
    let (ie2, re2) = (events(&mut init), events(&mut resp));
    assert!(
        matches!(&ie2[..], [Event::ChildDown { spi_in, spi_out }] if *spi_in == ic.spi_in && *spi_out == ic.spi_out),
        "{ie2:?}"
    );
    assert!(
        matches!(&re2[..], [Event::ChildDown { spi_in, spi_out }] if *spi_in == rc.spi_in && *spi_out == rc.spi_out),
        "{re2:?}"
    );
    assert!(init.is_established() && resp.is_established(), "the IKE SA stays");
    assert!(!resp.delete_child(now, rc.spi_in, &mut rng), "gone already");
}

#[test]
fn liveness_checks_are_answered_and_a_dead_peer_is_found() {
    let mut rng = TestRng::new(20);
    let mut now = Instant::now();
    let (mut init, mut resp) = established(&mut rng);
    for _ in 0..3 {
        assert!(init.check_liveness(now, &mut rng));
        assert!(resp.check_liveness(now, &mut rng), "each side has its own window");
        shuttle(&mut init, &mut resp, now, &mut rng);
        assert!(matches!(&events(&mut init)[..], [Event::PeerAlive]));
        assert!(matches!(&events(&mut resp)[..], [Event::PeerAlive]));
    }
    // The responder goes silent: the initiator's check is retransmitted, then fails.
    assert!(init.check_liveness(now, &mut rng));
    let mut sends = 0;
    while let Some(deadline) = init.poll_timeout() {
        while init.poll_transmit().is_some() {
            sends += 1;
        }
        now = deadline;
        init.handle_timeout(now, &mut rng);
    }
    let ie = events(&mut init);
    assert_eq!(sends, 5);
    assert!(
        matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("did not answer")),
        "{ie:?}"
    );
}

#[test]
fn a_retransmitted_delete_is_answered_again_but_acted_on_once() {
    let mut rng = TestRng::new(21);
    let now = Instant::now();
    let (mut init, mut resp) = established(&mut rng);
    assert!(init.delete(now, &mut rng));
    let request = init.poll_transmit().unwrap();
    resp.handle(now, &request, &mut rng);
    let first = resp.poll_transmit().unwrap();
    resp.handle(now, &request, &mut rng);
    let again = resp.poll_transmit().unwrap();
    assert_eq!(first, again, "the same bytes");
    assert_eq!(events(&mut resp).len(), 1, "closed once");
    init.handle(now, &again, &mut rng);
    init.handle(now, &first, &mut rng);
    assert_eq!(events(&mut init).len(), 1);
}

#[test]
fn a_responder_under_load_asks_for_a_cookie_and_the_initiator_retries() {
    use crate::cookie::{Cookies, Gate};
    let mut rng = TestRng::new(22);
    let now = Instant::now();
    let (i_cfg, r_cfg) = pair_configs(1);
    let cookies = Cookies::new(&mut rng);
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
    let first = init.poll_transmit().unwrap();
    let Gate::Challenge(challenge) = cookies.gate(&first, peer, true) else {
        panic!("no challenge")
    };
    init.handle(now, &challenge, &mut rng);
    let second = init.poll_transmit().unwrap();
    assert!(
        matches!(Message::parse(&second).unwrap().payloads[0], Payload::Notify(ref n) if n.kind == NotifyType::Cookie)
    );
    assert_eq!(cookies.gate(&second, peer, true), Gate::Pass);
    let (r, _) = IkeSa::respond(r_cfg, &second, &mut rng);
    let mut resp = r.unwrap();
    let moved = shuttle(&mut resp, &mut init, now, &mut rng);
    assert_eq!(moved, 3, "IKE_SA_INIT response, then IKE_AUTH both ways");
    assert!(init.is_established() && resp.is_established());
}

#[test]
fn a_closed_port_brings_the_first_request_again_soon_and_still_ends_the_sa() {
    let mut rng = TestRng::new(18);
    let (i_cfg, _) = pair_configs(1);
    let over = i_cfg.retransmit.total_wait();
    let t0 = Instant::now();
    let mut init = IkeSa::initiate(i_cfg, t0, &mut rng);
    let first = init.poll_transmit().unwrap();
    let normal = init.poll_timeout().unwrap();
    assert!(normal >= t0 + Duration::from_millis(3200), "{:?}", normal - t0);
    // Port unreachable: the request goes again within QUICK_RETRY.
    assert!(init.unreachable(t0, &mut rng));
    let soon = init.poll_timeout().unwrap();
    assert!(soon <= t0 + QUICK_RETRY && soon > t0, "{:?}", soon - t0);
    // A second report before that changes nothing.
    assert!(!init.unreachable(t0, &mut rng));
    let mut now = soon;
    let (mut sends, mut quick, mut last_send) = (1, 0u32, t0);
    let mut longest_while_closed = Duration::ZERO;
    loop {
        init.handle_timeout(now, &mut rng);
        while let Some(d) = init.poll_transmit() {
            assert_eq!(d, first, "the same request");
            sends += 1;
            if now < t0 + over {
                longest_while_closed = longest_while_closed.max(now - last_send);
            }
            last_send = now;
        }
        if init.is_closed() {
            break;
        }
        // Each send is refused at once.
        quick += u32::from(init.unreachable(now, &mut rng));
        now = init.poll_timeout().unwrap();
    }
    // A daemon that starts any time while the usual tries would run is asked within
    // 2 s of it; the quick sends slow down from every 0.5 s to every 2 s.
    assert!(longest_while_closed <= 4 * QUICK_RETRY, "{longest_while_closed:?}");
    assert!(quick > u32::from(2 * CLOSED_STEP), "quick sends: {quick}");
    assert!(quick < 4 * u32::from(CLOSED_STEP) + (over.as_secs() / 2) as u32, "quick: {quick}");
    assert_eq!(sends, 5 + quick + 1, "five tries, plus the quick sends");
    assert_eq!(init.retransmissions(), sends - 1);
    // And it still ends: the tries run out after the quick sends stop.
    assert!(now <= t0 + 2 * over + 4 * QUICK_RETRY, "ended after {:?}", now - t0);
    let ev = events(&mut init);
    assert!(matches!(&ev[..], [Event::Failed { .. }]), "{ev:?}");
}

#[test]
fn knock_rechecks_are_not_used_up_by_a_closed_port() {
    let mut rng = TestRng::new(20);
    let (i_cfg, _) = pair_configs(1);
    let t0 = Instant::now();
    let mut init = IkeSa::initiate(i_cfg, t0, &mut rng);
    let _ = init.poll_transmit().unwrap();
    // The peer's daemon is starting: twenty sends refused.
    let mut now = t0;
    for _ in 0..20 {
        assert!(init.unreachable(now, &mut rng));
        now = init.poll_timeout().unwrap();
        init.handle_timeout(now, &mut rng);
        assert!(init.poll_transmit().is_some());
    }
    // It is up: a knock goes first, and its pinhole may open after the request
    // arrives. The recheck still has all its quick sends.
    let recheck = Duration::from_millis(300);
    let mut rechecks = 0;
    while init.hurry(now, recheck, &mut rng) {
        rechecks += 1;
        assert!(init.poll_timeout().unwrap() <= now + recheck);
        now = init.poll_timeout().unwrap();
        init.handle_timeout(now, &mut rng);
        assert!(init.poll_transmit().is_some());
    }
    assert_eq!(rechecks, u32::from(MAX_QUICK));
}

#[test]
fn an_answered_request_is_not_hurried_by_a_late_unreachable() {
    let mut rng = TestRng::new(19);
    let (mut init, _) = established(&mut rng);
    let now = Instant::now();
    assert!(!init.unreachable(now, &mut rng));
}
