//! Signature throughput on one core, for choosing the provider behind `ike`'s AUTH
//! signatures: P-256 ECDSA with SHA-256 and RSA-PSS with SHA-256 (salt 32) on 2048- and
//! 3072-bit keys, each with RustCrypto (`p256`, `rsa`), *ring*, and aws-lc-rs (the
//! provider rustls 0.23 uses by default). For reference it also times the P-256 D-H of
//! group 19 (a key pair from a scalar, then the shared secret), which `crypto::dh` does
//! with `p256`.
//!
//! ```text
//! cargo bench -p ike --bench signatures              # about 1 s per measurement
//! cargo bench -p ike --bench signatures -- --smoke   # a few iterations each, for CI
//! ```
//!
//! Numbers are operations per second on a single thread. Before timing, every signature
//! made by each provider is checked by every other, so a fast path that does not
//! interoperate cannot pass unnoticed.

// A report on stdout; `rc_*`, `ring_*` and `lc_*` are the same thing for three providers.
#![allow(clippy::print_stdout, clippy::similar_names, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

/// About the size of the octets an AUTH payload signs (an `IKE_SA_INIT` message, a nonce
/// and a MAC).
const MESSAGE: &[u8] = &[0x5a; 600];

/// How long each measurement runs, or how many iterations in smoke mode.
#[derive(Clone, Copy)]
enum Budget {
    Time(Duration),
    Iterations(u32),
}

