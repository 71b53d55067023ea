//! The mesh policy model: who the members are, which networks are protected, what is
//! left in the clear, and how strictly (`off`, `use`, `require`).
//!
//! The types deserialize from the daemon's TOML configuration, with operator-friendly
//! names:
//!
//! ```toml
//! level = "require"              # the mesh-wide level (default "use")
//! spa_port = 62201               # where members knock (default 62201)
//!
//! [[members]]
//! name = "a"
//! addresses = ["10.77.0.1", "fd77::1"]
//!
//! [[members]]
//! name = "c"
//! addresses = ["10.77.0.3"]
//! level = "use"                  # a joining node, below the mesh's level
//!
//! [[networks]]                   # default: just the members' own addresses
//! name = "cluster"
//! prefixes = ["10.77.0.0/24", "fd77::/64"]
//!
//! [[exclusions]]
//! name = "dns"
//! protocol = "udp"
//! port = 53
//!
//! [[exclusions]]
//! name = "syslog-shipping"
//! protocol = "tcp"
//! port = "6514"                  # or a range: "6000-6010"
//! prefix = "10.77.0.0/24"        # optional: only to and from there
//! ```
//!
//! [`MeshPolicy::validate`] finds every problem at once, each a [`Problem`] that prints
//! as one line; [`crate::render::render`] refuses a model that has any.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The UDP port members send SPA packets to unless the model says otherwise (fwknop's).
pub const DEFAULT_SPA_PORT: u16 = 62201;

/// The IKE ports (RFC 7296 section 2, RFC 3948 for 4500).
pub const IKE_PORTS: [u16; 2] = [500, 4500];

/// The widest port range one exclusion may name. The kernel's selectors match one port
/// (or an aligned block), so a range is rendered as one policy per port and direction.
pub const MAX_PORT_RANGE: u32 = 256;

/// How strictly traffic is protected.
///
/// Ordered: `Off < Use < Require`. Between two members the weaker of their two levels
/// applies, see [`MeshPolicy::pair_level`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No ESP: traffic passes in the clear, even inside a protected network at `require`.
    Off,
    /// ESP where an SA exists; plaintext is still sent (while no SA exists) and accepted.
    #[default]
    Use,
    /// Only ESP: plaintext is dropped in both directions.
    Require,
}

impl Level {
    /// The kernel's level for a protecting policy; `None` for [`Level::Off`] (bypass).
    pub fn to_xfrm(self) -> Option<xfrm::Level> {
        match self {
            Level::Off => None,
            Level::Use => Some(xfrm::Level::Use),
            Level::Require => Some(xfrm::Level::Require),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Off => "off",
            Level::Use => "use",
            Level::Require => "require",
        })
    }
}

/// One node of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its name: the identity in its certificate, unique in the mesh.
    pub name: String,
    /// Its addresses, IPv4 and IPv6; each belongs to one member only.
    pub addresses: Vec<IpAddr>,
    /// Its own level; the mesh's [`MeshPolicy::level`] when absent. It may sit below the
    /// mesh's (a joining node at `use` inside a `require` mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
}

/// A protected network: under `require`, every host in it must speak ESP to us, so a
/// non-member there is shut out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// A name for log lines and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its prefixes, IPv4 and IPv6 (no host bits set: `10.77.0.0/24`, not `10.77.0.1/24`).
    pub prefixes: Vec<IpNet>,
}

/// An IP protocol, written as a name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `udplite`,
/// `gre`) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "NameOrNumber", into = "NameOrNumber")]
pub struct Protocol(pub u8);

impl Protocol {
    /// ICMP (IPv4 only).
    pub const ICMP: Protocol = Protocol(1);
    /// TCP.
    pub const TCP: Protocol = Protocol(6);
    /// UDP.
    pub const UDP: Protocol = Protocol(17);
    /// GRE.
    pub const GRE: Protocol = Protocol(47);
    /// `ICMPv6` (IPv6 only).
    pub const ICMPV6: Protocol = Protocol(58);
    /// SCTP.
    pub const SCTP: Protocol = Protocol(132);
    /// UDP-Lite.
    pub const UDPLITE: Protocol = Protocol(136);

    const NAMES: [(&'static str, Protocol); 7] = [
        ("icmp", Self::ICMP),
        ("tcp", Self::TCP),
        ("udp", Self::UDP),
        ("gre", Self::GRE),
        ("icmpv6", Self::ICMPV6),
        ("sctp", Self::SCTP),
        ("udplite", Self::UDPLITE),
    ];

    /// Whether packets of this protocol carry ports (TCP, UDP, SCTP, UDP-Lite).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::TCP | Self::UDP | Self::SCTP | Self::UDPLITE)
    }

