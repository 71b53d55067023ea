//! Authentication data: what is signed (RFC 7296 section 2.15) and how the signature is
//! carried: RFC 7427 (auth method 14) with Ed25519 (RFC 8420), ECDSA P-256 with SHA-256,
//! RSASSA-PSS with SHA-256 and RSASSA-PKCS1-v1_5 with SHA-256; and the classic methods
//! for peers without RFC 7427, RSA (method 1) and ECDSA P-256 (method 9, RFC 4754).
//!
//! ```text
//! InitiatorSignedOctets = RealMessage1 | NonceRData | MACedIDForI
//! MACedIDForI           = prf(SK_pi, RestOfInitIDPayload)      (the IDi payload's body)
//! ResponderSignedOctets = RealMessage2 | NonceIData | MACedIDForR
//! AUTH data (method 14) = ASN.1 length (1 byte) | AlgorithmIdentifier (DER) | signature
//! AUTH data (method 1)  = RSASSA-PKCS1-v1_5 signature with SHA-1
//! AUTH data (method 9)  = r | s, 32 bytes each
//! ```
//!
//! Signing and verifying go through [`Signer`] and [`Verifier`], so that keys can live
//! wherever the daemon keeps them and the certificate layer (the `ca` crate) can hand
//! out a verifier for a peer's certificate ([`verifier_from_spki`]).
//!
//! Ed25519 is ed25519-dalek's. ECDSA and RSA are aws-lc-rs's, the provider rustls uses by
//! default: `benches/signatures.rs` measures it an order of magnitude faster than the
//! RustCrypto crates for P-256 signing and about five times for RSA signing. aws-lc-rs
//! does not sign RSASSA-PKCS1-v1_5 with SHA-1, which auth method 1 needs (SHA-1 is the
//! hash implementations make and expect there, strongSwan among them), so that one
//! signature comes from the RustCrypto `rsa` crate. SHA-1 is accepted nowhere
//! else. ECDSA nonces and PSS salts come from the provider's own generator (seeded by
//! the operating system), not from the caller's [`Random`](super::Random): the
//! signatures are not reproducible, which nothing here needs.

use std::sync::Arc;

use aws_lc_rs::signature::{self as lc, KeyPair as _};
use der::{Decode as _, asn1::AnyRef, asn1::ObjectIdentifier as Oid};

use super::Prf;

/// id-Ed25519 (RFC 8410).
const OID_ED25519: Oid = Oid::new_unwrap("1.3.101.112");
/// id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
/// secp256r1, the named curve P-256 (RFC 5480).
const OID_P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
/// ecdsa-with-SHA256 (RFC 5758).
const OID_ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
/// rsaEncryption (RFC 8017).
const OID_RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
/// sha256WithRSAEncryption (RFC 8017).
const OID_RSA_PKCS1_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
/// id-RSASSA-PSS (RFC 8017).
const OID_RSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
/// id-mgf1 (RFC 8017).
const OID_MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
/// id-sha256 (RFC 5754).
const OID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");

/// The smallest RSA modulus we accept, ours or a peer's, in bits.
pub const RSA_MIN_BITS: usize = 2048;

/// A signature algorithm: the four of RFC 7427 (auth method 14) we implement, and the
/// two signatures of the classic methods, which have no `AlgorithmIdentifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigAlg {
    /// Ed25519 (RFC 8420): the signed octets are signed whole, no pre-hash.
    Ed25519,
    /// ECDSA on P-256 with SHA-256; the signature is a DER `Ecdsa-Sig-Value`.
    EcdsaP256Sha256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt (RFC 7427 A.4.3).
    RsaPssSha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (sha256WithRSAEncryption).
    RsaPkcs1Sha256,
    /// Auth method 9 (RFC 4754): ECDSA on P-256 with SHA-256, the signature `r | s`.
    EcdsaP256Sha256Fixed,
    /// Auth method 1 (RFC 7296 section 3.8): RSASSA-PKCS1-v1_5 with SHA-1, the hash
    /// every implementation uses there. Never accepted in method 14.
    RsaPkcs1Sha1,
}

/// The kinds of key we sign and verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// An Ed25519 key.
    Ed25519,
    /// An ECDSA key on P-256.
    EcdsaP256,
    /// An RSA key of at least [`RSA_MIN_BITS`] bits.
    Rsa,
}

impl KeyType {
    /// The signature this kind of key makes for the classic auth method (9 for P-256,
    /// 1 for RSA), when the peer does not do RFC 7427; Ed25519 has none.
    pub fn classic(self) -> Option<SigAlg> {
        match self {
            KeyType::Ed25519 => None,
            KeyType::EcdsaP256 => Some(SigAlg::EcdsaP256Sha256Fixed),
            KeyType::Rsa => Some(SigAlg::RsaPkcs1Sha1),
        }
    }
}

impl SigAlg {
    /// Every algorithm, RFC 7427 ones first.
    pub const ALL: [SigAlg; 6] = [
        SigAlg::Ed25519,
        SigAlg::EcdsaP256Sha256,
        SigAlg::RsaPssSha256,
        SigAlg::RsaPkcs1Sha256,
        SigAlg::EcdsaP256Sha256Fixed,
        SigAlg::RsaPkcs1Sha1,
    ];

    /// The DER `AlgorithmIdentifier` that names it in method 14; `None` for the classic
    /// forms. The bytes are what OpenSSL and the RustCrypto encoders write (tests check).
    pub fn algorithm_identifier(self) -> Option<&'static [u8]> {
        match self {
            // SEQUENCE { OID 1.3.101.112 (id-Ed25519) }
            SigAlg::Ed25519 => Some(&[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]),
            // SEQUENCE { OID 1.2.840.10045.4.3.2 (ecdsa-with-SHA256) }
            SigAlg::EcdsaP256Sha256 => {
                Some(&[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])
            }
            // RFC 7427 appendix A.4.3: SEQUENCE { OID id-RSASSA-PSS, RSASSA-PSS-params {
            //   [0] hashAlgorithm    SEQUENCE { OID id-sha256, NULL },
            //   [1] maskGenAlgorithm SEQUENCE { OID id-mgf1, SEQUENCE { OID id-sha256, NULL } },
            //   [2] saltLength       32 } }              (trailerField 1 is the default)
            SigAlg::RsaPssSha256 => Some(&[
                0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
                0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
                0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
            ]),
            // SEQUENCE { OID 1.2.840.113549.1.1.11 (sha256WithRSAEncryption), NULL }
            SigAlg::RsaPkcs1Sha256 => Some(&[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ]),
            SigAlg::EcdsaP256Sha256Fixed | SigAlg::RsaPkcs1Sha1 => None,
        }
    }

    /// The method-14 algorithm an `AlgorithmIdentifier` names, if we implement it. Read
    /// with a DER decoder, so that absent and NULL parameters of the hashes are both
    /// accepted (RFC 4055 section 2.1 allows both); PSS only with SHA-256, MGF1 with
    /// SHA-256 and a 32-byte salt.
    pub fn from_algorithm_identifier(der: &[u8]) -> Option<Self> {
        let id = spki::AlgorithmIdentifierRef::from_der(der).ok()?;
        let absent = id.parameters.is_none();
        let absent_or_null = id.parameters.is_none_or(AnyRef::is_null);
        match id.oid {
            OID_ED25519 if absent => Some(SigAlg::Ed25519),
            OID_ECDSA_SHA256 if absent => Some(SigAlg::EcdsaP256Sha256),
            OID_RSA_PKCS1_SHA256 if absent_or_null => Some(SigAlg::RsaPkcs1Sha256),
            OID_RSA_PSS => {
                // (Owned: pkcs1 decodes the borrowed form only from 'static bytes.)
                let params: pkcs1::RsaPssParamsOwned = id.parameters?.decode_as().ok()?;
                let sha256 = |a: &spki::AlgorithmIdentifierOwned| {
                    a.oid == OID_SHA256 && a.parameters.as_ref().is_none_or(der::Any::is_null)
                };
                let mgf = &params.mask_gen;
                (sha256(&params.hash)
                    && mgf.oid == OID_MGF1
                    && mgf.parameters.as_ref().is_some_and(sha256)
                    && params.salt_len == 32
                    && params.trailer_field == pkcs1::TrailerField::BC)
                    .then_some(SigAlg::RsaPssSha256)
            }
            _ => None,
        }
    }

    /// The kind of key that makes this signature.
    pub fn key_type(self) -> KeyType {
        match self {
            SigAlg::Ed25519 => KeyType::Ed25519,
            SigAlg::EcdsaP256Sha256 | SigAlg::EcdsaP256Sha256Fixed => KeyType::EcdsaP256,
            SigAlg::RsaPssSha256 | SigAlg::RsaPkcs1Sha256 | SigAlg::RsaPkcs1Sha1 => KeyType::Rsa,
        }
    }

    /// The hash, as numbered in `SIGNATURE_HASH_ALGORITHMS` (RFC 7427 section 7): 1 is
    /// SHA-1, 2 SHA2-256, 5 Identity (Ed25519 signs the octets whole, RFC 8420).
    pub fn hash_algorithm(self) -> u16 {
        match self {
            SigAlg::Ed25519 => 5,
            SigAlg::RsaPkcs1Sha1 => 1,
            SigAlg::EcdsaP256Sha256
            | SigAlg::EcdsaP256Sha256Fixed
            | SigAlg::RsaPssSha256
            | SigAlg::RsaPkcs1Sha256 => 2,
        }
    }
}

