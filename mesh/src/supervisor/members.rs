//! Membership: the peers wanted now, their supervisors added and removed, the policy
//! model rendered from them, and the rollout's moves applied and announced.

use super::auth::PeerAuth;
use super::peer::{IkeState, Peer, PeerKey, join, pick_pair, we_initiate};
use super::{Action, PinholeOp, RESPONDER_GRACE, Supervisor, Timer};
use crate::rollout;
use ca::verify::PeerId;
use ike::crypto::auth::SigAlg;
use ike::endpoint::SaHandle;
use ike::sa::Retransmit;
use policy::{Knocker, Level, Member, MeshPolicy};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

impl Supervisor {
    /// The members now: configuration and members file, plus `meshctl` additions, less
    /// `meshctl` removals.
    pub(super) fn wanted_members(&self) -> Vec<(Member, String)> {
        let mut out: Vec<(Member, String)> = self
            .config_members
            .iter()
            .filter(|(m, _)| !self.state.removed.contains(&m.name))
            .cloned()
            .collect();
        for m in &self.state.added {
            out.retain(|(o, _)| o.name != m.name);
            out.push((m.clone(), "meshctl".to_owned()));
        }
        out
    }

    /// The policy model, with each peer at its rollout level.
    pub(super) fn model(&self) -> MeshPolicy {
        let mut members: Vec<Member> = Vec::with_capacity(self.peers.len() + 1);
        // Our own level is the strongest: the pair's level is then the peer's rollout
        // level, and the network level the mesh's target.
        members.push(Member { level: Some(Level::Require), ..self.me.clone() });
        for k in self.by_name.values() {
            let p = &self.peers[k];
            // One child SA per peer, between one pair of addresses: the policies cover
            // that pair only (see `add_peer`).
            members.push(Member {
                name: p.name.clone(),
                addresses: vec![p.remote],
                level: Some(self.rollout.current(&p.name).unwrap_or(Level::Off)),
            });
        }
        let mut model = self.cfg.mesh_policy(members);
        model.level = self.rollout.target();
        model
    }

