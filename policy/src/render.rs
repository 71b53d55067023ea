//! Rendering a [`MeshPolicy`] for one node: the XFRM policies the `xfrm` crate installs,
//! and the firewall plan the nftables pinholes need.
//!
//! [`render`] is pure and deterministic: the same model gives the same, sorted policies
//! whatever the order of its members, so two renderings can be compared with [`diff`]
//! and only what changed is touched in the kernel.
//!
//! # The policies, strongest first
//!
//! Lower priority numbers win in the kernel. All priorities sit in
//! [`xfrm::OWNED_PRIORITIES`], above an operator's own policies (priority 0 by default).
//!
//! 1. [`PRIORITY_CONTROL`], `Bypass`: what the mesh itself needs in the clear. IKE on our
//!    own UDP ports 500 and 4500 (in to them, out from them; the remote port is any, as a
//!    NAT may change it; the pinholes gate who reaches them); SPA packets (in to our SPA
//!    port, out to anyone's); traffic between our own addresses; and for IPv6, neighbour
//!    discovery (`ICMPv6` types 133 to 137, both directions). The daemon's sockets do not
//!    bypass XFRM on their own, so these are always emitted.
//! 2. [`PRIORITY_EXCLUSION`], `Bypass`: the model's exclusions, both directions (see
//!    [`crate::model::Exclusion`]), in every address family this node has an address in
//!    (ICMP only IPv4, `ICMPv6` only IPv6, a prefix only its own family).
//! 3. [`PRIORITY_PEER`]: per peer, for each pair of our address and its address of the
//!    same family, an `Out` policy us → peer and an `In` policy peer → us, at the pair's
//!    level ([`MeshPolicy::pair_level`], the weaker of the two members' levels): `off`
//!    is a `Bypass` pair (so that a `require` network does not catch the peer), `use` and
//!    `require` `Protect` with a transport-mode template of that level and the peer's
//!    reqid.
//! 4. [`PRIORITY_NETWORK`]: when this node's network level (the weaker of its own level
//!    and the mesh's) is `require`, for each protected prefix and each of our addresses
//!    of its family, `Out` us → prefix and `In` prefix → us, `Protect` at `require` with
//!    reqid [`NETWORK_REQID`] and a template open on the far end (transport mode takes the
//!    addresses from the packet). No SA ever exists for a non-member, so the kernel
//!    drops its traffic both ways (and raises an ACQUIRE the daemon ignores). At `use`
//!    nothing network-wide is rendered: a `use` policy accepts plaintext anyway, so it
//!    would protect nothing and only make the kernel ask for SAs to every non-member
//!    host the node talks to.
//!
//! When two entries would have the same selector and direction (an exclusion naming a
//! peer's address, a protected prefix that is a member's own address), the stronger one
//! is kept and the weaker one dropped: the kernel holds one policy per selector.
//!
//! Forwarded traffic (`Fwd`) is not covered: the mesh protects traffic between the
//! hosts themselves (transport mode).
//!
//! # Request IDs
//!
//! Every member has a reqid in [`PEER_REQIDS`], derived from its name alone: the first
//! four bytes of SHA-256(`"ikemesh reqid v1\0"` ‖ name), big-endian, modulo the range's
//! size, added to its start. Collisions are resolved by taking members in order of
//! name and moving a member whose slot is taken to the next free one (wrapping). So a
//! member's reqid does not depend on the order of the members, on `me`, or on which
//! other members exist, unless another member collides with it and sorts before it
//! (with 1,000 members about a 3 % chance that some pair collides); then [`diff`] shows
//! that member's policies as changed, which is what the kernel needs.

use crate::model::{IKE_PORTS, Level, Member, MeshPolicy, ModelError, Protocol};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use xfrm::{Action, Direction, Mode, Policy, PolicyId, Selector, Template};

/// Priority of the mesh's own bypasses: IKE, SPA, our own addresses, neighbour discovery.
pub const PRIORITY_CONTROL: u32 = 0x4D00_0100;
/// Priority of the model's exclusions.
pub const PRIORITY_EXCLUSION: u32 = 0x4D00_0200;
/// Priority of the per-peer policies.
pub const PRIORITY_PEER: u32 = 0x4D00_1000;
/// Priority of the network-wide policies (the weakest).
pub const PRIORITY_NETWORK: u32 = 0x4D00_F000;