/// Why a signature could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key does not make this kind of signature (another key type, or an Ed25519 key
    /// asked for a classic method).
    #[error("this key cannot sign with {0:?}")]
    Unsupported(SigAlg),
    /// The crypto provider failed.
    #[error("the crypto provider failed to sign")]
    Failed,
}

/// Something that signs with our private key (which it keeps to itself).
pub trait Signer {
    /// The algorithm of its RFC 7427 (method 14) signatures.
    fn algorithm(&self) -> SigAlg;

    /// A signature over `data` with [`algorithm`](Self::algorithm). Implementations whose
    /// provider can fail return an empty signature then (which no peer accepts);
    /// [`sign_with`](Self::sign_with) says why instead.
    fn sign(&self, data: &[u8]) -> Vec<u8>;

    /// The kind of key.
    fn key_type(&self) -> KeyType {
        self.algorithm().key_type()
    }

    /// A signature over `data` with `alg`: [`algorithm`](Self::algorithm), or another
    /// this key makes (the classic form, [`KeyType::classic`]).
    fn sign_with(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
        if alg == self.algorithm() { Ok(self.sign(data)) } else { Err(SignError::Unsupported(alg)) }
    }
}

/// Something that checks signatures with a peer's public key.
pub trait Verifier {
    /// Whether `signature` by `alg` over `data` is valid for this key; `false` also when
    /// `alg` is not for this kind of key.
    fn verify(&self, alg: SigAlg, data: &[u8], signature: &[u8]) -> bool;

    /// The kind of key, if the verifier knows it: then a signature algorithm for another
    /// kind is refused as such ([`AuthError::KeyMismatch`]) rather than as a bad signature.
    fn key_type(&self) -> Option<KeyType> {
        None
    }
}

/// Why an AUTH payload was refused (answered with `AUTHENTICATION_FAILED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The AUTH data is not a well-formed RFC 7427 signature.
    #[error("malformed RFC 7427 authentication data")]
    Malformed,
    /// The signature algorithm is not one we accept.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// The signature algorithm is not made by the kind of key the peer's certificate has.
    #[error("a {alg:?} signature cannot come from the peer's {key:?} key")]
    KeyMismatch {
        /// What the AUTH payload says it is.
        alg: SigAlg,
        /// The peer's key.
        key: KeyType,
    },
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

/// AUTH payload data for method 14 (RFC 7427 section 3), with the signer's algorithm.
pub fn auth_data(signer: &dyn Signer, octets: &[u8]) -> Result<Vec<u8>, SignError> {
    let alg = signer.algorithm();
    let id = alg.algorithm_identifier().ok_or(SignError::Unsupported(alg))?;
    let signature = signer.sign_with(alg, octets)?;
    let mut out = Vec::with_capacity(1 + id.len() + signature.len());
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&signature);
    Ok(out)
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
    verify_signature(verifier, accepted, alg, signature, octets)?;
    Ok(alg)
}

/// Checks a bare signature by `alg` over `octets` (the AUTH data of methods 1 and 9),
/// if `alg` is in `accepted` and made by the verifier's kind of key.
pub fn verify_signature(
    verifier: &dyn Verifier,
    accepted: &[SigAlg],
    alg: SigAlg,
    signature: &[u8],
    octets: &[u8],
) -> Result<(), AuthError> {
    if !accepted.contains(&alg) {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    if let Some(key) = verifier.key_type().filter(|&k| k != alg.key_type()) {
        return Err(AuthError::KeyMismatch { alg, key });
    }
    if verifier.verify(alg, octets, signature) { Ok(()) } else { Err(AuthError::BadSignature) }
}

/// Why a key was refused: malformed, or of a type, curve or size this crate does not
/// take. Its message is one line and never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl From<String> for KeyError {
    fn from(why: String) -> Self {
        Self(why)
    }
}

impl From<&str> for KeyError {
    fn from(why: &str) -> Self {
        Self(why.to_owned())
    }
}

/// The verifier for a `SubjectPublicKeyInfo` (DER), as in a certificate: Ed25519, EC on
/// P-256, or RSA (rsaEncryption) of at least [`RSA_MIN_BITS`] bits; a one-line reason
/// otherwise.
pub fn verifier_from_spki(spki_der: &[u8]) -> Result<Box<dyn Verifier + Send + Sync>, KeyError> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| format!("malformed SubjectPublicKeyInfo: {e}"))?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("malformed SubjectPublicKeyInfo: the key is not a whole number of bytes")?;
    match spki.algorithm.oid {
        OID_ED25519 => {
            let key = <&[u8; 32]>::try_from(key)
                .map_err(|_| format!("an Ed25519 public key is 32 bytes, not {}", key.len()))?;
            let v = Ed25519Verifier::from_bytes(key).ok_or("invalid Ed25519 public key")?;
            Ok(Box::new(v))
        }
        OID_EC_PUBLIC_KEY => {
            let curve = spki.algorithm.parameters_oid().ok();
            if curve != Some(OID_P256) {
                return Err(KeyError::from(match curve {
                    Some(c) => format!("EC public key on curve {c}: only P-256 is supported"),
                    None => "EC public key without a named curve: only P-256 is supported".into(),
                }));
            }
            let v = EcdsaP256Verifier::from_sec1(key).ok_or("invalid P-256 public key")?;
            Ok(Box::new(v))
        }
        OID_RSA_ENCRYPTION => Ok(Box::new(RsaVerifier::from_pkcs1(key)?)),
        other => Err(KeyError::from(format!(
            "public key algorithm {other} is not supported (Ed25519, P-256 or RSA only)"
        ))),
    }
}

/// The signer for a PKCS#8 private key (DER, unencrypted), as rcgen and OpenSSL write
/// them: Ed25519, EC on P-256, or RSA of at least [`RSA_MIN_BITS`] bits (signing
/// RSASSA-PSS in method 14); a one-line reason otherwise, never key material.
pub fn signer_from_pkcs8(der: &[u8]) -> Result<Arc<dyn Signer + Send + Sync>, KeyError> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der)
        .map_err(|e| format!("malformed PKCS#8 private key: {e}"))?;
    match info.algorithm.oid {
        OID_ED25519 => Ok(Arc::new(Ed25519Signer::from_pkcs8(der)?)),
        OID_EC_PUBLIC_KEY => {
            let curve = info.algorithm.parameters_oid().ok();
            if curve != Some(OID_P256) {
                return Err(KeyError::from("EC private key not on P-256: only P-256 is supported"));
            }
            Ok(Arc::new(EcdsaP256Signer::from_pkcs8(der)?))
        }
        OID_RSA_ENCRYPTION => Ok(Arc::new(RsaSigner::from_pkcs8(der)?)),
        other => Err(KeyError::from(format!(
            "private key algorithm {other} is not supported (Ed25519, P-256 or RSA only)"
        ))),
    }
}

/// An Ed25519 private key (zeroized on drop by ed25519-dalek).
pub struct Ed25519Signer(ed25519_dalek::SigningKey);

impl Ed25519Signer {
    /// From the 32-byte seed (RFC 8032's private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// From a PKCS#8 private key (DER, RFC 8410).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(Self)
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key: {e}").into())
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

    fn key_type(&self) -> Option<KeyType> {
        Some(KeyType::Ed25519)
    }
}

/// An ECDSA P-256 private key (aws-lc-rs; AWS-LC wipes it when it frees it), once for
/// each signature encoding: DER for method 14, `r | s` for method 9.
pub struct EcdsaP256Signer {
    der: lc::EcdsaKeyPair,
    fixed: lc::EcdsaKeyPair,
}

