//! `CREATE_CHILD_SA` (RFC 7296 sections 1.3, 2.8, 2.17 and 2.18): a new child SA, the
//! rekey of a child SA, and the rekey of the IKE SA itself.
//!
//! ```text
//! new child:   HDR, SK {N(USE_TRANSPORT_MODE), SA, Ni, [KEi], TSi, TSr}            -->
//!                 <--  HDR, SK {N(USE_TRANSPORT_MODE), SA, Nr, [KEr], TSi, TSr}
//! child rekey: HDR, SK {N(REKEY_SA), N(USE_TRANSPORT_MODE), SA, Ni, [KEi], TSi, TSr} -->
//! IKE rekey:   HDR, SK {SA, Ni, KEi}  -->  <--  HDR, SK {SA, Nr, KEr}
//! refusal:                         <--  HDR, SK {N(error)}
//! ```
//!
//! The exchange's initiator is not necessarily the IKE SA's: "initiator" below (`Ni`,
//! `TSi`, the first half of KEYMAT) is whoever sent this request. A child SA's KEYMAT is
//! `prf+(SK_d, [g^ir (new) |] Ni | Nr)`; a new IKE SA's `SKEYSEED` is
//! `prf(SK_d (old), g^ir (new) | Ni | Nr)` with the old SA's PRF, and its keys come from
//! it as in section 2.14 with the new SPIs and the new PRF.

use crate::config::{ChildSa, Config};
use crate::crypto::dh::{Group, KeyPair};
use crate::crypto::keys::{IkeKeys, ike_keys, skeyseed_rekey};
use crate::crypto::{Prf, Random, Secret};
use crate::error::{Error, Misbehavior};
use crate::exchange::child::{self, derive_child, offered_spi};
use crate::proposal::{IkeAlgorithms, Policy, esp_proposal, ike_proposals};
use crate::wire::{
    Payload,
    ke::KeRepr,
    nonce::NonceRepr,
    notify::{NotifyRepr, NotifyType},
    sa::{ProtocolId, SaRepr},
    ts::TsRepr,
};

/// Why an exchange we initiated did not give us what we asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `INVALID_KE_PAYLOAD`: ask again with a KE of this group.
    RetryWithGroup(Group),
    /// `TEMPORARY_FAILURE`: the peer is busy with a colliding exchange; ask again later.
    Temporary,
    /// `CHILD_SA_NOT_FOUND`: the peer no longer has the child SA we wanted to rekey.
    NotFound,
    /// Anything else.
    Failed(Error),
}

impl Failure {
    /// The error to report once we stop asking.
    pub fn into_error(self) -> Error {
        match self {
            Failure::RetryWithGroup(_) => Error::PeerRefused(NotifyType::InvalidKePayload),
            Failure::Temporary => Error::PeerBusy,
            Failure::NotFound => Error::PeerChildSaNotFound,
            Failure::Failed(e) => e,
        }
    }
}

fn bad(why: &'static str) -> Failure {
    Failure::Failed(Misbehavior::BadAnswer(why).into())
}

fn syntax(why: &'static str) -> Error {
    Misbehavior::InvalidRequest(why).into()
}

/// The keys of an IKE SA made by a rekey (section 2.18).
pub fn rekeyed_ike_keys(
    old: (Prf, &[u8]),
    new: IkeAlgorithms,
    g_ir: &[u8],
    (ni, nr): (&[u8], &[u8]),
    spis: (u64, u64),
) -> IkeKeys {
    let (old_prf, old_sk_d) = old;
    let seed = skeyseed_rekey(old_prf, old_sk_d, g_ir, ni, nr);
    let c = new.cipher;
    ike_keys(new.prf, &seed, (ni, nr), spis, c.integ_key_len(), c.encr_key_len())
}

fn first_sa(payloads: &[Payload]) -> Option<&SaRepr> {
    payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None })
}

