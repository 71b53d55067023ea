//! Single Packet Authorization: the knock a node sends before IKE, and the gatekeeper
//! that checks it. No sockets here: [`seal`] makes the bytes to send, and
//! [`Gatekeeper::check`] says whether bytes received open the gate. Nothing is ever
//! sent back, valid or not.
//!
//! # The datagram
//!
//! Every SPA datagram is exactly [`DATAGRAM_LEN`] (256) bytes, whatever it carries, and
//! has no cleartext header: to an observer it is 256 random bytes.
//!
//! ```text
//!  0      12                                                   240      256
//!  +------+----------------------------------------------------+--------+
//!  | GCM  |  AES-256-GCM ciphertext of the 228-byte plaintext  |  GCM   |
//!  | nonce|  (no associated data)                              |  tag   |
//!  +------+----------------------------------------------------+--------+
//! ```
//!
//! The GCM nonce is 12 random bytes, fresh for every packet. The plaintext:
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0 | 1 | version, 1 |
//! | 1 | 1 | access asked for: 1 = IKE (UDP 500 and 4500) |
//! | 2 | 1 | address family: 4 or 6 |
//! | 3 | 1 | node id length, 1 to [`MAX_NODE_ID`] (128) |
//! | 4 | 8 | timestamp: milliseconds since the Unix epoch, big-endian |
//! | 12 | 16 | random nonce, what the replay cache remembers |
//! | 28 | 16 | the sender's own address: IPv4 in the first 4 bytes (the rest zero), or IPv6 |
//! | 44 | n | node id, UTF-8 without control characters |
//! | 44 + n | 184 - n | zeros |
//!
//! Parsing after decryption is strict: an unknown version, access or family, a length
//! out of range, a node id that is not clean UTF-8, or a non-zero byte where zeros
//! belong is refused ([`Rejected::Invalid`]). One plaintext has exactly one meaning.
//!
//! # The key
//!
//! [`SpaKeys`]: HKDF-SHA256 over the mesh SPA secret (a file of at least 32 bytes, mode
//! `0600` or tighter), optionally with the knocked-on node's own key mixed in; see its
//! docs for how, and why the gate needs to try only one key.
//!
//! # The checks, in order
//!
//! [`Gatekeeper::check`]: the per-source rate limit (a token bucket per source address in
//! a bounded map, before anything else so that a flood of any shape costs little and
//! logs little), the size, the AEAD tag (wrong secret or any altered byte), the strict parse, the
//! timestamp within the window (±30 s by default, both ways), the claimed address equal
//! to the source (unless NAT mode), and last the replay cache: a `(timestamp, nonce)`
//! pair admitted before is refused. The cache holds what is inside the window, is
//! bounded, and persists to a file that is written and synced before a knock is
//! admitted, so a knock admitted before a restart is still refused after it.

mod gatekeeper;
mod keys;
mod packet;
mod rate;
mod replay;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use gatekeeper::{Admitted, GateConfig, GateStats, Gatekeeper};
pub use keys::{MIN_SECRET_LEN, SpaKeys};
pub use packet::{
    Access, DATAGRAM_LEN, GCM_NONCE_LEN, KNOCK_NONCE_LEN, Knock, MAX_NODE_ID, PLAINTEXT_LEN,
    TAG_LEN, VERSION, os_random, seal,
};
#[doc(hidden)]
pub use packet::{Opened, encode, open, parse, seal_plaintext};

/// Why SPA keys, a knock or a gatekeeper could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpaError {
    /// A secret is too short to be a key.
    #[error(
        "the {what} is {len} bytes: it must be at least 32 random bytes (e.g. head -c 32 /dev/urandom)"
    )]
    ShortSecret {
        /// Which secret.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A secret file others may read or write.
    #[error("{} has mode {mode:04o}: a secret file must be 0600 or tighter (chmod 600 it)", path.display())]
    LooseMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret path that is not a regular file of a sane size.
    #[error("{} is not a regular file of at most 64 KiB, so it is not a secret file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The replay cache file is damaged or not one.
    #[error("replay cache {}: {problem}; move it aside to start with an empty cache", path.display())]
    ReplayFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A node id that cannot go into a knock.
    #[error("cannot seal a knock: {reason}")]
    NodeId {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A gatekeeper configuration that cannot work.
    #[error("SPA gate configuration: {0}")]
    Config(&'static str),
}

/// Why a datagram opened nothing. `Display` is one line, naming the fix where there is
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// Too many datagrams from this source; checked before any cryptography.
    RateLimited,
    /// Not [`DATAGRAM_LEN`] bytes long, so not an SPA packet.
    Malformed {
        /// Its length.
        len: usize,
    },
    /// The AEAD check failed: sealed under another secret, or altered in transit.
    Unauthentic,
    /// Authentic, but its contents do not parse (a sender with the key and a bug, or a
    /// newer version).
    Invalid {
        /// What is wrong.
        reason: &'static str,
    },
    /// Its timestamp is outside the window.
    Stale {
        /// The sender.
        node_id: String,
        /// How far from our clock.
        skew: Duration,
        /// Ahead of our clock (else behind).
        ahead: bool,
        /// The window it missed.
        window: Duration,
    },
    /// Seen before (or older than what the replay cache still remembers).
    Replayed {
        /// The sender, as sealed.
        node_id: String,
    },
    /// The address sealed inside is not the datagram's source, and NAT mode is off.
    AddressMismatch {
        /// The sender, as sealed.
        node_id: String,
        /// The address sealed inside.
        claimed: IpAddr,
        /// Where it came from.
        source: IpAddr,
    },
    /// The replay cache could not be written, so the knock is refused (failing closed).
    ReplayStore {
        /// The sender.
        node_id: String,
        /// What went wrong.
        error: io::ErrorKind,
    },
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::RateLimited => f.write_str("over the per-source rate limit"),
            Rejected::Malformed { len } => {
                write!(f, "{len} bytes, not an SPA packet (those are exactly {DATAGRAM_LEN})")
            }
            Rejected::Unauthentic => f.write_str(
                "not authentic: sealed under another mesh secret, or altered in transit",
            ),
            Rejected::Invalid { reason } => {
                write!(f, "authentic but invalid ({reason}): is the sender a newer version?")
            }
            Rejected::Stale { node_id, skew, ahead, window } => write!(
                f,
                "knock from {node_id:?} is {:.1} s {} our clock, outside the ±{} s window: check the clocks (NTP)",
                skew.as_secs_f64(),
                if *ahead { "ahead of" } else { "behind" },
                window.as_secs()
            ),
            Rejected::Replayed { node_id } => {
                write!(f, "knock from {node_id:?} was seen before: a replay")
            }
            Rejected::AddressMismatch { node_id, claimed, source } => write!(
                f,
                "knock from {node_id:?} claims address {claimed} but came from {source}: if a NAT is in between, turn on NAT mode"
            ),
            Rejected::ReplayStore { node_id, error } => write!(
                f,
                "knock from {node_id:?} refused because the replay cache could not be written ({error}): check its disk"
            ),
        }
    }
}

impl std::error::Error for Rejected {}
