//! The files of a CA directory: atomic writes (temporary file in the same directory,
//! fsync, rename, fsync of the directory), the lock file that keeps two processes from
//! interleaving, and random bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The state file.
pub(super) const STATE: &str = "state.json";
/// The lock file every operation takes (shared to read, exclusive to change).
pub(super) const LOCK: &str = "lock";
/// The trust bundle: the current CA certificate, then the previous one during a rotation.
pub(super) const BUNDLE: &str = "bundle.pem";
/// The CRLs: one per CA of the bundle, in the bundle's order.
pub(super) const CRL: &str = "crl.pem";

/// The key file of CA generation `generation`.
pub(super) fn key_file(generation: u32) -> String {
    format!("ca-{generation}.key")
}

/// The certificate file of CA generation `generation`.
pub(super) fn cert_file(generation: u32) -> String {
    format!("ca-{generation}.pem")
}

/// Writes `dir/name` so that a reader (or a crash) sees the old content or the new,
/// never a mix: a new file with `mode` from its creation on (a key is never readable by
/// others, not even for a moment), synced, renamed over the old one, and the directory
/// synced.
pub(super) fn write_atomic(dir: &Path, name: &str, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", hex(&random::<8>()?)));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the directory's entries (a rename, a removal) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A held lock on the CA directory; released on drop.
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Waits for the lock: `exclusive` to change the CA, shared to read it.
    pub(super) fn acquire(dir: &Path, exclusive: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK))?;
        if exclusive {
            file.lock()?;
        } else {
            file.lock_shared()?;
        }
        Ok(Self { _file: file })
    }
}

/// `N` random bytes from the operating system.
pub(super) fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(out)
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    crate::x509::hex(bytes)
}

/// Bytes from hex (any case, `:` separators allowed); `None` if it is not hex.
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    if digits.is_empty() {
        return None;
    }
    let nibble = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let padded: Vec<u8> =
        if digits.len() % 2 == 1 { std::iter::once(b'0').chain(digits).collect() } else { digits };
    padded.chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex("0a:B1"), Some(vec![0x0a, 0xb1]));
        assert_eq!(unhex("abc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(unhex("xy"), None);
        assert_eq!(unhex(""), None);
        assert_eq!(hex(&unhex("00ff").unwrap()), "00ff");
    }

    #[test]
    fn atomic_write_replaces_with_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "k", b"one", 0o600).unwrap();
        write_atomic(dir.path(), "k", b"two", 0o600).unwrap();
        assert_eq!(fs::read(dir.path().join("k")).unwrap(), b"two");
        let mode = fs::metadata(dir.path().join("k")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
