//! The SPA key: HKDF-SHA256 over the mesh secret (and an optional node key).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::SpaError;

/// The shortest mesh secret accepted: 32 bytes, the AES-256 key's own size.
pub const MIN_SECRET_LEN: usize = 32;

/// The longest secret file read: anything bigger is not a secret file.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// HKDF's salt: names the protocol and its version, so that no other use of the same
/// secret derives the same key.
const SALT: &[u8] = b"ikemesh spa v1";
/// HKDF's info without a node key.
const INFO_MESH: &[u8] = b"ikemesh spa v1 aes-256-gcm mesh";
/// HKDF's info with a node key.
const INFO_NODE: &[u8] = b"ikemesh spa v1 aes-256-gcm node";

/// The AES-256-GCM key that seals and opens SPA packets.
///
/// Derived with HKDF-SHA256: salt `"ikemesh spa v1"`, input keying material the mesh
/// secret, or `len(mesh secret) as u32 big-endian || mesh secret || node key` when a
/// node key is given (the length prefix keeps the two apart), and an info string that
/// says which of the two it is. Zeroized on drop; `Debug` shows nothing of it.
///
/// The node key, when used, is the key of the node being knocked on (the gate), not of
/// the sender: a gate then has exactly one key to try, since a packet carries no
/// cleartext id, and a knock captured on its way to one node opens nothing at another.
/// A sender needs the node key of each peer it knocks on.
#[derive(Clone)]
pub struct SpaKeys {
    key: Zeroizing<[u8; 32]>,
}

impl SpaKeys {
    /// The key from the mesh secret (at least [`MIN_SECRET_LEN`] bytes) and an optional
    /// node key (at least [`MIN_SECRET_LEN`] bytes too).
    pub fn new(mesh_secret: &[u8], node_key: Option<&[u8]>) -> Result<Self, SpaError> {
        if mesh_secret.len() < MIN_SECRET_LEN {
            return Err(SpaError::ShortSecret { what: "mesh SPA secret", len: mesh_secret.len() });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        let expanded = match node_key {
            None => Hkdf::<Sha256>::new(Some(SALT), mesh_secret).expand(INFO_MESH, &mut key[..]),
            Some(node) => {
                if node.len() < MIN_SECRET_LEN {
                    return Err(SpaError::ShortSecret { what: "SPA node key", len: node.len() });
                }
                let len = u32::try_from(mesh_secret.len())
                    .map_err(|_| SpaError::ShortSecret { what: "mesh SPA secret", len: 0 })?;
                let mut ikm =
                    Zeroizing::new(Vec::with_capacity(4 + mesh_secret.len() + node.len()));
                ikm.extend_from_slice(&len.to_be_bytes());
                ikm.extend_from_slice(mesh_secret);
                ikm.extend_from_slice(node);
                Hkdf::<Sha256>::new(Some(SALT), &ikm).expand(INFO_NODE, &mut key[..])
            }
        };
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        expanded.map_err(|_| SpaError::ShortSecret { what: "derived key", len: 0 })?;
        Ok(Self { key })
    }

    /// The key from a mesh secret file: every byte of the file is the secret (no
    /// trimming: every node must hold the identical file). Refuses a file that group or
    /// others may read or write (mode looser than `0600`), and one under 32 bytes.
    pub fn load(path: &Path) -> Result<Self, SpaError> {
        let secret = read_secret(path)?;
        Self::new(&secret, None)
    }

    /// [`SpaKeys::load`] with a node key file (the gate's own, or the peer's being
    /// knocked on), checked the same way.
    pub fn load_with_node_key(mesh_secret: &Path, node_key: &Path) -> Result<Self, SpaError> {
        let secret = read_secret(mesh_secret)?;
        let node = read_secret(node_key)?;
        Self::new(&secret, Some(&node))
    }

    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

impl fmt::Debug for SpaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpaKeys(<redacted>)")
    }
}

fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, SpaError> {
    let io = |source| SpaError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(SpaError::NotAFile { path: path.to_path_buf() });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SpaError::LooseMode { path: path.to_path_buf(), mode });
    }
    // Sized up front, so that no reallocation leaves a copy of the secret behind.
    let capacity = usize::try_from(meta.len().min(MAX_SECRET_FILE) + 1).unwrap_or(0);
    let mut secret = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(MAX_SECRET_FILE + 1).read_to_end(&mut secret).map_err(io)?;
    if secret.len() as u64 > MAX_SECRET_FILE {
        return Err(SpaError::NotAFile { path: path.to_path_buf() });
    }
    Ok(secret)
}
