//! The mesh PKI of ikemesh.
//!
//! A mesh has its own certificate authority. This crate creates it (Ed25519 by default),
//! issues short-lived node certificates from certificate signing requests so that a
//! node's private key never leaves the node, verifies a peer's certificate chain against
//! the trust bundle (two CAs during a rotation), the expected identity and the CRL,
//! revokes nodes by name, serial or public key, rotates the CA without downtime, and
//! serves enrollment over mutual TLS with one-time join tokens. Its verifier implements
//! the certificate-check trait of the `ike` crate.
//!
//! Private keys are written with mode 0600, zeroized in memory, and never appear in logs
//! or `Debug` output.
//!
//! Built so far:
//!
//! - [`verify`]: the [`TrustBundle`], [`Revocation`] state and the [`CertVerifier`]
//!   that implements `ike::sa::PeerAuthenticator` (chain, validity, key usage, path
//!   length, revocation by serial and key hash, identity and membership).
//! - [`keys`]: our private key as an `ike` signer, our certificate chain, and the IKE ID
//!   our certificate certifies.
//! - [`issuer`]: the [`Issuer`] trait, what enrollment needs from the CA.
//! - [`enroll`]: one-time join tokens, the enrollment service (TLS 1.3, mutual TLS for
//!   renewal) and the node's side of it.
//! - [`authority`]: the CA on disk ([`Authority`]): init, node certificates from CSRs,
//!   revocation and CRLs, rotation, `meshctl ca show`; and the node-side key and CSR.

#![forbid(unsafe_code)]

pub mod authority;
pub mod enroll;
pub mod issuer;
pub mod keys;
pub mod verify;
mod x509;

pub use authority::{Algorithm, Authority, AuthorityError, InitOptions, IssueOptions};
pub use issuer::{IssueError, Issued, Issuer};
pub use keys::{KeyError, PrivateKey};
pub use verify::{
    BundleError, CertError, CertVerifier, Clock, CrlError, Members, PeerId, Revocation,
    TrustBundle, Verified,
};
