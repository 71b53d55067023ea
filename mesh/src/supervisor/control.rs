//! Control requests: status, peers added and removed, rollout targets, and a reload
//! with what the shell read from disk.

use super::auth::Credentials;
use super::peer::{IkeState, Pair};
use super::{Supervisor, Timer};
use crate::config::Config;
use crate::control::proto::{
    ChildStatus, Counters, EspStatus, PeerEntry, PeerStatus, Reply, Request, Response, Status,
};
use policy::{Level, Member};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

/// What a reload read from disk, for [`Supervisor::reload`]. The shell has already
/// given the trust bundle and CRL to the verifier.
pub struct Reloaded {
    /// The configuration read again.
    pub cfg: Config,
    /// Its members (configuration and members file), with their source.
    pub members: Vec<(Member, String)>,
    /// Our certificate and key read again.
    pub creds: Arc<Credentials>,
}

impl std::fmt::Debug for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloaded").field("members", &self.members.len()).finish_non_exhaustive()
    }
}

fn err(message: String) -> Response {
    Response::Error { message }
}

impl Supervisor {
    /// Answers a control request. `Status` and `Reload` need the shell (kernel counters,
    /// files): it calls [`Supervisor::status`] and [`Supervisor::reload`] for them.
    pub fn control(&mut self, now: Instant, req: Request) -> Response {
        let ok = |reply| Response::Ok { reply };
        let resp = match req {
            Request::Status => ok(Reply::Status(self.status(now, 0, &mut |_| (0, 0)))),
            Request::PeerList => ok(Reply::Peers {
                peers: self
                    .by_name
                    .values()
                    .map(|k| {
                        let p = &self.peers[k];
                        PeerEntry {
                            name: p.name.clone(),
                            addresses: p.addresses.clone(),
                            source: self.sources.get(&p.name).cloned().unwrap_or_default(),
                        }
                    })
                    .collect(),
            }),
            Request::RolloutStatus => ok(Reply::Rollout(self.rollout.report())),
            Request::PeerAdd { name, addresses, dry_run } => {
                self.peer_add(now, &name, addresses, dry_run)
            }
            Request::PeerRemove { name, dry_run } => self.peer_rm(now, &name, dry_run),
            Request::RolloutSet { level, peer, clear, dry_run } => {
                self.rollout_set(now, level, peer.as_deref(), clear, dry_run)
            }
            Request::Reload => {
                err("a reload reads files: the daemon's shell carries it out".into())
            }
        };
        // What an operator changed is saved at once, not with the next batch.
        self.saved_at = None;
        self.finish(now);
        resp
    }

    /// The status, with each child SA's byte counters from `counters` and the last
    /// rekeys as Unix times (`unix_now` is the wall clock now).
    pub fn status(
        &mut self,
        now: Instant,
        unix_now: u64,
        counters: &mut dyn FnMut(&Pair) -> (u64, u64),
    ) -> Status {
        let mut peers = Vec::with_capacity(self.peers.len());
        for k in self.by_name.values() {
            let p = &self.peers[k];
            let child = p.current_child().cloned();
            let (bytes_in, bytes_out) = match child.as_ref() {
                Some(c) if c.installed => counters(&c.pair),
                _ => p.adopted.last().map_or((0, 0), &mut *counters),
            };
            let ike = match p.state {
                IkeState::Established => "established",
                IkeState::Connecting if p.knocker.last_knock().is_some() => "knocking",
                IkeState::Connecting => "connecting",
                IkeState::Down if !p.adopted.is_empty() => "adopted",
                IkeState::Down => "down",
            };
            peers.push(PeerStatus {
                name: p.name.clone(),
                addresses: p.addresses.clone(),
                level: self.rollout.current(&p.name).unwrap_or(Level::Off),
                ike: ike.to_owned(),
                child: child.as_ref().map(|c| ChildStatus {
                    spi_in: c.pair.spi_in,
                    spi_out: c.pair.spi_out,
                    installed: c.installed,
                }),
                bytes_in,
                bytes_out,
                last_rekey: p
                    .last_rekey
                    .map(|t| unix_now.saturating_sub(now.saturating_duration_since(t).as_secs())),
                last_error: p.last_error.clone(),
            });
        }
        Status {
            node: self.me.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: now.saturating_duration_since(self.started).as_secs(),
            esp: EspStatus { available: self.esp, message: self.esp_problem.clone() },
            target: self.rollout.target(),
            counters: self.counters(),
            peers,
        }
    }

    /// The IKE counters (the shell adds the UDP ones).
    pub fn counters(&self) -> Counters {
        Counters {
            retransmissions: self.ep.retransmissions(),
            initiating: self.initiating.len() as u64,
            waiting: self.waiting.len() as u64,
            half_open: self.ep.half_open() as u64,
            ..Counters::default()
        }
    }

