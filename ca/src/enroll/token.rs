//! One-time join tokens and the store that redeems them.
//!
//! A token is `ikm1.<secret>.<pin>` (see the [module documentation](super) for the
//! format). The store keeps, per token, the SHA-256 of its secret, the node name it is
//! bound to, when it expires and whether (and when) it was used; never the token itself.
//!
//! The state is one JSON file, `tokens.json`, in the store's directory. Every change
//! takes an exclusive `flock` on `tokens.lock` (readers a shared one), reads the file,
//! changes it, writes `tokens.json.tmp` (mode 0600), fsyncs it, renames it over
//! `tokens.json` and fsyncs the directory: another process, or another thread, never
//! sees or writes a half-made state, and a crash leaves either the old state or the new.
//!
//! Redeeming marks the token used, durably, *before* the caller issues the certificate.
//! A crash (or an issuing failure) between the two leaves the token used and nothing
//! issued: the node asks the operator for a new token. The other order could issue twice
//! for one token; this one can only refuse once too often.

use crate::verify::{Clock, SystemClock};
use crate::x509;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The first field of every join token: the format's name and version.
pub const TOKEN_PREFIX: &str = "ikm1";

/// Random bytes in a token's secret.
const SECRET_LEN: usize = 32;
/// The secret, base64url without padding.
const SECRET_CHARS: usize = 43;

const STATE_FILE: &str = "tokens.json";
const TEMP_FILE: &str = "tokens.json.tmp";
const LOCK_FILE: &str = "tokens.lock";

/// Entries whose expiry is older than this are dropped when a token is created. Until
/// then a late redeem says "expired" (or "already used") rather than "unknown".
const PRUNE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest node name we bind a token to (a DNS name).
const MAX_NAME_LEN: usize = 253;

/// Why a token could not be created, parsed or redeemed; one line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a join token of this format.
    #[error(
        "not a join token ({detail}); copy the whole `ikm1.…` string `meshctl token create` printed"
    )]
    Malformed {
        /// What is wrong with it.
        detail: String,
    },
    /// No token with this secret was ever created here (or it was pruned long after it
    /// expired).
    #[error("join token unknown to this CA; create one with `meshctl token create <name>`")]
    Unknown,
    /// The token was redeemed before.
    #[error("join token for '{name}' already used (at {at} s since the epoch); create a new one")]
    AlreadyUsed {
        /// The node it was bound to.
        name: String,
        /// When it was used, seconds since the Unix epoch.
        at: u64,
    },
    /// The token's time ran out.
    #[error("join token for '{name}' expired (at {at} s since the epoch); create a new one")]
    Expired {
        /// The node it was bound to.
        name: String,
        /// When it expired, seconds since the Unix epoch.
        at: u64,
    },
    /// The node name is not one a token can be bound to.
    #[error("node name '{name}' refused: {detail}")]
    BadName {
        /// The name asked for.
        name: String,
        /// Why.
        detail: String,
    },
    /// A lifetime of zero, or one that overflows the clock.
    #[error("token lifetime {ttl:?} refused; give a positive duration of at most a year")]
    BadTtl {
        /// The lifetime asked for.
        ttl: Duration,
    },
    /// The certificate to pin does not parse.
    #[error("CA certificate to pin: {detail}")]
    BadCaCertificate {
        /// What is wrong.
        detail: String,
    },
    /// The state file could not be read or written; nothing was changed.
    #[error("token store {path}: {detail}; check the directory and its permissions")]
    Storage {
        /// The file.
        path: String,
        /// What failed.
        detail: String,
    },
}

/// A pin of the mesh CA: SHA-256 of its certificate's `SubjectPublicKeyInfo` (DER), as
/// kubeadm's `--discovery-token-ca-cert-hash`. Shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of a `SubjectPublicKeyInfo` (DER).
    pub fn of_spki(spki_der: &[u8]) -> Self {
        CaPin(x509::key_hash(spki_der))
    }

    /// The pin of a CA certificate (DER).
    pub fn of_cert_der(der: &[u8]) -> Result<Self, TokenError> {
        let cert =
            x509::parse_cert(der).map_err(|detail| TokenError::BadCaCertificate { detail })?;
        Ok(CaPin::of_spki(cert.public_key().raw))
    }

    /// The pin of the first certificate of a PEM file (the current CA of a bundle).
    pub fn of_cert_pem(pem: &[u8]) -> Result<Self, TokenError> {
        let blocks = x509::der_blocks(pem, "CERTIFICATE")
            .map_err(|detail| TokenError::BadCaCertificate { detail })?;
        let first = blocks.first().ok_or_else(|| TokenError::BadCaCertificate {
            detail: "no CERTIFICATE in it".into(),
        })?;
        CaPin::of_cert_der(first)
    }

    /// The pin from its 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, TokenError> {
        let malformed =
            || TokenError::Malformed { detail: "the CA pin is not 64 hex digits".into() };
        if text.len() != 64 || !text.is_ascii() {
            return Err(malformed());
        }
        let mut pin = [0; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| malformed())?;
        }
        Ok(CaPin(pin))
    }

    /// The SHA-256 digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&x509::hex(&self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({self})")
    }
}