impl EcdsaP256Signer {
    /// From the 32-byte scalar; `None` if it is not a valid private key (zero, or not
    /// below the group order, or not 32 bytes).
    pub fn from_bytes(scalar: &[u8]) -> Option<Self> {
        use aws_lc_rs::agreement;
        let private =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar).ok()?;
        let public = private.compute_public_key().ok()?;
        let pair = |alg: &'static lc::EcdsaSigningAlgorithm| {
            lc::EcdsaKeyPair::from_private_key_and_public_key(alg, scalar, public.as_ref()).ok()
        };
        Some(Self {
            der: pair(&lc::ECDSA_P256_SHA256_ASN1_SIGNING)?,
            fixed: pair(&lc::ECDSA_P256_SHA256_FIXED_SIGNING)?,
        })
    }

    /// From a PKCS#8 private key (DER, RFC 5915 inside), which must be on P-256.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = |alg: &'static lc::EcdsaSigningAlgorithm| {
            lc::EcdsaKeyPair::from_pkcs8(alg, der)
                .map_err(|e| KeyError::from(format!("not a P-256 PKCS#8 private key: {e}")))
        };
        Ok(Self {
            der: pair(&lc::ECDSA_P256_SHA256_ASN1_SIGNING)?,
            fixed: pair(&lc::ECDSA_P256_SHA256_FIXED_SIGNING)?,
        })
    }

    /// The matching public key, SEC1 uncompressed.
    pub fn public_key(&self) -> Vec<u8> {
        self.der.public_key().as_ref().to_vec()
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
        self.sign_with(SigAlg::EcdsaP256Sha256, data).unwrap_or_default()
    }

    fn sign_with(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let pair = match alg {
            SigAlg::EcdsaP256Sha256 => &self.der,
            SigAlg::EcdsaP256Sha256Fixed => &self.fixed,
            other => return Err(SignError::Unsupported(other)),
        };
        // aws-lc-rs ignores the generator passed here and uses its own.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        pair.sign(&rng, data).map(|s| s.as_ref().to_vec()).map_err(|_| SignError::Failed)
    }
}

/// An ECDSA P-256 public key, ready for both signature encodings.
#[derive(Clone)]
pub struct EcdsaP256Verifier {
    der: lc::ParsedPublicKey,
    fixed: lc::ParsedPublicKey,
}

impl EcdsaP256Verifier {
    /// From a SEC1 encoded point; `None` if it is not on the curve.
    pub fn from_sec1(point: &[u8]) -> Option<Self> {
        Some(Self {
            der: lc::ParsedPublicKey::new(&lc::ECDSA_P256_SHA256_ASN1, point).ok()?,
            fixed: lc::ParsedPublicKey::new(&lc::ECDSA_P256_SHA256_FIXED, point).ok()?,
        })
    }
}

impl std::fmt::Debug for EcdsaP256Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcdsaP256Verifier(..)")
    }
}

impl Verifier for EcdsaP256Verifier {
    fn verify(&self, alg: SigAlg, data: &[u8], signature: &[u8]) -> bool {
        let key = match alg {
            SigAlg::EcdsaP256Sha256 => &self.der,
            SigAlg::EcdsaP256Sha256Fixed => &self.fixed,
            _ => return false,
        };
        key.verify_sig(data, signature).is_ok()
    }

    fn key_type(&self) -> Option<KeyType> {
        Some(KeyType::EcdsaP256)
    }
}

/// The size in bits of an RSA modulus (big-endian).
fn modulus_bits(modulus: &[u8]) -> usize {
    let first = modulus.iter().position(|&b| b != 0).unwrap_or(modulus.len());
    let m = &modulus[first..];
    m.first().map_or(0, |&top| m.len() * 8 - top.leading_zeros() as usize)
}

/// Refuses RSA moduli under [`RSA_MIN_BITS`]; the size otherwise.
fn check_rsa_size(modulus: &[u8]) -> Result<usize, KeyError> {
    match modulus_bits(modulus) {
        bits if bits < RSA_MIN_BITS => Err(KeyError::from(format!(
            "RSA key of {bits} bits refused: at least {RSA_MIN_BITS} bits are required"
        ))),
        bits => Ok(bits),
    }
}

/// An RSA private key of at least [`RSA_MIN_BITS`] bits. It signs RSASSA-PSS with
/// SHA-256 in method 14 (or PKCS#1 v1.5 with SHA-256, [`RsaSigner::with_algorithm`]),
/// and PKCS#1 v1.5 with SHA-1 for method 1. The key is held by aws-lc-rs (AWS-LC wipes
/// it when it frees it) and, for the SHA-1 signatures only, by the `rsa` crate (zeroized
/// on drop).
pub struct RsaSigner {
    key: aws_lc_rs::rsa::KeyPair,
    /// `None` if the `rsa` crate refused the key (over its 4096-bit limit): no method 1.
    sha1: Option<rsa::pkcs1v15::SigningKey<sha1::Sha1>>,
    algorithm: SigAlg,
    bits: usize,
}

impl RsaSigner {
    /// From a PKCS#8 private key (DER, unencrypted) with an rsaEncryption key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        use rsa::pkcs8::DecodePrivateKey as _;
        let info = pkcs8::PrivateKeyInfoRef::from_der(der)
            .map_err(|e| format!("malformed PKCS#8 private key: {e}"))?;
        if info.algorithm.oid != OID_RSA_ENCRYPTION {
            return Err(KeyError::from(format!(
                "PKCS#8 key of algorithm {} is not an RSA key",
                info.algorithm.oid
            )));
        }
        let bits = Self::size(info.private_key.as_bytes())?;
        let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(der)
            .map_err(|e| format!("RSA private key refused: {e}"))?;
        let sha1 = rsa::RsaPrivateKey::from_pkcs8_der(der).ok().map(rsa::pkcs1v15::SigningKey::new);
        Ok(Self { key, sha1, algorithm: SigAlg::RsaPssSha256, bits })
    }

    /// From a PKCS#1 `RSAPrivateKey` (DER).
    pub fn from_pkcs1(der: &[u8]) -> Result<Self, KeyError> {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let bits = Self::size(der)?;
        let key = aws_lc_rs::rsa::KeyPair::from_der(der)
            .map_err(|e| format!("RSA private key refused: {e}"))?;
        let sha1 = rsa::RsaPrivateKey::from_pkcs1_der(der).ok().map(rsa::pkcs1v15::SigningKey::new);
        Ok(Self { key, sha1, algorithm: SigAlg::RsaPssSha256, bits })
    }

    /// The size of the key in an `RSAPrivateKey`, if large enough.
    fn size(rsa_private_key: &[u8]) -> Result<usize, KeyError> {
        let key = pkcs1::RsaPrivateKeyRef::from_der(rsa_private_key)
            .map_err(|e| format!("malformed RSA private key: {e}"))?;
        check_rsa_size(key.modulus.as_bytes())
    }

    /// The same key, signing with `alg` in method 14: [`SigAlg::RsaPssSha256`] (the
    /// default) or [`SigAlg::RsaPkcs1Sha256`].
    pub fn with_algorithm(mut self, alg: SigAlg) -> Result<Self, KeyError> {
        match alg {
            SigAlg::RsaPssSha256 | SigAlg::RsaPkcs1Sha256 => {
                self.algorithm = alg;
                Ok(self)
            }
            other => {
                Err(KeyError::from(format!("{other:?} is not an RFC 7427 algorithm for RSA keys")))
            }
        }
    }

    /// The matching public key, a PKCS#1 `RSAPublicKey` (DER).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// The size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaSigner")
            .field("bits", &self.bits)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Signer for RsaSigner {
    fn algorithm(&self) -> SigAlg {
        self.algorithm
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.sign_with(self.algorithm, data).unwrap_or_default()
    }

    fn sign_with(&self, alg: SigAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let encoding: &'static dyn lc::RsaEncoding = match alg {
            SigAlg::RsaPssSha256 => &lc::RSA_PSS_SHA256,
            SigAlg::RsaPkcs1Sha256 => &lc::RSA_PKCS1_SHA256,
            SigAlg::RsaPkcs1Sha1 => {
                use rsa::signature::{SignatureEncoding as _, Signer as _};
                let key = self.sha1.as_ref().ok_or(SignError::Unsupported(alg))?;
                return key.try_sign(data).map(|s| s.to_vec()).map_err(|_| SignError::Failed);
            }
            other => return Err(SignError::Unsupported(other)),
        };
        let mut signature = vec![0; self.key.public_modulus_len()];
        // aws-lc-rs ignores the generator passed here and uses its own (PSS salts).
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key.sign(encoding, &rng, data, &mut signature).map_err(|_| SignError::Failed)?;
        Ok(signature)
    }
}

/// An RSA public key of at least [`RSA_MIN_BITS`] bits, ready for PSS with SHA-256 and
/// PKCS#1 v1.5 with SHA-256 (method 14) and with SHA-1 (method 1 only).
#[derive(Clone)]
pub struct RsaVerifier {
    pss: lc::ParsedPublicKey,
    pkcs1_sha256: lc::ParsedPublicKey,
    pkcs1_sha1: lc::ParsedPublicKey,
    bits: usize,
}

