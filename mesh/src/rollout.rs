//! The rollout state machine: how far each peer may go towards its target level.
//!
//! Towards each peer, the daemon protects traffic at one [`Level`]: `off` (bypass, no
//! ESP), `use` (ESP where an SA exists, plaintext still accepted) or `require` (only
//! ESP). The operator sets a mesh-wide target and, optionally, a per-peer override
//! (`meshctl rollout set off|use|require [--peer NAME]`). This module decides the
//! *current* level towards each peer, the one the daemon installs in the kernel. It is
//! pure: no IO, no clock; the daemon feeds it events and calls [`Rollout::step`] after
//! each, then installs the returned [`Change`]s.
//!
//! The rules:
//!
//! - The effective target of a peer is its override, else the mesh target.
//! - Going down is always allowed and immediate: when the current level is above the
//!   target, it drops to the target in one step (`require` to `off` included).
//! - Going up to `use` is allowed immediately.
//! - Going up to `require` is allowed only when the peer's child SA is up *and* the peer
//!   has announced (over IKE, see [`LEVEL_NOTIFY`]) that its own current level towards
//!   us is at least `use`: requiring ESP before the other side sends it would cut the
//!   pair off. Until then the peer waits at `use`, and the report says why in one line.
//!   `off` to `require` in one step is fine when both conditions hold.
//! - `require` is sticky: once there (with a `require` target), losing the child SA or
//!   a new announcement does not demote it; the daemon re-establishes SAs instead. Only
//!   a lower target demotes.
//! - A peer that joins ([`Rollout::add_peer`]) starts at the lower of its target and
//!   `use`, even in a mesh at `require`, and is promoted when it is safe.
//! - After a daemon restart, [`Rollout::restore`] puts each peer back at the current
//!   level it had, so that a restart under `require` does not fall back to `use`.
//! - Announcements belong to an IKE SA: [`Rollout::forget_announcement`] drops one when
//!   the IKE SA goes away, since the next IKE SA announces again.

use crate::control::proto::{RolloutPeer, RolloutReport};
use policy::Level;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The IKE Notify message type (private use range, RFC 7296 section 3.10.1) that carries
/// a node's current level towards the receiving peer; its data is [`encode_level`].
pub const LEVEL_NOTIFY: u16 = 40969;

/// The version byte of the [`LEVEL_NOTIFY`] data.
const LEVEL_NOTIFY_VERSION: u8 = 1;

/// The data of a [`LEVEL_NOTIFY`]: two bytes, the version (1), then the level (`off` 0,
/// `use` 1, `require` 2).
pub fn encode_level(level: Level) -> Vec<u8> {
    let value = match level {
        Level::Off => 0,
        Level::Use => 1,
        Level::Require => 2,
    };
    vec![LEVEL_NOTIFY_VERSION, value]
}

/// Reads the data of a [`LEVEL_NOTIFY`], see [`encode_level`]; the error is one line
/// (wrong length, unknown version, unknown level).
pub fn decode_level(data: &[u8]) -> Result<Level, String> {
    let [version, value] = data else {
        return Err(format!("level notify: expected 2 bytes, got {}", data.len()));
    };
    if *version != LEVEL_NOTIFY_VERSION {
        return Err(format!(
            "level notify: unsupported version {version} (expected {LEVEL_NOTIFY_VERSION})"
        ));
    }
    match value {
        0 => Ok(Level::Off),
        1 => Ok(Level::Use),
        2 => Ok(Level::Require),
        other => Err(format!("level notify: unknown level {other} (expected 0, 1 or 2)")),
    }
}

/// One peer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerState {
    /// The level installed towards it.
    current: Level,
    /// The operator's override of the mesh target.
    target: Option<Level>,
    /// Whether a child SA with it is up.
    child_up: bool,
    /// The level it announced over its current IKE SA.
    announced: Option<Level>,
}

