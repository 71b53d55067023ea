//! The kernel boundary of ikemesh: the XFRM framework over netlink.
//!
//! Nothing else in ikemesh talks to `NETLINK_XFRM`. [`Xfrm`] installs, updates, reads
//! and deletes ESP security associations (SAD) and policies (SPD), many per send
//! ([`Xfrm::add_sas`], [`Xfrm::add_policies`]) with each entry's error reported against
//! that entry; switches a policy's level between `use` and `require` in place
//! ([`Xfrm::set_level`], one atomic `XFRM_MSG_UPDPOLICY`, so there is no instant without
//! a policy); [`Events`] turns the kernel's ACQUIRE, EXPIRE, SA and POLICY multicast
//! messages into a typed tokio stream; and [`Xfrm::probe`] finds out what the kernel can
//! do, so that a kernel without ESP is reported in one clear line
//! ([`Error::EspUnsupported`]) rather than as `Requested type not found`.
//!
//! # Ownership
//!
//! Everything ikemesh installs is recognisable: SAs by a reqid in [`OWNED_REQIDS`],
//! policies by a priority in [`OWNED_PRIORITIES`]. Both ranges are
//! `0x4D00_0000..=0x4DFF_FFFF`. [`Xfrm`] refuses to install an entry outside them
//! ([`Error::NotOurs`]), and [`Xfrm::flush_ours`] deletes only entries inside them, so
//! what an operator or another IKE daemon put in the kernel is never touched.
//!
//! # Network namespaces
//!
//! [`Xfrm::open_in`] and [`Events::open_in`] work in the namespace at a path such as
//! `/run/netns/NAME`: the socket is created there and keeps to it.
//!
//! Unsafe code is denied in this crate but for one function in `fd.rs`, which hands the
//! event socket to tokio (see its `SAFETY` comment); the namespace switch and socket
//! options go through nix's safe wrappers.

mod convert;
mod error;
mod event;
mod fd;
mod model;
mod probe;
mod socket;

pub use error::Error;
pub use event::{Event, Events, Groups};
pub use model::{
    AEAD_CHACHA20_POLY1305, AEAD_GCM, AUTHENC_CBC_SHA256, Action, Crypto, Direction, Encap, Key,
    Level, Lifetime, Mark, Mode, OWNED_PRIORITIES, OWNED_REQIDS, Policy, PolicyId, PolicyInfo, Sa,
    SaId, SaInfo, Selector, Template, is_owned_priority, is_owned_reqid,
};
pub use probe::Capabilities;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_xfrm::XfrmMessage;
use nix::errno::Errno;
use std::path::Path;

/// Result of an XFRM operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many SAs and policies [`Xfrm::flush_ours`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flushed {
    /// SAs deleted.
    pub sas: usize,
    /// Policies deleted.
    pub policies: usize,
}

/// A handle on the kernel's XFRM tables of one network namespace.
///
/// Calls block briefly (one netlink round trip, or one per 256 entries of a batch).
pub struct Xfrm {
    nl: socket::Netlink,
}

impl std::fmt::Debug for Xfrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Xfrm")
    }
}

fn describe_sa(verb: &str, id: &SaId) -> String {
    format!("{verb} SA {} -> {} spi {:#010x}", id.src, id.dst, id.spi)
}

fn describe_policy(verb: &str, id: &PolicyId) -> String {
    format!("{verb} policy {:?} {}", id.dir, id.selector)
}

impl Xfrm {
    /// Opens the XFRM tables of the caller's network namespace.
    pub fn open() -> Result<Self> {
        Ok(Self { nl: socket::Netlink::open(None)? })
    }

    /// Opens the XFRM tables of the network namespace at `netns`.
    pub fn open_in(netns: &Path) -> Result<Self> {
        Ok(Self { nl: socket::Netlink::open(Some(netns))? })
    }

    /// Maps an SA add/update failure to the error an operator can act on.
    fn sa_error(&mut self, sa: &Sa, verb: &str, errno: Errno) -> Error {
        match errno {
            Errno::EPROTONOSUPPORT => error::esp_missing(sa.dst.is_ipv6()),
            // The kernel checks algorithms before the ESP type, so a missing algorithm
            // may hide a missing ESP: report the root cause.
            Errno::ENOSYS => match self.esp_present(sa.dst.is_ipv6()) {
                Some(false) => error::esp_missing(sa.dst.is_ipv6()),
                _ => error::algorithm_missing(sa.crypto.kernel_name()),
            },
            errno => Error::from_errno(describe_sa(verb, &sa.id()), errno),
        }
    }

    // ---- SAs ----

    /// Adds an SA; fails with [`Error::Exists`] if one with its ID is there.
    pub fn add_sa(&mut self, sa: &Sa) -> Result<()> {
        self.add_sas(std::slice::from_ref(sa))?.pop().unwrap_or(Ok(()))
    }

