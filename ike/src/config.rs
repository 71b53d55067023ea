//! How an IKE SA is configured, and the child SAs it makes: the plain data the
//! exchanges and the SA state machine share. A leaf module: it imports nothing from
//! [`crate::sa`] or [`crate::exchange`] (both re-export or use what is here).

use crate::crypto::Secret;
use crate::crypto::auth::{SigAlg, Signer, Verifier};
use crate::proposal::{EspAlgorithms, Policy};
use crate::wire::{id::IdRepr, ts::TrafficSelector};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// When our requests are sent again (RFC 7296 section 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Wait before the first retransmission.
    pub base: Duration,
    /// Each wait is the previous one times `factor_num / factor_den`.
    pub factor_num: u32,
    /// See `factor_num`.
    pub factor_den: u32,
    /// Sends in all, the first included; after the last one's wait, the SA is given up.
    pub tries: u32,
    /// Each wait is shortened by a random share of up to this many percent, so that
    /// the retransmissions of requests sent in the same instant (a fleet starting, a
    /// partition healing) do not all go out again in the same instant.
    pub jitter: u8,
}

impl Retransmit {
    /// The waits of all the sends added up: how long an unanswered request is tried
    /// for before the SA is given up.
    #[must_use]
    pub fn total_wait(&self) -> Duration {
        let mut wait = self.base;
        let mut total = Duration::ZERO;
        for _ in 0..self.tries {
            total += wait;
            wait = wait * self.factor_num / self.factor_den.max(1);
        }
        total
    }

    /// These settings with as many sends as it takes for their waits to add up to
    /// `at_least`, and never fewer than `tries`.
    #[must_use]
    pub fn tried_for(mut self, at_least: Duration) -> Self {
        while self.total_wait() < at_least {
            self.tries += 1;
        }
        self
    }
}

impl Default for Retransmit {
    /// 4 s, x1.8 per try, 5 sends: strongSwan's defaults (give-up after about 70 s);
    /// each wait shortened by up to 20%.
    fn default() -> Self {
        Self { base: Duration::from_secs(4), factor_num: 9, factor_den: 5, tries: 5, jitter: 20 }
    }
}

/// Checks a peer's certificates and identity, and hands back a verifier for its key.
/// The `ca` crate implements it against the mesh's trust bundle and CRL.
pub trait PeerAuthenticator: Send + Sync {
    /// The verifier for the key of the peer that presented `certs` (DER, leaf first)
    /// under identity `id`, or why it is refused: its `Display` is one line, and it is
    /// reported as [`AuthFailure::Certificate`](crate::error::AuthFailure::Certificate).
    fn authenticate(
        &self,
        id: &IdRepr,
        certs: &[Vec<u8>],
    ) -> Result<Box<dyn Verifier>, Box<dyn std::error::Error + Send + Sync>>;
}

/// How one side of an IKE SA behaves.
pub struct Config {
    /// Algorithms offered (as initiator) and accepted (as responder).
    pub policy: Policy,
    /// Our identity.
    pub local_id: IdRepr,
    /// Our certificate chain, DER, leaf first.
    pub certs: Vec<Vec<u8>>,
    /// Signs our AUTH payloads.
    pub signer: Arc<dyn Signer + Send + Sync>,
    /// Checks the peer.
    pub authenticator: Arc<dyn PeerAuthenticator>,
    /// Signature algorithms accepted from the peer.
    pub signature_algorithms: Vec<SigAlg>,
    /// Retransmission of our requests.
    pub retransmit: Retransmit,
    /// Our address (the child SA protects traffic between the two hosts).
    pub local_addr: IpAddr,
    /// The peer's address.
    pub remote_addr: IpAddr,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("local_id", &self.local_id)
            .field("local_addr", &self.local_addr)
            .field("remote_addr", &self.remote_addr)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub(crate) fn local_ts(&self) -> TrafficSelector {
        TrafficSelector::host(self.local_addr)
    }

    pub(crate) fn remote_ts(&self) -> TrafficSelector {
        TrafficSelector::host(self.remote_addr)
    }
}

/// A child SA, as the `xfrm` crate needs it to install the pair of ESP SAs.
pub struct ChildSa {
    /// SPI of the inbound SA (ours).
    pub spi_in: u32,
    /// SPI of the outbound SA (the peer's).
    pub spi_out: u32,
    /// AES-GCM key and salt for the inbound SA.
    pub key_in: Secret,
    /// AES-GCM key and salt for the outbound SA.
    pub key_out: Secret,
    /// Negotiated ESP algorithms.
    pub algorithms: EspAlgorithms,
    /// The mode both sides agreed on (`USE_TRANSPORT_MODE`).
    pub mode: ChildMode,
    /// Our side's selector.
    pub local: TrafficSelector,
    /// The peer's side's selector.
    pub remote: TrafficSelector,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSa")
            .field("spi_in", &format_args!("{:#010x}", self.spi_in))
            .field("spi_out", &format_args!("{:#010x}", self.spi_out))
            .field("algorithms", &self.algorithms)
            .field("mode", &self.mode)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// How a child SA carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChildMode {
    /// ESP between the two hosts' own addresses (RFC 4303 section 3.1.1): the only mode
    /// a mesh needs, asked for and confirmed with `USE_TRANSPORT_MODE`.
    Transport,
}
