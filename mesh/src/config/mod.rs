//! The configuration of meshd: one TOML file, [`DEFAULT_PATH`] unless told otherwise.
//!
//! ```toml
//! [node]
//! name = "node-1"                 # this node's member name = the dNSName in its certificate
//! addresses = ["10.77.0.1"]
//!
//! [pki]
//! ca = "/etc/ikemesh/ca.pem"      # the trust bundle (two CAs during a rotation)
//! cert = "/etc/ikemesh/node.pem"
//! key = "/etc/ikemesh/node.key"   # mode 0600
//!
//! [spa]
//! secret = "/etc/ikemesh/spa.key" # required while SPA is enabled (the default)
//!
//! [[mesh.members]]
//! name = "node-2"
//! addresses = ["10.77.0.2"]
//! ```
//!
//! `packaging/meshd.example.toml` documents every key. Every table refuses keys it does
//! not know, durations are humantime strings (`"30s"`, `"4h"`, `"1h30m"`), and every
//! path must be absolute.
//!
//! Reading a configuration has two steps, and each reports every problem it finds, one
//! line each, naming the file and the key and saying what to do:
//!
//! - [`Config::parse`]: the TOML text alone: syntax, unknown keys, types, addresses,
//!   durations, names of groups and levels. No file is read.
//! - [`Config::check`]: the meaning: values in range, the node's addresses, and the
//!   files the configuration names (CA bundle, certificate, key, CRL, SPA secret,
//!   members file), and the mesh policy the members make.
//!
//! [`Config::load`] does both, for `meshd --check-config` and for the daemon's start.

use ca::keys::{self, KeyError};
use ca::verify::{BundleError, CertVerifier, Revocation, TrustBundle};
use ike::crypto::auth::KeyType;
use ike::crypto::dh::Group;
use policy::spa::{SpaError, SpaKeys};
use policy::{Exclusion, Level, Member, MeshPolicy, Network, Problem};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Error as _};
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

mod parse;
use parse::{dh_groups, duration, parse_named, read_members_file};

/// Where meshd reads its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/ikemesh/meshd.toml";

/// The IKE port unless configured (RFC 7296 section 2).
const DEFAULT_IKE_PORT: u16 = 500;
/// How long a valid knock keeps the pinhole open unless configured (fwknop's 30 s).
const DEFAULT_PINHOLE_TTL: Duration = Duration::from_secs(30);
/// IKE SA rekey interval unless configured: strongSwan's 4 h.
const DEFAULT_REKEY: Duration = Duration::from_secs(4 * 3600);
/// Child SA rekey interval unless configured.
const DEFAULT_CHILD_REKEY: Duration = Duration::from_secs(3600);
/// Rekey jitter unless configured, percent.
const DEFAULT_JITTER: u8 = 10;
/// Liveness check interval of idle peers unless configured.
const DEFAULT_LIVENESS: Duration = Duration::from_secs(30);
/// First retransmission wait unless configured. strongSwan waits 4 s, libreswan 0.5 s.
/// A mesh's peers are a round trip of milliseconds apart, and when a fleet's start
/// loses datagrams in a burst, every loss costs this wait: with 4 s, 100 simulated
/// nodes with 3% loss converged in 21 s, with 1 s in 6 to 7 s. The SA is still given
/// up only after a minute or more of tries (see [`retransmit_tries`]).
const DEFAULT_RETRANSMIT_BASE: Duration = Duration::from_secs(1);
/// The least time an unanswered request is tried for before the SA is given up.
pub const RETRANSMIT_GIVE_UP: Duration = Duration::from_secs(60);

/// How many sends of a request, each wait 1.8 times the last from `base`, until they
/// have taken [`RETRANSMIT_GIVE_UP`] (at least five, as strongSwan): 7 for 1 s (75 s),
/// 5 for 4 s (89 s).
#[must_use]
pub fn retransmit_tries(base: Duration) -> u32 {
    ike::sa::Retransmit { base, ..ike::sa::Retransmit::default() }
        .tried_for(RETRANSMIT_GIVE_UP)
        .tries
}
/// IKE SAs initiated at once: enough to keep a LAN's round trips busy (a handshake
/// costs about a millisecond of CPU at each end), few enough that the burst fits the
/// socket buffers and the peers' cookie thresholds.
const DEFAULT_MAX_INITIATING: usize = 32;
const MAX_INITIATING_RANGE: (usize, usize) = (1, 4096);
/// The state directory unless configured.
const DEFAULT_STATE_DIR: &str = "/var/lib/ikemesh";
/// The control socket unless configured.
const DEFAULT_CONTROL_SOCKET: &str = "/run/ikemesh/meshd.sock";

