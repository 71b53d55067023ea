//! The CA on disk: init, node certificates from CSRs (checked with openssl and
//! strongSwan's pki), revocation and CRLs, rotation, concurrency and storage errors.

use ca::authority::{
    Algorithm, Authority, AuthorityError, InitOptions, IssueOptions, Role, add_crls,
    generate_node_key, make_csr,
};
use ca::{CertError, IssueError, Issued, Issuer};
use ike::wire::id::{IdRepr, IdType};
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};

const ALGORITHMS: [Algorithm; 3] = [Algorithm::Ed25519, Algorithm::EcdsaP256, Algorithm::Rsa3072];

fn fqdn(name: &str) -> IdRepr {
    IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() }
}

fn new_ca(alg: Algorithm) -> (tempfile::TempDir, Authority) {
    let tmp = tempfile::tempdir().unwrap();
    let options = InitOptions { algorithm: alg, ..InitOptions::new("test mesh") };
    let ca = Authority::init(&tmp.path().join("ca"), &options).unwrap();
    (tmp, ca)
}

/// A node: its key (PEM) and a CSR for `name`.
fn node_csr(name: &str, alg: Algorithm) -> (String, Vec<u8>) {
    let key = generate_node_key(alg).unwrap();
    let csr = make_csr(name, key.pem()).unwrap();
    (key.pem().to_owned(), csr)
}

fn der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
}

fn chain(issued: &Issued) -> Vec<Vec<u8>> {
    vec![der(&issued.cert_pem)]
}

/// Runs a tool the acceptance tests need; fails clearly if it is not installed (the
/// tests install nothing: `tests/run` does).
fn tool(name: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "`{name}` is not installed: install {package} (tests/run does)");
    Command::new(name)
}

fn run(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(text) }
}

fn openssl_verify(bundle: &Path, cert: &Path) -> Result<String, String> {
    let mut cmd = tool("openssl", "openssl");
    cmd.arg("verify").arg("-CAfile").arg(bundle).arg(cert);
    run(cmd)
}

/// strongSwan's pki with an explicit plugin list (its built-in one is slow and noisy).
fn pki_verify(dir: &Path, cert: &Path, ca_cert: &Path) -> Result<String, String> {
    let conf = dir.join("strongswan.conf");
    fs::write(
        &conf,
        "pki {\n  load = random drbg nonce sha1 sha2 aes hmac pem pkcs1 pkcs8 x509 pubkey \
         openssl curve25519\n}\n",
    )
    .unwrap();
    let mut cmd = tool("pki", "strongswan-pki");
    cmd.env("STRONGSWAN_CONF", &conf)
        .arg("--verify")
        .arg("--in")
        .arg(cert)
        .arg("--cacert")
        .arg(ca_cert);
    run(cmd)
}

