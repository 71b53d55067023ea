//! The CA's state file (`state.json`): mesh name, CA generations, lifetimes, the CRL
//! number, and every certificate issued (until well after it expires) or revoked.

use super::Algorithm;
use serde::{Deserialize, Serialize};

/// The format of `state.json` this code reads and writes.
pub(super) const FORMAT: u32 = 1;

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct State {
    /// [`FORMAT`].
    pub(super) format: u32,
    /// The mesh's name.
    pub(super) mesh: String,
    /// Validity of a CA certificate, seconds.
    pub(super) ca_validity_secs: u64,
    /// Default lifetime of a node certificate, seconds.
    pub(super) node_lifetime_secs: u64,
    /// Every CA generation, oldest first.
    pub(super) generations: Vec<Generation>,
    /// The number of the CRLs last written (one per CA of the bundle, all with this
    /// number).
    pub(super) crl_number: u64,
    /// When the CRLs last written were made, Unix seconds.
    pub(super) crl_this_update: i64,
    /// Their nextUpdate, Unix seconds.
    pub(super) crl_next_update: i64,
    /// How many node certificates were ever issued.
    pub(super) issued_total: u64,
    /// Node certificates issued and not revoked (pruned a while after they expire).
    pub(super) issued: Vec<IssuedEntry>,
    /// Node certificates revoked.
    pub(super) revoked: Vec<RevokedEntry>,
    /// SHA-256 of the `SubjectPublicKeyInfo` of every revoked certificate, hex: no
    /// certificate is issued to, nor accepted for, these keys again.
    pub(super) revoked_keys: Vec<String>,
}

/// What a CA generation is to the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Issues node certificates and is trusted.
    Current,
    /// The CA before a rotation: still trusted, issues nothing.
    Previous,
    /// A CA staged for the next rotation: already trusted, issues nothing yet.
    Next,
    /// Dropped: no longer trusted; its key is deleted.
    Retired,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Current => "current",
            Role::Previous => "previous",
            Role::Next => "next",
            Role::Retired => "retired",
        })
    }
}

/// One CA generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Generation {
    /// 1, 2, …
    pub(super) number: u32,
    pub(super) role: Role,
    pub(super) algorithm: Algorithm,
    /// The certificate's subject, for display.
    pub(super) subject: String,
    /// Validity, Unix seconds.
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    /// SHA-256 of the certificate (DER), hex.
    pub(super) fingerprint: String,
    /// How many node certificates had been issued when it was made: those numbered
    /// above were issued (with the bundle holding it) after.
    pub(super) issued_before: u64,
}

/// A node certificate issued and not revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IssuedEntry {
    /// Serial, lowercase hex without leading zeros.
    pub(super) serial: String,
    pub(super) name: String,
    /// The CA generation that signed it.
    pub(super) generation: u32,
    /// SHA-256 of its `SubjectPublicKeyInfo`, hex.
    pub(super) key_hash: String,
    /// 1 for the first certificate the CA issued, 2 for the next, …
    pub(super) number: u64,
    /// Validity, Unix seconds.
    pub(super) not_before: i64,
    pub(super) not_after: i64,
}

/// A node certificate revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokedEntry {
    #[serde(flatten)]
    pub(super) cert: IssuedEntry,
    /// When, Unix seconds.
    pub(super) revoked_at: i64,
}

impl State {
    /// The generation that issues.
    pub(super) fn current(&self) -> Option<&Generation> {
        self.generations.iter().find(|g| g.role == Role::Current)
    }

    /// The generation still trusted after a rotation, if any.
    pub(super) fn previous(&self) -> Option<&Generation> {
        self.generations.iter().find(|g| g.role == Role::Previous)
    }

    /// The generation staged for the next rotation, if any.
    pub(super) fn next(&self) -> Option<&Generation> {
        self.generations.iter().find(|g| g.role == Role::Next)
    }

    /// The trusted generations: current first, then previous or next.
    pub(super) fn trusted(&self) -> impl Iterator<Item = &Generation> {
        self.current().into_iter().chain(self.previous()).chain(self.next())
    }

    /// Whether a certificate with `serial` was ever recorded (issued or revoked).
    pub(super) fn serial_known(&self, serial: &str) -> bool {
        self.issued.iter().any(|e| e.serial == serial)
            || self.revoked.iter().any(|e| e.cert.serial == serial)
    }

    /// Checks what serde cannot: one current generation, at most one previous, unique
    /// generation numbers. One line on failure.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format {} (this meshctl reads format {FORMAT})", self.format));
        }
        let count = |role| self.generations.iter().filter(|g| g.role == role).count();
        if count(Role::Current) != 1 {
            return Err(format!("{} current CA generations (expected 1)", count(Role::Current)));
        }
        if count(Role::Previous) + count(Role::Next) > 1 {
            return Err("more than one previous or next CA generation".into());
        }
        let mut numbers: Vec<u32> = self.generations.iter().map(|g| g.number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.len() != self.generations.len() {
            return Err("two CA generations have the same number".into());
        }
        Ok(())
    }
}
