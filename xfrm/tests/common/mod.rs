//! Helpers shared by the xfrm integration tests.
#![allow(dead_code, unreachable_pub)]

use ikemesh_testbed::Host;
use std::net::IpAddr;
use std::path::PathBuf;
use xfrm::{
    Action, Direction, Level, Mode, OWNED_PRIORITIES, OWNED_REQIDS, Policy, Selector, Template,
};

/// Where a test host's namespace is, for `Xfrm::open_in`.
pub fn netns(host: &Host) -> PathBuf {
    PathBuf::from("/run/netns").join(host.ns())
}

pub const PRIORITY: u32 = *OWNED_PRIORITIES.start() + 0x100;

/// Reqid for the child SA between `me` and `peer` in one direction.
pub fn reqid(n: u32) -> u32 {
    *OWNED_REQIDS.start() + 0x10 + n
}

/// The out and in policies `me` needs to protect all traffic with `peer`.
pub fn pair_policies(
    me: IpAddr,
    peer: IpAddr,
    level: Level,
    reqid_out: u32,
    reqid_in: u32,
) -> [Policy; 2] {
    let policy = |src, dst, dir, reqid| Policy {
        selector: Selector::hosts(src, dst),
        dir,
        priority: PRIORITY,
        action: Action::Protect(Template { src, dst, reqid, mode: Mode::Transport, level }),
        mark: None,
    };
    [policy(me, peer, Direction::Out, reqid_out), policy(peer, me, Direction::In, reqid_in)]
}

/// Runs `f` to completion on a fresh single-threaded tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// The level of a protecting policy.
pub fn level_of(action: Action) -> Option<Level> {
    match action {
        Action::Protect(t) => Some(t.level),
        _ => None,
    }
}

/// Sends `count` UDP datagrams carrying `marker` from `a` to `b` (port `port`), 2 ms
/// apart, and returns how many arrived.
pub fn udp(a: &Host, b: &Host, v6: bool, port: u16, count: u32, marker: &[u8]) -> u32 {
    a.udp_to(b, v6, port, count, marker, std::time::Duration::from_millis(2)).unwrap()
}

/// One counter of `/proc/net/xfrm_stat` in `host` (e.g. `XfrmInTmplMismatch`).
pub fn xfrm_stat(host: &Host, name: &str) -> u64 {
    let text = host.run(&["cat", "/proc/net/xfrm_stat"]).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {name} in xfrm_stat:\n{text}"))
}
