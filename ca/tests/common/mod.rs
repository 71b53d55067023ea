//! A small PKI made with rcgen at test time, and a fixed clock.

#![allow(dead_code, unreachable_pub)]

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    PKCS_ED25519, PKCS_RSA_SHA256, RevokedCertParams, SerialNumber, SignatureAlgorithm,
    date_time_ymd,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The tests' "now": 2030-06-01 12:00:00 UTC.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_906_545_600)
}

/// Key algorithms the tests issue with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Ed25519,
    P256,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures. ring cannot make RSA keys, so every
    /// RSA node shares one fixed key (made with `openssl genpkey`, for tests only) and
    /// every RSA CA another.
    Rsa,
}

/// The fixed RSA keys (PEM PKCS#8), test-only.
pub const RSA_NODE_KEY: &str = include_str!("../data/rsa2048-node.key");
pub const RSA_CA_KEY: &str = include_str!("../data/rsa2048-ca.key");

impl Alg {
    pub fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            Alg::Ed25519 => &PKCS_ED25519,
            Alg::P256 => &PKCS_ECDSA_P256_SHA256,
            Alg::Rsa => &PKCS_RSA_SHA256,
        }
    }

    /// A node key.
    pub fn key(self) -> KeyPair {
        match self {
            Alg::Rsa => KeyPair::from_pem(RSA_NODE_KEY).unwrap(),
            _ => KeyPair::generate_for(self.rcgen()).unwrap(),
        }
    }

    /// A CA key.
    pub fn ca_key(self) -> KeyPair {
        match self {
            Alg::Rsa => KeyPair::from_pem(RSA_CA_KEY).unwrap(),
            _ => self.key(),
        }
    }
}

/// A certificate authority (root, or intermediate when issued by another).
pub struct Ca {
    pub der: Vec<u8>,
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

pub fn ca_params(name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name.push(DnType::OrganizationName, "ikemesh tests");
    p.is_ca =
        IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(2030, 1, 1);
    p.not_after = date_time_ymd(2035, 1, 1);
    p.use_authority_key_identifier_extension = true;
    p
}

impl Ca {
    /// A self-signed root.
    pub fn new(name: &str, alg: Alg) -> Ca {
        Ca::from_params(ca_params(name, None), alg, None)
    }

    /// A CA from `params`, self-signed or issued by `parent`.
    pub fn from_params(params: CertificateParams, alg: Alg, parent: Option<&Ca>) -> Ca {
        Ca::with_key(params, alg.ca_key(), parent)
    }

    /// A CA with `key`, self-signed or issued by `parent`.
    pub fn with_key(params: CertificateParams, key: KeyPair, parent: Option<&Ca>) -> Ca {
        let cert = match parent {
            None => params.self_signed(&key).unwrap(),
            Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
        };
        Ca { der: cert.der().to_vec(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// An intermediate CA under this one.
    pub fn intermediate(&self, name: &str, alg: Alg, path_len: Option<u8>) -> Ca {
        Ca::from_params(ca_params(name, path_len), alg, Some(self))
    }

    /// Issues a node certificate.
    pub fn issue(&self, params: &CertificateParams, alg: Alg) -> Leaf {
        let key = alg.key();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { der: cert.der().to_vec(), pem: cert.pem(), key }
    }

    /// Issues a standard node certificate for `sans` (DNS names or addresses).
    pub fn node(&self, sans: &[&str], alg: Alg) -> Leaf {
        self.issue(&node_params(sans), alg)
    }

    /// A CRL listing `serials`, with CRL number `number`, DER.
    pub fn crl(&self, serials: &[&[u8]], number: u8) -> Vec<u8> {
        self.crl_object(serials, number).der().to_vec()
    }

    /// The same, PEM.
    pub fn crl_pem(&self, serials: &[&[u8]], number: u8) -> String {
        self.crl_object(serials, number).pem().unwrap()
    }

    fn crl_object(&self, serials: &[&[u8]], number: u8) -> rcgen::CertificateRevocationList {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2030, 5, 1),
            next_update: date_time_ymd(2030, 7, 1),
            crl_number: SerialNumber::from_slice(&[number]),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: date_time_ymd(2030, 5, 15),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
    }
}

/// A node certificate and its key.
pub struct Leaf {
    pub der: Vec<u8>,
    pub pem: String,
    pub key: KeyPair,
}

impl Leaf {
    /// The chain to present: the certificate alone.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.der.clone()]
    }
}

/// Node certificate parameters: CN and SANs from `sans`, digitalSignature, valid
/// 2030-05-01 to 2030-07-01.
pub fn node_params(sans: &[&str]) -> CertificateParams {
    let mut p =
        CertificateParams::new(sans.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, sans[0]);
    p.distinguished_name.push(DnType::OrganizationName, "ikemesh tests");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = date_time_ymd(2030, 5, 1);
    p.not_after = date_time_ymd(2030, 7, 1);
    p.use_authority_key_identifier_extension = true;
    p
}

/// With serial `serial`.
pub fn with_serial(mut p: CertificateParams, serial: &[u8]) -> CertificateParams {
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p
}
