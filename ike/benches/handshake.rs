//! Full IKEv2 handshakes per second between two in-memory endpoints, beside the crypto
//! bound of the same primitives measured in the same run.
//!
//! A handshake is `IKE_SA_INIT` and `IKE_AUTH` with the first child SA, both sides
//! checking the other's certificate against the mesh CA with the `ca` crate's verifier,
//! exactly as the daemon does. The crypto bound is what the public-key operations alone
//! allow: per side one key generation, one D-H agreement, one signature and two
//! verifications (the peer's AUTH payload and its certificate), so
//! `bound = 1 / (2 * (keygen + dh + sign + 2 * verify))`. The ratio says how much of a
//! handshake is protocol overhead (parsing, key derivation, AES-GCM, allocation).
//!
//! `cargo bench -p ike --bench handshake` (add `-- --smoke` for a quick run). A report,
//! not a test: nothing fails on a number.

#![allow(clippy::print_stdout)] // the report is the benchmark's output

mod common;

use common::{Node, OsRandom, handshake, mesh};
use ike::crypto::auth::Verifier;
use ike::crypto::dh::{Group, KeyPair};
use ike::proposal::Policy;
use ike::sa::Event;
use std::time::Instant;

#[derive(Clone, Copy)]
enum Suite {
    X25519Ed25519,
    P256Ecdsa,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::X25519Ed25519 => "X25519 + Ed25519",
            Suite::P256Ecdsa => "P-256 + ECDSA P-256",
        }
    }

    fn group(self) -> Group {
        match self {
            Suite::X25519Ed25519 => Group::Curve25519,
            Suite::P256Ecdsa => Group::Ecp256,
        }
    }

    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Suite::X25519Ed25519 => &rcgen::PKCS_ED25519,
            Suite::P256Ecdsa => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

/// One full handshake; panics unless both sides end up with the IKE SA and the child.
fn checked_handshake(a: &Node, b: &Node, rng: &mut OsRandom) {
    let (mut init, mut resp) = handshake(a, b, rng);
    for sa in [&mut init, &mut resp] {
        let mut up = (false, false);
        while let Some(e) = sa.poll_event() {
            match e {
                Event::IkeUp { .. } => up.0 = true,
                Event::ChildUp(_) => up.1 = true,
                other => panic!("handshake failed: {other:?}"),
            }
        }
        assert_eq!(up, (true, true), "IKE SA and child SA up");
    }
}

/// Seconds per call of `f`, over `n` calls.
fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(n)
}

fn run(suite: Suite, rounds: u32) {
    let mut rng = OsRandom;
    let (a, b) = mesh(suite.rcgen(), &Policy { groups: vec![suite.group()], ..Policy::default() });
    checked_handshake(&a, &b, &mut rng); // warm-up, and a check that it works at all

    let start = Instant::now();
    for _ in 0..rounds {
        checked_handshake(&a, &b, &mut rng);
    }
    let measured = start.elapsed();
    let per_second = f64::from(rounds) / measured.as_secs_f64();

    // The crypto bound, from the same primitives in the same process.
    let n = rounds.max(10);
    let group = suite.group();
    let peer = KeyPair::generate(group, &mut rng);
    let peer_public = peer.public().to_vec();
    let keygen = per_op(n, || {
        std::hint::black_box(KeyPair::generate(group, &mut rng));
    });
    let mine = KeyPair::generate(group, &mut rng);
    let dh = per_op(n, || {
        std::hint::black_box(mine.agree(&peer_public).unwrap());
    });
    let message = vec![0x5a; 700]; // about the size of the signed octets of IKE_AUTH
    let sign = per_op(n, || {
        std::hint::black_box(a.signer.sign(&message));
    });
    let signature = a.signer.sign(&message);
    let spki = x509_spki(&a.cert);
    let verifier: Box<dyn Verifier + Send + Sync> =
        ike::crypto::auth::verifier_from_spki(&spki).unwrap();
    let alg = a.signer.algorithm();
    let verify = per_op(n, || {
        assert!(verifier.verify(alg, std::hint::black_box(&message), &signature));
    });
    let side = keygen + dh + sign + 2.0 * verify;
    let bound = 1.0 / (2.0 * side);
    println!(
        "{:<20} {per_second:>8.0} handshakes/s  crypto bound {bound:>8.0}/s  ratio {:.2}   \
         ({rounds} handshakes in {:.2} s; per side: keygen {:.0} us, D-H {:.0} us, sign {:.0} us, \
         verify {:.0} us)",
        suite.name(),
        per_second / bound,
        measured.as_secs_f64(),
        keygen * 1e6,
        dh * 1e6,
        sign * 1e6,
        verify * 1e6,
    );
}

/// The `SubjectPublicKeyInfo` of a certificate, DER.
fn x509_spki(cert: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(cert).unwrap();
    c.tbs_certificate.subject_pki.raw.to_vec()
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let rounds = if smoke { 20 } else { 2000 };
    println!("ike handshake benchmark ({rounds} handshakes per suite, one core)");
    for suite in [Suite::X25519Ed25519, Suite::P256Ecdsa] {
        run(suite, rounds);
    }
}
