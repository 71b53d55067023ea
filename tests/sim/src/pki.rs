//! A mesh CA and one certificate per node, made once per simulation with the `ca`
//! crate (the same code `meshctl ca` runs), in a temporary directory.

use ca::authority::{generate_node_key, make_csr};
use ca::verify::{Revocation, TrustBundle};
use ca::{Algorithm, Authority, InitOptions, IssueOptions, PrivateKey};
use mesh::supervisor::auth::Credentials;
use std::sync::Arc;
use std::time::Duration;

/// The CA and every node's credentials.
pub struct Pki {
    /// The CA (its directory lives as long as this).
    pub authority: Authority,
    _dir: tempfile::TempDir,
    /// Per node, in the order of the names given.
    pub creds: Vec<Arc<Credentials>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("nodes", &self.creds.len()).finish_non_exhaustive()
    }
}

impl Pki {
    /// A CA for mesh `sim` and a certificate (Ed25519, 30 days) for each name.
    ///
    /// # Panics
    /// When the CA cannot be made (a bug, or no temporary directory).
    pub fn new(names: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut options = InitOptions::new("sim");
        options.algorithm = Algorithm::Ed25519;
        let authority = Authority::init(&dir.path().join("ca"), &options).expect("a CA");
        let issue = IssueOptions {
            lifetime: Some(Duration::from_secs(30 * 86_400)),
            ..IssueOptions::default()
        };
        let creds = names
            .iter()
            .map(|name| {
                let key = generate_node_key(Algorithm::Ed25519).expect("a node key");
                let csr = make_csr(name, key.pem()).expect("a CSR");
                let issued = authority.issue_with(name, &csr, &issue).expect("a certificate");
                let certs = ca::keys::cert_chain_from_pem(issued.cert_pem.as_bytes())
                    .expect("the certificate just issued");
                let private =
                    PrivateKey::from_pem(key.pem().as_bytes()).expect("the key just made");
                Arc::new(Credentials::new(&private, certs).expect("matching credentials"))
            })
            .collect();
        Self { authority, _dir: dir, creds }
    }

    /// The trust bundle and the revocation state, as nodes load them.
    ///
    /// # Panics
    /// When the CA's state cannot be read.
    pub fn trust(&self) -> (TrustBundle, Revocation) {
        self.authority.revocation_state().expect("the CA's trust")
    }
}
