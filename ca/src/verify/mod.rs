//! Verification of a peer's certificate chain and identity: the implementation of
//! [`ike::sa::PeerAuthenticator`].
//!
//! [`CertVerifier::verify`] checks, in this order, and refuses with its own
//! [`CertError`] variant at the first failure:
//!
//! 1. the chain parses as DER X.509, leaf first (`Malformed`, `NoCertificate`), and
//!    has no critical extension we do not process;
//! 2. the leaf is a node certificate: not a CA (`CaAsLeaf`), not self-issued
//!    (`SelfSignedLeaf`), and if it has keyUsage, with digitalSignature
//!    (`MissingDigitalSignature`);
//! 3. it chains, through intermediates the peer sent if any, to a CA of the
//!    [`TrustBundle`] by name (and key identifier) and signature (`UnknownIssuer`,
//!    `BadSignature`, `UnsupportedAlgorithm`), every issuer being a CA with
//!    keyCertSign (`IssuerNotCa`) within its pathLenConstraint and our limit
//!    (`PathTooLong`);
//! 4. every certificate of the path, the CA's included, is valid now, give or take the
//!    clock-skew allowance (`Expired`, `NotYetValid`);
//! 5. no certificate of the path is revoked, by its CA's CRL or a serial refused by
//!    hand (`RevokedSerial`), or by its public key (`RevokedKey`);
//! 6. the IKE ID is one the leaf certifies (`WrongIdentity`, `BadIdentity`), and one the
//!    caller expects (`NotMember`).
//!
//! Signatures are checked with the `ike` crate's verifiers (RustCrypto: Ed25519 and
//! ECDSA P-256 with SHA-256). Time comes from an injectable [`Clock`], so tests run at a
//! fixed instant.

mod bundle;
mod error;
mod identity;
mod revocation;

pub use bundle::TrustBundle;
pub use error::{BundleError, CertError, CrlError};
pub use identity::{Members, PeerId};
pub use revocation::{CrlInfo, Revocation, key_hash_of};

use crate::x509::{self, SigFailure};
use bundle::CaInfo;
use ike::crypto::auth::Verifier;
use ike::sa::PeerAuthenticator;
use ike::wire::id::IdRepr;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::{ParsedExtension, X509Certificate};

/// Where the verifier reads the time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock stopped at one instant (for tests).
impl Clock for SystemTime {
    fn now(&self) -> SystemTime {
        *self
    }
}

impl<F: Fn() -> SystemTime + Send + Sync> Clock for F {
    fn now(&self) -> SystemTime {
        self()
    }
}

/// The default clock-skew allowance: 5 minutes either side of a validity period.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The default limit on intermediates between the leaf and the trust bundle. The mesh CA
/// issues node certificates directly, so none are needed; one is allowed for operators
/// who sign with an intermediate.
pub const DEFAULT_MAX_INTERMEDIATES: usize = 1;

/// A peer whose certificate chain and identity checked out.
pub struct Verified {
    /// The identity, as the IKE ID claimed it and the certificate certifies it.
    pub peer: PeerId,
    /// The leaf's subject.
    pub subject: String,
    /// The leaf's serial, hex.
    pub serial: String,
    /// The subject of the bundle's CA the chain ends in.
    pub ca: String,
    /// When the leaf expires (without the skew allowance).
    pub not_after: SystemTime,
    /// SHA-256 of the leaf's `SubjectPublicKeyInfo`.
    pub key_hash: [u8; 32],
    /// Checks the peer's signatures (its AUTH payload) with the leaf's key.
    pub verifier: Box<dyn Verifier + Send + Sync>,
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("peer", &self.peer)
            .field("subject", &self.subject)
            .field("serial", &self.serial)
            .field("ca", &self.ca)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Verifies peers' certificate chains against a trust bundle, revocation state and
/// expected identities; the mesh's [`PeerAuthenticator`].
///
/// The bundle and the revocation state can be replaced while handshakes use the
/// verifier (CA rotation, a new CRL); each verification sees one consistent pair.
pub struct CertVerifier {
    state: RwLock<(Arc<TrustBundle>, Arc<Revocation>)>,
    members: Option<Arc<dyn Members>>,
    clock: Arc<dyn Clock>,
    skew: Duration,
    max_intermediates: usize,
}

impl fmt::Debug for CertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (bundle, revocation) = self.state();
        f.debug_struct("CertVerifier")
            .field("bundle", &bundle)
            .field("revocation", &revocation)
            .field("members", &self.members.as_ref().map(|_| "..."))
            .field("skew", &self.skew)
            .field("max_intermediates", &self.max_intermediates)
            .finish_non_exhaustive()
    }
}

