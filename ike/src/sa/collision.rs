//! Simultaneous rekeys (RFC 7296 sections 2.8.1 and 2.8.2): both sides rekey the same
//! child SA, or the IKE SA, at once. Both exchanges complete; the SA made by the
//! exchange with the lowest of the four nonces is redundant and deleted by whoever
//! initiated that exchange, and the other exchange's initiator deletes the old SA.
//!
//! The peer's colliding exchange is noted when we answer it (a [`ChildCollision`], or
//! the [`NewIke`] it made); the collision is settled here when the answer to ours comes.

use super::{Established, IkeSa, Instant, Intent, NewIke, Retired, retired_until};

/// The peer's rekey of a child SA that we are rekeying too (section 2.8.1).
pub(super) struct ChildCollision {
    /// Inbound SPI of the child both sides rekey.
    pub(super) old: u32,
    /// Inbound SPI of the child the peer's exchange made.
    pub(super) made: u32,
    /// `Ni` and `Nr` of the peer's exchange.
    pub(super) nonces: (Vec<u8>, Vec<u8>),
}

/// The lowest nonce of an exchange: of two colliding rekeys, the one with the lowest of
/// the four nonces made the redundant SA (sections 2.8.1 and 2.8.2).
fn lowest(nonces: &(Vec<u8>, Vec<u8>)) -> &[u8] {
    nonces.0.as_slice().min(nonces.1.as_slice())
}

/// Our rekey of child `old` made child `made` with `nonces`; the old child is closing.
/// Queues the delete that is ours to send: the redundant child if ours is redundant
/// (the peer deletes the old one), the old child otherwise.
pub(super) fn settle_child_rekey(
    e: &mut Established,
    (old, made): (u32, u32),
    nonces: &(Vec<u8>, Vec<u8>),
    collision: Option<ChildCollision>,
) {
    match collision {
        // Ours made the redundant child: we delete it, the peer the old one.
        Some(c) if lowest(nonces) < lowest(&c.nonces) => {
            e.close_child(made);
            e.queue.push_front(Intent::DeleteChild(made));
        }
        // The peer's is redundant: it deletes that one, and we the old one.
        Some(c) => {
            e.close_child(c.made);
            e.queue.push_front(Intent::DeleteChild(old));
        }
        None => e.queue.push_front(Intent::DeleteChild(old)),
    }
}

/// Keeps an IKE SA that lost a rekey collision until its delete, or until `until`.
pub(super) fn retire(e: &mut Established, sa: NewIke, until: Instant) {
    e.keep_retired(Retired {
        keys: sa.keys,
        spis: sa.spis,
        role: sa.role,
        own_next: 0,
        peer_next: 0,
        until,
    });
}

impl IkeSa {
    /// Our rekey of the IKE SA made `ours`; `collision` is the SA the peer's colliding
    /// rekey made, if any. The SA that is not redundant takes over, and we queue the
    /// delete that is ours to send.
    pub(super) fn settle_ike_rekey(
        &mut self,
        now: Instant,
        e: &mut Established,
        ours: NewIke,
        collision: Option<NewIke>,
    ) {
        let until = retired_until(now, &self.cfg.retransmit);
        match collision {
            // Ours is redundant: the peer's SA takes over and the peer deletes the old
            // one; we delete ours.
            Some(theirs) if lowest(&ours.nonces) < lowest(&theirs.nonces) => {
                let redundant = ours.spis;
                retire(e, ours, until);
                self.switch_to(now, e, theirs);
                self.wait_for_peer(now, e);
                e.queue.push_front(Intent::DeleteRetired(redundant));
            }
            // Theirs is redundant (the peer deletes it): ours takes over and we delete the
            // old one.
            Some(theirs) => {
                let old = (self.spi_i, self.spi_r);
                retire(e, theirs, until);
                self.switch_to(now, e, ours);
                e.queue.push_front(Intent::DeleteRetired(old));
            }
            None => {
                let old = (self.spi_i, self.spi_r);
                self.switch_to(now, e, ours);
                e.queue.push_front(Intent::DeleteRetired(old));
            }
        }
    }
}
