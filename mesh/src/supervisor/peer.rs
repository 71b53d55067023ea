//! One peer as the supervisor sees it: its addresses, its IKE SA, its child SAs and
//! the kernel pairs they own, and the rules that depend on the pair of names alone.

use ike::endpoint::SaHandle;
use policy::Knocker;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xfrm::SaId;

/// Where an IKE SA of a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IkeState {
    Down,
    Connecting,
    Established,
}

/// One child SA's pair of kernel SAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// Our address.
    pub local: IpAddr,
    /// The peer's.
    pub remote: IpAddr,
    /// Inbound SPI (ours).
    pub spi_in: u32,
    /// Outbound SPI (the peer's).
    pub spi_out: u32,
}

impl Pair {
    /// The inbound SA's ID.
    pub fn in_id(&self) -> SaId {
        SaId { dst: self.local, spi: self.spi_in, src: self.remote, mark: None }
    }

    /// The outbound SA's ID.
    pub fn out_id(&self) -> SaId {
        SaId { dst: self.remote, spi: self.spi_out, src: self.local, mark: None }
    }
}

/// A child SA of a peer.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) pair: Pair,
    /// The IKE SA it belongs to.
    pub(crate) sa: SaHandle,
    /// Its inbound SA is in the kernel.
    pub(crate) installed: bool,
    /// Its outbound SA, while it waits (see [`super::OUTBOUND_FALLBACK`]).
    pub(crate) pending_out: Option<Box<xfrm::Sa>>,
    /// It came with `IKE_AUTH` (not a rekey).
    pub(crate) from_auth: bool,
}

/// A small number naming a peer in timers and maps; never reused within one
/// supervisor, so a timer of a removed peer cannot fire for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerKey(pub(crate) u32);

/// One peer's supervisor state.
pub(crate) struct Peer {
    pub(crate) key: PeerKey,
    pub(crate) name: String,
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) local: IpAddr,
    pub(crate) remote: IpAddr,
    pub(crate) reqid: u32,
    pub(crate) ike: Arc<ike::sa::Config>,
    /// The IKE SA that carries the peer now (connecting or established).
    pub(crate) sa: Option<SaHandle>,
    /// Every IKE SA with the peer (current, being made, replaced, being deleted).
    pub(crate) ike_sas: Vec<SaHandle>,
    pub(crate) state: IkeState,
    /// Child SAs, oldest first; the last one is current.
    pub(crate) children: Vec<Child>,
    /// Child SAs found in the kernel at start, kept until a new one is installed.
    pub(crate) adopted: Vec<Pair>,
    /// Outbound SAs of child SAs retired while the peer still holds their inbound
    /// SAs: they carry the traffic until the waiting outbound SAs go in.
    pub(crate) stale_out: Vec<xfrm::SaId>,
    pub(crate) knocker: Knocker,
    pub(crate) backoff: Duration,
    /// When a child SA or the IKE SA was last rekeyed.
    pub(crate) last_rekey: Option<Instant>,
    pub(crate) last_error: Option<String>,
    /// When set, the next IKE SA we initiate claims to be the only one (restart,
    /// re-authentication after a reload).
    pub(crate) claim_only: bool,
    /// When a datagram last came from the peer.
    pub(crate) last_heard: Option<Instant>,
    /// When [`Peer::sa`] was established.
    pub(crate) sa_up_at: Option<Instant>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("remote", &self.remote)
            .field("state", &self.state)
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

impl Peer {
    pub(crate) fn current_child(&self) -> Option<&Child> {
        self.children.last()
    }

    /// Whether a child SA of ours with the peer is in the kernel (ours or adopted).
    pub(crate) fn has_kernel_child(&self) -> bool {
        self.children.iter().any(|c| c.installed) || !self.adopted.is_empty()
    }
}

/// Of two members, the one whose name sorts first initiates.
pub(crate) fn we_initiate(me: &str, peer: &str) -> bool {
    me < peer
}

/// Our address and the peer's for IKE and the child SA: the first pair of one family,
/// IPv4 first.
pub(crate) fn pick_pair(ours: &[IpAddr], theirs: &[IpAddr]) -> Option<(IpAddr, IpAddr)> {
    for v4 in [true, false] {
        let l = ours.iter().find(|a| a.is_ipv4() == v4);
        let r = theirs.iter().find(|a| a.is_ipv4() == v4);
        if let (Some(l), Some(r)) = (l, r) {
            return Some((*l, *r));
        }
    }
    None
}

pub(crate) fn join(addrs: &[IpAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_pair_prefers_ipv4_and_needs_a_shared_family() {
        let a4: IpAddr = "10.0.0.1".parse().unwrap();
        let b4: IpAddr = "10.0.0.2".parse().unwrap();
        let a6: IpAddr = "fd00::1".parse().unwrap();
        let b6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(pick_pair(&[a6, a4], &[b6, b4]), Some((a4, b4)));
        assert_eq!(pick_pair(&[a6, a4], &[b6]), Some((a6, b6)));
        assert_eq!(pick_pair(&[a4], &[b6]), None);
        assert!(we_initiate("a", "b") && !we_initiate("b", "a"));
    }
}
