//! The client side of SPA: knock on a peer's SPA port before talking IKE to it, and
//! knock again with each IKE retransmission while no answer comes.
//!
//! [`send`] (tokio) and [`send_blocking`] (std) seal one knock with [`seal`] and send
//! it. The knock carries the sender's own address, which the gate compares with the
//! datagram's source: send it from a socket bound to that address (or one the kernel
//! routes from it), or the gate refuses it as an address mismatch.
//!
//! [`Knocker`] is the timing for one peer, for the IKE side to drive with its own
//! clock: ask [`Knocker::before_request`] before each IKE request sent to the peer
//! (the first transmission and every retransmission) until the peer answers; it says
//! whether to knock first, and how long to hold the request after the knock so that the
//! gate has opened the pinhole by the time it arrives (otherwise the first `IKE_SA_INIT`
//! is dropped and costs a whole retransmission interval, 4 s by default). Once the peer
//! has answered, call [`Knocker::answered`]: its gate keeps us in for the life of the
//! SA, and our own table lets its answers in, so no more knocks are needed until the
//! next time we start from nothing.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::spa::{Knock, SpaError, SpaKeys, os_random, seal};

/// How long to hold an IKE request after a knock, unless configured otherwise: ample
/// for a gate on the same continent to open its pinhole (one `nft` run, a few ms).
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(50);
/// The least time between two knocks to one peer, unless configured otherwise: IKE
/// retransmissions are seconds apart, and the gate rate-limits each source.
pub const DEFAULT_MIN_GAP: Duration = Duration::from_secs(1);

/// Why a knock was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnockError {
    /// The knock could not be sealed (a node id that cannot go into one).
    #[error(transparent)]
    Seal(#[from] SpaError),
    /// The socket is bound to another address than the knock claims: the gate would
    /// refuse it.
    #[error(
        "the knock claims address {claimed} but would be sent from {bound}: bind the socket to {claimed}"
    )]
    WrongSource {
        /// The address in the knock.
        claimed: IpAddr,
        /// The socket's address.
        bound: IpAddr,
    },
    /// Sending failed.
    #[error("cannot send the SPA knock to {peer}: {source}")]
    Send {
        /// The peer's SPA address.
        peer: SocketAddr,
        /// What failed.
        source: io::Error,
    },
}

/// Seals `knock` (timestamped now, with fresh nonces from the operating system) and
/// sends it from `socket` to `peer`, the peer's SPA address.
///
/// # Errors
/// [`KnockError`]: the knock cannot be sealed, the socket is bound to an address other
/// than the one the knock claims, or sending fails.
pub async fn send(
    socket: &tokio::net::UdpSocket,
    keys: &SpaKeys,
    knock: &Knock,
    peer: SocketAddr,
) -> Result<(), KnockError> {
    let datagram = prepare(socket.local_addr().ok(), keys, knock)?;
    socket.send_to(&datagram, peer).await.map_err(|source| KnockError::Send { peer, source })?;
    Ok(())
}

/// [`send`] on a std socket.
///
/// # Errors
/// As [`send`].
pub fn send_blocking(
    socket: &std::net::UdpSocket,
    keys: &SpaKeys,
    knock: &Knock,
    peer: SocketAddr,
) -> Result<(), KnockError> {
    let datagram = prepare(socket.local_addr().ok(), keys, knock)?;
    socket.send_to(&datagram, peer).map_err(|source| KnockError::Send { peer, source })?;
    Ok(())
}

/// Seals `knock` (timestamped now, with fresh nonces from the operating system) into
/// the datagram [`send`] would send from a socket bound to `local`, for a caller that
/// sends it itself (meshd queues it with its IKE datagrams when the kernel puts sends
/// off).
///
/// # Errors
/// As [`send`], but for sending.
pub fn prepare(
    local: Option<SocketAddr>,
    keys: &SpaKeys,
    knock: &Knock,
) -> Result<Vec<u8>, KnockError> {
    if let Some(local) = local {
        let (bound, claimed) = (local.ip().to_canonical(), knock.addr.to_canonical());
        if !bound.is_unspecified() && bound != claimed {
            return Err(KnockError::WrongSource { claimed, bound });
        }
    }
    Ok(seal(keys, knock, SystemTime::now(), &mut os_random)?)
}