    /// The one address family this protocol lives in: `Some(false)` for ICMP (IPv4),
    /// `Some(true)` for `ICMPv6`; `None` for protocols of both.
    pub fn only_ipv6(self) -> Option<bool> {
        match self {
            Self::ICMP => Some(false),
            Self::ICMPV6 => Some(true),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMES.iter().find(|(_, p)| p == self) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some((_, p)) = Self::NAMES.iter().find(|(name, _)| *name == lower) {
            return Ok(*p);
        }
        lower.parse::<u8>().map(Protocol).map_err(|_| {
            format!("unknown protocol {s:?}: say tcp, udp, icmp, icmpv6, sctp, udplite, gre or a number 0-255")
        })
    }
}

/// A port or an inclusive range of ports, written `53`, `"53"` or `"6000-6010"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "NameOrNumber", into = "NameOrNumber")]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> Self {
        Self { first: port, last: port }
    }

    /// How many ports it spans (0 if reversed).
    pub fn len(self) -> u32 {
        (u32::from(self.last) + 1).saturating_sub(u32::from(self.first))
    }

    /// Whether it spans no port (a reversed range).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The ports in it.
    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| {
                format!("bad port {s:?}: say a port 0-65535 or a range such as \"6000-6010\"")
            })
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(Self { first: port(a)?, last: port(b)? }),
            None => port(s).map(Self::single),
        }
    }
}

/// Either spelling of a protocol or port in the configuration.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Number(u64),
    Name(String),
}

impl TryFrom<NameOrNumber> for Protocol {
    type Error = String;

    fn try_from(v: NameOrNumber) -> Result<Self, String> {
        match v {
            NameOrNumber::Number(n) => u8::try_from(n)
                .map(Protocol)
                .map_err(|_| format!("protocol number {n} is over 255")),
            NameOrNumber::Name(s) => s.parse(),
        }
    }
}

impl From<Protocol> for NameOrNumber {
    fn from(p: Protocol) -> Self {
        NameOrNumber::Name(p.to_string())
    }
}

impl TryFrom<NameOrNumber> for PortRange {
    type Error = String;

    fn try_from(v: NameOrNumber) -> Result<Self, String> {
        match v {
            NameOrNumber::Number(n) => u16::try_from(n)
                .map(PortRange::single)
                .map_err(|_| format!("port {n} is over 65535")),
            NameOrNumber::Name(s) => s.parse(),
        }
    }
}

impl From<PortRange> for NameOrNumber {
    fn from(p: PortRange) -> Self {
        if p.first == p.last {
            NameOrNumber::Number(u64::from(p.first))
        } else {
            NameOrNumber::Name(p.to_string())
        }
    }
}

/// Traffic left in the clear, in both directions: to and from `port` of `protocol`, with
/// hosts in `prefix` (any host when absent). At least one of the three is given.
///
/// Kernel policies have no state, so "both directions" means four policies per port:
/// out to the port, in from it (the answers), in to it and out from it (when we serve
/// it). Anyone may therefore reach any of our ports in the clear from a source port that
/// is excluded; give a `prefix` (the DNS servers, the log collectors) to narrow that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// A name for log lines and errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The protocol; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The port or ports (needs a protocol with ports); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRange>,
    /// The other side's prefix; any host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<IpNet>,
}

/// The whole policy of a mesh, the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshPolicy {
    /// The mesh-wide level: of every member without a level of its own, and of the
    /// protected networks.
    #[serde(default)]
    pub level: Level,
    /// The UDP port SPA packets go to.
    #[serde(default = "default_spa_port")]
    pub spa_port: u16,
    /// The members.
    pub members: Vec<Member>,
    /// Protected networks; when none are given, just the members' own addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Traffic left in the clear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<Exclusion>,
}

fn default_spa_port() -> u16 {
    DEFAULT_SPA_PORT
}

