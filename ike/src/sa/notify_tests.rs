//! Private use status notifications and `INITIAL_CONTACT` between two in-memory peers.

use super::tests::*;
use super::*;
use crate::crypto::sk::open;
use crate::crypto::tests::TestRng;
use crate::proposal::Policy;
use crate::wire::notify::NotifyRepr;
use crate::wire::{delete::DeleteRepr, sa::ProtocolId};
use std::net::IpAddr;

/// The private use status notifications among `events`, as (type, data).
fn peer_notifies(events: &[Event]) -> Vec<(u16, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerNotify { kind, data } => Some((*kind, data.clone())),
            _ => None,
        })
        .collect()
}

/// Sends `payloads` as `sa`'s next request, as if it had asked `asked`.
fn send_raw(sa: &mut IkeSa, asked: Asked, payloads: &[Payload], rng: &mut TestRng) {
    let State::Established(mut e) = std::mem::replace(&mut sa.state, State::Dead) else {
        panic!("not established")
    };
    sa.send_asked(Instant::now(), rng, &mut e, asked, payloads);
    sa.state = State::Established(e);
}

/// The payloads of `datagram`, a response to `to`'s request.
fn response_payloads(to: &IkeSa, datagram: &[u8]) -> Vec<Payload> {
    let State::Established(e) = &to.state else { panic!("not established") };
    let opened = open(&e.keys.sk(to.role == Role::Responder), datagram).unwrap();
    assert!(opened.header.flags.response);
    opened.payloads
}

fn first_child(sa: &IkeSa) -> u32 {
    let State::Established(e) = &sa.state else { panic!("not established") };
    e.children[0].spi_in
}

#[test]
fn a_private_notify_is_delivered_once_each_way_with_its_type_and_data() {
    let mut rng = TestRng::new(70);
    let now = Instant::now();
    let (mut init, mut resp) = established(&mut rng);
    let cases: [(u16, Vec<u8>); 3] =
        [(40960, b"use".to_vec()), (65535, Vec::new()), (50000, vec![0xa5; MAX_NOTIFY_DATA])];
    for by_initiator in [true, false] {
        let (x, y) = if by_initiator { (&mut init, &mut resp) } else { (&mut resp, &mut init) };
        for (kind, data) in &cases {
            assert!(x.notify(now, *kind, data.clone(), &mut rng));
            let request = x.poll_transmit().unwrap();
            assert!(x.poll_transmit().is_none(), "one request");
            // On the wire: one Notify payload, no protocol, no SPI.
            let State::Established(e) = &y.state else { panic!() };
            let opened = open(&e.keys.sk(y.role == Role::Responder), &request).unwrap();
            assert_eq!(opened.header.exchange_type, ExchangeType::Informational);
            assert!(matches!(&opened.payloads[..], [Payload::Notify(n)]
                if n.protocol.is_none() && n.spi.is_empty()
                    && u16::from(n.kind) == *kind && n.data == *data));
            y.handle(now, &request, &mut rng);
            let answer = y.poll_transmit().unwrap();
            assert!(response_payloads(x, &answer).is_empty(), "an empty answer");
            x.handle(now, &answer, &mut rng);
            assert_eq!(peer_notifies(&events(y)), [(*kind, data.clone())]);
            assert!(events(x).is_empty(), "no event for our own notify's answer");
            assert!(x.poll_timeout().is_none(), "answered: nothing to retransmit");
        }
    }
    assert!(init.is_established() && resp.is_established());
}