/// The reqid of the network-wide `require` templates (no SA ever carries it).
pub const NETWORK_REQID: u32 = *xfrm::OWNED_REQIDS.start();
/// The reqids members are given (the first 256 of [`xfrm::OWNED_REQIDS`] are kept for
/// fixed uses such as [`NETWORK_REQID`]).
pub const PEER_REQIDS: RangeInclusive<u32> =
    (*xfrm::OWNED_REQIDS.start() + 0x100)..=*xfrm::OWNED_REQIDS.end();

/// The neighbour discovery messages let through in the clear (RFC 4861: router
/// solicitation and advertisement, neighbour solicitation and advertisement, redirect).
pub const ND_TYPES: RangeInclusive<u8> = 133..=137;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// One node's view of the mesh: its policies, its peers and its firewall plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The node it was rendered for.
    pub me: String,
    /// Its own level.
    pub level: Level,
    /// The level of its network-wide policies (the weaker of its own and the mesh's).
    pub network_level: Level,
    /// The XFRM policies, sorted by priority, then family, direction and selector.
    pub policies: Vec<Policy>,
    /// Its peers, sorted by name.
    pub peers: Vec<Peer>,
    /// What the pinholes gate and for whom.
    pub firewall: FirewallPlan,
}

/// A peer as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The member's name.
    pub name: String,
    /// The reqid of its SAs and policy templates on this node.
    pub reqid: u32,
    /// The pair's level (the weaker of the two members' levels).
    pub level: Level,
    /// Its addresses, sorted.
    pub addresses: Vec<IpAddr>,
}

/// What the nftables pinholes need: the ports to keep dark, the SPA port, and who may
/// knock. Nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallPlan {
    /// The UDP ports gated by SPA: 500 and 4500.
    pub ike_ports: [u16; 2],
    /// The UDP port SPA packets arrive at.
    pub spa_port: u16,
    /// The addresses of every other member, sorted, IPv4 before IPv6.
    pub knockers: Vec<IpAddr>,
}

/// Renders `model` for the member named `me`.
///
/// Fails with [`ModelError::Invalid`] (every problem, each logged as one `warn` line)
/// or [`ModelError::UnknownMember`] (logged likewise).
pub fn render(model: &MeshPolicy, me: &str) -> Result<Rendered, ModelError> {
    let problems = model.validate();
    if !problems.is_empty() {
        for p in &problems {
            tracing::warn!(node = me, "mesh policy refused: {p}");
        }
        return Err(ModelError::Invalid(problems));
    }
    let Some(mine) = model.member(me) else {
        let err = ModelError::UnknownMember(me.to_owned());
        tracing::warn!("mesh policy refused: {err}");
        return Err(err);
    };
    let my_addrs: BTreeSet<IpAddr> = mine.addresses.iter().copied().collect();
    let families: Vec<bool> = [false, true]
        .into_iter()
        .filter(|&v6| my_addrs.iter().any(|a| a.is_ipv6() == v6))
        .collect();
    let mut out = Builder::default();
    control(&mut out, model.spa_port, &families, &my_addrs);
    exclusions(&mut out, model, &families);
    let peers = peers(&mut out, model, mine, &my_addrs);
    let network_level = model.member_level(mine).min(model.level);
    if network_level == Level::Require {
        networks(&mut out, model, &my_addrs);
    }

    let mut knockers: Vec<IpAddr> = model
        .members
        .iter()
        .filter(|m| m.name != me)
        .flat_map(|m| m.addresses.iter().copied())
        .collect();
    knockers.sort_unstable();
    knockers.dedup();

    let mut policies = out.policies;
    policies.sort_by_key(sort_key);
    Ok(Rendered {
        me: me.to_owned(),
        level: model.member_level(mine),
        network_level,
        policies,
        peers,
        firewall: FirewallPlan { ike_ports: IKE_PORTS, spa_port: model.spa_port, knockers },
    })
}