/// The accepted ranges of durations: (lowest, highest).
const REKEY_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(7 * 86_400));
const CHILD_REKEY_RANGE: (Duration, Duration) =
    (Duration::from_secs(30), Duration::from_secs(7 * 86_400));
const LIVENESS_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
const RETRANSMIT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));
const PINHOLE_TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// The highest rekey jitter, percent.
const MAX_JITTER: u8 = 50;
/// The ESP AES-GCM key lengths allowed.
const ESP_KEY_BITS: [u16; 2] = [128, 256];
/// The longest Unix socket path (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The top-level tables, in the order of the file and of [`Config`].
const SECTIONS: [&str; 6] = ["node", "pki", "spa", "ike", "mesh", "daemon"];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: Node,
    /// Its credentials and the trust bundle.
    pub pki: Pki,
    /// Single Packet Authorization before IKE.
    #[serde(default)]
    pub spa: Spa,
    /// IKE: ports, timers, algorithms.
    #[serde(default)]
    pub ike: Ike,
    /// The mesh: members, protected networks, exclusions, level.
    #[serde(default)]
    pub mesh: Mesh,
    /// The daemon itself: state, control socket, logs.
    #[serde(default)]
    pub daemon: Daemon,
}

/// `[node]`: this node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Its member name: the dNSName of its certificate (lower case).
    pub name: String,
    /// The addresses peers reach it at; at least one.
    pub addresses: Vec<IpAddr>,
}

/// `[pki]`: the trust bundle and this node's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    /// The trust bundle: the mesh CA's certificate (two during a rotation), PEM.
    pub ca: PathBuf,
    /// This node's certificate (chain), PEM, leaf first.
    pub cert: PathBuf,
    /// This node's private key, PEM, mode 0600.
    pub key: PathBuf,
    /// The CRL(s) of the bundle's CAs, PEM.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

/// `[spa]`: Single Packet Authorization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spa {
    /// Whether the IKE ports stay dark until a valid knock (default true).
    pub enabled: bool,
    /// The mesh's SPA secret file (at least 32 bytes, mode 0600); required when
    /// enabled. There is no default secret.
    pub secret: Option<PathBuf>,
    /// The UDP port knocks go to (default [`policy::model::DEFAULT_SPA_PORT`]).
    pub port: u16,
    /// How long a valid knock opens the IKE ports for its sender (default 30 s).
    #[serde(deserialize_with = "duration")]
    pub pinhole_ttl: Duration,
}

impl Default for Spa {
    fn default() -> Self {
        Self {
            enabled: true,
            secret: None,
            port: policy::model::DEFAULT_SPA_PORT,
            pinhole_ttl: DEFAULT_PINHOLE_TTL,
        }
    }
}

/// `[ike]`: IKEv2.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ike {
    /// The UDP port (default 500).
    pub port: u16,
    /// IKE SA rekey interval (default 4 h, at least 1 min).
    #[serde(deserialize_with = "duration")]
    pub rekey: Duration,
    /// Child SA rekey interval (default 1 h, at least 30 s).
    #[serde(deserialize_with = "duration")]
    pub child_rekey: Duration,
    /// Percent subtracted at random from each rekey interval, 0 to 50 (default 10).
    pub jitter: u8,
    /// Liveness check interval of idle peers (default 30 s, at least 1 s).
    #[serde(deserialize_with = "duration")]
    pub liveness: Duration,
    /// First retransmission wait (default 4 s).
    #[serde(deserialize_with = "duration")]
    pub retransmit_base: Duration,
    /// D-H groups, in order of preference (default x25519, ecp256, modp2048).
    #[serde(deserialize_with = "dh_groups")]
    pub dh_groups: Vec<Group>,
    /// ESP AES-GCM key lengths, in order of preference: 128 and/or 256 (default 256,
    /// 128).
    pub esp_key_bits: Vec<u16>,
    /// Negotiate SAs only when traffic needs them (default false: with every member
    /// at start).
    pub on_demand: bool,
    /// IKE SAs this node initiates at once, at most (default 32, 1 to 4,096); the
    /// others wait their turn, so that a node with hundreds of peers does not overrun
    /// its own queues, the links or its peers.
    pub max_initiating: usize,
}

