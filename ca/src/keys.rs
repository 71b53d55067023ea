//! Our own credentials for IKE: the private key (PEM PKCS#8: Ed25519, ECDSA P-256 or RSA)
//! as an `ike` [`Signer`], our certificate chain as DER, and the IKE ID our certificate
//! certifies.
//!
//! A private key file readable by group or others (mode looser than 0600) is refused.
//! Key bytes are zeroized once the signer holds them, and no `Debug` output shows them.

use crate::x509;
use ike::crypto::auth::{SigAlg, Signer};
use ike::wire::id::{IdRepr, IdType};
use std::fmt;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

/// Why our key or certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file could not be read.
    #[error("{path}: cannot read it ({source}); check the path and that meshd may read it")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The private key file may be read by others than its owner.
    #[error(
        "private key {path} has mode {mode:04o}, looser than 0600; run `chmod 600 {path}` \
         (and consider the key exposed)"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a PEM private key we read.
    #[error(
        "private key: {detail}; give an unencrypted PEM key: PKCS#8 (`BEGIN PRIVATE KEY`), \
         SEC1 P-256 (`BEGIN EC PRIVATE KEY`) or PKCS#1 RSA (`BEGIN RSA PRIVATE KEY`); \
         `openssl pkcs8 -topk8 -nocrypt` converts others"
    )]
    BadPem {
        /// What is wrong.
        detail: String,
    },
    /// The PKCS#8 structure is malformed or its key invalid.
    #[error("private key: not a valid PKCS#8 key ({detail}); re-create the key")]
    BadKey {
        /// What is wrong.
        detail: String,
    },
    /// A key algorithm we do not implement.
    #[error(
        "private key: algorithm {oid} is not supported; use an Ed25519, ECDSA P-256 or RSA \
         (2048 bits or more) key"
    )]
    UnsupportedAlgorithm {
        /// The PKCS#8 algorithm OID.
        oid: String,
    },
    /// No certificate in the chain file.
    #[error("certificate chain: no CERTIFICATE in it; give our node certificate (PEM)")]
    NoCertificate,
    /// A certificate of our chain is malformed.
    #[error("certificate chain: certificate {index} is not valid X.509 ({detail}); re-issue it")]
    BadCertificate {
        /// Position in the chain, leaf first.
        index: usize,
        /// What the parser said.
        detail: String,
    },
    /// Our certificate has no dNSName SAN to make an FQDN identity of.
    #[error(
        "certificate '{subject}' has no dNSName subjectAltName for the IKE ID; re-issue it \
         with the node's name"
    )]
    NoDnsName {
        /// The certificate.
        subject: String,
    },
    /// The private key is not the one the certificate certifies.
    #[error(
        "the private key does not match certificate '{subject}'; give the key the \
         certificate was issued for"
    )]
    KeyMismatch {
        /// The certificate.
        subject: String,
    },
}

/// PKCS#8 algorithm OIDs the `ike` crate signs with: id-Ed25519, id-ecPublicKey (P-256),
/// rsaEncryption.
const SUPPORTED_KEY_ALGORITHMS: [&str; 3] =
    ["1.3.101.112", "1.2.840.10045.2.1", "1.2.840.113549.1.1.1"];

