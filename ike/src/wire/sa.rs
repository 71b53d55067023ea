//! The Security Association payload (RFC 7296 section 3.3): proposals, each with a
//! protocol, an SPI and transforms, each transform with attributes.
//!
//! ```text
//! Proposal:  | Last(0/2) | RESERVED | Proposal Length | Num | Protocol ID | SPI Size | #Transforms | SPI… | Transforms…
//! Transform: | Last(0/3) | RESERVED | Transform Length | Type | RESERVED | Transform ID | Attributes…
//! Attribute: |A|  Type (15 bits) | Length or Value (TV when A=1) | Value (TLV only)…
//! ```

use super::{Error, Reader, Result, Writer, len16, payload::read_all};

code_points! {
    /// Security protocol of a proposal, Notify or Delete (section 3.3.1).
    ProtocolId: u8 {
        /// IKE itself.
        Ike = 1,
        /// AH.
        Ah = 2,
        /// ESP.
        Esp = 3,
    }
}

code_points! {
    /// Transform types (section 3.3.2).
    TransformType: u8 {
        /// Encryption algorithm (ENCR).
        Encr = 1,
        /// Pseudorandom function (PRF).
        Prf = 2,
        /// Integrity algorithm (INTEG).
        Integ = 3,
        /// Key exchange method (D-H group).
        Dh = 4,
        /// Extended sequence numbers.
        Esn = 5,
    }
}

/// Attribute type of the key length (section 3.3.5), the only one RFC 7296 defines.
pub const ATTR_KEY_LENGTH: u16 = 14;

const LAST: u8 = 0;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;
const TV: u16 = 0x8000;

/// One transform attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// Type/Value format (the AF bit set): a 16-bit value.
    Tv {
        /// Attribute type.
        kind: u16,
        /// Value.
        value: u16,
    },
    /// Type/Length/Value format.
    Tlv {
        /// Attribute type.
        kind: u16,
        /// Value.
        value: Vec<u8>,
    },
}

impl Attribute {
    fn buffer_len(&self) -> usize {
        match self {
            Attribute::Tv { .. } => 4,
            Attribute::Tlv { value, .. } => 4 + value.len(),
        }
    }
}

/// One transform: a type, an ID within that type, and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// ENCR, PRF, INTEG, DH or ESN.
    pub kind: TransformType,
    /// The algorithm's number within its type (IANA "Transform Type N" registries).
    pub id: u16,
    /// Attributes (in practice: the key length of variable-length ciphers).
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(kind: TransformType, id: u16) -> Self {
        Self { kind, id, attributes: Vec::new() }
    }

    /// A transform with a key length attribute (in bits), as AES needs.
    pub fn with_key_length(kind: TransformType, id: u16, bits: u16) -> Self {
        Self { kind, id, attributes: vec![Attribute::Tv { kind: ATTR_KEY_LENGTH, value: bits }] }
    }

    /// The key length attribute, if any.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { kind: ATTR_KEY_LENGTH, value } => Some(*value),
            _ => None,
        })
    }

    fn buffer_len(&self) -> usize {
        8 + self.attributes.iter().map(Attribute::buffer_len).sum::<usize>()
    }
}

/// One proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number (1 for the first; a response repeats the chosen one's).
    pub num: u8,
    /// IKE, AH or ESP.
    pub protocol: ProtocolId,
    /// The sender's SPI for this SA (empty in an initial IKE proposal, 8 bytes in an
    /// IKE rekey, 4 bytes for ESP).
    pub spi: Vec<u8>,
    /// Transforms, of several types.
    pub transforms: Vec<Transform>,
}

impl Proposal {
    fn buffer_len(&self) -> usize {
        8 + self.spi.len() + self.transforms.iter().map(Transform::buffer_len).sum::<usize>()
    }
}

/// The body of an SA payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaRepr {
    /// Proposals, in order of preference.
    pub proposals: Vec<Proposal>,
}

fn parse_attributes(r: &mut Reader<'_>) -> Result<Vec<Attribute>> {
    let mut attributes = Vec::new();
    while r.remaining() > 0 {
        let word = r.u16()?;
        let kind = word & !TV;
        if word & TV != 0 {
            attributes.push(Attribute::Tv { kind, value: r.u16()? });
        } else {
            let len = usize::from(r.u16()?);
            attributes.push(Attribute::Tlv { kind, value: r.bytes(len)?.to_vec() });
        }
    }
    Ok(attributes)
}

fn parse_transform(r: &mut Reader<'_>, last: &mut bool) -> Result<Transform> {
    let more = r.u8()?;
    *last = match more {
        LAST => true,
        MORE_TRANSFORMS => false,
        _ => return Err(Error::malformed("transform", "Last Substruc is neither 0 nor 3")),
    };
    r.u8()?;
    let length = usize::from(r.u16()?);
    if length < 8 {
        return Err(Error::BadLength { what: "transform", length, minimum: 8 });
    }
    let kind = TransformType::from(r.u8()?);
    r.u8()?;
    let id = r.u16()?;
    let attributes = read_all(r.bytes(length - 8)?, "transform attributes", parse_attributes)?;
    Ok(Transform { kind, id, attributes })
}

