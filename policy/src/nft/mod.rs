//! nftables pinholes: the IKE ports stay dark except for addresses we let in.
//!
//! ikemesh owns one table, `inet ikemesh` by default, and never reads or writes any
//! other. In it:
//!
//! - sets `allow4` (`ipv4_addr`) and `allow6` (`ipv6_addr`) with `flags timeout` and a
//!   default `timeout` of 30 s: the sources of valid SPA packets, each for a short time;
//! - sets `keep4` and `keep6`, without timeouts: peers with a live IKE SA, which must
//!   reach our IKE ports for rekeys and liveness checks long after any knock window
//!   (strongSwan #1433); [`Pinholes::release`] takes them out when the SA is gone;
//! - a base chain `input` (`type filter hook input priority -10 policy accept`) that
//!   accepts UDP to the IKE ports (500 and 4500 by default) from addresses in those sets
//!   and answers to datagrams we sent from them (`ct state established`: as IKE
//!   initiator we send from port 500 to the peer's 500, and its responses come back to
//!   our 500), and drops every other UDP datagram to them. Dropped in the input hook, a probe
//!   never reaches a socket, so the kernel sends no ICMP port unreachable either: to a
//!   scanner the ports look exactly like a silent host.
//!
//! The SPA port itself is not in the chain: it stays open, because the listener must
//! receive knocks (and it never answers them). Everything else passes our chain
//! untouched, and an `accept` in it only means "not dropped by ikemesh": the operator's
//! own chains still see the packet.
//!
//! **Fail closed.** The table lives in the kernel, not in the process: if the daemon
//! dies (even by SIGKILL) the drop rule stays, so the IKE ports stay dark. Pinholes
//! from knocks expire by themselves; addresses in the `keep` sets (authenticated peers)
//! stay until the next [`Pinholes::install`], which replaces the table with an empty
//! one, or [`Pinholes::remove`], which deletes it. Only `remove` opens the ports to all.
//!
//! Every change is one nftables transaction, applied whole or not at all. The table
//! is installed, listed and removed by one `nft -j -f -` run each, from the
//! [`nftables`] crate's JSON schema (no shell, no string-built commands); the set
//! elements, which change with every knock and every IKE SA, over netlink from this
//! process ([`netlink`]).

mod netlink;

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use self::netlink::{Op, SetElem};
use nftables::expr::{CT, Elem, Expression, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{
    Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The table ikemesh owns, in the `inet` family, unless configured otherwise.
pub const DEFAULT_TABLE: &str = "ikemesh";
/// IKE's ports: 500, and 4500 for NAT traversal.
pub const IKE_PORTS: [u16; 2] = [500, 4500];
/// How long a knock keeps its pinhole open, unless configured otherwise (as fwknop).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Our input chain's priority: just before the usual `filter` (0) chains.
pub const DEFAULT_PRIORITY: i32 = -10;

const CHAIN: &str = "input";
const ALLOW4: &str = "allow4";
const ALLOW6: &str = "allow6";
const KEEP4: &str = "keep4";
const KEEP6: &str = "keep6";

/// Where and how the pinholes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinholeConfig {
    /// Name of our table in the `inet` family (letters, digits, `_` and `-`; at most
    /// 64 characters, starting with a letter).
    pub table: String,
    /// UDP ports kept dark: IKE's, [`IKE_PORTS`] by default.
    pub ports: Vec<u16>,
    /// The sets' default element timeout, for elements added without one.
    pub default_ttl: Duration,
    /// Priority of our input chain.
    pub priority: i32,
    /// The `nft` program to run (found on `PATH` by default).
    pub nft: PathBuf,
}

impl Default for PinholeConfig {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.into(),
            ports: IKE_PORTS.to_vec(),
            default_ttl: DEFAULT_TTL,
            priority: DEFAULT_PRIORITY,
            nft: PathBuf::from("nft"),
        }
    }
}

