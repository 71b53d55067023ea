//! Identities: what an IKE ID names, what a certificate certifies, and who the caller
//! expects.
//!
//! An FQDN ID matches a dNSName SAN (ASCII case-insensitive, a trailing dot ignored, no
//! wildcards), an IPv4 or IPv6 ID an iPAddress SAN, and a DER DN ID the certificate's
//! subject, compared in a canonical form (RFC 4518-like: attribute values trimmed,
//! inner white space collapsed, case folded; multi-valued RDNs sorted), so that a
//! `PrintableString` and a `UTF8String` of the same text are the same name.

use super::CertError;
use ike::wire::id::{IdRepr, IdType};
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_DOMAIN_COMPONENT, OID_PKCS9_EMAIL_ADDRESS, OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME,
    OID_X509_LOCALITY_NAME, OID_X509_ORGANIZATION_NAME, OID_X509_ORGANIZATIONAL_UNIT,
    OID_X509_SERIALNUMBER, OID_X509_STATE_OR_PROVINCE_NAME,
};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// A peer identity as the mesh knows it: the normalized form of an IKE ID, of a SAN, or
/// of a subject DN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerId {
    /// A DNS name, lower case, without a trailing dot.
    Fqdn(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A distinguished name in canonical text form (see the module documentation), e.g.
    /// `cn=node-1,o=mesh`.
    Dn(String),
}

impl PeerId {
    /// An FQDN identity, normalized (lower case, no trailing dot).
    pub fn fqdn(name: &str) -> Self {
        let name = name.strip_suffix('.').unwrap_or(name);
        PeerId::Fqdn(name.to_ascii_lowercase())
    }

    /// A DN identity from a DER `Name` (as in an IKE `ID_DER_ASN1_DN` or a certificate).
    pub fn dn_from_der(der: &[u8]) -> Result<Self, CertError> {
        let bad = |detail: &str| CertError::BadIdentity { detail: format!("DN {detail}") };
        match X509Name::from_der(der) {
            Ok(([], name)) => Ok(PeerId::Dn(canonical_dn(&name))),
            Ok(_) => Err(bad("with trailing bytes")),
            Err(_) => Err(bad("is not a DER Name")),
        }
    }

    /// The identity an IKE ID payload names.
    pub fn from_ike(id: &IdRepr) -> Result<Self, CertError> {
        match id.id_type {
            IdType::Fqdn => {
                let name = std::str::from_utf8(&id.data)
                    .ok()
                    .filter(|n| !n.is_empty() && n.is_ascii())
                    .ok_or_else(|| CertError::BadIdentity {
                        detail: "FQDN that is not ASCII text".into(),
                    })?;
                Ok(PeerId::fqdn(name))
            }
            IdType::Ipv4Addr => <[u8; 4]>::try_from(id.data.as_slice())
                .map(|a| PeerId::Ip(Ipv4Addr::from(a).into()))
                .map_err(|_| CertError::BadIdentity { detail: "IPv4 ID not 4 bytes".into() }),
            IdType::Ipv6Addr => <[u8; 16]>::try_from(id.data.as_slice())
                .map(|a| PeerId::Ip(Ipv6Addr::from(a).into()))
                .map_err(|_| CertError::BadIdentity { detail: "IPv6 ID not 16 bytes".into() }),
            IdType::DerAsn1Dn => PeerId::dn_from_der(&id.data),
            other => Err(CertError::BadIdentity { detail: format!("ID type {other:?}") }),
        }
    }

    /// The IKE ID payload body naming this identity (`None` for a DN: its canonical text
    /// is not the DER the peer's certificate holds; use the certificate's subject).
    pub fn to_ike(&self) -> Option<IdRepr> {
        match self {
            PeerId::Fqdn(name) => {
                Some(IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() })
            }
            PeerId::Ip(IpAddr::V4(a)) => {
                Some(IdRepr { id_type: IdType::Ipv4Addr, data: a.octets().to_vec() })
            }
            PeerId::Ip(IpAddr::V6(a)) => {
                Some(IdRepr { id_type: IdType::Ipv6Addr, data: a.octets().to_vec() })
            }
            PeerId::Dn(_) => None,
        }
    }
}

impl From<IpAddr> for PeerId {
    fn from(addr: IpAddr) -> Self {
        PeerId::Ip(addr)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerId::Fqdn(name) => write!(f, "FQDN {name}"),
            PeerId::Ip(addr) => write!(f, "IP {addr}"),
            PeerId::Dn(dn) => write!(f, "DN {dn}"),
        }
    }
}

/// Who the caller expects to meet: in the mesh, the member list.
///
/// Implemented for sets of [`PeerId`] and for closures, so that the daemon can look its
/// current membership up at the time of each handshake.
pub trait Members: Send + Sync {
    /// Whether `peer` (authenticated by its certificate) is expected.
    fn contains(&self, peer: &PeerId) -> bool;
}

impl<S: std::hash::BuildHasher + Send + Sync> Members for HashSet<PeerId, S> {
    fn contains(&self, peer: &PeerId) -> bool {
        HashSet::contains(self, peer)
    }
}

