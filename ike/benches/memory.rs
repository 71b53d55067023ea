//! Heap memory per established IKE SA, responder side, as the daemon would hold it: a
//! counting allocator measures what `N` responder SAs (each with its child SA, after a
//! full handshake with certificates) keep alive once the initiators are gone.
//!
//! `cargo bench -p ike --bench memory` (`-- --smoke` for a quick run). The target is at
//! most 4 KiB per IKE SA (`../shared/notes/targets.md`; charon keeps 18.6 KB with
//! Ed25519 and 22.4 KB with P-256 on these machines). A report, not a test.

#![allow(clippy::print_stdout)] // the report is the benchmark's output

use ca::keys::PrivateKey;
use ca::verify::{CertVerifier, PeerId, TrustBundle};
use ike::crypto::Random;
use ike::crypto::auth::SigAlg;
use ike::proposal::Policy;
use ike::sa::{Config, IkeSa, Retransmit};
use ike::wire::id::{IdRepr, IdType};
use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;
use std::sync::Arc;
use std::time::Instant;

/// The system allocator, instrumented (`stats_alloc`: no `unsafe` here).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn in_use() -> isize {
    let s = GLOBAL.stats();
    isize::try_from(s.bytes_allocated).unwrap_or(isize::MAX)
        - isize::try_from(s.bytes_deallocated).unwrap_or(isize::MAX)
        + s.bytes_reallocated
}

struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::fill(out).expect("the OS has randomness");
    }
}

fn configs(alg: &'static rcgen::SignatureAlgorithm) -> (Arc<Config>, Arc<Config>) {
    let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "memory bench CA");
    ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let node = |name: &str, local: &str, remote: &str| {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &issuer).unwrap().der().to_vec();
        let bundle = TrustBundle::from_der(&[ca_cert.der().to_vec()]).unwrap();
        Arc::new(Config {
            policy: Policy::default(),
            local_id: IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() },
            certs: vec![cert],
            signer: PrivateKey::from_pkcs8_der(&key.serialize_der()).unwrap().signer(),
            authenticator: Arc::new(CertVerifier::new(bundle).with_members(|_: &PeerId| true)),
            signature_algorithms: SigAlg::ALL.to_vec(),
            retransmit: Retransmit::default(),
            local_addr: local.parse().unwrap(),
            remote_addr: remote.parse().unwrap(),
        })
    };
    (node("a.mesh", "10.0.0.1", "10.0.0.2"), node("b.mesh", "10.0.0.2", "10.0.0.1"))
}

fn established_responder(a: &Arc<Config>, b: &Arc<Config>, rng: &mut OsRandom) -> IkeSa {
    let now = Instant::now();
    let mut init = IkeSa::initiate(a.clone(), now, rng);
    let first = init.poll_transmit().unwrap();
    let mut resp = IkeSa::respond(b.clone(), &first, rng).0.unwrap();
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
            break;
        }
    }
    assert!(resp.is_established());
    while resp.poll_event().is_some() {}
    while resp.poll_transmit().is_some() {}
    resp
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let n = if smoke { 50 } else { 5000 };
    let mut rng = OsRandom;
    println!("ike memory per responder IKE SA ({n} SAs, each with one child SA)");
    for (name, alg) in
        [("Ed25519", &rcgen::PKCS_ED25519), ("P-256", &rcgen::PKCS_ECDSA_P256_SHA256)]
    {
        let (a, b) = configs(alg);
        let _warm = established_responder(&a, &b, &mut rng);
        let before = in_use();
        let mut kept = Vec::with_capacity(n); // counted: the SA values themselves
        for _ in 0..n {
            kept.push(established_responder(&a, &b, &mut rng));
        }
        let after = in_use();
        let per_sa = (after - before) / isize::try_from(n).unwrap_or(isize::MAX);
        println!(
            "{name:<8} {per_sa:>7.0} bytes per IKE SA (target <= 4096; charon {} bytes)",
            if name == "Ed25519" { "18,600" } else { "22,400" }
        );
        drop(kept);
    }
}
