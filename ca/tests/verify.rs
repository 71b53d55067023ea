//! The certificate verifier against real certificates made by rcgen: what passes, and
//! one test per failure class.

mod common;

use ca::verify::{CrlError, key_hash_of};
use ca::{BundleError, CertError, CertVerifier, PeerId, Revocation, TrustBundle};
use common::{Alg, Ca, RSA_CA_KEY, ca_params, node_params, now, with_serial};
use ike::crypto::auth::SigAlg;
use ike::sa::PeerAuthenticator;
use ike::wire::id::{IdRepr, IdType};
use rcgen::{
    CustomExtension, DnType, DnValue, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
    PKCS_RSA_SHA384, SigningKey as _,
};
use std::collections::HashSet;
use std::time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

fn fqdn(name: &str) -> IdRepr {
    IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() }
}

fn verifier(bundle: &[&Ca]) -> CertVerifier {
    let ders: Vec<&[u8]> = bundle.iter().map(|c| c.der.as_slice()).collect();
    CertVerifier::new(TrustBundle::from_der(&ders).unwrap()).with_clock(now())
}

fn subject_der(cert: &[u8]) -> Vec<u8> {
    X509Certificate::from_der(cert).unwrap().1.subject().as_raw().to_vec()
}

#[test]
fn nodes_of_every_key_type_verify_and_their_key_checks_signatures() {
    for ca_alg in [Alg::Ed25519, Alg::P256] {
        let ca = Ca::new("mesh CA", ca_alg);
        let v = verifier(&[&ca]);
        for (alg, sig) in [(Alg::Ed25519, SigAlg::Ed25519), (Alg::P256, SigAlg::EcdsaP256Sha256)] {
            let node = ca.node(&["a.mesh"], alg);
            let ok = v.verify(&fqdn("a.mesh"), &node.chain()).unwrap();
            assert_eq!(ok.peer, PeerId::fqdn("a.mesh"));
            assert_eq!(ok.subject, "CN=a.mesh, O=ikemesh tests");
            assert_eq!(ok.ca, "CN=mesh CA, O=ikemesh tests");
            assert_eq!(ok.key_hash, key_hash_of(&node.der).unwrap());
            let signature = node.key.sign(b"signed octets").unwrap();
            assert!(ok.verifier.verify(sig, b"signed octets", &signature), "{ca_alg:?}/{alg:?}");
            assert!(!ok.verifier.verify(sig, b"other octets", &signature));
            // FQDNs compare without case and trailing dot.
            assert!(v.verify(&fqdn("A.Mesh."), &node.chain()).is_ok());
            // The trait the IKE layer calls.
            assert!(v.authenticate(&fqdn("a.mesh"), &node.chain()).is_ok());
        }
    }
}

#[test]
fn rsa_cas_and_nodes_verify() {
    for (ca_alg, alg) in [(Alg::Rsa, Alg::Rsa), (Alg::Rsa, Alg::Ed25519), (Alg::P256, Alg::Rsa)] {
        let ca = Ca::new("mesh CA", ca_alg);
        let node = ca.node(&["a.mesh"], alg);
        let ok = verifier(&[&ca]).verify(&fqdn("a.mesh"), &node.chain()).unwrap();
        if alg == Alg::Rsa {
            let signature = node.key.sign(b"signed octets").unwrap();
            assert!(ok.verifier.verify(SigAlg::RsaPkcs1Sha256, b"signed octets", &signature));
        }
    }
}

#[test]
fn algorithms_we_do_not_implement_are_named() {
    // An RSA CA that signs with SHA-384.
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(RSA_CA_KEY, &PKCS_RSA_SHA384).unwrap();
    let ca = Ca::with_key(ca_params("SHA-384 CA", None), key, None);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &node.chain()).unwrap_err();
    assert!(
        matches!(&err, CertError::UnsupportedAlgorithm { detail, .. } if detail.contains("1.2.840.113549.1.1.12")),
        "{err}"
    );
    assert!(err.to_string().starts_with("unsupported algorithm:"), "{err}");
    // A P-384 CA cannot be trusted, a P-384 node cannot be verified.
    let p384 = || KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let big = Ca::with_key(ca_params("P-384 CA", None), p384(), None);
    let err = TrustBundle::from_der(&[&big.der]).unwrap_err();
    assert!(matches!(err, BundleError::UnsupportedKey { .. }), "{err}");
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = node_params(&["a.mesh"]).signed_by(&p384(), &ca.issuer).unwrap();
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &[node.der().to_vec()]).unwrap_err();
    assert!(matches!(err, CertError::UnsupportedAlgorithm { .. }), "{err}");
}