impl Members for BTreeSet<PeerId> {
    fn contains(&self, peer: &PeerId) -> bool {
        BTreeSet::contains(self, peer)
    }
}

impl<F: Fn(&PeerId) -> bool + Send + Sync> Members for F {
    fn contains(&self, peer: &PeerId) -> bool {
        self(peer)
    }
}

/// The identities a certificate certifies: its dNSName and iPAddress SANs, then its
/// subject DN (if not empty). Malformed SANs make the certificate malformed.
pub(crate) fn certified(cert: &X509Certificate<'_>) -> Result<Vec<PeerId>, String> {
    let mut out = Vec::new();
    let san = cert.subject_alternative_name().map_err(|e| format!("subjectAltName: {e}"))?;
    for name in san.iter().flat_map(|san| &san.value.general_names) {
        match name {
            GeneralName::DNSName(dns) => out.push(PeerId::fqdn(dns)),
            GeneralName::IPAddress(bytes) => {
                if let Ok(a) = <[u8; 4]>::try_from(*bytes) {
                    out.push(PeerId::Ip(Ipv4Addr::from(a).into()));
                } else if let Ok(a) = <[u8; 16]>::try_from(*bytes) {
                    out.push(PeerId::Ip(Ipv6Addr::from(a).into()));
                } else {
                    return Err("an iPAddress SAN of the wrong length".into());
                }
            }
            GeneralName::Invalid(..) => return Err("an invalid SAN".into()),
            _ => {}
        }
    }
    if cert.subject().iter().next().is_some() {
        out.push(PeerId::Dn(canonical_dn(cert.subject())));
    }
    Ok(out)
}

/// The canonical text of a DN: RDNs in DER order joined by `,`, the attributes of a
/// multi-valued RDN sorted and joined by `+`, each `type=value` with the type's short
/// name (or dotted OID) and the value folded; `,+=\` and `#` escaped.
pub(crate) fn canonical_dn(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            let mut attrs: Vec<String> = rdn
                .iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let kind = [
                        (&OID_X509_COMMON_NAME, "cn"),
                        (&OID_X509_ORGANIZATION_NAME, "o"),
                        (&OID_X509_ORGANIZATIONAL_UNIT, "ou"),
                        (&OID_X509_COUNTRY_NAME, "c"),
                        (&OID_X509_LOCALITY_NAME, "l"),
                        (&OID_X509_STATE_OR_PROVINCE_NAME, "st"),
                        (&OID_X509_SERIALNUMBER, "serialnumber"),
                        (&OID_DOMAIN_COMPONENT, "dc"),
                        (&OID_PKCS9_EMAIL_ADDRESS, "emailaddress"),
                    ]
                    .iter()
                    .find(|(known, _)| *known == oid)
                    .map_or_else(|| oid.to_id_string(), |(_, short)| (*short).to_string());
                    let value = match attr.as_str() {
                        Ok(text) => fold(text),
                        // Not a string type we read: the raw value, as RFC 4514 does.
                        Err(_) => format!("#{}", crate::x509::hex(attr.as_slice())),
                    };
                    format!("{kind}={value}")
                })
                .collect();
            attrs.sort();
            attrs.join("+")
        })
        .collect();
    rdns.join(",")
}

/// Trims, collapses inner white space, folds case, escapes the DN separators.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars().flat_map(char::to_lowercase) {
            if matches!(c, ',' | '+' | '=' | '\\' | '#') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_ids_are_normalized() {
        assert_eq!(PeerId::fqdn("Node-1.Mesh."), PeerId::Fqdn("node-1.mesh".into()));
        let id = IdRepr { id_type: IdType::Fqdn, data: b"A.mesh".to_vec() };
        assert_eq!(PeerId::from_ike(&id).unwrap(), PeerId::fqdn("a.mesh"));
        assert_eq!(PeerId::fqdn("a.mesh").to_ike().unwrap().data, b"a.mesh");
        let bad = IdRepr { id_type: IdType::Fqdn, data: vec![0xff] };
        assert!(matches!(PeerId::from_ike(&bad), Err(CertError::BadIdentity { .. })));
    }

    #[test]
    fn address_ids_round_trip() {
        for addr in ["10.0.0.1", "fd00::1"] {
            let peer = PeerId::Ip(addr.parse().unwrap());
            assert_eq!(PeerId::from_ike(&peer.to_ike().unwrap()).unwrap(), peer);
        }
        let key_id = IdRepr { id_type: IdType::KeyId, data: vec![1] };
        assert!(matches!(PeerId::from_ike(&key_id), Err(CertError::BadIdentity { .. })));
    }

    #[test]
    fn dn_values_fold() {
        assert_eq!(fold("  Node  One, Inc "), "node one\\, inc");
        assert!(PeerId::dn_from_der(&[0x30, 0x03]).is_err());
        // An empty Name: SEQUENCE {}.
        assert_eq!(PeerId::dn_from_der(&[0x30, 0x00]).unwrap(), PeerId::Dn(String::new()));
    }
}
