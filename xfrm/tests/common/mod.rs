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
    let out = Policy {
        selector: Selector::hosts(me, peer),
        dir: Direction::Out,
        priority: PRIORITY,
        action: Action::Protect(Template {
            src: me,
            dst: peer,
            reqid: reqid_out,
            mode: Mode::Transport,
            level,
        }),
        mark: None,
    };
    let inbound = Policy {
        selector: Selector::hosts(peer, me),
        dir: Direction::In,
        priority: PRIORITY,
        action: Action::Protect(Template {
            src: peer,
            dst: me,
            reqid: reqid_in,
            mode: Mode::Transport,
            level,
        }),
        mark: None,
    };
    [out, inbound]
}

/// The level of a protecting policy.
pub fn level_of(action: Action) -> Option<Level> {
    match action {
        Action::Protect(t) => Some(t.level),
        _ => None,
    }
}