impl RsaVerifier {
    /// From a PKCS#1 `RSAPublicKey` (DER).
    pub fn from_pkcs1(der: &[u8]) -> Result<Self, KeyError> {
        let key = pkcs1::RsaPublicKeyRef::from_der(der)
            .map_err(|e| format!("malformed RSA public key: {e}"))?;
        let bits = check_rsa_size(key.modulus.as_bytes())?;
        let parse = |alg: &'static lc::RsaParameters| {
            lc::ParsedPublicKey::new(alg, der)
                .map_err(|e| KeyError::from(format!("RSA public key refused: {e}")))
        };
        Ok(Self {
            pss: parse(&lc::RSA_PSS_2048_8192_SHA256)?,
            pkcs1_sha256: parse(&lc::RSA_PKCS1_2048_8192_SHA256)?,
            pkcs1_sha1: parse(&lc::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)?,
            bits,
        })
    }

    /// From a `SubjectPublicKeyInfo` (DER) with an rsaEncryption key.
    pub fn from_spki(der: &[u8]) -> Result<Self, KeyError> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("malformed SubjectPublicKeyInfo: {e}"))?;
        if spki.algorithm.oid != OID_RSA_ENCRYPTION {
            return Err(KeyError::from(format!(
                "public key of algorithm {} is not an RSA key",
                spki.algorithm.oid
            )));
        }
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("malformed SubjectPublicKeyInfo: the key is not a whole number of bytes")?;
        Self::from_pkcs1(key)
    }

    /// The size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }
}

impl std::fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaVerifier").field("bits", &self.bits).finish_non_exhaustive()
    }
}

impl Verifier for RsaVerifier {
    fn verify(&self, alg: SigAlg, data: &[u8], signature: &[u8]) -> bool {
        let key = match alg {
            SigAlg::RsaPssSha256 => &self.pss,
            SigAlg::RsaPkcs1Sha256 => &self.pkcs1_sha256,
            SigAlg::RsaPkcs1Sha1 => &self.pkcs1_sha1,
            _ => return false,
        };
        key.verify_sig(data, signature).is_ok()
    }

    fn key_type(&self) -> Option<KeyType> {
        Some(KeyType::Rsa)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use der::Encode as _;
    use hex_literal::hex;
    use vectors::*;

    fn octets() -> Vec<u8> {
        signed_octets(b"message one", &[1; 32], Prf::HmacSha256, &[2; 32], b"\x02\0\0\0node-a")
    }

    /// Why a key was refused.
    fn refusal<T>(r: Result<T, KeyError>) -> String {
        r.err().expect("the key was accepted").to_string()
    }

    fn rsa() -> RsaSigner {
        RsaSigner::from_pkcs8(RSA2048_PKCS8).unwrap()
    }

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
        let pss = rsa();
        let pkcs1 = rsa().with_algorithm(SigAlg::RsaPkcs1Sha256).unwrap();
        let rsa_pub = RsaVerifier::from_pkcs1(&pss.public_key()).unwrap();
        let octets = octets();
        let all = SigAlg::ALL;
        for (signer, verifier, alg) in [
            (&edwards as &dyn Signer, &edwards_pub as &dyn Verifier, SigAlg::Ed25519),
            (&nist, &nist_pub, SigAlg::EcdsaP256Sha256),
            (&pss, &rsa_pub, SigAlg::RsaPssSha256),
            (&pkcs1, &rsa_pub, SigAlg::RsaPkcs1Sha256),
        ] {
            let data = auth_data(signer, &octets).unwrap();
            assert_eq!(data[0] as usize, alg.algorithm_identifier().unwrap().len());
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
        // A mismatch between the named algorithm and the key, and the wrong key.
        let edwards_auth = auth_data(&edwards, &octets).unwrap();
        assert_eq!(
            verify_auth_data(&nist_pub, &all, &edwards_auth, &octets),
            Err(AuthError::KeyMismatch { alg: SigAlg::Ed25519, key: KeyType::EcdsaP256 })
        );
        let other =
            Ed25519Verifier::from_bytes(&Ed25519Signer::from_seed(&[8; 32]).public_key()).unwrap();
        assert_eq!(
            verify_auth_data(&other, &all, &edwards_auth, &octets),
            Err(AuthError::BadSignature)
        );
        let other_nist = EcdsaP256Verifier::from_sec1(
            &EcdsaP256Signer::from_bytes(&[10; 32]).unwrap().public_key(),
        )
        .unwrap();
        assert_eq!(
            verify_auth_data(&other_nist, &all, &auth_data(&nist, &octets).unwrap(), &octets),
            Err(AuthError::BadSignature)
        );
        let other_rsa = verifier_from_spki(&rsa_3072_spki()).unwrap();
        assert_eq!(
            verify_auth_data(&*other_rsa, &all, &auth_data(&pss, &octets).unwrap(), &octets),
            Err(AuthError::BadSignature)
        );
        assert_eq!(verify_auth_data(&edwards_pub, &all, &[], &octets), Err(AuthError::Malformed));
        assert_eq!(
            verify_auth_data(&edwards_pub, &all, &[7, 0x30], &octets),
            Err(AuthError::Malformed)
        );
    }

    /// The public key of a second RSA key (3072 bits), made here by aws-lc-rs.
    fn rsa_3072_spki() -> Vec<u8> {
        use aws_lc_rs::encoding::AsDer as _;
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
        key.public_key().as_der().unwrap().as_ref().to_vec()
    }

    #[test]
    fn the_maced_id_binds_the_identity() {
        let a = signed_octets(b"m", b"n", Prf::HmacSha256, b"k", b"\x02\0\0\0node-a");
        let b = signed_octets(b"m", b"n", Prf::HmacSha256, b"k", b"\x02\0\0\0node-b");
        assert_ne!(a, b);
        assert_eq!(a.len(), 1 + 1 + 32);
    }

    #[test]
    fn algorithm_identifiers_are_what_encoders_write() {
        use rsa::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs8::spki::DynSignatureAlgorithmIdentifier as _;
        let encode = |oid, parameters: Option<AnyRef<'_>>| {
            spki::AlgorithmIdentifierRef { oid, parameters }.to_der().unwrap()
        };
        let id = |alg: SigAlg| alg.algorithm_identifier().unwrap().to_vec();
        assert_eq!(id(SigAlg::Ed25519), encode(OID_ED25519, None));
        assert_eq!(id(SigAlg::EcdsaP256Sha256), encode(OID_ECDSA_SHA256, None));
        assert_eq!(id(SigAlg::RsaPkcs1Sha256), encode(OID_RSA_PKCS1_SHA256, Some(AnyRef::NULL)));
        // The RustCrypto `rsa` crate's own identifiers for its signing keys.
        let key = rsa::RsaPrivateKey::from_pkcs8_der(RSA2048_PKCS8).unwrap();
        let pss = rsa::pss::SigningKey::<sha2::Sha256>::new(key.clone());
        assert_eq!(
            id(SigAlg::RsaPssSha256),
            pss.signature_algorithm_identifier().unwrap().to_der().unwrap()
        );
        let pkcs1 = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
        assert_eq!(
            id(SigAlg::RsaPkcs1Sha256),
            pkcs1.signature_algorithm_identifier().unwrap().to_der().unwrap()
        );
        // OpenSSL 3.0's, from a certificate signed with `-sigopt rsa_padding_mode:pss
        // -sigopt rsa_pss_saltlen:32 -sigopt rsa_mgf1_md:sha256`.
        assert_eq!(
            id(SigAlg::RsaPssSha256),
            hex!(
                "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886"
                "f70d010108300d06096086480165030402010500a203020120"
            )
        );
        for alg in SigAlg::ALL {
            let back = alg.algorithm_identifier().and_then(SigAlg::from_algorithm_identifier);
            let classic = matches!(alg, SigAlg::EcdsaP256Sha256Fixed | SigAlg::RsaPkcs1Sha1);
            assert_eq!(back, (!classic).then_some(alg), "{alg:?}");
        }
    }

