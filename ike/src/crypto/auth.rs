//! Authentication data: what is signed (RFC 7296 section 2.15) and how the signature is
//! carried (RFC 7427, auth method 14), with Ed25519 (RFC 8420) and ECDSA P-256 with
//! SHA-256.
//!
//! ```text
//! InitiatorSignedOctets = RealMessage1 | NonceRData | MACedIDForI
//! MACedIDForI           = prf(SK_pi, RestOfInitIDPayload)      (the IDi payload's body)
//! ResponderSignedOctets = RealMessage2 | NonceIData | MACedIDForR
//! AUTH data (method 14) = ASN.1 length (1 byte) | AlgorithmIdentifier (DER) | signature
//! ```
//!
//! Signing and verifying go through [`Signer`] and [`Verifier`], so that keys can live
//! wherever the daemon keeps them and the certificate layer (the `ca` crate) can hand
//! out a verifier for a peer's certificate.

use super::Prf;

/// A signature algorithm of RFC 7427 and the `AlgorithmIdentifier` naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigAlg {
    /// Ed25519 (RFC 8420): the signed octets are signed whole, no pre-hash.
    Ed25519,
    /// ECDSA on P-256 with SHA-256; the signature is a DER `Ecdsa-Sig-Value`.
    EcdsaP256Sha256,
}

impl SigAlg {
    /// The DER `AlgorithmIdentifier` (parameters absent).
    pub fn algorithm_identifier(self) -> &'static [u8] {
        match self {
            // SEQUENCE { OID 1.3.101.112 (id-Ed25519) }
            SigAlg::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
            // SEQUENCE { OID 1.2.840.10045.4.3.2 (ecdsa-with-SHA256) }
            SigAlg::EcdsaP256Sha256 => {
                &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
            }
        }
    }

    /// The algorithm an `AlgorithmIdentifier` names, if we implement it.
    pub fn from_algorithm_identifier(der: &[u8]) -> Option<Self> {
        [SigAlg::Ed25519, SigAlg::EcdsaP256Sha256]
            .into_iter()
            .find(|a| a.algorithm_identifier() == der)
    }
}

/// Something that signs with our private key (which it keeps to itself).
pub trait Signer {
    /// The algorithm.
    fn algorithm(&self) -> SigAlg;
    /// A signature over `data`.
    fn sign(&self, data: &[u8]) -> Vec<u8>;
}

/// Something that checks signatures with a peer's public key.
pub trait Verifier {
    /// Whether `signature` by `alg` over `data` is valid for this key.
    fn verify(&self, alg: SigAlg, data: &[u8], signature: &[u8]) -> bool;
}

/// Why an AUTH payload was refused (answered with `AUTHENTICATION_FAILED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The AUTH data is not a well-formed RFC 7427 signature.
    #[error("malformed RFC 7427 authentication data")]
    Malformed,
    /// The signature algorithm is not one we accept.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// The signature does not verify with the peer's key.
    #[error("signature does not verify with the peer's certificate key")]
    BadSignature,
}

/// The octets a side signs (or the other side checks): its first message as sent, the
/// peer's nonce data, and `prf(SK_p, ID payload body)`.
pub fn signed_octets(
    real_message: &[u8],
    peer_nonce: &[u8],
    prf: Prf,
    sk_p: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let maced_id = prf.prf(sk_p, &[id_body]);
    [real_message, peer_nonce, &maced_id].concat()
}

/// AUTH payload data for method 14 (RFC 7427 section 3).
pub fn auth_data(signer: &dyn Signer, octets: &[u8]) -> Vec<u8> {
    let id = signer.algorithm().algorithm_identifier();
    let mut out = Vec::with_capacity(1 + id.len() + 72);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&signer.sign(octets));
    out
}

/// Checks method-14 AUTH data against `octets`; the algorithm used, if valid and in
/// `accepted`.
pub fn verify_auth_data(
    verifier: &dyn Verifier,
    accepted: &[SigAlg],
    data: &[u8],
    octets: &[u8],
) -> Result<SigAlg, AuthError> {
    let (&len, rest) = data.split_first().ok_or(AuthError::Malformed)?;
    let len = usize::from(len);
    if rest.len() <= len {
        return Err(AuthError::Malformed);
    }
    let (id, signature) = rest.split_at(len);
    let alg = SigAlg::from_algorithm_identifier(id).ok_or(AuthError::UnsupportedAlgorithm)?;
    if !accepted.contains(&alg) {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    if verifier.verify(alg, octets, signature) { Ok(alg) } else { Err(AuthError::BadSignature) }
}

/// An Ed25519 private key (zeroized on drop by ed25519-dalek).
pub struct Ed25519Signer(ed25519_dalek::SigningKey);

impl Ed25519Signer {
    /// From the 32-byte seed (RFC 8032's private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The matching public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Signer([redacted])")
    }
}

impl Signer for Ed25519Signer {
    fn algorithm(&self) -> SigAlg {
        SigAlg::Ed25519
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        self.0.sign(data).to_bytes().to_vec()
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone)]
pub struct Ed25519Verifier(ed25519_dalek::VerifyingKey);