fn nonce(payloads: &[Payload]) -> Option<&[u8]> {
    payloads
        .iter()
        .find_map(|p| if let Payload::Nonce(n) = p { Some(n.0.as_slice()) } else { None })
}

fn ke(payloads: &[Payload]) -> Option<&KeRepr> {
    payloads.iter().find_map(|p| if let Payload::Ke(k) = p { Some(k) } else { None })
}

fn random_vec(rng: &mut dyn Random, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// What an error notification in a response means for us.
fn failure_of(
    payloads: &[Payload],
    offered_groups: &[Group],
    sent: Option<Group>,
) -> Option<Failure> {
    let n = payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind.is_error() => Some(n),
        _ => None,
    })?;
    Some(match n.kind {
        NotifyType::InvalidKePayload => {
            let wanted = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(u16::from_be_bytes)
                .and_then(Group::from_id);
            match wanted {
                Some(g) if Some(g) != sent && offered_groups.contains(&g) => {
                    Failure::RetryWithGroup(g)
                }
                _ => Failure::Failed(Misbehavior::UnofferedGroup.into()),
            }
        }
        NotifyType::TemporaryFailure => Failure::Temporary,
        NotifyType::ChildSaNotFound => Failure::NotFound,
        kind => Failure::Failed(Error::PeerRefused(kind)),
    })
}

/// Our request for a child SA (new, or the rekey of one), kept until its answer.
pub struct ChildOffer {
    /// Our inbound SPI for the new child.
    pub spi: [u8; 4],
    /// `Ni`.
    pub ni: Vec<u8>,
    /// Our PFS key pair, if we ask for PFS.
    pub kp: Option<KeyPair>,
    /// The inbound SPI of the child SA this one replaces, for a rekey.
    pub rekey: Option<u32>,
}

impl std::fmt::Debug for ChildOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildOffer")
            .field("spi", &format_args!("{:#010x}", u32::from_be_bytes(self.spi)))
            .field("pfs", &self.kp.as_ref().map(KeyPair::group))
            .field("rekey", &self.rekey)
            .finish_non_exhaustive()
    }
}

impl ChildOffer {
    /// A fresh offer: a new SPI, nonce and (with `pfs`) key pair.
    pub fn new(
        spi: [u8; 4],
        rekey: Option<u32>,
        pfs: Option<Group>,
        nonce_len: usize,
        rng: &mut dyn Random,
    ) -> Self {
        Self {
            spi,
            ni: random_vec(rng, nonce_len),
            kp: pfs.map(|g| KeyPair::generate(g, rng)),
            rekey,
        }
    }

    /// The request's payloads.
    pub fn request(&self, cfg: &Config) -> Vec<Payload> {
        let p = &cfg.policy;
        let mut out = Vec::new();
        if let Some(old) = self.rekey {
            out.push(Payload::Notify(NotifyRepr {
                protocol: Some(ProtocolId::Esp),
                spi: old.to_be_bytes().to_vec(),
                kind: NotifyType::RekeySa,
                data: Vec::new(),
            }));
        }
        out.push(Payload::Notify(NotifyRepr::new(NotifyType::UseTransportMode, Vec::new())));
        // With PFS, our KE's group goes first and the others follow as alternatives.
        let mut groups: Vec<Group> = Vec::new();
        if let Some(kp) = &self.kp {
            groups.push(kp.group());
            groups.extend(p.pfs_groups.iter().copied().filter(|g| *g != kp.group()));
        }
        out.push(Payload::Sa(esp_proposal(&p.esp_gcm_key_bits, &p.esp_esn, &groups, self.spi)));
        out.push(Payload::Nonce(NonceRepr(self.ni.clone())));
        if let Some(kp) = &self.kp {
            out.push(Payload::Ke(KeRepr { group: kp.group().id(), data: kp.public().to_vec() }));
        }
        out.push(Payload::TsI(TsRepr { selectors: vec![cfg.local_ts()] }));
        out.push(Payload::TsR(TsRepr { selectors: vec![cfg.remote_ts()] }));
        out
    }