#[test]
fn ip_and_dn_identities_match_ip_sans_and_the_subject() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let v = verifier(&[&ca]);
    let node = ca.node(&["a.mesh", "10.0.0.1", "fd00::1"], Alg::P256);
    let v4 = IdRepr { id_type: IdType::Ipv4Addr, data: vec![10, 0, 0, 1] };
    assert_eq!(v.verify(&v4, &node.chain()).unwrap().peer, PeerId::Ip([10, 0, 0, 1].into()));
    let v6 = IdRepr {
        id_type: IdType::Ipv6Addr,
        data: "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec(),
    };
    assert!(v.verify(&v6, &node.chain()).is_ok());
    let other = IdRepr { id_type: IdType::Ipv4Addr, data: vec![10, 0, 0, 2] };
    assert!(matches!(v.verify(&other, &node.chain()), Err(CertError::WrongIdentity { .. })));
    // The DN, as the certificate holds it.
    let dn = IdRepr { id_type: IdType::DerAsn1Dn, data: subject_der(&node.der) };
    let ok = v.verify(&dn, &node.chain()).unwrap();
    assert_eq!(ok.peer, PeerId::Dn("cn=a.mesh,o=ikemesh tests".into()));
    // The same DN in other string types, case and spacing: the same name.
    let mut p = node_params(&["x.mesh"]);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, DnValue::PrintableString("A.MESH".try_into().unwrap()));
    p.distinguished_name
        .push(DnType::OrganizationName, DnValue::Utf8String("  IKEmesh   Tests ".into()));
    let spelled =
        IdRepr { id_type: IdType::DerAsn1Dn, data: subject_der(&ca.issue(&p, Alg::P256).der) };
    assert!(v.verify(&spelled, &node.chain()).is_ok());
    // A different DN.
    let b = ca.node(&["b.mesh"], Alg::P256);
    let b_dn = IdRepr { id_type: IdType::DerAsn1Dn, data: subject_der(&b.der) };
    let err = v.verify(&b_dn, &node.chain()).unwrap_err();
    assert!(matches!(err, CertError::WrongIdentity { .. }), "{err}");
    assert!(err.to_string().starts_with("wrong identity:"), "{err}");
}

#[test]
fn no_certificate() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &[]).unwrap_err();
    assert_eq!(err, CertError::NoCertificate);
    assert!(err.to_string().starts_with("no certificate:"));
}

#[test]
fn truncated_garbage_and_padded_der_is_malformed() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let v = verifier(&[&ca]);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    for len in 0..node.der.len() {
        let err = v.verify(&fqdn("a.mesh"), &[node.der[..len].to_vec()]).unwrap_err();
        assert!(matches!(err, CertError::Malformed { index: 0, .. }), "length {len}: {err}");
    }
    for garbage in [vec![0xff; 40], b"-----BEGIN CERTIFICATE-----".to_vec(), vec![0x30, 0x00]] {
        let err = v.verify(&fqdn("a.mesh"), &[garbage]).unwrap_err();
        assert!(matches!(err, CertError::Malformed { index: 0, .. }), "{err}");
        assert!(err.to_string().starts_with("malformed certificate:"), "{err}");
    }
    let mut padded = node.der.clone();
    padded.push(0);
    assert!(matches!(
        v.verify(&fqdn("a.mesh"), &[padded]),
        Err(CertError::Malformed { index: 0, .. })
    ));
    // Two keyUsage extensions: which one counts?
    let mut p = node_params(&["a.mesh"]);
    p.custom_extensions
        .push(CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![3, 2, 7, 0x80]));
    let twice = ca.issue(&p, Alg::Ed25519);
    let err = v.verify(&fqdn("a.mesh"), &twice.chain()).unwrap_err();
    assert!(matches!(err, CertError::Malformed { index: 0, .. }), "{err}");
    // A bad intermediate is named by its index.
    let err = v.verify(&fqdn("a.mesh"), &[node.der.clone(), vec![0x30, 0x01, 0x00]]).unwrap_err();
    assert!(matches!(err, CertError::Malformed { index: 1, .. }), "{err}");
}

