//! SA negotiation (RFC 7296 sections 2.7 and 3.3.6): what we offer, and how a responder
//! picks exactly one proposal with exactly one transform of each type.
//!
//! The responder goes through the initiator's proposals in the initiator's order of
//! preference and takes the first it fully accepts: for each transform type the
//! proposal's protocol needs, the first transform of that type that we also allow. A
//! transform with an attribute we do not understand is not acceptable (section 3.3.6);
//! nor is a proposal that names a transform type its protocol does not use.

use crate::crypto::{Prf, dh::Group, sk::SkCipher};
use crate::wire::sa::{
    ATTR_KEY_LENGTH, Attribute, Proposal, ProtocolId, SaRepr, Transform, TransformType,
};

/// What an IKE SA uses once negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeAlgorithms {
    /// SK payload protection.
    pub cipher: SkCipher,
    /// PRF.
    pub prf: Prf,
    /// D-H group.
    pub group: Group,
}

/// What an ESP child SA uses once negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspAlgorithms {
    /// AES-GCM-16 key length in bits (128 or 256).
    pub gcm_key_bits: u16,
    /// Extended sequence numbers.
    pub esn: bool,
    /// D-H group for PFS (`None` without PFS).
    pub group: Option<Group>,
}

/// Transform ID of `ENCR_AES_GCM_16`.
const ENCR_AES_GCM_16: u16 = 20;
/// Transform ID of `ENCR_AES_CBC`.
const ENCR_AES_CBC: u16 = 12;
/// Transform ID of `AUTH_HMAC_SHA2_256_128`.
const AUTH_HMAC_SHA2_256_128: u16 = 12;

fn encr_transforms(cipher: SkCipher) -> (Transform, Option<Transform>) {
    match cipher {
        SkCipher::AesGcm16 { key_bits } => {
            (Transform::with_key_length(TransformType::Encr, ENCR_AES_GCM_16, key_bits), None)
        }
        SkCipher::AesCbcHmacSha256 { key_bits } => (
            Transform::with_key_length(TransformType::Encr, ENCR_AES_CBC, key_bits),
            Some(Transform::new(TransformType::Integ, AUTH_HMAC_SHA2_256_128)),
        ),
    }
}

/// Our IKE proposal list: one proposal per cipher family (AEAD and non-AEAD must not
/// share a proposal, section 3.3), each with all allowed PRFs and groups, in order.
pub fn ike_proposals(ciphers: &[SkCipher], prfs: &[Prf], groups: &[Group], spi: &[u8]) -> SaRepr {
    let mut proposals: Vec<Proposal> = Vec::new();
    for aead in [true, false] {
        let mine: Vec<SkCipher> = ciphers
            .iter()
            .copied()
            .filter(|c| matches!(c, SkCipher::AesGcm16 { .. }) == aead)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut transforms = Vec::new();
        let mut integ = None;
        for c in &mine {
            let (e, i) = encr_transforms(*c);
            transforms.push(e);
            integ = integ.or(i);
        }
        transforms.extend(prfs.iter().map(|p| Transform::new(TransformType::Prf, p.id())));
        transforms.extend(integ);
        transforms.extend(groups.iter().map(|g| Transform::new(TransformType::Dh, g.id())));
        proposals.push(Proposal {
            num: proposals.len() as u8 + 1,
            protocol: ProtocolId::Ike,
            spi: spi.to_vec(),
            transforms,
        });
    }
    SaRepr { proposals }
}

/// Our ESP proposal: AES-GCM-16 at the given key lengths, ESN on and/or off, and the PFS
/// groups (empty: no PFS).
pub fn esp_proposal(gcm_key_bits: &[u16], esn: &[bool], pfs: &[Group], spi: [u8; 4]) -> SaRepr {
    let mut transforms: Vec<Transform> = gcm_key_bits
        .iter()
        .map(|&bits| Transform::with_key_length(TransformType::Encr, ENCR_AES_GCM_16, bits))
        .collect();
    transforms.extend(pfs.iter().map(|g| Transform::new(TransformType::Dh, g.id())));
    transforms.extend(esn.iter().map(|&e| Transform::new(TransformType::Esn, u16::from(e))));
    SaRepr {
        proposals: vec![Proposal {
            num: 1,
            protocol: ProtocolId::Esp,
            spi: spi.to_vec(),
            transforms,
        }],
    }
}