    /// The child SA from the response, or why there is none.
    pub fn process_response(
        &self,
        cfg: &Config,
        (prf, sk_d): (Prf, &[u8]),
        payloads: &[Payload],
    ) -> Result<(ChildSa, Vec<u8>), Failure> {
        let sent = self.kp.as_ref().map(KeyPair::group);
        if let Some(f) = failure_of(payloads, &cfg.policy.pfs_groups, sent) {
            return Err(f);
        }
        let fail = bad;
        let peer_ke = ke(payloads);
        // The answer's proposal is numbered 1: we offered one proposal (section 3.3.1).
        let ke_group = peer_ke.and_then(|k| Group::from_id(k.group));
        let (algs, peer_spi) =
            child::check_answer(cfg, payloads, self.spi, ke_group, 1).map_err(Failure::Failed)?;
        let nr = nonce(payloads).ok_or_else(|| fail("no nonce in the answer"))?;
        if algs.group != sent {
            return Err(fail("the peer answered PFS with another D-H group than ours"));
        }
        let g_ir = match (&self.kp, peer_ke) {
            (Some(kp), Some(k)) => {
                Some(kp.agree(&k.data).map_err(|e| Failure::Failed(Misbehavior::from(e).into()))?)
            }
            (None, None) => None,
            _ => return Err(fail("the KE payloads of the exchange do not match")),
        };
        let child = derive_child(
            cfg,
            (prf, sk_d, g_ir.as_deref().map(Vec::as_slice)),
            (&self.ni, nr),
            algs,
            (self.spi, peer_spi),
            true,
        );
        Ok((child, nr.to_vec()))
    }
}

/// Our request to rekey the IKE SA, kept until its answer.
pub struct IkeOffer {
    /// Our SPI for the new IKE SA (its initiator's).
    pub spi: u64,
    /// `Ni`.
    pub ni: Vec<u8>,
    /// Our key pair.
    pub kp: KeyPair,
}

impl std::fmt::Debug for IkeOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeOffer")
            .field("spi", &format_args!("{:016x}", self.spi))
            .field("group", &self.kp.group())
            .finish_non_exhaustive()
    }
}

/// What a successful IKE SA rekey gives the initiator.
#[derive(Debug)]
pub struct IkeAnswer {
    /// The new SA's algorithms.
    pub algorithms: IkeAlgorithms,
    /// The responder's SPI for the new SA.
    pub spi_r: u64,
    /// `Nr`.
    pub nr: Vec<u8>,
    /// The new D-H shared secret.
    pub g_ir: Secret,
}

impl IkeOffer {
    /// A fresh offer with a KE of `group`.
    pub fn new(spi: u64, group: Group, nonce_len: usize, rng: &mut dyn Random) -> Self {
        Self { spi, ni: random_vec(rng, nonce_len), kp: KeyPair::generate(group, rng) }
    }

    /// The request's payloads: our IKE proposals (our KE's group first), `Ni`, `KEi`.
    pub fn request(&self, policy: &Policy) -> Vec<Payload> {
        let g = self.kp.group();
        let groups: Vec<Group> =
            std::iter::once(g).chain(policy.groups.iter().copied().filter(|x| *x != g)).collect();
        vec![
            Payload::Sa(ike_proposals(
                &policy.ciphers,
                &policy.prfs,
                &groups,
                &self.spi.to_be_bytes(),
            )),
            Payload::Nonce(NonceRepr(self.ni.clone())),
            Payload::Ke(KeRepr { group: g.id(), data: self.kp.public().to_vec() }),
        ]
    }

