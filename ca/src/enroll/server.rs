//! The enrollment service: accepts TLS connections, answers one request on each.

use super::EnrollError;
use super::proto::{FrameError, MAX_REQUEST, RequestIn, Response, read_frame, write_frame};
use super::tls::{self, NodeCertVerifier, Reason};
use super::token::{JoinToken, TokenStore};
use crate::Issuer;
use crate::keys;
use crate::x509;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

/// How long a client has for the TLS handshake and its request, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once, by default; more wait in the kernel's backlog.
const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The service's certificate chain (issued by the mesh CA for the service's name, leaf
/// first) and its private key.
pub struct ServiceCredentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ServiceCredentials {
    /// From PEM: `CERTIFICATE` blocks (leaf first) and a PKCS#8, SEC1 or PKCS#1 key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, EnrollError> {
        let chain = keys::cert_chain_from_pem(chain_pem)
            .map_err(|e| EnrollError::Credentials { detail: e.to_string() })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| EnrollError::Credentials { detail: format!("private key: {e}") })?;
        Ok(ServiceCredentials { chain: chain.into_iter().map(CertificateDer::from).collect(), key })
    }

    /// From DER: the chain, leaf first, and a PKCS#8 key.
    pub fn from_der(chain: Vec<Vec<u8>>, pkcs8_key: &[u8]) -> Self {
        ServiceCredentials {
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key: PrivateKeyDer::Pkcs8(pkcs8_key.to_vec().into()),
        }
    }
}

/// The enrollment service, ready to [`bind`](Service::bind).
pub struct Service {
    inner: Inner,
}

struct Inner {
    certified: Arc<CertifiedKey>,
    provider: Arc<CryptoProvider>,
    tokens: Arc<TokenStore>,
    issuer: Arc<dyn Issuer>,
    timeout: Duration,
    max_connections: usize,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("tokens", &self.inner.tokens)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service that presents `credentials` (followed by the CA certificates of the
    /// issuer's bundle it does not already hold), redeems tokens of `tokens` and issues
    /// with `issuer`. Make a new one after a CA rotation.
    pub fn new(
        credentials: ServiceCredentials,
        tokens: Arc<TokenStore>,
        issuer: Arc<dyn Issuer>,
    ) -> Result<Self, EnrollError> {
        let provider = tls::provider();
        let mut chain = credentials.chain;
        if chain.is_empty() {
            return Err(EnrollError::Credentials { detail: "no certificate".into() });
        }
        let bundle = issuer
            .bundle_pem()
            .map_err(|e| EnrollError::Service { detail: format!("trust bundle: {e}") })?;
        let cas = x509::der_blocks(bundle.as_bytes(), "CERTIFICATE")
            .map_err(|e| EnrollError::Service { detail: format!("trust bundle: {e}") })?;
        for ca in cas {
            if !chain.iter().any(|c| c.as_ref() == ca.as_slice()) {
                chain.push(ca.into());
            }
        }
        let certified = CertifiedKey::from_der(chain, credentials.key, &provider)
            .map_err(|e| EnrollError::Credentials { detail: e.to_string() })?;
        Ok(Service {
            inner: Inner {
                certified: Arc::new(certified),
                provider,
                tokens,
                issuer,
                timeout: DEFAULT_TIMEOUT,
                max_connections: DEFAULT_MAX_CONNECTIONS,
            },
        })
    }

    /// How long a client has for its handshake and request (default 10 s), and then
    /// for reading the response.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout = timeout;
        self
    }

    /// How many connections are served at once (default 256).
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.inner.max_connections = max.max(1);
        self
    }

    /// Listens on `addr`.
    pub async fn bind(self, addr: SocketAddr) -> Result<Listener, EnrollError> {
        let tcp =
            TcpListener::bind(addr).await.map_err(|source| EnrollError::Bind { addr, source })?;
        let local = tcp.local_addr().map_err(|source| EnrollError::Bind { addr, source })?;
        let slots = Arc::new(Semaphore::new(self.inner.max_connections));
        tracing::info!(target: "ca::enroll", addr = %local, "enrollment service listening");
        Ok(Listener { tcp, local, inner: Arc::new(self.inner), slots })
    }
}

