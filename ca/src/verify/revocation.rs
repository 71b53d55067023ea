//! Revocation: the serials on each CA's CRL (checked against the CA before they are
//! taken), serials refused by hand, and refused public keys (SHA-256 of the
//! `SubjectPublicKeyInfo`), so that a certificate re-issued for a stolen key does not
//! pass either.
//!
//! Serials are kept per issuing CA key: two CAs (during a rotation) may use the same
//! serial numbers.

use super::{CertError, CrlError, TrustBundle};
use crate::x509;
use std::collections::{HashMap, HashSet};
use std::fmt;
use x509_parser::prelude::{CertificateRevocationList, FromDer, ParsedExtension};

/// What a loaded CRL said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// The issuing CA's subject.
    pub issuer: String,
    /// The CRL number (hex), if it has one.
    pub number: Option<String>,
    /// How many serials it lists.
    pub revoked: usize,
    /// Its thisUpdate, Unix seconds.
    pub this_update: i64,
    /// Its nextUpdate, Unix seconds, if any: the caller may warn when it has passed.
    pub next_update: Option<i64>,
}

#[derive(Clone)]
struct Crl {
    number: Option<Vec<u8>>,
    serials: HashSet<Vec<u8>>,
}

/// The revocation state a [`CertVerifier`](super::CertVerifier) checks. Cheap to build,
/// cloned when updated.
#[derive(Clone, Default)]
pub struct Revocation {
    /// Issuing CA key hash -> its latest CRL.
    crls: HashMap<[u8; 32], Crl>,
    /// Issuing CA key hash -> serials refused by hand.
    serials: HashMap<[u8; 32], HashSet<Vec<u8>>>,
    /// Refused public keys.
    keys: HashSet<[u8; 32]>,
}

impl Revocation {
    /// Nothing revoked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a CRL (DER or PEM `X509 CRL`) after checking its signature with the key of
    /// the CA in `bundle` that issued it; it replaces that CA's previous CRL unless its
    /// CRL number is lower.
    pub fn add_crl(&mut self, bundle: &TrustBundle, data: &[u8]) -> Result<CrlInfo, CrlError> {
        let der = x509::der_blocks(data, "X509 CRL")
            .map_err(|detail| CrlError::Malformed { detail })?
            .swap_remove(0);
        let crl = match CertificateRevocationList::from_der(&der) {
            Ok(([], crl)) => crl,
            Ok((rest, _)) => {
                let detail = format!("{} bytes after the CRL", rest.len());
                return Err(CrlError::Malformed { detail });
            }
            Err(e) => return Err(CrlError::Malformed { detail: x509::parse_error(&e) }),
        };
        if crl.signature_algorithm != crl.tbs_cert_list.signature {
            return Err(CrlError::Malformed {
                detail: "the signed and the outer signature algorithms differ".into(),
            });
        }
        let issuer_text = x509::name_text(crl.issuer());
        let key_id = crl.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        });
        let candidates: Vec<_> = bundle
            .anchors()
            .iter()
            .filter(|a| a.info.subject == crl.issuer().as_raw())
            .filter(|a| match (key_id, &a.info.key_id) {
                (Some(aki), Some(ski)) => aki.0 == ski.as_slice(),
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(CrlError::UnknownIssuer { issuer: issuer_text });
        }
        let ca = candidates
            .iter()
            .find(|a| {
                a.info.key.as_ref().is_ok_and(|key| {
                    x509::check_signature(
                        key.as_ref(),
                        &crl.signature_algorithm,
                        &crl.signature_value.data,
                        crl.tbs_cert_list.as_ref(),
                    ) == Ok(())
                })
            })
            .ok_or_else(|| CrlError::BadSignature { issuer: issuer_text.clone() })?;
        if !ca.info.crl_sign {
            return Err(CrlError::NotCrlSigner { issuer: issuer_text });
        }
        let number = crl.crl_number().map(|n| x509::serial_key(&n.to_bytes_be()));
        if let Some(loaded) = self.crls.get(&ca.info.key_hash).and_then(|c| c.number.as_ref())
            && let Some(new) = &number
            && (new.len(), new) < (loaded.len(), loaded)
        {
            return Err(CrlError::Older {
                issuer: issuer_text,
                number: x509::hex(new),
                loaded: x509::hex(loaded),
            });
        }
        let serials: HashSet<Vec<u8>> =
            crl.iter_revoked_certificates().map(|r| x509::serial_key(r.raw_serial())).collect();
        let info = CrlInfo {
            issuer: issuer_text,
            number: number.as_deref().map(x509::hex),
            revoked: serials.len(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
        };
        self.crls.insert(ca.info.key_hash, Crl { number, serials });
        Ok(info)
    }

    /// Refuses the certificate with `serial` (big-endian, leading zeros ignored) issued by
    /// the CA whose certificate is `ca_der`.
    pub fn revoke_serial(&mut self, ca_der: &[u8], serial: &[u8]) -> Result<(), CertError> {
        let ca =
            x509::parse_cert(ca_der).map_err(|detail| CertError::Malformed { index: 0, detail })?;
        let ca_key = x509::key_hash(ca.public_key().raw);
        self.serials.entry(ca_key).or_default().insert(x509::serial_key(serial));
        Ok(())
    }

    /// Refuses every certificate for the public key whose `SubjectPublicKeyInfo` hashes
    /// (SHA-256) to `key_hash`.
    pub fn refuse_key_hash(&mut self, key_hash: [u8; 32]) {
        self.keys.insert(key_hash);
    }

    /// Refuses every certificate for the public key of `cert_der`; its key hash.
    pub fn refuse_key_of(&mut self, cert_der: &[u8]) -> Result<[u8; 32], CertError> {
        let hash = key_hash_of(cert_der)?;
        self.keys.insert(hash);
        Ok(hash)
    }

    /// Whether `serial` of a certificate issued by the CA key `issuer_key` is refused.
    pub(crate) fn serial_revoked(&self, issuer_key: &[u8; 32], serial: &[u8]) -> bool {
        let serial = x509::serial_key(serial);
        self.crls.get(issuer_key).is_some_and(|c| c.serials.contains(&serial))
            || self.serials.get(issuer_key).is_some_and(|s| s.contains(&serial))
    }

    /// Whether the key is refused.
    pub(crate) fn key_refused(&self, key_hash: &[u8; 32]) -> bool {
        self.keys.contains(key_hash)
    }
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("crls", &self.crls.len())
            .field("serials", &self.serials.values().map(HashSet::len).sum::<usize>())
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// SHA-256 of the `SubjectPublicKeyInfo` of a DER certificate: the key hash
/// [`Revocation::refuse_key_hash`] takes.
pub fn key_hash_of(cert_der: &[u8]) -> Result<[u8; 32], CertError> {
    let cert =
        x509::parse_cert(cert_der).map_err(|detail| CertError::Malformed { index: 0, detail })?;
    Ok(x509::key_hash(cert.public_key().raw))
}