impl PeerState {
    fn new(current: Level, target: Option<Level>) -> Self {
        PeerState { current, target, child_up: false, announced: None }
    }

    /// Why it may not go to `require` now; `None` when it may.
    fn require_blocked(&self) -> Option<&'static str> {
        if !self.child_up {
            return Some("waiting for a child SA with the peer");
        }
        match self.announced {
            None => Some("waiting for the peer to announce its level"),
            Some(Level::Off) => Some("the peer is at off towards us"),
            Some(Level::Use | Level::Require) => None,
        }
    }

    /// The level it may be at now, given its effective target.
    fn allowed(&self, target: Level) -> Level {
        if self.current >= target {
            // Down (or staying) is always allowed; this keeps `require` sticky.
            return target;
        }
        match target {
            Level::Require if self.require_blocked().is_some() => Level::Use,
            _ => target,
        }
    }
}

/// The rollout of the mesh: the target, and each peer's current level and what it
/// waits for. See the [module docs](self) for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The mesh-wide target.
    target: Level,
    /// Every peer, by name.
    peers: BTreeMap<String, PeerState>,
    /// What changed since the last [`Rollout::step`]: the peers to look at again, or
    /// all of them (the target changed). A step looks only at these, so that an event
    /// of one peer costs the same with ten peers or ten thousand.
    touched: Touched,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Touched {
    All,
    Peers(BTreeSet<String>),
}

impl Rollout {
    fn touch(&mut self, peer: &str) {
        if let Touched::Peers(set) = &mut self.touched
            && !set.contains(peer)
        {
            set.insert(peer.to_owned());
        }
    }
}

/// A peer's current level moved; the daemon installs `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The peer's name.
    pub peer: String,
    /// Its level before.
    pub from: Level,
    /// Its level now.
    pub to: Level,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.peer, self.from, self.to)
    }
}

/// What the daemon saves in its state directory, to [`Rollout::restore`] after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The mesh-wide target.
    pub target: Level,
    /// Every peer, by name.
    pub peers: BTreeMap<String, PeerSnapshot>,
}

/// One peer in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSnapshot {
    /// Its current level.
    pub current: Level,
    /// Its override of the mesh target, if any.
    #[serde(default)]
    pub target: Option<Level>,
}

impl Rollout {
    /// A rollout with no peers and the given mesh-wide target.
    pub fn new(target: Level) -> Self {
        Rollout { target, peers: BTreeMap::new(), touched: Touched::All }
    }

    /// The mesh-wide target.
    pub fn target(&self) -> Level {
        self.target
    }

    /// Sets the mesh-wide target; [`Rollout::step`] then moves the peers.
    pub fn set_target(&mut self, level: Level) {
        self.target = level;
        self.touched = Touched::All;
    }

    /// Sets a peer's override of the mesh target, or clears it with `None`;
    /// [`Rollout::step`] then moves the peer. Fails, in one line, for an unknown peer.
    pub fn set_peer_target(&mut self, peer: &str, level: Option<Level>) -> Result<(), String> {
        let state = self.peers.get_mut(peer).ok_or_else(|| format!("no peer named {peer}"))?;
        state.target = level;
        self.touch(peer);
        Ok(())
    }

    /// Adds a joining peer, with no override, at the lower of the mesh target and `use`
    /// (it is promoted to `require` when safe). Does nothing if the peer is known.
    pub fn add_peer(&mut self, peer: &str) {
        if !self.peers.contains_key(peer) {
            let current = self.target.min(Level::Use);
            self.peers.insert(peer.to_owned(), PeerState::new(current, None));
            self.touch(peer);
        }
    }

    /// The rollout saved before a restart: the same target, every peer at its saved
    /// current level and override, with no child SA and no announcement yet.
    pub fn restore(snapshot: &Snapshot) -> Self {
        Rollout {
            target: snapshot.target,
            peers: snapshot
                .peers
                .iter()
                .map(|(name, peer)| (name.clone(), PeerState::new(peer.current, peer.target)))
                .collect(),
            touched: Touched::All,
        }
    }