impl Default for Ike {
    fn default() -> Self {
        Self {
            port: DEFAULT_IKE_PORT,
            rekey: DEFAULT_REKEY,
            child_rekey: DEFAULT_CHILD_REKEY,
            jitter: DEFAULT_JITTER,
            liveness: DEFAULT_LIVENESS,
            retransmit_base: DEFAULT_RETRANSMIT_BASE,
            dh_groups: vec![Group::Curve25519, Group::Ecp256, Group::Modp2048],
            esp_key_bits: vec![256, 128],
            on_demand: false,
            max_initiating: DEFAULT_MAX_INITIATING,
        }
    }
}

/// `[mesh]`: the policy model's members, networks, exclusions and level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mesh {
    /// The mesh-wide level, the rollout target (default `use`).
    pub level: Level,
    /// A file of `[[members]]` tables, re-read on each [`Config::members`] call.
    pub members_file: Option<PathBuf>,
    /// Members listed here.
    pub members: Vec<Member>,
    /// Protected networks (default: just the members' own addresses).
    pub networks: Vec<Network>,
    /// Traffic left in the clear.
    pub exclusions: Vec<Exclusion>,
}

/// `[daemon]`: the daemon itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Daemon {
    /// Where meshd keeps its state (default `/var/lib/ikemesh`).
    pub state_dir: PathBuf,
    /// The control socket `meshctl` talks to (default `/run/ikemesh/meshd.sock`).
    pub control_socket: PathBuf,
    /// A group allowed on the control socket (mode 0660); root only (0600) when absent.
    pub control_group: Option<String>,
    /// What SIGTERM does to our SAs and policies in the kernel.
    pub on_stop: OnStop,
    /// The format of log lines on stdout.
    pub log_format: LogFormat,
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control_group: None,
            on_stop: OnStop::default(),
            log_format: LogFormat::default(),
        }
    }
}

/// What meshd does to the kernel state it made when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    /// Leave SAs and policies in place: traffic keeps flowing (and stays protected)
    /// across a restart or upgrade, until the SAs expire.
    #[default]
    Keep,
    /// Remove our SAs and policies: traffic falls back to what the kernel does without
    /// them.
    Flush,
}

/// The format of log lines on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a member of [`Config::members`] was listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberSource {
    /// In the configuration: `[[mesh.members]]`, or this node from `[node]`.
    Config,
    /// In `mesh.members_file`.
    MembersFile,
}

/// Where a member came from, finer than [`MemberSource`]: for naming the key in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `[[mesh.members]]`.
    Config,
    /// `mesh.members_file`.
    File,
    /// `[node]`, added because no list named this node.
    Node,
}

impl Origin {
    fn source(self) -> MemberSource {
        match self {
            Origin::Config | Origin::Node => MemberSource::Config,
            Origin::File => MemberSource::MembersFile,
        }
    }
}

/// The members file: `[[members]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersFile {
    #[serde(default)]
    members: Vec<Member>,
}

