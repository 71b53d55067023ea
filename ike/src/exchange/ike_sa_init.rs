//! `IKE_SA_INIT` (RFC 7296 section 1.2): algorithms, nonces and D-H values, in the clear.
//!
//! ```text
//! Initiator                         Responder
//! HDR, SAi1, KEi, Ni, N(SHA)  -->
//!                             <--   HDR, SAr1, KEr, Nr, N(SHA)
//!                             <--   HDR, N(INVALID_KE_PAYLOAD, group)   (KE of the wrong group)
//!                             <--   HDR, N(NO_PROPOSAL_CHOSEN)
//! ```
//! `N(SHA)` is `SIGNATURE_HASH_ALGORITHMS` (RFC 7427): SHA2-256 and Identity (RFC 8420).

use crate::crypto::dh::{Group, KeyPair};
use crate::error::{Error, Misbehavior};
use crate::proposal::{IkeAlgorithms, Policy};
use crate::wire::{
    ExchangeType, Flags, HeaderRepr, Message, Payload, PayloadType,
    ke::KeRepr,
    nonce::NonceRepr,
    notify::{NotifyRepr, NotifyType},
    sa::SaRepr,
};

/// Hash algorithm numbers of RFC 7427 section 7 we announce: SHA2-256 (2), Identity (5).
pub const HASH_ALGORITHMS: [u8; 4] = [0, 2, 0, 5];

/// A header for a message of this exchange.
pub fn header(spi_i: u64, spi_r: u64, initiator: bool, response: bool) -> HeaderRepr {
    HeaderRepr {
        spi_i,
        spi_r,
        next_payload: PayloadType::NoNextPayload,
        minor_version: 0,
        exchange_type: ExchangeType::IkeSaInit,
        flags: Flags { initiator, version: false, response },
        message_id: 0,
        payload_len: 0,
    }
}

/// The request: our offer, our KE for `kp`'s group, our nonce.
pub fn request(
    spi_i: u64,
    offer: &SaRepr,
    kp: &KeyPair,
    ni: &[u8],
    cookie: Option<&[u8]>,
) -> Vec<u8> {
    let mut payloads = Vec::with_capacity(5);
    if let Some(c) = cookie {
        payloads.push(Payload::Notify(NotifyRepr::new(NotifyType::Cookie, c.to_vec())));
    }
    payloads.extend([
        Payload::Sa(offer.clone()),
        Payload::Ke(KeRepr { group: kp.group().id(), data: kp.public().to_vec() }),
        Payload::Nonce(NonceRepr(ni.to_vec())),
        Payload::Notify(NotifyRepr::new(
            NotifyType::SignatureHashAlgorithms,
            HASH_ALGORITHMS.to_vec(),
        )),
    ]);
    Message { header: header(spi_i, 0, true, false), payloads }.emit()
}

/// What a responder makes of a request.
#[derive(Debug)]
pub enum Answer {
    /// Accept: the algorithms, the chosen SA payload, the peer's KE data and nonce.
    Accept {
        /// Negotiated algorithms.
        algorithms: IkeAlgorithms,
        /// Our SA payload.
        chosen: SaRepr,
        /// The initiator's public value.
        ke: Vec<u8>,
        /// The initiator's nonce.
        ni: Vec<u8>,
    },
    /// Refuse, with this error's notification.
    Refuse(Error),
}

/// Processes a request as a responder. `None`: not an acceptable `IKE_SA_INIT` request
/// at all (dropped without an answer).
pub fn process_request(policy: &Policy, msg: &Message) -> Option<Answer> {
    let h = &msg.header;
    if h.exchange_type != ExchangeType::IkeSaInit
        || !h.flags.initiator
        || h.flags.response
        || h.message_id != 0
        || h.spi_r != 0
    {
        return None;
    }
    let mut sa = None;
    let mut ke = None;
    let mut nonce = None;
    for p in &msg.payloads {
        match p {
            Payload::Sa(s) => sa = Some(s),
            Payload::Ke(k) => ke = Some(k),
            Payload::Nonce(n) => nonce = Some(n),
            _ => {}
        }
    }
    let (Some(sa), Some(ke), Some(nonce)) = (sa, ke, nonce) else {
        let missing = Misbehavior::InvalidRequest("IKE_SA_INIT request without SA, KE and nonce");
        return Some(Answer::Refuse(missing.into()));
    };
    let Ok((algorithms, chosen)) = policy.choose_ike(sa, &[]) else {
        return Some(Answer::Refuse(Error::NoProposalChosen));
    };
    if ke.group != algorithms.group.id() {
        return Some(Answer::Refuse(Error::InvalidKe(algorithms.group)));
    }
    Some(Answer::Accept { algorithms, chosen, ke: ke.data.clone(), ni: nonce.0.clone() })
}