fn parse_proposal(r: &mut Reader<'_>, last: &mut bool) -> Result<Proposal> {
    let more = r.u8()?;
    *last = match more {
        LAST => true,
        MORE_PROPOSALS => false,
        _ => return Err(Error::malformed("proposal", "Last Substruc is neither 0 nor 2")),
    };
    r.u8()?;
    let length = usize::from(r.u16()?);
    if length < 8 {
        return Err(Error::BadLength { what: "proposal", length, minimum: 8 });
    }
    let body = r.bytes(length - 4)?;
    read_all(body, "proposal", |p| {
        let num = p.u8()?;
        let protocol = ProtocolId::from(p.u8()?);
        let spi_size = usize::from(p.u8()?);
        let count = p.u8()?;
        let spi = p.bytes(spi_size)?.to_vec();
        let mut transforms = Vec::with_capacity(usize::from(count));
        let mut last_transform = count == 0;
        while !last_transform {
            transforms.push(parse_transform(p, &mut last_transform)?);
        }
        if transforms.len() != usize::from(count) {
            return Err(Error::malformed("proposal", "# of Transforms does not match"));
        }
        Ok(Proposal { num, protocol, spi, transforms })
    })
}

impl SaRepr {
    /// Parses an SA payload body: at least one proposal, the last marked as last.
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "SA payload", |r| {
            let mut proposals = Vec::new();
            let mut last = false;
            while !last {
                proposals.push(parse_proposal(r, &mut last)?);
            }
            Ok(SaRepr { proposals })
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        self.proposals.iter().map(Proposal::buffer_len).sum()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        for (i, p) in self.proposals.iter().enumerate() {
            w.u8(if i + 1 == self.proposals.len() { LAST } else { MORE_PROPOSALS });
            w.u8(0);
            w.u16(len16(p.buffer_len()));
            w.u8(p.num);
            w.u8(p.protocol.into());
            w.u8(p.spi.len() as u8);
            w.u8(p.transforms.len() as u8);
            w.bytes(&p.spi);
            for (j, t) in p.transforms.iter().enumerate() {
                w.u8(if j + 1 == p.transforms.len() { LAST } else { MORE_TRANSFORMS });
                w.u8(0);
                w.u16(len16(t.buffer_len()));
                w.u8(t.kind.into());
                w.u8(0);
                w.u16(t.id);
                for a in &t.attributes {
                    match a {
                        Attribute::Tv { kind, value } => {
                            w.u16(TV | kind);
                            w.u16(*value);
                        }
                        Attribute::Tlv { kind, value } => {
                            w.u16(kind & !TV);
                            w.u16(len16(value.len()));
                            w.bytes(value);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    /// One IKE proposal: `ENCR_AES_GCM_16` (20) with a 256-bit key, `PRF_HMAC_SHA2_256` (5),
    /// D-H group 31; then one ESP proposal with SPI 0x01020304, AES-GCM-16 128-bit, ESN 0.
    const BYTES: &[u8] = &[
        2, 0, 0, 36, 1, 1, 0,
        3, // proposal 1: more follow, length 36, IKE, no SPI, 3 transforms
        3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 1, 0, // ENCR 20, key length 256
        3, 0, 0, 8, 2, 0, 0, 5, // PRF 5
        0, 0, 0, 8, 4, 0, 0, 31, // DH 31, last
        0, 0, 0, 32, 2, 3, 4, 2, 1, 2, 3,
        4, // proposal 2: last, length 32, ESP, SPI, 2 transforms
        3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 0, 128, // ENCR 20, key length 128
        0, 0, 0, 8, 5, 0, 0, 0, // ESN 0, last
    ];

    fn repr() -> SaRepr {
        SaRepr {
            proposals: vec![
                Proposal {
                    num: 1,
                    protocol: ProtocolId::Ike,
                    spi: vec![],
                    transforms: vec![
                        Transform::with_key_length(TransformType::Encr, 20, 256),
                        Transform::new(TransformType::Prf, 5),
                        Transform::new(TransformType::Dh, 31),
                    ],
                },
                Proposal {
                    num: 2,
                    protocol: ProtocolId::Esp,
                    spi: vec![1, 2, 3, 4],
                    transforms: vec![
                        Transform::with_key_length(TransformType::Encr, 20, 128),
                        Transform::new(TransformType::Esn, 0),
                    ],
                },
            ],
        }
    }

    #[test]
    fn decodes_builds_back_and_refuses_truncations() {
        check_body(BYTES, &repr(), SaRepr::parse, SaRepr::emit, SaRepr::buffer_len, true);
        assert_eq!(repr().proposals[0].transforms[0].key_length(), Some(256));
    }

    #[test]
    fn refuses_wrong_substructure_markers_and_counts() {
        let mut b = BYTES.to_vec();
        b[0] = 1; // Last Substruc must be 0 or 2
        assert!(matches!(SaRepr::parse(&b), Err(Error::Malformed { .. })));
        let mut b = BYTES.to_vec();
        b[7] = 4; // 4 transforms announced, 3 present
        assert!(SaRepr::parse(&b).is_err());
        let mut b = BYTES.to_vec();
        b[3] = 40; // proposal length past its transforms
        assert!(SaRepr::parse(&b).is_err());
        assert!(SaRepr::parse(&[]).is_err(), "an SA payload needs a proposal");
    }

    #[test]
    fn keeps_tlv_attributes() {
        let r = SaRepr {
            proposals: vec![Proposal {
                num: 1,
                protocol: ProtocolId::Esp,
                spi: vec![9, 9, 9, 9],
                transforms: vec![Transform {
                    kind: TransformType::Encr,
                    id: 12,
                    attributes: vec![Attribute::Tlv { kind: 99, value: vec![1, 2, 3] }],
                }],
            }],
        };
        let mut buf = vec![0; r.buffer_len()];
        r.emit(&mut Writer::new(&mut buf));
        assert_eq!(SaRepr::parse(&buf).unwrap(), r);
    }
}
