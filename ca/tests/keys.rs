//! Loading our own key, certificate chain and IKE ID.

mod common;

use ca::keys::{self, KeyError, PrivateKey};
use common::{Alg, Ca, RSA_CA_KEY, RSA_NODE_KEY};
use ike::crypto::auth::{Ed25519Signer, SigAlg, Signer as _};
use ike::wire::id::IdType;
use std::os::unix::fs::PermissionsExt as _;

#[test]
fn pkcs8_keys_load_sign_and_match_their_certificates() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    for (alg, sig) in [(Alg::Ed25519, SigAlg::Ed25519), (Alg::P256, SigAlg::EcdsaP256Sha256)] {
        let node = ca.node(&["a.mesh"], alg);
        let key = PrivateKey::from_pem(node.key.serialize_pem().as_bytes()).unwrap();
        assert_eq!(key.algorithm(), sig);
        assert_eq!(key.signer().algorithm(), sig);
        key.check_matches(&node.der).unwrap();
        let other = ca.node(&["b.mesh"], alg);
        assert!(matches!(key.check_matches(&other.der), Err(KeyError::KeyMismatch { .. })));
        assert!(matches!(key.check_matches(b"junk"), Err(KeyError::BadCertificate { .. })));
    }
}

#[test]
fn rsa_keys_load_and_sign_pss() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = ca.node(&["a.mesh"], Alg::Rsa);
    let key = PrivateKey::from_pem(RSA_NODE_KEY.as_bytes()).unwrap();
    assert_eq!(key.algorithm(), SigAlg::RsaPssSha256);
    key.check_matches(&node.der).unwrap();
    let other = PrivateKey::from_pem(RSA_CA_KEY.as_bytes()).unwrap();
    assert!(matches!(other.check_matches(&node.der), Err(KeyError::KeyMismatch { .. })));
    assert_eq!(format!("{key:?}"), "PrivateKey { algorithm: RsaPssSha256, .. }");
    // Under 2048 bits: refused, saying so.
    let weak = include_str!("data/rsa1024-weak.key");
    let err = PrivateKey::from_pem(weak.as_bytes()).unwrap_err();
    assert!(matches!(err, KeyError::BadKey { .. }) && err.to_string().contains("1024"), "{err}");
}

#[test]
fn an_openssl_style_v1_ed25519_key_signs_like_its_seed() {
    let seed = [7u8; 32];
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    let key = PrivateKey::from_pkcs8_der(&der).unwrap();
    assert_eq!(key.signer().sign(b"m"), Ed25519Signer::from_seed(&seed).sign(b"m"));
    // Debug shows the algorithm only.
    assert_eq!(format!("{key:?}"), "PrivateKey { algorithm: Ed25519, .. }");
}

