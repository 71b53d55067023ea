//! `IKE_AUTH` (RFC 7296 section 1.2): identities, certificates and signatures, and the
//! first child SA, all inside the SK payload.
//!
//! ```text
//! Initiator                                       Responder
//! HDR, SK {IDi, CERT, AUTH, N(USE_TRANSPORT_MODE), SAi2, TSi, TSr}  -->
//!                        <--  HDR, SK {IDr, CERT, AUTH, N(USE_TRANSPORT_MODE), SAr2, TSi, TSr}
//!                        <--  HDR, SK {N(AUTHENTICATION_FAILED)}
//! ```
//!
//! A mesh protects host-to-host traffic, so each side proposes the two hosts' addresses
//! as selectors; the responder accepts when the proposed selectors include those hosts
//! and answers with exactly them (narrowing, section 2.9).

use crate::crypto::auth::{auth_data, signed_octets, verify_auth_data};
use crate::crypto::{Prf, Secret};
use crate::proposal::{EspAlgorithms, esp_proposal};
use crate::sa::{ChildSa, Config};
use crate::wire::{
    Payload,
    auth::{AuthMethod, AuthRepr},
    cert::{CertRepr, X509_SIGNATURE},
    id::IdRepr,
    notify::{NotifyRepr, NotifyType},
    sa::SaRepr,
    ts::{TrafficSelector, TsRepr},
};

/// What both sides need to compute and check AUTH payloads.
pub struct AuthContext<'a> {
    /// The negotiated PRF.
    pub prf: Prf,
    /// Our `SK_p` (`SK_pi` for the initiator).
    pub sk_p_own: &'a [u8],
    /// The peer's `SK_p`.
    pub sk_p_peer: &'a [u8],
    /// Our `IKE_SA_INIT` message as sent.
    pub own_first: &'a [u8],
    /// The peer's `IKE_SA_INIT` message as received.
    pub peer_first: &'a [u8],
    /// Our nonce.
    pub own_nonce: &'a [u8],
    /// The peer's nonce.
    pub peer_nonce: &'a [u8],
}

fn id_body(id: &IdRepr) -> Vec<u8> {
    let mut out = vec![0u8; id.buffer_len()];
    id.emit(&mut crate::wire::Writer::new(&mut out));
    out
}

/// Our identity (IDi or IDr), certificates and AUTH payload.
fn credentials(cfg: &Config, ctx: &AuthContext<'_>, initiator: bool) -> Vec<Payload> {
    let octets = signed_octets(
        ctx.own_first,
        ctx.peer_nonce,
        ctx.prf,
        ctx.sk_p_own,
        &id_body(&cfg.local_id),
    );
    let id = cfg.local_id.clone();
    let mut out = vec![if initiator { Payload::IdI(id) } else { Payload::IdR(id) }];
    out.extend(
        cfg.certs
            .iter()
            .map(|c| Payload::Cert(CertRepr { encoding: X509_SIGNATURE, data: c.clone() })),
    );
    out.push(Payload::Auth(AuthRepr {
        method: AuthMethod::DigitalSignature,
        data: auth_data(cfg.signer.as_ref(), &octets),
    }));
    out
}

/// Checks the peer's identity, certificates and AUTH payload; the peer's identity.
fn check_peer(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    payloads: &[Payload],
    initiator: bool,
) -> Result<IdRepr, String> {
    let id = payloads
        .iter()
        .find_map(|p| match p {
            Payload::IdI(id) if !initiator => Some(id),
            Payload::IdR(id) if initiator => Some(id),
            _ => None,
        })
        .ok_or("no identification payload")?;
    let certs: Vec<Vec<u8>> = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Cert(c) if c.encoding == X509_SIGNATURE => Some(c.data.clone()),
            _ => None,
        })
        .collect();
    let auth = payloads
        .iter()
        .find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        })
        .ok_or("no AUTH payload")?;
    if auth.method != AuthMethod::DigitalSignature {
        return Err(format!(
            "AUTH method {:?} is not accepted (only RFC 7427 signatures)",
            auth.method
        ));
    }
    let verifier = cfg.authenticator.authenticate(id, &certs)?;
    let octets = signed_octets(ctx.peer_first, ctx.own_nonce, ctx.prf, ctx.sk_p_peer, &id_body(id));
    verify_auth_data(verifier.as_ref(), &cfg.signature_algorithms, &auth.data, &octets)
        .map_err(|e| e.to_string())?;
    Ok(id.clone())
}

