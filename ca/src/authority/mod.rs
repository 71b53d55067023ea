//! The mesh's certificate authority on disk: `meshctl ca init | issue | revoke | rotate |
//! show` are calls of [`Authority`].
//!
//! A CA directory (mode 0700) holds:
//!
//! | file             | what                                                          |
//! |------------------|---------------------------------------------------------------|
//! | `state.json`     | mesh name, CA generations, lifetimes, CRL number, certificates issued and revoked, refused key hashes |
//! | `ca-<n>.key`     | the private key of CA generation `n`, PEM PKCS#8, mode 0600 (deleted when the generation is dropped) |
//! | `ca-<n>.pem`     | its self-signed certificate                                  |
//! | `bundle.pem`     | the trust bundle: the current CA, then the previous one during a rotation |
//! | `crl.pem`        | one CRL per CA of the bundle, same order, same CRL number     |
//! | `lock`           | the lock file (flock): shared to read, exclusive to change   |
//!
//! Every file is written atomically (a new file in the same directory, fsync, rename,
//! fsync of the directory), keys with mode 0600 from their creation on. Every change
//! takes the exclusive lock and re-reads `state.json` first, so several processes (the
//! enrollment service, `meshctl`) may use one CA; within a process a mutex orders the
//! threads. A certificate is recorded in `state.json` before it is returned: a crash
//! may leave a recorded serial that nobody received, never an issued serial that is not
//! recorded.
//!
//! CRLs: each CA of the bundle signs its own CRL (a serial means something only with
//! its issuer, and an indirect CRL would need an issuer per entry, which few verifiers
//! read); all carry the same CRL number, incremented at each change. They are
//! regenerated on revocation, rotation and drop, and by [`Authority::issue`] when half
//! of their [`CRL_LIFETIME`] has passed, so a CA that renews nodes keeps its CRL fresh.

mod node;
mod show;
mod state;
mod store;

pub use node::{NodeKey, check_node_name, generate_node_key, make_csr};
pub use show::{CaSummary, GenerationInfo, RevokedInfo};
pub use state::Role;

use crate::issuer::{IssueError, Issued, Issuer};
use crate::verify::{CertVerifier, CrlError, CrlInfo, Revocation, TrustBundle};
use crate::x509;
use node::SecretKey;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, KeyIdMethod, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use state::{Generation, IssuedEntry, RevokedEntry, State};
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use store::DirLock;
use x509_parser::prelude::FromDer as _;
use zeroize::Zeroizing;

/// Default validity of a CA certificate: 10 years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
/// Default lifetime of a node certificate: 24 hours.
pub const DEFAULT_NODE_LIFETIME: Duration = Duration::from_secs(86_400);
/// The shortest node certificate lifetime: 1 hour.
pub const MIN_NODE_LIFETIME: Duration = Duration::from_secs(3_600);
/// The longest node certificate lifetime: 1 year (short-lived certificates are the
/// point; the CA's own validity caps it too).
pub const MAX_NODE_LIFETIME: Duration = Duration::from_secs(366 * 86_400);
/// How far in the past a certificate's notBefore is put, for peers whose clocks lag.
pub const BACKDATE: Duration = Duration::from_secs(300);
/// The time from a CRL's thisUpdate to its nextUpdate.
pub const CRL_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// How long an expired certificate stays in `state.json` (and a revoked one on the CRL).
const KEEP_EXPIRED: i64 = 30 * 86_400;

/// The key algorithm of a CA (and of a node key made by [`generate_node_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Ed25519 (the default).
    #[default]
    Ed25519,
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// RSA, 3072 bits, PKCS#1 v1.5 signatures with SHA-256.
    Rsa3072,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Rsa3072 => "rsa-3072",
        })
    }
}

impl std::str::FromStr for Algorithm {
    type Err = AuthorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(Algorithm::Ed25519),
            "ecdsa-p256" | "ecdsa" | "p256" | "p-256" => Ok(Algorithm::EcdsaP256),
            "rsa-3072" | "rsa3072" | "rsa" => Ok(Algorithm::Rsa3072),
            _ => Err(AuthorityError::BadOptions(format!(
                "unknown key algorithm '{s}'; use ed25519, ecdsa-p256 or rsa-3072"
            ))),
        }
    }
}

/// What `meshctl ca init` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The mesh's name: in the CA's subject (`CN=<mesh> CA <generation>, O=<mesh>`).
    pub mesh: String,
    /// The CA key's algorithm.
    pub algorithm: Algorithm,
    /// The CA certificate's validity.
    pub validity: Duration,
    /// The default lifetime of node certificates (1 hour to 1 year).
    pub node_lifetime: Duration,
}

impl InitOptions {
    /// Ed25519, [`DEFAULT_CA_VALIDITY`], [`DEFAULT_NODE_LIFETIME`].
    pub fn new(mesh: impl Into<String>) -> Self {
        Self {
            mesh: mesh.into(),
            algorithm: Algorithm::default(),
            validity: DEFAULT_CA_VALIDITY,
            node_lifetime: DEFAULT_NODE_LIFETIME,
        }
    }

