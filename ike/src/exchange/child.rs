//! Negotiating a child SA (RFC 7296 sections 2.9, 2.17 and 3.10.1): the checks both
//! `IKE_AUTH` (the first child) and `CREATE_CHILD_SA` (new and rekeyed children) make,
//! as responder (`choose`) and as initiator (`check_answer`), and the child SA's
//! keys (`derive_child`).
//!
//! A mesh protects host-to-host traffic in transport mode: each side proposes the two
//! hosts' addresses as selectors; the responder accepts when they include those hosts
//! and answers with exactly them (narrowing, section 2.9).

use crate::config::{ChildMode, ChildSa, Config};
use crate::crypto::dh::Group;
use crate::crypto::keys::child_keymat;
use crate::crypto::{Prf, Secret};
use crate::error::{Error, Misbehavior};
use crate::proposal::EspAlgorithms;
use crate::wire::{
    Payload,
    ke::KeRepr,
    notify::NotifyType,
    sa::{SaRepr, TransformType},
    ts::{TrafficSelector, TsRepr},
};

pub(crate) fn selectors(payloads: &[Payload]) -> (Option<&TsRepr>, Option<&TsRepr>) {
    let tsi = payloads.iter().find_map(|p| if let Payload::TsI(t) = p { Some(t) } else { None });
    let tsr = payloads.iter().find_map(|p| if let Payload::TsR(t) = p { Some(t) } else { None });
    (tsi, tsr)
}

/// Whether one of `offered` includes all of `host`'s traffic.
pub(crate) fn covers(offered: &TsRepr, host: &TrafficSelector) -> bool {
    offered.selectors.iter().any(|ts| {
        ts.start.is_ipv4() == host.start.is_ipv4()
            && ts.start <= host.start
            && host.end <= ts.end
            && (ts.protocol == 0 || ts.protocol == host.protocol)
            && ts.start_port <= host.start_port
            && host.end_port <= ts.end_port
    })
}

/// Whether a responder narrowed a selector payload to exactly `want`.
pub(crate) fn narrowed_to(t: Option<&TsRepr>, want: &TrafficSelector) -> bool {
    t.is_some_and(|t| {
        t.selectors.len() == 1
            && covers(t, want)
            && covers(&TsRepr { selectors: vec![*want] }, &t.selectors[0])
    })
}

pub(crate) fn has_notify(payloads: &[Payload], kind: NotifyType) -> bool {
    payloads.iter().any(|p| matches!(p, Payload::Notify(n) if n.kind == kind))
}

/// The child SA an exchange made, between our host and the peer's. Its two AES-GCM keys
/// (with salt) come from `KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr)`, the
/// initiator-to-responder key first (section 2.17): which one we receive with depends on
/// whether we `initiated` the exchange. `spi_out` is the peer's SPI as it proposed or
/// answered it.
pub(crate) fn derive_child(
    cfg: &Config,
    (prf, sk_d, g_ir): (Prf, &[u8], Option<&[u8]>),
    (ni, nr): (&[u8], &[u8]),
    algs: EspAlgorithms,
    (spi_in, spi_out): ([u8; 4], &[u8]),
    initiated: bool,
) -> ChildSa {
    let len = usize::from(algs.gcm_key_bits / 8) + 4;
    let keymat = child_keymat(prf, sk_d, g_ir, ni, nr, 2 * len).unwrap_or_default();
    let (i_to_r, r_to_i) =
        (Secret::new(keymat[..len].to_vec()), Secret::new(keymat[len..].to_vec()));
    let (key_in, key_out) = if initiated { (r_to_i, i_to_r) } else { (i_to_r, r_to_i) };
    ChildSa {
        spi_in: u32::from_be_bytes(spi_in),
        spi_out: <[u8; 4]>::try_from(spi_out).map_or(0, u32::from_be_bytes),
        key_in,
        key_out,
        algorithms: algs,
        mode: ChildMode::Transport,
        local: cfg.local_ts(),
        remote: cfg.remote_ts(),
    }
}