#[test]
fn a_retransmitted_notify_is_answered_again_but_raises_one_event() {
    let mut rng = TestRng::new(71);
    let mut now = Instant::now();
    let (mut init, mut resp) = established(&mut rng);
    // A duplicate on the wire.
    assert!(init.notify(now, 41000, b"require".to_vec(), &mut rng));
    let request = init.poll_transmit().unwrap();
    resp.handle(now, &request, &mut rng);
    let first = resp.poll_transmit().unwrap();
    resp.handle(now, &request, &mut rng);
    assert_eq!(resp.poll_transmit().unwrap(), first, "answered from the cache");
    assert_eq!(peer_notifies(&events(&mut resp)), [(41000, b"require".to_vec())]);
    init.handle(now, &first, &mut rng);
    init.handle(now, &first, &mut rng);
    assert!(events(&mut init).is_empty() && init.poll_timeout().is_none());
    // A retransmission by the sender, whose first answer was lost.
    assert!(resp.notify(now, 41001, b"use".to_vec(), &mut rng));
    let request = resp.poll_transmit().unwrap();
    init.handle(now, &request, &mut rng);
    let _lost = init.poll_transmit().unwrap();
    now = resp.poll_timeout().unwrap();
    resp.handle_timeout(now, &mut rng);
    let again = resp.poll_transmit().expect("retransmitted");
    assert_eq!(again, request);
    init.handle(now, &again, &mut rng);
    shuttle(&mut init, &mut resp, now, &mut rng);
    assert_eq!(peer_notifies(&events(&mut init)), [(41001, b"use".to_vec())]);
    assert!(events(&mut resp).is_empty() && resp.poll_timeout().is_none());
    // A late duplicate of an older request, after a newer one was answered: dropped.
    assert!(resp.notify(now, 41002, Vec::new(), &mut rng));
    shuttle(&mut init, &mut resp, now, &mut rng);
    assert_eq!(peer_notifies(&events(&mut init)), [(41002, Vec::new())]);
    init.handle(now, &request, &mut rng);
    assert!(init.poll_transmit().is_none() && events(&mut init).is_empty());
}

#[test]
fn notifies_on_a_lossy_network_arrive_once_each_and_in_order() {
    for (seed, drop_every) in [(72, 3), (73, 4), (74, 7)] {
        let mut rng = TestRng::new(seed);
        let now = Instant::now();
        let (mut init, mut resp) = established(&mut rng);
        let sent: Vec<(u16, Vec<u8>)> =
            (0..6u16).map(|i| (40960 + i, vec![u8::try_from(i).unwrap(); 3])).collect();
        for (kind, data) in &sent {
            assert!(init.notify(now, *kind, data.clone(), &mut rng));
            assert!(resp.notify(now, *kind + 100, data.clone(), &mut rng));
        }
        super::rekey_tests::drive_lossy(&mut init, &mut resp, now, &mut rng, drop_every);
        let (ie, re) = (events(&mut init), events(&mut resp));
        assert_eq!(peer_notifies(&re), sent, "drop every {drop_every}");
        let from_resp: Vec<_> = sent.iter().map(|(k, d)| (k + 100, d.clone())).collect();
        assert_eq!(peer_notifies(&ie), from_resp, "drop every {drop_every}");
        assert!(init.is_established() && resp.is_established(), "{ie:?} {re:?}");
    }
}