    fn check(&self) -> Result<(), AuthorityError> {
        let bad = |s: String| Err(AuthorityError::BadOptions(s));
        if self.mesh.trim().is_empty() || self.mesh.trim() != self.mesh {
            return bad("the mesh name is empty or starts or ends with a space".into());
        }
        if self.mesh.chars().count() > 48 || self.mesh.chars().any(char::is_control) {
            return bad("the mesh name must be 1 to 48 printable characters".into());
        }
        check_lifetime(self.node_lifetime)?;
        if self.validity < self.node_lifetime.saturating_mul(2) || self.validity < 2 * CRL_LIFETIME
        {
            return bad(format!(
                "a CA validity of {} is too short for node certificates of {}",
                show::duration(self.validity),
                show::duration(self.node_lifetime)
            ));
        }
        Ok(())
    }
}

fn check_lifetime(lifetime: Duration) -> Result<(), AuthorityError> {
    if lifetime < MIN_NODE_LIFETIME || lifetime > MAX_NODE_LIFETIME {
        return Err(AuthorityError::BadOptions(format!(
            "a node certificate lifetime of {} is out of range; give 1h to 366d",
            show::duration(lifetime)
        )));
    }
    Ok(())
}

/// Extra wishes for one node certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueOptions {
    /// IP addresses to add as iPAddress SANs (after the dNSName).
    pub ips: Vec<IpAddr>,
    /// A lifetime other than the CA's default (1 hour to 1 year, capped by the CA's
    /// own validity).
    pub lifetime: Option<Duration>,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The serials revoked (lowercase hex).
    pub serials: Vec<String>,
    /// The key hashes now refused (SHA-256 of the `SubjectPublicKeyInfo`, hex).
    pub key_hashes: Vec<String>,
    /// The number of the CRLs written.
    pub crl_number: u64,
}

/// What dropping the previous CA did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The generation dropped.
    pub generation: u32,
    /// Nodes that held only a certificate of the dropped CA (with `force`): they can no
    /// longer authenticate until re-issued.
    pub stranded: Vec<String>,
}

/// Why the CA could not do what was asked; one line each, saying what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// `init` over an existing CA or a non-empty directory.
    #[error(
        "{dir} already holds a CA or other files; refusing to overwrite it (use an empty or new directory)"
    )]
    Exists {
        /// The directory.
        dir: String,
    },
    /// No CA in the directory.
    #[error("no CA in {dir} (no state.json); create one with `meshctl ca init`")]
    NotFound {
        /// The directory.
        dir: String,
    },
    /// `state.json` does not parse or is inconsistent.
    #[error("{path} is corrupt ({detail}); restore it from a backup")]
    CorruptState {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A CA key file readable by others than its owner.
    #[error(
        "CA key {path} has mode {mode:04o}, looser than 0600; run `chmod 600 {path}` (and consider the key exposed)"
    )]
    KeyTooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A key that does not load, or does not match its certificate.
    #[error("key {path}: {detail}")]
    BadKey {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// Options out of range.
    #[error("{0}")]
    BadOptions(String),
    /// A node name we do not issue for.
    #[error("node name '{name}' is not a valid DNS name: {detail}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        detail: String,
    },
    /// A bad certificate request.
    #[error("bad certificate request: {0}")]
    BadRequest(String),
    /// The request's key is revoked.
    #[error(
        "refused: the key of this request (SHA-256 {key_hash}) belongs to a revoked certificate; make a new key"
    )]
    RevokedKey {
        /// The key hash, hex.
        key_hash: String,
    },
    /// No certificate for that name or serial.
    #[error("no unrevoked certificate {0} in this CA's records; `meshctl ca show` lists them")]
    Unknown(String),
    /// A rotation is already under way.
    #[error(
        "a rotation is under way (generation {previous} is still trusted beside the current one); finish it first (`meshctl ca rotate` or `meshctl ca rotate --drop-old`)"
    )]
    RotationInProgress {
        /// The previous (or staged) generation.
        previous: u32,
    },
    /// `drop_previous` without a previous CA.
    #[error("no previous CA to drop; only generation {current} is trusted")]
    NoPrevious {
        /// The current generation.
        current: u32,
    },
    /// Nodes still hold only certificates of the previous CA.
    #[error("{} node(s) hold only certificates of the previous CA ({}); re-issue them first, or drop with --force", .names.len(), .names.join(", "))]
    NotReissued {
        /// The nodes.
        names: Vec<String>,
    },
    /// Signing or key generation failed.
    #[error("{0}")]
    Crypto(String),
}

impl From<AuthorityError> for IssueError {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::BadName { .. } => IssueError::NameRefused(e.to_string()),
            AuthorityError::BadRequest(detail) | AuthorityError::BadOptions(detail) => {
                IssueError::BadRequest(detail)
            }
            AuthorityError::RevokedKey { .. } => IssueError::Revoked(e.to_string()),
            other => IssueError::Storage(other.to_string()),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AuthorityError + '_ {
    move |source| AuthorityError::Io { path: path.display().to_string(), source }
}

/// A CA generation loaded for signing.
struct Loaded {
    issuer: rcgen::Issuer<'static, SecretKey>,
}

