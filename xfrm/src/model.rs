//! What ikemesh asks of the kernel, in plain types: SAs, policies, selectors, levels.
//!
//! These are independent of netlink; [`crate::Xfrm`] turns them into messages.

use crate::Error;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use zeroize::Zeroizing;

/// Request IDs (`reqid`) that ikemesh uses for its SAs and policy templates. An SA whose
/// reqid is outside this range is never ours: [`crate::Xfrm::flush_ours`] and start-up
/// reconciliation leave it alone, and ikemesh refuses to install one outside it.
/// (0x4D is "M", for mesh.)
pub const OWNED_REQIDS: RangeInclusive<u32> = 0x4D00_0000..=0x4DFF_FFFF;

/// Policy priorities that ikemesh uses. A policy whose priority is outside this band is
/// never ours. Lower values win in the kernel, so an operator's own policies (which
/// `ip xfrm` puts at priority 0 by default) take precedence over the mesh's.
pub const OWNED_PRIORITIES: RangeInclusive<u32> = 0x4D00_0000..=0x4DFF_FFFF;

/// Whether an SA with this reqid belongs to ikemesh.
pub fn is_owned_reqid(reqid: u32) -> bool {
    OWNED_REQIDS.contains(&reqid)
}

/// Whether a policy with this priority belongs to ikemesh.
pub fn is_owned_priority(priority: u32) -> bool {
    OWNED_PRIORITIES.contains(&priority)
}

/// Key material, zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key([redacted; {} bytes])", self.0.len())
    }
}

/// ESP protection of an SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crypto {
    /// AES-GCM with a 16-byte ICV (`rfc4106(gcm(aes))`, RFC 4106). The key is the AES
    /// key (16 or 32 bytes) followed by the 4-byte salt, as IKEv2's KEYMAT gives it.
    AesGcm16 {
        /// AES key and salt: 20 or 36 bytes.
        key: Key,
    },
    /// AES-CBC with HMAC-SHA2-256-128 (`authenc(hmac(sha256),cbc(aes))`), for interop.
    AesCbcHmacSha256 {
        /// AES key: 16, 24 or 32 bytes.
        enc_key: Key,
        /// HMAC key: 32 bytes.
        auth_key: Key,
    },
}

impl Crypto {
    /// The kernel's name of the algorithm, as errors and the probe report it.
    pub fn kernel_name(&self) -> &'static str {
        match self {
            Crypto::AesGcm16 { .. } => AEAD_GCM,
            Crypto::AesCbcHmacSha256 { .. } => AUTHENC_CBC_SHA256,
        }
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        match self {
            Crypto::AesGcm16 { key } if key.len() == 20 || key.len() == 36 => Ok(()),
            Crypto::AesGcm16 { key } => Err(Error::Invalid(format!(
                "AES-GCM key must be 20 or 36 bytes (key and 4-byte salt), not {}",
                key.len()
            ))),
            Crypto::AesCbcHmacSha256 { enc_key, auth_key } => {
                if ![16, 24, 32].contains(&enc_key.len()) {
                    return Err(Error::Invalid(format!(
                        "AES-CBC key must be 16, 24 or 32 bytes, not {}",
                        enc_key.len()
                    )));
                }
                if auth_key.len() != 32 {
                    return Err(Error::Invalid(format!(
                        "HMAC-SHA2-256 key must be 32 bytes, not {}",
                        auth_key.len()
                    )));
                }
                Ok(())
            }
        }
    }
}

/// The kernel's name for AES-GCM-16 in ESP.
pub const AEAD_GCM: &str = "rfc4106(gcm(aes))";
/// The kernel's name for AES-CBC with HMAC-SHA2-256 in ESP.
pub const AUTHENC_CBC_SHA256: &str = "authenc(hmac(sha256),cbc(aes))";
/// The kernel's name for ChaCha20-Poly1305 in ESP (RFC 7634), probed but not used yet.
pub const AEAD_CHACHA20_POLY1305: &str = "rfc7539esp(chacha20,poly1305)";

/// IPsec mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Transport mode: protects the payload between the two hosts themselves.
    Transport,
    /// Tunnel mode: protects whole packets between the selectors' networks.
    Tunnel,
}