fn selectors(payloads: &[Payload]) -> (Option<&TsRepr>, Option<&TsRepr>) {
    let tsi = payloads.iter().find_map(|p| if let Payload::TsI(t) = p { Some(t) } else { None });
    let tsr = payloads.iter().find_map(|p| if let Payload::TsR(t) = p { Some(t) } else { None });
    (tsi, tsr)
}

fn covers(offered: &TsRepr, host: &TrafficSelector) -> bool {
    offered.selectors.iter().any(|ts| {
        ts.start.is_ipv4() == host.start.is_ipv4()
            && ts.start <= host.start
            && host.end <= ts.end
            && (ts.protocol == 0 || ts.protocol == host.protocol)
            && ts.start_port <= host.start_port
            && host.end_port <= ts.end_port
    })
}

fn has_notify(payloads: &[Payload], kind: NotifyType) -> bool {
    payloads.iter().any(|p| matches!(p, Payload::Notify(n) if n.kind == kind))
}

fn child_keys(
    prf: Prf,
    sk_d: &[u8],
    ni: &[u8],
    nr: &[u8],
    algs: EspAlgorithms,
) -> (Secret, Secret) {
    let len = usize::from(algs.gcm_key_bits / 8) + 4;
    let keymat =
        crate::crypto::keys::child_keymat(prf, sk_d, None, ni, nr, 2 * len).unwrap_or_default();
    // Section 2.17: the initiator-to-responder SA's keys come first.
    (Secret::new(keymat[..len].to_vec()), Secret::new(keymat[len..].to_vec()))
}

/// The initiator's request payloads; `child_spi` is our inbound ESP SPI.
pub fn request(cfg: &Config, ctx: &AuthContext<'_>, child_spi: [u8; 4]) -> Vec<Payload> {
    let mut out = credentials(cfg, ctx, true);
    out.push(Payload::Notify(NotifyRepr::new(NotifyType::UseTransportMode, Vec::new())));
    out.push(Payload::Sa(esp_proposal(
        &cfg.policy.esp_gcm_key_bits,
        &cfg.policy.esp_esn,
        &[],
        child_spi,
    )));
    out.push(Payload::TsI(TsRepr { selectors: vec![cfg.local_ts()] }));
    out.push(Payload::TsR(TsRepr { selectors: vec![cfg.remote_ts()] }));
    out
}

/// A request the responder accepted.
#[derive(Debug)]
pub struct Accepted {
    /// The response's payloads.
    pub response: Vec<Payload>,
    /// The authenticated initiator.
    pub peer: IdRepr,
    /// The child SA, unless it was refused (the refusal is in `response`).
    pub child: Option<ChildSa>,
}

/// A request the responder refused.
#[derive(Debug)]
pub struct Refused {
    /// The response's payloads (the error notification).
    pub response: Vec<Payload>,
    /// Why, in one line.
    pub reason: String,
}

