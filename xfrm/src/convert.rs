//! Between the model ([`crate::model`]) and netlink-packet-xfrm's message structs.

use crate::model::{
    Action, Crypto, Direction, Level, Lifetime, Mark, Mode, Policy, PolicyId, PolicyInfo, Sa, SaId,
    SaInfo, Selector, Template,
};
use ipnet::IpNet;
use netlink_packet_xfrm::{
    Address, Alg, AlgAead, AlgAuth, EncapTmpl, Id, LifetimeConfig, ReplayEsn, UserPolicyId,
    UserPolicyInfo, UserSaId, UserSaInfo, UserTemplate, XFRM_INF, XFRM_MODE_TRANSPORT,
    XFRM_MODE_TUNNEL, XFRM_POLICY_ALLOW, XFRM_POLICY_BLOCK, XFRM_POLICY_FWD, XFRM_POLICY_IN,
    XFRM_POLICY_OUT, XFRM_STATE_ESN, XfrmAttrs,
    nlas::mark::Mark as NlMark,
    policy::{DelGetMessage as PolicyDelGet, ModifyMessage as PolicyModify},
    state::{DelGetMessage as SaDelGet, ModifyMessage as SaModify},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) const AF_INET: u16 = nix::libc::AF_INET as u16;
pub(crate) const AF_INET6: u16 = nix::libc::AF_INET6 as u16;
pub(crate) const IPPROTO_ESP: u8 = 50;
/// `UDP_ENCAP_ESPINUDP` (RFC 3948).
const UDP_ENCAP_ESPINUDP: u16 = 2;

pub(crate) fn family(addr: IpAddr) -> u16 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