/// A join token: `ikm1.<secret>.<pin>`. The secret is zeroized on drop and shown by
/// neither `Debug` nor `Display`; [`JoinToken::expose`] gives the string to hand over.
#[derive(Clone)]
pub struct JoinToken {
    text: Zeroizing<String>,
    pin: CaPin,
}

impl JoinToken {
    /// Parses a token (surrounding white space ignored).
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        let malformed = |detail: &str| TokenError::Malformed { detail: detail.into() };
        let mut fields = text.split('.');
        let (Some(prefix), Some(secret), Some(pin), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed("it has not three dot-separated fields"));
        };
        if prefix != TOKEN_PREFIX {
            return Err(malformed("it does not start with `ikm1.`"));
        }
        let decoded = Zeroizing::new(
            URL_SAFE_NO_PAD.decode(secret).map_err(|_| malformed("its secret is not base64url"))?,
        );
        if secret.len() != SECRET_CHARS || decoded.len() != SECRET_LEN {
            return Err(malformed("its secret is not 32 bytes"));
        }
        let pin = CaPin::from_hex(pin)?;
        Ok(JoinToken { text: Zeroizing::new(text.to_string()), pin })
    }

    /// The token, to print once and hand to the joining node.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The CA the token's holder will trust.
    pub fn pin(&self) -> CaPin {
        self.pin
    }

    /// The SHA-256 of the secret, hex: what the store keeps.
    fn secret_hash(&self) -> String {
        let secret = self.text.split('.').nth(1).unwrap_or_default();
        x509::hex(&Sha256::digest(secret.as_bytes()))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken").field("pin", &self.pin).finish_non_exhaustive()
    }
}

/// A token redeemed: the node it was bound to, now the only name to issue for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The node name.
    pub name: String,
    /// The token's id (see [`TokenInfo::id`]), for log lines.
    pub id: String,
}

/// What the store knows of a token (for `meshctl token list`); never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The first 12 hex digits of the secret's hash: enough to tell tokens apart in a
    /// log, useless to redeem one.
    pub id: String,
    /// The node it is bound to.
    pub name: String,
    /// When it was created.
    pub created: SystemTime,
    /// When it expires.
    pub expires: SystemTime,
    /// When it was used, if it was.
    pub used: Option<SystemTime>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    tokens: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// SHA-256 of the secret, hex.
    hash: String,
    name: String,
    /// Seconds since the Unix epoch.
    created: u64,
    expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used: Option<u64>,
}

impl Entry {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.hash[..12].to_string(),
            name: self.name.clone(),
            created: UNIX_EPOCH + Duration::from_secs(self.created),
            expires: UNIX_EPOCH + Duration::from_secs(self.expires),
            used: self.used.map(|at| UNIX_EPOCH + Duration::from_secs(at)),
        }
    }
}