/// Operations per second of `op`.
fn rate(budget: Budget, mut op: impl FnMut()) -> f64 {
    op(); // warm up caches and lazily built tables
    let start = Instant::now();
    let mut n = 0u32;
    loop {
        op();
        n += 1;
        let done = match budget {
            Budget::Time(d) => start.elapsed() >= d,
            Budget::Iterations(i) => n >= i,
        };
        if done {
            break;
        }
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

struct Row {
    what: &'static str,
    provider: &'static str,
    /// Signs per second, or D-H operations per second.
    first: f64,
    /// Verifies per second (none for D-H).
    second: Option<f64>,
}

/// One provider's signing and verifying, for [`contest`].
type Contender<'a> = (&'static str, &'a dyn Fn() -> Vec<u8>, &'a dyn Fn(&[u8]) -> bool);

/// Checks that every provider verifies every other's signature, then times each one's
/// signing and its verifying of the same signature.
fn contest((what, budget, rows): (&'static str, Budget, &mut Vec<Row>), all: [Contender<'_>; 3]) {
    let sigs: Vec<Vec<u8>> = all.iter().map(|(_, sign, _)| sign()).collect();
    for sig in &sigs {
        assert!(all.iter().all(|(_, _, verify)| verify(sig)), "{what}: interop");
    }
    let sig = &sigs[0];
    for (provider, sign, verify) in all {
        rows.push(Row {
            what,
            provider,
            first: rate(budget, || drop(black_box(sign()))),
            second: Some(rate(budget, || assert!(verify(black_box(sig))))),
        });
    }
}

/// A fixed P-256 scalar and its public key (uncompressed SEC1), computed by `p256`.
fn p256_key() -> ([u8; 32], Vec<u8>) {
    let scalar = [0x2b; 32];
    let sk = p256::ecdsa::SigningKey::from_slice(&scalar).unwrap();
    (scalar, sk.verifying_key().to_sec1_bytes().to_vec())
}

fn ecdsa_p256(budget: Budget, rows: &mut Vec<Row>) {
    use aws_lc_rs::signature as lc;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use ring::signature as rg;

    let what = "P-256 ECDSA SHA-256";
    let (scalar, public) = p256_key();

    let rc_sk = p256::ecdsa::SigningKey::from_slice(&scalar).unwrap();
    let rc_vk = *rc_sk.verifying_key();
    let rng = ring::rand::SystemRandom::new();
    let ring_sk = rg::EcdsaKeyPair::from_private_key_and_public_key(
        &rg::ECDSA_P256_SHA256_ASN1_SIGNING,
        &scalar,
        &public,
        &rng,
    )
    .unwrap();
    let ring_vk = rg::UnparsedPublicKey::new(&rg::ECDSA_P256_SHA256_ASN1, &public);
    let lc_sk = lc::EcdsaKeyPair::from_private_key_and_public_key(
        &lc::ECDSA_P256_SHA256_ASN1_SIGNING,
        &scalar,
        &public,
    )
    .unwrap();
    let lc_rng = aws_lc_rs::rand::SystemRandom::new();
    // What `ike` uses: the key parsed once.
    let lc_vk = lc::ParsedPublicKey::new(&lc::ECDSA_P256_SHA256_ASN1, &public).unwrap();

    let rc_sign = || -> Vec<u8> {
        let sig: p256::ecdsa::Signature = rc_sk.sign(MESSAGE);
        sig.to_der().as_bytes().to_vec()
    };
    let ring_sign = || ring_sk.sign(&rng, MESSAGE).unwrap().as_ref().to_vec();
    let lc_sign = || lc_sk.sign(&lc_rng, MESSAGE).unwrap().as_ref().to_vec();
    let rc_verify = |sig: &[u8]| {
        p256::ecdsa::Signature::from_der(sig).is_ok_and(|sig| rc_vk.verify(MESSAGE, &sig).is_ok())
    };
    let ring_verify = |sig: &[u8]| ring_vk.verify(MESSAGE, sig).is_ok();
    let lc_verify = |sig: &[u8]| lc_vk.verify_sig(MESSAGE, sig).is_ok();

    contest(
        (what, budget, rows),
        [
            ("RustCrypto p256 0.14", &rc_sign, &rc_verify),
            ("ring 0.17", &ring_sign, &ring_verify),
            ("aws-lc-rs 1", &lc_sign, &lc_verify),
        ],
    );
}

fn rsa_pss(budget: Budget, size: aws_lc_rs::rsa::KeySize, rows: &mut Vec<Row>) {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::{self as lc, KeyPair as _};
    use ring::signature as rg;
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::signature::{Keypair as _, SignatureEncoding as _, Signer as _, Verifier as _};

    let what = match size {
        aws_lc_rs::rsa::KeySize::Rsa2048 => "RSA-2048 PSS SHA-256",
        _ => "RSA-3072 PSS SHA-256",
    };
    // ring cannot make RSA keys: aws-lc-rs makes one and hands it to the others as PKCS#8.
    let lc_sk = aws_lc_rs::rsa::KeyPair::generate(size).unwrap();
    let pkcs8 = lc_sk.as_der().unwrap();
    let pkcs8 = pkcs8.as_ref();
    let public = lc_sk.public_key().as_ref().to_vec(); // RSAPublicKey (PKCS#1)

    let rc_sk = rsa::pss::SigningKey::<sha2::Sha256>::new(
        rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).unwrap(),
    );
    let rc_vk = rc_sk.verifying_key();
    let ring_sk = rg::RsaKeyPair::from_pkcs8(pkcs8).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let ring_vk = rg::UnparsedPublicKey::new(&rg::RSA_PSS_2048_8192_SHA256, &public);
    let lc_rng = aws_lc_rs::rand::SystemRandom::new();
    let lc_vk = lc::ParsedPublicKey::new(&lc::RSA_PSS_2048_8192_SHA256, &public).unwrap();

    let rc_sign = || rc_sk.sign(MESSAGE).to_vec();
    let ring_sign = || {
        let mut sig = vec![0; ring_sk.public().modulus_len()];
        ring_sk.sign(&rg::RSA_PSS_SHA256, &rng, MESSAGE, &mut sig).unwrap();
        sig
    };
    let lc_sign = || {
        let mut sig = vec![0; lc_sk.public_modulus_len()];
        lc_sk.sign(&lc::RSA_PSS_SHA256, &lc_rng, MESSAGE, &mut sig).unwrap();
        sig
    };
    let rc_verify = |sig: &[u8]| {
        rsa::pss::Signature::try_from(sig).is_ok_and(|sig| rc_vk.verify(MESSAGE, &sig).is_ok())
    };
    let ring_verify = |sig: &[u8]| ring_vk.verify(MESSAGE, sig).is_ok();
    let lc_verify = |sig: &[u8]| lc_vk.verify_sig(MESSAGE, sig).is_ok();

    contest(
        (what, budget, rows),
        [
            ("RustCrypto rsa 0.10-rc", &rc_sign, &rc_verify),
            ("ring 0.17", &ring_sign, &ring_verify),
            ("aws-lc-rs 1", &lc_sign, &lc_verify),
        ],
    );
}