impl Config {
    /// Parses the TOML text only (no files read). Err: one line per problem.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        parse_named(text, "config").map_err(one_line_each)
    }

    /// Reads and parses the file, then [`check`](Self::check)s it. Err: one line per
    /// problem, each naming the file/key and what to do.
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        let label = path.display().to_string();
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    return Err(vec![format!(
                        "{label}: not UTF-8 text (bad byte at offset {at}): save it as UTF-8"
                    )]);
                }
            },
            Err(e) if is_missing(&e) => {
                return Err(vec![format!(
                    "{label}: no such file: create it (packaging/meshd.example.toml documents \
                     every key), or give another with --config"
                )]);
            }
            Err(e) => return Err(vec![format!("{label}: {}", io_problem(&e))]),
        };
        let config = parse_named(&text, &label).map_err(one_line_each)?;
        let problems = config.check();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(one_line_each(problems.into_iter().map(|p| format!("{label}: {p}")).collect()))
        }
    }

    /// Every semantic problem: values in range, node address usable, reads of the
    /// referenced files (CA bundle, certificate chain, private key and that it matches
    /// the certificate, the certificate's identity, CRL, SPA secret when enabled,
    /// members file), and the problems of the [`MeshPolicy`] built by
    /// [`mesh_policy`](Self::mesh_policy). Empty when good.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.check_node(&mut problems);
        self.check_pki(&mut problems);
        self.check_spa(&mut problems);
        self.check_ike(&mut problems);
        self.check_mesh(&mut problems);
        self.check_daemon(&mut problems);
        one_line_each(problems)
    }

    /// The members: the configuration's, then the members file's (re-read on each
    /// call), each with its source; this node included: added from `[node]` (last) if
    /// no list names it; if one does, its addresses must equal `node.addresses`.
    pub fn members(&self) -> Result<Vec<(Member, MemberSource)>, String> {
        let (members, problems) = self.gather_members();
        match problems.into_iter().next() {
            Some(problem) => Err(one_line(problem)),
            None => Ok(members.into_iter().map(|(m, origin)| (m, origin.source())).collect()),
        }
    }

    /// The policy model for `members`: the configured level, SPA port, networks and
    /// exclusions.
    pub fn mesh_policy(&self, members: Vec<Member>) -> MeshPolicy {
        MeshPolicy {
            level: self.mesh.level,
            spa_port: self.spa.port,
            members,
            networks: self.mesh.networks.clone(),
            exclusions: self.mesh.exclusions.clone(),
        }
    }

    /// The IKE algorithm policy: `ike.dh_groups` for IKE, `ike.esp_key_bits` for ESP,
    /// and for PFS those of the D-H groups that are x25519 or ecp256, in order. The rest
    /// (ciphers, PRFs, ESN) is the `ike` crate's default.
    pub fn ike_policy(&self) -> ike::proposal::Policy {
        ike::proposal::Policy {
            groups: self.ike.dh_groups.clone(),
            esp_gcm_key_bits: self.ike.esp_key_bits.clone(),
            pfs_groups: self
                .ike
                .dh_groups
                .iter()
                .copied()
                .filter(|g| matches!(g, Group::Curve25519 | Group::Ecp256))
                .collect(),
            ..ike::proposal::Policy::default()
        }
    }

    fn check_node(&self, problems: &mut Vec<String>) {
        let name = &self.node.name;
        if name.trim().is_empty() {
            problems.push(
                "node.name: empty: give this node's name, the dNSName of its certificate".into(),
            );
        } else {
            match ca::authority::check_node_name(name) {
                Ok(lower) if lower != *name => problems.push(format!(
                    "node.name {name:?}: write it in lower case, {lower:?}, as certificates \
                     and IKE identities carry it"
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("node.name: {e}")),
            }
        }
        if self.node.addresses.is_empty() {
            problems.push(
                "node.addresses: empty: give at least one address peers reach this node at".into(),
            );
        }
        for address in &self.node.addresses {
            if let Some(what) = unusable(*address) {
                problems.push(format!(
                    "node.addresses: {address} is {what}: give an address peers reach this \
                     node at"
                ));
            }
        }
    }

    fn check_pki(&self, problems: &mut Vec<String>) {
        let pki = &self.pki;
        let bundle = file_ok("pki.ca", &pki.ca, problems)
            .then(|| match TrustBundle::load(&pki.ca) {
                Ok(bundle) => Some(bundle),
                Err(BundleError::Io { source, .. }) => {
                    problems.push(file_problem("pki.ca", &pki.ca, &source));
                    None
                }
                Err(e) => {
                    problems.push(format!("pki.ca {}: {e}", pki.ca.display()));
                    None
                }
            })
            .flatten();
        let mut revocation = Revocation::new();
        if let Some(crl) = &pki.crl
            && file_ok("pki.crl", crl, problems)
        {
            match std::fs::read(crl) {
                Err(e) => problems.push(file_problem("pki.crl", crl, &e)),
                Ok(pem) => {
                    if let Some(bundle) = &bundle
                        && let Err(e) = ca::authority::add_crls(&mut revocation, bundle, &pem)
                    {
                        problems.push(format!("pki.crl {}: {e}", crl.display()));
                    }
                }
            }
        }
        let chain = file_ok("pki.cert", &pki.cert, problems)
            .then(|| match keys::load_cert_chain(&pki.cert) {
                Ok(chain) => Some(chain),
                Err(KeyError::Io { source, .. }) => {
                    problems.push(file_problem("pki.cert", &pki.cert, &source));
                    None
                }
                Err(KeyError::NoCertificate) => {
                    let held = match pem_label(&pki.cert) {
                        Some(label) => format!("holds a {label}, no CERTIFICATE"),
                        None => "holds no PEM CERTIFICATE".to_owned(),
                    };
                    problems.push(format!(
                        "pki.cert {}: {held}: give this node's certificate (PEM)",
                        pki.cert.display()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("pki.cert {}: {e}", pki.cert.display()));
                    None
                }
            })
            .flatten();
        if let Some(chain) = &chain
            && let Some(leaf) = chain.first()
        {
            self.check_identity(leaf, chain, bundle.as_ref(), revocation, problems);
        }
        if file_ok("pki.key", &pki.key, problems) {
            self.check_key(chain.as_ref().and_then(|c| c.first()).map(Vec::as_slice), problems);
        }
    }

    /// The certificate certifies `node.name`, and verifies with the bundle and CRL.
    fn check_identity(
        &self,
        leaf: &[u8],
        chain: &[Vec<u8>],
        bundle: Option<&TrustBundle>,
        revocation: Revocation,
        problems: &mut Vec<String>,
    ) {
        let cert = self.pki.cert.display();
        let id = match keys::ike_id(leaf) {
            Ok(id) => id,
            Err(e) => {
                problems.push(format!("pki.cert {cert}: {e}"));
                return;
            }
        };
        let certified = String::from_utf8_lossy(&id.data).into_owned();
        if certified != self.node.name.to_ascii_lowercase() {
            problems.push(format!(
                "pki.cert {cert}: the certificate is for {certified:?}, not node.name {:?}: \
                 give this node's certificate, or set node.name = {certified:?}",
                self.node.name
            ));
        }
        if let Some(bundle) = bundle {
            let verifier = CertVerifier::new(bundle.clone()).with_revocation(revocation);
            if let Err(e) = verifier.verify(&id, chain) {
                problems.push(format!(
                    "pki.cert {cert}: does not verify with pki.ca {}: {e}",
                    self.pki.ca.display()
                ));
            }
        }
    }

    fn check_key(&self, leaf: Option<&[u8]>, problems: &mut Vec<String>) {
        let path = &self.pki.key;
        let shown = path.display();
        let key = match ca::PrivateKey::load(path) {
            Ok(key) => key,
            Err(KeyError::TooOpen { mode, .. }) => {
                problems.push(format!(
                    "pki.key {shown}: mode {mode:04o} is too open: chmod 600 it (and consider \
                     the key exposed)"
                ));
                return;
            }
            Err(KeyError::Io { source, .. }) => {
                problems.push(file_problem("pki.key", path, &source));
                return;
            }
            Err(e @ KeyError::BadPem { .. }) => {
                problems.push(match pem_label(path) {
                    Some(label) if label.contains("CERTIFICATE") => format!(
                        "pki.key {shown}: holds a {label}, not a private key: give this node's \
                         private key (the certificate belongs in pki.cert)"
                    ),
                    _ => format!("pki.key {shown}: {e}"),
                });
                return;
            }
            Err(e) => {
                problems.push(format!("pki.key {shown}: {e}"));
                return;
            }
        };
        let Some(leaf) = leaf else { return };
        let cert = self.pki.cert.display();
        match key.check_matches(leaf) {
            Ok(()) => {}
            Err(KeyError::KeyMismatch { subject }) => {
                let ours = key.algorithm().key_type();
                problems.push(match cert_key_type(leaf) {
                    Some(theirs) if theirs != ours => format!(
                        "pki.key {shown}: an {} key does not match the certificate's {} key \
                         (pki.cert {cert}): give the key the certificate was issued for",
                        key_name(ours),
                        key_name(theirs)
                    ),
                    _ => format!(
                        "pki.key {shown}: this {} key does not match the certificate \
                         '{subject}' (pki.cert {cert}): give the key the certificate was \
                         issued for, or re-enroll",
                        key_name(ours)
                    ),
                });
            }
            Err(e) => problems.push(format!("pki.key {shown}: {e}")),
        }
    }

    fn check_spa(&self, problems: &mut Vec<String>) {
        let spa = &self.spa;
        if spa.port == 0 || policy::model::IKE_PORTS.contains(&spa.port) {
            problems.push(format!(
                "spa.port: {} cannot be used: give a non-zero port other than the IKE ports \
                 500 and 4500 (default {})",
                spa.port,
                policy::model::DEFAULT_SPA_PORT
            ));
        } else if spa.port == self.ike.port {
            problems.push(format!(
                "spa.port: {} is also ike.port: give them different ports",
                spa.port
            ));
        }
        in_range("spa.pinhole_ttl", spa.pinhole_ttl, PINHOLE_TTL_RANGE, problems);
        if !spa.enabled {
            return;
        }
        let Some(secret) = &spa.secret else {
            problems.push(
                "spa.secret: missing while SPA is enabled: give the mesh's SPA secret file (the \
                 same on every node: at least 32 random bytes, mode 0600, e.g. `head -c 32 \
                 /dev/urandom > /etc/ikemesh/spa.key`), or set spa.enabled = false"
                    .into(),
            );
            return;
        };
        if !file_ok("spa.secret", secret, problems) {
            return;
        }
        let shown = secret.display();
        match SpaKeys::load(secret) {
            Ok(_) => {}
            Err(SpaError::Io { source, .. }) => {
                problems.push(file_problem("spa.secret", secret, &source));
            }
            Err(SpaError::LooseMode { mode, .. }) => problems.push(format!(
                "spa.secret {shown}: mode {mode:04o} is too open: chmod 600 it (and consider \
                 the secret exposed)"
            )),
            Err(SpaError::ShortSecret { len, .. }) => problems.push(format!(
                "spa.secret {shown}: {len} bytes is too short: the secret must be at least \
                 {} random bytes (`head -c 32 /dev/urandom`), the same file on every node",
                policy::spa::MIN_SECRET_LEN
            )),
            Err(e) => problems.push(format!("spa.secret {shown}: {e}")),
        }
    }

    fn check_ike(&self, problems: &mut Vec<String>) {
        let ike = &self.ike;
        if ike.port != DEFAULT_IKE_PORT {
            // Every member sends to the others' ike.port, and the rendered XFRM bypass
            // policies let UDP 500 and 4500 through: another port would be caught by
            // the mesh's own require policies.
            problems.push(format!(
                "ike.port: {} is not supported: the mesh speaks IKE on UDP 500 (remove the key)",
                ike.port
            ));
        }
        in_range("ike.rekey", ike.rekey, REKEY_RANGE, problems);
        in_range("ike.child_rekey", ike.child_rekey, CHILD_REKEY_RANGE, problems);
        in_range("ike.liveness", ike.liveness, LIVENESS_RANGE, problems);
        in_range("ike.retransmit_base", ike.retransmit_base, RETRANSMIT_RANGE, problems);
        let (lo, hi) = MAX_INITIATING_RANGE;
        if !(lo..=hi).contains(&ike.max_initiating) {
            problems.push(format!(
                "ike.max_initiating: {} is out of range: give {lo} to {hi} \
                 (default {DEFAULT_MAX_INITIATING})",
                ike.max_initiating
            ));
        }
        if ike.jitter > MAX_JITTER {
            problems.push(format!(
                "ike.jitter: {} is out of range: give a percentage from 0 to {MAX_JITTER} \
                 (default {DEFAULT_JITTER})",
                ike.jitter
            ));
        }
        if ike.dh_groups.is_empty() {
            problems
                .push("ike.dh_groups: empty: give at least one of x25519, ecp256, modp2048".into());
        }
        for (i, group) in ike.dh_groups.iter().enumerate() {
            if ike.dh_groups[..i].contains(group) {
                problems.push(format!(
                    "ike.dh_groups: {} is listed twice: list each group once",
                    group_name(*group)
                ));
            }
        }
        if ike.esp_key_bits.is_empty() {
            problems.push("ike.esp_key_bits: empty: give 256, 128 or both".into());
        }
        for (i, bits) in ike.esp_key_bits.iter().enumerate() {
            if !ESP_KEY_BITS.contains(bits) {
                problems.push(format!(
                    "ike.esp_key_bits: {bits} is not allowed: only 128 and 256 (AES-GCM)"
                ));
            } else if ike.esp_key_bits[..i].contains(bits) {
                problems.push(format!(
                    "ike.esp_key_bits: {bits} is listed twice: list each length once"
                ));
            }
        }
    }

    fn check_mesh(&self, problems: &mut Vec<String>) {
        // A relative, missing or unreadable members file is reported by `gather_members`.
        let (members, member_problems) = self.gather_members();
        problems.extend(member_problems);
        let origins: Vec<Origin> = members.iter().map(|(_, origin)| *origin).collect();
        let policy = self.mesh_policy(members.into_iter().map(|(m, _)| m).collect());
        let origin_of =
            |name: &str| policy.members.iter().position(|m| m.name == name).map(|i| origins[i]);
        let node_checked = |name: &str| origin_of(name) == Some(Origin::Node);
        for problem in policy.validate() {
            let key = match &problem {
                // `check_spa` says it in the configuration's terms.
                Problem::BadSpaPort { .. } => continue,
                // `check_node` reported these of this node's addresses.
                Problem::NoAddresses { member } | Problem::UnusableAddress { member, .. }
                    if node_checked(member) =>
                {
                    continue;
                }
                Problem::EmptyName { index } => origins.get(*index).copied(),
                Problem::DuplicateName { name } => {
                    policy.members.iter().rposition(|m| &m.name == name).map(|i| origins[i])
                }
                Problem::NoAddresses { member } | Problem::UnusableAddress { member, .. } => {
                    origin_of(member)
                }
                Problem::DuplicateAddress { first, second, .. } => {
                    match (origin_of(first), origin_of(second)) {
                        (first, Some(Origin::Node)) => first,
                        (_, second) => second,
                    }
                }
                _ => None,
            };
            let key = match (key, &problem) {
                (Some(Origin::Node), _) => "node.addresses".to_owned(),
                (Some(Origin::File), _) => self.members_file_key(),
                (Some(Origin::Config), _) | (None, Problem::NoMembers) => "mesh.members".into(),
                (None, Problem::OutsideNetworks { .. } | Problem::EmptyNetwork { .. }) => {
                    "mesh.networks".into()
                }
                (None, Problem::HostBits { place, .. }) if place.starts_with("network") => {
                    "mesh.networks".into()
                }
                (None, _) => "mesh.exclusions".into(),
            };
            problems.push(format!("{key}: {problem}"));
        }
    }

    fn check_daemon(&self, problems: &mut Vec<String>) {
        let daemon = &self.daemon;
        absolute("daemon.state_dir", &daemon.state_dir, problems);
        if absolute("daemon.control_socket", &daemon.control_socket, problems) {
            let len = daemon.control_socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                problems.push(format!(
                    "daemon.control_socket {}: {len} bytes is too long for a Unix socket path \
                     (at most {MAX_SOCKET_PATH}): give a shorter path",
                    daemon.control_socket.display()
                ));
            }
        }
        if let Some(group) = &daemon.control_group {
            let bad = group.is_empty()
                || group.starts_with('-')
                || group.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':')
                || group.len() > 32;
            if bad {
                problems.push(format!(
                    "daemon.control_group {group:?}: not a group name: give an existing \
                     group's name, or leave it out for a root-only socket"
                ));
            }
        }
    }

    fn members_file_key(&self) -> String {
        match &self.mesh.members_file {
            Some(path) => format!("mesh.members_file {}", path.display()),
            None => "mesh.members_file".into(),
        }
    }

    /// The members with their origins, and the problems met gathering them (the members
    /// file unreadable, this node listed with other addresses).
    fn gather_members(&self) -> (Vec<(Member, Origin)>, Vec<String>) {
        let mut problems = Vec::new();
        let mut members: Vec<(Member, Origin)> =
            self.mesh.members.iter().map(|m| (m.clone(), Origin::Config)).collect();
        if let Some(path) = &self.mesh.members_file {
            match read_members_file(path) {
                Ok(listed) => members.extend(listed.into_iter().map(|m| (m, Origin::File))),
                Err(problem) => problems.push(problem),
            }
        }
        let node = &self.node;
        match members.iter().find(|(m, _)| m.name == node.name) {
            Some((listed, origin)) => {
                let ours: BTreeSet<&IpAddr> = node.addresses.iter().collect();
                let theirs: BTreeSet<&IpAddr> = listed.addresses.iter().collect();
                if ours != theirs {
                    let key = match origin {
                        Origin::File => self.members_file_key(),
                        Origin::Config | Origin::Node => "mesh.members".into(),
                    };
                    problems.push(format!(
                        "{key}: this node, {:?}, is listed with addresses {}, but node.addresses \
                         says {}: make them equal, or leave this node out of the list (it is \
                         added from [node])",
                        node.name,
                        address_list(&listed.addresses),
                        address_list(&node.addresses)
                    ));
                }
            }
            None => members.push((
                Member { name: node.name.clone(), addresses: node.addresses.clone(), level: None },
                Origin::Node,
            )),
        }
        (members, problems)
    }
}