/// The join tokens of a CA, in a directory (see the [module documentation](super)).
///
/// Safe to share between threads and processes: every change is one locked
/// read-modify-write of the state file. Its calls block on file locks and fsync; from
/// async code, call them in `spawn_blocking`.
pub struct TokenStore {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl TokenStore {
    /// Opens (creating it with mode 0700 if needed) the store in `dir`, on the system
    /// clock.
    pub fn open(dir: &Path) -> Result<Self, TokenError> {
        let storage =
            |detail: String| TokenError::Storage { path: dir.display().to_string(), detail };
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| storage(format!("cannot create it ({e})")))?;
        }
        let store = TokenStore { dir: dir.to_path_buf(), clock: Arc::new(SystemClock) };
        // Fail now, not at the first token, if the state is unreadable.
        let _lock = store.lock(false)?;
        store.read()?;
        Ok(store)
    }

    /// Reads the time from `clock` (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a token for the node `name`, valid for `ttl`, that pins the CA `pin` (the
    /// CA that signed the enrollment service's certificate). The token is returned once;
    /// only its hash is kept.
    pub fn create(&self, name: &str, ttl: Duration, pin: CaPin) -> Result<JoinToken, TokenError> {
        let name = check_name(name)?;
        if ttl.is_zero() || ttl > Duration::from_secs(366 * 24 * 3600) {
            return Err(TokenError::BadTtl { ttl });
        }
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        getrandom::fill(secret.as_mut()).map_err(|e| TokenError::Storage {
            path: self.dir.display().to_string(),
            detail: format!("no randomness from the system ({e})"),
        })?;
        let text = Zeroizing::new(format!(
            "{TOKEN_PREFIX}.{}.{pin}",
            Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref())).as_str()
        ));
        let token = JoinToken { text, pin };
        let now = unix(self.clock.now());
        let _lock = self.lock(true)?;
        let mut state = self.read()?;
        state.tokens.retain(|e| e.expires.saturating_add(PRUNE_AFTER.as_secs()) > now);
        state.tokens.push(Entry {
            hash: token.secret_hash(),
            name,
            created: now,
            expires: now.saturating_add(ttl.as_secs().max(1)),
            used: None,
        });
        self.write(&state)?;
        Ok(token)
    }

    /// Redeems `token`: refuses an unknown, used or expired one, else marks it used,
    /// durably, and says which node it was for. Of several redeems of one token, from
    /// any number of threads or processes, exactly one succeeds.
    pub fn redeem(&self, token: &JoinToken) -> Result<Redeemed, TokenError> {
        let hash = token.secret_hash();
        let now = unix(self.clock.now());
        let _lock = self.lock(true)?;
        let mut state = self.read()?;
        let entry = state.tokens.iter_mut().find(|e| e.hash == hash).ok_or(TokenError::Unknown)?;
        if let Some(at) = entry.used {
            return Err(TokenError::AlreadyUsed { name: entry.name.clone(), at });
        }
        if now >= entry.expires {
            return Err(TokenError::Expired { name: entry.name.clone(), at: entry.expires });
        }
        entry.used = Some(now);
        let redeemed = Redeemed { name: entry.name.clone(), id: hash[..12].to_string() };
        self.write(&state)?;
        Ok(redeemed)
    }

    /// Every token the store remembers, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let _lock = self.lock(false)?;
        Ok(self.read()?.tokens.iter().map(Entry::info).collect())
    }

    /// Forgets the tokens whose id starts with `id_prefix` (at least 6 hex digits), used
    /// or not: an operator's way to withdraw a token. Returns how many were removed.
    pub fn remove(&self, id_prefix: &str) -> Result<usize, TokenError> {
        if id_prefix.len() < 6 {
            return Err(TokenError::Malformed {
                detail: "give at least 6 digits of the id".into(),
            });
        }
        let prefix = id_prefix.to_ascii_lowercase();
        let _lock = self.lock(true)?;
        let mut state = self.read()?;
        let before = state.tokens.len();
        state.tokens.retain(|e| !e.hash.starts_with(&prefix));
        let removed = before - state.tokens.len();
        if removed > 0 {
            self.write(&state)?;
        }
        Ok(removed)
    }

    fn storage(&self, file: &str, what: &str, e: &std::io::Error) -> TokenError {
        TokenError::Storage {
            path: self.dir.join(file).display().to_string(),
            detail: format!("cannot {what} it ({e})"),
        }
    }

    /// Takes the store's lock (released when the file is dropped).
    fn lock(&self, exclusive: bool) -> Result<File, TokenError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(LOCK_FILE))
            .map_err(|e| self.storage(LOCK_FILE, "open", &e))?;
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(|e| self.storage(LOCK_FILE, "lock", &e))?;
        Ok(file)
    }

    fn read(&self) -> Result<State, TokenError> {
        let path = self.dir.join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State { version: 1, tokens: Vec::new() });
            }
            Err(e) => return Err(self.storage(STATE_FILE, "read", &e)),
        };
        let state: State = serde_json::from_slice(&data).map_err(|e| TokenError::Storage {
            path: path.display().to_string(),
            detail: format!("not a token state file ({e})"),
        })?;
        if state.version != 1 {
            return Err(TokenError::Storage {
                path: path.display().to_string(),
                detail: format!(
                    "state version {} is not 1; use the meshd that wrote it",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Replaces the state file: temp file, fsync, rename, fsync of the directory.
    fn write(&self, state: &State) -> Result<(), TokenError> {
        let data = serde_json::to_vec_pretty(state).map_err(|e| TokenError::Storage {
            path: self.dir.join(STATE_FILE).display().to_string(),
            detail: format!("cannot encode the state ({e})"),
        })?;
        let temp = self.dir.join(TEMP_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| self.storage(TEMP_FILE, "create", &e))?;
        file.write_all(&data).map_err(|e| self.storage(TEMP_FILE, "write", &e))?;
        file.sync_all().map_err(|e| self.storage(TEMP_FILE, "fsync", &e))?;
        drop(file);
        fs::rename(&temp, self.dir.join(STATE_FILE))
            .map_err(|e| self.storage(STATE_FILE, "replace", &e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.storage(".", "fsync the directory of", &e))
    }
}

/// A node name a token may be bound to: a DNS name (letters, digits, `-`, `.`), lower
/// case, without a trailing dot. The CA has the last word when it issues.
fn check_name(name: &str) -> Result<String, TokenError> {
    let bad = |detail: &str| TokenError::BadName { name: name.to_string(), detail: detail.into() };
    let normal = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if normal.is_empty() || normal.len() > MAX_NAME_LEN {
        return Err(bad("a node name has 1 to 253 characters"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !normal.split('.').all(label_ok) {
        return Err(bad("use a DNS name: letters, digits and inner hyphens, dot-separated"));
    }
    Ok(normal)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