impl CertVerifier {
    /// Trusts `bundle`; nothing revoked, any identity the CA certified accepted, the
    /// system clock, [`DEFAULT_CLOCK_SKEW`] and [`DEFAULT_MAX_INTERMEDIATES`].
    pub fn new(bundle: TrustBundle) -> Self {
        Self {
            state: RwLock::new((Arc::new(bundle), Arc::new(Revocation::new()))),
            members: None,
            clock: Arc::new(SystemClock),
            skew: DEFAULT_CLOCK_SKEW,
            max_intermediates: DEFAULT_MAX_INTERMEDIATES,
        }
    }

    /// Accepts only identities in `members` (in the mesh: the member list).
    #[must_use]
    pub fn with_members(mut self, members: impl Members + 'static) -> Self {
        self.members = Some(Arc::new(members));
        self
    }

    /// Reads the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Allows `skew` of clock difference either side of each validity period.
    #[must_use]
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// Allows up to `max` intermediates between the leaf and the bundle.
    #[must_use]
    pub fn with_max_intermediates(mut self, max: usize) -> Self {
        self.max_intermediates = max;
        self
    }

    /// Checks revocation against `revocation`.
    #[must_use]
    pub fn with_revocation(self, revocation: Revocation) -> Self {
        self.set_revocation(revocation);
        self
    }

    /// Replaces the trust bundle (a CA rotation step).
    pub fn set_bundle(&self, bundle: TrustBundle) {
        self.state.write().unwrap_or_else(PoisonError::into_inner).0 = Arc::new(bundle);
    }

    /// Replaces the revocation state (a new CRL, a refused key).
    pub fn set_revocation(&self, revocation: Revocation) {
        self.state.write().unwrap_or_else(PoisonError::into_inner).1 = Arc::new(revocation);
    }

