//! Small helpers over x509-parser shared by the verifier and key loading: strict DER
//! parsing, PEM blocks, signature checks through the `ike` crate's [`Verifier`]s (one
//! set of signature code for IKE and X.509, nothing hand-written), key hashes and
//! serials.

use ike::crypto::auth::{SigAlg, Verifier};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::prelude::{
    AlgorithmIdentifier, FromDer, Pem, SubjectPublicKeyInfo, X509Certificate, X509Name,
};

/// Parses one DER certificate that fills `der` exactly; why not, in a few words.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    if der.is_empty() {
        return Err("empty".into());
    }
    let cert = match X509Certificate::from_der(der) {
        Ok(([], cert)) => cert,
        Ok((rest, _)) => return Err(format!("{} bytes after the certificate", rest.len())),
        Err(e) => return Err(parse_error(&e)),
    };
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err("the signed and the outer signature algorithms differ".into());
    }
    Ok(cert)
}

/// A nom/x509-parser error in one line.
pub(crate) fn parse_error<E: std::fmt::Debug>(e: &x509_parser::nom::Err<E>) -> String {
    match e {
        x509_parser::nom::Err::Incomplete(_) => "truncated".into(),
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => format!("{e:?}"),
    }
}

/// The DER blocks of `data`: the blocks labelled `label` if it is PEM, else `data` itself
/// (taken as one DER object).
pub(crate) fn der_blocks(data: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    if !data.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(vec![data.to_vec()]);
    }
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(data) {
        let block = block.map_err(|e| format!("bad PEM: {e}"))?;
        if block.label == label {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(format!("no PEM block labelled {label}"));
    }
    Ok(out)
}

/// The signature algorithm an X.509 `AlgorithmIdentifier` names, if the `ike` crate
/// implements it: the same ASN.1 type as RFC 7427's, so the same reading (Ed25519,
/// ECDSA with SHA-256, RSA PKCS#1 v1.5 with SHA-256, RSASSA-PSS with SHA-256).
pub(crate) fn sig_alg(alg: &AlgorithmIdentifier<'_>) -> Option<SigAlg> {
    use x509_parser::asn1_rs::{Sequence, ToDer as _};
    // x509-parser keeps the parts, not the bytes: encode them back (DER in, DER out).
    let mut content = alg.algorithm.to_der_vec().ok()?;
    if let Some(parameters) = &alg.parameters {
        content.extend(parameters.to_der_vec().ok()?);
    }
    let der = Sequence::new(content.into()).to_der_vec().ok()?;
    SigAlg::from_algorithm_identifier(&der)
}

/// A verifier for the public key of a `SubjectPublicKeyInfo` (Ed25519, P-256 or RSA of
/// at least 2048 bits), or why not in a few words.
pub(crate) fn spki_verifier(
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<Box<dyn Verifier + Send + Sync>, String> {
    ike::crypto::auth::verifier_from_spki(spki.raw).map_err(|e| e.to_string())
}

/// Why a signature over a certificate or CRL did not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigFailure {
    /// The algorithm is not one we implement.
    Unsupported,
    /// The signature is wrong.
    Bad,
}

/// Checks `signature` by `alg` over `tbs` with the signer's key.
pub(crate) fn check_signature(
    signer_key: &dyn Verifier,
    alg: &AlgorithmIdentifier<'_>,
    signature: &[u8],
    tbs: &[u8],
) -> Result<(), SigFailure> {
    let alg = sig_alg(alg).ok_or(SigFailure::Unsupported)?;
    if signer_key.verify(alg, tbs, signature) { Ok(()) } else { Err(SigFailure::Bad) }
}

/// SHA-256 of a DER `SubjectPublicKeyInfo`: the key hash revocation refuses.
pub(crate) fn key_hash(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// A serial number without its DER sign octet or other leading zeros.
pub(crate) fn serial_key(raw: &[u8]) -> Vec<u8> {
    let first = raw.iter().position(|&b| b != 0).unwrap_or(raw.len().saturating_sub(1));
    raw[first..].to_vec()
}

/// Lowercase hex, as `openssl x509 -serial` shows a serial (there in upper case).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A name for messages: its RFC 4514-ish text, or a placeholder when it is empty.
pub(crate) fn name_text(name: &X509Name<'_>) -> String {
    let text = name.to_string();
    if text.is_empty() { "(empty name)".into() } else { text }
}

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The `SystemTime` of a Unix timestamp.
pub(crate) fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_lose_their_sign_octet() {
        assert_eq!(serial_key(&[0, 0x80, 1]), [0x80, 1]);
        assert_eq!(serial_key(&[0]), [0]);
        assert_eq!(serial_key(&[0, 0]), [0]);
        assert_eq!(serial_key(&[]), [0u8; 0]);
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }

    #[test]
    fn times_round_trip() {
        for s in [-5, 0, 1_900_000_000] {
            assert_eq!(unix_seconds(system_time(s)), s);
        }
    }

    #[test]
    fn der_blocks_reads_pem_or_passes_der() {
        assert_eq!(der_blocks(b"\x30\x00", "CERTIFICATE").unwrap(), [vec![0x30, 0]]);
        let pem = b"\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n\
                    -----BEGIN X509 CRL-----\nMAE=\n-----END X509 CRL-----\n";
        assert_eq!(der_blocks(pem, "CERTIFICATE").unwrap(), [vec![0x30, 0]]);
        assert_eq!(der_blocks(pem, "X509 CRL").unwrap(), [vec![0x30, 1]]);
        assert!(der_blocks(pem, "PRIVATE KEY").is_err());
    }
}
