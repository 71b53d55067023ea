//! The node's side: enroll with a join token, renew with the current certificate.

use super::EnrollError;
use super::proto::{MAX_RESPONSE, RequestOut, Response, read_frame, write_frame};
use super::tls::{self, Reason, ServiceCertVerifier, ServiceTrust};
use super::token::{CaPin, JoinToken};
use crate::keys;
use crate::verify::{CertVerifier, Revocation, TrustBundle};
use crate::x509;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer as _, X509CertificationRequest};
use zeroize::Zeroizing;

/// How long a node waits for the whole exchange.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the service sent back, checked (see the [module documentation](super)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The node's new certificate, PEM.
    pub cert_pem: String,
    /// The trust bundle, PEM: the current CA, and the previous one during a rotation.
    pub bundle_pem: String,
    /// The CA's current CRL, PEM.
    pub crl_pem: String,
}

/// Enrolls with the service at `addr`, whose certificate must certify `service_name`
/// and chain to the CA the token pins: sends `token` and `csr_der` (PKCS#10, DER, signed
/// by the node's key) and returns the certificate the CA issued for the token's node.
pub async fn enroll(
    addr: SocketAddr,
    service_name: &str,
    token: &JoinToken,
    csr_der: &[u8],
) -> Result<Enrolled, EnrollError> {
    let provider = tls::provider();
    let reason = Reason::default();
    let verifier = ServiceCertVerifier::new(
        ServiceTrust::Pin(token.pin()),
        service_name,
        provider.clone(),
        reason.clone(),
    );
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| EnrollError::Credentials { detail: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let csr = STANDARD.encode(csr_der);
    let request = Zeroizing::new(
        serde_json::to_vec(&RequestOut::Enroll { token: token.expose(), csr: &csr })
            .map_err(|e| EnrollError::BadRequest { detail: e.to_string() })?,
    );
    let response = exchange(addr, service_name, config, &reason, &request).await?;
    check_answer(response, csr_der, Some(token.pin()))
}

/// Renews with the service at `addr`, whose certificate must certify `service_name`
/// and verify under `bundle`: authenticates with `cert_chain` (DER, leaf first) and
/// `key_pem` (its private key: PKCS#8, SEC1 or PKCS#1 PEM), sends `csr_der` and returns
/// the certificate the CA issued for the name `cert_chain` certifies.
pub async fn renew(
    addr: SocketAddr,
    service_name: &str,
    bundle: &TrustBundle,
    cert_chain: &[Vec<u8>],
    key_pem: &[u8],
    csr_der: &[u8],
) -> Result<Enrolled, EnrollError> {
    let provider = tls::provider();
    let reason = Reason::default();
    let verifier = ServiceCertVerifier::new(
        ServiceTrust::Bundle(bundle.clone()),
        service_name,
        provider.clone(),
        reason.clone(),
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| EnrollError::Credentials { detail: format!("private key: {e}") })?;
    let chain = cert_chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| EnrollError::Credentials { detail: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| EnrollError::Credentials { detail: e.to_string() })?;
    let csr = STANDARD.encode(csr_der);
    let request = serde_json::to_vec(&RequestOut::Renew { csr: &csr })
        .map_err(|e| EnrollError::BadRequest { detail: e.to_string() })?;
    let response = exchange(addr, service_name, config, &reason, &request).await?;
    check_answer(response, csr_der, None)
}

/// Connects, sends `request`, reads the response.
async fn exchange(
    addr: SocketAddr,
    service_name: &str,
    mut config: ClientConfig,
    reason: &Reason,
    request: &[u8],
) -> Result<Response, EnrollError> {
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    let connect = |detail: String| EnrollError::Connect { addr, detail };
    let name = ServerName::try_from(service_name.to_string())
        .map_err(|_| connect(format!("'{service_name}' is not a DNS name")))?;
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| connect(e.to_string()))?;
        let mut tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(
            |e| match reason.take() {
                Some(detail) => EnrollError::ServiceNotTrusted { addr, detail },
                None => io_error(addr, &e),
            },
        )?;
        write_frame(&mut tls, request).await.map_err(|e| io_error(addr, &e))?;
        let body = read_frame(&mut tls, MAX_RESPONSE).await.map_err(|e| match e {
            super::proto::FrameError::Io(e) => io_error(addr, &e),
            other @ super::proto::FrameError::TooLarge(_) => {
                EnrollError::BadResponse { detail: other.to_string() }
            }
        })?;
        // The service closes; a failed close notify changes nothing.
        let _ = tls.shutdown().await;
        serde_json::from_slice::<Response>(&body)
            .map_err(|e| EnrollError::BadResponse { detail: format!("not a response: {e}") })
    };
    tokio::time::timeout(CLIENT_TIMEOUT, work)
        .await
        .map_err(|_| connect(format!("no answer within {} s", CLIENT_TIMEOUT.as_secs())))?
}

/// A connection error; a TLS alert from the service says it refused our certificate.
fn io_error(addr: SocketAddr, e: &std::io::Error) -> EnrollError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => EnrollError::Refused {
            message: format!(
                "TLS alert {alert:?}: our certificate was not accepted (expired or revoked \
                 certificates cannot renew; enroll again with a new join token)"
            ),
        },
        _ => EnrollError::Connect { addr, detail: e.to_string() },
    }
}

/// Checks the service's answer.
fn check_answer(
    response: Response,
    csr_der: &[u8],
    pin: Option<CaPin>,
) -> Result<Enrolled, EnrollError> {
    let bad = |detail: String| EnrollError::BadResponse { detail };
    if let Some(message) = response.error {
        return Err(EnrollError::Refused { message });
    }
    let (Some(cert_pem), Some(bundle_pem), Some(crl_pem)) =
        (response.cert_pem, response.bundle_pem, response.crl_pem)
    else {
        return Err(bad("a certificate, bundle or CRL is missing".into()));
    };
    let bundle = TrustBundle::from_pem(bundle_pem.as_bytes())
        .map_err(|e| bad(format!("trust bundle: {e}")))?;
    if let Some(pin) = pin
        && !bundle.certificates().any(|c| CaPin::of_cert_der(c).is_ok_and(|p| p == pin))
    {
        return Err(bad(format!("the trust bundle does not hold the pinned CA {pin}")));
    }
    let mut revocation = Revocation::new();
    crate::authority::add_crls(&mut revocation, &bundle, crl_pem.as_bytes())
        .map_err(|e| bad(format!("CRL: {e}")))?;
    let chain = keys::cert_chain_from_pem(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let requested = match X509CertificationRequest::from_der(csr_der) {
        Ok((_, csr)) => csr.certification_request_info.subject_pki.raw.to_vec(),
        Err(e) => {
            return Err(EnrollError::BadRequest { detail: x509::parse_error(&e) });
        }
    };
    let leaf = x509::parse_cert(&chain[0]).map_err(bad)?;
    if leaf.public_key().raw != requested.as_slice() {
        return Err(bad("the certificate is not for the key of our request".into()));
    }
    let id = keys::ike_id(&chain[0]).map_err(|e| bad(e.to_string()))?;
    CertVerifier::new(bundle)
        .with_revocation(revocation)
        .verify(&id, &chain)
        .map_err(|e| bad(format!("the new certificate does not verify: {e}")))?;
    Ok(Enrolled { cert_pem, bundle_pem, crl_pem })
}
