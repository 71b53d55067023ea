//! Node-side helpers: make a node key and a certificate request locally, so the private
//! key never leaves the node; and the checks of a node name.

use super::{Algorithm, AuthorityError};
use crate::keys::{KeyError, PrivateKey};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SigningKey};
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use zeroize::{Zeroize as _, Zeroizing};

/// A private key held for signing with rcgen, zeroized on drop.
pub(super) struct SecretKey {
    pair: KeyPair,
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.pair.zeroize();
    }
}

impl PublicKeyData for SecretKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        PublicKeyData::algorithm(&self.pair)
    }
}

impl SigningKey for SecretKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.pair.sign(msg)
    }
}

impl SecretKey {
    /// A new key of `alg`, and its PEM (PKCS#8).
    pub(super) fn generate(alg: Algorithm) -> Result<(Self, Zeroizing<String>), String> {
        let pair = match alg {
            Algorithm::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            Algorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Algorithm::Rsa3072 => {
                // ring (rcgen's backend) cannot generate RSA keys; aws-lc-rs can.
                use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
                let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072)
                    .map_err(|_| "RSA-3072 key generation failed".to_owned())?;
                let der: Pkcs8V1Der<'_> =
                    rsa.as_der().map_err(|_| "cannot encode the RSA key".to_owned())?;
                KeyPair::try_from(der.as_ref())
            }
        }
        .map_err(|e| format!("key generation failed: {e}"))?;
        let pem = Zeroizing::new(pair.serialize_pem());
        Ok((Self { pair }, pem))
    }

    /// From PEM PKCS#8.
    pub(super) fn from_pem(pem: &str) -> Result<Self, String> {
        KeyPair::from_pem(pem)
            .map(|pair| Self { pair })
            .map_err(|e| format!("not a PKCS#8 Ed25519, P-256 or RSA key ({e})"))
    }

    /// Its `SubjectPublicKeyInfo`, DER.
    pub(super) fn spki(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }
}

/// A node's new private key, PEM PKCS#8. Zeroized on drop; `Debug` shows only the
/// algorithm.
pub struct NodeKey {
    pem: Zeroizing<String>,
    algorithm: Algorithm,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl NodeKey {
    /// The key, PEM PKCS#8 (`BEGIN PRIVATE KEY`).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key as the signer IKE uses.
    pub fn private_key(&self) -> Result<PrivateKey, KeyError> {
        PrivateKey::from_pem(self.pem.as_bytes())
    }

    /// Writes the key to a new file with mode 0600 (from its creation on), synced;
    /// refuses to overwrite an existing file.
    pub fn write_new(&self, path: &Path) -> std::io::Result<()> {
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        file.write_all(self.pem.as_bytes())?;
        file.sync_all()
    }
}

/// Makes a node's private key: Ed25519, ECDSA P-256 or RSA-3072.
pub fn generate_node_key(algorithm: Algorithm) -> Result<NodeKey, AuthorityError> {
    let (_, pem) = SecretKey::generate(algorithm).map_err(AuthorityError::Crypto)?;
    Ok(NodeKey { pem, algorithm })
}

/// A certificate signing request (PKCS#10, DER) for node `name`, signed by `key_pem`
/// (PEM PKCS#8, as [`generate_node_key`] makes it). The CA takes only its public key;
/// the name it certifies is the one it is asked to issue for.
pub fn make_csr(name: &str, key_pem: &str) -> Result<Vec<u8>, AuthorityError> {
    let name = check_node_name(name)?;
    let key = SecretKey::from_pem(key_pem)
        .map_err(|detail| AuthorityError::BadKey { path: "(node key)".into(), detail })?;
    let mut params = CertificateParams::new(vec![name.clone()])
        .map_err(|e| AuthorityError::Crypto(format!("certificate request: {e}")))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AuthorityError::Crypto(format!("certificate request: {e}")))?;
    Ok(csr.der().to_vec())
}

/// Checks that `name` is a DNS name we issue for (RFC 1123 labels of letters, digits
/// and hyphens, at most 63 characters each, 253 in all, no wildcard, no trailing dot);
/// the name in lower case.
pub fn check_node_name(name: &str) -> Result<String, AuthorityError> {
    let bad = |detail: &str| AuthorityError::BadName { name: name.into(), detail: detail.into() };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    if name.ends_with('.') {
        return Err(bad("give it without the trailing dot"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert_eq!(check_node_name("Node-1.Mesh.example").unwrap(), "node-1.mesh.example");
        assert_eq!(check_node_name("a").unwrap(), "a");
        for bad in ["", "a..b", "-a", "a-", "*.x", "a.b.", "a b", "ä", &"a".repeat(64)] {
            assert!(check_node_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