    /// Brings the peer supervisors to the wanted members: adds new ones, removes gone
    /// ones (their SAs, policies and pinholes), updates changed addresses.
    pub(super) fn sync_members(&mut self, now: Instant) -> Result<Vec<String>, String> {
        let wanted = self.wanted_members();
        let mut changes = Vec::new();
        // A model with every wanted member, to validate and to take the reqids from.
        let all: Vec<Member> = wanted.iter().map(|(m, _)| m.clone()).collect();
        let model = self.cfg.mesh_policy(all);
        let problems = model.validate();
        if !problems.is_empty() {
            return Err(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
        }
        let reqids = policy::render::reqids(&model);
        let names: std::collections::HashSet<&str> =
            wanted.iter().map(|(m, _)| m.name.as_str()).collect();
        let gone: Vec<String> =
            self.by_name.keys().filter(|n| !names.contains(n.as_str())).cloned().collect();
        for name in gone {
            self.remove_peer(now, &name);
            changes.push(format!("removed peer {name}"));
        }
        for (m, source) in wanted {
            if m.name == self.me.name {
                continue;
            }
            self.sources.insert(m.name.clone(), source);
            let reqid = reqids.get(&m.name).copied().unwrap_or(policy::render::NETWORK_REQID);
            match self.key_of(&m.name).and_then(|k| self.peers.get(&k)) {
                Some(p) if p.addresses == m.addresses && p.reqid == reqid => {}
                Some(_) => {
                    self.remove_peer(now, &m.name);
                    if self.add_peer(now, &m, reqid) {
                        changes.push(format!("changed peer {} to {}", m.name, join(&m.addresses)));
                    }
                }
                None => {
                    if self.add_peer(now, &m, reqid) {
                        changes.push(format!("added peer {} at {}", m.name, join(&m.addresses)));
                    }
                }
            }
        }
        // Peers the saved rollout still names but that are members no more.
        let stale: Vec<String> = self
            .rollout
            .peers()
            .filter(|n| !self.by_name.contains_key(*n))
            .map(str::to_owned)
            .collect();
        for n in stale {
            self.rollout.remove_peer(&n);
        }
        self.live.set(self.by_name.keys().cloned());
        self.policies_dirty = true;
        self.dirty();
        Ok(changes)
    }

    fn add_peer(&mut self, now: Instant, m: &Member, reqid: u32) -> bool {
        let Some((local, remote)) = pick_pair(&self.me.addresses, &m.addresses) else {
            warn!(peer = %m.name, "no address of the peer shares a family with ours; skipped");
            return false;
        };
        if m.addresses.len() > 1 {
            warn!(peer = %m.name, %local, %remote, "the peer has several addresses: only {local} <-> {remote} is protected, traffic to its other addresses is not");
        }
        let ike = self.ike_config(&m.name, local, remote);
        self.set_responder(&m.addresses, Some(&ike));
        if self.rollout.current(&m.name).is_none() {
            self.rollout.add_peer(&m.name);
            if let Some(level) = m.level {
                let _ = self.rollout.set_peer_target(&m.name, Some(level));
            }
        }
        let first = if we_initiate(&self.me.name, &m.name) || self.restarted {
            // We initiate (or we restarted: the peer still holds an IKE SA with our
            // last run and waits for nothing): soon, spread a little so that a fleet
            // does not start at once.
            now + self.spread(500)
        } else {
            now + RESPONDER_GRACE + self.spread(2000)
        };
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        let peer = Peer {
            key,
            name: m.name.clone(),
            addresses: m.addresses.clone(),
            local,
            remote,
            reqid,
            ike,
            sa: None,
            ike_sas: Vec::new(),
            state: IkeState::Down,
            children: Vec::new(),
            adopted: Vec::new(),
            stale_out: Vec::new(),
            knocker: Knocker::default(),
            backoff: Duration::from_secs(1),
            last_rekey: None,
            last_error: None,
            claim_only: true,
            last_heard: None,
            sa_up_at: None,
        };
        for a in &m.addresses {
            self.by_addr.insert(a.to_canonical(), key);
        }
        self.by_reqid.insert(reqid, key);
        self.by_name.insert(m.name.clone(), key);
        self.peers.insert(key, peer);
        if !self.cfg.ike.on_demand {
            self.timers.set(Timer::Connect(key), first);
        }
        info!(peer = %m.name, addresses = %join(&m.addresses), "peer added");
        true
    }

    pub(super) fn remove_peer(&mut self, now: Instant, name: &str) {
        let Some(key) = self.by_name.remove(name) else { return };
        let Some(p) = self.peers.remove(&key) else { return };
        // Every IKE SA with it: the current one, and any being made or replaced.
        let handles: Vec<SaHandle> = p.ike_sas.iter().copied().chain(p.sa).collect();
        for h in handles {
            self.delete_ike(now, h);
            self.by_handle.remove(&h);
        }
        for a in &p.addresses {
            self.by_addr.remove(&a.to_canonical());
        }
        if self.by_reqid.get(&p.reqid) == Some(&key) {
            self.by_reqid.remove(&p.reqid);
        }
        for t in [
            Timer::Connect(key),
            Timer::Reauth(key),
            Timer::ChildRekey(key),
            Timer::IkeRekey(key),
            Timer::Liveness(key),
            Timer::PendingOut(key),
        ] {
            self.timers.cancel(t);
        }
        if self.esp {
            for c in p.children.iter().filter(|c| c.installed) {
                self.actions.push_back(Action::DeleteSa(c.pair.in_id()));
                self.actions.push_back(Action::DeleteSa(c.pair.out_id()));
            }
            for a in &p.adopted {
                self.actions.push_back(Action::DeleteSa(a.in_id()));
                self.actions.push_back(Action::DeleteSa(a.out_id()));
            }
            for id in &p.stale_out {
                self.actions.push_back(Action::DeleteSa(*id));
            }
            // Inbound SAs of replaced children linger for a while; the peer is gone now.
            let theirs: Vec<u64> = self
                .lingering
                .iter()
                .filter(|(_, id)| p.addresses.contains(&id.src) || p.addresses.contains(&id.dst))
                .map(|(i, _)| *i)
                .collect();
            for i in theirs {
                if let Some(id) = self.lingering.remove(&i) {
                    self.timers.cancel(Timer::Linger(i));
                    self.actions.push_back(Action::DeleteSa(id));
                }
            }
        }
        if self.gate {
            for a in &p.addresses {
                self.actions.push_back(Action::Pinhole(PinholeOp::Close(*a)));
            }
        }
        self.set_responder(&p.addresses, None);
        self.rollout.remove_peer(name);
        self.sources.remove(name);
        self.state.children.remove(name);
        self.policies_dirty = true;
        self.dirty();
        info!(peer = name, "peer removed");
    }

    /// Renders the model and asks for the difference with what is installed.
    pub(super) fn apply_policies(&mut self) {
        if !self.esp {
            return;
        }
        let model = self.model();
        let rendered = match policy::render(&model, &self.me.name) {
            Ok(r) => r,
            Err(e) => {
                error!("the mesh policy does not render, kernel policies left as they are: {e}");
                return;
            }
        };
        let (add, remove) = policy::diff(&self.installed, &rendered.policies);
        if add.is_empty() && remove.is_empty() {
            return;
        }
        debug!(
            changed = add.len() + remove.len(),
            total = rendered.policies.len(),
            "XFRM policies updated"
        );
        self.installed = rendered.policies;
        self.actions.push_back(Action::Policies { add, remove });
    }

    /// Runs the rollout machine; applies and announces what moved.
    pub(super) fn step_rollout(&mut self, now: Instant) -> Vec<rollout::Change> {
        let changes = self.rollout.step();
        if changes.is_empty() {
            return changes;
        }
        for c in &changes {
            info!(peer = %c.peer, from = %c.from, to = %c.to, "rollout level changed");
        }
        // The policies go in before the announcements: the peer may act on ours at once.
        self.apply_policies();
        self.policies_dirty = false;
        for c in &changes {
            self.announce(now, &c.peer);
        }
        self.dirty();
        changes
    }

    /// Tells the peer our current level towards it (a private-use Notify).
    pub(super) fn announce(&mut self, now: Instant, name: &str) {
        let Some(level) = self.rollout.current(name) else { return };
        let Some(p) = self.key_of(name).and_then(|k| self.peers.get(&k)) else { return };
        if p.state != IkeState::Established {
            return;
        }
        let Some(h) = p.sa else { return };
        let rng = &mut *self.rng;
        let data = rollout::encode_level(level);
        let _ = self.ep.with_sa(h, |s| s.notify(now, rollout::LEVEL_NOTIFY, data, rng));
    }

    /// The IKE configuration towards one peer, with our current credentials.
    pub(super) fn ike_config(
        &self,
        name: &str,
        local: IpAddr,
        remote: IpAddr,
    ) -> Arc<ike::sa::Config> {
        Arc::new(ike::sa::Config {
            policy: self.cfg.ike_policy(),
            local_id: self.creds.local_id.clone(),
            certs: self.creds.certs.clone(),
            signer: self.creds.signer.clone(),
            authenticator: Arc::new(PeerAuth {
                verifier: self.verifier.clone(),
                expected: PeerId::fqdn(name),
            }),
            signature_algorithms: SigAlg::ALL.to_vec(),
            retransmit: Retransmit {
                base: self.cfg.ike.retransmit_base,
                tries: crate::config::retransmit_tries(self.cfg.ike.retransmit_base),
                ..Retransmit::default()
            },
            local_addr: local,
            remote_addr: remote,
        })
    }

    /// Points the responder side at `ike` for these addresses (or forgets them).
    pub(super) fn set_responder(&self, addresses: &[IpAddr], ike: Option<&Arc<ike::sa::Config>>) {
        let mut r = self.responders.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for a in addresses {
            match ike {
                Some(ike) => r.insert(a.to_canonical(), ike.clone()),
                None => r.remove(&a.to_canonical()),
            };
        }
    }
}
