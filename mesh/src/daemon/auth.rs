//! Our credentials and the trust bundle, read from the configuration's files.

use crate::supervisor::auth::Credentials;
use ca::keys::{PrivateKey, load_cert_chain};
use ca::verify::{Revocation, TrustBundle};
use std::path::Path;

/// Loads our certificate chain and key, and checks that they belong together.
pub fn load_credentials(cert: &Path, key: &Path) -> Result<Credentials, String> {
    let key = PrivateKey::load(key).map_err(|e| e.to_string())?;
    let certs = load_cert_chain(cert).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    Credentials::new(&key, certs)
}

/// The trust bundle and revocation state from the configuration's files.
pub fn trust(ca: &Path, crl: Option<&Path>) -> Result<(TrustBundle, Revocation), String> {
    let bundle = TrustBundle::load(ca).map_err(|e| format!("pki.ca: {e}"))?;
    let mut revocation = Revocation::default();
    if let Some(crl) = crl {
        let pem = std::fs::read(crl).map_err(|e| format!("pki.crl {}: {e}", crl.display()))?;
        ca::authority::add_crls(&mut revocation, &bundle, &pem)
            .map_err(|e| format!("pki.crl {}: {e}", crl.display()))?;
    }
    Ok((bundle, revocation))
}