#[test]
fn a_notify_queued_behind_another_request_is_sent_after_it() {
    let mut rng = TestRng::new(75);
    let now = Instant::now();
    // Behind a liveness check, and another notify.
    let (mut init, mut resp) = established(&mut rng);
    assert!(init.check_liveness(now, &mut rng));
    assert!(init.notify(now, 40961, b"one".to_vec(), &mut rng));
    assert!(init.notify(now, 40961, b"one".to_vec(), &mut rng), "the same again is sent");
    assert!(init.notify(now, 40962, b"two".to_vec(), &mut rng));
    let check = init.poll_transmit().unwrap();
    assert!(init.poll_transmit().is_none(), "our window is one request");
    resp.handle(now, &check, &mut rng);
    assert!(events(&mut resp).is_empty(), "the liveness check first");
    assert_eq!(shuttle(&mut resp, &mut init, now, &mut rng), 7);
    assert!(matches!(&events(&mut init)[..], [Event::PeerAlive]));
    let one = (40961, b"one".to_vec());
    assert_eq!(peer_notifies(&events(&mut resp)), [one.clone(), one, (40962, b"two".to_vec())]);
    // Behind a child rekey (and the delete of the old child that follows it).
    let old = first_child(&init);
    assert!(init.rekey_child(now, old, &mut rng));
    assert!(init.notify(now, 40963, b"three".to_vec(), &mut rng));
    assert_eq!(shuttle(&mut init, &mut resp, now, &mut rng), 6);
    let re = events(&mut resp);
    assert!(
        matches!(&re[..], [Event::ChildRekeyed { .. }, Event::ChildDown { .. }, Event::PeerNotify { kind: 40963, data }] if data == b"three"),
        "{re:?}"
    );
    let ie = events(&mut init);
    assert!(matches!(&ie[..], [Event::ChildRekeyed { .. }, Event::ChildDown { .. }]), "{ie:?}");
    // Behind an IKE SA rekey: it goes on the new IKE SA.
    let before = resp.spis();
    assert!(resp.rekey_ike(now, &mut rng));
    assert!(resp.notify(now, 40964, b"four".to_vec(), &mut rng));
    shuttle(&mut resp, &mut init, now, &mut rng);
    let ie = events(&mut init);
    assert!(
        matches!(&ie[..], [Event::IkeRekeyed { spis, .. }, Event::PeerNotify { kind: 40964, .. }] if *spis != before),
        "{ie:?}"
    );
    assert!(matches!(&events(&mut resp)[..], [Event::IkeRekeyed { .. }]));
    assert_eq!(init.local_spis().len(), 1, "the old IKE SA is deleted");
}

#[test]
fn a_non_private_type_or_oversize_data_is_refused() {
    let mut rng = TestRng::new(76);
    let now = Instant::now();
    let (mut init, mut resp) = established(&mut rng);
    for kind in [0, 1, 43, 16384, 16390, 40959] {
        assert!(!init.notify(now, kind, Vec::new(), &mut rng), "type {kind}");
    }
    assert!(!init.notify(now, 40960, vec![0; MAX_NOTIFY_DATA + 1], &mut rng), "too long");
    assert!(init.poll_transmit().is_none() && init.poll_timeout().is_none());
    assert_eq!(shuttle(&mut init, &mut resp, now, &mut rng), 0);
    assert!(events(&mut resp).is_empty());
}

#[test]
fn a_notify_on_an_sa_that_is_not_established_is_refused() {
    let mut rng = TestRng::new(77);
    let now = Instant::now();
    let (i_cfg, r_cfg) = pair_configs(1);
    let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
    let first = init.poll_transmit().unwrap();
    assert!(!init.notify(now, 40960, Vec::new(), &mut rng), "IKE_SA_INIT sent");
    let (r, _) = IkeSa::respond(r_cfg, &first, &mut rng);
    let mut resp = r.unwrap();
    assert!(!resp.notify(now, 40960, Vec::new(), &mut rng), "IKE_SA_INIT answered");
    init.handle(now, &resp.poll_transmit().unwrap(), &mut rng);
    assert!(!init.notify(now, 40960, Vec::new(), &mut rng), "IKE_AUTH sent");
    assert!(!init.check_liveness(now, &mut rng), "no other request either");
    // The refusals left the handshake as it was: it completes.
    assert_eq!(shuttle(&mut init, &mut resp, now, &mut rng), 2, "IKE_AUTH both ways");
    assert!(init.is_established() && resp.is_established());
    // Deleted: over.
    let (mut init, mut resp) = established(&mut rng);
    assert!(init.delete(now, &mut rng));
    shuttle(&mut init, &mut resp, now, &mut rng);
    assert!(!init.notify(now, 40960, Vec::new(), &mut rng));
    assert!(!resp.notify(now, 40960, Vec::new(), &mut rng));
    assert!(init.poll_transmit().is_none() && resp.poll_transmit().is_none());
}