/// One problem in a [`MeshPolicy`]. Each prints as one line that says what is wrong and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// No members at all.
    NoMembers,
    /// A member with an empty name.
    EmptyName {
        /// Its position in `members`, from 0.
        index: usize,
    },
    /// Two members with one name.
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A member without addresses.
    NoAddresses {
        /// The member.
        member: String,
    },
    /// An address no member can have (unspecified, loopback, multicast, broadcast).
    UnusableAddress {
        /// The member.
        member: String,
        /// The address.
        address: IpAddr,
    },
    /// One address listed twice, for one member or two.
    DuplicateAddress {
        /// The address.
        address: IpAddr,
        /// The member listing it first.
        first: String,
        /// The member listing it again.
        second: String,
    },
    /// Networks are given, and a member's address is in none of them.
    OutsideNetworks {
        /// The member.
        member: String,
        /// The address.
        address: IpAddr,
    },
    /// A network without prefixes.
    EmptyNetwork {
        /// The network, as errors name it.
        network: String,
    },
    /// A prefix with host bits set.
    HostBits {
        /// Where: a network or an exclusion, as errors name it.
        place: String,
        /// The prefix as written.
        prefix: IpNet,
    },
    /// An exclusion that names neither protocol, port nor prefix: it would exclude all.
    ExcludesEverything {
        /// The exclusion, as errors name it.
        exclusion: String,
    },
    /// An exclusion with a port but no protocol.
    PortWithoutProtocol {
        /// The exclusion.
        exclusion: String,
    },
    /// An exclusion with a port, for a protocol without ports.
    PortlessProtocol {
        /// The exclusion.
        exclusion: String,
        /// The protocol.
        protocol: Protocol,
    },
    /// A port range that is reversed or wider than [`MAX_PORT_RANGE`].
    BadPortRange {
        /// The exclusion.
        exclusion: String,
        /// The range.
        range: PortRange,
    },
    /// A selector that mixes IPv4 and IPv6 (ICMP with an IPv6 prefix, `ICMPv6` with IPv4).
    MixedFamilies {
        /// The exclusion.
        exclusion: String,
        /// The protocol.
        protocol: Protocol,
        /// The prefix.
        prefix: IpNet,
    },
    /// The SPA port is an IKE port, or 0.
    BadSpaPort {
        /// The port.
        port: u16,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoMembers => f.write_str("the mesh has no members: list at least one"),
            Problem::EmptyName { index } => {
                write!(
                    f,
                    "member #{} has an empty name: give it the name in its certificate",
                    index + 1
                )
            }
            Problem::DuplicateName { name } => {
                write!(f, "member name {name:?} is used twice: names must be unique")
            }
            Problem::NoAddresses { member } => {
                write!(f, "member {member:?} has no addresses: give at least one")
            }
            Problem::UnusableAddress { member, address } => write!(
                f,
                "member {member:?} has address {address}, which no host can be reached at (unspecified, loopback, multicast or broadcast)"
            ),
            Problem::DuplicateAddress { address, first, second } if first == second => {
                write!(f, "member {first:?} lists address {address} twice")
            }
            Problem::DuplicateAddress { address, first, second } => write!(
                f,
                "address {address} belongs to both {first:?} and {second:?}: an address belongs to one member"
            ),
            Problem::OutsideNetworks { member, address } => write!(
                f,
                "member {member:?} address {address} is in no protected network: add a prefix that covers it"
            ),
            Problem::EmptyNetwork { network } => {
                write!(f, "{network} has no prefixes: give at least one")
            }
            Problem::HostBits { place, prefix } => {
                write!(f, "{place}: prefix {prefix} has host bits set: write {}", prefix.trunc())
            }
            Problem::ExcludesEverything { exclusion } => write!(
                f,
                "{exclusion} names no protocol, port or prefix, so it would exclude all traffic: narrow it, or set the level to off"
            ),
            Problem::PortWithoutProtocol { exclusion } => {
                write!(
                    f,
                    "{exclusion} has a port but no protocol: add protocol = \"tcp\" or \"udp\""
                )
            }
            Problem::PortlessProtocol { exclusion, protocol } => write!(
                f,
                "{exclusion} has a port, but {protocol} has no ports: ports apply to tcp, udp, sctp and udplite"
            ),
            Problem::BadPortRange { exclusion, range } if range.is_empty() => write!(
                f,
                "{exclusion}: port range {}-{} is reversed: write the lower port first",
                range.first, range.last
            ),
            Problem::BadPortRange { exclusion, range } => write!(
                f,
                "{exclusion}: port range {range} spans {} ports, over the {MAX_PORT_RANGE} allowed (each port is its own kernel policy)",
                range.len()
            ),
            Problem::MixedFamilies { exclusion, protocol, prefix } => write!(
                f,
                "{exclusion} mixes address families: {protocol} with prefix {prefix} (use icmp for IPv4, icmpv6 for IPv6)"
            ),
            Problem::BadSpaPort { port } => write!(
                f,
                "spa_port {port} cannot be used: it must be non-zero and differ from the IKE ports 500 and 4500"
            ),
        }
    }
}

/// Why a model cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model has problems; each prints as one line.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
    /// The node to render for is not a member.
    #[error("{0:?} is not a member of the mesh: add it to members, or render for a member")]
    UnknownMember(String),
}