/// Why a change to our table did not happen (the table is as it was before).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The configuration cannot describe a table.
    #[error("invalid nftables pinhole configuration: {0}")]
    Config(String),
    /// `nft` could not be started.
    #[error("cannot run {program:?} ({source}): install the nftables package (Debian: nftables)")]
    Missing {
        /// The program we tried.
        program: OsString,
        /// Why it did not start.
        source: std::io::Error,
    },
    /// `nft` ran and refused.
    #[error("nft could not {action}: {message}")]
    Failed {
        /// What we asked for.
        action: &'static str,
        /// nft's own first line of complaint, with a hint where one helps.
        message: String,
    },
    /// `nft` answered with JSON we do not understand.
    #[error("nft's answer to {action} is not the JSON expected: {message}")]
    Output {
        /// What we asked for.
        action: &'static str,
        /// What was wrong with it.
        message: String,
    },
}

/// One change to the pinholes, for [`Pinholes::change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// [`Pinholes::allow`]: a knock's pinhole for this long.
    Allow(IpAddr, Duration),
    /// [`Pinholes::keep`].
    Keep(IpAddr),
    /// [`Pinholes::release`].
    Release(IpAddr),
    /// [`Pinholes::close`].
    Close(IpAddr),
}

impl Change {
    /// The address it is about.
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        match *self {
            Change::Allow(a, _) | Change::Keep(a) | Change::Release(a) | Change::Close(a) => a,
        }
    }
}

/// One address let through to the IKE ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pinhole {
    /// The source address.
    pub addr: IpAddr,
    /// Time left before it closes, as nft reports it (whole seconds); `None` for a
    /// kept peer, which stays until released.
    pub expires: Option<Duration>,
}

/// The pinhole manager: our table, and the operations on its sets.
///
/// Cheap to clone (the configuration is shared), so a clone can move into a blocking
/// task. Each operation is synchronous: [`install`](Self::install),
/// [`remove`](Self::remove) and [`allowed`](Self::allowed) run one `nft` process, the
/// element changes are netlink requests.
#[derive(Debug, Clone)]
pub struct Pinholes {
    config: Arc<PinholeConfig>,
}