/// How the configuration names a group.
fn group_name(group: Group) -> &'static str {
    match group {
        Group::Curve25519 => "x25519",
        Group::Ecp256 => "ecp256",
        Group::Modp2048 => "modp2048",
    }
}

fn key_name(key: KeyType) -> &'static str {
    match key {
        KeyType::Ed25519 => "Ed25519",
        KeyType::EcdsaP256 => "ECDSA P-256",
        KeyType::Rsa => "RSA",
    }
}

/// Why no peer can reach a node at `address`, if none can.
fn unusable(address: IpAddr) -> Option<&'static str> {
    match address {
        a if a.is_unspecified() => Some("unspecified"),
        a if a.is_loopback() => Some("a loopback address"),
        a if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        _ => None,
    }
}

fn address_list(addresses: &[IpAddr]) -> String {
    if addresses.is_empty() {
        return "none".into();
    }
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Whether `value` is within `range`; a problem naming `key` if not.
fn in_range(key: &str, value: Duration, range: (Duration, Duration), problems: &mut Vec<String>) {
    let (low, high) = range;
    if value < low || value > high {
        problems.push(format!(
            "{key}: {} is out of range: give {} to {}",
            show(value),
            show(low),
            show(high)
        ));
    }
}

fn show(d: Duration) -> String {
    if d.is_zero() { "0s".into() } else { humantime::format_duration(d).to_string() }
}

/// Whether `path` is absolute; a problem naming `key` if not.
fn absolute(key: &str, path: &Path, problems: &mut Vec<String>) -> bool {
    if path.is_absolute() {
        return true;
    }
    problems.push(format!(
        "{key} {:?}: a relative path: give an absolute one (meshd does not run in the \
         configuration's directory)",
        path.display().to_string()
    ));
    false
}

/// Whether `path` is absolute and names a file (not a directory); a problem naming `key`
/// if not.
fn file_ok(key: &str, path: &Path, problems: &mut Vec<String>) -> bool {
    if !absolute(key, path, problems) {
        return false;
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            problems.push(format!("{key} {}: is a directory, not a file", path.display()));
            false
        }
        Ok(_) => true,
        Err(e) => {
            problems.push(file_problem(key, path, &e));
            false
        }
    }
}

/// A file named by `key` could not be read.
fn file_problem(key: &str, path: &Path, e: &io::Error) -> String {
    format!("{key} {}: {}", path.display(), io_problem(e))
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn io_problem(e: &io::Error) -> String {
    match e.kind() {
        _ if is_missing(e) => "no such file".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied: meshd cannot read it; fix its owner or mode".into()
        }
        io::ErrorKind::IsADirectory => "is a directory, not a file".into(),
        _ => format!("cannot read it ({e})"),
    }
}

/// The label of the first PEM block of a file (`CERTIFICATE`, `PRIVATE KEY`), if any.
fn pem_label(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(text[start..start + end].to_owned())
}

/// The kind of key a certificate (DER) certifies, to say which kinds do not match.
fn cert_key_type(cert: &[u8]) -> Option<KeyType> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    ike::crypto::auth::verifier_from_spki(cert.public_key().raw).ok()?.key_type()
}

/// One line, whatever a message held.
fn one_line(line: String) -> String {
    if line.contains(['\n', '\r']) {
        line.split(['\n', '\r'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        line
    }
}

fn one_line_each(lines: Vec<String>) -> Vec<String> {
    lines.into_iter().map(one_line).collect()
}