#[test]
fn expired_and_not_yet_valid_with_the_clock_skew_allowance() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let mut p = node_params(&["a.mesh"]);
    p.not_before = rcgen::date_time_ymd(2030, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 6, 1); // now is 12:00 that day
    let expired = ca.issue(&p, Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &expired.chain()).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
    assert!(err.to_string().starts_with("certificate expired:"), "{err}");
    assert!(err.to_string().contains("Jun  1 00:00:00 2030"), "{err}");

    let mut p = node_params(&["a.mesh"]);
    p.not_before = rcgen::date_time_ymd(2030, 6, 2);
    let future = ca.issue(&p, Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &future.chain()).unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");
    assert!(err.to_string().starts_with("certificate not yet valid:"), "{err}");

    // Valid from midnight: a clock 4 minutes slow passes with the default 5 minutes of
    // allowance, 6 minutes slow does not, nor 4 with no allowance.
    let midnight = now() - Duration::from_secs(12 * 3600);
    let mut p = node_params(&["a.mesh"]);
    p.not_before = rcgen::date_time_ymd(2030, 6, 1);
    let fresh = ca.issue(&p, Alg::Ed25519);
    let at = |offset: Duration, skew: Option<Duration>| {
        let v = verifier(&[&ca]).with_clock(midnight - offset);
        let v = match skew {
            Some(s) => v.with_clock_skew(s),
            None => v,
        };
        v.verify(&fqdn("a.mesh"), &fresh.chain()).map(|_| ())
    };
    assert!(at(Duration::from_secs(240), None).is_ok());
    assert!(matches!(at(Duration::from_secs(360), None), Err(CertError::NotYetValid { .. })));
    assert!(matches!(
        at(Duration::from_secs(240), Some(Duration::ZERO)),
        Err(CertError::NotYetValid { .. })
    ));
    // And the end: 4 minutes after notAfter still passes, 6 do not.
    let end = now() + Duration::from_secs(29 * 24 * 3600 + 12 * 3600); // 2030-07-01 00:00
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    let v = |t| verifier(&[&ca]).with_clock(t).verify(&fqdn("a.mesh"), &node.chain());
    assert!(v(end + Duration::from_secs(240)).is_ok());
    assert!(matches!(v(end + Duration::from_secs(360)), Err(CertError::Expired { .. })));
}

#[test]
fn an_expired_ca_fails_its_nodes() {
    let mut p = ca_params("old CA", None);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let ca = Ca::from_params(p, Alg::Ed25519, None);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &[node.der]).unwrap_err();
    assert!(
        matches!(&err, CertError::Expired { subject, .. } if subject.contains("old CA")),
        "{err}"
    );
}

#[test]
fn another_cas_certificate_is_an_unknown_issuer() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let other = Ca::new("other mesh CA", Alg::Ed25519);
    let node = other.node(&["a.mesh"], Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &node.chain()).unwrap_err();
    assert!(matches!(err, CertError::UnknownIssuer { .. }), "{err}");
    assert!(err.to_string().starts_with("unknown issuer:"), "{err}");
    assert!(err.to_string().contains("other mesh CA"), "{err}");
    // Another CA of the same name: told apart by the authority key identifier.
    let twin = Ca::new("mesh CA", Alg::Ed25519);
    let node = twin.node(&["a.mesh"], Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &node.chain()).unwrap_err();
    assert!(matches!(err, CertError::UnknownIssuer { .. }), "{err}");
    // Without one, its signature gives it away.
    let mut p = node_params(&["a.mesh"]);
    p.use_authority_key_identifier_extension = false;
    let node = twin.issue(&p, Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &node.chain()).unwrap_err();
    assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
}