    /// Adds many SAs, as few sends as possible; one result per SA, in order. The outer
    /// error is for trouble with the socket itself.
    pub fn add_sas(&mut self, sas: &[Sa]) -> Result<Vec<Result<()>>> {
        self.modify_sas(sas, "add")
    }

    /// Replaces an SA with the same ID (or adds it).
    pub fn update_sa(&mut self, sa: &Sa) -> Result<()> {
        self.modify_sas(std::slice::from_ref(sa), "update")?.pop().unwrap_or(Ok(()))
    }

    fn modify_sas(&mut self, sas: &[Sa], verb: &str) -> Result<Vec<Result<()>>> {
        let checked: Vec<Result<()>> = sas.iter().map(Sa::check).collect();
        let add = verb == "add";
        let requests = sas.iter().zip(&checked).filter(|(_, c)| c.is_ok()).map(|(sa, _)| {
            let msg = convert::sa_modify(sa);
            if add {
                (XfrmMessage::AddSa(msg), NLM_F_CREATE | NLM_F_EXCL)
            } else {
                (XfrmMessage::UpdateSa(msg), 0)
            }
        });
        let mut acks = self.nl.batch(requests)?.into_iter();
        let mut out = Vec::with_capacity(sas.len());
        for (sa, c) in sas.iter().zip(checked) {
            out.push(match c {
                Err(e) => Err(e),
                Ok(()) => match acks.next().unwrap_or(Err(Errno::EIO)) {
                    Ok(()) => Ok(()),
                    Err(errno) => Err(self.sa_error(sa, verb, errno)),
                },
            });
        }
        Ok(out)
    }

    /// Deletes an SA.
    pub fn delete_sa(&mut self, id: &SaId) -> Result<()> {
        self.delete_sas(std::slice::from_ref(id))?.pop().unwrap_or(Ok(()))
    }

    /// Deletes many SAs; one result per SA, in order.
    pub fn delete_sas(&mut self, ids: &[SaId]) -> Result<Vec<Result<()>>> {
        let requests = ids.iter().map(|id| (XfrmMessage::DeleteSa(convert::sa_del_get(id)), 0));
        let acks = self.nl.batch(requests)?;
        Ok(ids
            .iter()
            .zip(acks)
            .map(|(id, a)| a.map_err(|e| Error::from_errno(describe_sa("delete", id), e)))
            .collect())
    }

    /// Reads one SA, with its counters.
    pub fn get_sa(&mut self, id: &SaId) -> Result<SaInfo> {
        let reply = self
            .nl
            .get(XfrmMessage::GetSa(convert::sa_del_get(id)))?
            .map_err(|e| Error::from_errno(describe_sa("get", id), e))?;
        match reply {
            XfrmMessage::AddSa(m) | XfrmMessage::UpdateSa(m) => {
                convert::sa_info(&m.user_sa_info, &m.nlas)
                    .ok_or_else(|| Error::Decode("GETSA answered with a non-ESP SA".into()))
            }
            other => {
                Err(Error::Decode(format!("GETSA answered with message {}", other.message_type())))
            }
        }
    }

    /// Every ESP SA in the namespace, ours or not.
    pub fn dump_sas(&mut self) -> Result<Vec<SaInfo>> {
        let dump = netlink_packet_xfrm::state::GetDumpMessage::default();
        let entries = self.nl.dump(XfrmMessage::GetDumpSa(dump))?;
        Ok(entries
            .iter()
            .filter_map(|m| match m {
                XfrmMessage::AddSa(m) | XfrmMessage::UpdateSa(m) => {
                    convert::sa_info(&m.user_sa_info, &m.nlas)
                }
                _ => None,
            })
            .collect())
    }

    // ---- Policies ----

    /// Adds a policy; fails with [`Error::Exists`] if one with its ID is there.
    pub fn add_policy(&mut self, policy: &Policy) -> Result<()> {
        self.add_policies(std::slice::from_ref(policy))?.pop().unwrap_or(Ok(()))
    }

    /// Adds many policies, as few sends as possible; one result per policy, in order.
    pub fn add_policies(&mut self, policies: &[Policy]) -> Result<Vec<Result<()>>> {
        self.modify_policies(policies, true)
    }

    /// Replaces the policy with the same ID in one step (or adds it). The kernel swaps
    /// the entry atomically: no packet ever sees the table without it.
    pub fn update_policy(&mut self, policy: &Policy) -> Result<()> {
        self.modify_policies(std::slice::from_ref(policy), false)?.pop().unwrap_or(Ok(()))
    }

    /// Replaces many policies; one result per policy, in order.
    pub fn update_policies(&mut self, policies: &[Policy]) -> Result<Vec<Result<()>>> {
        self.modify_policies(policies, false)
    }