fn lines(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

fn exclusion_label(index: usize, e: &Exclusion) -> String {
    match &e.name {
        Some(name) => format!("exclusion {name:?}"),
        None => format!("exclusion #{}", index + 1),
    }
}

fn network_label(index: usize, n: &Network) -> String {
    match &n.name {
        Some(name) => format!("network {name:?}"),
        None => format!("network #{}", index + 1),
    }
}

fn unusable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_loopback() || v6.is_multicast(),
    }
}

impl MeshPolicy {
    /// Every problem in the model, in the order of the configuration; empty when it is
    /// good. Pure: it logs nothing (the renderer logs what it refuses).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.members.is_empty() {
            problems.push(Problem::NoMembers);
        }
        if self.spa_port == 0 || IKE_PORTS.contains(&self.spa_port) {
            problems.push(Problem::BadSpaPort { port: self.spa_port });
        }
        let mut names = BTreeSet::new();
        let mut owners: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for (index, m) in self.members.iter().enumerate() {
            if m.name.trim().is_empty() {
                problems.push(Problem::EmptyName { index });
            } else if !names.insert(m.name.as_str()) {
                problems.push(Problem::DuplicateName { name: m.name.clone() });
            }
            if m.addresses.is_empty() {
                problems.push(Problem::NoAddresses { member: m.name.clone() });
            }
            for &address in &m.addresses {
                if unusable(address) {
                    problems.push(Problem::UnusableAddress { member: m.name.clone(), address });
                }
                if let Some(first) = owners.insert(address, &m.name) {
                    owners.insert(address, first);
                    problems.push(Problem::DuplicateAddress {
                        address,
                        first: first.to_owned(),
                        second: m.name.clone(),
                    });
                }
            }
        }
        for (index, n) in self.networks.iter().enumerate() {
            let label = network_label(index, n);
            if n.prefixes.is_empty() {
                problems.push(Problem::EmptyNetwork { network: label.clone() });
            }
            for &prefix in &n.prefixes {
                if prefix != prefix.trunc() {
                    problems.push(Problem::HostBits { place: label.clone(), prefix });
                }
            }
        }
        if !self.networks.is_empty() {
            for m in &self.members {
                for &address in &m.addresses {
                    let covered = self
                        .networks
                        .iter()
                        .flat_map(|n| &n.prefixes)
                        .any(|p| p.contains(&address));
                    if !covered {
                        problems.push(Problem::OutsideNetworks { member: m.name.clone(), address });
                    }
                }
            }
        }
        for (index, e) in self.exclusions.iter().enumerate() {
            let exclusion = exclusion_label(index, e);
            if e.protocol.is_none() && e.port.is_none() && e.prefix.is_none() {
                problems.push(Problem::ExcludesEverything { exclusion: exclusion.clone() });
            }
            if let Some(range) = e.port {
                match e.protocol {
                    None => {
                        problems
                            .push(Problem::PortWithoutProtocol { exclusion: exclusion.clone() });
                    }
                    Some(protocol) if !protocol.has_ports() => {
                        problems.push(Problem::PortlessProtocol {
                            exclusion: exclusion.clone(),
                            protocol,
                        });
                    }
                    Some(_) => {}
                }
                if range.is_empty() || range.len() > MAX_PORT_RANGE {
                    problems.push(Problem::BadPortRange { exclusion: exclusion.clone(), range });
                }
            }
            if let Some(prefix) = e.prefix {
                if prefix != prefix.trunc() {
                    problems.push(Problem::HostBits { place: exclusion.clone(), prefix });
                }
                if let Some(protocol) = e.protocol
                    && let Some(v6) = protocol.only_ipv6()
                    && v6 != matches!(prefix, IpNet::V6(_))
                {
                    problems.push(Problem::MixedFamilies { exclusion, protocol, prefix });
                }
            }
        }
        problems
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// A member's own level: its `level`, or the mesh's.
    pub fn member_level(&self, member: &Member) -> Level {
        member.level.unwrap_or(self.level)
    }

    /// The level between two members: the weaker of their two levels. Both ends of a
    /// pair compute the same, so A's policies towards B mirror B's towards A, and a
    /// node at `use` is never required to speak ESP by a peer at `require`.
    pub fn pair_level(&self, a: &Member, b: &Member) -> Level {
        self.member_level(a).min(self.member_level(b))
    }

    /// The protected prefixes: the networks' prefixes, or, when no networks are given,
    /// every member's own addresses as host prefixes. Sorted, without duplicates.
    pub fn protected_prefixes(&self) -> Vec<IpNet> {
        let set: BTreeSet<IpNet> = if self.networks.is_empty() {
            self.members.iter().flat_map(|m| &m.addresses).map(|&a| IpNet::from(a)).collect()
        } else {
            self.networks.iter().flat_map(|n| &n.prefixes).map(IpNet::trunc).collect()
        };
        set.into_iter().collect()
    }
}