#[test]
fn a_tampered_certificate_has_a_bad_signature() {
    for alg in [Alg::Ed25519, Alg::P256] {
        let ca = Ca::new("mesh CA", alg);
        let v = verifier(&[&ca]);
        let node = ca.node(&["a.mesh"], Alg::Ed25519);
        // The last byte is in the signature; a byte of the validity in the signed part.
        let mut sig = node.der.clone();
        *sig.last_mut().unwrap() ^= 1;
        let err = v.verify(&fqdn("a.mesh"), &[sig]).unwrap_err();
        assert!(matches!(err, CertError::BadSignature { .. }), "{alg:?}: {err}");
        assert!(err.to_string().starts_with("bad signature:"), "{err}");
        let mut tbs = node.der.clone();
        let at = tbs.windows(4).position(|w| w == b"3007").unwrap(); // "300701..." notAfter
        tbs[at + 3] = b'8';
        let err = v.verify(&fqdn("a.mesh"), &[tbs]).unwrap_err();
        assert!(matches!(err, CertError::BadSignature { .. }), "{alg:?}: {err}");
    }
}

#[test]
fn a_wrong_identity_is_refused() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let v = verifier(&[&ca]);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    let err = v.verify(&fqdn("b.mesh"), &node.chain()).unwrap_err();
    assert!(matches!(err, CertError::WrongIdentity { .. }), "{err}");
    assert!(err.to_string().contains("claims FQDN b.mesh"), "{err}");
    assert!(err.to_string().contains("certifies FQDN a.mesh"), "{err}");
    // No wildcard matching, no CN fallback for an FQDN.
    let star = ca.node(&["*.mesh"], Alg::Ed25519);
    assert!(matches!(
        v.verify(&fqdn("a.mesh"), &star.chain()),
        Err(CertError::WrongIdentity { .. })
    ));
    let key_id = IdRepr { id_type: IdType::KeyId, data: b"a.mesh".to_vec() };
    let err = v.verify(&key_id, &node.chain()).unwrap_err();
    assert!(matches!(err, CertError::BadIdentity { .. }), "{err}");
    assert!(err.to_string().starts_with("wrong identity:"), "{err}");
}

#[test]
fn an_identity_that_is_not_a_member_is_refused() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    let members: HashSet<PeerId> = [PeerId::fqdn("b.mesh"), PeerId::fqdn("c.mesh")].into();
    let v = verifier(&[&ca]).with_members(members);
    let err = v.verify(&fqdn("a.mesh"), &node.chain()).unwrap_err();
    assert_eq!(err, CertError::NotMember { peer: "FQDN a.mesh".into() });
    assert!(err.to_string().starts_with("identity not a member:"), "{err}");
    let v = verifier(&[&ca]).with_members(|p: &PeerId| *p == PeerId::fqdn("a.mesh"));
    assert!(v.verify(&fqdn("a.mesh"), &node.chain()).is_ok());
}

