//! Enrollment over real TLS on 127.0.0.1: join tokens, the service, the node's side.

mod common;
#[path = "common/issuer.rs"]
mod issuer;

use ca::enroll::{
    CaPin, EnrollError, Enrolled, JoinToken, Service, ServiceCredentials, TokenError, TokenStore,
    enroll, renew,
};
use ca::keys::{cert_chain_from_pem, ike_id};
use ca::verify::TrustBundle;
use common::Alg;
use issuer::{TestIssuer, live_ca};
use rcgen::{CertificateParams, KeyPair, PKCS_ED25519};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The name the service's certificate certifies.
const SERVICE: &str = "enroll.mesh.test";

struct Harness {
    issuer: Arc<TestIssuer>,
    tokens: Arc<TokenStore>,
    addr: SocketAddr,
    pin: CaPin,
    /// Seconds added to the token store's clock.
    skew: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start() -> Harness {
    start_with(|s| s).await
}

async fn start_with(configure: impl FnOnce(Service) -> Service) -> Harness {
    let issuer = Arc::new(TestIssuer::new());
    let dir = tempfile::tempdir().unwrap();
    let skew = Arc::new(AtomicU64::new(0));
    let clock_skew = skew.clone();
    let tokens =
        Arc::new(TokenStore::open(&dir.path().join("tokens")).unwrap().with_clock(move || {
            SystemTime::now() + Duration::from_secs(clock_skew.load(Ordering::SeqCst))
        }));
    let leaf = issuer.service_leaf(SERVICE);
    let credentials =
        ServiceCredentials::from_pem(leaf.pem.as_bytes(), leaf.key.serialize_pem().as_bytes())
            .unwrap();
    let service = configure(Service::new(credentials, tokens.clone(), issuer.clone()).unwrap());
    let listener = service.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(listener.run());
    let pin = CaPin::of_cert_der(&issuer.ca.der).unwrap();
    Harness { issuer, tokens, addr, pin, skew, server, _dir: dir }
}

impl Harness {
    fn token(&self, name: &str) -> JoinToken {
        self.tokens.create(name, Duration::from_secs(600), self.pin).unwrap()
    }
}

/// A node key and a CSR asking for `name` (the CA decides the name anyway).
fn node(name: &str) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let csr = csr_of(&key, name);
    (key, csr)
}

fn csr_of(key: &KeyPair, name: &str) -> Vec<u8> {
    CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .der()
        .to_vec()
}

/// The name a PEM certificate certifies.
fn name_of(cert_pem: &str) -> String {
    let chain = cert_chain_from_pem(cert_pem.as_bytes()).unwrap();
    String::from_utf8(ike_id(&chain[0]).unwrap().data).unwrap()
}