/// What the responder accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// SK ciphers, for IKE.
    pub ciphers: Vec<SkCipher>,
    /// PRFs, for IKE.
    pub prfs: Vec<Prf>,
    /// D-H groups, for IKE (and for PFS in ESP, when the initiator asks for it).
    pub groups: Vec<Group>,
    /// AES-GCM-16 key lengths, for ESP.
    pub esp_gcm_key_bits: Vec<u16>,
    /// ESN settings accepted for ESP.
    pub esp_esn: Vec<bool>,
    /// D-H groups offered for perfect forward secrecy when we create or rekey a child SA
    /// with `CREATE_CHILD_SA`, the first with our KE (empty: no PFS). As responder, a
    /// PFS group is accepted when it is also in `groups`.
    pub pfs_groups: Vec<Group>,
}

impl Default for Policy {
    /// ikemesh's defaults: AES-GCM-16 256 then 128, HMAC-SHA2-256/384/512, Curve25519
    /// then ECP-256 then MODP-2048; ESP with AES-GCM-16 256 or 128, ESN preferred, and
    /// PFS with Curve25519 (or ECP-256) on child SAs made or rekeyed after `IKE_AUTH`.
    fn default() -> Self {
        Self {
            ciphers: vec![
                SkCipher::AesGcm16 { key_bits: 256 },
                SkCipher::AesGcm16 { key_bits: 128 },
            ],
            prfs: vec![Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512],
            groups: vec![Group::Curve25519, Group::Ecp256, Group::Modp2048],
            esp_gcm_key_bits: vec![256, 128],
            esp_esn: vec![true, false],
            pfs_groups: vec![Group::Curve25519, Group::Ecp256],
        }
    }
}

/// Why nothing was chosen (answered with `NO_PROPOSAL_CHOSEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no proposal acceptable")]
pub struct NoProposalChosen;

/// Only the attributes RFC 7296 defines (the key length) are understood.
fn attributes_understood(t: &Transform) -> bool {
    t.attributes.iter().all(|a| matches!(a, Attribute::Tv { kind: ATTR_KEY_LENGTH, .. }))
}

fn first<T>(
    p: &Proposal,
    kind: TransformType,
    accept: impl Fn(&Transform) -> Option<T>,
) -> Option<(T, Transform)> {
    p.transforms
        .iter()
        .filter(|t| t.kind == kind && attributes_understood(t))
        .find_map(|t| accept(t).map(|v| (v, t.clone())))
}

fn has(p: &Proposal, kind: TransformType) -> bool {
    p.transforms.iter().any(|t| t.kind == kind)
}

/// The chosen proposal, as the responder sends it back: the initiator's number, our SPI,
/// one transform of each type.
fn answer(p: &Proposal, spi: &[u8], transforms: Vec<Transform>) -> Proposal {
    Proposal { num: p.num, protocol: p.protocol, spi: spi.to_vec(), transforms }
}

