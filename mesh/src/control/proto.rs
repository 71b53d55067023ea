//! The control protocol between `meshctl` and `meshd`: one JSON request per connection
//! on the daemon's Unix socket, one JSON line each way, then the daemon closes.
//!
//! These types are the contract: the daemon answers them, `meshctl` prints them (a
//! table, or the JSON as it is with `-o json`).

use policy::Level;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What `meshctl` asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The node and every peer: [`Reply::Status`].
    Status,
    /// The members as the daemon holds them: [`Reply::Peers`].
    PeerList,
    /// Adds a member (or changes its addresses): [`Reply::Done`].
    PeerAdd {
        /// Its name (the identity in its certificate).
        name: String,
        /// Its addresses.
        addresses: Vec<IpAddr>,
        /// Only say what would change.
        #[serde(default)]
        dry_run: bool,
    },
    /// Removes a member, its SAs, policies and pinholes: [`Reply::Done`].
    PeerRemove {
        /// Its name.
        name: String,
        /// Only say what would change.
        #[serde(default)]
        dry_run: bool,
    },
    /// Sets the rollout target, mesh-wide or for one peer: [`Reply::Done`].
    RolloutSet {
        /// The new target.
        level: Level,
        /// One peer only (its override), or the mesh-wide target when `None`.
        #[serde(default)]
        peer: Option<String>,
        /// Clears the peer's override instead (with `peer`).
        #[serde(default)]
        clear: bool,
        /// Only say what would change.
        #[serde(default)]
        dry_run: bool,
    },
    /// Per peer: target, current, and what blocks it: [`Reply::Rollout`].
    RolloutStatus,
    /// Reads the trust bundle, CRL, certificate and key again and re-authenticates every
    /// peer (a CA rotation step): [`Reply::Done`].
    Reload,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Done; here is what was asked for.
    Ok {
        /// The answer.
        reply: Reply,
    },
    /// Refused or failed, in one line that says what to do.
    Error {
        /// The line.
        message: String,
    },
}

/// The answer to a successful request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// To [`Request::Status`].
    Status(Status),
    /// To [`Request::PeerList`].
    Peers {
        /// Every member but this node, sorted by name.
        peers: Vec<PeerEntry>,
    },
    /// To [`Request::RolloutStatus`].
    Rollout(RolloutReport),
    /// To a request that changes something: what changed (or would, with `dry_run`).
    Done {
        /// One line per change; empty when nothing had to change.
        changes: Vec<String>,
    },
}

/// The node and its peers, for `meshctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node's name.
    pub node: String,
    /// meshd's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Whether the kernel can carry ESP.
    pub esp: EspStatus,
    /// The mesh-wide rollout target.
    pub target: Level,
    /// The IKE and UDP counters since the daemon started.
    #[serde(default)]
    pub counters: Counters,
    /// Every peer, sorted by name.
    pub peers: Vec<PeerStatus>,
}

/// The daemon's IKE and UDP counters: what a burst (a start, a partition healing)
/// cost, and whether anything was lost on the way out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// IKE requests sent again (retransmissions) since the start.
    pub retransmissions: u64,
    /// IKE SAs we initiated that are being made now (at most `ike.max_initiating`).
    pub initiating: u64,
    /// Peers waiting for a place among those.
    pub waiting: u64,
    /// IKE SAs peers started with us that are not established yet.
    pub half_open: u64,
    /// IKE datagrams handed to the kernel.
    pub sent: u64,
    /// Sends the kernel put off (no buffer space for the moment): the datagram was
    /// queued and sent again.
    pub deferred: u64,
    /// Datagrams lost on the way out: the send queue was full, or the kernel refused
    /// them for good. Each is also logged.
    pub send_failed: u64,
    /// Errors the network reported back for datagrams already sent (ICMP unreachable
    /// and the like, seen through `IP_RECVERR`).
    pub errors_reported: u64,
}

/// What the kernel can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspStatus {
    /// ESP SAs can be installed.
    pub available: bool,
    /// When not: the one line the daemon logged at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One peer in `meshctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// The level its policies are at now.
    pub level: Level,
    /// The IKE SA: `down`, `knocking`, `connecting`, `established`,
    /// `adopted` (child SAs found in the kernel at start, no IKE SA yet).
    pub ike: String,
    /// The current child SA, if one is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildStatus>,
    /// Bytes received from the peer under ESP (the kernel's counters, current child).
    pub bytes_in: u64,
    /// Bytes sent to the peer under ESP.
    pub bytes_out: u64,
    /// When the last rekey (child or IKE) completed, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rekey: Option<u64>,
    /// The last error with this peer, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A child SA in `meshctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    /// SPI of the inbound SA.
    pub spi_in: u32,
    /// SPI of the outbound SA.
    pub spi_out: u32,
    /// Whether it is in the kernel (false on a kernel without ESP).
    pub installed: bool,
}

/// A member in `meshctl peer list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Where it comes from: `config`, `members-file` or `meshctl`.
    pub source: String,
}

/// `meshctl rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutReport {
    /// The mesh-wide target.
    pub target: Level,
    /// Every peer, sorted by name.
    pub peers: Vec<RolloutPeer>,
}

/// One peer's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPeer {
    /// Its name.
    pub name: String,
    /// Where it should go: its override, or the mesh's target.
    pub target: Level,
    /// Where it is.
    pub current: Level,
    /// The level the peer said it is at towards us, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<Level>,
    /// Why `current` is short of `target`, in one line; `None` when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}
