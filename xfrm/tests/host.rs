//! The xfrm crate on the build host's kernel, in network namespaces: XFRM policies work
//! there, ESP does not, which lets the ESP-missing path be shown for real.

mod common;

use common::{PRIORITY, block_on, level_of, netns, pair_policies, reqid};
use ikemesh_testbed::Net;
use std::net::IpAddr;
use std::time::Duration;
use xfrm::{
    Action, Crypto, Direction, Error, Event, Events, Groups, Key, Level, Policy, Sa, Selector, Xfrm,
};

fn gcm() -> Crypto {
    Crypto::AesGcm16 { key: Key::new(vec![7; 20]) }
}

#[test]
fn policies_are_added_listed_switched_and_deleted_for_both_families() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let mut x = Xfrm::open_in(&netns(a)).unwrap();
    let mut policies = Vec::new();
    for v6 in [false, true] {
        policies.extend(pair_policies(a.addr(v6), b.addr(v6), Level::Use, reqid(1), reqid(2)));
    }
    for r in x.add_policies(&policies).unwrap() {
        r.unwrap();
    }
    let listed = x.dump_policies().unwrap();
    assert_eq!(listed.iter().filter(|p| p.is_ours()).count(), 4, "{listed:#?}");
    // `ip xfrm` sees them as we meant them.
    let shown = a.run(&["ip", "xfrm", "policy"]).unwrap();
    assert!(shown.contains(&format!("src {}/32 dst {}/32", a.ipv4(), b.ipv4())), "{shown}");
    assert!(shown.contains(&format!("src {}/128 dst {}/128", b.ipv6(), a.ipv6())), "{shown}");
    assert!(shown.contains("level use"), "{shown}");

    for level in [Level::Require, Level::Use, Level::Require] {
        for p in &policies {
            x.set_level(&p.id(), level).unwrap();
            assert_eq!(level_of(x.get_policy(&p.id()).unwrap().action), Some(level));
        }
    }
    let shown = a.run(&["ip", "xfrm", "policy"]).unwrap();
    assert!(!shown.contains("level use"), "all at require now:\n{shown}");
    assert_eq!(x.dump_policies().unwrap().len(), 4, "switched in place, none added");

    let ids: Vec<_> = policies.iter().map(Policy::id).collect();
    for r in x.delete_policies(&ids).unwrap() {
        r.unwrap();
    }
    assert!(x.dump_policies().unwrap().is_empty());
    assert!(matches!(x.delete_policy(&ids[0]), Err(Error::NotFound { .. })));
}

#[test]
fn selectors_with_protocol_and_ports_round_trip() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let mut x = Xfrm::open_in(&netns(a)).unwrap();
    let mut p =
        pair_policies(a.ipv4().into(), b.ipv4().into(), Level::Require, reqid(1), reqid(2))[0];
    p.selector = Selector {
        src: "10.77.0.0/24".parse().unwrap(),
        dst: "10.88.0.0/16".parse().unwrap(),
        proto: Some(6),
        src_port: None,
        dst_port: Some(5432),
    };
    let bypass = Policy {
        selector: Selector { proto: Some(17), dst_port: Some(53), ..p.selector },
        priority: PRIORITY - 1,
        action: Action::Bypass,
        ..p
    };
    x.add_policy(&p).unwrap();
    x.add_policy(&bypass).unwrap();
    let got = x.get_policy(&p.id()).unwrap();
    assert_eq!((got.id, got.priority, got.action), (p.id(), p.priority, p.action));
    let got = x.get_policy(&bypass.id()).unwrap();
    assert_eq!((got.id.selector, got.action), (bypass.selector, Action::Bypass));
    let shown = a.run(&["ip", "xfrm", "policy"]).unwrap();
    assert!(
        shown.contains("proto tcp dport 5432") && shown.contains("proto udp dport 53"),
        "{shown}"
    );
}

#[test]
fn a_batch_reports_each_entrys_error_against_that_entry() {
    let net = Net::new(2).unwrap();
    let a = net.host(0);
    let mut x = Xfrm::open_in(&netns(a)).unwrap();
    let me: IpAddr = a.ipv4().into();
    let mut batch: Vec<Policy> = (0..600u32)
        .map(|i| {
            let peer = IpAddr::from([10, 200, (i >> 8) as u8, i as u8]);
            pair_policies(me, peer, Level::Require, reqid(i), reqid(i))[0]
        })
        .collect();
    batch[5] = batch[4]; // a duplicate: the kernel says EEXIST for the second
    batch[300].priority = 7; // outside our band: refused before the kernel sees it
    batch[599] = batch[0]; // a duplicate in the last chunk
    let results = x.add_policies(&batch).unwrap();
    assert_eq!(results.len(), 600);
    let failed: Vec<usize> =
        results.iter().enumerate().filter(|(_, r)| r.is_err()).map(|(i, _)| i).collect();
    assert_eq!(failed, [5, 300, 599]);
    assert!(matches!(results[5], Err(Error::Exists { .. })));
    assert!(matches!(results[300], Err(Error::NotOurs(_))));
    assert!(matches!(results[599], Err(Error::Exists { .. })));
    assert_eq!(x.dump_policies().unwrap().len(), 597);
}

