//! Writing files the way nodes and operators need them: whole or not at all (a temp file
//! in the same directory, fsync, then a rename or a link, then fsync of the directory),
//! keys with mode 0600 from their creation on, and never over an existing file where
//! `meshctl` promises not to.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Fails, saying what to do, if `path` exists.
pub(crate) fn check_absent(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(exists(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = parent(path);
            if parent.is_dir() {
                Ok(())
            } else {
                Err(format!("cannot write {}: no directory {}", path.display(), parent.display()))
            }
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn exists(path: &Path) -> String {
    format!("{} exists; refusing to overwrite it (move it away first)", path.display())
}

/// Writes a new file at `path` with `mode` (less the umask); refuses if `path` exists,
/// even if it appears while we write.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let temp = write_temp(path, data, mode)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists(path)),
        Err(e) => Err(format!("cannot write {}: {e}", path.display())),
    }
}

/// Replaces (or creates) the file at `path` with `data` and `mode` (less the umask),
/// atomically: readers see the old file or the new one.
pub(crate) fn replace(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let temp = write_temp(path, data, mode)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    sync_dir(path)
}

/// A new, synced file beside `path` holding `data`.
fn write_temp(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness from the system: {e}"))?;
    let nonce: String = nonce.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let temp = parent(path).join(format!(".{name}.{nonce}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        file.write_all(data)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&temp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(temp)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(path: &Path) -> Result<(), String> {
    let dir = parent(path);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync the directory {}: {e}", dir.display()))
}

/// The DER of the first PEM block labelled one of `labels` in `data`, or `data` itself
/// when it is not PEM (DER already).
pub(crate) fn pem_or_der(data: &[u8], labels: &[&str]) -> Result<Vec<u8>, String> {
    let Ok(text) = std::str::from_utf8(data) else { return Ok(data.to_vec()) };
    if !text.trim_start().starts_with("-----BEGIN ") {
        return Ok(data.to_vec());
    }
    for label in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let Some(start) = text.find(&begin) else { continue };
        let body = &text[start + begin.len()..];
        let stop = body.find(&end).ok_or_else(|| format!("no '{end}' line"))?;
        // RFC 7468 has no headers, but skip the RFC 1421 ones some tools still write.
        let base64: String =
            body[..stop].lines().filter(|l| !l.contains(':')).collect::<Vec<_>>().concat();
        return base64_decode(&base64).ok_or_else(|| format!("the {label} block is not base64"));
    }
    Err(format!("no {} block in it", labels.join(" or ")))
}

/// Standard base64 (RFC 4648), white space ignored, padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data = clean.strip_suffix(b"==").or_else(|| clean.strip_suffix(b"=")).unwrap_or(&clean);
    if data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_pem() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a*==").is_none());
        let pem =
            "-----BEGIN CERTIFICATE REQUEST-----\naGVs\nbG8=\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(pem_or_der(pem.as_bytes(), &["CERTIFICATE REQUEST"]).unwrap(), b"hello");
        assert_eq!(pem_or_der(b"\x30\x03", &["X"]).unwrap(), b"\x30\x03");
        assert!(pem_or_der(b"-----BEGIN X-----\n", &["Y"]).is_err());
    }
}