    fn modify_policies(&mut self, policies: &[Policy], add: bool) -> Result<Vec<Result<()>>> {
        let checked: Vec<Result<()>> = policies.iter().map(Policy::check).collect();
        let requests = policies.iter().zip(&checked).filter(|(_, c)| c.is_ok()).map(|(p, _)| {
            let msg = convert::policy_modify(p);
            if add {
                (XfrmMessage::AddPolicy(msg), NLM_F_CREATE | NLM_F_EXCL)
            } else {
                (XfrmMessage::UpdatePolicy(msg), 0)
            }
        });
        let mut acks = self.nl.batch(requests)?.into_iter();
        let verb = if add { "add" } else { "update" };
        Ok(policies
            .iter()
            .zip(checked)
            .map(|(p, c)| {
                c?;
                acks.next()
                    .unwrap_or(Err(Errno::EIO))
                    .map_err(|e| Error::from_errno(describe_policy(verb, &p.id()), e))
            })
            .collect())
    }

    /// Deletes a policy.
    pub fn delete_policy(&mut self, id: &PolicyId) -> Result<()> {
        self.delete_policies(std::slice::from_ref(id))?.pop().unwrap_or(Ok(()))
    }

    /// Deletes many policies; one result per policy, in order.
    pub fn delete_policies(&mut self, ids: &[PolicyId]) -> Result<Vec<Result<()>>> {
        let requests =
            ids.iter().map(|id| (XfrmMessage::DeletePolicy(convert::policy_del_get(id)), 0));
        let acks = self.nl.batch(requests)?;
        Ok(ids
            .iter()
            .zip(acks)
            .map(|(id, a)| a.map_err(|e| Error::from_errno(describe_policy("delete", id), e)))
            .collect())
    }

    /// Reads one policy.
    pub fn get_policy(&mut self, id: &PolicyId) -> Result<PolicyInfo> {
        let reply = self
            .nl
            .get(XfrmMessage::GetPolicy(convert::policy_del_get(id)))?
            .map_err(|e| Error::from_errno(describe_policy("get", id), e))?;
        match reply {
            XfrmMessage::AddPolicy(m) | XfrmMessage::UpdatePolicy(m) => {
                Ok(convert::policy_info(&m.user_policy_info, &m.nlas))
            }
            other => Err(Error::Decode(format!(
                "GETPOLICY answered with message {}",
                other.message_type()
            ))),
        }
    }

    /// Every policy in the namespace (main policy type), ours or not.
    pub fn dump_policies(&mut self) -> Result<Vec<PolicyInfo>> {
        let dump = netlink_packet_xfrm::policy::DelGetMessage::default();
        let entries = self.nl.dump(XfrmMessage::GetPolicy(dump))?;
        Ok(entries
            .iter()
            .filter_map(|m| match m {
                XfrmMessage::AddPolicy(m) | XfrmMessage::UpdatePolicy(m) => {
                    Some(convert::policy_info(&m.user_policy_info, &m.nlas))
                }
                _ => None,
            })
            .collect())
    }

    /// Switches a protecting policy of ours between `use` and `require`, in place.
    pub fn set_level(&mut self, id: &PolicyId, level: Level) -> Result<()> {
        let current = self.get_policy(id)?;
        let Action::Protect(mut template) = current.action else {
            return Err(Error::Invalid(format!(
                "{} does not protect traffic, so it has no level",
                describe_policy("set level of", id)
            )));
        };
        template.level = level;
        self.update_policy(&Policy {
            selector: current.id.selector,
            dir: current.id.dir,
            priority: current.priority,
            action: Action::Protect(template),
            mark: current.id.mark,
        })
    }

    // ---- Ownership ----

    /// Deletes every SA and policy that ikemesh installed, and nothing else.
    pub fn flush_ours(&mut self) -> Result<Flushed> {
        let policies: Vec<PolicyId> =
            self.dump_policies()?.into_iter().filter(PolicyInfo::is_ours).map(|p| p.id).collect();
        let sas: Vec<SaId> =
            self.dump_sas()?.into_iter().filter(SaInfo::is_ours).map(|s| s.id).collect();
        // Policies first: with the SAs gone but a `require` policy left, traffic would
        // stop; the other way round it is merely unprotected for an instant, as asked.
        let mut flushed = Flushed::default();
        for r in self.delete_policies(&policies)? {
            match r {
                Ok(()) => flushed.policies += 1,
                Err(Error::NotFound { .. }) => {} // gone meanwhile
                Err(e) => return Err(e),
            }
        }
        for r in self.delete_sas(&sas)? {
            match r {
                Ok(()) => flushed.sas += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(flushed)
    }
}