    fn peer_add(
        &mut self,
        now: Instant,
        name: &str,
        addresses: Vec<IpAddr>,
        dry_run: bool,
    ) -> Response {
        if name == self.me.name {
            return err(format!("{name} is this node"));
        }
        if addresses.is_empty() {
            return err("give at least one address".into());
        }
        let before = self.state.clone();
        self.state.removed.retain(|n| *n != name);
        self.state.added.retain(|m| m.name != name);
        self.state.added.push(Member { name: name.to_owned(), addresses, level: None });
        let wanted = self.wanted_members().into_iter().map(|(m, _)| m).collect();
        let problems = self.cfg.mesh_policy(wanted).validate();
        if !problems.is_empty() {
            self.state = before;
            return err(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        }
        if dry_run {
            let what = if self.by_name.contains_key(name) { "would change" } else { "would add" };
            self.state = before;
            return Response::Ok {
                reply: Reply::Done { changes: vec![format!("{what} peer {name}")] },
            };
        }
        self.commit_members(now)
    }

    fn peer_rm(&mut self, now: Instant, name: &str, dry_run: bool) -> Response {
        if !self.by_name.contains_key(name) {
            return err(format!("no peer named {name}"));
        }
        if dry_run {
            return Response::Ok {
                reply: Reply::Done { changes: vec![format!("would remove peer {name}")] },
            };
        }
        let in_config = self.config_members.iter().any(|(m, _)| m.name == name);
        self.state.added.retain(|m| m.name != name);
        if in_config && !self.state.removed.iter().any(|n| n == name) {
            self.state.removed.push(name.to_owned());
        }
        self.commit_members(now)
    }

    fn commit_members(&mut self, now: Instant) -> Response {
        match self.sync_members(now) {
            Ok(changes) => {
                self.apply_policies();
                self.policies_dirty = false;
                self.dirty();
                self.step_rollout(now);
                Response::Ok { reply: Reply::Done { changes } }
            }
            Err(e) => err(e),
        }
    }

    fn rollout_set(
        &mut self,
        now: Instant,
        level: Level,
        peer: Option<&str>,
        clear: bool,
        dry_run: bool,
    ) -> Response {
        let mut next = self.rollout.clone();
        let what = if let Some(p) = peer {
            let target = (!clear).then_some(level);
            if let Err(e) = next.set_peer_target(p, target) {
                return err(e);
            }
            if clear {
                format!("target of {p}: mesh target")
            } else {
                format!("target of {p}: {level}")
            }
        } else {
            next.set_target(level);
            format!("mesh target: {level}")
        };
        if dry_run {
            let moves = next.step();
            let mut changes = vec![format!("would set {what}")];
            changes.extend(
                moves.iter().map(|c| format!("would move {} from {} to {}", c.peer, c.from, c.to)),
            );
            return Response::Ok { reply: Reply::Done { changes } };
        }
        self.rollout = next;
        let moves = self.step_rollout(now);
        // The target alone can change the network-wide policies.
        self.policies_dirty = true;
        self.dirty();
        let mut changes = vec![format!("set {what}")];
        changes
            .extend(moves.iter().map(|c| format!("moved {} from {} to {}", c.peer, c.from, c.to)));
        info!("rollout: set {what}");
        Response::Ok { reply: Reply::Done { changes } }
    }

    /// Takes what a reload read (configuration, members, credentials; the verifier's
    /// trust is already new) and re-authenticates every established peer with a new IKE
    /// SA that replaces the old one (make before break).
    pub fn reload(&mut self, now: Instant, new: Reloaded) -> Response {
        let Reloaded { cfg, members, creds } = new;
        let mut changes = Vec::new();
        if self.state.config_level != Some(cfg.mesh.level) {
            self.rollout.set_target(cfg.mesh.level);
            self.state.config_level = Some(cfg.mesh.level);
            changes.push(format!("mesh target from the configuration: {}", cfg.mesh.level));
        }
        self.cfg.mesh = cfg.mesh;
        changes.push("trust bundle and CRL reloaded".to_owned());
        let new_cert = creds.certs != self.creds.certs;
        self.creds = creds;
        self.config_members = members;
        match self.sync_members(now) {
            Ok(c) => changes.extend(c),
            Err(e) => {
                self.finish(now);
                return err(e);
            }
        }
        // New IKE configurations carry the new credentials; every established peer is
        // re-authenticated by a new IKE SA that claims to be the only one.
        let keys: Vec<_> = self.by_name.values().copied().collect();
        for key in keys {
            let Some(p) = self.peers.get(&key) else { continue };
            let ike = self.ike_config(&p.name, p.local, p.remote);
            let addresses = p.addresses.clone();
            self.set_responder(&addresses, Some(&ike));
            let at = now + self.spread(2000);
            let Some(p) = self.peers.get_mut(&key) else { continue };
            p.ike = ike;
            if p.state == IkeState::Established {
                self.timers.set(Timer::Reauth(key), at);
            }
        }
        if new_cert {
            changes.push("certificate reloaded; re-authenticating every peer".to_owned());
        } else {
            changes.push("re-authenticating every peer".to_owned());
        }
        self.policies_dirty = true;
        self.dirty();
        self.step_rollout(now);
        self.saved_at = None; // saved at once, as every operator's change
        self.finish(now);
        info!("reloaded: {}", changes.join("; "));
        Response::Ok { reply: Reply::Done { changes } }
    }
}