#[test]
fn a_notify_to_a_silent_peer_fails_the_sa_like_a_liveness_check() {
    let mut rng = TestRng::new(78);
    let mut now = Instant::now();
    let (mut init, _resp) = established(&mut rng);
    assert!(init.notify(now, 40960, b"use".to_vec(), &mut rng));
    let mut sends = 0;
    while let Some(deadline) = init.poll_timeout() {
        while init.poll_transmit().is_some() {
            sends += 1;
        }
        now = deadline;
        init.handle_timeout(now, &mut rng);
    }
    assert_eq!(sends, 5);
    let ie = events(&mut init);
    assert!(
        matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("did not answer")),
        "{ie:?}"
    );
    assert!(!init.is_established());
}

#[test]
fn only_private_use_notifies_raise_events_and_deletes_beside_them_are_answered() {
    let mut rng = TestRng::new(79);
    let now = Instant::now();
    let (mut init, mut resp) = established(&mut rng);
    // Other notifications in an INFORMATIONAL request: ignored as before.
    let others = [
        Payload::Notify(NotifyRepr::new(NotifyType::InitialContact, Vec::new())),
        Payload::Notify(NotifyRepr::new(NotifyType::from(40959), b"x".to_vec())),
        Payload::Notify(NotifyRepr::new(NotifyType::InvalidSyntax, Vec::new())),
    ];
    send_raw(&mut init, Asked::Liveness, &others, &mut rng);
    let request = init.poll_transmit().unwrap();
    resp.handle(now, &request, &mut rng);
    let answer = resp.poll_transmit().unwrap();
    assert!(response_payloads(&init, &answer).is_empty());
    assert!(events(&mut resp).is_empty());
    init.handle(now, &answer, &mut rng);
    assert!(matches!(&events(&mut init)[..], [Event::PeerAlive]));
    // Two private use notifications around a child SA's delete: both raised, in
    // order, and the delete answered as usual.
    let (ci, co) = {
        let State::Established(e) = &init.state else { panic!() };
        (e.children[0].spi_in, e.children[0].spi_out)
    };
    let payloads = [
        Payload::Notify(NotifyRepr::new(NotifyType::from(50000), b"a".to_vec())),
        Payload::Delete(DeleteRepr { protocol: ProtocolId::Esp, spis: vec![ci.to_be_bytes()] }),
        Payload::Notify(NotifyRepr::new(NotifyType::InitialContact, Vec::new())),
        Payload::Notify(NotifyRepr::new(NotifyType::from(50001), b"b".to_vec())),
    ];
    send_raw(&mut init, Asked::DeleteChild(ci, co), &payloads, &mut rng);
    let request = init.poll_transmit().unwrap();
    resp.handle(now, &request, &mut rng);
    let answer = resp.poll_transmit().unwrap();
    assert!(matches!(&response_payloads(&init, &answer)[..],
        [Payload::Delete(d)] if d.protocol == ProtocolId::Esp && d.spis == [co.to_be_bytes()]));
    let re = events(&mut resp);
    assert!(
        matches!(&re[..], [Event::PeerNotify { kind: 50000, .. }, Event::ChildDown { spi_in, .. }, Event::PeerNotify { kind: 50001, .. }] if *spi_in == co),
        "{re:?}"
    );
    assert_eq!(peer_notifies(&re), [(50000, b"a".to_vec()), (50001, b"b".to_vec())]);
    resp.handle(now, &request, &mut rng);
    assert_eq!(resp.poll_transmit().unwrap(), answer);
    assert!(events(&mut resp).is_empty(), "a retransmission raises nothing again");
    init.handle(now, &answer, &mut rng);
    let ie = events(&mut init);
    assert!(matches!(&ie[..], [Event::ChildDown { spi_in, .. }] if *spi_in == ci), "{ie:?}");
}

/// Whether `payloads` hold an `INITIAL_CONTACT` notification, checked to be bare.
fn has_initial_contact(payloads: &[Payload]) -> bool {
    let found: Vec<_> = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) if u16::from(n.kind) == 16384 => Some(n),
            _ => None,
        })
        .collect();
    assert!(found.len() <= 1, "one at most: {payloads:?}");
    found.iter().all(|n| n.protocol.is_none() && n.spi.is_empty() && n.data.is_empty())
        && !found.is_empty()
}