#[test]
fn revoked_serials_and_keys_are_refused() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let bundle = TrustBundle::from_der(&[&ca.der]).unwrap();
    let a = ca.issue(&with_serial(node_params(&["a.mesh"]), &[0x10]), Alg::Ed25519);
    let b = ca.issue(&with_serial(node_params(&["b.mesh"]), &[0x11]), Alg::P256);
    let mut revocation = Revocation::new();
    let info = revocation.add_crl(&bundle, &ca.crl(&[&[0x10]], 1)).unwrap();
    assert_eq!((info.revoked, info.number.as_deref()), (1, Some("01")));
    let v = verifier(&[&ca]).with_revocation(revocation.clone());
    let err = v.verify(&fqdn("a.mesh"), &a.chain()).unwrap_err();
    assert_eq!(
        err,
        CertError::RevokedSerial {
            subject: "CN=a.mesh, O=ikemesh tests".into(),
            serial: "10".into()
        }
    );
    assert!(err.to_string().starts_with("revoked:"), "{err}");
    assert!(v.verify(&fqdn("b.mesh"), &b.chain()).is_ok());

    // A newer CRL replaces it; an older one is refused.
    revocation.add_crl(&bundle, &ca.crl(&[&[0x11]], 2)).unwrap();
    assert!(matches!(revocation.add_crl(&bundle, &ca.crl(&[], 1)), Err(CrlError::Older { .. })));
    v.set_revocation(revocation.clone());
    assert!(v.verify(&fqdn("a.mesh"), &a.chain()).is_ok());
    assert!(matches!(v.verify(&fqdn("b.mesh"), &b.chain()), Err(CertError::RevokedSerial { .. })));

    // By hand, and by key: a certificate re-issued for a refused key fails too.
    revocation.revoke_serial(&ca.der, &[0x00, 0x10]).unwrap();
    v.set_revocation(revocation.clone());
    assert!(matches!(v.verify(&fqdn("a.mesh"), &a.chain()), Err(CertError::RevokedSerial { .. })));
    let c = ca.node(&["c.mesh"], Alg::Ed25519);
    let hash = revocation.refuse_key_of(&c.der).unwrap();
    v.set_revocation(revocation.clone());
    let reissued =
        with_serial(node_params(&["c.mesh"]), &[0x42]).signed_by(&c.key, &ca.issuer).unwrap();
    for der in [c.der.clone(), reissued.der().to_vec()] {
        let err = v.verify(&fqdn("c.mesh"), &[der]).unwrap_err();
        assert!(
            matches!(&err, CertError::RevokedKey { key_hash, .. } if key_hash.len() == 64),
            "{err}"
        );
        assert!(err.to_string().starts_with("revoked:"), "{err}");
    }
    let mut by_hash = Revocation::new();
    by_hash.refuse_key_hash(hash);
    v.set_revocation(by_hash);
    assert!(matches!(v.verify(&fqdn("c.mesh"), &c.chain()), Err(CertError::RevokedKey { .. })));
}

#[test]
fn serials_are_revoked_per_ca() {
    // During a rotation two CAs may hand out the same serial.
    let (old, new) = (Ca::new("mesh CA 1", Alg::Ed25519), Ca::new("mesh CA 2", Alg::P256));
    let bundle = TrustBundle::from_der(&[&old.der, &new.der]).unwrap();
    let a_old = old.issue(&with_serial(node_params(&["a.mesh"]), &[7]), Alg::Ed25519);
    let a_new = new.issue(&with_serial(node_params(&["a.mesh"]), &[7]), Alg::Ed25519);
    let mut revocation = Revocation::new();
    revocation.add_crl(&bundle, &old.crl(&[&[7]], 1)).unwrap();
    let v = verifier(&[&old, &new]).with_revocation(revocation);
    assert!(matches!(
        v.verify(&fqdn("a.mesh"), &[a_old.der]),
        Err(CertError::RevokedSerial { .. })
    ));
    assert!(v.verify(&fqdn("a.mesh"), &[a_new.der]).is_ok());
}

#[test]
fn crls_are_checked_against_the_bundle() {
    let ca = Ca::new("mesh CA", Alg::P256);
    let other = Ca::new("other CA", Alg::P256);
    let bundle = TrustBundle::from_der(&[&ca.der]).unwrap();
    let mut revocation = Revocation::new();
    let err = revocation.add_crl(&bundle, &other.crl(&[&[1]], 1)).unwrap_err();
    assert!(matches!(err, CrlError::UnknownIssuer { .. }), "{err}");
    let mut tampered = ca.crl(&[&[1]], 1);
    *tampered.last_mut().unwrap() ^= 1;
    let err = revocation.add_crl(&bundle, &tampered).unwrap_err();
    assert!(matches!(err, CrlError::BadSignature { .. }), "{err}");
    let good = ca.crl(&[&[1]], 1);
    for len in [0, 1, good.len() / 2, good.len() - 1] {
        let err = revocation.add_crl(&bundle, &good[..len]).unwrap_err();
        assert!(matches!(err, CrlError::Malformed { .. }), "{len}: {err}");
    }
    // PEM works as well as DER.
    let pem = ca.crl_pem(&[&[1]], 1);
    assert_eq!(revocation.add_crl(&bundle, pem.as_bytes()).unwrap().revoked, 1);
}