    /// Forgets a peer (it left the mesh). Does nothing for an unknown peer.
    pub fn remove_peer(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// Records whether a child SA with the peer is up. Ignored for an unknown peer.
    pub fn set_child_up(&mut self, peer: &str, up: bool) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.child_up = up;
            self.touch(peer);
        }
    }

    /// Records the level the peer announced (its current level towards us). Ignored for
    /// an unknown peer.
    pub fn announced(&mut self, peer: &str, level: Level) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.announced = Some(level);
            self.touch(peer);
        }
    }

    /// Forgets the peer's announcement (its IKE SA went away; the next one announces
    /// again). Ignored for an unknown peer.
    pub fn forget_announcement(&mut self, peer: &str) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.announced = None;
            self.touch(peer);
        }
    }

    /// The level installed towards the peer; `None` for an unknown peer.
    pub fn current(&self, peer: &str) -> Option<Level> {
        self.peers.get(peer).map(|state| state.current)
    }

    /// The peer's effective target (its override, else the mesh target); `None` for an
    /// unknown peer.
    pub fn peer_target(&self, peer: &str) -> Option<Level> {
        self.peers.get(peer).map(|state| self.effective(state))
    }

    /// Applies every transition allowed now and returns them, sorted by peer name; empty
    /// when nothing moved. Call it after every event.
    pub fn step(&mut self) -> Vec<Change> {
        let mesh_target = self.target;
        let mut changes = Vec::new();
        let mut step = |name: &String, state: &mut PeerState| {
            let to = state.allowed(state.target.unwrap_or(mesh_target));
            if to != state.current {
                changes.push(Change { peer: name.clone(), from: state.current, to });
                state.current = to;
            }
        };
        match std::mem::replace(&mut self.touched, Touched::Peers(BTreeSet::new())) {
            Touched::All => self.peers.iter_mut().for_each(|(name, state)| step(name, state)),
            Touched::Peers(names) => {
                for name in names {
                    if let Some(state) = self.peers.get_mut(&name) {
                        step(&name, state);
                    }
                }
            }
        }
        changes
    }

    /// The rollout for `meshctl rollout status`: per peer (sorted by name) its target,
    /// current level, announcement, and why it is short of its target.
    pub fn report(&self) -> RolloutReport {
        RolloutReport {
            target: self.target,
            peers: self
                .peers
                .iter()
                .map(|(name, state)| {
                    let target = self.effective(state);
                    RolloutPeer {
                        name: name.clone(),
                        target,
                        current: state.current,
                        announced: state.announced,
                        blocked: blocked(state, target),
                    }
                })
                .collect(),
        }
    }

    /// What to save for [`Rollout::restore`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            target: self.target,
            peers: self
                .peers
                .iter()
                .map(|(name, state)| {
                    (name.clone(), PeerSnapshot { current: state.current, target: state.target })
                })
                .collect(),
        }
    }

    /// The peers' names, sorted.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.peers.keys().map(String::as_str)
    }

    fn effective(&self, state: &PeerState) -> Level {
        state.target.unwrap_or(self.target)
    }
}

