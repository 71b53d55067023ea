//! Enrollment: how a node gets its first certificate with a one-time join token, and
//! renews it with the certificate it holds, over TLS 1.3.
//!
//! # Join tokens
//!
//! `meshctl token create <name>` makes a token bound to one node name, for a limited
//! time, single use ([`TokenStore::create`]). The token is printed once:
//!
//! ```text
//! ikm1.<secret>.<pin>
//! ikm1.q1xJ0m…43 characters….<64 hex digits>
//! ```
//!
//! - `ikm1`: the format and its version;
//! - `<secret>`: 32 random bytes from the OS, base64url without padding (43
//!   characters). The store keeps only SHA-256 of these 43 characters;
//! - `<pin>`: SHA-256 of the `SubjectPublicKeyInfo` (DER) of the CA that signed the
//!   enrollment service's certificate, 64 lowercase hex digits (kubeadm's discovery
//!   hash). The joining node needs nothing else to authenticate the service before it
//!   sends the secret: the service's chain must hold a CA with this key, and the
//!   service's certificate must chain to it and certify the service's name.
//!
//! The token is `.`-separated ASCII with no character a shell quotes, so it pastes
//! safely; knowing the pin alone gives nothing (a CA's public key is public).
//!
//! # The service and its protocol
//!
//! [`Service`] listens on TCP and speaks TLS 1.3 only (rustls, aws-lc-rs), ALPN
//! `ikemesh-enroll/1`, with a certificate the mesh CA issued for the service's name; it
//! sends its CA certificates after its own so that a joining node finds the pinned CA.
//! Each connection carries one request and one response, each one frame: a 4-byte
//! big-endian length, then that many bytes of JSON. Requests are at most
//! [`MAX_REQUEST`] bytes; the handshake and the request must arrive within the
//! service's timeout (10 s by default).
//!
//! ```text
//! → {"op":"enroll","token":"ikm1.….…","csr":"<PKCS#10 DER, base64>"}    no client certificate
//! → {"op":"renew","csr":"<PKCS#10 DER, base64>"}                        mutual TLS
//! ← {"cert_pem":"…","bundle_pem":"…","crl_pem":"…"}
//! ← {"error":"one line saying what failed and what to do"}
//! ```
//!
//! - `enroll`: the CSR must parse and be signed by its key; the token is then redeemed
//!   ([`TokenStore::redeem`]: marked used, durably) and the CA issues for the name the
//!   token is bound to, whatever the CSR asks for.
//! - `renew`: the node presents its current certificate; the service checks it with
//!   [`Issuer::verifier`](crate::Issuer::verifier) (chain, validity, revocation by
//!   serial and key) during the handshake, and the CA issues for the name that
//!   certificate certifies. An expired or revoked certificate fails the handshake (TLS
//!   alert `certificate_expired` or `certificate_revoked`); the node enrolls again with
//!   a new token.
//!
//! Every connection ends in one log line (`tracing`, target `ca::enroll`): the
//! peer's address, the operation, and either the name, serial and token id issued for,
//! or the one-line reason it was refused. Tokens and keys never reach a log line.
//!
//! # Crash safety
//!
//! The token state is one JSON file (`tokens.json`), replaced atomically (temp file,
//! fsync, rename, fsync of the directory) under an exclusive `flock` of `tokens.lock`,
//! so threads and processes never interleave their changes. A token is marked used (written and fsynced) before the certificate is issued. A
//! crash, or a refusal by the CA, in between leaves the token spent and nothing issued:
//! the operator creates a new token. No order of events lets one token issue twice.
//!
//! # The node's side
//!
//! [`enroll`] and [`renew`] connect, check the service, send the request and check the
//! answer: the bundle holds the pinned CA (enroll), the CRL is signed by a CA of the
//! bundle, and the certificate certifies the CSR's key and verifies under the bundle
//! and that CRL.

mod client;
mod proto;
mod server;
mod tls;
mod token;

pub use client::{Enrolled, enroll, renew};
pub use proto::{MAX_REQUEST, MAX_RESPONSE};
pub use server::{Listener, Service, ServiceCredentials};
pub use token::{CaPin, JoinToken, Redeemed, TOKEN_PREFIX, TokenError, TokenInfo, TokenStore};

/// Why enrollment or renewal failed, or the service could not start; one line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// A join token problem.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Our certificate chain or key cannot be used for TLS.
    #[error("TLS credentials: {detail}")]
    Credentials {
        /// What is wrong.
        detail: String,
    },
    /// The CSR is not usable.
    #[error("certificate request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The service could not listen.
    #[error("cannot listen on {addr}: {source}; is the address ours and the port free?")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The service's state (bundle, CRL) could not be read.
    #[error("enrollment service: {detail}")]
    Service {
        /// What failed.
        detail: String,
    },
    /// No connection or TLS session with the service.
    #[error("enrollment service {addr}: {detail}")]
    Connect {
        /// The service's address.
        addr: std::net::SocketAddr,
        /// What failed.
        detail: String,
    },
    /// The service is not the one the token or the bundle trusts.
    #[error("enrollment service {addr} not trusted: {detail}")]
    ServiceNotTrusted {
        /// The service's address.
        addr: std::net::SocketAddr,
        /// Why.
        detail: String,
    },
    /// The service refused the request.
    #[error("enrollment service refused: {message}")]
    Refused {
        /// The service's one-line reason.
        message: String,
    },
    /// The service's answer is malformed, or what it issued does not check out.
    #[error("enrollment service answered badly: {detail}")]
    BadResponse {
        /// What is wrong.
        detail: String,
    },
}
