//! The SPA listener: a UDP socket on the SPA port that feeds every datagram to the
//! [`Gatekeeper`] and opens a pinhole ([`Pinholes::allow`]) for each knock it admits.
//!
//! It never sends anything, valid or not: the socket is only read from. The work per
//! datagram is bounded: one `recv` into a fixed buffer (a longer datagram is cut short,
//! and refused for its size), one [`Gatekeeper::check`] (size, rate limit before any
//! cryptography, one AEAD open, bounded caches); the knocks admitted among the
//! datagrams waiting (up to 64) get their pinholes in one `nft` run, awaited before
//! the next datagrams are read so that they never pile up. The
//! gatekeeper logs every refusal and admission in one line with the source; the gate
//! adds one line when a pinhole cannot be opened, and one when it starts.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tracing::{error, info, warn};

use crate::nft::{Change, Pinholes};
use crate::spa::{Access, Admitted, DATAGRAM_LEN, GateStats, Gatekeeper};

/// Receive buffer: room for one byte more than an SPA packet, so that a longer datagram
/// shows as too long rather than as a cut-down packet.
const BUF_LEN: usize = DATAGRAM_LEN + 1;

/// Datagrams waiting on the socket taken in one go, their pinholes opened in one
/// netlink transaction: a burst of knocks (a fleet starting) costs a few, not one each.
const BATCH: usize = 64;

/// What happened to one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A knock was admitted and its pinhole opened.
    Opened(Admitted),
    /// A knock was admitted, but nft failed to open its pinhole (logged).
    NotOpened(Admitted),
    /// The datagram was refused (logged by the gatekeeper).
    Refused,
}

/// Who may knock: the addresses a pinhole may be opened for (the mesh's members).
pub type Knockers = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// The SPA listener: a socket, a gatekeeper, and the pinholes it opens.
pub struct SpaGate {
    socket: UdpSocket,
    gatekeeper: Gatekeeper,
    pinholes: Pinholes,
    ttl: Duration,
    knockers: Option<Knockers>,
    buf: Box<[u8; BUF_LEN]>,
}

impl std::fmt::Debug for SpaGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaGate")
            .field("socket", &self.socket)
            .field("ttl", &self.ttl)
            .field("knockers", &self.knockers.is_some())
            .finish_non_exhaustive()
    }
}

impl SpaGate {
    /// Binds the SPA port at `listen` (e.g. `[::]:62201` for both families). Admitted
    /// knocks open a pinhole for `ttl`. The pinholes' table must be installed
    /// ([`Pinholes::install`]) for knocks to open anything.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn bind(
        listen: SocketAddr,
        gatekeeper: Gatekeeper,
        pinholes: Pinholes,
        ttl: Duration,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen for SPA knocks on {listen}: {e}"))
        })?;
        Ok(Self::from_socket(socket, gatekeeper, pinholes, ttl))
    }

    /// A gate on a socket the caller bound.
    pub fn from_socket(
        socket: UdpSocket,
        gatekeeper: Gatekeeper,
        pinholes: Pinholes,
        ttl: Duration,
    ) -> Self {
        Self { socket, gatekeeper, pinholes, ttl, knockers: None, buf: Box::new([0; BUF_LEN]) }
    }

    /// Opens pinholes only for admitted knocks whose address `knockers` accepts (the
    /// current members): a node removed from the mesh that still holds the SPA secret
    /// gets nothing. Without it, every admitted knock opens one.
    #[must_use]
    pub fn with_knockers(mut self, knockers: Knockers) -> Self {
        self.knockers = Some(knockers);
        self
    }

    /// The address the gate listens on.
    ///
    /// # Errors
    /// When the socket cannot say.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// What the gatekeeper has seen so far.
    pub fn stats(&self) -> GateStats {
        self.gatekeeper.stats()
    }

    /// Serves knocks until the socket fails (never, in practice); drop the future to
    /// stop. The pinholes' table stays in the kernel either way.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn run(&mut self) -> io::Result<()> {
        let listen = self.local_addr()?;
        info!(
            %listen,
            table = %self.pinholes.config().table,
            ttl_s = self.ttl.as_secs_f64(),
            "SPA gate listening"
        );
        loop {
            self.serve_one().await?;
        }
    }

    /// Receives one datagram, and any more already waiting (up to [`BATCH`]), and deals
    /// with them: the pinholes of the knocks admitted open in one transaction.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn serve_one(&mut self) -> io::Result<Vec<Outcome>> {
        let (len, from) = self.socket.recv_from(&mut self.buf[..]).await?;
        let mut outcomes = vec![self.check(len, from)];
        while outcomes.len() < BATCH {
            match self.socket.try_recv_from(&mut self.buf[..]) {
                Ok((len, from)) => outcomes.push(self.check(len, from)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let admitted: Vec<IpAddr> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Opened(a) => Some(a.addr),
                _ => None,
            })
            .collect();
        if admitted.is_empty() {
            return Ok(outcomes);
        }
        let changes: Vec<Change> = admitted.iter().map(|a| Change::Allow(*a, self.ttl)).collect();
        let pinholes = self.pinholes.clone();
        let failure = match tokio::task::spawn_blocking(move || pinholes.change(&changes)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the nft task failed: {e}")),
        };
        if let Some(e) = failure {
            for o in &mut outcomes {
                if let Outcome::Opened(a) = o {
                    error!(source = %a.addr, "SPA knock admitted but no pinhole opened: {e}");
                    *o = Outcome::NotOpened(a.clone());
                }
            }
        }
        Ok(outcomes)
    }

    /// One datagram's verdict: `Opened` for an admitted knock whose pinhole is still
    /// to open.
    fn check(&mut self, len: usize, from: SocketAddr) -> Outcome {
        let datagram = &self.buf[..len];
        let Ok(admitted) = self.gatekeeper.check(datagram, from.ip(), SystemTime::now()) else {
            return Outcome::Refused;
        };
        if let Some(knockers) = &self.knockers
            && !knockers(admitted.addr)
        {
            warn!(source = %admitted.addr, node = %admitted.node_id, "SPA knock from an address that is not a member's; nothing opened");
            return Outcome::NotOpened(admitted);
        }
        if admitted.access != Access::Ike {
            warn!(source = %admitted.addr, access = ?admitted.access, "SPA knock asks for access this gate does not give; nothing opened");
            return Outcome::NotOpened(admitted);
        }
        Outcome::Opened(admitted)
    }
}