#[test]
fn init_makes_a_private_ca_and_refuses_to_overwrite_one() {
    let (tmp, ca) = new_ca(Algorithm::Ed25519);
    let dir = tmp.path().join("ca");
    let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.clone()), 0o700);
    assert_eq!(mode(dir.join("ca-1.key")), 0o600);
    assert_eq!(mode(dir.join("state.json")), 0o600);
    for file in ["ca-1.pem", "bundle.pem", "crl.pem", "lock"] {
        assert!(dir.join(file).exists(), "{file}");
    }
    let cert = der(&fs::read_to_string(dir.join("ca-1.pem")).unwrap());
    let (_, cert) = X509Certificate::from_der(&cert).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=test mesh CA 1, O=test mesh");
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    let has = |f: fn(&ParsedExtension<'_>) -> bool| {
        cert.extensions().iter().any(|e| f(e.parsed_extension()))
    };
    assert!(has(|e| matches!(e, ParsedExtension::SubjectKeyIdentifier(_))));
    assert!(has(|e| matches!(e, ParsedExtension::AuthorityKeyIdentifier(_))));
    let years = cert.validity().time_to_expiration().unwrap().whole_days() / 365;
    assert_eq!(years, 9, "about 10 years left");

    // Not over an existing CA, nor into a directory with other files.
    drop(ca);
    let again = Authority::init(&dir, &InitOptions::new("test mesh"));
    assert!(matches!(again, Err(AuthorityError::Exists { .. })), "{again:?}");
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("notes.txt"), "mine").unwrap();
    let into_other = Authority::init(&other, &InitOptions::new("m"));
    assert!(matches!(into_other, Err(AuthorityError::Exists { .. })), "{into_other:?}");
    assert_eq!(fs::read(other.join("notes.txt")).unwrap(), b"mine");

    // And it opens again.
    let ca = Authority::open(&dir).unwrap();
    let summary = ca.show().unwrap();
    assert_eq!(summary.mesh, "test mesh");
    assert_eq!(summary.generations.len(), 1);
    assert_eq!(summary.generations[0].role, Role::Current);
    assert_eq!(summary.generations[0].algorithm, Algorithm::Ed25519);
    assert_eq!(summary.node_lifetime, Duration::from_secs(86_400));
    assert_eq!(summary.crl_number, 1);
}

#[test]
fn init_options_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let short = InitOptions { node_lifetime: Duration::from_secs(1800), ..InitOptions::new("m") };
    let err = Authority::init(&tmp.path().join("a"), &short).unwrap_err();
    assert!(matches!(err, AuthorityError::BadOptions(_)), "{err}");
    let empty = Authority::init(&tmp.path().join("b"), &InitOptions::new("")).unwrap_err();
    assert!(matches!(empty, AuthorityError::BadOptions(_)), "{empty}");
    let hourly = InitOptions { node_lifetime: Duration::from_secs(3600), ..InitOptions::new("m") };
    let ca = Authority::init(&tmp.path().join("c"), &hourly).unwrap();
    let (_, csr) = node_csr("a.mesh", Algorithm::Ed25519);
    let issued = ca.issue("a.mesh", &csr).unwrap();
    let left = issued.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3500), "{left:?}");
}

#[test]
fn open_says_in_one_line_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = Authority::open(&tmp.path().join("nothing")).unwrap_err();
    assert!(matches!(missing, AuthorityError::NotFound { .. }), "{missing}");

    let (tmp, ca) = new_ca(Algorithm::Ed25519);
    let dir = tmp.path().join("ca");
    drop(ca);
    let state = fs::read(dir.join("state.json")).unwrap();
    fs::write(dir.join("state.json"), &state[..state.len() / 2]).unwrap();
    let corrupt = Authority::open(&dir).unwrap_err();
    assert!(matches!(corrupt, AuthorityError::CorruptState { .. }), "{corrupt}");
    assert!(!corrupt.to_string().contains('\n'), "{corrupt}");
    assert!(corrupt.to_string().contains("state.json"), "{corrupt}");
    fs::write(dir.join("state.json"), b"not json").unwrap();
    assert!(matches!(Authority::open(&dir), Err(AuthorityError::CorruptState { .. })));
    fs::write(dir.join("state.json"), &state).unwrap();

    let key = dir.join("ca-1.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let open = Authority::open(&dir).unwrap_err();
    assert!(matches!(open, AuthorityError::KeyTooOpen { mode: 0o644, .. }), "{open}");
    assert!(open.to_string().contains("chmod 600"), "{open}");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();

    // A crash that left the CRL behind the state is repaired on open.
    fs::remove_file(dir.join("crl.pem")).unwrap();
    let ca = Authority::open(&dir).unwrap();
    assert!(ca.crl_pem().unwrap().contains("BEGIN X509 CRL"));
}