#[test]
fn a_leaf_whose_key_usage_lacks_digital_signature_is_refused() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let v = verifier(&[&ca]);
    let mut p = node_params(&["a.mesh"]);
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let node = ca.issue(&p, Alg::Ed25519);
    let err = v.verify(&fqdn("a.mesh"), &[node.der]).unwrap_err();
    assert!(matches!(err, CertError::MissingDigitalSignature { .. }), "{err}");
    assert!(err.to_string().starts_with("missing digitalSignature:"), "{err}");
    // Without the extension at all, RFC 5280 allows any use (strongSwan's pki issues
    // such certificates).
    p.key_usages = vec![];
    let node = ca.issue(&p, Alg::Ed25519);
    v.verify(&fqdn("a.mesh"), &[node.der]).unwrap();
}

#[test]
fn a_self_signed_leaf_is_refused() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let key = Alg::Ed25519.key();
    let cert = node_params(&["a.mesh"]).self_signed(&key).unwrap();
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &[cert.der().to_vec()]).unwrap_err();
    assert!(matches!(err, CertError::SelfSignedLeaf { .. }), "{err}");
    assert!(err.to_string().starts_with("self-signed leaf:"), "{err}");
}

#[test]
fn a_ca_certificate_as_leaf_is_refused() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let intermediate = ca.intermediate("sub CA", Alg::Ed25519, None);
    for der in [&ca.der, &intermediate.der] {
        let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), std::slice::from_ref(der)).unwrap_err();
        assert!(matches!(err, CertError::CaAsLeaf { .. }), "{err}");
        assert!(err.to_string().starts_with("CA certificate used as leaf:"), "{err}");
    }
}

#[test]
fn intermediates_chain_within_path_length_limits() {
    let root = Ca::new("mesh CA", Alg::Ed25519);
    let sub = root.intermediate("sub CA", Alg::P256, None);
    let node = sub.node(&["a.mesh"], Alg::Ed25519);
    let v = verifier(&[&root]);
    let ok = v.verify(&fqdn("a.mesh"), &[node.der.clone(), sub.der.clone()]).unwrap();
    assert_eq!(ok.ca, "CN=mesh CA, O=ikemesh tests");
    // Without the intermediate, the issuer is unknown.
    assert!(matches!(
        v.verify(&fqdn("a.mesh"), &node.chain()),
        Err(CertError::UnknownIssuer { .. })
    ));
    // Two intermediates: over our default limit of one.
    let subsub = sub.intermediate("sub sub CA", Alg::Ed25519, None);
    let deep = subsub.node(&["a.mesh"], Alg::Ed25519);
    let chain = [deep.der.clone(), subsub.der.clone(), sub.der.clone()];
    let err = v.verify(&fqdn("a.mesh"), &chain).unwrap_err();
    assert!(matches!(err, CertError::PathTooLong { .. }), "{err}");
    assert!(err.to_string().starts_with("path too long:"), "{err}");
    assert!(verifier(&[&root]).with_max_intermediates(2).verify(&fqdn("a.mesh"), &chain).is_ok());
    // The root's pathLenConstraint 0: no intermediate at all.
    let strict = Ca::from_params(ca_params("strict CA", Some(0)), Alg::Ed25519, None);
    let sub = strict.intermediate("sub CA", Alg::Ed25519, None);
    let node = sub.node(&["a.mesh"], Alg::Ed25519);
    let err = verifier(&[&strict]).verify(&fqdn("a.mesh"), &[node.der, sub.der]).unwrap_err();
    assert!(
        matches!(&err, CertError::PathTooLong { detail } if detail.contains("pathLenConstraint")),
        "{err}"
    );
}

