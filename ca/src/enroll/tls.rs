//! The TLS side of enrollment: TLS 1.3 only, on rustls's aws-lc-rs provider, with our
//! own certificate verifiers on both ends.
//!
//! - The service asks for, and does not require, a client certificate. One that is
//!   presented must pass the CA's [`CertVerifier`] (chain, validity, revocation), under
//!   the identity it certifies; the handshake signature is checked by rustls's provider
//!   functions.
//! - A joining node trusts the service by the CA pin of its token: the chain the service
//!   sends must hold the pinned CA, and the service's certificate must chain to it and
//!   certify the service name. A renewing node trusts its trust bundle instead.

use super::token::CaPin;
use crate::Issuer;
use crate::keys;
use crate::verify::{CertError, CertVerifier, TrustBundle};
use ike::wire::id::{IdRepr, IdType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The ALPN protocol name of enrollment, version 1.
pub(crate) const ALPN: &[u8] = b"ikemesh-enroll/1";

/// What both our certificate verifiers answer for a TLS 1.2 handshake signature.
fn no_tls12() -> Error {
    Error::General("TLS 1.2 is not offered".into())
}

/// A TLS 1.3 handshake signature, checked by the provider (both our verifiers).
fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// rustls's default provider, aws-lc-rs.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Where a verifier leaves the one-line reason it refused a certificate: rustls keeps
/// only an alert code, the log line and the caller want the reason.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reason(Arc<Mutex<Option<String>>>);

impl Reason {
    fn set(&self, reason: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    /// The reason, if a verifier refused.
    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The rustls error (and so the TLS alert) for a refused certificate.
fn tls_error(e: &CertError) -> Error {
    let kind = match e {
        CertError::Expired { .. } => CertificateError::Expired,
        CertError::NotYetValid { .. } => CertificateError::NotValidYet,
        CertError::RevokedSerial { .. } | CertError::RevokedKey { .. } => CertificateError::Revoked,
        CertError::UnknownIssuer { .. } => CertificateError::UnknownIssuer,
        CertError::BadSignature { .. } => CertificateError::BadSignature,
        CertError::Malformed { .. } | CertError::NoCertificate => CertificateError::BadEncoding,
        _ => CertificateError::ApplicationVerificationFailure,
    };
    Error::InvalidCertificate(kind)
}

fn chain_of(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
    std::iter::once(end_entity).chain(intermediates).map(|c| c.to_vec()).collect()
}

/// The service's check of a renewing node's certificate.
pub(crate) struct NodeCertVerifier {
    issuer: Arc<dyn Issuer>,
    provider: Arc<CryptoProvider>,
    reason: Reason,
}

impl NodeCertVerifier {
    pub(crate) fn new(
        issuer: Arc<dyn Issuer>,
        provider: Arc<CryptoProvider>,
        reason: Reason,
    ) -> Self {
        NodeCertVerifier { issuer, provider, reason }
    }
}

impl fmt::Debug for NodeCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCertVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for NodeCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Enrolling nodes have no certificate yet; `renew` checks one was presented.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let id = keys::ike_id(end_entity).map_err(|e| {
            self.reason.set(format!("client certificate: {e}"));
            Error::InvalidCertificate(CertificateError::BadEncoding)
        })?;
        let verifier = self.issuer.verifier().map_err(|e| {
            self.reason.set(format!("cannot check client certificates: {e}"));
            Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        match verifier.verify(&id, &chain_of(end_entity, intermediates)) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                self.reason.set(format!("client certificate refused: {e}"));
                Err(tls_error(&e))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// What a node trusts the service by.
#[derive(Clone)]
pub(crate) enum ServiceTrust {
    /// The CA pin of a join token.
    Pin(CaPin),
    /// The node's trust bundle.
    Bundle(TrustBundle),
}

/// A node's check of the service's certificate.
pub(crate) struct ServiceCertVerifier {
    trust: ServiceTrust,
    name: String,
    provider: Arc<CryptoProvider>,
    reason: Reason,
}

impl ServiceCertVerifier {
    pub(crate) fn new(
        trust: ServiceTrust,
        name: &str,
        provider: Arc<CryptoProvider>,
        reason: Reason,
    ) -> Self {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        ServiceCertVerifier { trust, name, provider, reason }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), (String, Error)> {
        let bundle = match &self.trust {
            ServiceTrust::Bundle(bundle) => bundle.clone(),
            ServiceTrust::Pin(pin) => {
                let ca = intermediates
                    .iter()
                    .find(|c| CaPin::of_cert_der(c).is_ok_and(|p| p == *pin))
                    .ok_or_else(|| {
                        (
                            format!(
                                "the enrollment service sent no CA with the token's pin {pin}: \
                                 a wrong address, a token of another mesh, or an impostor"
                            ),
                            Error::InvalidCertificate(CertificateError::UnknownIssuer),
                        )
                    })?;
                TrustBundle::from_der(&[ca.as_ref()]).map_err(|e| {
                    (
                        format!("the pinned CA certificate is not usable: {e}"),
                        Error::InvalidCertificate(CertificateError::UnknownIssuer),
                    )
                })?
            }
        };
        let id = IdRepr { id_type: IdType::Fqdn, data: self.name.as_bytes().to_vec() };
        CertVerifier::new(bundle)
            .verify(&id, &chain_of(end_entity, intermediates))
            .map(|_| ())
            .map_err(|e| (format!("enrollment service certificate refused: {e}"), tls_error(&e)))
    }
}

impl fmt::Debug for ServiceCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCertVerifier").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServiceCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // The name checked is the one we were built with (also sent as SNI).
        match self.check(end_entity, intermediates) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err((reason, error)) => {
                self.reason.set(reason);
                Err(error)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