    /// The trust bundle and revocation state in use.
    pub fn state(&self) -> (Arc<TrustBundle>, Arc<Revocation>) {
        self.state.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Checks the chain `certs` (DER, leaf first, then any intermediates) presented under
    /// the IKE identity `id`; the checks are listed in the [module documentation](self).
    pub fn verify(&self, id: &IdRepr, certs: &[Vec<u8>]) -> Result<Verified, CertError> {
        let (bundle, revocation) = self.state();
        let now = x509::unix_seconds(self.clock.now());
        let chain = parse_chain(certs)?;
        let leaf = &chain[0];
        let subject = x509::name_text(leaf.subject());
        check_leaf(leaf, &subject)?;
        let (path, anchor) = self.build_path(&bundle, &chain)?;
        // Validity and revocation of every certificate of the path, the CA first.
        let skew = i64::try_from(self.skew.as_secs()).unwrap_or(i64::MAX);
        let leaf_info =
            CaInfo::of(leaf).map_err(|detail| CertError::Malformed { index: 0, detail })?;
        let leaf_entry = (leaf_info, 0);
        // The path below the anchor, top down: intermediates, then the leaf.
        let top_down: Vec<&(CaInfo, usize)> =
            path.iter().rev().chain(std::iter::once(&leaf_entry)).collect();
        check_validity(&anchor.info, now, skew)?;
        for (info, _) in &top_down {
            check_validity(info, now, skew)?;
        }
        let mut issuer_key = anchor.info.key_hash;
        for (info, index) in top_down {
            let cert = &chain[*index];
            if revocation.serial_revoked(&issuer_key, cert.raw_serial()) {
                return Err(CertError::RevokedSerial {
                    subject: info.subject_text.clone(),
                    serial: x509::hex(&x509::serial_key(cert.raw_serial())),
                });
            }
            if revocation.key_refused(&info.key_hash) {
                return Err(CertError::RevokedKey {
                    subject: info.subject_text.clone(),
                    key_hash: x509::hex(&info.key_hash),
                });
            }
            issuer_key = info.key_hash;
        }
        let peer = self.check_identity(id, leaf, &subject)?;
        let verifier = x509::spki_verifier(leaf.public_key()).map_err(|detail| {
            CertError::UnsupportedAlgorithm { subject: subject.clone(), detail }
        })?;
        Ok(Verified {
            peer,
            subject,
            serial: x509::hex(&x509::serial_key(leaf.raw_serial())),
            ca: anchor.info.subject_text.clone(),
            not_after: x509::system_time(leaf.validity().not_after.timestamp()),
            key_hash: x509::key_hash(leaf.public_key().raw),
            verifier,
        })
    }

    /// The path from the leaf's issuer up to a bundle CA: the intermediates used (their
    /// info and index in `chain`, lowest first) and the anchor.
    fn build_path(
        &self,
        bundle: &TrustBundle,
        chain: &[X509Certificate<'_>],
    ) -> Result<(Path, Arc<bundle::Anchor>), CertError> {
        let mut path: Path = Vec::new();
        let mut current = 0;
        loop {
            let cert = &chain[current];
            let subject = x509::name_text(cert.subject());
            let issuer = x509::name_text(cert.issuer());
            let signed = |key: &dyn Verifier| {
                x509::check_signature(
                    key,
                    &cert.signature_algorithm,
                    &cert.signature_value.data,
                    cert.tbs_certificate.as_ref(),
                )
            };
            let unsupported = || CertError::UnsupportedAlgorithm {
                subject: subject.clone(),
                detail: format!(
                    "signature algorithm {} (with these parameters) is not supported",
                    cert.signature_algorithm.algorithm
                ),
            };
            // Intermediates below the next issuer, for its pathLenConstraint.
            let below = path.len();
            let aki = authority_key_id(cert);
            let named = |info: &CaInfo| {
                info.subject == cert.issuer().as_raw()
                    && match (aki, &info.key_id) {
                        (Some(aki), Some(ski)) => aki == ski.as_slice(),
                        _ => true,
                    }
            };
            // A CA of the bundle first.
            let anchors: Vec<_> = bundle.anchors().iter().filter(|a| named(&a.info)).collect();
            if !anchors.is_empty() {
                let mut result = Err(CertError::BadSignature {
                    subject: subject.clone(),
                    issuer: issuer.clone(),
                });
                for anchor in anchors {
                    let Ok(key) = &anchor.info.key else { continue };
                    match signed(key.as_ref()) {
                        Ok(()) => {
                            result = Ok(anchor);
                            break;
                        }
                        Err(SigFailure::Unsupported) => result = Err(unsupported()),
                        Err(SigFailure::Bad) => {}
                    }
                }
                let anchor = result?;
                check_issuer(&anchor.info, below)?;
                return Ok((path, anchor.clone()));
            }
            // Else an intermediate the peer sent.
            let mut found = None;
            for (index, candidate) in chain.iter().enumerate().skip(1) {
                if index == current || path.iter().any(|(_, i)| *i == index) {
                    continue;
                }
                let info = CaInfo::of(candidate)
                    .map_err(|detail| CertError::Malformed { index, detail })?;
                if !named(&info) {
                    continue;
                }
                let key = match &info.key {
                    Ok(key) => key,
                    Err(detail) => {
                        return Err(CertError::UnsupportedAlgorithm {
                            subject: info.subject_text.clone(),
                            detail: detail.clone(),
                        });
                    }
                };
                match signed(key.as_ref()) {
                    Ok(()) => {
                        found = Some((info, index));
                        break;
                    }
                    Err(SigFailure::Unsupported) => return Err(unsupported()),
                    Err(SigFailure::Bad) => {
                        return Err(CertError::BadSignature { subject, issuer });
                    }
                }
            }
            let Some((info, index)) = found else {
                return Err(CertError::UnknownIssuer { subject, issuer });
            };
            check_issuer(&info, below)?;
            if path.len() == self.max_intermediates {
                return Err(CertError::PathTooLong {
                    detail: format!(
                        "more than {} intermediate CA(s) between '{}' and the trust bundle",
                        self.max_intermediates,
                        x509::name_text(chain[0].subject())
                    ),
                });
            }
            path.push((info, index));
            current = index;
        }
    }

    fn check_identity(
        &self,
        id: &IdRepr,
        leaf: &X509Certificate<'_>,
        subject: &str,
    ) -> Result<PeerId, CertError> {
        let claimed = PeerId::from_ike(id)?;
        let certified = identity::certified(leaf)
            .map_err(|detail| CertError::Malformed { index: 0, detail })?;
        if !certified.contains(&claimed) {
            let list: Vec<String> = certified.iter().map(ToString::to_string).collect();
            return Err(CertError::WrongIdentity {
                claimed: claimed.to_string(),
                subject: subject.to_string(),
                certified: if list.is_empty() { "nothing".into() } else { list.join(", ") },
            });
        }
        if let Some(members) = &self.members
            && !members.contains(&claimed)
        {
            return Err(CertError::NotMember { peer: claimed.to_string() });
        }
        Ok(claimed)
    }
}

impl PeerAuthenticator for CertVerifier {
    fn authenticate(
        &self,
        id: &IdRepr,
        certs: &[Vec<u8>],
    ) -> Result<Box<dyn Verifier>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.verify(id, certs)?.verifier)
    }
}