#[test]
fn flush_ours_leaves_entries_that_are_not_ours() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    // An operator's policies, put there with ip xfrm: default priority, and one with a
    // template reqid outside our range.
    a.sh(&format!(
        "ip xfrm policy add src {a}/32 dst 192.0.2.9/32 dir out tmpl src {a} dst 192.0.2.9 proto esp reqid 5 mode transport && \
         ip xfrm policy add src {a}/32 dst 192.0.2.10/32 dir out priority 1000 action block",
        a = a.ipv4()
    ))
    .unwrap();
    let mut x = Xfrm::open_in(&netns(a)).unwrap();
    for v6 in [false, true] {
        for r in x
            .add_policies(&pair_policies(
                a.addr(v6),
                b.addr(v6),
                Level::Require,
                reqid(1),
                reqid(2),
            ))
            .unwrap()
        {
            r.unwrap();
        }
    }
    assert_eq!(x.dump_policies().unwrap().len(), 6);
    let flushed = x.flush_ours().unwrap();
    assert_eq!((flushed.policies, flushed.sas), (4, 0));
    let left = x.dump_policies().unwrap();
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(left.iter().all(|p| !p.is_ours()));
    let shown = a.run(&["ip", "xfrm", "policy"]).unwrap();
    assert!(shown.contains("192.0.2.9/32") && shown.contains("192.0.2.10/32"), "{shown}");
    assert_eq!(x.flush_ours().unwrap(), xfrm::Flushed::default(), "nothing more of ours");
}

#[test]
fn entries_outside_our_ranges_are_refused_before_the_kernel() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let mut x = Xfrm::open_in(&netns(a)).unwrap();
    let mut p = pair_policies(a.ipv4().into(), b.ipv4().into(), Level::Use, reqid(1), reqid(2))[0];
    p.priority = 0;
    let err = x.add_policy(&p).unwrap_err();
    assert!(matches!(err, Error::NotOurs(_)), "{err}");
    let sa = Sa::transport(a.ipv4().into(), b.ipv4().into(), 0x1000, 42, gcm());
    let err = x.add_sa(&sa).unwrap_err();
    assert!(matches!(err, Error::NotOurs(_)), "{err}");
    assert!(x.dump_policies().unwrap().is_empty());
}

#[test]
fn an_sa_add_on_a_kernel_without_esp_fails_with_one_clear_line() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let mut x = Xfrm::open_in(&netns(a)).unwrap();
    for (v6, module) in [(false, "esp4"), (true, "esp6")] {
        let sa = Sa::transport(a.addr(v6), b.addr(v6), 0x1000, reqid(1), gcm());
        let err = x.add_sa(&sa).unwrap_err();
        let line = err.to_string();
        println!("SA add without ESP: {line}");
        assert!(matches!(err, Error::EspUnsupported { .. }), "{line}");
        assert!(line.contains(module) && line.contains("CONFIG_INET"), "{line}");
        assert!(!line.contains('\n') && !line.contains("Requested type not found"), "{line}");
        // Nothing was left behind by the attempt or by the probe it ran.
        assert!(x.dump_sas().unwrap().is_empty());
    }
    let cbc = Sa::transport(
        a.ipv4().into(),
        b.ipv4().into(),
        0x1001,
        reqid(1),
        Crypto::AesCbcHmacSha256 {
            enc_key: Key::new(vec![1; 16]),
            auth_key: Key::new(vec![2; 32]),
        },
    );
    assert!(matches!(x.add_sa(&cbc), Err(Error::EspUnsupported { family: "IPv4", .. })));
}

#[test]
fn the_probe_reports_esp_missing() {
    let net = Net::new(2).unwrap();
    let mut x = Xfrm::open_in(&netns(net.host(0))).unwrap();
    let caps = x.probe().unwrap();
    println!("probe on the host kernel: {}", caps.summary());
    println!("probe problem line: {}", caps.problem().unwrap_or_default());
    assert_eq!((caps.esp_v4, caps.esp_v6), (Some(false), Some(false)), "{caps:?}");
    assert!(!caps.esp_ready());
    let problem = caps.problem().expect("something is missing");
    assert!(problem.contains("no ESP for IPv4") && problem.contains("esp6"), "{problem}");
    assert!(!problem.contains('\n'));
    assert!(x.dump_sas().unwrap().is_empty(), "the probe leaves nothing behind");
}

#[test]
fn keys_never_show_in_debug_output() {
    let sa = Sa::transport(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        0x1000,
        reqid(1),
        Crypto::AesGcm16 { key: Key::new(b"\x5e\xc2\xe7supersecretkey!".to_vec()) },
    );
    let shown = format!("{sa:?}");
    assert!(
        shown.contains("redacted") && !shown.contains("supersecret") && !shown.contains("94"),
        "{shown}"
    );
}

#[test]
fn policy_events_arrive() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    block_on(async {
        let mut events = Events::open_in(&netns(a), Groups::ALL).unwrap();
        let mut x = Xfrm::open_in(&netns(a)).unwrap();
        let [out, _] =
            pair_policies(a.ipv6().into(), b.ipv6().into(), Level::Use, reqid(1), reqid(2));
        x.add_policy(&out).unwrap();
        x.set_level(&out.id(), Level::Require).unwrap();
        x.delete_policy(&out.id()).unwrap();
        // Someone else's change is seen too.
        a.sh("ip xfrm policy add src 192.0.2.1/32 dst 192.0.2.2/32 dir fwd").unwrap();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap_or_else(|_| panic!("only {} events: {seen:#?}", seen.len()))
                .unwrap();
            seen.push(event);
        }
        println!("policy events: {seen:?}");
        assert!(
            matches!(&seen[0], Event::PolicyAdded(p) if p.id == out.id() && level_of(p.action) == Some(Level::Use))
        );
        assert!(
            matches!(&seen[1], Event::PolicyUpdated(p) if p.id == out.id() && level_of(p.action) == Some(Level::Require))
        );
        assert!(
            matches!(&seen[2], Event::PolicyDeleted { policy, priority: Some(PRIORITY) } if *policy == out.id())
        );
        assert!(
            matches!(&seen[3], Event::PolicyAdded(p) if p.id.dir == Direction::Fwd && !p.is_ours())
        );
    });
}