#[test]
fn node_certificates_verify_with_us_openssl_and_pki() {
    for alg in ALGORITHMS {
        let (tmp, ca) = new_ca(alg);
        let (key_pem, csr) = node_csr("node-1.mesh", alg);
        let options = IssueOptions { ips: vec!["192.0.2.7".parse().unwrap()], lifetime: None };
        let issued = ca.issue_with("Node-1.Mesh", &csr, &options).unwrap();
        let cert_der = der(&issued.cert_pem);

        // What we put in it.
        let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=node-1.mesh, O=test mesh");
        assert_eq!(cert.issuer().to_string(), "CN=test mesh CA 1, O=test mesh");
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value.general_names;
        assert!(matches!(sans[0], GeneralName::DNSName("node-1.mesh")), "{sans:?}");
        assert!(matches!(sans[1], GeneralName::IPAddress([192, 0, 2, 7])), "{sans:?}");
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
        assert!(!cert.is_ca());
        assert_eq!(cert.raw_serial().len(), 16);
        assert!(cert.raw_serial()[0] & 0x80 == 0);
        assert_eq!(issued.serial.len(), 32);
        let now = SystemTime::now();
        let not_before = SystemTime::UNIX_EPOCH
            + Duration::from_secs(cert.validity().not_before.timestamp().try_into().unwrap());
        assert!(not_before < now - Duration::from_secs(60), "backdated for clock skew");
        let left = issued.not_after.duration_since(now).unwrap();
        assert!(left > Duration::from_secs(86_000) && left <= Duration::from_secs(86_400));
        assert!(
            cert.extensions().iter().any(|e| matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            ))
        );

        // Our verifier, with the node's own key matching it.
        let verifier = ca.verifier().unwrap();
        let ok = verifier.verify(&fqdn("node-1.mesh"), std::slice::from_ref(&cert_der)).unwrap();
        assert_eq!(ok.serial, issued.serial);
        let key = ca::PrivateKey::from_pem(key_pem.as_bytes()).unwrap();
        key.check_matches(&cert_der).unwrap();

        // openssl and strongSwan.
        let dir = tmp.path();
        let node = dir.join("node.pem");
        let bundle = dir.join("bundle.pem");
        fs::write(&node, &issued.cert_pem).unwrap();
        fs::write(&bundle, ca.bundle_pem().unwrap()).unwrap();
        let out = openssl_verify(&bundle, &node).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert!(out.contains("OK"), "{alg}: {out}");
        let out = pki_verify(dir, &node, &dir.join("ca/ca-1.pem"))
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert!(out.contains("certificate trusted, lifetimes valid"), "{alg}: {out}");
    }
}

#[test]
fn bad_requests_and_names_are_refused() {
    let (_tmp, ca) = new_ca(Algorithm::Ed25519);
    let (_, csr) = node_csr("a.mesh", Algorithm::Ed25519);
    let name = ca.issue("*.mesh", &csr).unwrap_err();
    assert!(matches!(name, IssueError::NameRefused(_)), "{name}");
    let garbage = ca.issue("a.mesh", b"\x30\x03\x02\x01\x00").unwrap_err();
    assert!(matches!(garbage, IssueError::BadRequest(_)), "{garbage}");
    let mut forged = csr.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = ca.issue("a.mesh", &forged).unwrap_err();
    assert!(matches!(forged, IssueError::BadRequest(_)), "{forged}");
    // The name certified is the one asked for, not the CSR's.
    let issued = ca.issue("b.mesh", &csr).unwrap();
    let verifier = ca.verifier().unwrap();
    assert!(verifier.verify(&fqdn("b.mesh"), &chain(&issued)).is_ok());
    assert!(verifier.verify(&fqdn("a.mesh"), &chain(&issued)).is_err());
    let short = IssueOptions { ips: vec![], lifetime: Some(Duration::from_secs(60)) };
    assert!(matches!(ca.issue_with("b.mesh", &csr, &short), Err(AuthorityError::BadOptions(_))));
}