/// The SPI an initiator put in the proposal the responder chose (`chosen` carries the
/// proposal's number).
pub(crate) fn offered_spi<'a>(offered: &'a SaRepr, chosen: &SaRepr) -> &'a [u8] {
    let num = chosen.proposals.first().map(|p| p.num);
    offered.proposals.iter().find(|p| Some(p.num) == num).map_or(&[], |p| p.spi.as_slice())
}

/// The responder's choice for a child SA request: transport mode, selectors that
/// include both hosts, and a proposal of `sa` we accept with the D-H group of the
/// peer's KE (`peer_ke`, for PFS; `None` in `IKE_AUTH`). `spi` is our inbound SPI. A
/// proposal we would take in another of its D-H groups is answered with that group
/// ([`Error::InvalidKe`], section 1.3.1) rather than refused outright.
pub(crate) fn choose(
    cfg: &Config,
    payloads: &[Payload],
    sa: Option<&SaRepr>,
    peer_ke: Option<&KeRepr>,
    spi: [u8; 4],
) -> Result<(EspAlgorithms, SaRepr), Error> {
    if !has_notify(payloads, NotifyType::UseTransportMode) {
        return Err(Error::NoProposalChosen); // the mesh only does transport mode
    }
    let (local, remote) = (cfg.local_ts(), cfg.remote_ts());
    let (tsi, tsr) = selectors(payloads);
    if !(tsi.is_some_and(|t| covers(t, &remote)) && tsr.is_some_and(|t| covers(t, &local))) {
        return Err(Error::TsUnacceptable);
    }
    let sa = sa.ok_or(Error::NoProposalChosen)?;
    let ke_group =
        match peer_ke {
            Some(k) => Some(Group::from_id(k.group).ok_or_else(|| {
                Error::from(Misbehavior::InvalidRequest("a KE of an unknown group"))
            })?),
            None => None,
        };
    cfg.policy.choose_esp(sa, spi, ke_group).map_err(|_| {
        let other = sa
            .proposals
            .iter()
            .flat_map(|p| p.transforms.iter())
            .filter(|t| t.kind == TransformType::Dh)
            .filter_map(|t| Group::from_id(t.id))
            .find(|g| Some(*g) != ke_group && cfg.policy.choose_esp(sa, spi, Some(*g)).is_ok());
        match (ke_group, other) {
            (Some(_), Some(g)) => Error::InvalidKe(g),
            _ => Error::NoProposalChosen,
        }
    })
}

/// The initiator's check of the responder's answer for a child SA we offered with our
/// inbound SPI `spi`: transport mode, one proposal we offered (with the D-H group of
/// the peer's KE, `ke_group`), numbered `proposal_num` (the rule differs between
/// `IKE_AUTH` and `CREATE_CHILD_SA`), with a 4-byte SPI, and selectors narrowed to the
/// two hosts. The algorithms and the peer's SPI.
pub(crate) fn check_answer<'a>(
    cfg: &Config,
    payloads: &'a [Payload],
    spi: [u8; 4],
    ke_group: Option<Group>,
    proposal_num: u8,
) -> Result<(EspAlgorithms, &'a [u8]), Error> {
    let bad = |why| Error::PeerMisbehaved(Misbehavior::BadAnswer(why));
    if !has_notify(payloads, NotifyType::UseTransportMode) {
        return Err(bad("the peer did not accept transport mode"));
    }
    let sa = payloads
        .iter()
        .find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None })
        .ok_or(bad("no SA payload in the answer"))?;
    let (algs, _) = cfg
        .policy
        .choose_esp(sa, spi, ke_group)
        .map_err(|_| bad("the child SA answer is not one we offered"))?;
    let answer = &sa.proposals[0];
    if sa.proposals.len() != 1 || answer.num != proposal_num || answer.spi.len() != 4 {
        return Err(bad("malformed child SA answer"));
    }
    let (local, remote) = (cfg.local_ts(), cfg.remote_ts());
    let (tsi, tsr) = selectors(payloads);
    if !(narrowed_to(tsi, &local) && narrowed_to(tsr, &remote)) {
        return Err(bad("the peer narrowed the traffic selectors to something else"));
    }
    Ok((algs, &answer.spi))
}
