//! The mesh policy model and its rendering: unit tests on the rendered policies, and one
//! test that installs a rendering in a network namespace and shows what the kernel does
//! with non-members, peers at `off`, IKE and exclusions.

use ikemesh_testbed::Net;
use ipnet::IpNet;
use policy::model::{DEFAULT_SPA_PORT, IKE_PORTS};
use policy::render::{
    NETWORK_REQID, PEER_REQIDS, PRIORITY_CONTROL, PRIORITY_EXCLUSION, PRIORITY_NETWORK,
    PRIORITY_PEER, reqids,
};
use policy::{Level, MeshPolicy, ModelError, Problem, Rendered, diff, render};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use xfrm::{Action, Direction, Policy, Selector, Xfrm};

fn model(toml: &str) -> MeshPolicy {
    toml::from_str(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const THREE: &str = r#"
level = "require"
[[members]]
name = "a"
addresses = ["10.77.0.1"]
[[members]]
name = "b"
addresses = ["10.77.0.2"]
[[members]]
name = "c"
addresses = ["10.77.0.3"]
[[networks]]
name = "cluster"
prefixes = ["10.77.0.0/24"]
[[exclusions]]
name = "dns"
protocol = "udp"
port = 53
"#;

fn at(p: &[Policy], priority: u32) -> Vec<Policy> {
    p.iter().filter(|p| p.priority == priority).copied().collect()
}

/// The policy with this selector and direction.
fn find(r: &Rendered, dir: Direction, sel: Selector) -> Option<Policy> {
    r.policies.iter().find(|p| p.dir == dir && p.selector == sel).copied()
}

fn level_of(p: Policy) -> Option<xfrm::Level> {
    match p.action {
        Action::Protect(t) => Some(t.level),
        _ => None,
    }
}

fn reqid_of(p: Policy) -> Option<u32> {
    match p.action {
        Action::Protect(t) => Some(t.reqid),
        _ => None,
    }
}

#[test]
fn a_three_member_mesh_at_require_renders_the_expected_policies() {
    let mesh = model(THREE);
    let r = render(&mesh, "a").unwrap();
    let p = &r.policies;
    // IKE 500/4500 in and out, SPA in and out, a <-> a in and out: 8.
    assert_eq!(at(p, PRIORITY_CONTROL).len(), 8, "{p:#?}");
    // udp 53, both directions, client and server side: 4.
    assert_eq!(at(p, PRIORITY_EXCLUSION).len(), 4);
    // b and c, out and in: 4.
    assert_eq!(at(p, PRIORITY_PEER).len(), 4);
    // a -> 10.77.0.0/24 and back: 2.
    assert_eq!(at(p, PRIORITY_NETWORK).len(), 2);
    assert_eq!(p.len(), 18);
    println!("policies for a in a 3-member mesh at require: {}", p.len());

    // Every priority and reqid is ikemesh's; sorted, strongest first.
    assert!(p.iter().all(|p| xfrm::is_owned_priority(p.priority)));
    assert!(p.iter().filter_map(|p| reqid_of(*p)).all(xfrm::is_owned_reqid));
    assert!(p.windows(2).all(|w| w[0].priority <= w[1].priority));
    const {
        assert!(PRIORITY_CONTROL < PRIORITY_EXCLUSION);
        assert!(PRIORITY_EXCLUSION < PRIORITY_PEER && PRIORITY_PEER < PRIORITY_NETWORK);
    }
    assert!(at(p, PRIORITY_CONTROL).iter().all(|p| p.action == Action::Bypass));
    assert!(at(p, PRIORITY_EXCLUSION).iter().all(|p| p.action == Action::Bypass));

    // Peers: transport mode, require, one reqid per peer in both directions.
    let (a, b) = (ip("10.77.0.1"), ip("10.77.0.2"));
    let out = find(&r, Direction::Out, Selector::hosts(a, b)).unwrap();
    let inb = find(&r, Direction::In, Selector::hosts(b, a)).unwrap();
    let Action::Protect(tmpl) = out.action else { panic!("{out:?}") };
    assert_eq!(
        (tmpl.src, tmpl.dst, tmpl.mode, tmpl.level),
        (a, b, xfrm::Mode::Transport, xfrm::Level::Require)
    );
    let Action::Protect(t_in) = inb.action else { panic!("{inb:?}") };
    assert_eq!((t_in.src, t_in.dst, t_in.reqid), (b, a, tmpl.reqid));
    assert!(PEER_REQIDS.contains(&tmpl.reqid));
    assert_eq!(r.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(r.peers[0].reqid, tmpl.reqid);
    assert_ne!(r.peers[0].reqid, r.peers[1].reqid);

    // The network: require, the network reqid, open on the far end.
    let net: IpNet = "10.77.0.0/24".parse().unwrap();
    let out = find(&r, Direction::Out, Selector::prefixes(IpNet::from(a), net)).unwrap();
    let Action::Protect(tmpl) = out.action else { panic!("{out:?}") };
    assert_eq!((tmpl.reqid, tmpl.level, tmpl.src), (NETWORK_REQID, xfrm::Level::Require, a));
    assert!(tmpl.dst.is_unspecified());
    assert!(find(&r, Direction::In, Selector::prefixes(net, IpNet::from(a))).is_some());

    // The firewall plan: the IKE ports, the SPA port, the other members.
    assert_eq!(r.firewall.ike_ports, IKE_PORTS);
    assert_eq!(r.firewall.spa_port, DEFAULT_SPA_PORT);
    assert_eq!(r.firewall.knockers, [b, ip("10.77.0.3")]);
}

#[test]
fn reqids_and_renderings_do_not_depend_on_member_order() {
    let m = model(THREE);
    let mut shuffled = m.clone();
    shuffled.members.reverse();
    shuffled.members.swap(0, 1);
    for me in ["a", "b", "c"] {
        assert_eq!(render(&m, me).unwrap(), render(&shuffled, me).unwrap(), "{me}");
    }
    // The same name has the same reqid on every node, and again tomorrow.
    let on_a = render(&m, "a").unwrap();
    let on_c = render(&m, "c").unwrap();
    let b_on_a = on_a.peers.iter().find(|p| p.name == "b").unwrap().reqid;
    let b_on_c = on_c.peers.iter().find(|p| p.name == "b").unwrap().reqid;
    assert_eq!(b_on_a, b_on_c);
    assert_eq!(reqids(&m), reqids(&shuffled));
    println!("reqids: {:x?}", reqids(&m));
    // Adding members leaves the others' reqids alone (no collision here).
    let mut bigger = m.clone();
    for i in 4..=200 {
        bigger.members.push(policy::Member {
            name: format!("node-{i}"),
            addresses: vec![ip(&format!("10.77.0.{i}"))],
            level: None,
        });
    }
    let before = reqids(&m);
    let after = reqids(&bigger);
    for (name, reqid) in &before {
        assert_eq!(after[name], *reqid, "{name}");
    }
    let distinct: BTreeSet<u32> = after.values().copied().collect();
    assert_eq!(distinct.len(), 200);
    assert!(after.values().all(|r| PEER_REQIDS.contains(r)));
}

#[test]
fn a_mesh_at_use_renders_no_network_wide_policies() {
    let m = model(&THREE.replace("level = \"require\"", "level = \"use\""));
    let r = render(&m, "a").unwrap();
    assert!(at(&r.policies, PRIORITY_NETWORK).is_empty());
    let peers = at(&r.policies, PRIORITY_PEER);
    assert_eq!(peers.len(), 4);
    assert!(peers.iter().all(|p| level_of(*p) == Some(xfrm::Level::Use)));
    assert_eq!(r.network_level, Level::Use);
}

#[test]
fn a_joining_node_at_use_inside_a_require_network() {
    let mut m = model(THREE);
    m.members[2].level = Some(Level::Use); // c joins
    let on_a = render(&m, "a").unwrap();
    let (a, b, c) = (ip("10.77.0.1"), ip("10.77.0.2"), ip("10.77.0.3"));
    let to_b = find(&on_a, Direction::Out, Selector::hosts(a, b)).unwrap();
    let to_c = find(&on_a, Direction::Out, Selector::hosts(a, c)).unwrap();
    let from_c = find(&on_a, Direction::In, Selector::hosts(c, a)).unwrap();
    assert_eq!(level_of(to_b), Some(xfrm::Level::Require));
    assert_eq!(level_of(to_c), Some(xfrm::Level::Use));
    assert_eq!(level_of(from_c), Some(xfrm::Level::Use));
    // The peer policy wins over the network's require.
    assert!(to_c.priority < PRIORITY_NETWORK);
    assert_eq!(at(&on_a.policies, PRIORITY_NETWORK).len(), 2);

    // c itself is at use with everyone, and shuts no one out yet.
    let on_c = render(&m, "c").unwrap();
    assert_eq!((on_c.level, on_c.network_level), (Level::Use, Level::Use));
    assert!(on_c.peers.iter().all(|p| p.level == Level::Use));
    assert!(at(&on_c.policies, PRIORITY_NETWORK).is_empty());
    let peers = at(&on_c.policies, PRIORITY_PEER);
    assert!(peers.iter().all(|p| level_of(*p) == Some(xfrm::Level::Use)), "{peers:#?}");
}

#[test]
fn a_peer_at_off_in_a_require_network_is_bypassed() {
    let mut m = model(THREE);
    m.members[1].level = Some(Level::Off); // b
    let r = render(&m, "a").unwrap();
    let (a, b) = (ip("10.77.0.1"), ip("10.77.0.2"));
    let out = find(&r, Direction::Out, Selector::hosts(a, b)).unwrap();
    let inb = find(&r, Direction::In, Selector::hosts(b, a)).unwrap();
    assert_eq!((out.action, inb.action), (Action::Bypass, Action::Bypass));
    assert_eq!((out.priority, inb.priority), (PRIORITY_PEER, PRIORITY_PEER));
    // The network still requires ESP from everyone else.
    assert_eq!(at(&r.policies, PRIORITY_NETWORK).len(), 2);
    assert_eq!(r.peers[0].level, Level::Off);
}

#[test]
fn exclusions_apply_in_both_directions() {
    let m = model(
        r#"
level = "require"
[[members]]
name = "a"
addresses = ["10.77.0.1", "fd77::1"]
[[members]]
name = "b"
addresses = ["10.77.0.2", "fd77::2"]
[[exclusions]]
name = "dns"
protocol = "udp"
port = 53
[[exclusions]]
name = "syslog"
protocol = "tcp"
port = "6514-6516"
prefix = "10.77.0.0/24"
[[exclusions]]
name = "monitoring"
prefix = "fd77::99/128"
[[exclusions]]
name = "ping"
protocol = "icmp"
"#,
    );
    let r = render(&m, "a").unwrap();
    let ex = at(&r.policies, PRIORITY_EXCLUSION);
    // dns: 4 per family (8); syslog: 4 per port, IPv4 only (12); monitoring: out and in,
    // IPv6 only (2); ping: IPv4 only (2).
    assert_eq!(ex.len(), 8 + 12 + 2 + 2, "{ex:#?}");
    println!("exclusion policies: {}", ex.len());
    let any4: IpNet = "0.0.0.0/0".parse().unwrap();
    let udp53 = |sport, dport| Selector {
        src: any4,
        dst: any4,
        proto: Some(17),
        src_port: sport,
        dst_port: dport,
    };
    for (dir, sel) in [
        (Direction::Out, udp53(None, Some(53))), // our query
        (Direction::In, udp53(Some(53), None)),  // its answer
        (Direction::In, udp53(None, Some(53))),  // a query to us
        (Direction::Out, udp53(Some(53), None)), // our answer
    ] {
        let p = find(&r, dir, sel).unwrap_or_else(|| panic!("{dir:?} {sel}"));
        assert_eq!(p.action, Action::Bypass);
    }
    let net: IpNet = "10.77.0.0/24".parse().unwrap();
    let syslog_out =
        Selector { src: any4, dst: net, proto: Some(6), src_port: None, dst_port: Some(6515) };
    assert!(find(&r, Direction::Out, syslog_out).is_some());
    assert!(find(&r, Direction::In, syslog_out.reversed()).is_some());
    let mon: IpNet = "fd77::99/128".parse().unwrap();
    let any6: IpNet = "::/0".parse().unwrap();
    assert!(find(&r, Direction::Out, Selector::prefixes(any6, mon)).is_some());
    assert!(find(&r, Direction::In, Selector::prefixes(mon, any6)).is_some());
    assert!(ex.iter().all(|p| p.priority < PRIORITY_PEER));
}

#[test]
fn ipv4_and_ipv6_members_pair_by_family() {
    let m = model(
        r#"
level = "require"
spa_port = 7000
[[members]]
name = "a"
addresses = ["10.77.0.1", "fd77::1"]
[[members]]
name = "b"
addresses = ["fd77::2", "10.77.0.2"]
[[members]]
name = "v6only"
addresses = ["fd77::3"]
[[networks]]
prefixes = ["10.77.0.0/24", "fd77::/64"]
"#,
    );
    let r = render(&m, "a").unwrap();
    let p = &r.policies;
    // Per family: IKE 4, SPA 2, self 2; ND: 5 types x 2 directions.
    assert_eq!(at(p, PRIORITY_CONTROL).len(), 8 * 2 + 10);
    // b: v4 and v6 pairs, out and in (4); v6only: one pair (2).
    assert_eq!(at(p, PRIORITY_PEER).len(), 6);
    assert_eq!(at(p, PRIORITY_NETWORK).len(), 4);
    let (a6, v6only) = (ip("fd77::1"), ip("fd77::3"));
    assert!(find(&r, Direction::Out, Selector::hosts(a6, v6only)).is_some());
    assert!(p.iter().all(|p| p.selector.src.addr().is_ipv4() == p.selector.dst.addr().is_ipv4()));
    let nd = p.iter().filter(|p| p.selector.proto == Some(58)).count();
    assert_eq!(nd, 10);
    assert!(p.iter().any(|p| p.selector.dst_port == Some(7000) && p.dir == Direction::In));
    assert_eq!(r.firewall.spa_port, 7000);
    assert_eq!(r.firewall.knockers.len(), 3);
    assert!(r.firewall.knockers.windows(2).all(|w| w[0] < w[1]));
    println!("policies for a dual-stack node with 2 peers: {}", p.len());

    // An IPv4-only node has nothing IPv6 (no ND, no pair with v6only).
    let m4 = model(
        r#"
[[members]]
name = "a"
addresses = ["10.77.0.1"]
[[members]]
name = "v6only"
addresses = ["fd77::3"]
"#,
    );
    let r = render(&m4, "a").unwrap();
    assert!(r.policies.iter().all(|p| p.selector.src.addr().is_ipv4()));
    assert_eq!(r.policies.len(), 8);
}

#[test]
fn validation_reports_every_problem_on_one_line_each() {
    let m = model(
        r#"
spa_port = 500
[[members]]
name = "a"
addresses = ["10.77.0.1", "10.77.0.1"]
[[members]]
name = "a"
addresses = ["10.77.0.2"]
[[members]]
name = "b"
addresses = ["10.77.0.2", "192.168.9.9"]
[[members]]
name = ""
addresses = []
[[networks]]
name = "cluster"
prefixes = ["10.77.0.1/24"]
[[exclusions]]
port = 53
[[exclusions]]
name = "ping"
protocol = "icmp"
prefix = "fd00::/8"
[[exclusions]]
name = "wide"
protocol = "tcp"
port = "1000-5000"
[[exclusions]]
name = "everything"
[[exclusions]]
protocol = "icmpv6"
port = 1
"#,
    );
    let problems = m.validate();
    for p in &problems {
        let line = p.to_string();
        assert!(!line.contains('\n') && !line.is_empty(), "{line}");
        println!("{line}");
    }
    let expect = |want: &dyn Fn(&Problem) -> bool, what: &str| {
        assert!(problems.iter().any(want), "no {what} in {problems:#?}");
    };
    expect(&|p| matches!(p, Problem::BadSpaPort { port: 500 }), "spa port");
    expect(&|p| matches!(p, Problem::DuplicateName { name } if name == "a"), "dup name");
    expect(
        &|p| matches!(p, Problem::DuplicateAddress { first, second, .. } if first == second),
        "dup within",
    );
    expect(
        &|p| matches!(p, Problem::DuplicateAddress { first, second, .. } if first == "a" && second == "b"),
        "dup across",
    );
    expect(&|p| matches!(p, Problem::EmptyName { index: 3 }), "empty name");
    expect(&|p| matches!(p, Problem::NoAddresses { .. }), "no addresses");
    expect(
        &|p| matches!(p, Problem::OutsideNetworks { address, .. } if *address == ip("192.168.9.9")),
        "outside",
    );
    expect(&|p| matches!(p, Problem::HostBits { .. }), "host bits");
    expect(
        &|p| matches!(p, Problem::PortWithoutProtocol { exclusion } if exclusion == "exclusion #1"),
        "port w/o proto",
    );
    expect(&|p| matches!(p, Problem::MixedFamilies { .. }), "mixed families");
    expect(&|p| matches!(p, Problem::BadPortRange { .. }), "wide range");
    expect(&|p| matches!(p, Problem::ExcludesEverything { .. }), "everything");
    expect(&|p| matches!(p, Problem::PortlessProtocol { .. }), "portless");
    assert_eq!(problems.len(), 13, "{problems:#?}");
    println!("problems found: {}", problems.len());

    let Err(ModelError::Invalid(listed)) = render(&m, "a") else { panic!("rendered") };
    assert_eq!(listed, problems);
    let shown = ModelError::Invalid(listed).to_string();
    assert_eq!(shown.lines().count(), problems.len());

    // Not a member, and bad spellings that never reach the model.
    let good = model(THREE);
    let err = render(&good, "z").unwrap_err();
    assert!(matches!(err, ModelError::UnknownMember(_)));
    assert!(!err.to_string().contains('\n'));
    for (bad, says) in [
        (THREE.replace("\"udp\"", "\"udq\""), "unknown protocol"),
        (THREE.replace("port = 53", "port = \"70000\""), "bad port"),
        (THREE.replace("level = \"require\"", "level = \"strict\""), "unknown variant"),
        (THREE.replace("name = \"dns\"", "nmae = \"dns\""), "unknown field"),
    ] {
        let e = toml::from_str::<MeshPolicy>(&bad).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
    // A reversed range is caught by validation.
    let rev = model(&THREE.replace("port = 53", "port = \"60-50\""));
    assert!(rev.validate().iter().any(|p| p.to_string().contains("reversed")));
}

#[test]
fn adding_a_node_touches_only_that_nodes_entries() {
    let m = model(THREE);
    let old = render(&m, "a").unwrap();
    let mut bigger = m.clone();
    bigger.members.push(policy::Member {
        name: "d".into(),
        addresses: vec![ip("10.77.0.4")],
        level: None,
    });
    let new = render(&bigger, "a").unwrap();
    let (add, remove) = diff(&old.policies, &new.policies);
    assert!(remove.is_empty(), "{remove:#?}");
    assert_eq!(add.len(), 2, "{add:#?}");
    let d: IpNet = "10.77.0.4/32".parse().unwrap();
    assert!(add.iter().all(|p| p.selector.src == d || p.selector.dst == d));
    assert!(add.iter().all(|p| p.priority == PRIORITY_PEER));
    println!("adding a node: {} to add, {} to remove", add.len(), remove.len());

    // And removing it again takes exactly those away.
    let (add, remove) = diff(&new.policies, &old.policies);
    assert!(add.is_empty());
    assert_eq!(remove.len(), 2);

    // A level change is an in-place update, never a remove.
    let mut lower = m.clone();
    lower.members[1].level = Some(Level::Use);
    let (add, remove) = diff(&old.policies, &render(&lower, "a").unwrap().policies);
    assert!(remove.is_empty());
    assert_eq!(add.len(), 2);
    assert!(add.iter().all(|p| level_of(*p) == Some(xfrm::Level::Use)));
    assert_eq!(diff(&old.policies, &old.policies), (vec![], vec![]));
}

#[test]
fn every_pair_of_renderings_mirrors() {
    let mut m = model(
        r#"
level = "require"
[[members]]
name = "a"
addresses = ["10.77.0.1", "fd77::1"]
[[members]]
name = "b"
addresses = ["10.77.0.2", "fd77::2"]
level = "use"
[[members]]
name = "c"
addresses = ["fd77::3"]
[[members]]
name = "d"
addresses = ["10.77.0.4"]
level = "off"
"#,
    );
    m.members.rotate_left(1);
    let all: Vec<(String, Rendered)> =
        m.members.iter().map(|x| (x.name.clone(), render(&m, &x.name).unwrap())).collect();
    let mut checked = 0;
    for (x, rx) in &all {
        for (y, ry) in &all {
            if x == y {
                continue;
            }
            for out in rx.policies.iter().filter(|p| p.priority == PRIORITY_PEER) {
                if out.dir != Direction::Out {
                    continue;
                }
                let Some(inb) = find(ry, Direction::In, out.selector) else {
                    continue; // a policy of x towards a third member
                };
                assert_eq!(inb.priority, PRIORITY_PEER, "{x} -> {y}: {}", out.selector);
                match (out.action, inb.action) {
                    (Action::Bypass, Action::Bypass) => {}
                    (Action::Protect(t), Action::Protect(u)) => {
                        assert_eq!(
                            (t.src, t.dst, t.level, t.mode),
                            (u.src, u.dst, u.level, u.mode)
                        );
                    }
                    other => panic!("{x} -> {y} {}: {other:?}", out.selector),
                }
                checked += 1;
            }
            // And y knows x at the same level as x knows y.
            let lx = rx.peers.iter().find(|p| &p.name == y).unwrap().level;
            let ly = ry.peers.iter().find(|p| &p.name == x).unwrap().level;
            assert_eq!(lx, ly, "{x} <-> {y}");
        }
    }
    // Pairs by family: a-b 2, a-c 1, a-d 1, b-c 1, b-d 1; each in both directions.
    assert_eq!(checked, 12);
    println!("mirrored peer policies checked: {checked}");
}

#[test]
fn the_documented_example_parses_and_renders() {
    let m = model(
        r#"
level = "require"              # the mesh-wide level (default "use")
spa_port = 62201               # where members knock (default 62201)

[[members]]
name = "a"
addresses = ["10.77.0.1", "fd77::1"]

[[members]]
name = "c"
addresses = ["10.77.0.3"]
level = "use"                  # a joining node, below the mesh's level

[[networks]]                   # default: just the members' own addresses
name = "cluster"
prefixes = ["10.77.0.0/24", "fd77::/64"]

[[exclusions]]
name = "dns"
protocol = "udp"
port = 53

[[exclusions]]
name = "syslog-shipping"
protocol = "tcp"
port = "6514"                  # or a range: "6000-6010"
prefix = "10.77.0.0/24"        # optional: only to and from there
"#,
    );
    assert!(m.validate().is_empty());
    let r = render(&m, "a").unwrap();
    assert!(!r.policies.is_empty());
    // Serializing and parsing again gives the same model.
    let again: MeshPolicy = toml::from_str(&toml::to_string(&m).unwrap()).unwrap();
    assert_eq!(again, m);
}

// ---- On the kernel, in network namespaces ----

fn netns(host: &ikemesh_testbed::Host) -> PathBuf {
    PathBuf::from("/run/netns").join(host.ns())
}

/// Hosts 0, 1 and 2 are members a, b (at `require`) and c (at `off`); host 3 is in the
/// protected network but no member. Node a's rendering goes into a's kernel, nothing
/// into the others': the kernel shows what the policies do with plaintext.
#[test]
fn in_the_kernel_a_require_network_shuts_out_non_members_but_not_ike_or_exclusions() {
    let net = Net::new(4).unwrap();
    let hosts: Vec<_> = (0..4).map(|i| net.host(i)).collect();
    let toml = format!(
        r#"
level = "require"
[[members]]
name = "a"
addresses = ["{}", "{}"]
[[members]]
name = "b"
addresses = ["{}", "{}"]
[[members]]
name = "c"
addresses = ["{}", "{}"]
level = "off"
[[networks]]
prefixes = ["10.77.0.0/24", "fd77::/64"]
[[exclusions]]
name = "dns"
protocol = "udp"
port = 53
"#,
        hosts[0].ipv4(),
        hosts[0].ipv6(),
        hosts[1].ipv4(),
        hosts[1].ipv6(),
        hosts[2].ipv4(),
        hosts[2].ipv6()
    );
    let mesh = model(&toml);
    let rendered = render(&mesh, "a").unwrap();
    let mut kernel = Xfrm::open_in(&netns(hosts[0])).unwrap();
    for r in kernel.add_policies(&rendered.policies).unwrap() {
        r.unwrap();
    }
    let ours =
        kernel.dump_policies().unwrap().into_iter().filter(xfrm::PolicyInfo::is_ours).count();
    assert_eq!(ours, rendered.policies.len());
    println!("installed {ours} policies on a");

    let gap = Duration::from_millis(10);
    let (a, b, c, stranger) = (hosts[0], hosts[1], hosts[2], hosts[3]);
    for v6 in [false, true] {
        let fam = if v6 { "IPv6" } else { "IPv4" };
        let got = |from: &ikemesh_testbed::Host, port: u16| {
            from.udp_to(a, v6, port, 1, b"probe", gap).unwrap()
        };
        assert_eq!(got(stranger, 7000), 0, "{fam}: a non-member's plaintext is dropped");
        assert_eq!(got(b, 7000), 0, "{fam}: a member at require without an SA is dropped");
        assert_eq!(got(c, 7000), 1, "{fam}: a member at off passes");
        assert_eq!(got(stranger, 500), 1, "{fam}: IKE is never caught");
        assert_eq!(got(stranger, 4500), 1, "{fam}: IKE (NAT-T) is never caught");
        assert_eq!(got(stranger, DEFAULT_SPA_PORT), 1, "{fam}: SPA is never caught");
        assert_eq!(got(stranger, 53), 1, "{fam}: the DNS exclusion passes");
        println!("{fam}: stranger dropped, b dropped, c (off) passes, IKE/SPA/DNS pass");
    }

    // Adding a member is a diff the kernel takes as it is, and ends where a fresh
    // rendering would.
    let mut bigger = mesh.clone();
    bigger.members.push(policy::Member {
        name: "d".into(),
        addresses: vec![IpAddr::V4(hosts[3].ipv4())],
        level: Some(Level::Off),
    });
    let newer = render(&bigger, "a").unwrap();
    let (add, remove) = diff(&rendered.policies, &newer.policies);
    assert!(remove.is_empty());
    for r in kernel.update_policies(&add).unwrap() {
        r.unwrap();
    }
    let mut in_kernel: Vec<_> = kernel
        .dump_policies()
        .unwrap()
        .into_iter()
        .filter(xfrm::PolicyInfo::is_ours)
        .map(|p| (p.id, p.priority, p.action))
        .collect();
    let mut wanted: Vec<_> =
        newer.policies.iter().map(|p| (p.id(), p.priority, p.action)).collect();
    let key = |t: &(xfrm::PolicyId, u32, Action)| format!("{t:?}");
    in_kernel.sort_by_key(key);
    wanted.sort_by_key(key);
    assert_eq!(in_kernel, wanted);
    assert_eq!(stranger.udp_to(a, false, 7000, 1, b"probe", gap).unwrap(), 1, "d, now at off");
    assert_eq!(stranger.udp_to(a, true, 7000, 1, b"probe", gap).unwrap(), 0, "d has no IPv6");
    println!("diff for d applied: {} added, {} removed", add.len(), remove.len());
}
