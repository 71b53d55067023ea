//! What an IKE SA tells its caller: [`Event`]s, and which end of the SA we are
//! ([`Role`]). A leaf module: it imports nothing from [`crate::sa`] or
//! [`crate::exchange`].

use crate::config::ChildSa;
use crate::error::Error;
use crate::proposal::IkeAlgorithms;
use crate::wire::id::IdRepr;

/// What happened, for the caller.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The IKE SA is authenticated both ways.
    IkeUp {
        /// The peer's identity, as authenticated.
        peer: IdRepr,
        /// The negotiated algorithms.
        algorithms: IkeAlgorithms,
    },
    /// A child SA is up: install it.
    ChildUp(ChildSa),
    /// A child SA replaces another (a rekey, section 2.8): install it beside the old
    /// one, which goes with its own [`Event::ChildDown`] once the rekey is complete.
    ChildRekeyed {
        /// Inbound SPI of the child SA it replaces.
        old_spi_in: u32,
        /// The new child SA.
        child: ChildSa,
        /// We asked for the rekey (and have the peer's answer, so its inbound SA is
        /// installed); `false` when we answered the peer's request.
        initiated: bool,
    },
    /// The IKE SA stands but a child SA could not be had (refused by the peer or by us,
    /// or its answer was not acceptable).
    ChildFailed {
        /// For a rekey, the inbound SPI of the child SA it was to replace (which stays).
        rekey: Option<u32>,
        /// Why.
        error: Error,
    },
    /// The IKE SA was deleted, by us or by the peer (an orderly end).
    Closed {
        /// Who deleted it: [`Error::DeletedByUs`] or [`Error::DeletedByPeer`].
        error: Error,
    },
    /// A child SA was deleted: remove it from the kernel.
    ChildDown {
        /// SPI of its inbound SA.
        spi_in: u32,
        /// SPI of its outbound SA.
        spi_out: u32,
    },
    /// The peer answered a liveness check.
    PeerAlive,
    /// The peer's `INFORMATIONAL` request carried a Notify payload of a private use
    /// status type (section 3.10.1; sent with [`IkeSa::notify`](crate::sa::IkeSa::notify)). Raised once per
    /// request, however often the request is retransmitted.
    PeerNotify {
        /// The Notify Message Type, in 40960..=65535.
        kind: u16,
        /// The Notification Data.
        data: Vec<u8>,
    },
    /// The IKE SA was rekeyed (section 2.18): it goes on under new SPIs and keys, with
    /// the same child SAs. Datagrams for the old SPIs still reach this SA until the old
    /// one is deleted.
    IkeRekeyed {
        /// The new initiator's and responder's SPIs.
        spis: (u64, u64),
        /// The new SA's algorithms.
        algorithms: IkeAlgorithms,
    },
    /// A rekey of the IKE SA failed; the SA goes on with its current keys.
    IkeRekeyFailed {
        /// Why.
        error: Error,
    },
    /// The IKE SA failed and is gone.
    Failed {
        /// Why.
        error: Error,
    },
}

/// Which end of the IKE SA we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the first `IKE_SA_INIT`.
    Initiator,
    /// We answered it.
    Responder,
}
