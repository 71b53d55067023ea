//! What the `ike` benchmarks share: the OS's randomness, a two-node mesh with real
//! certificates (checked by `ca`'s verifier, as the daemon does), and one handshake.

#![allow(dead_code)] // each benchmark uses its own part of it

use ca::keys::PrivateKey;
use ca::verify::{CertVerifier, PeerId, TrustBundle};
use ike::crypto::Random;
use ike::crypto::auth::{SigAlg, Signer};
use ike::proposal::Policy;
use ike::sa::{Config, IkeSa, Retransmit};
use ike::wire::id::{IdRepr, IdType};
use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose};
use std::sync::Arc;
use std::time::Instant;

/// The operating system's randomness, as the daemon uses it.
pub(crate) struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::fill(out).expect("the OS has randomness");
    }
}

/// One node of the bench mesh.
pub(crate) struct Node {
    pub(crate) cfg: Arc<Config>,
    pub(crate) signer: Arc<dyn Signer + Send + Sync>,
    pub(crate) cert: Vec<u8>,
}

/// A CA with keys of `alg` and two nodes, `a.mesh` and `b.mesh`, each trusting the CA
/// and expecting the other, with `policy`.
pub(crate) fn mesh(alg: &'static rcgen::SignatureAlgorithm, policy: &Policy) -> (Node, Node) {
    let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "bench CA");
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let node = |name: &str, peer: &str, local: &str, remote: &str| {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &issuer).unwrap().der().to_vec();
        let signer = PrivateKey::from_pkcs8_der(&key.serialize_der()).unwrap().signer();
        let bundle = TrustBundle::from_der(&[ca_cert.der().to_vec()]).unwrap();
        let peer_id = PeerId::fqdn(peer);
        let verifier = CertVerifier::new(bundle).with_members(move |id: &PeerId| *id == peer_id);
        let cfg = Arc::new(Config {
            policy: policy.clone(),
            local_id: IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() },
            certs: vec![cert.clone()],
            signer: signer.clone(),
            authenticator: Arc::new(verifier),
            signature_algorithms: SigAlg::ALL.to_vec(),
            retransmit: Retransmit::default(),
            local_addr: local.parse().unwrap(),
            remote_addr: remote.parse().unwrap(),
        });
        Node { cfg, signer, cert }
    };
    (
        node("a.mesh", "b.mesh", "10.0.0.1", "10.0.0.2"),
        node("b.mesh", "a.mesh", "10.0.0.2", "10.0.0.1"),
    )
}

/// One full handshake (`IKE_SA_INIT`, `IKE_AUTH` with the first child) from `a` to
/// `b`, in memory: the initiator and the responder, their events not yet taken.
pub(crate) fn handshake(a: &Node, b: &Node, rng: &mut OsRandom) -> (IkeSa, IkeSa) {
    let now = Instant::now();
    let mut init = IkeSa::initiate(a.cfg.clone(), now, rng);
    let first = init.poll_transmit().unwrap();
    let mut resp = IkeSa::respond(b.cfg.clone(), &first, rng).0.expect("the responder accepts");
    loop {
        let mut moved = false;
        while let Some(d) = resp.poll_transmit() {
            init.handle(now, &d, rng);
            moved = true;
        }
        while let Some(d) = init.poll_transmit() {
            resp.handle(now, &d, rng);
            moved = true;
        }
        if !moved {
            return (init, resp);
        }
    }
}