/// Soft and hard limits of an SA. `None` is unlimited. The soft limit makes the kernel
/// send a soft EXPIRE (time to rekey); the hard limit deletes the SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Soft limit in bytes.
    pub soft_bytes: Option<u64>,
    /// Hard limit in bytes.
    pub hard_bytes: Option<u64>,
    /// Soft limit in packets.
    pub soft_packets: Option<u64>,
    /// Hard limit in packets.
    pub hard_packets: Option<u64>,
    /// Soft limit in seconds since the SA was added.
    pub soft_seconds: Option<u64>,
    /// Hard limit in seconds since the SA was added.
    pub hard_seconds: Option<u64>,
}

/// UDP encapsulation of ESP (RFC 3948), for NAT traversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// UDP source port (4500 unless a NAT changed it).
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
}

/// A firewall mark that an SA or policy applies to (`value` under `mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mark {
    /// Mark value.
    pub value: u32,
    /// Mask applied before comparing.
    pub mask: u32,
}

/// An ESP security association: one direction of a child SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sa {
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// Security Parameter Index (chosen by the receiving side).
    pub spi: u32,
    /// Request ID linking the SA to its policies; must be in [`OWNED_REQIDS`].
    pub reqid: u32,
    /// Transport or tunnel.
    pub mode: Mode,
    /// Algorithms and keys.
    pub crypto: Crypto,
    /// Anti-replay window in packets (0 turns replay protection off; at most 4096).
    pub replay_window: u32,
    /// 64-bit extended sequence numbers (RFC 4303 section 2.2.1).
    pub esn: bool,
    /// Limits.
    pub lifetime: Lifetime,
    /// UDP encapsulation, for NAT traversal.
    pub encap: Option<Encap>,
    /// Firewall mark.
    pub mark: Option<Mark>,
    /// Traffic the SA may carry; `None` allows any (the policy decides).
    pub selector: Option<Selector>,
}

impl Sa {
    /// A transport-mode ESP SA with AES-GCM-16, a 128-packet replay window, ESN, and no
    /// limits: what ikemesh installs for a child SA unless told otherwise.
    pub fn transport(src: IpAddr, dst: IpAddr, spi: u32, reqid: u32, crypto: Crypto) -> Self {
        Self {
            src,
            dst,
            spi,
            reqid,
            mode: Mode::Transport,
            crypto,
            replay_window: 128,
            esn: true,
            lifetime: Lifetime::default(),
            encap: None,
            mark: None,
            selector: None,
        }
    }

    /// The key that names this SA in the kernel.
    pub fn id(&self) -> SaId {
        SaId { dst: self.dst, spi: self.spi, src: self.src, mark: self.mark }
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(Error::Invalid(format!(
                "SA {} -> {} mixes address families",
                self.src, self.dst
            )));
        }
        if !is_owned_reqid(self.reqid) {
            return Err(Error::NotOurs(format!(
                "reqid {:#x} is outside ikemesh's range {:#x}..={:#x}",
                self.reqid,
                OWNED_REQIDS.start(),
                OWNED_REQIDS.end()
            )));
        }
        if self.replay_window > 4096 {
            return Err(Error::Invalid(format!(
                "replay window {} is over the kernel's 4096",
                self.replay_window
            )));
        }
        if self.spi < 256 {
            return Err(Error::Invalid(format!("SPI {} is reserved (RFC 4303: 1-255)", self.spi)));
        }
        self.crypto.check()
    }
}

/// What names an SA in the kernel: destination, SPI and protocol (always ESP here), plus
/// the source and mark for messages that take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaId {
    /// Outer destination address.
    pub dst: IpAddr,
    /// SPI.
    pub spi: u32,
    /// Outer source address.
    pub src: IpAddr,
    /// Mark, if the SA has one.
    pub mark: Option<Mark>,
}

/// An SA as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaInfo {
    /// Its identity.
    pub id: SaId,
    /// Request ID.
    pub reqid: u32,
    /// Mode.
    pub mode: Mode,
    /// Bytes protected so far.
    pub bytes: u64,
    /// Packets protected so far.
    pub packets: u64,
    /// Packets dropped by the replay check.
    pub replay_drops: u32,
    /// Packets that failed integrity checks.
    pub integrity_failures: u32,
    /// Whether ESN is on.
    pub esn: bool,
    /// Algorithm name(s) the kernel holds for it (no keys).
    pub algorithm: String,
}

impl SaInfo {
    /// Whether ikemesh installed it.
    pub fn is_ours(&self) -> bool {
        is_owned_reqid(self.reqid)
    }
}

/// Which packets a policy or SA applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Source prefix.
    pub src: IpNet,
    /// Destination prefix.
    pub dst: IpNet,
    /// IP protocol number; `None` for any.
    pub proto: Option<u8>,
    /// Source port (TCP, UDP, SCTP); `None` for any.
    pub src_port: Option<u16>,
    /// Destination port; `None` for any.
    pub dst_port: Option<u16>,
}