/// A bound service; [`run`](Listener::run) serves it.
pub struct Listener {
    tcp: TcpListener,
    local: SocketAddr,
    inner: Arc<Inner>,
    slots: Arc<Semaphore>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Listener {
    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves connections until the future is dropped (or its task aborted); each
    /// connection runs in its own task.
    pub async fn run(self) {
        loop {
            let Ok(permit) = self.slots.clone().acquire_owned().await else { return };
            match self.tcp.accept().await {
                Ok((stream, peer)) => {
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        serve(&inner, stream, peer).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(target: "ca::enroll", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// What was done for a request.
struct Done {
    name: String,
    serial: String,
    token: Option<String>,
}

/// One connection: handshake, request, response, one log line.
async fn serve(inner: &Inner, stream: TcpStream, peer: SocketAddr) {
    let (op, outcome) = answer_connection(inner, stream).await;
    match outcome {
        Ok(done) => tracing::info!(
            target: "ca::enroll",
            %peer,
            op,
            name = %done.name,
            serial = %done.serial,
            token = done.token.as_deref().unwrap_or("-"),
            "certificate issued"
        ),
        Err(error) => tracing::warn!(target: "ca::enroll", %peer, op, %error, "refused"),
    }
}

async fn answer_connection(
    inner: &Inner,
    stream: TcpStream,
) -> (&'static str, Result<Done, String>) {
    let reason = Reason::default();
    let config = rustls::ServerConfig::builder_with_provider(inner.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map(|b| {
            b.with_client_cert_verifier(Arc::new(NodeCertVerifier::new(
                inner.issuer.clone(),
                inner.provider.clone(),
                reason.clone(),
            )))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(inner.certified.clone())))
        });
    let mut config = match config {
        Ok(config) => config,
        Err(e) => return ("handshake", Err(format!("TLS configuration: {e}"))),
    };
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    let deadline = Instant::now() + inner.timeout;
    let mut tls =
        match timeout_at(deadline, TlsAcceptor::from(Arc::new(config)).accept(stream)).await {
            Err(_) => return ("handshake", Err("TLS handshake timed out".into())),
            Ok(Err(e)) => {
                let why = reason.take().unwrap_or_else(|| format!("TLS handshake failed: {e}"));
                return ("handshake", Err(why));
            }
            Ok(Ok(tls)) => tls,
        };
    let (op, result) = match timeout_at(deadline, read_frame(&mut tls, MAX_REQUEST)).await {
        Err(_) => ("request", Err("no complete request before the timeout".to_string())),
        Ok(Err(FrameError::TooLarge(n))) => (
            "request",
            Err(format!("request of {n} bytes refused: the limit is {MAX_REQUEST} bytes")),
        ),
        Ok(Err(FrameError::Io(e))) => ("request", Err(format!("request not read: {e}"))),
        Ok(Ok(body)) => answer(inner, &tls, &body).await,
    };
    let response = match &result {
        Ok((response, _)) => response,
        Err(message) => &Response::error(message.clone()),
    };
    let body = serde_json::to_vec(response).unwrap_or_default();
    let written = tokio::time::timeout(inner.timeout, async {
        write_frame(&mut tls, &body).await?;
        tls.shutdown().await
    })
    .await;
    let result = result.map(|(_, done)| done);
    match (result, written) {
        (Ok(done), Ok(Ok(()))) => (op, Ok(done)),
        // Issued, but the node did not get it: it renews or asks for a new token.
        (Ok(done), Err(_) | Ok(Err(_))) => (
            op,
            Err(format!("issued serial {} for '{}' but could not send it", done.serial, done.name)),
        ),
        (Err(e), _) => (op, Err(e)),
    }
}

/// Answers one request.
async fn answer(
    inner: &Inner,
    tls: &TlsStream<TcpStream>,
    body: &[u8],
) -> (&'static str, Result<(Response, Done), String>) {
    let request: RequestIn = match serde_json::from_slice(body) {
        Ok(request) => request,
        // serde's message could quote the request (and so a token): say only where.
        Err(e) => {
            return (
                "request",
                Err(format!(
                    "not an enroll or renew request ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                )),
            );
        }
    };
    match request {
        RequestIn::Enroll { token, csr } => {
            let token = Zeroizing::new(token);
            ("enroll", enroll(inner, &token, &csr).await)
        }
        RequestIn::Renew { csr } => ("renew", renew(inner, tls, &csr).await),
    }
}

async fn enroll(inner: &Inner, token: &str, csr: &str) -> Result<(Response, Done), String> {
    let token = JoinToken::parse(token).map_err(|e| e.to_string())?;
    // Check the CSR before the token is spent on it.
    let csr = check_csr(csr)?;
    let tokens = inner.tokens.clone();
    let redeemed = tokio::task::spawn_blocking(move || tokens.redeem(&token))
        .await
        .map_err(|e| format!("internal error: {e}"))?
        .map_err(|e| e.to_string())?;
    let (response, mut done) = issue(inner, redeemed.name, csr).await?;
    done.token = Some(redeemed.id);
    Ok((response, done))
}

async fn renew(
    inner: &Inner,
    tls: &TlsStream<TcpStream>,
    csr: &str,
) -> Result<(Response, Done), String> {
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or(
        "renew needs the node's current certificate (mutual TLS); a new node enrolls with a \
         join token",
    )?;
    // The handshake verified this certificate; it names the node.
    let id = keys::ike_id(leaf).map_err(|e| e.to_string())?;
    let name = String::from_utf8(id.data).map_err(|_| "certificate name is not UTF-8")?;
    let csr = check_csr(csr)?;
    issue(inner, name, csr).await
}

/// Decodes a CSR and checks it parses and is signed by its key.
fn check_csr(csr: &str) -> Result<Vec<u8>, String> {
    let der = STANDARD
        .decode(csr)
        .map_err(|_| "bad certificate request: csr is not base64 (standard, padded)")?;
    rcgen::CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
        der.as_slice(),
    ))
    .map_err(|e| format!("bad certificate request: {e}"))?;
    Ok(der)
}

/// Issues for `name` and gathers the answer, off the async threads (the CA writes files).
async fn issue(inner: &Inner, name: String, csr: Vec<u8>) -> Result<(Response, Done), String> {
    let ca = inner.issuer.clone();
    tokio::task::spawn_blocking(move || {
        let issued = ca.issue(&name, &csr).map_err(|e| e.to_string())?;
        let done = Done { name, serial: issued.serial, token: None };
        let bundle = ca.bundle_pem();
        let crl = ca.crl_pem();
        match (bundle, crl) {
            (Ok(bundle_pem), Ok(crl_pem)) => Ok((
                Response {
                    cert_pem: Some(issued.cert_pem),
                    bundle_pem: Some(bundle_pem),
                    crl_pem: Some(crl_pem),
                    error: None,
                },
                done,
            )),
            (Err(e), _) | (_, Err(e)) => Err(format!(
                "issued serial {} for '{}' but cannot send the bundle or CRL: {e}",
                done.serial, done.name
            )),
        }
    })
    .await
    .map_err(|e| format!("internal error: {e}"))?
}
