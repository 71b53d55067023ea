//! Why a peer's certificate, a trust bundle or a CRL was refused: one variant per
//! failure class, each with a one-line message saying what failed and what to do.

/// Why a peer's certificate chain or identity was refused.
///
/// The IKE layer answers every one of them with `AUTHENTICATION_FAILED`; the message
/// (which starts with the failure class) goes to the log and the `Failed` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The peer sent no certificate.
    #[error(
        "no certificate: the peer sent no X.509 certificate; configure it to send its \
         node certificate"
    )]
    NoCertificate,
    /// A certificate is not well-formed DER X.509 (truncated, garbage, trailing bytes).
    #[error(
        "malformed certificate: certificate {index} of the chain (0 is the peer's own) is \
         not valid DER X.509 ({detail}); re-issue it or fix the peer's certificate file"
    )]
    Malformed {
        /// Position in the chain the peer sent, leaf first.
        index: usize,
        /// What the parser said.
        detail: String,
    },
    /// The certificate's validity ended (with the clock-skew allowance) before now.
    #[error(
        "certificate expired: '{subject}' was valid until {not_after}; renew it \
         (`meshctl ca issue`) or check both nodes' clocks"
    )]
    Expired {
        /// The expired certificate's subject.
        subject: String,
        /// Its notAfter.
        not_after: String,
    },
    /// The certificate's validity starts (with the clock-skew allowance) after now.
    #[error(
        "certificate not yet valid: '{subject}' is valid from {not_before}; check both \
         nodes' clocks (NTP)"
    )]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its notBefore.
        not_before: String,
    },
    /// No CA in the trust bundle (nor an intermediate the peer sent) issued it.
    #[error(
        "unknown issuer: '{subject}' was issued by '{issuer}', which is not a CA in the \
         trust bundle (another mesh's CA?); re-issue it from this mesh's CA or add that CA \
         to the bundle"
    )]
    UnknownIssuer {
        /// The certificate whose issuer is unknown.
        subject: String,
        /// Its issuer's name.
        issuer: String,
    },
    /// The issuer's key does not verify the certificate's signature.
    #[error(
        "bad signature: '{subject}' does not verify with the key of '{issuer}'; it is \
         forged or was issued by another CA of the same name: re-issue it"
    )]
    BadSignature {
        /// The certificate whose signature is wrong.
        subject: String,
        /// The CA whose key was tried.
        issuer: String,
    },
    /// The signature or key algorithm is not one we implement.
    #[error(
        "unsupported algorithm: '{subject}': {detail}; issue certificates with Ed25519, \
         ECDSA P-256 or RSA (2048 bits or more) keys and SHA-256 signatures"
    )]
    UnsupportedAlgorithm {
        /// The certificate.
        subject: String,
        /// Which algorithm.
        detail: String,
    },
    /// The IKE identity is not one the certificate certifies.
    #[error(
        "wrong identity: the peer claims {claimed} but its certificate '{subject}' \
         certifies {certified}; the peer's IKE ID must be a SAN (or the subject DN) of \
         its certificate"
    )]
    WrongIdentity {
        /// The identity the peer claimed.
        claimed: String,
        /// The certificate's subject.
        subject: String,
        /// The identities the certificate does certify.
        certified: String,
    },
    /// The IKE identity cannot be checked against a certificate (type or encoding).
    #[error(
        "wrong identity: unusable IKE ID ({detail}); use an FQDN, IPv4, IPv6 or DER DN \
         identity"
    )]
    BadIdentity {
        /// What is wrong with it.
        detail: String,
    },
    /// The identity is certified by the CA but not one this node expects.
    #[error(
        "identity not a member: {peer} holds a valid mesh certificate but is not a member \
         this node expects; add it to the membership (`meshctl peer add`) or fix the \
         peer's address"
    )]
    NotMember {
        /// The authenticated identity.
        peer: String,
    },
    /// The certificate's serial is on its CA's revocation list.
    #[error(
        "revoked: '{subject}' (serial {serial}) is on its CA's revocation list; the node \
         must re-enroll"
    )]
    RevokedSerial {
        /// The revoked certificate.
        subject: String,
        /// Its serial, hex.
        serial: String,
    },
    /// The certificate's public key is refused (the key of a revoked node).
    #[error(
        "revoked: the public key of '{subject}' (SHA-256 {key_hash}) belongs to a revoked \
         node; the node must make a new key and re-enroll"
    )]
    RevokedKey {
        /// The certificate.
        subject: String,
        /// SHA-256 of its `SubjectPublicKeyInfo`, hex.
        key_hash: String,
    },
    /// The leaf's key usage does not include digitalSignature (or is absent).
    #[error(
        "missing digitalSignature: the key usage of '{subject}' does not allow signatures; \
         re-issue it with keyUsage digitalSignature"
    )]
    MissingDigitalSignature {
        /// The certificate.
        subject: String,
    },
    /// The leaf is self-signed (or self-issued), not issued by a mesh CA.
    #[error(
        "self-signed leaf: '{subject}' is self-signed, not issued by the mesh CA; enroll \
         the node with the CA"
    )]
    SelfSignedLeaf {
        /// The certificate.
        subject: String,
    },
    /// The peer authenticated with a CA certificate.
    #[error(
        "CA certificate used as leaf: '{subject}' is a CA certificate; the peer must \
         authenticate with its node certificate"
    )]
    CaAsLeaf {
        /// The certificate.
        subject: String,
    },
    /// A certificate in the issuer position is not a CA (basicConstraints, keyCertSign).
    #[error(
        "issuer not a CA: '{subject}' signed another certificate but is not a CA \
         (basicConstraints CA or keyCertSign missing); only the mesh CA may issue"
    )]
    IssuerNotCa {
        /// The would-be issuer.
        subject: String,
    },
    /// The chain is longer than a CA's pathLenConstraint or our limit allows.
    #[error("path too long: {detail}; issue node certificates directly from the mesh CA")]
    PathTooLong {
        /// Which limit was exceeded.
        detail: String,
    },
    /// A critical extension we do not process.
    #[error(
        "unsupported critical extension: '{subject}' has critical extension {oid}, which \
         this verifier does not process; re-issue it without"
    )]
    UnsupportedCriticalExtension {
        /// The certificate.
        subject: String,
        /// The extension's OID.
        oid: String,
    },
}