/// The response that accepts.
pub fn response(spi_i: u64, spi_r: u64, chosen: &SaRepr, kp: &KeyPair, nr: &[u8]) -> Vec<u8> {
    let payloads = vec![
        Payload::Sa(chosen.clone()),
        Payload::Ke(KeRepr { group: kp.group().id(), data: kp.public().to_vec() }),
        Payload::Nonce(NonceRepr(nr.to_vec())),
        Payload::Notify(NotifyRepr::new(
            NotifyType::SignatureHashAlgorithms,
            HASH_ALGORITHMS.to_vec(),
        )),
    ];
    Message { header: header(spi_i, spi_r, false, true), payloads }.emit()
}

/// The response that refuses for `error` (responder SPI zero: no state is kept, section
/// 2.6); `None` if the error sends no notification.
pub fn refusal(spi_i: u64, error: &Error) -> Option<Vec<u8>> {
    error.notify_payload().map(|n| notification(spi_i, n))
}

/// A response of one notification and no state (responder SPI zero): a refusal, or a
/// COOKIE challenge (section 2.6).
pub fn notification(spi_i: u64, notify: NotifyRepr) -> Vec<u8> {
    Message { header: header(spi_i, 0, false, true), payloads: vec![Payload::Notify(notify)] }
        .emit()
}

/// What an initiator makes of a response.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted: the algorithms and the responder's KE data and nonce.
    Accepted {
        /// Negotiated algorithms.
        algorithms: IkeAlgorithms,
        /// Responder's SPI.
        spi_r: u64,
        /// Responder's public value.
        ke: Vec<u8>,
        /// Responder's nonce.
        nr: Vec<u8>,
    },
    /// Try again with this group.
    RetryWithGroup(Group),
    /// Send the same request again with this cookie first (section 2.6).
    Cookie(Vec<u8>),
    /// Refused, or a response we cannot accept: why.
    Failed(Error),
}

/// Processes a response as the initiator that sent `offer` with a KE of `group`.
pub fn process_response(offer_policy: &Policy, group: Group, msg: &Message) -> Outcome {
    let mut sa = None;
    let mut ke = None;
    let mut nonce = None;
    for p in &msg.payloads {
        match p {
            Payload::Notify(n) if n.kind == NotifyType::InvalidKePayload => {
                let wanted = <[u8; 2]>::try_from(n.data.as_slice())
                    .ok()
                    .map(u16::from_be_bytes)
                    .and_then(Group::from_id);
                return match wanted {
                    Some(g) if g != group && offer_policy.groups.contains(&g) => {
                        Outcome::RetryWithGroup(g)
                    }
                    _ => Outcome::Failed(Misbehavior::UnofferedGroup.into()),
                };
            }
            Payload::Notify(n) if n.kind == NotifyType::Cookie => {
                return if (1..=64).contains(&n.data.len()) {
                    Outcome::Cookie(n.data.clone())
                } else {
                    Outcome::Failed(Misbehavior::BadCookie.into())
                };
            }
            Payload::Notify(n) if n.kind.is_error() => {
                return Outcome::Failed(Error::PeerRefused(n.kind));
            }
            Payload::Sa(s) => sa = Some(s),
            Payload::Ke(k) => ke = Some(k),
            Payload::Nonce(n) => nonce = Some(n),
            _ => {}
        }
    }
    let (Some(sa), Some(ke), Some(nonce)) = (sa, ke, nonce) else {
        return Outcome::Failed(
            Misbehavior::BadAnswer("IKE_SA_INIT response without SA, KE and nonce").into(),
        );
    };
    // The answer must be one proposal we would have accepted ourselves.
    match offer_policy.choose_ike(sa, &[]) {
        Ok((algorithms, _))
            if sa.proposals.len() == 1 && algorithms.group == group && ke.group == group.id() =>
        {
            Outcome::Accepted {
                algorithms,
                spi_r: msg.header.spi_r,
                ke: ke.data.clone(),
                nr: nonce.0.clone(),
            }
        }
        _ => Outcome::Failed(
            Misbehavior::BadAnswer("IKE_SA_INIT response chose something we did not offer").into(),
        ),
    }
}
