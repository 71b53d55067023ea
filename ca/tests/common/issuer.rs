//! An rcgen issuer for the enrollment tests: a test CA valid around the real clock
//! (TLS checks certificates at the real time), serials counted in a `Mutex<Vec>`.

#![allow(dead_code, unreachable_pub)]

use crate::common::{Alg, Ca, Leaf, ca_params, node_params};
use ca::verify::{CertVerifier, Revocation, TrustBundle};
use ca::{IssueError, Issued, Issuer};
use rcgen::{CertificateParams, CertificateSigningRequestParams, SerialNumber, date_time_ymd};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Makes `params` valid from `from` to `until` seconds from now (negative: in the past).
pub fn valid(params: &mut CertificateParams, from: i64, until: i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let at = |offset: i64| {
        let epoch = date_time_ymd(1970, 1, 1) + now;
        if offset >= 0 {
            epoch + Duration::from_secs(offset.unsigned_abs())
        } else {
            epoch - Duration::from_secs(offset.unsigned_abs())
        }
    };
    params.not_before = at(from);
    params.not_after = at(until);
}

/// A CA valid from yesterday for a year.
pub fn live_ca(name: &str, alg: Alg) -> Ca {
    let mut params = ca_params(name, None);
    valid(&mut params, -86_400, 365 * 86_400);
    Ca::from_params(params, alg, None)
}

/// What the test issuer issued, in order.
#[derive(Debug, Clone)]
pub struct Record {
    pub name: String,
    pub serial: Vec<u8>,
}

pub struct TestIssuer {
    pub ca: Ca,
    pub issued: Mutex<Vec<Record>>,
    revoked: Mutex<Vec<Vec<u8>>>,
}

impl TestIssuer {
    pub fn new() -> Self {
        TestIssuer {
            ca: live_ca("enroll test CA", Alg::Ed25519),
            issued: Mutex::new(Vec::new()),
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// How many certificates were issued.
    pub fn count(&self) -> usize {
        self.issued.lock().unwrap().len()
    }

    /// Revokes every certificate issued for `name`.
    pub fn revoke(&self, name: &str) {
        let serials: Vec<Vec<u8>> = self
            .issued
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.serial.clone())
            .collect();
        assert!(!serials.is_empty(), "nothing issued for {name}");
        self.revoked.lock().unwrap().extend(serials);
    }

    /// A certificate for the enrollment service itself, valid now (P-256 key).
    pub fn service_leaf(&self, name: &str) -> Leaf {
        let mut params = node_params(&[name]);
        valid(&mut params, -3600, 86_400);
        self.ca.issue(&params, Alg::P256)
    }

    /// A node certificate for `name` valid from `from` to `until` seconds from now.
    pub fn node_leaf(&self, name: &str, from: i64, until: i64) -> Leaf {
        let mut params = node_params(&[name]);
        valid(&mut params, from, until);
        self.ca.issue(&params, Alg::Ed25519)
    }
}

impl Issuer for TestIssuer {
    fn issue(&self, name: &str, csr_der: &[u8]) -> Result<Issued, IssueError> {
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| IssueError::BadRequest(e.to_string()))?;
        let mut issued = self.issued.lock().unwrap();
        let serial = vec![1, u8::try_from(issued.len() / 256).unwrap(), (issued.len() % 256) as u8];
        let mut params = node_params(&[name]);
        valid(&mut params, -60, 86_400);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        csr.params = params;
        let cert =
            csr.signed_by(&self.ca.issuer).map_err(|e| IssueError::BadRequest(e.to_string()))?;
        issued.push(Record { name: name.to_string(), serial: serial.clone() });
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: format!("{:06x}", u32::from_be_bytes([0, serial[0], serial[1], serial[2]])),
            not_after: SystemTime::now() + Duration::from_secs(86_400),
        })
    }

    fn bundle_pem(&self) -> Result<String, IssueError> {
        Ok(self.ca.pem.clone())
    }

    fn crl_pem(&self) -> Result<String, IssueError> {
        let revoked = self.revoked.lock().unwrap();
        let serials: Vec<&[u8]> = revoked.iter().map(Vec::as_slice).collect();
        Ok(self.ca.crl_pem(&serials, u8::try_from(revoked.len() + 1).unwrap()))
    }

    fn verifier(&self) -> Result<CertVerifier, IssueError> {
        let bundle = TrustBundle::from_der(&[&self.ca.der]).unwrap();
        let mut revocation = Revocation::new();
        for serial in self.revoked.lock().unwrap().iter() {
            revocation.revoke_serial(&self.ca.der, serial).unwrap();
        }
        Ok(CertVerifier::new(bundle).with_revocation(revocation))
    }
}