/// Completes the handshake that `init`'s accepted `IKE_SA_INIT` request `first`
/// starts: the responder, and the payloads of the initiator's `IKE_AUTH` request as
/// they went on the wire. `late` is called on both once that request is sent.
fn complete(
    init: &mut IkeSa,
    first: &[u8],
    r_cfg: Arc<Config>,
    rng: &mut TestRng,
    late: impl FnOnce(&mut IkeSa, &mut IkeSa),
) -> (IkeSa, Vec<Payload>) {
    let now = Instant::now();
    let (r, refusal) = IkeSa::respond(r_cfg, first, rng);
    assert!(refusal.is_none());
    let mut resp = r.expect("accepted");
    init.handle(now, &resp.poll_transmit().unwrap(), rng);
    let request = init.poll_transmit().expect("the IKE_AUTH request");
    let State::InitAnswered { keys, .. } = &resp.state else { panic!("not answered") };
    let opened = open(&keys.sk(true), &request).unwrap();
    assert_eq!(opened.header.exchange_type, ExchangeType::IkeAuth);
    late(init, &mut resp);
    assert!(!resp.initial_contact(), "nothing received yet");
    resp.handle(now, &request, rng);
    init.handle(now, &resp.poll_transmit().unwrap(), rng);
    assert!(init.is_established() && resp.is_established());
    for sa in [&mut *init, &mut resp] {
        assert!(matches!(&events(sa)[..], [Event::IkeUp { .. }, Event::ChildUp(_)]));
    }
    (resp, opened.payloads)
}

#[test]
fn initial_contact_is_sent_before_auth_and_both_sides_report_it() {
    let mut rng = TestRng::new(80);
    let now = Instant::now();
    for set in [true, false] {
        let (i_cfg, r_cfg) = pair_configs(1);
        let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
        if set {
            init.set_initial_contact();
            init.set_initial_contact(); // twice is once
        }
        assert!(!init.initial_contact(), "not sent yet");
        let first = init.poll_transmit().unwrap();
        let sa_init = Message::parse(&first).unwrap();
        assert!(!has_initial_contact(&sa_init.payloads), "not in IKE_SA_INIT");
        let (resp, payloads) = complete(&mut init, &first, r_cfg, &mut rng, |_, _| {});
        assert_eq!(has_initial_contact(&payloads), set);
        assert_eq!((init.initial_contact(), resp.initial_contact()), (set, set));
        // Where it goes: after IDi and CERT, before AUTH and the child SA's payloads.
        let kinds: Vec<PayloadType> = payloads.iter().map(Payload::kind).collect();
        let mut expected = vec![PayloadType::IdInitiator, PayloadType::Certificate];
        if set {
            expected.push(PayloadType::Notify);
        }
        expected.extend([
            PayloadType::Authentication,
            PayloadType::Notify,
            PayloadType::SecurityAssociation,
            PayloadType::TrafficSelectorInitiator,
            PayloadType::TrafficSelectorResponder,
        ]);
        assert_eq!(kinds, expected);
    }
}

#[test]
fn initial_contact_set_too_late_or_on_a_responder_changes_nothing() {
    let mut rng = TestRng::new(81);
    let now = Instant::now();
    // On the responder, before the IKE_AUTH request arrives; on the initiator, once
    // its IKE_AUTH request is out.
    let (i_cfg, r_cfg) = pair_configs(1);
    let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
    let first = init.poll_transmit().unwrap();
    let (mut resp, payloads) = complete(&mut init, &first, r_cfg, &mut rng, |i, r| {
        i.set_initial_contact();
        r.set_initial_contact();
    });
    assert!(!has_initial_contact(&payloads));
    assert!(!init.initial_contact() && !resp.initial_contact());
    // Established: nothing is sent, nothing changes.
    init.set_initial_contact();
    resp.set_initial_contact();
    assert!(init.poll_transmit().is_none() && resp.poll_transmit().is_none());
    assert!(!init.initial_contact() && !resp.initial_contact());
    // Dead.
    assert!(init.delete(now, &mut rng));
    shuttle(&mut init, &mut resp, now, &mut rng);
    init.set_initial_contact();
    assert!(init.is_closed() && !init.initial_contact());
}

