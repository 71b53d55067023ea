//! The SPA packet: its plaintext layout, sealing and opening. The layout is in the
//! module docs of [`crate::spa`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};

use super::{Rejected, SpaError, SpaKeys};

/// Every SPA datagram is exactly this long, whatever it carries.
pub const DATAGRAM_LEN: usize = 256;
/// The random AES-GCM nonce that opens the datagram.
pub const GCM_NONCE_LEN: usize = 12;
/// The AES-GCM tag that closes it.
pub const TAG_LEN: usize = 16;
/// The sealed plaintext between them.
pub const PLAINTEXT_LEN: usize = DATAGRAM_LEN - GCM_NONCE_LEN - TAG_LEN;
/// The random nonce inside the plaintext, which the replay cache remembers.
pub const KNOCK_NONCE_LEN: usize = 16;
/// The longest node id a packet carries, in bytes of UTF-8.
pub const MAX_NODE_ID: usize = 128;
/// The packet format's version.
pub const VERSION: u8 = 1;

/// Field offsets in the plaintext.
mod field {
    use std::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const ACCESS: usize = 1;
    pub(super) const FAMILY: usize = 2;
    pub(super) const ID_LEN: usize = 3;
    pub(super) const TIMESTAMP: Range<usize> = 4..12;
    pub(super) const NONCE: Range<usize> = 12..28;
    pub(super) const ADDR: Range<usize> = 28..44;
    pub(super) const NODE_ID: usize = 44;
}

// The longest node id fits, with nothing left over to guess from.
const _: () = assert!(field::NODE_ID + MAX_NODE_ID <= PLAINTEXT_LEN);

/// The access a knock asks for. Room to grow: each kind is one code on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// IKE: UDP 500 and 4500.
    Ike,
}

impl Access {
    fn code(self) -> u8 {
        match self {
            Access::Ike => 1,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Access::Ike),
            _ => None,
        }
    }
}

/// What a knock says: who sends it, what it asks for, and from which address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knock {
    /// The sender's node id (the identity in its certificate): 1 to [`MAX_NODE_ID`]
    /// bytes of UTF-8 without control characters.
    pub node_id: String,
    /// The access asked for.
    pub access: Access,
    /// The sender's own address, which the gate compares with the packet's source.
    pub addr: IpAddr,
}

/// A packet opened and parsed: the knock, its timestamp and its nonce.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The knock.
    pub knock: Knock,
    /// Milliseconds since the Unix epoch, as the sender's clock said.
    pub timestamp_ms: u64,
    /// The sender's random nonce.
    pub nonce: [u8; KNOCK_NONCE_LEN],
}

/// Seals `knock` into one SPA datagram of [`DATAGRAM_LEN`] bytes, timestamped `now`.
/// `rng` fills buffers with random bytes (use [`os_random`] outside tests); it is
/// asked for the 12-byte GCM nonce and the 16-byte knock nonce.
pub fn seal(
    keys: &SpaKeys,
    knock: &Knock,
    now: SystemTime,
    rng: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<u8>, SpaError> {
    check_node_id(&knock.node_id).map_err(|reason| SpaError::NodeId { reason })?;
    let mut nonce = [0u8; KNOCK_NONCE_LEN];
    rng(&mut nonce);
    let opened = Opened { knock: knock.clone(), timestamp_ms: unix_ms(now), nonce };
    let mut gcm_nonce = [0u8; GCM_NONCE_LEN];
    rng(&mut gcm_nonce);
    Ok(seal_plaintext(keys, &encode(&opened), gcm_nonce))
}

/// Fills `buf` from the operating system's random source.
///
/// # Panics
///
/// If the operating system has no randomness to give, which on Linux means the
/// `getrandom` system call is missing: nothing can be sealed safely then.
pub fn os_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system has no randomness");
}

