//! The SPA gate in network namespaces on the host kernel: nftables pinholes, the
//! listener, and the client's knock (issue 7's acceptance). Needs root, `nft` (Debian's
//! nftables package) and `tcpdump`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ikemesh_testbed::{Host, Net};
use policy::{PinholeConfig, Pinholes};

/// A pinhole manager for `table`, with a short default timeout.
fn pinholes(table: &str) -> Pinholes {
    Pinholes::new(PinholeConfig {
        table: table.into(),
        default_ttl: Duration::from_secs(2),
        ..PinholeConfig::default()
    })
    .unwrap()
}

/// `nft -j list ruleset` in `host`, without our table and without the metainfo
/// object: what we must never change.
fn ruleset_outside(host: &Host, table: &str) -> Vec<serde_json::Value> {
    let out = host.run(&["nft", "-j", "list", "ruleset"]).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ours = |object: &serde_json::Value| {
        let Some((kind, body)) = object.as_object().and_then(|o| o.iter().next()) else {
            return false;
        };
        if kind == "metainfo" {
            return true;
        }
        let name = if kind == "table" { &body["name"] } else { &body["table"] };
        body["family"] == "inet" && name == table
    };
    doc["nftables"].as_array().unwrap().iter().filter(|o| !ours(o)).cloned().collect()
}

/// Whether a datagram from `from` reaches a socket listening on `to`:`port` within
/// `wait`; and how long it took.
fn probe(from: &Host, to: &Host, port: u16, wait: Duration) -> Option<Duration> {
    let dst = SocketAddr::new(IpAddr::V4(to.ipv4()), port);
    let sink = to.enter(|| UdpSocket::bind(dst)).unwrap().unwrap();
    sink.set_read_timeout(Some(wait)).unwrap();
    let sent = from
        .enter(|| {
            let sock = UdpSocket::bind((from.ipv4(), 0))?;
            let at = Instant::now();
            sock.send_to(b"probe", dst)?;
            std::io::Result::Ok(at)
        })
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 64];
    match sink.recv_from(&mut buf) {
        Ok((n, src)) if &buf[..n] == b"probe" && src.ip() == IpAddr::V4(from.ipv4()) => {
            Some(sent.elapsed())
        }
        Ok((_, src)) => panic!("unexpected datagram from {src}"),
        Err(_) => None,
    }
}

#[test]
fn pinholes_open_close_and_touch_nothing_else() {
    let net = Net::new(2).unwrap();
    let (a, b) = (net.host(0), net.host(1));
    let table = "ikemesh_t1";
    let holes = pinholes(table);

    // The operator's own table, with a rule of its own, before we arrive.
    b.sh("nft add table inet operator && \
          nft add chain inet operator input '{ type filter hook input priority 0; policy accept; }' && \
          nft add rule inet operator input tcp dport 22 counter accept && \
          nft add table ip legacy && nft add set ip legacy blocked '{ type ipv4_addr; }'")
        .unwrap();
    let before = ruleset_outside(b, table);
    assert!(before.len() >= 5, "the operator's ruleset: {before:?}");

    assert!(probe(a, b, 500, Duration::from_millis(300)).is_some(), "open before install");
    b.enter(|| holes.install()).unwrap().unwrap();
    b.enter(|| holes.install()).unwrap().unwrap(); // idempotent
    println!("{}", b.run(&["nft", "list", "table", "inet", table]).unwrap());
    assert_eq!(ruleset_outside(b, table), before, "install touched another table");
    assert!(probe(a, b, 500, Duration::from_millis(500)).is_none(), "500 open after install");
    assert!(probe(a, b, 4500, Duration::from_millis(500)).is_none(), "4500 open after install");
    assert!(probe(a, b, 501, Duration::from_millis(500)).is_some(), "other ports must stay open");

    b.enter(|| holes.allow(a.ipv4().into(), Duration::from_secs(2))).unwrap().unwrap();
    b.enter(|| holes.allow(a.ipv4().into(), Duration::from_secs(2))).unwrap().unwrap(); // refresh
    assert!(probe(a, b, 500, Duration::from_millis(500)).is_some(), "500 dark after allow");
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].addr, IpAddr::V4(a.ipv4()));
    assert!(listed[0].expires.is_some_and(|e| e <= Duration::from_secs(2)), "{listed:?}");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(probe(a, b, 500, Duration::from_millis(500)).is_none(), "500 open after the timeout");

    b.enter(|| holes.keep(a.ipv4().into())).unwrap().unwrap();
    b.enter(|| holes.keep(a.ipv6().into())).unwrap().unwrap();
    b.enter(|| holes.keep(a.ipv4().into())).unwrap().unwrap(); // idempotent
    assert!(probe(a, b, 4500, Duration::from_millis(500)).is_some(), "kept peer shut out");
    let listed = b.enter(|| holes.allowed()).unwrap().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|p| p.expires.is_none()), "{listed:?}");
    assert_eq!(ruleset_outside(b, table), before, "an update touched another table");
    b.enter(|| holes.release(a.ipv4().into())).unwrap().unwrap();
    b.enter(|| holes.release(a.ipv4().into())).unwrap().unwrap(); // idempotent
    assert!(probe(a, b, 4500, Duration::from_millis(500)).is_none(), "released peer let in");

    b.enter(|| holes.remove()).unwrap().unwrap();
    b.enter(|| holes.remove()).unwrap().unwrap(); // idempotent
    assert!(probe(a, b, 500, Duration::from_millis(300)).is_some(), "500 dark after remove");
    assert_eq!(ruleset_outside(b, table), before, "remove touched another table");
    let err =
        b.enter(|| holes.allow(a.ipv4().into(), Duration::from_secs(1))).unwrap().unwrap_err();
    println!("allow without our table: {err}");
    assert!(!err.to_string().contains('\n'));
}