impl Selector {
    /// All traffic from `src` to `dst` (both hosts: /32 or /128).
    pub fn hosts(src: IpAddr, dst: IpAddr) -> Self {
        Self::prefixes(IpNet::from(src), IpNet::from(dst))
    }

    /// All traffic from prefix `src` to prefix `dst`.
    pub fn prefixes(src: IpNet, dst: IpNet) -> Self {
        Self { src, dst, proto: None, src_port: None, dst_port: None }
    }

    /// The same selector seen from the other side (for the inbound policy).
    #[must_use]
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.src.addr().is_ipv4() != self.dst.addr().is_ipv4() {
            return Err(Error::Invalid(format!(
                "selector {} -> {} mixes address families",
                self.src, self.dst
            )));
        }
        if (self.src_port.is_some() || self.dst_port.is_some()) && self.proto.is_none() {
            return Err(Error::Invalid("a selector with ports needs a protocol".into()));
        }
        Ok(())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)?;
        if let Some(p) = self.proto {
            write!(f, " proto {p}")?;
        }
        if let Some(p) = self.src_port {
            write!(f, " sport {p}")?;
        }
        if let Some(p) = self.dst_port {
            write!(f, " dport {p}")?;
        }
        Ok(())
    }
}

/// Direction of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Packets delivered to this host.
    In,
    /// Packets sent by this host.
    Out,
    /// Packets forwarded through this host.
    Fwd,
}

/// How strictly a protecting policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Encrypt when an SA exists, send (and accept) plaintext when none does. The kernel
    /// still asks for an SA (ACQUIRE) when one is missing.
    Use,
    /// Only ESP: outbound packets without an SA are dropped (and an SA is asked for),
    /// inbound plaintext is dropped.
    Require,
}

/// What a policy does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Protect with ESP, through an SA of this template.
    Protect(Template),
    /// Let them pass in the clear (exclusions: DNS, log shipping, …).
    Bypass,
    /// Drop them.
    Block,
}

/// The SA a protecting policy needs: endpoints, request ID, mode and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// Outer source address of the SA.
    pub src: IpAddr,
    /// Outer destination address of the SA.
    pub dst: IpAddr,
    /// Request ID of the SA; must be in [`OWNED_REQIDS`].
    pub reqid: u32,
    /// Transport or tunnel.
    pub mode: Mode,
    /// `use` or `require`.
    pub level: Level,
}

/// A security policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Which packets.
    pub selector: Selector,
    /// Which direction.
    pub dir: Direction,
    /// Priority; must be in [`OWNED_PRIORITIES`] (lower wins).
    pub priority: u32,
    /// What to do with them.
    pub action: Action,
    /// Firewall mark the policy applies to.
    pub mark: Option<Mark>,
}

impl Policy {
    /// The key that names this policy in the kernel.
    pub fn id(&self) -> PolicyId {
        PolicyId { selector: self.selector, dir: self.dir, mark: self.mark }
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        self.selector.check()?;
        if !is_owned_priority(self.priority) {
            return Err(Error::NotOurs(format!(
                "priority {:#x} is outside ikemesh's band {:#x}..={:#x}",
                self.priority,
                OWNED_PRIORITIES.start(),
                OWNED_PRIORITIES.end()
            )));
        }
        if let Action::Protect(t) = self.action {
            if !is_owned_reqid(t.reqid) {
                return Err(Error::NotOurs(format!(
                    "template reqid {:#x} is outside ikemesh's range",
                    t.reqid
                )));
            }
            if t.src.is_ipv4() != t.dst.is_ipv4() {
                return Err(Error::Invalid(format!(
                    "template {} -> {} mixes address families",
                    t.src, t.dst
                )));
            }
        }
        Ok(())
    }
}

/// What names a policy in the kernel: selector, direction and mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyId {
    /// Selector.
    pub selector: Selector,
    /// Direction.
    pub dir: Direction,
    /// Mark.
    pub mark: Option<Mark>,
}

/// A policy as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Selector, direction and mark.
    pub id: PolicyId,
    /// Priority.
    pub priority: u32,
    /// Action and template.
    pub action: Action,
    /// The kernel's index for it.
    pub index: u32,
}

impl PolicyInfo {
    /// Whether ikemesh installed it.
    pub fn is_ours(&self) -> bool {
        is_owned_priority(self.priority)
    }
}
