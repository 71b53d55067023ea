//! The trust bundle: the CA certificates a peer's chain must end in. One CA normally,
//! two during a rotation (old and new), each given as PEM or DER.

use super::BundleError;
use crate::x509::{self, parse_cert};
use ike::crypto::auth::Verifier;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{ParsedExtension, X509Certificate};

/// What the verifier needs of a CA certificate (a trust anchor, or an intermediate the
/// peer sent), taken out of the parsed certificate.
pub(crate) struct CaInfo {
    /// The subject `Name`, DER (compared with the issuer names of what it signs).
    pub(crate) subject: Vec<u8>,
    /// The subject, for messages.
    pub(crate) subject_text: String,
    /// The subjectKeyIdentifier, if any.
    pub(crate) key_id: Option<Vec<u8>>,
    /// SHA-256 of its `SubjectPublicKeyInfo`: revocation lists are kept per issuing key.
    pub(crate) key_hash: [u8; 32],
    /// basicConstraints CA.
    pub(crate) is_ca: bool,
    /// basicConstraints pathLenConstraint.
    pub(crate) path_len: Option<u32>,
    /// keyUsage allows keyCertSign (or there is no keyUsage).
    pub(crate) cert_sign: bool,
    /// keyUsage allows cRLSign (or there is no keyUsage).
    pub(crate) crl_sign: bool,
    /// Validity, Unix seconds.
    pub(crate) not_before: i64,
    /// See `not_before`.
    pub(crate) not_after: i64,
    /// Validity, for messages.
    pub(crate) not_before_text: String,
    /// See `not_before_text`.
    pub(crate) not_after_text: String,
    /// Checks signatures with its key; why not if we do not implement its algorithm.
    pub(crate) key: Result<Arc<dyn Verifier + Send + Sync>, String>,
}

impl CaInfo {
    /// From a parsed certificate; an error string if an extension is malformed.
    pub(crate) fn of(cert: &X509Certificate<'_>) -> Result<Self, String> {
        let bc = cert.basic_constraints().map_err(|e| format!("basicConstraints: {e}"))?;
        let ku = cert.key_usage().map_err(|e| format!("keyUsage: {e}"))?;
        let key_id = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
        let validity = cert.validity();
        Ok(CaInfo {
            subject: cert.subject().as_raw().to_vec(),
            subject_text: x509::name_text(cert.subject()),
            key_id,
            key_hash: x509::key_hash(cert.public_key().raw),
            is_ca: bc.as_ref().is_some_and(|bc| bc.value.ca),
            path_len: bc.and_then(|bc| bc.value.path_len_constraint),
            cert_sign: ku.as_ref().is_none_or(|ku| ku.value.key_cert_sign()),
            crl_sign: ku.as_ref().is_none_or(|ku| ku.value.crl_sign()),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_before_text: validity.not_before.to_string(),
            not_after_text: validity.not_after.to_string(),
            key: x509::spki_verifier(cert.public_key()).map(Arc::from),
        })
    }
}

/// One CA of the bundle.
pub(crate) struct Anchor {
    pub(crate) der: Vec<u8>,
    pub(crate) info: CaInfo,
}

/// The CA certificates this node trusts. Cheap to clone.
#[derive(Clone, Default)]
pub struct TrustBundle {
    anchors: Vec<Arc<Anchor>>,
}

impl TrustBundle {
    /// An empty bundle (trusts nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// From PEM (one or more `CERTIFICATE` blocks, other blocks ignored) or one DER
    /// certificate.
    pub fn from_pem(data: &[u8]) -> Result<Self, BundleError> {
        let blocks = x509::der_blocks(data, "CERTIFICATE")
            .map_err(|detail| BundleError::Malformed { index: 0, detail })?;
        Self::from_der(&blocks)
    }

    /// From DER certificates.
    pub fn from_der<C: AsRef<[u8]>>(certs: &[C]) -> Result<Self, BundleError> {
        let mut bundle = Self::new();
        for (index, der) in certs.iter().enumerate() {
            bundle.add_der_at(der.as_ref(), index)?;
        }
        if bundle.is_empty() {
            return Err(BundleError::Empty);
        }
        Ok(bundle)
    }

    /// Reads a PEM (or DER) bundle file.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let data = std::fs::read(path)
            .map_err(|source| BundleError::Io { path: path.display().to_string(), source })?;
        Self::from_pem(&data)
    }

    /// Adds a CA certificate (DER); adding one already there does nothing.
    pub fn add_der(&mut self, der: &[u8]) -> Result<(), BundleError> {
        self.add_der_at(der, self.anchors.len())
    }

    fn add_der_at(&mut self, der: &[u8], index: usize) -> Result<(), BundleError> {
        let cert = parse_cert(der).map_err(|detail| BundleError::Malformed { index, detail })?;
        let info = CaInfo::of(&cert).map_err(|detail| BundleError::Malformed { index, detail })?;
        if !info.is_ca {
            return Err(BundleError::NotCa { subject: info.subject_text });
        }
        if let Err(detail) = info.key {
            return Err(BundleError::UnsupportedKey { subject: info.subject_text, detail });
        }
        if !self.anchors.iter().any(|a| a.der == der) {
            self.anchors.push(Arc::new(Anchor { der: der.to_vec(), info }));
        }
        Ok(())
    }

    /// How many CAs it holds.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The CA certificates, DER, in the order they were added.
    pub fn certificates(&self) -> impl Iterator<Item = &[u8]> {
        self.anchors.iter().map(|a| a.der.as_slice())
    }

    /// The CAs' subjects, for display.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.anchors.iter().map(|a| a.info.subject_text.as_str())
    }

    pub(crate) fn anchors(&self) -> &[Arc<Anchor>] {
        &self.anchors
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.subjects()).finish()
    }
}