impl Policy {
    /// Chooses from an initiator's IKE SA payload; `spi` is our IKE SPI for the answer
    /// (empty in `IKE_SA_INIT`, 8 bytes in an IKE SA rekey).
    pub fn choose_ike(
        &self,
        offered: &SaRepr,
        spi: &[u8],
    ) -> Result<(IkeAlgorithms, SaRepr), NoProposalChosen> {
        for p in offered.proposals.iter().filter(|p| p.protocol == ProtocolId::Ike) {
            if has(p, TransformType::Esn) {
                continue;
            }
            let Some((encr_id, encr_bits, encr)) = first(p, TransformType::Encr, |t| {
                let bits = t.key_length()?;
                self.ciphers.iter().find_map(|c| match (c, t.id) {
                    (SkCipher::AesGcm16 { key_bits }, ENCR_AES_GCM_16) if *key_bits == bits => {
                        Some((t.id, bits))
                    }
                    (SkCipher::AesCbcHmacSha256 { key_bits }, ENCR_AES_CBC)
                        if *key_bits == bits =>
                    {
                        Some((t.id, bits))
                    }
                    _ => None,
                })
            })
            .map(|((id, bits), t)| (id, bits, t)) else {
                continue;
            };
            let Some((prf, prf_t)) = first(p, TransformType::Prf, |t| {
                Prf::from_id(t.id).filter(|p| self.prfs.contains(p))
            }) else {
                continue;
            };
            let Some((group, group_t)) = first(p, TransformType::Dh, |t| {
                Group::from_id(t.id).filter(|g| self.groups.contains(g))
            }) else {
                continue;
            };
            let mut transforms = vec![encr, prf_t];
            let cipher = if encr_id == ENCR_AES_GCM_16 {
                // An AEAD proposal carries no integrity transform (or only "NONE", 0).
                if p.transforms.iter().any(|t| t.kind == TransformType::Integ && t.id != 0) {
                    continue;
                }
                SkCipher::AesGcm16 { key_bits: encr_bits }
            } else {
                let Some(((), integ)) = first(p, TransformType::Integ, |t| {
                    (t.id == AUTH_HMAC_SHA2_256_128).then_some(())
                }) else {
                    continue;
                };
                transforms.push(integ);
                SkCipher::AesCbcHmacSha256 { key_bits: encr_bits }
            };
            transforms.push(group_t);
            return Ok((
                IkeAlgorithms { cipher, prf, group },
                SaRepr { proposals: vec![answer(p, spi, transforms)] },
            ));
        }
        Err(NoProposalChosen)
    }