/// Why a peer's current level is short of its target, in one line; `None` when it is
/// not short.
fn blocked(state: &PeerState, target: Level) -> Option<String> {
    if state.current >= target {
        return None;
    }
    if target == Level::Require
        && let Some(reason) = state.require_blocked()
    {
        return Some(reason.to_owned());
    }
    Some(format!("promotion to {target} is due at the next step"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(peer: &str, from: Level, to: Level) -> Change {
        Change { peer: peer.to_owned(), from, to }
    }

    /// A rollout with the given target and peers, stepped once.
    fn mesh(target: Level, peers: &[&str]) -> Rollout {
        let mut rollout = Rollout::new(target);
        for peer in peers {
            rollout.add_peer(peer);
        }
        rollout.step();
        rollout
    }

    fn ready(rollout: &mut Rollout, peer: &str) {
        rollout.set_child_up(peer, true);
        rollout.announced(peer, Level::Use);
    }

    fn blocked_of(rollout: &Rollout, peer: &str) -> Option<String> {
        rollout.report().peers.into_iter().find(|p| p.name == peer).and_then(|p| p.blocked)
    }

    #[test]
    fn new_rollout_is_empty() {
        let rollout = Rollout::new(Level::Use);
        assert_eq!(rollout.target(), Level::Use);
        assert_eq!(rollout.peers().count(), 0);
        assert_eq!(rollout.current("a"), None);
        assert_eq!(rollout.peer_target("a"), None);
    }

    #[test]
    fn add_peer_starts_at_target_up_to_use() {
        for (target, start) in
            [(Level::Off, Level::Off), (Level::Use, Level::Use), (Level::Require, Level::Use)]
        {
            let mut rollout = Rollout::new(target);
            rollout.add_peer("a");
            assert_eq!(rollout.current("a"), Some(start), "target {target}");
            assert_eq!(rollout.peer_target("a"), Some(target));
        }
    }

    #[test]
    fn add_peer_twice_is_a_no_op() {
        let mut rollout = mesh(Level::Require, &["a"]);
        ready(&mut rollout, "a");
        rollout.step();
        assert_eq!(rollout.current("a"), Some(Level::Require));
        rollout.add_peer("a");
        assert_eq!(rollout.current("a"), Some(Level::Require));
        assert!(rollout.step().is_empty());
    }

    #[test]
    fn going_up_to_use_is_immediate() {
        let mut rollout = mesh(Level::Off, &["a", "b"]);
        assert_eq!(rollout.current("a"), Some(Level::Off));
        rollout.set_target(Level::Use);
        assert_eq!(
            rollout.step(),
            vec![change("a", Level::Off, Level::Use), change("b", Level::Off, Level::Use),]
        );
        assert!(rollout.step().is_empty());
    }

    #[test]
    fn require_waits_for_the_child_sa() {
        let mut rollout = mesh(Level::Use, &["a"]);
        rollout.announced("a", Level::Use);
        rollout.set_target(Level::Require);
        assert!(rollout.step().is_empty());
        assert_eq!(rollout.current("a"), Some(Level::Use));
        assert_eq!(
            blocked_of(&rollout, "a").as_deref(),
            Some("waiting for a child SA with the peer")
        );
        rollout.set_child_up("a", true);
        assert_eq!(rollout.step(), vec![change("a", Level::Use, Level::Require)]);
        assert_eq!(blocked_of(&rollout, "a"), None);
    }

    #[test]
    fn require_waits_for_the_announcement() {
        let mut rollout = mesh(Level::Require, &["a"]);
        rollout.set_child_up("a", true);
        assert!(rollout.step().is_empty());
        assert_eq!(rollout.current("a"), Some(Level::Use));
        assert_eq!(
            blocked_of(&rollout, "a").as_deref(),
            Some("waiting for the peer to announce its level")
        );
        rollout.announced("a", Level::Require);
        assert_eq!(rollout.step(), vec![change("a", Level::Use, Level::Require)]);
    }

    #[test]
    fn require_waits_while_the_peer_is_off() {
        let mut rollout = mesh(Level::Require, &["a"]);
        rollout.set_child_up("a", true);
        rollout.announced("a", Level::Off);
        assert!(rollout.step().is_empty());
        assert_eq!(rollout.current("a"), Some(Level::Use));
        assert_eq!(blocked_of(&rollout, "a").as_deref(), Some("the peer is at off towards us"));
        rollout.announced("a", Level::Use);
        assert_eq!(rollout.step(), vec![change("a", Level::Use, Level::Require)]);
    }

    #[test]
    fn off_to_require_in_one_step_when_safe() {
        let mut rollout = mesh(Level::Off, &["a"]);
        ready(&mut rollout, "a");
        rollout.set_target(Level::Require);
        assert_eq!(rollout.step(), vec![change("a", Level::Off, Level::Require)]);
    }

    #[test]
    fn off_to_require_stops_at_use_when_not_safe() {
        let mut rollout = mesh(Level::Off, &["a"]);
        rollout.set_target(Level::Require);
        assert_eq!(rollout.step(), vec![change("a", Level::Off, Level::Use)]);
        assert_eq!(
            blocked_of(&rollout, "a").as_deref(),
            Some("waiting for a child SA with the peer")
        );
    }

    #[test]
    fn require_is_sticky() {
        let mut rollout = mesh(Level::Require, &["a"]);
        ready(&mut rollout, "a");
        rollout.step();
        assert_eq!(rollout.current("a"), Some(Level::Require));

        rollout.set_child_up("a", false);
        assert!(rollout.step().is_empty());
        rollout.forget_announcement("a");
        assert!(rollout.step().is_empty());
        rollout.announced("a", Level::Off);
        assert!(rollout.step().is_empty());
        assert_eq!(rollout.current("a"), Some(Level::Require));
        assert_eq!(blocked_of(&rollout, "a"), None);
    }

    #[test]
    fn lower_target_demotes_require() {
        let mut rollout = mesh(Level::Require, &["a"]);
        ready(&mut rollout, "a");
        rollout.step();
        rollout.set_target(Level::Use);
        assert_eq!(rollout.step(), vec![change("a", Level::Require, Level::Use)]);
        // Back to require: the conditions are checked again (they still hold here).
        rollout.set_target(Level::Require);
        assert_eq!(rollout.step(), vec![change("a", Level::Use, Level::Require)]);
    }

    #[test]
    fn require_to_off_in_one_step() {
        let mut rollout = mesh(Level::Require, &["a"]);
        ready(&mut rollout, "a");
        rollout.step();
        rollout.set_target(Level::Off);
        assert_eq!(rollout.step(), vec![change("a", Level::Require, Level::Off)]);
        assert_eq!(rollout.current("a"), Some(Level::Off));
    }

    #[test]
    fn going_down_is_immediate_even_without_sas() {
        let mut rollout = mesh(Level::Use, &["a"]);
        rollout.set_target(Level::Off);
        assert_eq!(rollout.step(), vec![change("a", Level::Use, Level::Off)]);
    }

    #[test]
    fn joining_peer_under_require() {
        let mut rollout = mesh(Level::Require, &["a"]);
        ready(&mut rollout, "a");
        rollout.step();

        rollout.add_peer("b");
        assert_eq!(rollout.current("b"), Some(Level::Use));
        assert!(rollout.step().is_empty());
        assert_eq!(rollout.current("b"), Some(Level::Use));
        assert_eq!(
            blocked_of(&rollout, "b").as_deref(),
            Some("waiting for a child SA with the peer")
        );
        rollout.set_child_up("b", true);
        assert!(rollout.step().is_empty());
        rollout.announced("b", Level::Use);
        assert_eq!(rollout.step(), vec![change("b", Level::Use, Level::Require)]);
        assert_eq!(rollout.current("a"), Some(Level::Require));
    }

    #[test]
    fn override_set_and_cleared() {
        let mut rollout = mesh(Level::Use, &["a", "b"]);
        ready(&mut rollout, "a");
        ready(&mut rollout, "b");

        rollout.set_peer_target("a", Some(Level::Require)).unwrap();
        assert_eq!(rollout.peer_target("a"), Some(Level::Require));
        assert_eq!(rollout.peer_target("b"), Some(Level::Use));
        assert_eq!(rollout.step(), vec![change("a", Level::Use, Level::Require)]);

        // A lower override below a require mesh.
        rollout.set_target(Level::Require);
        rollout.set_peer_target("b", Some(Level::Off)).unwrap();
        assert_eq!(rollout.step(), vec![change("b", Level::Use, Level::Off)]);
        assert_eq!(rollout.current("b"), Some(Level::Off));

        // Cleared: back to the mesh target, require, in one step since it is safe.
        rollout.set_peer_target("b", None).unwrap();
        assert_eq!(rollout.peer_target("b"), Some(Level::Require));
        assert_eq!(rollout.step(), vec![change("b", Level::Off, Level::Require)]);

        // Clearing a's override under a use mesh demotes it.
        rollout.set_target(Level::Use);
        assert_eq!(rollout.step(), vec![change("b", Level::Require, Level::Use)]);
        rollout.set_peer_target("a", None).unwrap();
        assert_eq!(rollout.step(), vec![change("a", Level::Require, Level::Use)]);
    }

    #[test]
    fn override_of_unknown_peer_fails() {
        let mut rollout = mesh(Level::Use, &["a"]);
        assert_eq!(
            rollout.set_peer_target("zz", Some(Level::Off)),
            Err("no peer named zz".to_owned())
        );
        assert_eq!(rollout.set_peer_target("zz", None), Err("no peer named zz".to_owned()));
    }

    #[test]
    fn events_for_unknown_peers_are_ignored() {
        let mut rollout = mesh(Level::Require, &["a"]);
        rollout.set_child_up("zz", true);
        rollout.announced("zz", Level::Use);
        rollout.forget_announcement("zz");
        rollout.remove_peer("zz");
        assert!(rollout.step().is_empty());
        assert_eq!(rollout.peers().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn forgotten_announcement_blocks_promotion() {
        let mut rollout = mesh(Level::Use, &["a"]);
        ready(&mut rollout, "a");
        rollout.forget_announcement("a");
        rollout.set_target(Level::Require);
        assert!(rollout.step().is_empty());
        assert_eq!(
            blocked_of(&rollout, "a").as_deref(),
            Some("waiting for the peer to announce its level")
        );
        assert_eq!(rollout.report().peers[0].announced, None);
    }

    #[test]
    fn remove_peer() {
        let mut rollout = mesh(Level::Use, &["a", "b"]);
        rollout.remove_peer("a");
        assert_eq!(rollout.current("a"), None);
        assert_eq!(rollout.peers().collect::<Vec<_>>(), ["b"]);
        // Added again: a fresh start, no SA, no announcement.
        rollout.add_peer("a");
        rollout.set_target(Level::Require);
        assert!(rollout.step().is_empty());
        assert_eq!(rollout.current("a"), Some(Level::Use));
    }

    #[test]
    fn step_changes_are_sorted_by_peer() {
        let mut rollout = mesh(Level::Off, &["c", "a", "b"]);
        rollout.set_target(Level::Use);
        let peers: Vec<_> = rollout.step().into_iter().map(|c| c.peer).collect();
        assert_eq!(peers, ["a", "b", "c"]);
    }

    #[test]
    fn restore_keeps_levels() {
        let mut rollout = mesh(Level::Require, &["a", "b", "c"]);
        ready(&mut rollout, "a");
        rollout.set_peer_target("c", Some(Level::Off)).unwrap();
        rollout.step();
        assert_eq!(rollout.current("a"), Some(Level::Require));
        assert_eq!(rollout.current("b"), Some(Level::Use));
        assert_eq!(rollout.current("c"), Some(Level::Off));

        let snapshot = rollout.snapshot();
        let json = serde_json::to_string(&snapshot).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot);

        let mut restored = Rollout::restore(&back);
        assert_eq!(restored.target(), Level::Require);
        assert!(restored.step().is_empty());
        assert_eq!(restored.current("a"), Some(Level::Require));
        assert_eq!(restored.current("b"), Some(Level::Use));
        assert_eq!(restored.current("c"), Some(Level::Off));
        assert_eq!(restored.peer_target("c"), Some(Level::Off));
        assert_eq!(restored.snapshot(), snapshot);
        // No SA or announcement survives a restart.
        assert_eq!(
            blocked_of(&restored, "b").as_deref(),
            Some("waiting for a child SA with the peer")
        );
    }

    #[test]
    fn restore_above_target_demotes_at_the_first_step() {
        let snapshot: Snapshot = serde_json::from_str(
            r#"{"target":"use","peers":{"a":{"current":"require"},"b":{"current":"require","target":"require"}}}"#,
        )
        .unwrap();
        let mut rollout = Rollout::restore(&snapshot);
        assert_eq!(rollout.peer_target("a"), Some(Level::Use));
        assert_eq!(rollout.step(), vec![change("a", Level::Require, Level::Use)]);
        assert_eq!(rollout.current("b"), Some(Level::Require));
    }

    #[test]
    fn report() {
        let mut rollout = Rollout::new(Level::Require);
        for peer in ["c", "a", "b", "d"] {
            rollout.add_peer(peer);
        }
        ready(&mut rollout, "a");
        rollout.set_child_up("b", true);
        rollout.announced("b", Level::Off);
        rollout.set_peer_target("d", Some(Level::Off)).unwrap();
        rollout.step();

        let report = rollout.report();
        assert_eq!(report.target, Level::Require);
        let rows: Vec<_> = report
            .peers
            .iter()
            .map(|p| (p.name.as_str(), p.target, p.current, p.announced, p.blocked.as_deref()))
            .collect();
        assert_eq!(
            rows,
            [
                ("a", Level::Require, Level::Require, Some(Level::Use), None),
                (
                    "b",
                    Level::Require,
                    Level::Use,
                    Some(Level::Off),
                    Some("the peer is at off towards us")
                ),
                (
                    "c",
                    Level::Require,
                    Level::Use,
                    None,
                    Some("waiting for a child SA with the peer")
                ),
                ("d", Level::Off, Level::Off, None, None),
            ]
        );
    }

    #[test]
    fn report_before_step() {
        let mut rollout = mesh(Level::Off, &["a"]);
        rollout.set_target(Level::Use);
        assert_eq!(
            blocked_of(&rollout, "a").as_deref(),
            Some("promotion to use is due at the next step")
        );
        // Above the target is not "short" of it.
        let mut rollout = mesh(Level::Use, &["a"]);
        rollout.set_target(Level::Off);
        assert_eq!(blocked_of(&rollout, "a"), None);
    }

    #[test]
    fn change_display() {
        assert_eq!(change("a", Level::Use, Level::Require).to_string(), "a: use -> require");
    }

    #[test]
    fn level_encoding_round_trips() {
        assert_eq!(LEVEL_NOTIFY, 40969);
        for (level, data) in [(Level::Off, [1, 0]), (Level::Use, [1, 1]), (Level::Require, [1, 2])]
        {
            assert_eq!(encode_level(level), data);
            assert_eq!(decode_level(&data), Ok(level));
        }
    }

    #[test]
    fn level_decode_errors() {
        for (data, error) in [
            (&[][..], "level notify: expected 2 bytes, got 0"),
            (&[1][..], "level notify: expected 2 bytes, got 1"),
            (&[1, 1, 0][..], "level notify: expected 2 bytes, got 3"),
            (&[2, 1][..], "level notify: unsupported version 2 (expected 1)"),
            (&[0, 1][..], "level notify: unsupported version 0 (expected 1)"),
            (&[1, 3][..], "level notify: unknown level 3 (expected 0, 1 or 2)"),
            (&[1, 255][..], "level notify: unknown level 255 (expected 0, 1 or 2)"),
        ] {
            let result = decode_level(data);
            assert_eq!(result, Err(error.to_owned()), "{data:?}");
            assert!(!error.contains('\n'));
        }
    }
}