#[test]
fn revoked_serials_and_keys_are_refused_at_verify_and_issue() {
    let (tmp, ca) = new_ca(Algorithm::EcdsaP256);
    let dir = tmp.path().join("ca");
    let (_, stolen_csr) = node_csr("stolen.mesh", Algorithm::Ed25519);
    let first = ca.issue("stolen.mesh", &stolen_csr).unwrap();
    // A second certificate for the same key, issued before the theft was noticed.
    let second = ca.issue("stolen.mesh", &stolen_csr).unwrap();
    let (_, other_csr) = node_csr("other.mesh", Algorithm::Ed25519);
    let other = ca.issue("other.mesh", &other_csr).unwrap();
    // A stale copy of the CA (a backup restored somewhere) that never hears of the
    // revocation.
    let stale_dir = tmp.path().join("stale");
    fs::create_dir(&stale_dir).unwrap();
    for entry in fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), stale_dir.join(entry.file_name())).unwrap();
    }
    let stale = Authority::open(&stale_dir).unwrap();

    let revoked = ca.revoke_serial(&first.serial.to_uppercase()).unwrap();
    // The other certificate of that key goes on the CRL with it.
    assert_eq!(revoked.serials, [first.serial.clone(), second.serial.clone()]);
    assert_eq!(revoked.key_hashes.len(), 1);
    assert_eq!(revoked.crl_number, 2);

    let verifier = ca.verifier().unwrap();
    for cert in [&first, &second] {
        let err = verifier.verify(&fqdn("stolen.mesh"), &chain(cert)).unwrap_err();
        assert!(matches!(err, CertError::RevokedSerial { .. }), "{err}");
    }
    assert!(verifier.verify(&fqdn("other.mesh"), &chain(&other)).is_ok());

    // The stolen key gets nothing more, under any name...
    for name in ["stolen.mesh", "new.mesh"] {
        let err = ca.issue(name, &stolen_csr).unwrap_err();
        assert!(matches!(err, IssueError::Revoked(_)), "{err}");
    }
    // ...and a certificate re-issued for it elsewhere is refused by its key.
    let reissued = stale.issue("stolen.mesh", &stolen_csr).unwrap();
    let err = verifier.verify(&fqdn("stolen.mesh"), &chain(&reissued)).unwrap_err();
    assert!(matches!(err, CertError::RevokedKey { .. }), "{err}");

    // A CA that only knows the CRL refuses the serial too.
    let (bundle, _) = ca.revocation_state().unwrap();
    let mut crl_only = ca::Revocation::new();
    let crls = add_crls(&mut crl_only, &bundle, ca.crl_pem().unwrap().as_bytes()).unwrap();
    assert_eq!((crls.len(), crls[0].revoked, crls[0].number.as_deref()), (1, 2, Some("02")));
    let crl_verifier = ca::CertVerifier::new(bundle).with_revocation(crl_only);
    let err = crl_verifier.verify(&fqdn("stolen.mesh"), &chain(&first)).unwrap_err();
    assert!(matches!(err, CertError::RevokedSerial { .. }), "{err}");

    // The CRL verifies with openssl and lists the serial.
    let dir = tmp.path();
    fs::write(dir.join("crl.pem"), ca.crl_pem().unwrap()).unwrap();
    let mut cmd = tool("openssl", "openssl");
    cmd.args(["crl", "-noout", "-text", "-in"])
        .arg(dir.join("crl.pem"))
        .arg("-CAfile")
        .arg(dir.join("ca/ca-1.pem"));
    let out = run(cmd).unwrap();
    assert!(out.contains("verify OK"), "{out}");
    assert!(out.to_uppercase().contains(&first.serial.to_uppercase()), "{out}");
    assert!(out.contains("X509v3 CRL Number: \n                2"), "{out}");

    // By name: every certificate of the name.
    let by_name = ca.revoke_name("other.mesh").unwrap();
    assert_eq!(by_name.serials, std::slice::from_ref(&other.serial));
    assert_eq!(by_name.crl_number, 3);
    let again = ca.revoke_name("other.mesh").unwrap_err();
    assert!(matches!(again, AuthorityError::Unknown(_)), "{again}");
    let summary = ca.show().unwrap();
    let names: Vec<&str> = summary.revoked.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["stolen.mesh", "stolen.mesh", "other.mesh"]);
    assert_eq!(summary.crl_number, 3);
    let text = summary.to_string();
    assert!(text.contains(&other.serial), "{text}");
    assert!(text.contains("issued:         3 (0 valid)"), "{text}");
}