/// The mesh's certificate authority, in its directory. Safe to share between threads;
/// see the [module documentation](self) for the files and their guarantees.
pub struct Authority {
    dir: PathBuf,
    /// Generation number -> its key and certificate, loaded when first needed.
    loaded: Mutex<HashMap<u32, Arc<Loaded>>>,
    /// Held by the thread changing the CA.
    changes: Mutex<()>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Authority {
    /// Creates a CA in `dir` (made with mode 0700 if missing; an existing directory must
    /// be empty, and is set to 0700): its key, self-signed certificate, state, bundle and
    /// an empty CRL.
    pub fn init(dir: &Path, options: &InitOptions) -> Result<Self, AuthorityError> {
        options.check()?;
        if dir.exists() {
            let entries = fs::read_dir(dir).map_err(io_error(dir))?;
            if entries.flatten().any(|e| e.file_name() != store::LOCK) {
                return Err(AuthorityError::Exists { dir: dir.display().to_string() });
            }
        } else {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error(dir))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
        let _lock = DirLock::acquire(dir, true).map_err(io_error(dir))?;
        // Another init may have won the race for the lock.
        if dir.join(store::STATE).exists() {
            return Err(AuthorityError::Exists { dir: dir.display().to_string() });
        }
        let now = x509::unix_seconds(SystemTime::now());
        let mut state = State {
            format: state::FORMAT,
            mesh: options.mesh.clone(),
            ca_validity_secs: options.validity.as_secs(),
            node_lifetime_secs: options.node_lifetime.as_secs(),
            generations: Vec::new(),
            crl_number: 0,
            crl_this_update: now,
            crl_next_update: now,
            issued_total: 0,
            issued: Vec::new(),
            revoked: Vec::new(),
            revoked_keys: Vec::new(),
        };
        let authority = Self::at(dir);
        let generation = authority.new_generation(&state, options.algorithm, Role::Current, now)?;
        state.generations.push(generation);
        bump_crl(&mut state, now);
        // The state last: its presence is what makes the directory a CA.
        authority.write_bundle(&state)?;
        authority.write_crls(&state, now)?;
        authority.save(&state)?;
        Ok(authority)
    }

    /// Opens the CA in `dir`: checks its state, that its keys are private (mode 0600 or
    /// tighter) and match their certificates, and rewrites the bundle or CRLs if a crash
    /// left them behind the state.
    pub fn open(dir: &Path) -> Result<Self, AuthorityError> {
        if !dir.join(store::STATE).exists() {
            return Err(AuthorityError::NotFound { dir: dir.display().to_string() });
        }
        let authority = Self::at(dir);
        let _lock = DirLock::acquire(dir, true).map_err(io_error(dir))?;
        let state = authority.load()?;
        for generation in state.trusted() {
            authority.generation(generation.number)?;
        }
        authority.repair(&state)?;
        Ok(authority)
    }

    fn at(dir: &Path) -> Self {
        Self { dir: dir.to_owned(), loaded: Mutex::default(), changes: Mutex::default() }
    }

    /// The CA's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a node certificate for `name` to the key of `csr_der`, with `options`.
    pub fn issue_with(
        &self,
        name: &str,
        csr_der: &[u8],
        options: &IssueOptions,
    ) -> Result<Issued, AuthorityError> {
        let name = check_node_name(name)?;
        let spki = csr_public_key(csr_der)?;
        let key_hash = store::hex(&x509::key_hash(&spki));
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| AuthorityError::BadRequest(format!("unsupported public key ({e})")))?;
        if let Some(lifetime) = options.lifetime {
            check_lifetime(lifetime)?;
        }
        self.change(|state, now| {
            if state.revoked_keys.contains(&key_hash) {
                return Err(AuthorityError::RevokedKey { key_hash: key_hash.clone() });
            }
            let current = state.current().cloned().ok_or_else(|| corrupt_no_current(self))?;
            let ca = self.generation(current.number)?;
            let lifetime = options.lifetime.map_or(state.node_lifetime_secs, |l| l.as_secs());
            let not_before = now - secs(BACKDATE);
            let not_after = (now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)))
                .min(current.not_after);
            let serial = loop {
                let serial = random_serial()?;
                if !state.serial_known(&store::hex(&serial)) {
                    break serial;
                }
            };
            let cert = sign_node_cert(
                &NodeCert { name: &name, mesh: &state.mesh, ips: &options.ips },
                &serial,
                (not_before, not_after),
                &public_key,
                &ca.issuer,
            )?;
            let serial = store::hex(&serial);
            state.issued.push(IssuedEntry {
                serial: serial.clone(),
                name: name.clone(),
                generation: current.number,
                key_hash: key_hash.clone(),
                number: state.issued_total + 1,
                not_before,
                not_after,
            });
            state.issued_total += 1;
            state.issued.retain(|e| e.not_after + KEEP_EXPIRED > now);
            let refresh = now > state.crl_next_update - secs(CRL_LIFETIME) / 2;
            if refresh {
                bump_crl(state, now);
            }
            // Recorded before it is handed out.
            self.save(state)?;
            if refresh {
                self.write_crls(state, now)?;
            }
            Ok(Issued { cert_pem: cert.pem(), serial, not_after: x509::system_time(not_after) })
        })
    }

    /// Revokes every certificate issued to `name`, and refuses their keys (revoking
    /// every other certificate recorded for those keys too).
    pub fn revoke_name(&self, name: &str) -> Result<Revoked, AuthorityError> {
        let name = check_node_name(name)?;
        self.revoke(&format!("for '{name}'"), |e| e.name == name)
    }

    /// Revokes the certificate with serial `serial` (hex, any case, `:` allowed) and
    /// refuses its key (revoking every other certificate recorded for that key too).
    pub fn revoke_serial(&self, serial: &str) -> Result<Revoked, AuthorityError> {
        let bytes = store::unhex(serial)
            .ok_or_else(|| AuthorityError::BadOptions(format!("serial '{serial}' is not hex")))?;
        let serial = store::hex(&x509::serial_key(&bytes));
        self.revoke(&format!("with serial {serial}"), |e| e.serial == serial)
    }

    fn revoke(
        &self,
        what: &str,
        matches: impl Fn(&IssuedEntry) -> bool,
    ) -> Result<Revoked, AuthorityError> {
        self.change(|state, now| {
            let (mut hit, kept): (Vec<_>, Vec<_>) =
                std::mem::take(&mut state.issued).into_iter().partition(|e| matches(e));
            if hit.is_empty() {
                state.issued = kept;
                return Err(AuthorityError::Unknown(what.to_owned()));
            }
            // Every other certificate for the same keys goes on the CRL too, so that a
            // node that has only the CRL (and no key hashes) refuses them as well.
            let keys: Vec<String> = hit.iter().map(|e| e.key_hash.clone()).collect();
            let (same_key, kept): (Vec<_>, Vec<_>) =
                kept.into_iter().partition(|e| keys.contains(&e.key_hash));
            state.issued = kept;
            hit.extend(same_key);
            let mut revoked =
                Revoked { serials: Vec::new(), key_hashes: Vec::new(), crl_number: 0 };
            for cert in hit {
                revoked.serials.push(cert.serial.clone());
                if !state.revoked_keys.contains(&cert.key_hash) {
                    state.revoked_keys.push(cert.key_hash.clone());
                    revoked.key_hashes.push(cert.key_hash.clone());
                }
                state.revoked.push(RevokedEntry { cert, revoked_at: now });
            }
            bump_crl(state, now);
            revoked.crl_number = state.crl_number;
            self.save(state)?;
            self.write_crls(state, now)?;
            Ok(revoked)
        })
    }

    /// Makes fresh CRLs (a new CRL number) now; for a CA that issues little, run it
    /// well within [`CRL_LIFETIME`].
    pub fn refresh_crl(&self) -> Result<u64, AuthorityError> {
        self.change(|state, now| {
            bump_crl(state, now);
            self.save(state)?;
            self.write_crls(state, now)?;
            Ok(state.crl_number)
        })
    }

    /// Rotates the CA: a new generation becomes current (it issues from now on) and the
    /// old one stays in the bundle as the previous CA. The new generation is the one
    /// staged by [`stage_rotation`](Self::stage_rotation) if any (so that every node
    /// already trusts it), else a new key of the same algorithm.
    pub fn rotate(&self) -> Result<GenerationInfo, AuthorityError> {
        self.rotate_to(None)
    }

    /// As [`rotate`](Self::rotate), with a new key of `algorithm` if no generation is
    /// staged.
    pub fn rotate_to(
        &self,
        algorithm: Option<Algorithm>,
    ) -> Result<GenerationInfo, AuthorityError> {
        self.change(|state, now| {
            if let Some(previous) = state.previous() {
                return Err(AuthorityError::RotationInProgress { previous: previous.number });
            }
            let current = state.current().cloned().ok_or_else(|| corrupt_no_current(self))?;
            let next = if let Some(next) = state.next() {
                if algorithm.is_some_and(|a| a != next.algorithm) {
                    return Err(AuthorityError::BadOptions(format!(
                        "generation {} is staged with {}; rotate without an algorithm",
                        next.number, next.algorithm
                    )));
                }
                next.number
            } else {
                let algorithm = algorithm.unwrap_or(current.algorithm);
                let generation = self.new_generation(state, algorithm, Role::Next, now)?;
                let number = generation.number;
                state.generations.push(generation);
                number
            };
            for g in &mut state.generations {
                if g.number == current.number {
                    g.role = Role::Previous;
                } else if g.number == next {
                    g.role = Role::Current;
                }
            }
            bump_crl(state, now);
            self.save(state)?;
            self.write_bundle(state)?;
            self.write_crls(state, now)?;
            let current = state.current().ok_or_else(|| corrupt_no_current(self))?;
            Ok(show::generation_info(current))
        })
    }

    /// Prepares a rotation: a new generation (new key of `algorithm`, or of the current
    /// one's) joins the bundle but issues nothing until [`rotate`](Self::rotate). Nodes
    /// pick up the bundle with their next renewal; once all have, `rotate` cannot make a
    /// certificate some node does not trust yet.
    pub fn stage_rotation(
        &self,
        algorithm: Option<Algorithm>,
    ) -> Result<GenerationInfo, AuthorityError> {
        self.change(|state, now| {
            if let Some(other) = state.previous().or(state.next()) {
                return Err(AuthorityError::RotationInProgress { previous: other.number });
            }
            let current = state.current().cloned().ok_or_else(|| corrupt_no_current(self))?;
            let algorithm = algorithm.unwrap_or(current.algorithm);
            let generation = self.new_generation(state, algorithm, Role::Next, now)?;
            let info = show::generation_info(&generation);
            state.generations.push(generation);
            bump_crl(state, now);
            self.save(state)?;
            self.write_bundle(state)?;
            self.write_crls(state, now)?;
            Ok(info)
        })
    }

    /// Ends a rotation: the previous CA leaves the bundle (its certificates no longer
    /// verify) and its key is deleted. Refused while a node holds only certificates of
    /// the previous CA, unless `force`.
    pub fn drop_previous(&self, force: bool) -> Result<Dropped, AuthorityError> {
        self.change(|state, now| {
            let current = state.current().cloned().ok_or_else(|| corrupt_no_current(self))?;
            let previous = state
                .previous()
                .cloned()
                .ok_or(AuthorityError::NoPrevious { current: current.number })?;
            let stranded = show::only_old(state, now, |e| e.generation == previous.number);
            if !stranded.is_empty() && !force {
                return Err(AuthorityError::NotReissued { names: stranded });
            }
            for g in &mut state.generations {
                if g.number == previous.number {
                    g.role = Role::Retired;
                }
            }
            bump_crl(state, now);
            self.save(state)?;
            self.write_bundle(state)?;
            self.write_crls(state, now)?;
            self.loaded.lock().unwrap_or_else(PoisonError::into_inner).remove(&previous.number);
            let key = self.dir.join(store::key_file(previous.number));
            match fs::remove_file(&key) {
                Ok(()) => store::sync_dir(&self.dir).map_err(io_error(&self.dir))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&key)(e)),
            }
            Ok(Dropped { generation: previous.number, stranded })
        })
    }

    /// What `meshctl ca show` prints.
    pub fn show(&self) -> Result<CaSummary, AuthorityError> {
        let _lock = DirLock::acquire(&self.dir, false).map_err(io_error(&self.dir))?;
        let state = self.load()?;
        Ok(show::summary(&state, x509::unix_seconds(SystemTime::now())))
    }

    /// The bundle, PEM.
    fn read_shared(&self, file: &str) -> Result<String, AuthorityError> {
        let _lock = DirLock::acquire(&self.dir, false).map_err(io_error(&self.dir))?;
        let path = self.dir.join(file);
        fs::read_to_string(&path).map_err(io_error(&path))
    }

    /// The trust bundle and revocation state (CRLs, revoked serials and keys) of this CA.
    pub fn revocation_state(&self) -> Result<(TrustBundle, Revocation), AuthorityError> {
        let _lock = DirLock::acquire(&self.dir, false).map_err(io_error(&self.dir))?;
        let state = self.load()?;
        let read = |file: &str| {
            let path = self.dir.join(file);
            fs::read(&path).map_err(io_error(&path))
        };
        let corrupt = |path: &str, detail: String| AuthorityError::CorruptState {
            path: self.dir.join(path).display().to_string(),
            detail,
        };
        let bundle = TrustBundle::from_pem(&read(store::BUNDLE)?)
            .map_err(|e| corrupt(store::BUNDLE, e.to_string()))?;
        let mut revocation = Revocation::new();
        let crls =
            x509::der_blocks(&read(store::CRL)?, "X509 CRL").map_err(|e| corrupt(store::CRL, e))?;
        for crl in crls {
            revocation.add_crl(&bundle, &crl).map_err(|e| corrupt(store::CRL, e.to_string()))?;
        }
        for entry in &state.revoked {
            let ca_pem = read(&store::cert_file(entry.cert.generation))?;
            let ca = x509::der_blocks(&ca_pem, "CERTIFICATE")
                .map_err(|e| corrupt(&store::cert_file(entry.cert.generation), e))?;
            let serial = store::unhex(&entry.cert.serial).unwrap_or_default();
            revocation
                .revoke_serial(&ca[0], &serial)
                .map_err(|e| corrupt(&store::cert_file(entry.cert.generation), e.to_string()))?;
        }
        for hash in &state.revoked_keys {
            let hash = store::unhex(hash)
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| corrupt(store::STATE, format!("bad key hash {hash}")))?;
            revocation.refuse_key_hash(hash);
        }
        Ok((bundle, revocation))
    }

    /// Runs `f` on the state under the exclusive lock, with the time (Unix seconds).
    fn change<R>(
        &self,
        f: impl FnOnce(&mut State, i64) -> Result<R, AuthorityError>,
    ) -> Result<R, AuthorityError> {
        // The mutex orders this process's threads; the flock, processes.
        let _threads = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let _lock = DirLock::acquire(&self.dir, true).map_err(io_error(&self.dir))?;
        let mut state = self.load()?;
        f(&mut state, x509::unix_seconds(SystemTime::now()))
    }

    fn load(&self) -> Result<State, AuthorityError> {
        let path = self.dir.join(store::STATE);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuthorityError::NotFound { dir: self.dir.display().to_string() });
            }
            Err(e) => return Err(io_error(&path)(e)),
        };
        let corrupt = |detail: String| AuthorityError::CorruptState {
            path: path.display().to_string(),
            detail,
        };
        let state: State = serde_json::from_slice(&data).map_err(|e| corrupt(e.to_string()))?;
        state.check().map_err(corrupt)?;
        Ok(state)
    }

    fn save(&self, state: &State) -> Result<(), AuthorityError> {
        let mut json = serde_json::to_vec_pretty(state)
            .map_err(|e| AuthorityError::Crypto(format!("encoding the state: {e}")))?;
        json.push(b'\n');
        store::write_atomic(&self.dir, store::STATE, &json, 0o600)
            .map_err(io_error(&self.dir.join(store::STATE)))
    }

    /// Generation `number`'s key and certificate, loaded (and checked) if not yet.
    fn generation(&self, number: u32) -> Result<Arc<Loaded>, AuthorityError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = loaded.get(&number) {
            return Ok(l.clone());
        }
        let cert_path = self.dir.join(store::cert_file(number));
        let cert_pem = fs::read(&cert_path).map_err(io_error(&cert_path))?;
        let der = x509::der_blocks(&cert_pem, "CERTIFICATE")
            .map_err(|detail| AuthorityError::CorruptState {
                path: cert_path.display().to_string(),
                detail,
            })?
            .swap_remove(0);
        let key_path = self.dir.join(store::key_file(number));
        let key = load_key(&key_path)?;
        let cert = x509::parse_cert(&der).map_err(|detail| AuthorityError::CorruptState {
            path: cert_path.display().to_string(),
            detail,
        })?;
        if cert.public_key().raw != key.spki().as_slice() {
            return Err(AuthorityError::BadKey {
                path: key_path.display().to_string(),
                detail: format!("it is not the key of {}", cert_path.display()),
            });
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(|e| {
            AuthorityError::CorruptState {
                path: cert_path.display().to_string(),
                detail: e.to_string(),
            }
        })?;
        let l = Arc::new(Loaded { issuer });
        loaded.insert(number, l.clone());
        Ok(l)
    }

    /// Makes the key and certificate of the next generation, writes both; its record.
    fn new_generation(
        &self,
        state: &State,
        algorithm: Algorithm,
        role: Role,
        now: i64,
    ) -> Result<Generation, AuthorityError> {
        let number = state.generations.iter().map(|g| g.number).max().unwrap_or(0) + 1;
        let (key, key_pem) = SecretKey::generate(algorithm).map_err(AuthorityError::Crypto)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("{} CA {number}", state.mesh));
        params.distinguished_name.push(DnType::OrganizationName, state.mesh.as_str());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let not_before = now - secs(BACKDATE);
        let not_after =
            now.saturating_add(i64::try_from(state.ca_validity_secs).unwrap_or(i64::MAX));
        params.not_before = x509::system_time(not_before).into();
        params.not_after = x509::system_time(not_after).into();
        let cert = params
            .self_signed(&key)
            .map_err(|e| AuthorityError::Crypto(format!("signing the CA certificate: {e}")))?;
        let key_name = store::key_file(number);
        store::write_atomic(&self.dir, &key_name, key_pem.as_bytes(), 0o600)
            .map_err(io_error(&self.dir.join(&key_name)))?;
        let cert_name = store::cert_file(number);
        store::write_atomic(&self.dir, &cert_name, cert.pem().as_bytes(), 0o644)
            .map_err(io_error(&self.dir.join(&cert_name)))?;
        let der = cert.der();
        let subject = x509::parse_cert(der)
            .map(|c| x509::name_text(c.subject()))
            .map_err(AuthorityError::Crypto)?;
        let generation = Generation {
            number,
            role,
            algorithm,
            subject,
            not_before,
            not_after,
            fingerprint: store::hex(&Sha256::digest(der)),
            issued_before: state.issued_total,
        };
        let issuer = rcgen::Issuer::new(params, key);
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, Arc::new(Loaded { issuer }));
        Ok(generation)
    }

    fn bundle_text(&self, state: &State) -> Result<String, AuthorityError> {
        let mut pem = String::new();
        for g in state.trusted() {
            let path = self.dir.join(store::cert_file(g.number));
            pem.push_str(&fs::read_to_string(&path).map_err(io_error(&path))?);
        }
        Ok(pem)
    }

    fn write_bundle(&self, state: &State) -> Result<(), AuthorityError> {
        let pem = self.bundle_text(state)?;
        store::write_atomic(&self.dir, store::BUNDLE, pem.as_bytes(), 0o644)
            .map_err(io_error(&self.dir.join(store::BUNDLE)))
    }

    /// Writes one CRL per trusted generation, with the state's number and times.
    fn write_crls(&self, state: &State, now: i64) -> Result<(), AuthorityError> {
        let mut pem = String::new();
        for g in state.trusted() {
            let ca = self.generation(g.number)?;
            let params = CertificateRevocationListParams {
                this_update: x509::system_time(state.crl_this_update).into(),
                next_update: x509::system_time(state.crl_next_update).into(),
                crl_number: SerialNumber::from_slice(&minimal_be(state.crl_number)),
                issuing_distribution_point: None,
                revoked_certs: state
                    .revoked
                    .iter()
                    .filter(|r| r.cert.generation == g.number)
                    .filter(|r| r.cert.not_after + KEEP_EXPIRED > now)
                    .map(|r| RevokedCertParams {
                        serial_number: SerialNumber::from_slice(
                            &store::unhex(&r.cert.serial).unwrap_or_default(),
                        ),
                        revocation_time: x509::system_time(r.revoked_at).into(),
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::Sha256,
            };
            let crl = params
                .signed_by(&ca.issuer)
                .and_then(|crl| crl.pem())
                .map_err(|e| AuthorityError::Crypto(format!("signing the CRL: {e}")))?;
            pem.push_str(&crl);
        }
        store::write_atomic(&self.dir, store::CRL, pem.as_bytes(), 0o644)
            .map_err(io_error(&self.dir.join(store::CRL)))
    }

    /// Rewrites the bundle and the CRLs if they do not match the state (a crash between
    /// the state's write and theirs).
    fn repair(&self, state: &State) -> Result<(), AuthorityError> {
        let bundle = self.bundle_text(state)?;
        if fs::read_to_string(self.dir.join(store::BUNDLE)).ok().as_deref() != Some(&bundle) {
            self.write_bundle(state)?;
        }
        let want = minimal_be(state.crl_number);
        let crls_ok = fs::read(self.dir.join(store::CRL)).ok().is_some_and(|pem| {
            x509::der_blocks(&pem, "X509 CRL").is_ok_and(|blocks| {
                blocks.len() == state.trusted().count()
                    && blocks.iter().all(|der| {
                        x509_parser::revocation_list::CertificateRevocationList::from_der(der)
                            .is_ok_and(|(_, crl)| {
                                crl.crl_number()
                                    .is_some_and(|n| x509::serial_key(&n.to_bytes_be()) == want)
                            })
                    })
            })
        });
        if !crls_ok {
            self.write_crls(state, x509::unix_seconds(SystemTime::now()))?;
        }
        Ok(())
    }
}

impl Issuer for Authority {
    fn issue(&self, name: &str, csr_der: &[u8]) -> Result<Issued, IssueError> {
        Ok(self.issue_with(name, csr_der, &IssueOptions::default())?)
    }

    fn bundle_pem(&self) -> Result<String, IssueError> {
        Ok(self.read_shared(store::BUNDLE)?)
    }

    fn crl_pem(&self) -> Result<String, IssueError> {
        Ok(self.read_shared(store::CRL)?)
    }

    fn verifier(&self) -> Result<CertVerifier, IssueError> {
        let (bundle, revocation) = self.revocation_state()?;
        Ok(CertVerifier::new(bundle).with_revocation(revocation))
    }
}

/// Adds every CRL of `pem` (as `crl.pem` and [`Issuer::crl_pem`] give them: one per CA
/// of the bundle) to `revocation`, each checked against `bundle`.
/// [`Revocation::add_crl`] takes only the first block of a PEM text.
pub fn add_crls(
    revocation: &mut Revocation,
    bundle: &TrustBundle,
    pem: &[u8],
) -> Result<Vec<CrlInfo>, CrlError> {
    let blocks =
        x509::der_blocks(pem, "X509 CRL").map_err(|detail| CrlError::Malformed { detail })?;
    blocks.iter().map(|der| revocation.add_crl(bundle, der)).collect()
}

/// Reads a CA key, refusing one readable by others.
/// What a node certificate says about its node.
struct NodeCert<'a> {
    name: &'a str,
    mesh: &'a str,
    ips: &'a [IpAddr],
}