/// The mesh's own traffic: IKE, SPA, neighbour discovery, our own addresses.
fn control(out: &mut Builder, spa_port: u16, families: &[bool], my_addrs: &BTreeSet<IpAddr>) {
    for &v6 in families {
        let any = any_net(v6);
        let udp = |src_port, dst_port| Selector {
            src: any,
            dst: any,
            proto: Some(IPPROTO_UDP),
            src_port,
            dst_port,
        };
        for port in IKE_PORTS {
            out.bypass(PRIORITY_CONTROL, Direction::In, udp(None, Some(port)));
            out.bypass(PRIORITY_CONTROL, Direction::Out, udp(Some(port), None));
        }
        out.bypass(PRIORITY_CONTROL, Direction::In, udp(None, Some(spa_port)));
        out.bypass(PRIORITY_CONTROL, Direction::Out, udp(None, Some(spa_port)));
        if v6 {
            for t in ND_TYPES {
                // ICMP selectors carry the type in the source port, both directions.
                let nd = Selector {
                    src: any,
                    dst: any,
                    proto: Some(IPPROTO_ICMPV6),
                    src_port: Some(u16::from(t)),
                    dst_port: None,
                };
                out.bypass(PRIORITY_CONTROL, Direction::Out, nd);
                out.bypass(PRIORITY_CONTROL, Direction::In, nd);
            }
        }
    }
    for &a in my_addrs {
        for &b in my_addrs.iter().filter(|b| b.is_ipv6() == a.is_ipv6()) {
            out.bypass(PRIORITY_CONTROL, Direction::Out, Selector::hosts(a, b));
            out.bypass(PRIORITY_CONTROL, Direction::In, Selector::hosts(a, b));
        }
    }
}

/// The model's exclusions, both directions, in each of our families they apply to.
fn exclusions(out: &mut Builder, model: &MeshPolicy, families: &[bool]) {
    for e in &model.exclusions {
        for &v6 in families {
            if e.prefix.is_some_and(|p| matches!(p, IpNet::V6(_)) != v6)
                || e.protocol.and_then(Protocol::only_ipv6).is_some_and(|f| f != v6)
            {
                continue;
            }
            let base = Selector {
                src: any_net(v6),
                dst: e.prefix.map_or_else(|| any_net(v6), |p| p.trunc()),
                proto: e.protocol.map(|p| p.0),
                src_port: None,
                dst_port: None,
            };
            let Some(range) = e.port else {
                out.bypass(PRIORITY_EXCLUSION, Direction::Out, base);
                out.bypass(PRIORITY_EXCLUSION, Direction::In, base.reversed());
                continue;
            };
            for port in range.ports() {
                // We are the client (out to the port, its answers in), or the server (in
                // to the port, our answers out).
                for sel in [
                    Selector { dst_port: Some(port), ..base },
                    Selector { src_port: Some(port), ..base },
                ] {
                    out.bypass(PRIORITY_EXCLUSION, Direction::Out, sel);
                    out.bypass(PRIORITY_EXCLUSION, Direction::In, sel.reversed());
                }
            }
        }
    }
}

/// Per peer, per pair of addresses of one family: out and in at the pair's level.
fn peers(
    out: &mut Builder,
    model: &MeshPolicy,
    mine: &Member,
    my_addrs: &BTreeSet<IpAddr>,
) -> Vec<Peer> {
    let reqids = reqids(model);
    let mut others: Vec<&Member> = model.members.iter().filter(|m| m.name != mine.name).collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    let mut peers = Vec::with_capacity(others.len());
    for peer in others {
        let level = model.pair_level(mine, peer);
        let reqid = reqids[&peer.name];
        let mut addresses = peer.addresses.clone();
        addresses.sort_unstable();
        let action = |src, dst| match level.to_xfrm() {
            None => Action::Bypass,
            Some(level) => {
                Action::Protect(Template { src, dst, reqid, mode: Mode::Transport, level })
            }
        };
        for &a in my_addrs {
            for &b in addresses.iter().filter(|b| b.is_ipv6() == a.is_ipv6()) {
                out.push(PRIORITY_PEER, Direction::Out, Selector::hosts(a, b), action(a, b));
                out.push(PRIORITY_PEER, Direction::In, Selector::hosts(b, a), action(b, a));
            }
        }
        peers.push(Peer { name: peer.name.clone(), reqid, level, addresses });
    }
    peers
}