    /// Chooses from an initiator's ESP SA payload; `spi` is our inbound ESP SPI. `pfs`
    /// is the group of the KE payload that came with it, if any: a proposal with D-H
    /// transforms is only acceptable with a KE of one of them, and one without only
    /// without a KE.
    pub fn choose_esp(
        &self,
        offered: &SaRepr,
        spi: [u8; 4],
        pfs: Option<Group>,
    ) -> Result<(EspAlgorithms, SaRepr), NoProposalChosen> {
        for p in
            offered.proposals.iter().filter(|p| p.protocol == ProtocolId::Esp && p.spi.len() == 4)
        {
            if has(p, TransformType::Prf)
                || p.transforms.iter().any(|t| t.kind == TransformType::Integ && t.id != 0)
            {
                continue;
            }
            let Some((bits, encr)) = first(p, TransformType::Encr, |t| {
                (t.id == ENCR_AES_GCM_16)
                    .then(|| t.key_length())
                    .flatten()
                    .filter(|b| self.esp_gcm_key_bits.contains(b))
            }) else {
                continue;
            };
            // No ESN transform means "no ESN" (section 3.3.2).
            let esn = if has(p, TransformType::Esn) {
                match first(p, TransformType::Esn, |t| match t.id {
                    0 | 1 if self.esp_esn.contains(&(t.id == 1)) => Some(t.id == 1),
                    _ => None,
                }) {
                    Some(found) => Some(found),
                    None => continue,
                }
            } else if self.esp_esn.contains(&false) {
                None
            } else {
                continue;
            };
            let mut transforms = vec![encr];
            let group = match (has(p, TransformType::Dh), pfs) {
                (false, None) => None,
                (true, Some(g)) => match first(p, TransformType::Dh, |t| {
                    (t.id == g.id() && self.groups.contains(&g)).then_some(g)
                }) {
                    Some((g, t)) => {
                        transforms.push(t);
                        Some(g)
                    }
                    None => continue,
                },
                _ => continue,
            };
            let esn_on = esn.as_ref().is_some_and(|(on, _)| *on);
            if let Some((_, t)) = esn {
                transforms.push(t);
            }
            return Ok((
                EspAlgorithms { gcm_key_bits: bits, esn: esn_on, group },
                SaRepr { proposals: vec![answer(p, &spi, transforms)] },
            ));
        }
        Err(NoProposalChosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responder_with_our_defaults_accepts_our_default_offer() {
        let policy = Policy::default();
        let offer = ike_proposals(&policy.ciphers, &policy.prfs, &policy.groups, &[]);
        assert_eq!(offer.proposals.len(), 1, "AEAD only by default");
        let (algs, answer) = policy.choose_ike(&offer, &[]).unwrap();
        assert_eq!(
            algs,
            IkeAlgorithms {
                cipher: SkCipher::AesGcm16 { key_bits: 256 },
                prf: Prf::HmacSha256,
                group: Group::Curve25519
            }
        );
        let p = &answer.proposals[0];
        assert_eq!((p.num, p.transforms.len()), (1, 3), "one transform per type");
    }

    #[test]
    fn the_initiators_order_wins_among_acceptable_choices() {
        let policy = Policy::default();
        let offer = ike_proposals(
            &[SkCipher::AesGcm16 { key_bits: 128 }],
            &[Prf::HmacSha512],
            &[Group::Modp2048, Group::Curve25519],
            &[],
        );
        let (algs, _) = policy.choose_ike(&offer, &[]).unwrap();
        assert_eq!(
            (algs.cipher, algs.prf, algs.group),
            (SkCipher::AesGcm16 { key_bits: 128 }, Prf::HmacSha512, Group::Modp2048)
        );
    }

    #[test]
    fn cbc_with_hmac_is_negotiated_when_allowed() {
        let cbc = SkCipher::AesCbcHmacSha256 { key_bits: 256 };
        let offer = ike_proposals(&[cbc], &[Prf::HmacSha256], &[Group::Ecp256], &[]);
        assert_eq!(
            Policy::default().choose_ike(&offer, &[]),
            Err(NoProposalChosen),
            "not allowed by default"
        );
        let policy = Policy { ciphers: vec![cbc], ..Policy::default() };
        let (algs, answer) = policy.choose_ike(&offer, &[]).unwrap();
        assert_eq!(algs.cipher, cbc);
        assert!(answer.proposals[0].transforms.iter().any(|t| t.kind == TransformType::Integ));
    }

    #[test]
    fn unknown_attributes_and_missing_types_are_not_acceptable() {
        let policy = Policy::default();
        let mut offer = ike_proposals(&policy.ciphers, &policy.prfs, &policy.groups, &[]);
        for t in &mut offer.proposals[0].transforms {
            if t.kind == TransformType::Encr {
                t.attributes.push(Attribute::Tv { kind: 99, value: 1 });
            }
        }
        assert_eq!(policy.choose_ike(&offer, &[]), Err(NoProposalChosen));
        let mut offer = ike_proposals(&policy.ciphers, &policy.prfs, &policy.groups, &[]);
        offer.proposals[0].transforms.retain(|t| t.kind != TransformType::Dh);
        assert_eq!(policy.choose_ike(&offer, &[]), Err(NoProposalChosen));
    }

    #[test]
    fn esp_with_and_without_pfs_and_esn() {
        let policy = Policy::default();
        let offer = esp_proposal(&[128], &[true, false], &[], [1, 2, 3, 4]);
        let (algs, answer) = policy.choose_esp(&offer, [9, 9, 9, 9], None).unwrap();
        assert_eq!(algs, EspAlgorithms { gcm_key_bits: 128, esn: true, group: None });
        assert_eq!(answer.proposals[0].spi, vec![9, 9, 9, 9]);
        let offer = esp_proposal(&[256], &[false], &[Group::Curve25519], [1, 2, 3, 4]);
        assert_eq!(
            policy.choose_esp(&offer, [9; 4], None),
            Err(NoProposalChosen),
            "D-H without KE"
        );
        let (algs, _) = policy.choose_esp(&offer, [9; 4], Some(Group::Curve25519)).unwrap();
        assert_eq!(
            algs,
            EspAlgorithms { gcm_key_bits: 256, esn: false, group: Some(Group::Curve25519) }
        );
        let offer = esp_proposal(&[256], &[true], &[], [1, 2, 3, 4]);
        let no_esn = Policy { esp_esn: vec![false], ..Policy::default() };
        assert_eq!(no_esn.choose_esp(&offer, [9; 4], None), Err(NoProposalChosen));
    }
}