fn refused(result: Result<Enrolled, EnrollError>) -> String {
    match result {
        Err(EnrollError::Refused { message }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_works_once_and_issues_for_its_name() {
    let h = start().await;
    let token = h.token("node-1.mesh.test");
    // The CSR asks for another name: the token's name wins.
    let (_key, csr) = node("someone-else");
    let enrolled = enroll(h.addr, SERVICE, &token, &csr).await.unwrap();
    assert_eq!(name_of(&enrolled.cert_pem), "node-1.mesh.test");
    assert_eq!(enrolled.bundle_pem, h.issuer.ca.pem);
    assert!(enrolled.crl_pem.contains("BEGIN X509 CRL"));
    assert_eq!(h.issuer.count(), 1);

    let (_key, csr) = node("node-1.mesh.test");
    let message = refused(enroll(h.addr, SERVICE, &token, &csr).await);
    assert!(message.contains("already used"), "{message}");
    assert_eq!(h.issuer.count(), 1);
    let listed = h.tokens.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].used.is_some());
}

#[tokio::test]
async fn expired_and_unknown_tokens_are_refused_with_their_own_errors() {
    let h = start().await;
    let token = h.tokens.create("node-2", Duration::from_secs(60), h.pin).unwrap();
    h.skew.store(61, Ordering::SeqCst);
    let (_key, csr) = node("node-2");
    let message = refused(enroll(h.addr, SERVICE, &token, &csr).await);
    assert!(message.contains("expired"), "{message}");

    // A token this store never made (its pin is right, its secret unknown).
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = TokenStore::open(other_dir.path()).unwrap().create(
        "node-2",
        Duration::from_secs(60),
        h.pin,
    );
    let message = refused(enroll(h.addr, SERVICE, &stranger.unwrap(), &csr).await);
    assert!(message.contains("unknown"), "{message}");

    // A bad CSR is refused before the token is looked up.
    let message = refused(
        enroll(h.addr, SERVICE, &JoinToken::parse(&forge_token(h.pin)).unwrap(), b"not a csr")
            .await,
    );
    assert!(message.contains("bad certificate request"), "{message}");
    assert_eq!(h.issuer.count(), 0);
}

/// A well-formed token with an all-zero secret.
fn forge_token(pin: CaPin) -> String {
    format!("ikm1.{}.{pin}", "A".repeat(43))
}

#[tokio::test]
async fn a_bad_csr_does_not_spend_the_token() {
    let h = start().await;
    let token = h.token("node-3");
    let message = refused(enroll(h.addr, SERVICE, &token, b"\x30\x03garbage").await);
    assert!(message.contains("bad certificate request"), "{message}");
    let (_key, csr) = node("node-3");
    enroll(h.addr, SERVICE, &token, &csr).await.unwrap();
}

#[tokio::test]
async fn the_client_refuses_a_service_that_does_not_match_the_pin_or_the_name() {
    let h = start().await;
    let other_ca = live_ca("another mesh", Alg::Ed25519);
    let wrong_pin = CaPin::of_cert_der(&other_ca.der).unwrap();
    let token = h.tokens.create("node-4", Duration::from_secs(600), wrong_pin).unwrap();
    let (_key, csr) = node("node-4");
    match enroll(h.addr, SERVICE, &token, &csr).await {
        Err(EnrollError::ServiceNotTrusted { detail, .. }) => {
            assert!(detail.contains("pin"), "{detail}");
        }
        other => panic!("expected distrust, got {other:?}"),
    }
    // Right pin, wrong service name.
    let secret = token.expose().split('.').nth(1).unwrap().to_string();
    let right = JoinToken::parse(&format!("ikm1.{secret}.{}", h.pin)).unwrap();
    match enroll(h.addr, "other.mesh.test", &right, &csr).await {
        Err(EnrollError::ServiceNotTrusted { detail, .. }) => {
            assert!(detail.contains("other.mesh.test"), "{detail}");
        }
        other => panic!("expected distrust, got {other:?}"),
    }
    // Neither attempt sent the secret: it still works with the right pin and name.
    let enrolled = enroll(h.addr, SERVICE, &right, &csr).await.unwrap();
    assert_eq!(name_of(&enrolled.cert_pem), "node-4");
}

#[tokio::test]
async fn renewal_over_mutual_tls_issues_for_the_certificate_s_name() {
    let h = start().await;
    let (key, csr) = node("node-5");
    let enrolled = enroll(h.addr, SERVICE, &h.token("node-5"), &csr).await.unwrap();
    let bundle = TrustBundle::from_pem(enrolled.bundle_pem.as_bytes()).unwrap();
    let chain = cert_chain_from_pem(enrolled.cert_pem.as_bytes()).unwrap();
    let new_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    // Asking for another name changes nothing.
    let renewed = renew(
        h.addr,
        SERVICE,
        &bundle,
        &chain,
        key.serialize_pem().as_bytes(),
        &csr_of(&new_key, "node-6"),
    )
    .await
    .unwrap();
    assert_eq!(name_of(&renewed.cert_pem), "node-5");
    assert_ne!(renewed.cert_pem, enrolled.cert_pem);
    assert_eq!(h.issuer.count(), 2);
}

#[tokio::test]
async fn renewal_with_a_revoked_or_expired_certificate_is_refused() {
    let h = start().await;
    let (key, csr) = node("node-7");
    let enrolled = enroll(h.addr, SERVICE, &h.token("node-7"), &csr).await.unwrap();
    let bundle = TrustBundle::from_pem(enrolled.bundle_pem.as_bytes()).unwrap();
    let chain = cert_chain_from_pem(enrolled.cert_pem.as_bytes()).unwrap();
    h.issuer.revoke("node-7");
    let key_pem = key.serialize_pem();
    let message = refused(renew(h.addr, SERVICE, &bundle, &chain, key_pem.as_bytes(), &csr).await);
    assert!(message.contains("CertificateRevoked"), "{message}");

    let expired = h.issuer.node_leaf("node-8", -3 * 86_400, -2 * 86_400);
    let message = refused(
        renew(
            h.addr,
            SERVICE,
            &bundle,
            &expired.chain(),
            expired.key.serialize_pem().as_bytes(),
            &csr_of(&expired.key, "node-8"),
        )
        .await,
    );
    assert!(message.contains("CertificateExpired"), "{message}");

    // A certificate of another CA.
    let other = live_ca("another mesh", Alg::Ed25519).node(&["node-9"], Alg::Ed25519);
    let message = refused(
        renew(
            h.addr,
            SERVICE,
            &bundle,
            &other.chain(),
            other.key.serialize_pem().as_bytes(),
            &csr_of(&other.key, "node-9"),
        )
        .await,
    );
    assert!(message.contains("UnknownCA") || message.contains("BadCertificate"), "{message}");
    assert_eq!(h.issuer.count(), 1);
}

/// A TLS client that trusts any server: for sending the service what real nodes never
/// send.
mod raw {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    #[derive(Debug)]
    struct AnyServer;

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    pub(super) async fn connect(addr: SocketAddr) -> TlsStream<TcpStream> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("enroll.mesh.test").unwrap(), tcp)
            .await
            .unwrap()
    }
}