/// What to do before an IKE request, as [`Knocker::before_request`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Send a knock now, then the IKE request after this long.
    Knock {
        /// How long to hold the request.
        then_wait: Duration,
    },
    /// Send the IKE request now: a knock went out recently enough.
    Send,
}

/// When to knock on one peer: before the first IKE request and again with each
/// retransmission, never more often than a minimum gap, until the peer answers.
///
/// Sans-IO: the caller passes `now` and does the sending.
#[derive(Debug, Clone)]
pub struct Knocker {
    settle: Duration,
    min_gap: Duration,
    last: Option<Instant>,
    answered: bool,
}

impl Default for Knocker {
    fn default() -> Self {
        Self::new(DEFAULT_SETTLE, DEFAULT_MIN_GAP)
    }
}

impl Knocker {
    /// A knocker that holds requests `settle` after a knock and knocks at most once per
    /// `min_gap`.
    pub fn new(settle: Duration, min_gap: Duration) -> Self {
        Self { settle, min_gap, last: None, answered: false }
    }

    /// Call before sending each IKE request to the peer, retransmissions included.
    /// Knocks on the first request, and on a retransmission if the last knock is at
    /// least the minimum gap old (the knock or the pinhole may be what was lost); sends
    /// straight away once the peer has answered.
    pub fn before_request(&mut self, now: Instant) -> Step {
        if self.answered {
            return Step::Send;
        }
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.min_gap => Step::Send,
            _ => {
                self.last = Some(now);
                Step::Knock { then_wait: self.settle }
            }
        }
    }

    /// The peer answered an IKE request: stop knocking.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Start over (the IKE SA with the peer is gone, and the next one starts from
    /// nothing): the next request knocks again.
    pub fn reset(&mut self) {
        self.last = None;
        self.answered = false;
    }

    /// When the last knock went out, if one did since the last reset.
    pub fn last_knock(&self) -> Option<Instant> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spa::{Access, DATAGRAM_LEN};
    use std::net::{Ipv4Addr, UdpSocket};

    #[test]
    fn knocks_with_retransmissions_until_answered() {
        let t0 = Instant::now();
        let mut k = Knocker::default();
        assert_eq!(k.before_request(t0), Step::Knock { then_wait: DEFAULT_SETTLE });
        // A second request right away (another exchange to the same peer) does not knock.
        assert_eq!(k.before_request(t0 + Duration::from_millis(10)), Step::Send);
        // IKE's first retransmission, 4 s later: knock again.
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(k.before_request(t1), Step::Knock { then_wait: DEFAULT_SETTLE });
        assert_eq!(k.last_knock(), Some(t1));
        k.answered();
        assert_eq!(k.before_request(t1 + Duration::from_secs(60)), Step::Send);
        k.reset();
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(k.before_request(t2), Step::Knock { then_wait: DEFAULT_SETTLE });
    }

    fn keys() -> SpaKeys {
        SpaKeys::new(&[7u8; 32], None).unwrap()
    }

    #[test]
    fn sends_one_sealed_datagram_over_loopback() {
        let gate = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        gate.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let me = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let knock =
            Knock { node_id: "a".into(), access: Access::Ike, addr: Ipv4Addr::LOCALHOST.into() };
        send_blocking(&me, &keys(), &knock, gate.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = gate.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (DATAGRAM_LEN, me.local_addr().unwrap()));
    }

    #[test]
    fn refuses_a_socket_bound_elsewhere() {
        let me = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let knock = Knock {
            node_id: "a".into(),
            access: Access::Ike,
            addr: Ipv4Addr::new(10, 0, 0, 1).into(),
        };
        let err = send_blocking(&me, &keys(), &knock, me.local_addr().unwrap()).unwrap_err();
        assert!(matches!(err, KnockError::WrongSource { .. }), "{err}");
    }

    #[tokio::test]
    async fn sends_from_tokio() {
        let gate = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let me = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let knock =
            Knock { node_id: "a".into(), access: Access::Ike, addr: Ipv4Addr::LOCALHOST.into() };
        send(&me, &keys(), &knock, gate.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = gate.recv_from(&mut buf).await.unwrap();
        assert_eq!(n, DATAGRAM_LEN);
    }
}