impl Pinholes {
    /// A manager for `config`'s table. Nothing is changed until [`install`](Self::install).
    ///
    /// # Errors
    /// [`NftError::Config`] for a table name nft would not take, no ports, or a default
    /// timeout outside 1 s ..= `u32::MAX` s.
    pub fn new(config: PinholeConfig) -> Result<Self, NftError> {
        let name = &config.table;
        let valid_name = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(NftError::Config(format!(
                "table name {name:?}: use 1 to 64 letters, digits, '_' or '-', starting with a letter"
            )));
        }
        if config.ports.is_empty() {
            return Err(NftError::Config("no ports to keep dark".into()));
        }
        seconds(config.default_ttl)
            .ok_or_else(|| NftError::Config("the default timeout must be 1 s or more".into()))?;
        Ok(Self { config: Arc::new(config) })
    }

    /// The configuration.
    pub fn config(&self) -> &PinholeConfig {
        &self.config
    }

    /// Creates our table, or replaces it with an empty one if it exists, in one
    /// transaction: from then on the ports are dark except for addresses added later.
    /// Other tables are never touched. Idempotent.
    ///
    /// # Errors
    /// When nft is missing or refuses (for lack of `CAP_NET_ADMIN`, say).
    pub fn install(&self) -> Result<(), NftError> {
        let mut cmds = vec![
            NfCmd::Add(NfListObject::Table(self.table())),
            NfCmd::Delete(NfListObject::Table(self.table())),
            NfCmd::Add(NfListObject::Table(self.table())),
        ];
        let ttl = seconds(self.config.default_ttl);
        for (name, ty, timeout) in [
            (ALLOW4, SetType::Ipv4Addr, true),
            (ALLOW6, SetType::Ipv6Addr, true),
            (KEEP4, SetType::Ipv4Addr, false),
            (KEEP6, SetType::Ipv6Addr, false),
        ] {
            cmds.push(NfCmd::Add(NfListObject::Set(Box::new(Set {
                family: NfFamily::INet,
                table: self.config.table.as_str().into(),
                name: name.into(),
                handle: None,
                set_type: SetTypeValue::Single(ty),
                policy: None,
                flags: timeout.then(|| HashSet::from([SetFlag::Timeout])),
                elem: None,
                timeout: if timeout { ttl } else { None },
                gc_interval: None,
                size: None,
                comment: None,
            }))));
        }
        cmds.push(NfCmd::Add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: self.config.table.as_str().into(),
            name: CHAIN.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Input),
            prio: Some(self.config.priority),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        })));
        // Answers to our own requests: as initiator we send from port 500 to the peer's
        // 500, and its responses come back to our 500 before any SA exists.
        let established = Statement::Match(Match {
            left: Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            })),
            right: Expression::String("established".into()),
            op: Operator::IN,
        });
        cmds.push(self.rule(vec![self.ports_match(), established, Statement::Accept(None)]));
        for (proto, set) in [("ip", ALLOW4), ("ip", KEEP4), ("ip6", ALLOW6), ("ip6", KEEP6)] {
            let saddr = Statement::Match(Match {
                left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                    PayloadField { protocol: proto.into(), field: "saddr".into() },
                ))),
                right: Expression::String(format!("@{set}").into()),
                op: Operator::EQ,
            });
            cmds.push(self.rule(vec![self.ports_match(), saddr, Statement::Accept(None)]));
        }
        cmds.push(self.rule(vec![
            self.ports_match(),
            Statement::Counter(Counter::Anonymous(None)),
            Statement::Drop(None),
        ]));
        self.apply("install its table", cmds)
    }

    /// Opens a pinhole for `addr` for `ttl` (rounded up to whole seconds), or restarts
    /// the clock of an open one. IPv4-mapped IPv6 addresses count as IPv4.
    ///
    /// # Errors
    /// When nft fails, or our table is not installed.
    pub fn allow(&self, addr: IpAddr, ttl: Duration) -> Result<(), NftError> {
        self.change(&[Change::Allow(addr, ttl)])
    }

    /// Keeps `addr` let through with no time limit: a peer with a live IKE SA.
    /// Idempotent.
    ///
    /// # Errors
    /// When nft fails, or our table is not installed.
    pub fn keep(&self, addr: IpAddr) -> Result<(), NftError> {
        self.change(&[Change::Keep(addr)])
    }

    /// Ends [`keep`](Self::keep) for `addr` (its IKE SA is gone); a pinhole from a recent
    /// knock still runs out its time. Idempotent.
    ///
    /// # Errors
    /// When nft fails, or our table is not installed.
    pub fn release(&self, addr: IpAddr) -> Result<(), NftError> {
        self.change(&[Change::Release(addr)])
    }

    /// Closes every pinhole of `addr`, kept or knocked: the address is no member any
    /// more. Idempotent.
    ///
    /// # Errors
    /// When nft fails, or our table is not installed.
    pub fn close(&self, addr: IpAddr) -> Result<(), NftError> {
        self.change(&[Change::Close(addr)])
    }

    /// Makes `changes`, in order, in one nft transaction (one process): a burst of
    /// knocks or of IKE SAs coming up costs one nft run, not one each. All or none
    /// take effect.
    ///
    /// # Errors
    /// When nft fails, or our table is not installed.
    pub fn change(&self, changes: &[Change]) -> Result<(), NftError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut elems = Vec::with_capacity(changes.len() * 4);
        for c in changes {
            let addr = c.addr().to_canonical();
            let (keep, allow) = if addr.is_ipv4() { (KEEP4, ALLOW4) } else { (KEEP6, ALLOW6) };
            let add = |set, ttl: Option<u32>| SetElem {
                op: Op::Add(ttl.map(|s| u64::from(s) * 1000)),
                set,
                addr,
            };
            let delete = |set| SetElem { op: Op::Delete, set, addr };
            // An add before a delete makes the delete a no-op when the element is not
            // there: each change works whether or not its element exists.
            match *c {
                Change::Allow(_, ttl) => {
                    // Add, delete, add with the new timeout: always restarts its clock.
                    let ttl = seconds(ttl).unwrap_or(1);
                    elems.extend([add(allow, None), delete(allow), add(allow, Some(ttl))]);
                }
                Change::Keep(_) => elems.push(add(keep, None)),
                Change::Release(_) => elems.extend([add(keep, None), delete(keep)]),
                Change::Close(_) => {
                    for set in [keep, allow] {
                        elems.extend([add(set, None), delete(set)]);
                    }
                }
            }
        }
        let action = match changes {
            [Change::Allow(..)] => "open a pinhole",
            [Change::Keep(_)] => "keep a peer's pinhole",
            [Change::Release(_)] => "release a peer's pinhole",
            [Change::Close(_)] => "close a former member's pinholes",
            _ => "change pinholes",
        };
        netlink::apply(&self.config.table, &elems).map_err(|refused| {
            let table = &self.config.table;
            let message = match (refused.error.kind(), refused.message) {
                (_, Some(said)) => said,
                (std::io::ErrorKind::NotFound, None) => format!(
                    "table inet {table} or one of its sets is missing (is the table installed?)"
                ),
                (std::io::ErrorKind::PermissionDenied, None) => {
                    "operation not permitted (run as root, or with CAP_NET_ADMIN)".to_owned()
                }
                (_, None) => refused.error.to_string(),
            };
            NftError::Failed { action, message }
        })
    }

    /// Deletes our table: the IKE ports are open to all again. Idempotent; other tables
    /// are never touched.
    ///
    /// # Errors
    /// When nft fails.
    pub fn remove(&self) -> Result<(), NftError> {
        self.apply(
            "remove its table",
            vec![
                NfCmd::Add(NfListObject::Table(self.table())),
                NfCmd::Delete(NfListObject::Table(self.table())),
            ],
        )
    }

    /// Every address let through now: knocks with their time left, then kept peers.
    ///
    /// # Errors
    /// When nft fails, our table is not installed, or nft's JSON is not understood.
    pub fn allowed(&self) -> Result<Vec<Pinhole>, NftError> {
        let action = "list its table";
        let out = self.run(action, &["-j", "list", "table", "inet", &self.config.table], None)?;
        let doc: Nftables<'_> = serde_json::from_str(&out)
            .map_err(|e| NftError::Output { action, message: e.to_string() })?;
        let mut found = Vec::new();
        for object in doc.objects.iter() {
            let NfObject::ListObject(NfListObject::Set(set)) = object else { continue };
            let kept = matches!(set.name.as_ref(), KEEP4 | KEEP6);
            if !kept && !matches!(set.name.as_ref(), ALLOW4 | ALLOW6) {
                continue;
            }
            for item in set.elem.iter().flat_map(|e| e.iter()) {
                let (value, expires) = match item {
                    Expression::String(s) => (s.as_ref(), None),
                    Expression::Named(NamedExpression::Elem(Elem { val, expires, .. })) => {
                        let Expression::String(s) = val.as_ref() else {
                            return Err(unexpected(action, item));
                        };
                        (s.as_ref(), *expires)
                    }
                    _ => return Err(unexpected(action, item)),
                };
                let addr = value.parse().map_err(|_| unexpected(action, item))?;
                let expires = if kept {
                    None
                } else {
                    Some(Duration::from_secs(expires.map_or(0, u64::from)))
                };
                found.push(Pinhole { addr, expires });
            }
        }
        found.sort_by_key(|p| (p.expires.is_none(), p.addr));
        Ok(found)
    }

    fn table(&self) -> Table<'_> {
        Table { family: NfFamily::INet, name: self.config.table.as_str().into(), handle: None }
    }

    /// `udp dport { ports }`.
    fn ports_match(&self) -> Statement<'static> {
        let ports = self
            .config
            .ports
            .iter()
            .map(|&p| SetItem::Element(Expression::Number(u32::from(p))))
            .collect();
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                PayloadField { protocol: "udp".into(), field: "dport".into() },
            ))),
            right: Expression::Named(NamedExpression::Set(ports)),
            op: Operator::EQ,
        })
    }

    fn rule<'a>(&'a self, expr: Vec<Statement<'a>>) -> NfCmd<'a> {
        NfCmd::Add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: self.config.table.as_str().into(),
            chain: CHAIN.into(),
            expr: Cow::Owned(expr),
            ..Rule::default()
        }))
    }

    /// Applies `cmds` as one nft transaction.
    fn apply(&self, action: &'static str, cmds: Vec<NfCmd<'_>>) -> Result<(), NftError> {
        let doc = Nftables { objects: cmds.into_iter().map(NfObject::CmdObject).collect() };
        let json = serde_json::to_string(&doc)
            .map_err(|e| NftError::Output { action, message: e.to_string() })?;
        self.run(action, &["-j", "-f", "-"], Some(&json)).map(drop)
    }

    /// Runs nft with `args` (and `stdin`), capturing its output: nft never writes to our
    /// stderr, its complaint comes back in the error.
    fn run(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, NftError> {
        let program = &self.config.nft;
        let missing = |source| NftError::Missing { program: program.clone().into(), source };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(missing)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error means nft exited early; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let output = child.wait_with_output().map_err(missing)?;
        if output.status.success() {
            return String::from_utf8(output.stdout)
                .map_err(|e| NftError::Output { action, message: e.to_string() });
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        // nft prefixes where in its input it failed ("internal:0:0-0: Error: ...").
        let mut message = first.split_once("Error: ").map_or(first, |(_, m)| m).to_owned();
        if message.is_empty() {
            message = format!("{} with no message", output.status);
        }
        if message.contains("Operation not permitted") {
            message.push_str(" (run as root, or with CAP_NET_ADMIN)");
        } else if message.contains("No such file or directory") && action != "remove its table" {
            message.push_str(" (is the table installed?)");
        }
        Err(NftError::Failed { action, message })
    }
}

/// `d` in whole seconds, rounded up, if it is 1 s ..= `u32::MAX` s.
fn seconds(d: Duration) -> Option<u32> {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(s).ok().filter(|&s| s > 0)
}

fn unexpected(action: &'static str, item: &Expression<'_>) -> NftError {
    NftError::Output { action, message: format!("unexpected set element {item:?}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_configurations() {
        for table in ["", "1abc", "a b", "a;b", &"x".repeat(65)] {
            let config = PinholeConfig { table: table.into(), ..PinholeConfig::default() };
            assert!(matches!(Pinholes::new(config), Err(NftError::Config(_))), "{table:?}");
        }
        let config = PinholeConfig { ports: vec![], ..PinholeConfig::default() };
        assert!(matches!(Pinholes::new(config), Err(NftError::Config(_))));
        let config = PinholeConfig { default_ttl: Duration::ZERO, ..PinholeConfig::default() };
        assert!(matches!(Pinholes::new(config), Err(NftError::Config(_))));
        assert!(Pinholes::new(PinholeConfig::default()).is_ok());
    }

    #[test]
    fn timeouts_round_up_to_seconds() {
        assert_eq!(seconds(Duration::from_millis(1)), Some(1));
        assert_eq!(seconds(Duration::from_millis(2001)), Some(3));
        assert_eq!(seconds(Duration::from_secs(30)), Some(30));
        assert_eq!(seconds(Duration::ZERO), None);
        assert_eq!(seconds(Duration::from_secs(u64::from(u32::MAX) + 1)), None);
    }

    #[test]
    fn a_missing_nft_is_one_clear_line() {
        let config = PinholeConfig { nft: "/nonexistent/nft".into(), ..PinholeConfig::default() };
        let err = Pinholes::new(config).unwrap().install().unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, NftError::Missing { .. }));
        assert!(line.contains("/nonexistent/nft") && line.contains("nftables package"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn an_nft_refusal_is_one_line() {
        // `false` stands in for an nft that fails without a word.
        let config = PinholeConfig { nft: "false".into(), ..PinholeConfig::default() };
        let err = Pinholes::new(config).unwrap().remove().unwrap_err();
        assert!(matches!(err, NftError::Failed { action: "remove its table", .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}
