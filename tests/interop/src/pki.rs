//! Test certificates made with strongSwan's `pki` tool.
//!
//! ```no_run
//! use ikemesh_interop::{KeyType, TestCa};
//! let ca = TestCa::new(KeyType::Ed25519)?;
//! let a = ca.issue("a.ikemesh.test")?; // key, and a cert with that FQDN as dNSName SAN
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::error;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Plugins `pki` and `swanctl` load. Their built-in lists name plugins Debian does not
/// ship in working order (`tpm` prints two lines of complaint on every run).
pub(crate) const TOOL_PLUGINS: &str =
    "random drbg nonce sha1 sha2 aes hmac pem pkcs1 pkcs8 x509 pubkey openssl curve25519";

/// The kind of key of a CA or an end entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Ed25519 (RFC 8410 keys, RFC 8420 signatures in IKEv2).
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256.
    EcdsaP256,
}

impl KeyType {
    /// The arguments of `pki --gen` that make such a key.
    fn gen_args(self) -> &'static [&'static str] {
        match self {
            KeyType::Ed25519 => &["--type", "ed25519"],
            KeyType::EcdsaP256 => &["--type", "ecdsa", "--size", "256"],
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Ed25519 => "Ed25519",
            KeyType::EcdsaP256 => "ECDSA P-256",
        })
    }
}

/// An end entity: its IKE identity (an FQDN, also the certificate's dNSName SAN), its
/// certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The FQDN this identity authenticates as (IKE ID type `ID_FQDN`).
    pub id: String,
    /// The key's type.
    pub key_type: KeyType,
    /// The X.509 certificate, PEM (`BEGIN CERTIFICATE`).
    pub cert_pem: String,
    /// The private key, PEM: PKCS#8 (`BEGIN PRIVATE KEY`) for Ed25519, SEC 1
    /// (`BEGIN EC PRIVATE KEY`) for ECDSA, as `pki --gen` writes them.
    pub key_pem: String,
}

/// A throw-away certificate authority in a temporary folder, deleted on drop.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
    key_type: KeyType,
    cert_pem: String,
    serial: std::sync::atomic::AtomicU32,
}

impl TestCa {
    /// Makes a self-signed CA (`CN=ikemesh test CA`) with a key of `key_type`.
    pub fn new(key_type: KeyType) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ikemesh-pki.").tempdir()?;
        fs::write(
            dir.path().join("strongswan.conf"),
            format!("pki {{\n  load = {TOOL_PLUGINS}\n}}\n"),
        )?;
        let ca = TestCa {
            dir,
            key_type,
            cert_pem: String::new(),
            serial: std::sync::atomic::AtomicU32::new(1),
        };
        let key = ca.path("ca.key");
        ca.gen_key(key_type, &key)?;
        let cert = ca.pki(&[
            "--self",
            "--ca",
            "--lifetime",
            "30",
            "--in",
            &path_str(&key)?,
            "--type",
            "priv",
            "--dn",
            "CN=ikemesh test CA",
            "--outform",
            "pem",
        ])?;
        fs::write(ca.path("ca.pem"), &cert)?;
        Ok(TestCa { cert_pem: cert, ..ca })
    }

    /// The type of the CA's own key.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new key of the CA's own type and a certificate for `fqdn` (subject
    /// `CN=<fqdn>`, subjectAltName dNSName `<fqdn>`), signed by this CA.
    pub fn issue(&self, fqdn: &str) -> io::Result<Identity> {
        self.issue_with_key(fqdn, self.key_type)
    }

    /// As [`issue`](Self::issue), with a key of `key_type` (the CA signs with its own).
    pub fn issue_with_key(&self, fqdn: &str, key_type: KeyType) -> io::Result<Identity> {
        let serial = self.serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = self.path(&format!("ee{serial}.key"));
        self.gen_key(key_type, &key)?;
        let cert = self.pki(&[
            "--issue",
            "--in",
            &path_str(&key)?,
            "--type",
            "priv",
            "--cacert",
            &path_str(&self.path("ca.pem"))?,
            "--cakey",
            &path_str(&self.path("ca.key"))?,
            "--serial",
            &format!("{serial:x}"),
            "--lifetime",
            "30",
            "--dn",
            &format!("CN={fqdn}"),
            "--san",
            fqdn,
            "--outform",
            "pem",
        ])?;
        Ok(Identity {
            id: fqdn.to_owned(),
            key_type,
            cert_pem: cert,
            key_pem: fs::read_to_string(&key)?,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn gen_key(&self, key_type: KeyType, out: &Path) -> io::Result<()> {
        let mut args = vec!["--gen"];
        args.extend_from_slice(key_type.gen_args());
        args.extend_from_slice(&["--outform", "pem"]);
        let pem = self.pki(&args)?;
        fs::write(out, pem)
    }

    /// Runs `pki` with this CA's strongswan.conf; its standard output.
    fn pki(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("pki")
            .env("STRONGSWAN_CONF", self.path("strongswan.conf"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| error(format!("cannot run pki (is strongswan-pki installed?): {e}")))?;
        if !out.status.success() {
            return Err(error(format!(
                "pki {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        String::from_utf8(out.stdout).map_err(|_| error("pki wrote something that is not PEM"))
    }
}

pub(crate) fn path_str(path: &Path) -> io::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| error(format!("path is not UTF-8: {}", path.display())))
}