/// Our private key, ready to sign AUTH payloads.
pub struct PrivateKey {
    signer: Arc<dyn Signer + Send + Sync>,
    algorithm: SigAlg,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads a PEM key file (see [`PrivateKey::from_pem`]), refusing one whose mode is
    /// looser than 0600.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let name = || path.display().to_string();
        let io = |source| KeyError::Io { path: name(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        // The mode of the file opened, not of whatever the path names a moment later.
        let meta = file.metadata().map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyError::TooOpen { path: name(), mode });
            }
        }
        let len = usize::try_from(meta.len()).unwrap_or(0);
        let mut pem = Zeroizing::new(Vec::with_capacity(len + 1));
        file.read_to_end(&mut pem).map_err(io)?;
        Self::from_pem(&pem)
    }

    /// From PEM: PKCS#8 (`PRIVATE KEY`), SEC1 for P-256 (`EC PRIVATE KEY`) or PKCS#1 for
    /// RSA (`RSA PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let mut buf = Zeroizing::new(vec![0u8; pem.len()]);
        let (label, der) = pem_rfc7468::decode(pem, &mut buf)
            .map_err(|e| KeyError::BadPem { detail: format!("not one PEM block ({e})") })?;
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(der),
            // What `openssl ecparam -genkey` and strongSwan's `pki --gen --type ecdsa`
            // write: SEC1 (RFC 5915), P-256 only.
            "EC PRIVATE KEY" => {
                use sec1::der::Decode as _;
                let bad = |detail: String| KeyError::BadKey { detail };
                let key = sec1::EcPrivateKey::from_der(der)
                    .map_err(|e| bad(format!("not a SEC1 EC private key ({e})")))?;
                let p256 = sec1::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
                match key.parameters.and_then(sec1::EcParameters::named_curve) {
                    Some(oid) if oid == p256 => {}
                    Some(oid) => {
                        return Err(KeyError::UnsupportedAlgorithm { oid: oid.to_string() });
                    }
                    None => return Err(bad("an EC private key that names no curve".into())),
                }
                let signer = ike::crypto::auth::EcdsaP256Signer::from_bytes(key.private_key)
                    .ok_or_else(|| bad("not a valid P-256 private key".into()))?;
                let signer: Arc<dyn Signer + Send + Sync> = Arc::new(signer);
                Ok(Self { algorithm: signer.algorithm(), signer })
            }
            // PKCS#1, as `openssl genrsa` (1.x) writes.
            "RSA PRIVATE KEY" => {
                let signer = ike::crypto::auth::RsaSigner::from_pkcs1(der)
                    .map_err(|e| KeyError::BadKey { detail: e.to_string() })?;
                let signer: Arc<dyn Signer + Send + Sync> = Arc::new(signer);
                Ok(Self { algorithm: signer.algorithm(), signer })
            }
            other => Err(KeyError::BadPem {
                detail: format!(
                    "a {other} block (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)"
                ),
            }),
        }
    }

    /// From DER PKCS#8 (v1, or v2 with the public key): Ed25519, EC on P-256, or RSA of
    /// at least 2048 bits (signing RSASSA-PSS).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        match ike::crypto::auth::signer_from_pkcs8(der) {
            Ok(signer) => Ok(Self { algorithm: signer.algorithm(), signer }),
            Err(e) => {
                // Tell an algorithm we do not have from a broken key of one we have.
                let oid = pkcs8::PrivateKeyInfoRef::try_from(der)
                    .map(|info| info.algorithm.oid.to_string());
                match oid {
                    Ok(oid) if !SUPPORTED_KEY_ALGORITHMS.contains(&oid.as_str()) => {
                        Err(KeyError::UnsupportedAlgorithm { oid })
                    }
                    _ => Err(KeyError::BadKey { detail: e.to_string() }),
                }
            }
        }
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> SigAlg {
        self.algorithm
    }

    /// The signer, for `ike::sa::Config::signer`.
    pub fn signer(&self) -> Arc<dyn Signer + Send + Sync> {
        self.signer.clone()
    }

    /// Checks that this is the key `cert_der` certifies, by signing a test message and
    /// verifying it with the certificate's key.
    pub fn check_matches(&self, cert_der: &[u8]) -> Result<(), KeyError> {
        let cert = x509::parse_cert(cert_der)
            .map_err(|detail| KeyError::BadCertificate { index: 0, detail })?;
        let subject = x509::name_text(cert.subject());
        let message = b"ikemesh: does this key match its certificate?";
        let ok = x509::spki_verifier(cert.public_key())
            .is_ok_and(|v| v.verify(self.algorithm, message, &self.signer.sign(message)));
        if ok { Ok(()) } else { Err(KeyError::KeyMismatch { subject }) }
    }
}

/// Reads our certificate chain (PEM, leaf first) as DER.
pub fn load_cert_chain(path: &Path) -> Result<Vec<Vec<u8>>, KeyError> {
    let pem = std::fs::read(path)
        .map_err(|source| KeyError::Io { path: path.display().to_string(), source })?;
    cert_chain_from_pem(&pem)
}

/// Our certificate chain from PEM (`CERTIFICATE` blocks, leaf first; other blocks
/// ignored) as DER, each certificate checked to parse.
pub fn cert_chain_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, KeyError> {
    if !pem.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Err(KeyError::NoCertificate);
    }
    let chain = x509::der_blocks(pem, "CERTIFICATE").map_err(|detail| {
        if detail.starts_with("no PEM block") {
            KeyError::NoCertificate
        } else {
            KeyError::BadCertificate { index: 0, detail }
        }
    })?;
    for (index, der) in chain.iter().enumerate() {
        x509::parse_cert(der).map_err(|detail| KeyError::BadCertificate { index, detail })?;
    }
    Ok(chain)
}

/// The IKE ID our certificate certifies: an FQDN, from its first dNSName SAN.
pub fn ike_id(cert_der: &[u8]) -> Result<IdRepr, KeyError> {
    let cert = x509::parse_cert(cert_der)
        .map_err(|detail| KeyError::BadCertificate { index: 0, detail })?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| KeyError::BadCertificate { index: 0, detail: e.to_string() })?;
    san.iter()
        .flat_map(|san| &san.value.general_names)
        .find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(IdRepr {
                id_type: IdType::Fqdn,
                data: dns.strip_suffix('.').unwrap_or(dns).to_ascii_lowercase().into_bytes(),
            }),
            _ => None,
        })
        .ok_or_else(|| KeyError::NoDnsName { subject: x509::name_text(cert.subject()) })
}