#[test]
fn fifty_threads_issue_fifty_distinct_recorded_serials() {
    let (tmp, ca) = new_ca(Algorithm::Ed25519);
    let csrs: Vec<Vec<u8>> =
        (0..50).map(|i| node_csr(&format!("n{i}.mesh"), Algorithm::Ed25519).1).collect();
    let serials: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = csrs
            .iter()
            .enumerate()
            .map(|(i, csr)| {
                let ca = &ca;
                s.spawn(move || ca.issue(&format!("n{i}.mesh"), csr).unwrap().serial)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: HashSet<&String> = serials.iter().collect();
    assert_eq!(distinct.len(), 50);
    // All recorded, as another process opening the CA sees it.
    let reopened = Authority::open(&tmp.path().join("ca")).unwrap();
    let summary = reopened.show().unwrap();
    assert_eq!(summary.issued_total, 50);
    assert_eq!(summary.valid, 50);
    let state = fs::read_to_string(tmp.path().join("ca/state.json")).unwrap();
    for serial in &serials {
        assert!(state.contains(serial.as_str()), "{serial} not recorded");
    }
    // Two handles on one CA (two processes, in effect) interleave without losing any.
    let csr = &csrs[0];
    std::thread::scope(|s| {
        for handle in [&ca, &reopened] {
            s.spawn(move || {
                for _ in 0..10 {
                    handle.issue("n0.mesh", csr).unwrap();
                }
            });
        }
    });
    assert_eq!(ca.show().unwrap().issued_total, 70);
}

#[test]
fn rotation_keeps_old_and_new_nodes_talking_until_the_old_ca_is_dropped() {
    let (tmp, ca) = new_ca(Algorithm::Ed25519);
    let dir = tmp.path().join("ca");
    let (_, a_csr) = node_csr("a.mesh", Algorithm::Ed25519);
    let (_, b_csr) = node_csr("b.mesh", Algorithm::EcdsaP256);
    let a_old = ca.issue("a.mesh", &a_csr).unwrap();
    let (_, c_csr) = node_csr("c.mesh", Algorithm::Ed25519);
    let c_old = ca.issue("c.mesh", &c_csr).unwrap();

    // Step 1: the next CA is trusted before it issues anything.
    let next = ca.stage_rotation(Some(Algorithm::EcdsaP256)).unwrap();
    assert_eq!((next.generation, next.role), (2, Role::Next));
    assert_eq!(ca.bundle_pem().unwrap().matches("BEGIN CERTIFICATE").count(), 2);
    let still_old = ca.issue("b.mesh", &b_csr).unwrap();
    // b renewed since the staging (and so got the new bundle); a and c have not.
    assert_eq!(ca.show().unwrap().awaiting, ["a.mesh", "c.mesh"]);
    let v = ca.verifier().unwrap();
    assert_eq!(
        v.verify(&fqdn("b.mesh"), &chain(&still_old)).unwrap().ca,
        "CN=test mesh CA 1, O=test mesh"
    );

    // Step 2: it issues; the old one is still trusted.
    let current = ca.rotate().unwrap();
    assert_eq!((current.generation, current.role), (2, Role::Current));
    assert_eq!(current.algorithm, Algorithm::EcdsaP256);
    let b_new = ca.issue("b.mesh", &b_csr).unwrap();
    let v = ca.verifier().unwrap();
    // a (old CA) and b (new CA) accept each other: each node's verifier is the bundle.
    let b_seen_by_a = v.verify(&fqdn("b.mesh"), &chain(&b_new)).unwrap();
    assert_eq!(b_seen_by_a.ca, "CN=test mesh CA 2, O=test mesh");
    let a_seen_by_b = v.verify(&fqdn("a.mesh"), &chain(&a_old)).unwrap();
    assert_eq!(a_seen_by_b.ca, "CN=test mesh CA 1, O=test mesh");
    let bundle = tmp.path().join("bundle.pem");
    fs::write(&bundle, ca.bundle_pem().unwrap()).unwrap();
    for (name, issued) in [("a_old", &a_old), ("b_new", &b_new)] {
        let path = tmp.path().join(format!("{name}.pem"));
        fs::write(&path, &issued.cert_pem).unwrap();
        openssl_verify(&bundle, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Revocation during the overlap: each CA's CRL.
    ca.revoke_serial(&c_old.serial).unwrap();
    let v = ca.verifier().unwrap();
    let err = v.verify(&fqdn("c.mesh"), &chain(&c_old)).unwrap_err();
    assert!(matches!(err, CertError::RevokedSerial { .. }), "{err}");
    assert_eq!(ca.crl_pem().unwrap().matches("BEGIN X509 CRL").count(), 2);
    // No second rotation on top of this one.
    assert!(matches!(ca.rotate(), Err(AuthorityError::RotationInProgress { previous: 1 })));

    assert_eq!(ca.show().unwrap().awaiting, ["a.mesh"]);
    // Step 3: not while a still holds only an old-CA certificate...
    let err = ca.drop_previous(false).unwrap_err();
    assert!(matches!(&err, AuthorityError::NotReissued { names } if names == &["a.mesh"]), "{err}");
    // ...so a is re-issued, and the old CA goes.
    let a_new = ca.issue("a.mesh", &a_csr).unwrap();
    let dropped = ca.drop_previous(false).unwrap();
    assert_eq!(dropped.generation, 1);
    assert!(dropped.stranded.is_empty());
    assert!(!dir.join("ca-1.key").exists(), "the old key is deleted");
    assert_eq!(ca.bundle_pem().unwrap().matches("BEGIN CERTIFICATE").count(), 1);
    let v = ca.verifier().unwrap();
    for (name, issued) in [("a.mesh", &a_new), ("b.mesh", &b_new)] {
        v.verify(&fqdn(name), &chain(issued)).unwrap();
    }
    for (name, issued) in [("a.mesh", &a_old), ("b.mesh", &still_old)] {
        let err = v.verify(&fqdn(name), &chain(issued)).unwrap_err();
        assert!(matches!(err, CertError::UnknownIssuer { .. }), "{err}");
    }
    fs::write(&bundle, ca.bundle_pem().unwrap()).unwrap();
    assert!(openssl_verify(&bundle, &tmp.path().join("a_old.pem")).is_err());
    assert!(matches!(ca.drop_previous(false), Err(AuthorityError::NoPrevious { current: 2 })));

    // The state survives a reopen, and a rotation straight away works too.
    let ca = Authority::open(&dir).unwrap();
    let summary = ca.show().unwrap();
    let roles: Vec<Role> = summary.generations.iter().map(|g| g.role).collect();
    assert_eq!(roles, [Role::Retired, Role::Current]);
    assert_eq!(ca.rotate().unwrap().generation, 3);
    let forced = ca.drop_previous(true).unwrap();
    assert_eq!(forced.stranded, ["a.mesh", "b.mesh"]);
}

#[test]
fn node_keys_are_private_and_redacted() {
    for alg in ALGORITHMS {
        let key = generate_node_key(alg).unwrap();
        assert!(key.pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{key:?}").contains("PRIVATE"));
        key.private_key().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("node.key");
        key.write_new(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(key.write_new(&path).is_err(), "never overwrites");
    }
}