#[test]
fn initial_contact_survives_an_invalid_ke_payload_retry_and_a_cookie() {
    use crate::cookie::{Cookies, Gate};
    let mut rng = TestRng::new(82);
    let now = Instant::now();
    // INVALID_KE_PAYLOAD: the responder wants the initiator's second group.
    let (alice, bob) = (side(false, 1), side(false, 2));
    let i_policy = Policy { groups: vec![Group::Curve25519, Group::Ecp256], ..Policy::default() };
    let r_policy = Policy { groups: vec![Group::Ecp256], ..Policy::default() };
    let i_cfg = config(&alice, "a.mesh", &bob, "b.mesh", i_policy, ("10.0.0.1", "10.0.0.2"));
    let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", r_policy, ("10.0.0.2", "10.0.0.1"));
    let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
    init.set_initial_contact();
    let first = init.poll_transmit().unwrap();
    let (none, refusal) = IkeSa::respond(r_cfg.clone(), &first, &mut rng);
    assert!(none.is_none());
    let refusal = refusal.expect("INVALID_KE_PAYLOAD");
    assert!(matches!(&Message::parse(&refusal).unwrap().payloads[..],
        [Payload::Notify(n)] if n.kind == NotifyType::InvalidKePayload));
    init.handle(now, &refusal, &mut rng);
    let second = init.poll_transmit().expect("IKE_SA_INIT again");
    let (resp, payloads) = complete(&mut init, &second, r_cfg, &mut rng, |_, _| {});
    assert_eq!(init.algorithms().unwrap().group, Group::Ecp256);
    assert!(has_initial_contact(&payloads));
    assert!(init.initial_contact() && resp.initial_contact());
    // A COOKIE challenge; set between the challenge and the answer to it, too.
    let (i_cfg, r_cfg) = pair_configs(1);
    let cookies = Cookies::new(&mut rng);
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    for set_after_challenge in [false, true] {
        let mut init = IkeSa::initiate(i_cfg.clone(), now, &mut rng);
        if !set_after_challenge {
            init.set_initial_contact();
        }
        let first = init.poll_transmit().unwrap();
        let Gate::Challenge(challenge) = cookies.gate(&first, peer, true) else {
            panic!("no challenge")
        };
        init.handle(now, &challenge, &mut rng);
        if set_after_challenge {
            init.set_initial_contact();
        }
        let second = init.poll_transmit().expect("IKE_SA_INIT with the cookie");
        assert_eq!(cookies.gate(&second, peer, true), Gate::Pass);
        let (resp, payloads) = complete(&mut init, &second, r_cfg.clone(), &mut rng, |_, _| {});
        assert!(has_initial_contact(&payloads));
        assert!(init.initial_contact() && resp.initial_contact());
    }
}

#[test]
fn initial_contact_outlives_an_ike_sa_rekey() {
    let mut rng = TestRng::new(83);
    let now = Instant::now();
    for set in [true, false] {
        let (i_cfg, r_cfg) = pair_configs(1);
        let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
        if set {
            init.set_initial_contact();
        }
        let first = init.poll_transmit().unwrap();
        let (mut resp, _) = complete(&mut init, &first, r_cfg, &mut rng, |_, _| {});
        for rekeyer_is_initiator in [true, false] {
            let before = init.spis();
            let (x, y) =
                if rekeyer_is_initiator { (&mut init, &mut resp) } else { (&mut resp, &mut init) };
            assert!(x.rekey_ike(now, &mut rng));
            shuttle(x, y, now, &mut rng);
            assert_ne!(init.spis(), before, "rekeyed");
            assert!(matches!(&events(&mut init)[..], [Event::IkeRekeyed { .. }]));
            assert!(matches!(&events(&mut resp)[..], [Event::IkeRekeyed { .. }]));
            assert_eq!((init.initial_contact(), resp.initial_contact()), (set, set));
        }
    }
}