/// The responder's handling of a request.
pub fn process_request(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    payloads: &[Payload],
    (sk_d, ni, nr): (&[u8], &[u8], &[u8]),
    child_spi: [u8; 4],
) -> Result<Accepted, Refused> {
    let refuse = |kind: NotifyType, reason: String| Refused {
        response: vec![Payload::Notify(NotifyRepr::new(kind, Vec::new()))],
        reason,
    };
    let peer = check_peer(cfg, ctx, payloads, false)
        .map_err(|why| refuse(NotifyType::AuthenticationFailed, why))?;
    let mut out = credentials(cfg, ctx, false);
    // The IKE SA stands from here; a child that cannot be had is refused on its own.
    let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
    let (tsi, tsr) = selectors(payloads);
    let (local, remote) = (cfg.local_ts(), cfg.remote_ts());
    let child_refusal = if !has_notify(payloads, NotifyType::UseTransportMode) {
        Some(NotifyType::NoProposalChosen) // the mesh only does transport mode
    } else if !(tsi.is_some_and(|t| covers(t, &remote)) && tsr.is_some_and(|t| covers(t, &local))) {
        Some(NotifyType::TsUnacceptable)
    } else {
        None
    };
    let choice = match (child_refusal, sa) {
        (None, Some(sa)) => {
            cfg.policy.choose_esp(sa, child_spi, None).map_err(|_| NotifyType::NoProposalChosen)
        }
        (None, None) => Err(NotifyType::NoProposalChosen),
        (Some(kind), _) => Err(kind),
    };
    let child = match choice {
        Ok((algs, chosen)) => {
            let peer_spi = sa
                .and_then(|s| s.proposals.iter().find(|p| p.num == chosen.proposals[0].num))
                .map(|p| p.spi.clone())
                .unwrap_or_default();
            let (i_to_r, r_to_i) = child_keys(ctx.prf, sk_d, ni, nr, algs);
            out.push(Payload::Notify(NotifyRepr::new(NotifyType::UseTransportMode, Vec::new())));
            out.push(Payload::Sa(chosen));
            out.push(Payload::TsI(TsRepr { selectors: vec![remote] }));
            out.push(Payload::TsR(TsRepr { selectors: vec![local] }));
            Some(ChildSa {
                spi_in: u32::from_be_bytes(child_spi),
                spi_out: <[u8; 4]>::try_from(peer_spi.as_slice()).map_or(0, u32::from_be_bytes),
                key_in: i_to_r,
                key_out: r_to_i,
                algorithms: algs,
                local,
                remote,
            })
        }
        Err(kind) => {
            out.push(Payload::Notify(NotifyRepr::new(kind, Vec::new())));
            None
        }
    };
    Ok(Accepted { response: out, peer, child })
}

/// The initiator's handling of the response: the peer's identity and the child SA (or
/// why the child was refused), or why the whole exchange failed.
pub fn process_response(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    payloads: &[Payload],
    (sk_d, ni, nr): (&[u8], &[u8], &[u8]),
    child_spi: [u8; 4],
) -> Result<(IdRepr, Result<ChildSa, String>), String> {
    if let Some(n) = payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == NotifyType::AuthenticationFailed => Some(n),
        _ => None,
    }) {
        return Err(format!("the peer refused our authentication ({:?})", n.kind));
    }
    let peer = check_peer(cfg, ctx, payloads, true)?;
    let child = (|| {
        if let Some(kind) = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
            _ => None,
        }) {
            return Err(format!("the peer refused the child SA: {kind:?}"));
        }
        if !has_notify(payloads, NotifyType::UseTransportMode) {
            return Err("the peer did not accept transport mode".into());
        }
        let sa: &SaRepr = payloads
            .iter()
            .find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None })
            .ok_or("no SA payload for the child")?;
        let offered =
            esp_proposal(&cfg.policy.esp_gcm_key_bits, &cfg.policy.esp_esn, &[], child_spi);
        let (algs, _) = cfg
            .policy
            .choose_esp(sa, child_spi, None)
            .map_err(|_| "the child SA answer is not one we offered")?;
        let answer = &sa.proposals[0];
        if sa.proposals.len() != 1
            || answer.num != offered.proposals[0].num
            || answer.spi.len() != 4
        {
            return Err("malformed child SA answer".to_string());
        }
        let (local, remote) = (cfg.local_ts(), cfg.remote_ts());
        let (tsi, tsr) = selectors(payloads);
        let narrowed = |t: Option<&TsRepr>, want: &TrafficSelector| {
            t.is_some_and(|t| {
                t.selectors.len() == 1
                    && covers(t, want)
                    && covers(&TsRepr { selectors: vec![*want] }, &t.selectors[0])
            })
        };
        if !(narrowed(tsi, &local) && narrowed(tsr, &remote)) {
            return Err("the peer narrowed the traffic selectors to something else".into());
        }
        let (i_to_r, r_to_i) = child_keys(ctx.prf, sk_d, ni, nr, algs);
        Ok(ChildSa {
            spi_in: u32::from_be_bytes(child_spi),
            spi_out: <[u8; 4]>::try_from(answer.spi.as_slice()).map_or(0, u32::from_be_bytes),
            key_in: r_to_i,
            key_out: i_to_r,
            algorithms: algs,
            local,
            remote,
        })
    })();
    Ok((peer, child))
}