/// Sends `frame` raw and reads the service's error answer.
async fn raw_answer(addr: SocketAddr, frame: &[u8]) -> String {
    let mut tls = raw::connect(addr).await;
    tls.write_all(frame).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(answer.len() > 4, "no answer");
    let value: serde_json::Value = serde_json::from_slice(&answer[4..]).unwrap();
    value["error"].as_str().unwrap().to_string()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

#[tokio::test]
async fn garbage_oversized_and_slow_requests_are_refused_and_the_service_stays_up() {
    let h = start_with(|s| s.with_timeout(Duration::from_millis(500))).await;
    // Over the 64 KiB limit: refused from the length alone.
    let error = raw_answer(h.addr, &(1u32 << 20).to_be_bytes()).await;
    assert!(error.contains("limit"), "{error}");
    // Not JSON; JSON of the wrong shape; renew without a client certificate.
    let error = raw_answer(h.addr, &framed(b"\x00\xffgarbage")).await;
    assert!(error.contains("not an enroll or renew request"), "{error}");
    let error = raw_answer(h.addr, &framed(br#"{"op":"steal","token":"x"}"#)).await;
    assert!(error.contains("not an enroll or renew request"), "{error}");
    let error = raw_answer(h.addr, &framed(br#"{"op":"renew","csr":"AAAA"}"#)).await;
    assert!(error.contains("mutual TLS"), "{error}");
    // A malformed token.
    let error =
        raw_answer(h.addr, &framed(br#"{"op":"enroll","token":"ikm1.x.y","csr":"AAAA"}"#)).await;
    assert!(error.contains("not a join token"), "{error}");
    // A request that never completes: the service gives up after its timeout.
    let mut slow = raw::connect(h.addr).await;
    slow.write_all(&[0, 0, 1]).await.unwrap();
    slow.flush().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the service kept a slow client");
    // Not TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut Vec::new())).await;
    // Still serving.
    let (_key, csr) = node("node-10");
    enroll(h.addr, SERVICE, &h.token("node-10"), &csr).await.unwrap();
    assert_eq!(h.issuer.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_enrollments_each_replayed_issue_exactly_fifty() {
    let h = start().await;
    let tokens: Vec<JoinToken> = (0..50).map(|i| h.token(&format!("node-{i}"))).collect();
    let mut tasks = Vec::new();
    for token in &tokens {
        for _ in 0..2 {
            let token = token.clone();
            let addr = h.addr;
            tasks.push(tokio::spawn(async move {
                let (_key, csr) = node("any");
                enroll(addr, SERVICE, &token, &csr).await
            }));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    let mut used = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(enrolled) => assert!(names.insert(name_of(&enrolled.cert_pem))),
            Err(EnrollError::Refused { message }) if message.contains("already used") => used += 1,
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    assert_eq!(names.len(), 50);
    assert_eq!(used, 50);
    assert_eq!(h.issuer.count(), 50);
}

// The token store on its own.

#[test]
fn tokens_have_the_documented_format_and_only_their_hash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let pin = CaPin::of_cert_der(&live_ca("pin", Alg::Ed25519).der).unwrap();
    let token = store.create("Node-1.Mesh.", Duration::from_secs(60), pin).unwrap();
    let fields: Vec<&str> = token.expose().split('.').collect();
    assert_eq!(fields.len(), 3);
    assert_eq!(fields[0], "ikm1");
    assert_eq!(fields[1].len(), 43);
    assert_eq!(fields[2], pin.to_string());
    assert_eq!(JoinToken::parse(token.expose()).unwrap().pin(), pin);
    assert!(!format!("{token:?}").contains(fields[1]));

    let state = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
    assert!(!state.contains(fields[1]), "the plain secret is stored");
    assert!(state.contains("node-1.mesh"), "{state}");
    let mode = std::fs::metadata(dir.path().join("tokens.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(store.redeem(&token).unwrap().name, "node-1.mesh");
    assert!(matches!(store.redeem(&token), Err(TokenError::AlreadyUsed { .. })));

    for bad in ["", "ikm1", "ikm2.x.y", "ikm1.short.00", &format!("ikm1.{}.zz", "A".repeat(43))] {
        assert!(matches!(JoinToken::parse(bad), Err(TokenError::Malformed { .. })), "{bad}");
    }
    for bad in ["", "-node", "no_de", "a..b", &"a".repeat(64)] {
        assert!(matches!(
            store.create(bad, Duration::from_secs(60), pin),
            Err(TokenError::BadName { .. })
        ));
    }
    assert!(matches!(store.create("n", Duration::ZERO, pin), Err(TokenError::BadTtl { .. })));
}

#[test]
fn one_of_many_concurrent_redeems_wins_across_store_instances() {
    let dir = tempfile::tempdir().unwrap();
    let pin = CaPin::of_spki(b"any key");
    let token =
        TokenStore::open(dir.path()).unwrap().create("node", Duration::from_secs(60), pin).unwrap();
    // Separate stores, as separate processes would have, on one directory.
    let wins: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let token = token.clone();
                let dir = dir.path();
                scope.spawn(move || TokenStore::open(dir).unwrap().redeem(&token).is_ok())
            })
            .collect();
        handles.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
    });
    assert_eq!(wins, 1);
}

#[test]
fn tokens_are_listed_and_removed_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::open(dir.path()).unwrap();
    let pin = CaPin::of_spki(b"any key");
    let a = store.create("a", Duration::from_secs(60), pin).unwrap();
    store.create("b", Duration::from_secs(60), pin).unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(store.remove(&listed[0].id).unwrap(), 1);
    assert!(matches!(store.redeem(&a), Err(TokenError::Unknown)));
    assert_eq!(store.list().unwrap().len(), 1);
}

#[tokio::test]
async fn enrollment_and_renewal_against_the_authority_on_disk() {
    use ca::authority::{generate_node_key, make_csr};
    use ca::{Algorithm, Authority, InitOptions, IssueOptions, Issuer as _};
    let dir = tempfile::tempdir().unwrap();
    let authority =
        Arc::new(Authority::init(&dir.path().join("ca"), &InitOptions::new("test mesh")).unwrap());
    let service_key = generate_node_key(Algorithm::EcdsaP256).unwrap();
    let service_csr = make_csr(SERVICE, service_key.pem()).unwrap();
    let service_cert =
        authority.issue_with(SERVICE, &service_csr, &IssueOptions::default()).unwrap();
    let credentials = ServiceCredentials::from_pem(
        service_cert.cert_pem.as_bytes(),
        service_key.pem().as_bytes(),
    )
    .unwrap();
    let tokens = Arc::new(TokenStore::open(&dir.path().join("tokens")).unwrap());
    let pin = CaPin::of_cert_pem(authority.bundle_pem().unwrap().as_bytes()).unwrap();
    let listener = Service::new(credentials, tokens.clone(), authority.clone())
        .unwrap()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(listener.run());

    let token = tokens.create("node-a", Duration::from_secs(600), pin).unwrap();
    let key = generate_node_key(Algorithm::Ed25519).unwrap();
    let csr = make_csr("node-a", key.pem()).unwrap();
    let enrolled = enroll(addr, SERVICE, &token, &csr).await.unwrap();
    assert_eq!(name_of(&enrolled.cert_pem), "node-a");
    let message = refused(enroll(addr, SERVICE, &token, &csr).await);
    assert!(message.contains("already used"), "{message}");

    let bundle = TrustBundle::from_pem(enrolled.bundle_pem.as_bytes()).unwrap();
    let chain = cert_chain_from_pem(enrolled.cert_pem.as_bytes()).unwrap();
    let new_key = generate_node_key(Algorithm::Ed25519).unwrap();
    let new_csr = make_csr("node-a", new_key.pem()).unwrap();
    let renewed =
        renew(addr, SERVICE, &bundle, &chain, key.pem().as_bytes(), &new_csr).await.unwrap();
    assert_eq!(name_of(&renewed.cert_pem), "node-a");

    authority.revoke_name("node-a").unwrap();
    let chain = cert_chain_from_pem(renewed.cert_pem.as_bytes()).unwrap();
    let again = make_csr("node-a", new_key.pem()).unwrap();
    let message =
        refused(renew(addr, SERVICE, &bundle, &chain, new_key.pem().as_bytes(), &again).await);
    assert!(message.contains("CertificateRevoked"), "{message}");
    server.abort();
}

#[test]
fn a_redeemed_token_stays_used_after_a_restart_even_if_nothing_was_issued() {
    // The service redeems (marks used, durably) before it asks the CA to issue: a crash
    // in between leaves the token spent, never reusable.
    let dir = tempfile::tempdir().unwrap();
    let pin = CaPin::of_spki(b"any key");
    let token = {
        let store = TokenStore::open(dir.path()).unwrap();
        let token = store.create("node", Duration::from_secs(60), pin).unwrap();
        store.redeem(&token).unwrap();
        token
    };
    let reopened = TokenStore::open(dir.path()).unwrap();
    assert!(matches!(reopened.redeem(&token), Err(TokenError::AlreadyUsed { .. })));
    assert!(!dir.path().join("tokens.json.tmp").exists());
}