/// Why a trust bundle could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle file could not be read.
    #[error("trust bundle {path}: cannot read it ({source}); check the path and permissions")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no certificate.
    #[error("trust bundle: no CA certificate in it; give the mesh CA's certificate (PEM)")]
    Empty,
    /// A certificate or the PEM around it is malformed.
    #[error(
        "trust bundle: certificate {index} is not valid X.509 ({detail}); replace the file \
         with the CA certificate(s) in PEM"
    )]
    Malformed {
        /// Position in the bundle.
        index: usize,
        /// What the parser said.
        detail: String,
    },
    /// A certificate is not a CA certificate.
    #[error(
        "trust bundle: '{subject}' is not a CA certificate (basicConstraints CA); the \
         bundle must hold only the mesh CA certificate(s)"
    )]
    NotCa {
        /// The certificate.
        subject: String,
    },
    /// A CA's key algorithm is not one we implement.
    #[error(
        "trust bundle: the key of '{subject}' cannot be used ({detail}); use an Ed25519, \
         ECDSA P-256 or RSA (2048 bits or more) CA key"
    )]
    UnsupportedKey {
        /// The certificate.
        subject: String,
        /// Why.
        detail: String,
    },
}

/// Why a certificate revocation list was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// Not a well-formed DER (or PEM `X509 CRL`) CRL.
    #[error("CRL: not a valid DER or PEM X.509 CRL ({detail}); fetch the CRL from the CA again")]
    Malformed {
        /// What the parser said.
        detail: String,
    },
    /// No CA of the trust bundle is its issuer.
    #[error(
        "CRL: issued by '{issuer}', which is not a CA in the trust bundle; load the CRL of \
         this mesh's CA"
    )]
    UnknownIssuer {
        /// The CRL's issuer name.
        issuer: String,
    },
    /// Its signature does not verify with the CA's key.
    #[error(
        "CRL: the signature does not verify with the key of '{issuer}'; the CRL is \
         corrupt or forged, fetch it from the CA again"
    )]
    BadSignature {
        /// The CA whose key was tried.
        issuer: String,
    },
    /// The CA's key usage does not allow CRL signing.
    #[error("CRL: '{issuer}' may not sign CRLs (keyUsage cRLSign missing); re-create the CA")]
    NotCrlSigner {
        /// The CA.
        issuer: String,
    },
    /// A newer CRL of the same CA is already loaded.
    #[error(
        "CRL: number {number} of '{issuer}' is older than the loaded number {loaded}; \
         keep the newer CRL"
    )]
    Older {
        /// The CA.
        issuer: String,
        /// This CRL's number, hex.
        number: String,
        /// The loaded CRL's number, hex.
        loaded: String,
    },
}
