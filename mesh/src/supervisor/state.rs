//! What the supervisor persists: the rollout (mesh target, per-peer overrides and
//! current levels), the members added or removed with `meshctl`, and the child SAs it
//! put in the kernel, so that a restarted daemon adopts them instead of tearing them
//! down. The shell writes it ([`crate::daemon::state::StateDir`]).

use crate::rollout::Snapshot;
use policy::Member;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the daemon persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The rollout: mesh target, per-peer overrides and current levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Snapshot>,
    /// Members added with `meshctl peer add` (beyond the configuration's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<Member>,
    /// Members of the configuration removed with `meshctl peer rm`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The configuration's `mesh.level` when it was last applied: a configuration that
    /// says another level (the operator changed it, as a two-pass deployment does) sets
    /// the rollout target; an unchanged one leaves the target `meshctl` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_level: Option<policy::Level>,
    /// The child SAs in the kernel, by peer: (inbound SPI, outbound SPI).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<String, Vec<(u32, u32)>>,
}