impl Ed25519Verifier {
    /// From the 32-byte public key; `None` if it is not a valid point.
    pub fn from_bytes(key: &[u8; 32]) -> Option<Self> {
        ed25519_dalek::VerifyingKey::from_bytes(key).ok().map(Self)
    }
}

impl Verifier for Ed25519Verifier {
    fn verify(&self, alg: SigAlg, data: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else { return false };
        // Strict: refuses small-order keys and non-canonical signatures (malleability).
        alg == SigAlg::Ed25519 && self.0.verify_strict(data, &sig).is_ok()
    }
}

/// An ECDSA P-256 private key (zeroized on drop by the p256 crate).
pub struct EcdsaP256Signer(p256::ecdsa::SigningKey);

impl EcdsaP256Signer {
    /// From the 32-byte scalar; `None` if it is not a valid private key.
    pub fn from_bytes(scalar: &[u8]) -> Option<Self> {
        p256::ecdsa::SigningKey::from_slice(scalar).ok().map(Self)
    }

    /// The matching public key, SEC1 uncompressed.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.verifying_key().to_sec1_bytes().to_vec()
    }
}

impl std::fmt::Debug for EcdsaP256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcdsaP256Signer([redacted])")
    }
}

impl Signer for EcdsaP256Signer {
    fn algorithm(&self) -> SigAlg {
        SigAlg::EcdsaP256Sha256
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.0.sign(data);
        sig.to_der().as_bytes().to_vec()
    }
}

/// An ECDSA P-256 public key.
#[derive(Debug, Clone)]
pub struct EcdsaP256Verifier(p256::ecdsa::VerifyingKey);

impl EcdsaP256Verifier {
    /// From a SEC1 encoded point; `None` if it is not on the curve.
    pub fn from_sec1(point: &[u8]) -> Option<Self> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(point).ok().map(Self)
    }
}

impl Verifier for EcdsaP256Verifier {
    fn verify(&self, alg: SigAlg, data: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else { return false };
        alg == SigAlg::EcdsaP256Sha256 && self.0.verify(data, &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    #[test]
    fn ed25519_matches_rfc_8032_test_1() {
        let signer = Ed25519Signer::from_seed(&hex!(
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
        ));
        assert_eq!(
            signer.public_key(),
            hex!("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        assert_eq!(
            signer.sign(b""),
            hex!(
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
            )
        );
    }

    #[test]
    fn auth_data_round_trips_and_refuses_tampering() {
        let edwards = Ed25519Signer::from_seed(&[7; 32]);
        let edwards_pub = Ed25519Verifier::from_bytes(&edwards.public_key()).unwrap();
        let nist = EcdsaP256Signer::from_bytes(&[9; 32]).unwrap();
        let nist_pub = EcdsaP256Verifier::from_sec1(&nist.public_key()).unwrap();
        let octets =
            signed_octets(b"message one", &[1; 32], Prf::HmacSha256, &[2; 32], b"\x02\0\0\0node-a");
        let all = [SigAlg::Ed25519, SigAlg::EcdsaP256Sha256];
        for (signer, verifier, alg) in [
            (&edwards as &dyn Signer, &edwards_pub as &dyn Verifier, SigAlg::Ed25519),
            (&nist, &nist_pub, SigAlg::EcdsaP256Sha256),
        ] {
            let data = auth_data(signer, &octets);
            assert_eq!(data[0] as usize, alg.algorithm_identifier().len());
            assert_eq!(verify_auth_data(verifier, &all, &data, &octets), Ok(alg));
            let mut other = octets.clone();
            other[0] ^= 1;
            assert_eq!(
                verify_auth_data(verifier, &all, &data, &other),
                Err(AuthError::BadSignature)
            );
            let mut bad = data.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(verify_auth_data(verifier, &all, &bad, &octets).is_err());
            assert_eq!(
                verify_auth_data(verifier, &[], &data, &octets),
                Err(AuthError::UnsupportedAlgorithm)
            );
        }
        // The wrong key, and a mismatch between the named algorithm and the key.
        let edwards_auth = auth_data(&edwards, &octets);
        assert_eq!(
            verify_auth_data(&nist_pub, &all, &edwards_auth, &octets),
            Err(AuthError::BadSignature)
        );
        let other =
            Ed25519Verifier::from_bytes(&Ed25519Signer::from_seed(&[8; 32]).public_key()).unwrap();
        assert_eq!(
            verify_auth_data(&other, &all, &edwards_auth, &octets),
            Err(AuthError::BadSignature)
        );
        assert_eq!(verify_auth_data(&edwards_pub, &all, &[], &octets), Err(AuthError::Malformed));
        assert_eq!(
            verify_auth_data(&edwards_pub, &all, &[7, 0x30], &octets),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn the_maced_id_binds_the_identity() {
        let a = signed_octets(b"m", b"n", Prf::HmacSha256, b"k", b"\x02\0\0\0node-a");
        let b = signed_octets(b"m", b"n", Prf::HmacSha256, b"k", b"\x02\0\0\0node-b");
        assert_ne!(a, b);
        assert_eq!(a.len(), 1 + 1 + 32);
    }
}