/// One side of a group 19 exchange: our key pair, then the secret with the peer's value.
fn ecdh_p256(budget: Budget, rows: &mut Vec<Row>) {
    use aws_lc_rs::agreement as lc;
    use ring::agreement as rg;

    let what = "P-256 ECDH (group 19)";
    let (scalar, peer) = p256_key();

    let rc = || {
        let secret = p256::SecretKey::from_slice(&scalar).unwrap();
        let public = secret.public_key().to_sec1_bytes();
        let peer = p256::PublicKey::from_sec1_bytes(&peer).unwrap();
        let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
        (public.to_vec(), shared.raw_secret_bytes().to_vec())
    };
    // ring only makes ephemeral keys from its own randomness (no key from given bytes).
    let rng = ring::rand::SystemRandom::new();
    let ring_peer = rg::UnparsedPublicKey::new(&rg::ECDH_P256, &peer);
    let ring = || {
        let private = rg::EphemeralPrivateKey::generate(&rg::ECDH_P256, &rng).unwrap();
        let public = private.compute_public_key().unwrap().as_ref().to_vec();
        let shared = rg::agree_ephemeral(private, &ring_peer, <[u8]>::to_vec).unwrap();
        (public, shared)
    };
    let lc = || {
        let private = lc::PrivateKey::from_private_key(&lc::ECDH_P256, &scalar).unwrap();
        let public = private.compute_public_key().unwrap().as_ref().to_vec();
        let peer = lc::UnparsedPublicKey::new(&lc::ECDH_P256, &peer);
        let shared = lc::agree(&private, peer, (), |s| Ok(s.to_vec())).unwrap();
        (public, shared)
    };
    let (rc_public, rc_shared) = rc();
    let (lc_public, lc_shared) = lc();
    assert!(rc_public == lc_public && rc_shared == lc_shared, "{what}: interop");
    assert_eq!(ring().1.len(), 32);
    rows.push(Row {
        what,
        provider: "RustCrypto p256 0.14",
        first: rate(budget, || drop(black_box(rc()))),
        second: None,
    });
    rows.push(Row {
        what,
        provider: "ring 0.17",
        first: rate(budget, || drop(black_box(ring()))),
        second: None,
    });
    rows.push(Row {
        what,
        provider: "aws-lc-rs 1",
        first: rate(budget, || drop(black_box(lc()))),
        second: None,
    });
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let budget = if smoke { Budget::Iterations(2) } else { Budget::Time(Duration::from_secs(1)) };
    let mut rows = Vec::new();
    ecdsa_p256(budget, &mut rows);
    rsa_pss(budget, aws_lc_rs::rsa::KeySize::Rsa2048, &mut rows);
    rsa_pss(budget, aws_lc_rs::rsa::KeySize::Rsa3072, &mut rows);
    ecdh_p256(budget, &mut rows);
    println!("one core; signs/s and verifies/s (for D-H: key pair + shared secret per second)");
    println!("{:<22} {:<24} {:>12} {:>12}", "algorithm", "provider", "signs/s", "verifies/s");
    for r in &rows {
        let second = r.second.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        println!("{:<22} {:<24} {:>12.0} {:>12}", r.what, r.provider, r.first, second);
    }
    if smoke {
        println!("(smoke run: two iterations each; the numbers mean nothing)");
    }
}