/// Signs a node certificate: CN and the dNSName SAN are the node's name, O the mesh's,
/// then the iPAddress SANs; not a CA; digitalSignature only.
fn sign_node_cert(
    node: &NodeCert<'_>,
    serial: &[u8],
    (not_before, not_after): (i64, i64),
    public_key: &rcgen::SubjectPublicKeyInfo,
    issuer: &rcgen::Issuer<'_, SecretKey>,
) -> Result<rcgen::Certificate, AuthorityError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, node.name);
    params.distinguished_name.push(DnType::OrganizationName, node.mesh);
    params.subject_alt_names.push(SanType::DnsName(node.name.try_into().map_err(|e| {
        AuthorityError::BadName { name: node.name.to_owned(), detail: format!("{e}") }
    })?));
    params.subject_alt_names.extend(node.ips.iter().copied().map(SanType::IpAddress));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = x509::system_time(not_before).into();
    params.not_after = x509::system_time(not_after).into();
    params
        .signed_by(public_key, issuer)
        .map_err(|e| AuthorityError::Crypto(format!("signing the certificate: {e}")))
}

/// The lifetime of a certificate from [`issue_detached`] when none is asked for: such a
/// certificate is renewed only by issuing it again (a BOSH job does at every start), so
/// the CA directory's default of a day would be too short.
pub const DETACHED_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Issues a node certificate for `name` to the key of `csr_der` straight from a CA
/// certificate (`ca_cert`, PEM: the CA's certificate, or a bundle holding it) and the
/// CA's key (`ca_key`, PEM, mode 0600), with no CA directory.
///
/// This is for deployment tools whose secret store keeps the CA: a BOSH job's
/// pre-start issues its own instance's certificate this way at every start, as the
/// racoon job of SAP's ipsec-release did. Nothing is recorded: such a certificate is
/// not in any CA directory's state, so it is revoked by its key or serial, not by name.
/// The certificate's O is the CA's own O (the mesh name `meshctl ca init` put there);
/// its lifetime is `options.lifetime` or [`DETACHED_LIFETIME`], capped by the CA's.
///
/// # Errors
/// A file that cannot be read, a key looser than 0600, no certificate in `ca_cert` for
/// that key, a certificate that is not a CA or not valid now, a bad request or name.
pub fn issue_detached(
    ca_cert: &Path,
    ca_key: &Path,
    name: &str,
    csr_der: &[u8],
    options: &IssueOptions,
) -> Result<Issued, AuthorityError> {
    let name = check_node_name(name)?;
    let lifetime = options.lifetime.unwrap_or(DETACHED_LIFETIME);
    check_lifetime(lifetime)?;
    let key = load_key(ca_key)?;
    let pem = fs::read(ca_cert).map_err(io_error(ca_cert))?;
    let bad_cert =
        |detail: String| AuthorityError::BadOptions(format!("{}: {detail}", ca_cert.display()));
    let blocks = x509::der_blocks(&pem, "CERTIFICATE").map_err(bad_cert)?;
    let der = blocks
        .into_iter()
        .find(|der| {
            x509::parse_cert(der).is_ok_and(|c| c.public_key().raw == key.spki().as_slice())
        })
        .ok_or_else(|| {
            bad_cert(format!("no certificate in it is the certificate of {}", ca_key.display()))
        })?;
    let cert = x509::parse_cert(&der).map_err(bad_cert)?;
    if !cert.is_ca() {
        return Err(bad_cert("the certificate is not a CA certificate".into()));
    }
    let now = x509::unix_seconds(SystemTime::now());
    let (ca_from, ca_until) =
        (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
    if now < ca_from || now >= ca_until {
        return Err(bad_cert("the CA certificate is not valid now".into()));
    }
    let mesh = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .unwrap_or("ikemesh")
        .to_owned();
    let spki = csr_public_key(csr_der)?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki)
        .map_err(|e| AuthorityError::BadRequest(format!("unsupported public key ({e})")))?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&der.as_slice().into(), key)
        .map_err(|e| bad_cert(e.to_string()))?;
    let serial = random_serial()?;
    let not_before = now - secs(BACKDATE);
    let not_after = now.saturating_add(secs(lifetime)).min(ca_until);
    let cert = sign_node_cert(
        &NodeCert { name: &name, mesh: &mesh, ips: &options.ips },
        &serial,
        (not_before, not_after),
        &public_key,
        &issuer,
    )?;
    Ok(Issued {
        cert_pem: cert.pem(),
        serial: store::hex(&serial),
        not_after: x509::system_time(not_after),
    })
}

