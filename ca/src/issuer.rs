//! What the enrollment service needs from the certificate authority: the seam between
//! enrollment (tokens, TLS, the wire protocol) and the authority (keys, serials, the
//! CRL, rotation, all on disk).

use crate::verify::CertVerifier;
use std::time::SystemTime;

/// A certificate just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The node certificate, PEM.
    pub cert_pem: String,
    /// Its serial number, lowercase hex without separators.
    pub serial: String,
    /// The end of its validity.
    pub not_after: SystemTime,
}

/// Why a certificate was not issued; one line each, saying what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The CSR does not parse, is not self-signed by its key, or uses a key type the
    /// mesh does not take.
    #[error("bad certificate request: {0}")]
    BadRequest(String),
    /// The name is not one we issue for (not a valid DNS name, or not the one the
    /// token or the presented certificate is bound to).
    #[error("name refused: {0}")]
    NameRefused(String),
    /// The node, or its key, is revoked.
    #[error("revoked: {0}")]
    Revoked(String),
    /// The CA's state could not be read or written; nothing was issued.
    #[error("CA storage: {0}")]
    Storage(String),
}

/// A certificate authority that issues node certificates.
///
/// Implementations are safe to call from many threads at once: each call that issues
/// takes a fresh serial and records it durably before it returns.
pub trait Issuer: Send + Sync {
    /// Issues a node certificate for `name` (its dNSName SAN and common name) to the key
    /// of `csr_der` (PKCS#10, DER), which must be signed by that key. The lifetime,
    /// key usage and extensions are the CA's to choose, never the request's.
    fn issue(&self, name: &str, csr_der: &[u8]) -> Result<Issued, IssueError>;

    /// The trust bundle a node must hold: the current CA, and the previous one during a
    /// rotation. PEM.
    fn bundle_pem(&self) -> Result<String, IssueError>;

    /// The current certificate revocation list, PEM.
    fn crl_pem(&self) -> Result<String, IssueError>;

    /// A verifier for the certificates nodes present to renew (current bundle and
    /// revocation state, any member name).
    fn verifier(&self) -> Result<CertVerifier, IssueError>;
}