#[test]
fn key_files_must_be_private() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = ca.node(&["a.mesh"], Alg::P256);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    std::fs::write(&path, node.key.serialize_pem()).unwrap();
    for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o644, false), (0o604, false)]
    {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        match PrivateKey::load(&path) {
            Ok(key) => {
                assert!(ok, "mode {mode:o} accepted");
                key.check_matches(&node.der).unwrap();
            }
            Err(KeyError::TooOpen { mode: m, .. }) => {
                assert!(!ok, "mode {mode:o} refused");
                assert_eq!(m, mode);
                let msg = PrivateKey::load(&path).unwrap_err().to_string();
                assert!(msg.contains("chmod 600") && msg.contains("looser than 0600"), "{msg}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(matches!(PrivateKey::load(&dir.path().join("none")), Err(KeyError::Io { .. })));
}

/// A test-only P-256 key in SEC1 form, from `openssl ecparam -name prime256v1 -genkey`.
const SEC1_P256: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIPujUXiG3d4UqJjTxeXspzIl6/mtX5g9tf/+SRTN7njEoAoGCCqGSM49
AwEHoUQDQgAEDzQWP2XQdhu7shbaQ++WBxkOJSA/8oyf3+VHcdgMZmeM4ZXhYHFf
HTYE18mWFMsPgYFOv00bgm54h5n3h7nAHQ==
-----END EC PRIVATE KEY-----
";

/// Its public key, from `openssl ec -pubout`.
const SEC1_P256_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEDzQWP2XQdhu7shbaQ++WBxkOJSA/
8oyf3+VHcdgMZmeM4ZXhYHFfHTYE18mWFMsPgYFOv00bgm54h5n3h7nAHQ==
-----END PUBLIC KEY-----
";

/// The same form on P-384, which we do not sign with.
const SEC1_P384: &str = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDC6A7RXf53nted68qp2lusdi9Qy/AqsrGPliJzkfdZGVWiWs/jSo3q3
CWo6hlrxEdugBwYFK4EEACKhZANiAAShJwHd/6hL5FGMy5OlaTVLPiXygAK9YaWF
F9tLnbtNt+VfIUCcj0lB1RGPccX8Cyoqy1R1Vbfz6mfm7uNkWe/bT754rs6tSmLW
/3Ov6+3odCuApYi03laTzKBn3nJ2/5g=
-----END EC PRIVATE KEY-----
";

#[test]
fn sec1_p256_keys_load_and_sign_for_their_public_key() {
    let key = PrivateKey::from_pem(SEC1_P256.as_bytes()).unwrap();
    assert_eq!(key.algorithm(), ike::crypto::auth::SigAlg::EcdsaP256Sha256);
    let mut buf = vec![0u8; SEC1_P256_SPKI.len()];
    let (_, spki) = pem_rfc7468::decode(SEC1_P256_SPKI.as_bytes(), &mut buf).unwrap();
    let verifier = ike::crypto::auth::verifier_from_spki(spki).unwrap();
    let sig = key.signer().sign(b"octets");
    assert!(verifier.verify(ike::crypto::auth::SigAlg::EcdsaP256Sha256, b"octets", &sig));
    let err = PrivateKey::from_pem(SEC1_P384.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, KeyError::UnsupportedAlgorithm { oid } if oid == "1.3.132.0.34"),
        "{err}"
    );
}

#[test]
fn other_key_formats_are_refused_with_the_way_out() {
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n";
    let err = PrivateKey::from_pem(sec1.as_bytes()).unwrap_err();
    assert!(matches!(err, KeyError::BadKey { .. }), "{err}");
    let dsa = "-----BEGIN DSA PRIVATE KEY-----\nMAA=\n-----END DSA PRIVATE KEY-----\n";
    let err = PrivateKey::from_pem(dsa.as_bytes()).unwrap_err();
    assert!(matches!(err, KeyError::BadPem { .. }), "{err}");
    assert!(err.to_string().contains("expected PRIVATE KEY"), "{err}");
    assert!(matches!(PrivateKey::from_pem(b"not pem"), Err(KeyError::BadPem { .. })));
    let junk = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
    assert!(matches!(PrivateKey::from_pem(junk.as_bytes()), Err(KeyError::BadKey { .. })));
    // An X25519 key: PKCS#8 all right, but not a signing algorithm we have.
    let mut x25519 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04,
        0x20,
    ];
    x25519.extend_from_slice(&[1; 32]);
    let err = PrivateKey::from_pkcs8_der(&x25519).unwrap_err();
    assert!(
        matches!(&err, KeyError::UnsupportedAlgorithm { oid } if oid == "1.3.101.110"),
        "{err}"
    );
}

#[test]
fn certificate_chains_load_leaf_first() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    let pem = format!("{}{}", node.pem, ca.pem);
    assert_eq!(keys::cert_chain_from_pem(pem.as_bytes()).unwrap(), [node.der.clone(), ca.der]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.pem");
    std::fs::write(&path, &node.pem).unwrap();
    assert_eq!(keys::load_cert_chain(&path).unwrap(), node.chain());
    assert!(matches!(keys::cert_chain_from_pem(b""), Err(KeyError::NoCertificate)));
    assert!(matches!(keys::cert_chain_from_pem(&node.der), Err(KeyError::NoCertificate)));
    let bad = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        keys::cert_chain_from_pem(bad.as_bytes()),
        Err(KeyError::BadCertificate { index: 0, .. })
    ));
}

#[test]
fn our_ike_id_is_the_first_dns_name() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = ca.node(&["10.0.0.1", "Node-1.Mesh", "alias.mesh"], Alg::Ed25519);
    let id = keys::ike_id(&node.der).unwrap();
    assert_eq!((id.id_type, id.data.as_slice()), (IdType::Fqdn, &b"node-1.mesh"[..]));
    let ip_only = ca.node(&["10.0.0.1"], Alg::Ed25519);
    assert!(matches!(keys::ike_id(&ip_only.der), Err(KeyError::NoDnsName { .. })));
}