    #[test]
    fn algorithm_identifiers_are_read_by_meaning() {
        let encode = |oid, parameters: Option<AnyRef<'_>>| {
            spki::AlgorithmIdentifierRef { oid, parameters }.to_der().unwrap()
        };
        let pss = |hash: spki::AlgorithmIdentifierRef<'static>, salt_len| {
            let params = pkcs1::RsaPssParams {
                hash,
                mask_gen: spki::AlgorithmIdentifier { oid: OID_MGF1, parameters: Some(hash) },
                salt_len,
                trailer_field: pkcs1::TrailerField::BC,
            }
            .to_der()
            .unwrap();
            let any = AnyRef::from_der(&params).unwrap();
            SigAlg::from_algorithm_identifier(&encode(OID_RSA_PSS, Some(any)))
        };
        let sha256 = |parameters| spki::AlgorithmIdentifierRef { oid: OID_SHA256, parameters };
        // SHA-256 with absent parameters instead of NULL (RFC 4055 allows both).
        assert_eq!(pss(sha256(None), 32), Some(SigAlg::RsaPssSha256));
        assert_eq!(pss(sha256(Some(AnyRef::NULL)), 32), Some(SigAlg::RsaPssSha256));
        assert_eq!(
            SigAlg::from_algorithm_identifier(&encode(OID_RSA_PKCS1_SHA256, None)),
            Some(SigAlg::RsaPkcs1Sha256)
        );
        // Other salt lengths and hashes are not ours; nor is PSS without parameters.
        assert_eq!(pss(sha256(None), 20), None);
        let sha1 = Oid::new_unwrap("1.3.14.3.2.26");
        assert_eq!(pss(spki::AlgorithmIdentifierRef { oid: sha1, parameters: None }, 32), None);
        assert_eq!(SigAlg::from_algorithm_identifier(&encode(OID_RSA_PSS, None)), None);
        // sha1WithRSAEncryption: SHA-1 is never accepted in method 14.
        let sha1_rsa = Oid::new_unwrap("1.2.840.113549.1.1.5");
        assert_eq!(SigAlg::from_algorithm_identifier(&encode(sha1_rsa, Some(AnyRef::NULL))), None);
        // Parameters where there must be none, trailing bytes, truncation.
        assert_eq!(
            SigAlg::from_algorithm_identifier(&encode(OID_ECDSA_SHA256, Some(AnyRef::NULL))),
            None
        );
        let mut trailing = SigAlg::Ed25519.algorithm_identifier().unwrap().to_vec();
        trailing.push(0);
        assert_eq!(SigAlg::from_algorithm_identifier(&trailing), None);
        let id = SigAlg::RsaPssSha256.algorithm_identifier().unwrap();
        for len in 0..id.len() {
            assert_eq!(SigAlg::from_algorithm_identifier(&id[..len]), None);
        }
    }

    #[test]
    fn openssl_signatures_verify() {
        let rsa = verifier_from_spki(RSA2048_SPKI).unwrap();
        assert_eq!(rsa.key_type(), Some(KeyType::Rsa));
        assert!(rsa.verify(SigAlg::RsaPssSha256, MESSAGE, RSA_PSS_SIG));
        assert!(rsa.verify(SigAlg::RsaPkcs1Sha256, MESSAGE, RSA_PKCS1_SHA256_SIG));
        assert!(rsa.verify(SigAlg::RsaPkcs1Sha1, MESSAGE, RSA_PKCS1_SHA1_SIG));
        // Each only as what it is.
        assert!(!rsa.verify(SigAlg::RsaPkcs1Sha256, MESSAGE, RSA_PSS_SIG));
        assert!(!rsa.verify(SigAlg::RsaPssSha256, MESSAGE, RSA_PKCS1_SHA256_SIG));
        assert!(!rsa.verify(SigAlg::RsaPkcs1Sha1, MESSAGE, RSA_PKCS1_SHA256_SIG));
        assert!(!rsa.verify(SigAlg::EcdsaP256Sha256, MESSAGE, RSA_PKCS1_SHA256_SIG));
        let from_pkcs1 = RsaVerifier::from_pkcs1(RSA2048_PKCS1_PUBLIC).unwrap();
        assert!(from_pkcs1.verify(SigAlg::RsaPssSha256, MESSAGE, RSA_PSS_SIG));
        assert_eq!(from_pkcs1.bits(), 2048);

        let ec = verifier_from_spki(P256_SPKI).unwrap();
        assert!(ec.verify(SigAlg::EcdsaP256Sha256, MESSAGE, ECDSA_P256_SIG));
        assert!(!ec.verify(SigAlg::EcdsaP256Sha256Fixed, MESSAGE, ECDSA_P256_SIG));
        assert!(!ec.verify(SigAlg::EcdsaP256Sha256, b"another message", ECDSA_P256_SIG));

        let ed = verifier_from_spki(ED25519_SPKI).unwrap();
        assert!(ed.verify(SigAlg::Ed25519, MESSAGE, ED25519_SIG));
        assert!(!ed.verify(SigAlg::Ed25519, b"another message", ED25519_SIG));
    }

    #[test]
    fn deterministic_signatures_match_openssl() {
        // PKCS#1 v1.5 and Ed25519 signatures depend only on the key and the message.
        let rsa = RsaSigner::from_pkcs1(RSA2048_PKCS1).unwrap();
        assert_eq!(rsa.sign_with(SigAlg::RsaPkcs1Sha256, MESSAGE).unwrap(), RSA_PKCS1_SHA256_SIG);
        assert_eq!(rsa.sign_with(SigAlg::RsaPkcs1Sha1, MESSAGE).unwrap(), RSA_PKCS1_SHA1_SIG);
        let ed = Ed25519Signer::from_pkcs8(ED25519_PKCS8).unwrap();
        assert_eq!(ed.sign(MESSAGE), ED25519_SIG);
        assert_eq!(&ed.public_key()[..], &ED25519_SPKI[12..]);
    }

    #[test]
    fn rsa_signers_round_trip_in_every_form() {
        let octets = octets();
        let by_pkcs8 = rsa();
        let by_pkcs1 = RsaSigner::from_pkcs1(RSA2048_PKCS1).unwrap();
        assert_eq!(by_pkcs8.public_key(), RSA2048_PKCS1_PUBLIC);
        assert_eq!(by_pkcs1.public_key(), RSA2048_PKCS1_PUBLIC);
        assert_eq!((by_pkcs8.bits(), by_pkcs8.algorithm()), (2048, SigAlg::RsaPssSha256));
        assert_eq!(by_pkcs8.key_type(), KeyType::Rsa);
        let verifier = RsaVerifier::from_spki(RSA2048_SPKI).unwrap();
        for alg in [SigAlg::RsaPssSha256, SigAlg::RsaPkcs1Sha256, SigAlg::RsaPkcs1Sha1] {
            for signer in [&by_pkcs8, &by_pkcs1] {
                let sig = signer.sign_with(alg, &octets).unwrap();
                assert_eq!(sig.len(), 256);
                assert!(verifier.verify(alg, &octets, &sig), "{alg:?}");
                let mut bad = sig.clone();
                bad[100] ^= 0x10;
                assert!(!verifier.verify(alg, &octets, &bad), "{alg:?}");
                assert!(!verifier.verify(alg, &octets[1..], &sig), "{alg:?}");
            }
        }
        // PSS is randomized: two signatures differ, both verify.
        assert_ne!(by_pkcs8.sign(&octets), by_pkcs8.sign(&octets));
        for alg in [SigAlg::Ed25519, SigAlg::EcdsaP256Sha256, SigAlg::EcdsaP256Sha256Fixed] {
            assert_eq!(by_pkcs8.sign_with(alg, &octets), Err(SignError::Unsupported(alg)));
        }
        assert!(rsa().with_algorithm(SigAlg::RsaPkcs1Sha1).is_err());
        assert!(rsa().with_algorithm(SigAlg::Ed25519).is_err());
        let pkcs1 = rsa().with_algorithm(SigAlg::RsaPkcs1Sha256).unwrap();
        assert_eq!(pkcs1.algorithm(), SigAlg::RsaPkcs1Sha256);
        assert!(verifier.verify(SigAlg::RsaPkcs1Sha256, &octets, &pkcs1.sign(&octets)));
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_refused() {
        let why = RsaSigner::from_pkcs8(RSA1024_PKCS8).unwrap_err().to_string();
        assert_eq!(why, "RSA key of 1024 bits refused: at least 2048 bits are required");
        assert_eq!(refusal(signer_from_pkcs8(RSA1024_PKCS8)), why);
        assert_eq!(RsaVerifier::from_spki(RSA1024_SPKI).unwrap_err().to_string(), why);
        assert_eq!(refusal(verifier_from_spki(RSA1024_SPKI)), why);
        assert_eq!(modulus_bits(&[0, 0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[0x80, 0]), 16);
        assert_eq!(modulus_bits(&[]), 0);
    }

    #[test]
    fn keys_are_recognised_from_pkcs8_and_spki() {
        let octets = octets();
        for (pkcs8, spki, alg) in [
            (ED25519_PKCS8, ED25519_SPKI, SigAlg::Ed25519),
            (P256_PKCS8, P256_SPKI, SigAlg::EcdsaP256Sha256),
            (RSA2048_PKCS8, RSA2048_SPKI, SigAlg::RsaPssSha256),
        ] {
            let signer = signer_from_pkcs8(pkcs8).unwrap();
            let verifier = verifier_from_spki(spki).unwrap();
            assert_eq!(signer.algorithm(), alg);
            assert_eq!(verifier.key_type(), Some(alg.key_type()));
            let data = auth_data(&*signer, &octets).unwrap();
            assert_eq!(verify_auth_data(&*verifier, &SigAlg::ALL, &data, &octets), Ok(alg));
            if let Some(classic) = alg.key_type().classic() {
                let sig = signer.sign_with(classic, &octets).unwrap();
                assert_eq!(
                    verify_signature(&*verifier, &SigAlg::ALL, classic, &sig, &octets),
                    Ok(())
                );
            }
            // Truncated or swapped inputs are refused with a reason.
            assert!(signer_from_pkcs8(&pkcs8[..pkcs8.len() - 1]).is_err());
            assert!(verifier_from_spki(&spki[..spki.len() - 1]).is_err());
            assert!(signer_from_pkcs8(spki).is_err());
            assert!(verifier_from_spki(pkcs8).is_err());
        }
        let ec = EcdsaP256Signer::from_pkcs8(P256_PKCS8).unwrap();
        assert_eq!(ec.public_key(), &P256_SPKI[P256_SPKI.len() - 65..]);
        // X25519 (1.3.101.110) is a key, but not one that signs.
        let mut x25519 = ED25519_SPKI.to_vec();
        x25519[8] = 0x6e;
        let why = refusal(verifier_from_spki(&x25519));
        assert!(why.contains("1.3.101.110") && why.contains("not supported"), "{why}");
        assert!(Ed25519Signer::from_pkcs8(P256_PKCS8).is_err());
        assert!(EcdsaP256Signer::from_pkcs8(ED25519_PKCS8).is_err());
        assert!(RsaSigner::from_pkcs8(P256_PKCS8).is_err());
        assert!(RsaVerifier::from_spki(P256_SPKI).is_err());
    }

    #[test]
    fn p256_scalars_are_checked_and_both_encodings_made() {
        assert!(EcdsaP256Signer::from_bytes(&[0; 32]).is_none());
        assert!(EcdsaP256Signer::from_bytes(&[0xff; 32]).is_none());
        assert!(EcdsaP256Signer::from_bytes(&[9; 31]).is_none());
        assert!(EcdsaP256Verifier::from_sec1(&[4; 65]).is_none());
        let signer = EcdsaP256Signer::from_bytes(&[9; 32]).unwrap();
        // The same key as the p256 crate makes of the scalar (it also does our D-H).
        let p256_key = p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
        assert_eq!(signer.public_key(), p256_key.verifying_key().to_sec1_bytes().to_vec());
        let verifier = EcdsaP256Verifier::from_sec1(&signer.public_key()).unwrap();
        let octets = octets();
        let fixed = signer.sign_with(SigAlg::EcdsaP256Sha256Fixed, &octets).unwrap();
        assert_eq!(fixed.len(), 64);
        assert!(verifier.verify(SigAlg::EcdsaP256Sha256Fixed, &octets, &fixed));
        assert!(!verifier.verify(SigAlg::EcdsaP256Sha256, &octets, &fixed));
        // A signature the p256 crate makes verifies in both encodings.
        let theirs: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(&p256_key, &octets);
        assert!(verifier.verify(SigAlg::EcdsaP256Sha256Fixed, &octets, &theirs.to_bytes()));
        assert!(verifier.verify(SigAlg::EcdsaP256Sha256, &octets, theirs.to_der().as_bytes()));
        for alg in [SigAlg::Ed25519, SigAlg::RsaPssSha256, SigAlg::RsaPkcs1Sha1] {
            assert_eq!(signer.sign_with(alg, &octets), Err(SignError::Unsupported(alg)));
        }
    }

    #[test]
    fn classic_signatures_are_checked_like_the_others() {
        let octets = octets();
        let all = SigAlg::ALL;
        let nist = EcdsaP256Signer::from_bytes(&[9; 32]).unwrap();
        let nist_pub = EcdsaP256Verifier::from_sec1(&nist.public_key()).unwrap();
        let rsa = rsa();
        let rsa_pub = RsaVerifier::from_spki(RSA2048_SPKI).unwrap();
        for (signer, verifier, alg) in [
            (&nist as &dyn Signer, &nist_pub as &dyn Verifier, SigAlg::EcdsaP256Sha256Fixed),
            (&rsa, &rsa_pub, SigAlg::RsaPkcs1Sha1),
        ] {
            let sig = signer.sign_with(alg, &octets).unwrap();
            assert_eq!(verify_signature(verifier, &all, alg, &sig, &octets), Ok(()));
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert_eq!(
                verify_signature(verifier, &all, alg, &bad, &octets),
                Err(AuthError::BadSignature)
            );
            assert_eq!(
                verify_signature(verifier, &all, alg, &sig, b"other octets"),
                Err(AuthError::BadSignature)
            );
            assert_eq!(
                verify_signature(verifier, &SigAlg::ALL[..4], alg, &sig, &octets),
                Err(AuthError::UnsupportedAlgorithm)
            );
        }
        // Method 9 with an RSA key, method 1 with a P-256 key.
        let fixed = nist.sign_with(SigAlg::EcdsaP256Sha256Fixed, &octets).unwrap();
        assert_eq!(
            verify_signature(&rsa_pub, &all, SigAlg::EcdsaP256Sha256Fixed, &fixed, &octets),
            Err(AuthError::KeyMismatch { alg: SigAlg::EcdsaP256Sha256Fixed, key: KeyType::Rsa })
        );
        let sha1 = rsa.sign_with(SigAlg::RsaPkcs1Sha1, &octets).unwrap();
        assert_eq!(
            verify_signature(&nist_pub, &all, SigAlg::RsaPkcs1Sha1, &sha1, &octets),
            Err(AuthError::KeyMismatch { alg: SigAlg::RsaPkcs1Sha1, key: KeyType::EcdsaP256 })
        );
        // Another key of the right type.
        let other = EcdsaP256Verifier::from_sec1(
            &EcdsaP256Signer::from_bytes(&[10; 32]).unwrap().public_key(),
        )
        .unwrap();
        assert_eq!(
            verify_signature(&other, &all, SigAlg::EcdsaP256Sha256Fixed, &fixed, &octets),
            Err(AuthError::BadSignature)
        );
        // Ed25519 has no classic form.
        assert_eq!(KeyType::Ed25519.classic(), None);
        let ed = Ed25519Signer::from_seed(&[7; 32]);
        assert!(ed.sign_with(SigAlg::EcdsaP256Sha256Fixed, &octets).is_err());
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let rsa = rsa();
        assert_eq!(format!("{rsa:?}"), "RsaSigner { bits: 2048, algorithm: RsaPssSha256, .. }");
        let verifier = RsaVerifier::from_spki(RSA2048_SPKI).unwrap();
        assert_eq!(format!("{verifier:?}"), "RsaVerifier { bits: 2048, .. }");
        let ec = EcdsaP256Signer::from_pkcs8(P256_PKCS8).unwrap();
        assert_eq!(format!("{ec:?}"), "EcdsaP256Signer([redacted])");
        let ed = Ed25519Signer::from_pkcs8(ED25519_PKCS8).unwrap();
        assert_eq!(format!("{ed:?}"), "Ed25519Signer([redacted])");
        // Errors name the problem, not the bytes.
        let mut broken = RSA2048_PKCS8.to_vec();
        broken[40] ^= 0xff;
        if let Err(why) = signer_from_pkcs8(&broken) {
            assert!(!why.to_string().contains("e3b468"), "{why}");
        }
    }

    /// Keys and signatures made with OpenSSL 3.0 (the commands are in each comment).
    pub(crate) mod vectors {
        use hex_literal::hex;

        /// What the openssl signatures sign.
        pub(crate) const MESSAGE: &[u8] = b"ikemesh: octets signed by openssl";

        /// RSA-2048 private key, PKCS#8 (`openssl genpkey` then `openssl pkcs8 -topk8`).
        pub(crate) const RSA2048_PKCS8: &[u8] = &hex!(
            "308204be020100300d06092a864886f70d0101010500048204a8308204a40201000282010100e3b46880e1de"
            "ee067c9b101f7367e568653d13f0c9e480d701df94307104fc2ef215917e80ec688d3c6189ad7187e26a89f9"
            "5cdeb13416692fd6148e4619e3a0379bd175ba55008418ceace0d5492b549871921640695a9c9159cc6cfbe8"
            "aa23b82be1d82fea7c4698c867c095996d5818bacc65ce2b38f3acea5ade5a9ba401b51c48fe4701c150df0a"
            "cb5fd04d73c56480b5ad8bc4d2460f453c9af69d638738e0c186854d200de9559f36e628f82dd1cea501a6fa"
            "4f5ffc83461bbecad9caceef34bb066255d103780e6944f0444bbff95f59be59d031e13afb696c871637d6b5"
            "28dc00e7e3416bfd1a96a40a10023167f73352b85d91e890bc427fa78c9f0203010001028201004551938ac0"
            "b82bffff88f91489fe74011ee8c41c4669f0ab039ffbadef8a13f77aad0438dda89a7f7c8538f37b1f61d70b"
            "1fc59ce99730c75ecfae3c4dacedf5c5580320f2d393afa319afd95634cb231ab16046b3df1ebd9126242c7d"
            "57ac0be9b23a33a50a9e40a39c46b183194d0747a7fe3773d706a46fdc7c433a942d0de0e729748ff5d53ca8"
            "8675f87cc5327aa7efca0d6983ea11f55868fecbce7242dbcee0399af988c254ef7e675c50e44ab07add48da"
            "09a4b59580ae34b50d437c3d91d8b334f46883369baec893267fb39c18f66e44ad4e196ebe25ec72ba71e96f"
            "f47d96bd9abb607bdd433e029cc71ae64bd634090bb108ce432897a1a34d8902818100fafa39449871bad23f"
            "d2322cf557bc9ce6452a284a97c54868d8d0a4347107032bb620c0aeb2172f8a149d4ee7fa7cde9c88880e41"
            "4089cd1b0500e4b1e261aae9bf82030bc3368c6efa894997c949c6ec02be544eb9e68d3e58991e9c47b70459"
            "8dd2387b5be2057edbe5c7d2dab598b6828a58f7132854cba337d310d53a7b02818100e842f4e5f87e053486"
            "017b25e9663499a5f0afc100d9092b2efbd8dfdea7ed60fb73200df2cb630cb920a7b0b4b154311533758e34"
            "5b55ecac2992e43ef02fd6b0f2cbf1d090a7b59c519e5f693577992b1b6f83bc074c65aff07394d464ba9346"
            "faf2903bc9259879f1f5a5e64856f0589d2d84c4e46d6bd4158da35bd83f2d028181008a6a560b2ec80a70ca"
            "21f2ea38a51ab0ad8e97a18102131bcc37475a4851cdbc41ef40410417d411b3e58a9c69f40bc9fa2a925eca"
            "3dfdc1d09501d91f01eb3b878ec6f54717728e20e6abb09ab5b8aaac9f16b908721e64e76d9584fc4bd0f3e5"
            "3002308458385f2f87b7426d5791af97788734698f773eccd04789704f28e102818100894048083e37fa4b77"
            "851888e6cc06f9651e3e3e078a39e8d2f2f0ce1a7d91c165d63a7303af3cf11fd5344330043a8466caea0506"
            "db92833199bfbc31952e2fe8911203ec040f973ab0e0adf1362f5ecc22825b8e99a183d5dc79f0d132552f03"
            "1af88c534822776058a3994de421bc16218bec918d8b3bd530876aa9b3b8610281801393eda4f945ea16d63b"
            "a0d2615a32b6e26ba31f490bbe472c4d5b73798c53eb94ca84714c30b4d7033812e4b4c1c56f206ebe5f1365"
            "ed80117c0eaf07ed7c5081a9ef44d7a81d1227049b07f47785b4933b343424a56a92165694604dd649831f45"
            "eecd3270255aaa93271867faca8ba4ab3340893fbe005cc522c81be25eef"
        );

        /// The same key as PKCS#1 `RSAPrivateKey`.
        pub(crate) const RSA2048_PKCS1: &[u8] = &hex!(
            "308204a40201000282010100e3b46880e1deee067c9b101f7367e568653d13f0c9e480d701df94307104fc2e"
            "f215917e80ec688d3c6189ad7187e26a89f95cdeb13416692fd6148e4619e3a0379bd175ba55008418ceace0"
            "d5492b549871921640695a9c9159cc6cfbe8aa23b82be1d82fea7c4698c867c095996d5818bacc65ce2b38f3"
            "acea5ade5a9ba401b51c48fe4701c150df0acb5fd04d73c56480b5ad8bc4d2460f453c9af69d638738e0c186"
            "854d200de9559f36e628f82dd1cea501a6fa4f5ffc83461bbecad9caceef34bb066255d103780e6944f0444b"
            "bff95f59be59d031e13afb696c871637d6b528dc00e7e3416bfd1a96a40a10023167f73352b85d91e890bc42"
            "7fa78c9f0203010001028201004551938ac0b82bffff88f91489fe74011ee8c41c4669f0ab039ffbadef8a13"
            "f77aad0438dda89a7f7c8538f37b1f61d70b1fc59ce99730c75ecfae3c4dacedf5c5580320f2d393afa319af"
            "d95634cb231ab16046b3df1ebd9126242c7d57ac0be9b23a33a50a9e40a39c46b183194d0747a7fe3773d706"
            "a46fdc7c433a942d0de0e729748ff5d53ca88675f87cc5327aa7efca0d6983ea11f55868fecbce7242dbcee0"
            "399af988c254ef7e675c50e44ab07add48da09a4b59580ae34b50d437c3d91d8b334f46883369baec893267f"
            "b39c18f66e44ad4e196ebe25ec72ba71e96ff47d96bd9abb607bdd433e029cc71ae64bd634090bb108ce4328"
            "97a1a34d8902818100fafa39449871bad23fd2322cf557bc9ce6452a284a97c54868d8d0a4347107032bb620"
            "c0aeb2172f8a149d4ee7fa7cde9c88880e414089cd1b0500e4b1e261aae9bf82030bc3368c6efa894997c949"
            "c6ec02be544eb9e68d3e58991e9c47b704598dd2387b5be2057edbe5c7d2dab598b6828a58f7132854cba337"
            "d310d53a7b02818100e842f4e5f87e053486017b25e9663499a5f0afc100d9092b2efbd8dfdea7ed60fb7320"
            "0df2cb630cb920a7b0b4b154311533758e345b55ecac2992e43ef02fd6b0f2cbf1d090a7b59c519e5f693577"
            "992b1b6f83bc074c65aff07394d464ba9346faf2903bc9259879f1f5a5e64856f0589d2d84c4e46d6bd4158d"
            "a35bd83f2d028181008a6a560b2ec80a70ca21f2ea38a51ab0ad8e97a18102131bcc37475a4851cdbc41ef40"
            "410417d411b3e58a9c69f40bc9fa2a925eca3dfdc1d09501d91f01eb3b878ec6f54717728e20e6abb09ab5b8"
            "aaac9f16b908721e64e76d9584fc4bd0f3e53002308458385f2f87b7426d5791af97788734698f773eccd047"
            "89704f28e102818100894048083e37fa4b77851888e6cc06f9651e3e3e078a39e8d2f2f0ce1a7d91c165d63a"
            "7303af3cf11fd5344330043a8466caea0506db92833199bfbc31952e2fe8911203ec040f973ab0e0adf1362f"
            "5ecc22825b8e99a183d5dc79f0d132552f031af88c534822776058a3994de421bc16218bec918d8b3bd53087"
            "6aa9b3b8610281801393eda4f945ea16d63ba0d2615a32b6e26ba31f490bbe472c4d5b73798c53eb94ca8471"
            "4c30b4d7033812e4b4c1c56f206ebe5f1365ed80117c0eaf07ed7c5081a9ef44d7a81d1227049b07f47785b4"
            "933b343424a56a92165694604dd649831f45eecd3270255aaa93271867faca8ba4ab3340893fbe005cc522c8"
            "1be25eef"
        );

        /// Its public key, `SubjectPublicKeyInfo` (`openssl pkey -pubout`).
        pub(crate) const RSA2048_SPKI: &[u8] = &hex!(
            "30820122300d06092a864886f70d01010105000382010f003082010a0282010100e3b46880e1deee067c9b10"
            "1f7367e568653d13f0c9e480d701df94307104fc2ef215917e80ec688d3c6189ad7187e26a89f95cdeb13416"
            "692fd6148e4619e3a0379bd175ba55008418ceace0d5492b549871921640695a9c9159cc6cfbe8aa23b82be1"
            "d82fea7c4698c867c095996d5818bacc65ce2b38f3acea5ade5a9ba401b51c48fe4701c150df0acb5fd04d73"
            "c56480b5ad8bc4d2460f453c9af69d638738e0c186854d200de9559f36e628f82dd1cea501a6fa4f5ffc8346"
            "1bbecad9caceef34bb066255d103780e6944f0444bbff95f59be59d031e13afb696c871637d6b528dc00e7e3"
            "416bfd1a96a40a10023167f73352b85d91e890bc427fa78c9f0203010001"
        );

        /// Its public key, PKCS#1 `RSAPublicKey` (`openssl rsa -RSAPublicKey_out`).
        pub(crate) const RSA2048_PKCS1_PUBLIC: &[u8] = &hex!(
            "3082010a0282010100e3b46880e1deee067c9b101f7367e568653d13f0c9e480d701df94307104fc2ef21591"
            "7e80ec688d3c6189ad7187e26a89f95cdeb13416692fd6148e4619e3a0379bd175ba55008418ceace0d5492b"
            "549871921640695a9c9159cc6cfbe8aa23b82be1d82fea7c4698c867c095996d5818bacc65ce2b38f3acea5a"
            "de5a9ba401b51c48fe4701c150df0acb5fd04d73c56480b5ad8bc4d2460f453c9af69d638738e0c186854d20"
            "0de9559f36e628f82dd1cea501a6fa4f5ffc83461bbecad9caceef34bb066255d103780e6944f0444bbff95f"
            "59be59d031e13afb696c871637d6b528dc00e7e3416bfd1a96a40a10023167f73352b85d91e890bc427fa78c"
            "9f0203010001"
        );

        /// A 1024-bit RSA key, PKCS#8: too small.
        pub(crate) const RSA1024_PKCS8: &[u8] = &hex!(
            "30820276020100300d06092a864886f70d0101010500048202603082025c02010002818100a96ff74f04a326"
            "38574e0cb7abd593a797b9b49e1fc0a7af16e463d01ca12b5af007d7c90233c7d1682367c590e8c084e5e157"
            "082b3a01843ef514620b638977d72194e4eee7a20c95ef2c4370eaeaa084981093ea9c749d5370b43129743e"
            "9850497e184ec7517e8d2845875593c1a330165589211a90604438504f691dcacb020301000102818044cb4a"
            "1d5223afd3f656a1413dca74adfa23935b1447538dfa7c76ae3bc19069d6c5486ebbaf2c753094178116c9f9"
            "c8bbd15755e0bf27787b5b64903e5186b171495d34f33baffd4190ffe8d36d35b42de902e64d49ca6b700df4"
            "2a9a7eae251bbad6fc1babdcc680a45dc5264078c6a835b6dbb6a1f208e78ca5c5f9994f79024100dc6d066e"
            "2200743fd05df6beac5ddc96d6671a96863f5466989c259aaa7d5dcdfda937ac14744acddd9113d8174e944d"
            "c510bdaf2dba6e0473e1f46a74b13465024100c4c855065b9a30eae61544eece18308db369dc33fa8b2c7f52"
            "e710b6a95c4b6199fbecf59b4aee44e179c9f7a1459e8f47181cd0ffa53486301680a8b997176f02402c803a"
            "4f1bc039b7f46a33f974b51266c56c555ad4498ed193b7da83aa2ddb354e23cea088149e51878cd593c7c8ce"
            "7a10f1fb499592d0c94757f3cf5635bc5d02406dd84215fd7631ce3dc72ba67e26e49b84c617e46ffbd647f0"
            "98092d5d96a68181fa2dc8dff9d0cd646b9e80fb66285f64592264cbff85354e8c911f1e12284302410085f4"
            "816efbae4187933e1bb36bc132675295502a164e486dbc9aa35f2122b68e894519ee321bb298005546525117"
            "c81cd29dca962d3773ac06087836b82f30ef"
        );

        /// Its public key.
        pub(crate) const RSA1024_SPKI: &[u8] = &hex!(
            "30819f300d06092a864886f70d010101050003818d0030818902818100a96ff74f04a32638574e0cb7abd593"
            "a797b9b49e1fc0a7af16e463d01ca12b5af007d7c90233c7d1682367c590e8c084e5e157082b3a01843ef514"
            "620b638977d72194e4eee7a20c95ef2c4370eaeaa084981093ea9c749d5370b43129743e9850497e184ec751"
            "7e8d2845875593c1a330165589211a90604438504f691dcacb0203010001"
        );

        /// P-256 private key, PKCS#8.
        pub(crate) const P256_PKCS8: &[u8] = &hex!(
            "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420e8c29f85eea13ec0"
            "e33a2181b3d69dd136aa86e541cf58e2b33d0198fa245c16a144034200046171e962173aa0c1985c6d0f884f"
            "4c6bd1cc2503a66ef38dedc2d809e3d06cf3cf0ce9b03a42cfe378a1f1443834208af2f1c58898663b9d49ec"
            "96cfa560c9f5"
        );

        /// Its public key.
        pub(crate) const P256_SPKI: &[u8] = &hex!(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200046171e962173aa0c1985c6d0f884f4c6bd1"
            "cc2503a66ef38dedc2d809e3d06cf3cf0ce9b03a42cfe378a1f1443834208af2f1c58898663b9d49ec96cfa5"
            "60c9f5"
        );

        /// Ed25519 private key, PKCS#8.
        pub(crate) const ED25519_PKCS8: &[u8] = &hex!(
            "302e020100300506032b657004220420fb43d2e04282bd19ee7f834c17a954385a37fadc32bfc988b8dd6c89"
            "44177f81"
        );

        /// Its public key.
        pub(crate) const ED25519_SPKI: &[u8] = &hex!(
            "302a300506032b657003210093615be8f11dd47810777ff7b884c37074878af0f7e412d635bbf9b7ad0d2a4c"
        );

        /// `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32
        /// -sigopt rsa_mgf1_md:sha256` over [`MESSAGE`] with the RSA-2048 key.
        pub(crate) const RSA_PSS_SIG: &[u8] = &hex!(
            "da1ae4f56ec11519788fe8bbd01ffa01f06794faf1a2657f08adfb45ccb0ba8d1297af9d08c44793056bfe09"
            "f585714d0359a9107ee1b352f99cc8ccd7a9db509b4c9c87d94161848e7fca9a32a4392b476620b580ae5b26"
            "6671132f29462e73d63c1f74a0952e88d088b922ae2188be76ddfdf67a649e93694a2ca647def6eafc917094"
            "67b906049ddd2b81697d46ce1a1f1a9c26d8f63b6c15cd05e46f828a12f2fd7136b027d0701c1e2a307349e3"
            "f149d906aafd5f53e08b580911bb3aa5f122edfae868db2da756ce03352131d1276422a024d4dff05acc6ce7"
            "461747fb05bd68979755e16c97e2aa05712587784e389838be84673b8b18438c229b034c"
        );

        /// `openssl dgst -sha256 -sign` (PKCS#1 v1.5) over [`MESSAGE`].
        pub(crate) const RSA_PKCS1_SHA256_SIG: &[u8] = &hex!(
            "9246c0671953b27a0ee771fb9414cb990124ef38fb0302312349a3528338bfbb6eaa3a0f0ce9b9925a005f44"
            "26f7f9e9174b49a0fa7cbd6b568fba784dd90f45ad5b07c31e32c28acca417f9bb6063e9ec479776818234a3"
            "c8d3293012e27b929031d52ccc6b037eb5f8a8645cfc82fba72b4600f54c7447caa2ee77ef8ddfc37c70e519"
            "f9a3abbc2cf3eb9b22db3265fb1c186c302ad20d127ff208911be7b5a44500843d156f45ce3ad4d7b3c6cca8"
            "ccb600f354e9614e7f0b9d2b8607472b680ee2c069621ed545262c9f3c640142eef746ea490183755bc63b44"
            "3a905cc5000f45a8595a88471aae6251b7221d71d4cb9bf3d75d1af9c00872345c032166"
        );

        /// `openssl dgst -sha1 -sign` (PKCS#1 v1.5) over [`MESSAGE`].
        pub(crate) const RSA_PKCS1_SHA1_SIG: &[u8] = &hex!(
            "9f732f5d5c1305e94bc51c25e59db5e1fe3fa3fda86eb7958374cfc88fc3aec69a9a67e53e880ab63128535b"
            "41726023ce3a3ca8c044cd77ba4b92d464643ec299b008da0c2ad218f38c8891fe8fd48e057e3c0bbb8658c1"
            "ba0cf888f905144718075ba30de41bfc837ad836206ada97fb65cbf92e0618db4a44412fcd73a4e50230cc8b"
            "aa2413e99f26684d89b2b207f7588521d210bd22be161a60ba4dac33ffce1752fc1001516fe1783719f0cc07"
            "bc3973a448288eedf71ec4b8c52a3deb49ebe4b828218e38b75fb98414b48a0e8e0b3f73b84e9f0da2a54170"
            "b2c0f60aa645c3a2f01258c69446dbe40cb7b705d31617420c2f2a2cced6ce1965c77c58"
        );

        /// `openssl dgst -sha256 -sign` with the P-256 key (DER `Ecdsa-Sig-Value`).
        pub(crate) const ECDSA_P256_SIG: &[u8] = &hex!(
            "3045022100d0deb6018221e02afa4bbaa1a2d85d93d64f47d8f750ab389e78b739932a87ca0220738bdb3c4c"
            "fa7e3f5c6dc310b222de62463a9fc704c767ae21404a35e60a19be"
        );

        /// `openssl pkeyutl -sign -rawin` with the Ed25519 key.
        pub(crate) const ED25519_SIG: &[u8] = &hex!(
            "33d469c26d28fabcd04287e4a876da9a013c051c5710c72d644eea0018f3f6937c583f2533524dd5f611b2d0"
            "be5bb67bf2c5da67e9309b2d743e2deff755b209"
        );
    }
}