pub(crate) fn addr_from(a: &Address, family: u16) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(a.addr))
    } else {
        let b = a.addr;
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// A fixed-size, NUL-padded algorithm name.
fn alg_name<const N: usize>(name: &str) -> [u8; N] {
    let mut out = [0u8; N];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
}

fn key_bits(len: usize) -> u32 {
    u32::try_from(len * 8).unwrap_or(u32::MAX)
}

pub(crate) fn selector_to(s: &Selector) -> netlink_packet_xfrm::Selector {
    let mut out = netlink_packet_xfrm::Selector::default();
    out.source_prefix(&s.src.addr(), s.src.prefix_len());
    out.destination_prefix(&s.dst.addr(), s.dst.prefix_len());
    // source_prefix() treats an unspecified address as "any", whatever the length.
    out.prefixlen_s = s.src.prefix_len();
    out.prefixlen_d = s.dst.prefix_len();
    out.family = family(s.src.addr());
    out.proto = s.proto.unwrap_or(0);
    if let Some(p) = s.src_port {
        out.sport = p;
        out.sport_mask = u16::MAX;
    }
    if let Some(p) = s.dst_port {
        out.dport = p;
        out.dport_mask = u16::MAX;
    }
    out
}

pub(crate) fn selector_from(s: &netlink_packet_xfrm::Selector) -> Selector {
    let net = |a: &Address, len: u8| {
        let addr = addr_from(a, s.family);
        IpNet::new(addr, len).unwrap_or_else(|_| IpNet::from(addr))
    };
    Selector {
        src: net(&s.saddr, s.prefixlen_s),
        dst: net(&s.daddr, s.prefixlen_d),
        proto: (s.proto != 0).then_some(s.proto),
        src_port: (s.sport_mask != 0).then_some(s.sport),
        dst_port: (s.dport_mask != 0).then_some(s.dport),
    }
}

fn limit(v: Option<u64>) -> u64 {
    v.unwrap_or(XFRM_INF)
}

fn lifetime_to(l: &Lifetime) -> LifetimeConfig {
    LifetimeConfig {
        soft_byte_limit: limit(l.soft_bytes),
        hard_byte_limit: limit(l.hard_bytes),
        soft_packet_limit: limit(l.soft_packets),
        hard_packet_limit: limit(l.hard_packets),
        soft_add_expires_seconds: l.soft_seconds.unwrap_or(0),
        hard_add_expires_seconds: l.hard_seconds.unwrap_or(0),
        soft_use_expires_seconds: 0,
        hard_use_expires_seconds: 0,
    }
}

fn infinite_lifetime() -> LifetimeConfig {
    lifetime_to(&Lifetime::default())
}

fn mode_to(m: Mode) -> u8 {
    match m {
        Mode::Transport => XFRM_MODE_TRANSPORT,
        Mode::Tunnel => XFRM_MODE_TUNNEL,
    }
}

fn mode_from(m: u8) -> Mode {
    if m == XFRM_MODE_TUNNEL { Mode::Tunnel } else { Mode::Transport }
}

fn mark_attr(mark: Option<Mark>) -> Option<XfrmAttrs> {
    mark.map(|m| XfrmAttrs::Mark(NlMark { value: m.value, mask: m.mask }))
}

fn mark_from(nlas: &[XfrmAttrs]) -> Option<Mark> {
    nlas.iter().find_map(|a| match a {
        XfrmAttrs::Mark(m) => Some(Mark { value: m.value, mask: m.mask }),
        _ => None,
    })
}

/// The add/update message for an SA.
pub(crate) fn sa_modify(sa: &Sa) -> SaModify {
    let fam = family(sa.dst);
    let info = UserSaInfo {
        selector: match &sa.selector {
            Some(s) => selector_to(s),
            None => netlink_packet_xfrm::Selector { family: fam, ..Default::default() },
        },
        id: Id { daddr: Address::from_ip(&sa.dst), spi: sa.spi, proto: IPPROTO_ESP },
        saddr: Address::from_ip(&sa.src),
        family: fam,
        lifetime_cfg: lifetime_to(&sa.lifetime),
        reqid: sa.reqid,
        mode: mode_to(sa.mode),
        // The window travels in XFRMA_REPLAY_ESN_VAL (it may exceed the legacy u8
        // field, which must then be 0).
        replay_window: 0,
        flags: if sa.esn { XFRM_STATE_ESN } else { 0 },
        ..Default::default()
    };

    let mut nlas = Vec::with_capacity(6);
    match &sa.crypto {
        Crypto::AesGcm16 { key } => nlas.push(XfrmAttrs::EncryptionAlgAead(AlgAead {
            alg_name: alg_name(crate::AEAD_GCM),
            alg_key_len: key_bits(key.len()),
            alg_icv_len: 128,
            alg_key: key.as_bytes().to_vec(),
        })),
        Crypto::AesCbcHmacSha256 { enc_key, auth_key } => {
            nlas.push(XfrmAttrs::EncryptionAlg(Alg {
                alg_name: alg_name("cbc(aes)"),
                alg_key_len: key_bits(enc_key.len()),
                alg_key: enc_key.as_bytes().to_vec(),
            }));
            nlas.push(XfrmAttrs::AuthenticationAlgTrunc(AlgAuth {
                alg_name: alg_name("hmac(sha256)"),
                alg_key_len: key_bits(auth_key.len()),
                alg_trunc_len: 128,
                alg_key: auth_key.as_bytes().to_vec(),
            }));
        }
    }
    let bmp_len = sa.replay_window.div_ceil(32);
    nlas.push(XfrmAttrs::ReplayStateEsn(ReplayEsn {
        bmp_len,
        oseq: 0,
        seq: 0,
        oseq_hi: 0,
        seq_hi: 0,
        replay_window: sa.replay_window,
        bmp: vec![0; bmp_len as usize],
    }));
    if let Some(e) = sa.encap {
        nlas.push(XfrmAttrs::EncapsulationTemplate(EncapTmpl {
            encap_type: UDP_ENCAP_ESPINUDP,
            encap_sport: e.sport,
            encap_dport: e.dport,
            encap_oa: Address::default(),
        }));
    }
    nlas.extend(mark_attr(sa.mark));
    SaModify { user_sa_info: info, nlas }
}

/// The delete/get message for an SA.
pub(crate) fn sa_del_get(id: &SaId) -> SaDelGet {
    let user_sa_id = UserSaId {
        daddr: Address::from_ip(&id.dst),
        spi: id.spi,
        family: family(id.dst),
        proto: IPPROTO_ESP,
    };
    let mut nlas = vec![XfrmAttrs::SrcAddr(Address::from_ip(&id.src))];
    nlas.extend(mark_attr(id.mark));
    SaDelGet { user_sa_id, nlas }
}

/// An SA as the kernel describes it; `None` for protocols other than ESP.
pub(crate) fn sa_info(info: &UserSaInfo, nlas: &[XfrmAttrs]) -> Option<SaInfo> {
    if info.id.proto != IPPROTO_ESP {
        return None;
    }
    // Encryption first, then integrity. The kernel lists integrity first, and reports
    // an HMAC both as XFRMA_ALG_AUTH and as XFRMA_ALG_AUTH_TRUNC.
    let mut algorithm: Vec<String> = Vec::new();
    for encryption in [true, false] {
        for a in nlas {
            let name = match a {
                XfrmAttrs::EncryptionAlgAead(a) if encryption => name_of(&a.alg_name),
                XfrmAttrs::EncryptionAlg(a) if encryption => name_of(&a.alg_name),
                XfrmAttrs::AuthenticationAlg(a) if !encryption => name_of(&a.alg_name),
                XfrmAttrs::AuthenticationAlgTrunc(a) if !encryption => name_of(&a.alg_name),
                _ => continue,
            };
            if !algorithm.contains(&name) {
                algorithm.push(name);
            }
        }
    }
    Some(SaInfo {
        id: SaId {
            dst: addr_from(&info.id.daddr, info.family),
            spi: info.id.spi,
            src: addr_from(&info.saddr, info.family),
            mark: mark_from(nlas),
        },
        reqid: info.reqid,
        mode: mode_from(info.mode),
        bytes: info.lifetime_cur.bytes,
        packets: info.lifetime_cur.packets,
        replay_drops: info.stats.replay,
        integrity_failures: info.stats.integrity_failed,
        esn: info.flags & XFRM_STATE_ESN != 0,
        algorithm: algorithm.join("+"),
    })
}

fn dir_to(d: Direction) -> u8 {
    match d {
        Direction::In => XFRM_POLICY_IN,
        Direction::Out => XFRM_POLICY_OUT,
        Direction::Fwd => XFRM_POLICY_FWD,
    }
}

pub(crate) fn dir_from(d: u8) -> Direction {
    match d {
        XFRM_POLICY_OUT => Direction::Out,
        XFRM_POLICY_FWD => Direction::Fwd,
        _ => Direction::In,
    }
}

/// The add/update message for a policy.
pub(crate) fn policy_modify(p: &Policy) -> PolicyModify {
    let info = UserPolicyInfo {
        selector: selector_to(&p.selector),
        lifetime_cfg: infinite_lifetime(),
        priority: p.priority,
        direction: dir_to(p.dir),
        action: if p.action == Action::Block { XFRM_POLICY_BLOCK } else { XFRM_POLICY_ALLOW },
        ..Default::default()
    };
    let mut nlas = Vec::with_capacity(2);
    if let Action::Protect(t) = p.action {
        let tmpl = UserTemplate {
            id: Id { daddr: Address::from_ip(&t.dst), spi: 0, proto: IPPROTO_ESP },
            family: family(t.dst),
            saddr: Address::from_ip(&t.src),
            reqid: t.reqid,
            mode: mode_to(t.mode),
            optional: u8::from(t.level == Level::Use),
            // Any algorithm: the SA decides.
            aalgos: u32::MAX,
            ealgos: u32::MAX,
            calgos: u32::MAX,
            ..Default::default()
        };
        nlas.push(XfrmAttrs::Template(vec![tmpl]));
    }
    nlas.extend(mark_attr(p.mark));
    PolicyModify { user_policy_info: info, nlas }
}

/// The delete/get message for a policy.
pub(crate) fn policy_del_get(id: &PolicyId) -> PolicyDelGet {
    let user_policy_id =
        UserPolicyId { selector: selector_to(&id.selector), index: 0, direction: dir_to(id.dir) };
    PolicyDelGet { user_policy_id, nlas: mark_attr(id.mark).into_iter().collect() }
}

/// A policy as the kernel describes it.
pub(crate) fn policy_info(info: &UserPolicyInfo, nlas: &[XfrmAttrs]) -> PolicyInfo {
    let template = nlas.iter().find_map(|a| match a {
        XfrmAttrs::Template(t) => t.first().copied(),
        _ => None,
    });
    let action = match (info.action, template) {
        (XFRM_POLICY_BLOCK, _) => Action::Block,
        (_, Some(t)) => Action::Protect(Template {
            src: addr_from(&t.saddr, t.family),
            dst: addr_from(&t.id.daddr, t.family),
            reqid: t.reqid,
            mode: mode_from(t.mode),
            level: if t.optional != 0 { Level::Use } else { Level::Require },
        }),
        (_, None) => Action::Bypass,
    };
    PolicyInfo {
        id: PolicyId {
            selector: selector_from(&info.selector),
            dir: dir_from(info.direction),
            mark: mark_from(nlas),
        },
        priority: info.priority,
        action,
        index: info.index,
    }
}
