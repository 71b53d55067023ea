//! What `meshctl ca show` prints: [`CaSummary`] and its parts, plain structs with a
//! `Display` of about 80 columns.

use super::Algorithm;
use super::state::{Generation, IssuedEntry, Role, State};
use crate::x509;
use std::fmt;
use std::time::{Duration, SystemTime};

/// Warn when the current CA expires within this: a rotation takes at least one node
/// certificate lifetime.
const CA_EXPIRY_WARNING: i64 = 180 * 86_400;

/// One CA generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    /// 1, 2, …
    pub generation: u32,
    /// Current, previous (still trusted during a rotation) or retired.
    pub role: Role,
    /// The certificate's subject.
    pub subject: String,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// Validity.
    pub not_before: SystemTime,
    /// See `not_before`.
    pub not_after: SystemTime,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint: String,
}

/// A revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedInfo {
    /// The node's name.
    pub name: String,
    /// The serial, lowercase hex.
    pub serial: String,
    /// The CA generation that issued it.
    pub generation: u32,
    /// When it was revoked.
    pub revoked_at: SystemTime,
    /// SHA-256 of its `SubjectPublicKeyInfo`, hex: refused from then on.
    pub key_hash: String,
}

/// The state of the CA, for `meshctl ca show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSummary {
    /// The mesh's name.
    pub mesh: String,
    /// Every generation, oldest first.
    pub generations: Vec<GenerationInfo>,
    /// The default lifetime of node certificates.
    pub node_lifetime: Duration,
    /// How many node certificates were ever issued.
    pub issued_total: u64,
    /// How many are unexpired, unrevoked and from a trusted CA.
    pub valid: usize,
    /// The revoked certificates, oldest revocation first.
    pub revoked: Vec<RevokedInfo>,
    /// The number of the current CRLs.
    pub crl_number: u64,
    /// Their nextUpdate.
    pub crl_next_update: SystemTime,
    /// During a rotation, the nodes the next step waits for: with a staged CA, nodes
    /// that have not renewed since (so may not hold the new bundle yet); after
    /// `rotate`, nodes that hold only certificates of the previous CA.
    pub awaiting: Vec<String>,
    /// Things the operator should act on (CA expiry, a stale CRL, a rotation under way).
    pub warnings: Vec<String>,
}

pub(super) fn generation_info(g: &Generation) -> GenerationInfo {
    GenerationInfo {
        generation: g.number,
        role: g.role,
        subject: g.subject.clone(),
        algorithm: g.algorithm,
        not_before: x509::system_time(g.not_before),
        not_after: x509::system_time(g.not_after),
        fingerprint: g.fingerprint.clone(),
    }
}

pub(super) fn summary(state: &State, now: i64) -> CaSummary {
    let mut warnings = Vec::new();
    if let Some(current) = state.current() {
        if current.not_after < now {
            warnings.push(format!(
                "the CA expired on {}: no node authenticates; rotate now",
                date(current.not_after)
            ));
        } else if current.not_after - now < CA_EXPIRY_WARNING {
            warnings.push(format!(
                "the CA expires on {}; rotate it well before (`meshctl ca rotate`)",
                date(current.not_after)
            ));
        }
    }
    let mut awaiting = Vec::new();
    if let Some(previous) = state.previous() {
        awaiting = only_old(state, now, |e| e.generation == previous.number);
        warnings.push(format!(
            "rotation under way: generation {} is still trusted; drop it once every node \
             is re-issued (`meshctl ca rotate --drop-old`), {} node(s) to go",
            previous.number,
            awaiting.len()
        ));
    } else if let Some(next) = state.next() {
        awaiting = only_old(state, now, |e| e.number <= next.issued_before);
        warnings.push(format!(
            "generation {} is staged: run `meshctl ca rotate` once every node has renewed \
             (and so holds the new bundle), {} node(s) to go",
            next.number,
            awaiting.len()
        ));
    }
    if state.crl_next_update < now {
        warnings.push(format!(
            "the CRL passed its nextUpdate ({}); refresh it (`meshctl ca crl`)",
            date(state.crl_next_update)
        ));
    }
    CaSummary {
        mesh: state.mesh.clone(),
        generations: state.generations.iter().map(generation_info).collect(),
        node_lifetime: Duration::from_secs(state.node_lifetime_secs),
        issued_total: state.issued_total,
        valid: state
            .issued
            .iter()
            .filter(|e| e.not_after > now && state.trusted().any(|g| g.number == e.generation))
            .count(),
        revoked: state
            .revoked
            .iter()
            .map(|r| RevokedInfo {
                name: r.cert.name.clone(),
                serial: r.cert.serial.clone(),
                generation: r.cert.generation,
                revoked_at: x509::system_time(r.revoked_at),
                key_hash: r.cert.key_hash.clone(),
            })
            .collect(),
        crl_number: state.crl_number,
        crl_next_update: x509::system_time(state.crl_next_update),
        awaiting,
        warnings,
    }
}

/// Names with a live certificate (unexpired, from a trusted CA) all of whose live
/// certificates are `old`.
pub(super) fn only_old(state: &State, now: i64, old: impl Fn(&IssuedEntry) -> bool) -> Vec<String> {
    let trusted: Vec<u32> = state.trusted().map(|g| g.number).collect();
    let live: Vec<&IssuedEntry> = state
        .issued
        .iter()
        .filter(|e| e.not_after > now && trusted.contains(&e.generation))
        .collect();
    let mut names: Vec<String> = live
        .iter()
        .filter(|e| live.iter().filter(|o| o.name == e.name).all(|o| old(o)))
        .map(|e| e.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A Unix time as the verifier's messages show times (`Jun  1 12:00:00 2030 +00:00`).
fn date(secs: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map_or_else(|_| format!("@{secs}"), |t| t.to_string())
}

/// `1d`, `12h`, `90m`, `30s`: the largest unit that divides it.
pub(super) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl fmt::Display for CaSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid_nodes = self.valid;
        writeln!(f, "mesh:           {}", self.mesh)?;
        writeln!(f, "node lifetime:  {}", duration(self.node_lifetime))?;
        writeln!(f, "issued:         {} ({valid_nodes} valid)", self.issued_total)?;
        writeln!(
            f,
            "CRL:            number {}, next update {}",
            self.crl_number,
            date(x509::unix_seconds(self.crl_next_update))
        )?;
        writeln!(f)?;
        writeln!(f, "{:<4}{:<10}{:<12}{:<28}SUBJECT", "GEN", "ROLE", "ALGORITHM", "NOT AFTER")?;
        for g in &self.generations {
            writeln!(
                f,
                "{:<4}{:<10}{:<12}{:<28}{}",
                g.generation,
                g.role.to_string(),
                g.algorithm.to_string(),
                date(x509::unix_seconds(g.not_after)),
                g.subject
            )?;
            writeln!(f, "    sha256 {}", g.fingerprint)?;
        }
        if !self.revoked.is_empty() {
            writeln!(f)?;
            writeln!(f, "{:<24}{:<34}{:<4}REVOKED AT", "NAME", "SERIAL", "GEN")?;
            for r in &self.revoked {
                writeln!(
                    f,
                    "{:<24}{:<34}{:<4}{}",
                    r.name,
                    r.serial,
                    r.generation,
                    date(x509::unix_seconds(r.revoked_at))
                )?;
            }
        }
        if !self.awaiting.is_empty() {
            writeln!(f, "awaiting:       {}", self.awaiting.join(", "))?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
