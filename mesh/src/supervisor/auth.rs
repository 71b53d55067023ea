//! Our credentials and how peers are checked: one certificate verifier shared by every
//! peer (trust bundle, CRL, the live member set), and per peer a check that the
//! identity it authenticated with is the member expected at its address.

use ca::keys::{PrivateKey, ike_id};
use ca::verify::{CertVerifier, Members, PeerId};
use ike::crypto::auth::{Signer, Verifier};
use ike::sa::PeerAuthenticator;
use ike::wire::id::IdRepr;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The members a certificate may name, changed live as members come and go.
#[derive(Debug, Clone, Default)]
pub struct LiveMembers(Arc<RwLock<HashSet<PeerId>>>);

impl LiveMembers {
    /// Replaces the set.
    pub fn set(&self, names: impl IntoIterator<Item = String>) {
        let set = names.into_iter().map(|n| PeerId::fqdn(&n)).collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = set;
    }
}

impl Members for LiveMembers {
    fn contains(&self, peer: &PeerId) -> bool {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(peer)
    }
}

/// Checks one peer: the shared verifier, then that the identity is the member this SA
/// was made for (a member's certificate must not stand in for another member).
pub struct PeerAuth {
    /// The shared verifier.
    pub verifier: Arc<CertVerifier>,
    /// The identity expected.
    pub expected: PeerId,
}

impl PeerAuthenticator for PeerAuth {
    fn authenticate(
        &self,
        id: &IdRepr,
        certs: &[Vec<u8>],
    ) -> Result<Box<dyn Verifier>, Box<dyn std::error::Error + Send + Sync>> {
        let verified = self.verifier.verify(id, certs)?;
        if verified.peer != self.expected {
            return Err(format!(
                "identity mismatch: the peer at this address is {:?} but authenticated as {:?}",
                self.expected, verified.peer
            )
            .into());
        }
        Ok(verified.verifier)
    }
}

/// Our own credentials, as loaded from the configuration's files.
pub struct Credentials {
    /// Our IKE identity (from the certificate).
    pub local_id: IdRepr,
    /// Our chain, DER, leaf first.
    pub certs: Vec<Vec<u8>>,
    /// Signs our AUTH payloads.
    pub signer: Arc<dyn Signer + Send + Sync>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("local_id", &self.local_id).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a key and its certificate chain (leaf first), checked to belong
    /// together.
    pub fn new(key: &PrivateKey, certs: Vec<Vec<u8>>) -> Result<Self, String> {
        let leaf = certs.first().ok_or("no certificate")?;
        key.check_matches(leaf).map_err(|e| e.to_string())?;
        let local_id = ike_id(leaf).map_err(|e| e.to_string())?;
        Ok(Self { local_id, certs, signer: key.signer() })
    }
}