#[test]
fn a_node_certificate_cannot_issue() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let rogue = Ca::from_params(node_params(&["rogue.mesh"]), Alg::Ed25519, Some(&ca));
    let node = rogue.node(&["a.mesh"], Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &[node.der, rogue.der.clone()]).unwrap_err();
    assert!(matches!(err, CertError::IssuerNotCa { .. }), "{err}");
}

#[test]
fn an_unknown_critical_extension_is_refused() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let mut p = node_params(&["a.mesh"]);
    let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![5, 0]);
    ext.set_criticality(true);
    p.custom_extensions.push(ext);
    let node = ca.issue(&p, Alg::Ed25519);
    let err = verifier(&[&ca]).verify(&fqdn("a.mesh"), &node.chain()).unwrap_err();
    assert!(
        matches!(&err, CertError::UnsupportedCriticalExtension { oid, .. } if oid == "1.3.6.1.4.1.55555.1"),
        "{err}"
    );
    // Not critical: ignored.
    p.custom_extensions[0].set_criticality(false);
    let node = ca.issue(&p, Alg::Ed25519);
    assert!(verifier(&[&ca]).verify(&fqdn("a.mesh"), &[node.der]).is_ok());
}

#[test]
fn a_rotation_trusts_both_cas_then_only_the_new_one() {
    let old = Ca::new("mesh CA 2030", Alg::Ed25519);
    let new = Ca::new("mesh CA 2031", Alg::Ed25519);
    let a = old.node(&["a.mesh"], Alg::Ed25519);
    let b = new.node(&["b.mesh"], Alg::P256);
    let pem = format!("{}{}", old.pem, new.pem);
    let v = CertVerifier::new(TrustBundle::from_pem(pem.as_bytes()).unwrap()).with_clock(now());
    assert_eq!(v.state().0.len(), 2);
    assert!(v.verify(&fqdn("a.mesh"), &a.chain()).is_ok());
    assert!(v.verify(&fqdn("b.mesh"), &b.chain()).is_ok());
    v.set_bundle(TrustBundle::from_pem(new.pem.as_bytes()).unwrap());
    assert!(matches!(v.verify(&fqdn("a.mesh"), &[a.der]), Err(CertError::UnknownIssuer { .. })));
    assert!(v.verify(&fqdn("b.mesh"), &[b.der]).is_ok());
}

#[test]
fn trust_bundles_hold_only_ca_certificates() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    assert!(matches!(TrustBundle::from_pem(node.pem.as_bytes()), Err(BundleError::NotCa { .. })));
    assert!(matches!(TrustBundle::from_pem(b"garbage"), Err(BundleError::Malformed { .. })));
    assert!(matches!(TrustBundle::from_der::<Vec<u8>>(&[]), Err(BundleError::Empty)));
    let no_certs = "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n";
    assert!(matches!(
        TrustBundle::from_pem(no_certs.as_bytes()),
        Err(BundleError::Malformed { .. })
    ));
    // The same CA twice is one CA; Debug shows subjects.
    let bundle = TrustBundle::from_pem(format!("{}\n{}", ca.pem, ca.pem).as_bytes()).unwrap();
    assert_eq!(bundle.len(), 1);
    assert_eq!(format!("{bundle:?}"), r#"["CN=mesh CA, O=ikemesh tests"]"#);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.pem");
    std::fs::write(&path, &ca.pem).unwrap();
    assert_eq!(TrustBundle::load(&path).unwrap().certificates().next(), Some(ca.der.as_slice()));
    assert!(matches!(TrustBundle::load(&dir.path().join("none")), Err(BundleError::Io { .. })));
}

#[test]
fn authenticate_reports_the_failure_class_in_one_line() {
    let ca = Ca::new("mesh CA", Alg::Ed25519);
    let node = ca.node(&["a.mesh"], Alg::Ed25519);
    let Err(reason) = verifier(&[&ca]).authenticate(&fqdn("b.mesh"), &[node.der]) else {
        panic!("accepted")
    };
    let reason = reason.to_string();
    assert!(reason.starts_with("wrong identity:") && !reason.contains('\n'), "{reason}");
}