fn load_key(path: &Path) -> Result<SecretKey, AuthorityError> {
    let mut file = fs::File::open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AuthorityError::KeyTooOpen { path: path.display().to_string(), mode });
    }
    let mut pem = Zeroizing::new(String::new());
    file.read_to_string(&mut pem).map_err(io_error(path))?;
    SecretKey::from_pem(&pem)
        .map_err(|detail| AuthorityError::BadKey { path: path.display().to_string(), detail })
}

/// The public key of a certificate request whose signature checks out.
fn csr_public_key(der: &[u8]) -> Result<Vec<u8>, AuthorityError> {
    use x509_parser::certification_request::X509CertificationRequest;
    let bad = |s: String| AuthorityError::BadRequest(s);
    let csr = match X509CertificationRequest::from_der(der) {
        Ok(([], csr)) => csr,
        Ok((rest, _)) => return Err(bad(format!("{} bytes after the request", rest.len()))),
        Err(e) => return Err(bad(format!("not a PKCS#10 request ({})", x509::parse_error(&e)))),
    };
    let info = &csr.certification_request_info;
    let key = x509::spki_verifier(&info.subject_pki)
        .map_err(|e| bad(format!("unsupported key ({e}); use Ed25519, P-256 or RSA")))?;
    match x509::check_signature(
        key.as_ref(),
        &csr.signature_algorithm,
        &csr.signature_value.data,
        info.raw,
    ) {
        Ok(()) => Ok(info.subject_pki.raw.to_vec()),
        Err(x509::SigFailure::Unsupported) => Err(bad(format!(
            "unsupported signature algorithm {}",
            csr.signature_algorithm.algorithm
        ))),
        Err(x509::SigFailure::Bad) => {
            Err(bad("its signature does not verify with its own key".into()))
        }
    }
}

/// 16 random bytes, a positive DER INTEGER with no leading zero.
fn random_serial() -> Result<[u8; 16], AuthorityError> {
    let mut serial = store::random::<16>()
        .map_err(|e| AuthorityError::Crypto(format!("no serial number: {e}")))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// A new CRL number, valid from now.
fn bump_crl(state: &mut State, now: i64) {
    state.crl_number += 1;
    state.crl_this_update = now - secs(BACKDATE);
    state.crl_next_update = now + secs(CRL_LIFETIME);
}

fn minimal_be(n: u64) -> Vec<u8> {
    x509::serial_key(&n.to_be_bytes())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn corrupt_no_current(authority: &Authority) -> AuthorityError {
    AuthorityError::CorruptState {
        path: authority.dir.join(store::STATE).display().to_string(),
        detail: "no current CA generation".into(),
    }
}