    /// The new SA's parameters from the response, or why there are none.
    pub fn process_response(
        &self,
        policy: &Policy,
        payloads: &[Payload],
    ) -> Result<IkeAnswer, Failure> {
        if let Some(f) = failure_of(payloads, &policy.groups, Some(self.kp.group())) {
            return Err(f);
        }
        let fail = bad;
        let sa = first_sa(payloads).ok_or_else(|| fail("no SA payload in the answer"))?;
        let nr = nonce(payloads).ok_or_else(|| fail("no nonce in the answer"))?;
        let peer_ke = ke(payloads).ok_or_else(|| fail("no KE payload in the answer"))?;
        let answer = sa.proposals.first().ok_or_else(|| fail("empty SA payload"))?;
        let (algorithms, _) =
            policy.choose_ike(sa, &[]).map_err(|_| fail("the answer is not one we offered"))?;
        if sa.proposals.len() != 1
            || answer.spi.len() != 8
            || algorithms.group != self.kp.group()
            || peer_ke.group != algorithms.group.id()
        {
            return Err(fail("malformed IKE SA rekey answer"));
        }
        let spi_r = <[u8; 8]>::try_from(answer.spi.as_slice()).map_or(0, u64::from_be_bytes);
        if spi_r == 0 {
            return Err(fail("the peer's new IKE SPI is zero"));
        }
        let g_ir = self
            .kp
            .agree(&peer_ke.data)
            .map_err(|e| Failure::Failed(Misbehavior::from(e).into()))?;
        Ok(IkeAnswer { algorithms, spi_r, nr: nr.to_vec(), g_ir })
    }
}

/// A peer's `CREATE_CHILD_SA` request, sorted out.
#[derive(Debug)]
pub enum Request<'a> {
    /// A new child SA, or (with `rekey`) the replacement of one.
    Child {
        /// For a rekey: the SPI the peer receives the old child on (our outbound SPI).
        rekey: Option<u32>,
        /// The proposals.
        sa: &'a SaRepr,
        /// `Ni`.
        ni: &'a [u8],
        /// `KEi`, for PFS.
        ke: Option<&'a KeRepr>,
        /// The request's payloads, for the selectors and the mode.
        payloads: &'a [Payload],
    },
    /// The rekey of the IKE SA.
    Ike {
        /// The proposals (with the peer's new SPI).
        sa: &'a SaRepr,
        /// `Ni`.
        ni: &'a [u8],
        /// `KEi`.
        ke: &'a KeRepr,
    },
}

/// Sorts out a request; a request that is not well formed is refused with
/// `INVALID_SYNTAX` (section 2.21.2), one for something we do not do with
/// `NO_PROPOSAL_CHOSEN`.
pub fn parse_request(payloads: &[Payload]) -> Result<Request<'_>, Error> {
    let sa = first_sa(payloads).ok_or_else(|| syntax("no SA payload"))?;
    let ni = nonce(payloads).ok_or_else(|| syntax("no nonce"))?;
    let protocol =
        sa.proposals.first().map(|p| p.protocol).ok_or_else(|| syntax("an empty SA payload"))?;
    if sa.proposals.iter().any(|p| p.protocol != protocol) {
        return Err(syntax("proposals of different protocols"));
    }
    match protocol {
        ProtocolId::Ike => {
            Ok(Request::Ike { sa, ni, ke: ke(payloads).ok_or_else(|| syntax("no KE payload"))? })
        }
        ProtocolId::Esp => {
            let rekey = payloads
                .iter()
                .find_map(|p| match p {
                    Payload::Notify(n) if n.kind == NotifyType::RekeySa => Some(n),
                    _ => None,
                })
                .map(|n| {
                    <[u8; 4]>::try_from(n.spi.as_slice())
                        .ok()
                        .filter(|_| n.protocol == Some(ProtocolId::Esp))
                        .map(u32::from_be_bytes)
                        .ok_or_else(|| syntax("a REKEY_SA without an ESP SPI"))
                })
                .transpose()?;
            Ok(Request::Child { rekey, sa, ni, ke: ke(payloads), payloads })
        }
        _ => Err(Error::NoProposalChosen),
    }
}