/// Intermediates of a path, each with its index in the chain the peer sent, lowest
/// first.
type Path = Vec<(CaInfo, usize)>;

/// Parses every certificate of the chain, each with its critical extensions checked.
fn parse_chain(certs: &[Vec<u8>]) -> Result<Vec<X509Certificate<'_>>, CertError> {
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    certs
        .iter()
        .enumerate()
        .map(|(index, der)| {
            let cert =
                x509::parse_cert(der).map_err(|detail| CertError::Malformed { index, detail })?;
            check_extensions(&cert, index)?;
            Ok(cert)
        })
        .collect()
}

/// Refuses malformed extensions and critical ones we do not process.
fn check_extensions(cert: &X509Certificate<'_>, index: usize) -> Result<(), CertError> {
    for ext in cert.extensions() {
        if let ParsedExtension::ParseError { error } = ext.parsed_extension() {
            let detail = format!("extension {}: {error}", ext.oid);
            return Err(CertError::Malformed { index, detail });
        }
        let processed = [
            OID_X509_EXT_BASIC_CONSTRAINTS,
            OID_X509_EXT_KEY_USAGE,
            OID_X509_EXT_SUBJECT_ALT_NAME,
            OID_X509_EXT_EXTENDED_KEY_USAGE,
        ];
        if ext.critical && !processed.contains(&ext.oid) {
            return Err(CertError::UnsupportedCriticalExtension {
                subject: x509::name_text(cert.subject()),
                oid: ext.oid.to_id_string(),
            });
        }
    }
    // Duplicates of the extensions we read.
    let duplicate = cert
        .basic_constraints()
        .err()
        .or(cert.key_usage().err())
        .or(cert.subject_alternative_name().err());
    if let Some(e) = duplicate {
        return Err(CertError::Malformed { index, detail: e.to_string() });
    }
    Ok(())
}

/// The leaf must be a node certificate that may sign.
fn check_leaf(leaf: &X509Certificate<'_>, subject: &str) -> Result<(), CertError> {
    let malformed = |detail: String| CertError::Malformed { index: 0, detail };
    let bc = leaf.basic_constraints().map_err(|e| malformed(e.to_string()))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(CertError::CaAsLeaf { subject: subject.to_string() });
    }
    if leaf.subject().as_raw() == leaf.issuer().as_raw() {
        return Err(CertError::SelfSignedLeaf { subject: subject.to_string() });
    }
    // RFC 5280 4.2.1.3: without the extension the key may be used for anything (what
    // strongSwan's `pki --issue` makes by default); with it, digitalSignature must be on.
    let ku = leaf.key_usage().map_err(|e| malformed(e.to_string()))?;
    if ku.is_some_and(|ku| !ku.value.digital_signature()) {
        return Err(CertError::MissingDigitalSignature { subject: subject.to_string() });
    }
    Ok(())
}

/// A certificate that signed another must be a CA allowed to sign certificates, with
/// `below` intermediates under it within its pathLenConstraint.
fn check_issuer(info: &CaInfo, below: usize) -> Result<(), CertError> {
    if !info.is_ca || !info.cert_sign {
        return Err(CertError::IssuerNotCa { subject: info.subject_text.clone() });
    }
    if let Some(max) = info.path_len
        && below > usize::try_from(max).unwrap_or(usize::MAX)
    {
        return Err(CertError::PathTooLong {
            detail: format!(
                "'{}' allows {max} intermediate CA(s) below it (pathLenConstraint), the \
                 chain has {below}",
                info.subject_text
            ),
        });
    }
    Ok(())
}

fn check_validity(info: &CaInfo, now: i64, skew: i64) -> Result<(), CertError> {
    if info.not_before.saturating_sub(skew) > now {
        return Err(CertError::NotYetValid {
            subject: info.subject_text.clone(),
            not_before: info.not_before_text.clone(),
        });
    }
    if info.not_after.saturating_add(skew) < now {
        return Err(CertError::Expired {
            subject: info.subject_text.clone(),
            not_after: info.not_after_text.clone(),
        });
    }
    Ok(())
}

/// The authorityKeyIdentifier's keyIdentifier, if any.
fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    })
}