/// Milliseconds since the Unix epoch; 0 before it.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The plaintext of `opened`, padded with zeros.
#[doc(hidden)]
pub fn encode(opened: &Opened) -> [u8; PLAINTEXT_LEN] {
    let mut p = [0u8; PLAINTEXT_LEN];
    let id = opened.knock.node_id.as_bytes();
    let id = &id[..id.len().min(MAX_NODE_ID)];
    p[field::VERSION] = VERSION;
    p[field::ACCESS] = opened.knock.access.code();
    p[field::ID_LEN] = id.len() as u8;
    p[field::TIMESTAMP].copy_from_slice(&opened.timestamp_ms.to_be_bytes());
    p[field::NONCE].copy_from_slice(&opened.nonce);
    match opened.knock.addr {
        IpAddr::V4(a) => {
            p[field::FAMILY] = 4;
            p[field::ADDR][..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            p[field::FAMILY] = 6;
            p[field::ADDR].copy_from_slice(&a.octets());
        }
    }
    p[field::NODE_ID..field::NODE_ID + id.len()].copy_from_slice(id);
    p
}

/// Seals arbitrary plaintext (cut or zero-padded to [`PLAINTEXT_LEN`]) under
/// `gcm_nonce`: for fuzzing the parser behind the AEAD check, and for tests.
#[doc(hidden)]
pub fn seal_plaintext(keys: &SpaKeys, plaintext: &[u8], gcm_nonce: [u8; GCM_NONCE_LEN]) -> Vec<u8> {
    let mut out = vec![0u8; DATAGRAM_LEN];
    out[..GCM_NONCE_LEN].copy_from_slice(&gcm_nonce);
    let body = &mut out[GCM_NONCE_LEN..GCM_NONCE_LEN + PLAINTEXT_LEN];
    let n = plaintext.len().min(PLAINTEXT_LEN);
    body[..n].copy_from_slice(&plaintext[..n]);
    let tag = Aes256Gcm::new(keys.key().into())
        .encrypt_inout_detached(&gcm_nonce.into(), &[], body.into())
        .expect("a 228-byte plaintext is far below AES-GCM's limit");
    out[GCM_NONCE_LEN + PLAINTEXT_LEN..].copy_from_slice(&tag);
    out
}

/// Checks the size, opens the AEAD and parses the plaintext. Nothing else: no clock,
/// no address, no replay.
#[doc(hidden)]
pub fn open(keys: &SpaKeys, datagram: &[u8]) -> Result<Opened, Rejected> {
    if datagram.len() != DATAGRAM_LEN {
        return Err(Rejected::Malformed { len: datagram.len() });
    }
    let (gcm_nonce, rest) = datagram.split_at(GCM_NONCE_LEN);
    let (body, tag) = rest.split_at(PLAINTEXT_LEN);
    let gcm_nonce: [u8; GCM_NONCE_LEN] = gcm_nonce.try_into().map_err(|_| Rejected::Unauthentic)?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Rejected::Unauthentic)?;
    let mut plain = [0u8; PLAINTEXT_LEN];
    plain.copy_from_slice(body);
    Aes256Gcm::new(keys.key().into())
        .decrypt_inout_detached(&gcm_nonce.into(), &[], (&mut plain[..]).into(), &tag.into())
        .map_err(|_| Rejected::Unauthentic)?;
    parse(&plain).map_err(|reason| Rejected::Invalid { reason })
}

/// Parses a plaintext strictly: every field known, every unused byte zero, so that
/// one plaintext has one meaning and encodes back to itself.
#[doc(hidden)]
pub fn parse(p: &[u8; PLAINTEXT_LEN]) -> Result<Opened, &'static str> {
    if p[field::VERSION] != VERSION {
        return Err("unknown packet version");
    }
    let access = Access::from_code(p[field::ACCESS]).ok_or("unknown access code")?;
    let addr_bytes = &p[field::ADDR];
    let addr = match p[field::FAMILY] {
        4 => {
            if addr_bytes[4..].iter().any(|&b| b != 0) {
                return Err("bytes after the IPv4 address are not zero");
            }
            IpAddr::V4(Ipv4Addr::new(addr_bytes[0], addr_bytes[1], addr_bytes[2], addr_bytes[3]))
        }
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(addr_bytes);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err("unknown address family"),
    };
    let id_len = usize::from(p[field::ID_LEN]);
    if id_len == 0 || id_len > MAX_NODE_ID {
        return Err("node id length out of range");
    }
    let (id, padding) = p[field::NODE_ID..].split_at(id_len);
    if padding.iter().any(|&b| b != 0) {
        return Err("padding is not zero");
    }
    let node_id = std::str::from_utf8(id).map_err(|_| "node id is not UTF-8")?;
    check_node_id(node_id)?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&p[field::TIMESTAMP]);
    let mut nonce = [0u8; KNOCK_NONCE_LEN];
    nonce.copy_from_slice(&p[field::NONCE]);
    Ok(Opened {
        knock: Knock { node_id: node_id.to_owned(), access, addr },
        timestamp_ms: u64::from_be_bytes(ts),
        nonce,
    })
}

fn check_node_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("node id is empty");
    }
    if id.len() > MAX_NODE_ID {
        return Err("node id is longer than 128 bytes");
    }
    if id.chars().any(char::is_control) {
        return Err("node id has control characters");
    }
    Ok(())
}

/// `Duration` from milliseconds, for skews.
pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