/// Our answer to a child request.
pub struct ChildAnswer {
    /// The response's payloads.
    pub response: Vec<Payload>,
    /// The child SA.
    pub child: ChildSa,
    /// `Nr`.
    pub nr: Vec<u8>,
}

/// Answers a child request (new or rekey) as responder: `spi` is our inbound SPI for it.
pub fn answer_child(
    cfg: &Config,
    (prf, sk_d): (Prf, &[u8]),
    (sa, ni, peer_ke, payloads): (&SaRepr, &[u8], Option<&KeRepr>, &[Payload]),
    spi: [u8; 4],
    (nonce_len, rng): (usize, &mut dyn Random),
) -> Result<ChildAnswer, Error> {
    let (algs, chosen) = child::choose(cfg, payloads, Some(sa), peer_ke, spi)?;
    let (local, remote) = (cfg.local_ts(), cfg.remote_ts());
    let peer_spi = offered_spi(sa, &chosen).to_vec();
    let nr = random_vec(rng, nonce_len);
    let mut response = vec![
        Payload::Notify(NotifyRepr::new(NotifyType::UseTransportMode, Vec::new())),
        Payload::Sa(chosen),
        Payload::Nonce(NonceRepr(nr.clone())),
    ];
    let g_ir = match (algs.group, peer_ke) {
        (Some(g), Some(k)) => {
            let kp = KeyPair::generate(g, rng);
            let shared = kp.agree(&k.data).map_err(Misbehavior::from)?;
            response.push(Payload::Ke(KeRepr { group: g.id(), data: kp.public().to_vec() }));
            Some(shared)
        }
        _ => None,
    };
    response.push(Payload::TsI(TsRepr { selectors: vec![remote] }));
    response.push(Payload::TsR(TsRepr { selectors: vec![local] }));
    let child = derive_child(
        cfg,
        (prf, sk_d, g_ir.as_deref().map(Vec::as_slice)),
        (ni, &nr),
        algs,
        (spi, &peer_spi),
        false,
    );
    Ok(ChildAnswer { response, child, nr })
}

/// Our answer to an IKE SA rekey request.
pub struct IkeRekeyAnswer {
    /// The response's payloads.
    pub response: Vec<Payload>,
    /// The new SA's algorithms.
    pub algorithms: IkeAlgorithms,
    /// The peer's (the new SA's initiator's) SPI.
    pub spi_i: u64,
    /// `Nr`.
    pub nr: Vec<u8>,
    /// The new D-H shared secret.
    pub g_ir: Secret,
}

/// Answers an IKE SA rekey request as responder: `spi` is our SPI for the new SA.
pub fn answer_ike(
    policy: &Policy,
    (sa, peer_ke): (&SaRepr, &KeRepr),
    spi: u64,
    (nonce_len, rng): (usize, &mut dyn Random),
) -> Result<IkeRekeyAnswer, Error> {
    let (algorithms, chosen) =
        policy.choose_ike(sa, &spi.to_be_bytes()).map_err(|_| Error::NoProposalChosen)?;
    if peer_ke.group != algorithms.group.id() {
        return Err(Error::InvalidKe(algorithms.group));
    }
    let spi_i = <[u8; 8]>::try_from(offered_spi(sa, &chosen)).map_or(0, u64::from_be_bytes);
    if spi_i == 0 {
        return Err(syntax("a zero SPI for the new IKE SA"));
    }
    let kp = KeyPair::generate(algorithms.group, rng);
    let g_ir = kp.agree(&peer_ke.data).map_err(Misbehavior::from)?;
    let nr = random_vec(rng, nonce_len);
    let response = vec![
        Payload::Sa(chosen),
        Payload::Nonce(NonceRepr(nr.clone())),
        Payload::Ke(KeRepr { group: algorithms.group.id(), data: kp.public().to_vec() }),
    ];
    Ok(IkeRekeyAnswer { response, algorithms, spi_i, nr, g_ir })
}