/// The protected networks at `require`: us to the prefix and back, no SA for
/// non-members.
fn networks(out: &mut Builder, model: &MeshPolicy, my_addrs: &BTreeSet<IpAddr>) {
    let template = |src, dst| {
        Action::Protect(Template {
            src,
            dst,
            reqid: NETWORK_REQID,
            mode: Mode::Transport,
            level: xfrm::Level::Require,
        })
    };
    for prefix in model.protected_prefixes() {
        let v6 = matches!(prefix, IpNet::V6(_));
        let far = unspecified(v6);
        for &a in my_addrs.iter().filter(|a| a.is_ipv6() == v6) {
            let here = IpNet::from(a);
            out.push(
                PRIORITY_NETWORK,
                Direction::Out,
                Selector::prefixes(here, prefix),
                template(a, far),
            );
            out.push(
                PRIORITY_NETWORK,
                Direction::In,
                Selector::prefixes(prefix, here),
                template(far, a),
            );
        }
    }
}

/// What to change to go from `old` to `new` (two renderings' policies): `(to_add,
/// to_remove)`.
///
/// `to_add` holds the policies of `new` that `old` lacks or holds differently (another
/// level, reqid, priority or action); install them with `xfrm::Xfrm::update_policies`,
/// which replaces a changed entry in place, atomically. `to_remove` holds the policies
/// of `old` whose selector and direction `new` no longer has; delete them by
/// [`Policy::id`]. Both keep the order of their input.
pub fn diff(old: &[Policy], new: &[Policy]) -> (Vec<Policy>, Vec<Policy>) {
    let before: HashMap<PolicyId, &Policy> = old.iter().map(|p| (p.id(), p)).collect();
    let after: HashSet<PolicyId> = new.iter().map(Policy::id).collect();
    let to_add = new.iter().filter(|p| before.get(&p.id()) != Some(p)).copied().collect();
    let to_remove = old.iter().filter(|p| !after.contains(&p.id())).copied().collect();
    (to_add, to_remove)
}

/// Every member's reqid, by name (see the module's documentation for how).
pub fn reqids(model: &MeshPolicy) -> BTreeMap<String, u32> {
    let names: BTreeSet<&str> = model.members.iter().map(|m| m.name.as_str()).collect();
    let start = *PEER_REQIDS.start();
    let span = PEER_REQIDS.end() - start + 1;
    let mut taken = HashSet::new();
    let mut out = BTreeMap::new();
    for name in names {
        let mut h = Sha256::new();
        h.update(b"ikemesh reqid v1\0");
        h.update(name.as_bytes());
        let digest = h.finalize();
        let mut slot = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % span;
        while !taken.insert(slot) {
            slot = (slot + 1) % span;
        }
        out.insert(name.to_owned(), start + slot);
    }
    out
}

/// Collects policies, keeping the first (strongest) one per selector and direction.
#[derive(Default)]
struct Builder {
    policies: Vec<Policy>,
    ids: HashSet<PolicyId>,
}

impl Builder {
    fn push(&mut self, priority: u32, dir: Direction, selector: Selector, action: Action) {
        let policy = Policy { selector, dir, priority, action, mark: None };
        if self.ids.insert(policy.id()) {
            self.policies.push(policy);
        } else {
            tracing::debug!(
                "policy {dir:?} {selector} at priority {priority:#x} is shadowed by a stronger one with its selector"
            );
        }
    }

    fn bypass(&mut self, priority: u32, dir: Direction, selector: Selector) {
        self.push(priority, dir, selector, Action::Bypass);
    }
}

fn any_net(v6: bool) -> IpNet {
    if v6 { IpNet::V6(Ipv6Net::default()) } else { IpNet::V4(Ipv4Net::default()) }
}

fn unspecified(v6: bool) -> IpAddr {
    if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) }
}

type SortKey = (u32, bool, u8, IpNet, IpNet, Option<u8>, Option<u16>, Option<u16>);

fn sort_key(p: &Policy) -> SortKey {
    let s = p.selector;
    let dir = match p.dir {
        Direction::Out => 0,
        Direction::In => 1,
        Direction::Fwd => 2,
    };
    (p.priority, matches!(s.src, IpNet::V6(_)), dir, s.src, s.dst, s.proto, s.src_port, s.dst_port)
}
