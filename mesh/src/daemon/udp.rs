//! The IKE sockets and what leaves through them. Nothing is lost silently on the way
//! out: the sockets are bound with buffers sized for the burst a node makes (a start,
//! a healed partition: a datagram or two to every peer at once) and with `IP_RECVERR`
//! on, without which the kernel drops a datagram its device queue has no room for and
//! still reports the send as done. A send the kernel puts off (`EAGAIN`, `ENOBUFS`)
//! waits in the [`Outbox`], in order, and goes again shortly; errors the network
//! reports for datagrams already sent (ICMP unreachable) are read from the socket's
//! error queue, counted and logged.
//!
//! `nix` gives the socket options and `recvmsg(MSG_ERRQUEUE)` safely; tokio's
//! `Interest::ERROR` wakes the reader when the error queue has something.

use nix::libc;
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt};
use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Receive and send buffer of each IKE socket: room for a datagram of about 2 KiB
/// (an `IKE_AUTH` with a certificate, plus the kernel's overhead) to and from each of
/// a thousand peers at once. The kernel caps what an unprivileged process asks for at
/// `net.core.[rw]mem_max`; meshd runs with `CAP_NET_ADMIN` and forces it.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Datagrams the [`Outbox`] holds at most (about 6 MB of the largest); past that a
/// datagram is dropped, counted and logged.
pub const OUTBOX_LIMIT: usize = 4096;

/// The first wait before a put-off datagram goes again; it doubles while the kernel
/// keeps putting sends off, up to [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(1);
const MAX_RETRY_WAIT: Duration = Duration::from_millis(64);
/// A datagram the kernel keeps putting off this long is dropped (counted, logged) so
/// that it does not hold up the ones behind it.
pub const GIVE_UP: Duration = Duration::from_secs(2);

/// Binds an IKE socket on `addr`: non-blocking, [`SOCKET_BUFFER`] each way (forced
/// past the system's maximum where we may, else as much as it allows), `IP_RECVERR`
/// (or `IPV6_RECVERR`) on.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, String> {
    let sock = std::net::UdpSocket::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    sock.set_nonblocking(true).map_err(|e| format!("{addr}: {e}"))?;
    if socket::setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket::setsockopt(&sock, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if socket::setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket::setsockopt(&sock, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    let recverr = if addr.is_ipv4() {
        socket::setsockopt(&sock, sockopt::Ipv4RecvErr, &true)
    } else {
        socket::setsockopt(&sock, sockopt::Ipv6RecvErr, &true)
    };
    recverr.map_err(|e| format!("{addr}: cannot turn on IP_RECVERR: {e}"))?;
    UdpSocket::from_std(sock).map_err(|e| format!("{addr}: {e}"))
}

/// One `sendto` on `sock`, never blocking. Straight to the kernel: tokio's
/// `try_send_to` answers `WouldBlock` without a system call until its reactor has seen
/// the socket writable, which it reports only on a change; the outbox retries on its
/// own clock and needs the kernel's answer every time.
pub fn send_now(sock: &UdpSocket, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
    let addr = SockaddrStorage::from(to);
    socket::sendto(sock.as_raw_fd(), datagram, &addr, MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)
}

/// Counters the socket readers keep (they run on their own tasks).
#[derive(Debug, Default)]
pub struct ReaderCounters {
    /// Errors the network reported for datagrams we sent.
    pub errors_reported: AtomicU64,
}

/// Reads one report from the socket's error queue: the datagram's destination and the
/// error. `WouldBlock` when the queue is empty.
fn read_error(sock: &UdpSocket) -> io::Result<(Option<SocketAddr>, io::Error)> {
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    let msg = socket::recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let to = msg.address.and_then(|a: SockaddrStorage| {
        a.as_sockaddr_in()
            .map(|a| SocketAddr::from(*a))
            .or_else(|| a.as_sockaddr_in6().map(|a| SocketAddr::from(*a)))
    });
    let mut error = io::Error::other("an error report without its error");
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                error = io::Error::from_raw_os_error(i32::try_from(e.ee_errno).unwrap_or(0));
            }
            _ => {}
        }
    }
    Ok((to, error))
}

/// What a socket reader hands the daemon.
#[derive(Debug)]
pub enum Received {
    /// A datagram from a peer.
    Datagram(Vec<u8>, SocketAddr),
    /// The network reported this address's port closed for a datagram we sent.
    PortClosed(SocketAddr),
}

/// Reads datagrams from `sock` and hands each to `deliver` (which waits while the
/// daemon is busy), and empties the error queue as reports arrive, handing on those
/// that say a peer's port is closed. Returns when `deliver` says the daemon is gone.
pub async fn read_loop<F, Fut>(sock: &UdpSocket, counters: &ReaderCounters, mut deliver: F)
where
    F: FnMut(Received) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut buf = vec![0u8; 65_536];
    loop {
        let ready = match sock.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(r) => r,
            Err(e) => {
                warn!("IKE socket: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if ready.is_error() {
            loop {
                match sock.try_io(Interest::ERROR, || read_error(sock)) {
                    Ok((to, error)) => {
                        counters.errors_reported.fetch_add(1, Ordering::Relaxed);
                        let shown = to.map_or_else(|| "?".to_owned(), |a| a.to_string());
                        debug!(to = %shown, "the network reported an error for an IKE datagram: {error}");
                        if let Some(to) = to
                            && error.raw_os_error() == Some(libc::ECONNREFUSED)
                            && !deliver(Received::PortClosed(to)).await
                        {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!("IKE socket's error queue: {e}");
                        break;
                    }
                }
            }
        }
        if ready.is_readable() {
            loop {
                match sock.try_recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if !deliver(Received::Datagram(buf[..n].to_vec(), from)).await {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A report of an earlier datagram's error (its details are in the
                    // error queue, read above): the next read goes on.
                    Err(e) if reported(&e) => {}
                    Err(e) => {
                        debug!("IKE socket: {e}");
                        break;
                    }
                }
            }
        }
    }
}

/// Whether a socket error reports what happened to an earlier datagram (an ICMP error
/// seen through `IP_RECVERR`), rather than to the call that returned it.
pub fn reported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EPROTO
                | libc::EMSGSIZE
        )
    )
}

/// Whether the kernel put a send off for the moment (a full buffer or device queue).
fn put_off(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// One datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Our address (the socket).
    pub local: SocketAddr,
    /// Where to.
    pub remote: SocketAddr,
    /// The bytes.
    pub datagram: Vec<u8>,
    /// An SPA knock, sent from the knock socket of `local`'s address.
    pub knock: bool,
    /// It waited in the outbox (counted once).
    deferred: bool,
    /// When the kernel first put it off.
    put_off_at: Option<Instant>,
}

impl Outgoing {
    /// An IKE datagram from `local` to `remote`.
    pub fn new(local: SocketAddr, remote: SocketAddr, datagram: Vec<u8>) -> Self {
        Self { local, remote, datagram, knock: false, deferred: false, put_off_at: None }
    }

    /// An SPA knock from `local`'s address to `remote`.
    pub fn knock(local: SocketAddr, remote: SocketAddr, datagram: Vec<u8>) -> Self {
        Self { local, remote, datagram, knock: true, deferred: false, put_off_at: None }
    }
}

/// What the [`Outbox`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Datagrams that waited in the outbox: the kernel put them off, or they came
    /// while others waited.
    pub deferred: u64,
    /// Datagrams lost: the outbox was full, or the kernel refused them for good.
    pub failed: u64,
    /// Sends that returned an earlier datagram's reported error (the datagram itself
    /// was sent again at once).
    pub errors_reported: u64,
}

/// Datagrams the kernel put off, in order, and when to try again. Sans-IO: the send
/// itself is a closure, so the rules are tested in memory.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Outgoing>,
    limit: usize,
    retry_at: Option<Instant>,
    wait: Duration,
    counters: OutboxCounters,
    /// Losses not yet logged, and when the last was (one line a second at most).
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Outbox {
    /// An empty outbox holding `limit` datagrams at most.
    pub fn new(limit: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            limit,
            retry_at: None,
            wait: FIRST_RETRY_WAIT,
            counters: OutboxCounters::default(),
            unlogged: 0,
            last_log: None,
        }
    }

    /// Sends `item` with `send`, unless older datagrams wait (it goes behind them).
    pub fn send(
        &mut self,
        now: Instant,
        item: Outgoing,
        send: &mut dyn FnMut(&Outgoing) -> io::Result<usize>,
    ) {
        if !self.queue.is_empty() {
            self.enqueue(now, item);
            return;
        }
        if let Some(item) = self.attempt(now, item, send) {
            self.enqueue(now, item);
            self.arm(now);
        }
    }

    /// Sends what waits, in order, until the kernel puts one off again.
    pub fn flush(&mut self, now: Instant, send: &mut dyn FnMut(&Outgoing) -> io::Result<usize>) {
        if self.retry_at.is_none_or(|t| now < t) {
            return;
        }
        while let Some(item) = self.queue.pop_front() {
            if let Some(item) = self.attempt(now, item, send) {
                self.queue.push_front(item);
                self.wait = (self.wait * 2).min(MAX_RETRY_WAIT);
                self.arm(now);
                return;
            }
        }
        self.retry_at = None;
        self.wait = FIRST_RETRY_WAIT;
    }

    /// When [`Outbox::flush`] wants to be called.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// What was counted so far.
    pub fn counters(&self) -> OutboxCounters {
        self.counters
    }

    /// One send; the datagram back when the kernel put it off.
    fn attempt(
        &mut self,
        now: Instant,
        mut item: Outgoing,
        send: &mut dyn FnMut(&Outgoing) -> io::Result<usize>,
    ) -> Option<Outgoing> {
        // A pending error report of an earlier datagram fails this send once (the
        // kernel hands the error to whichever call comes next): send it again.
        for _ in 0..2 {
            match send(&item) {
                Ok(_) => {
                    self.counters.sent += 1;
                    return None;
                }
                Err(e) if reported(&e) => self.counters.errors_reported += 1,
                Err(e) if put_off(&e) => {
                    let since = *item.put_off_at.get_or_insert(now);
                    if now.saturating_duration_since(since) < GIVE_UP {
                        debug!(to = %item.remote, knock = item.knock, "the kernel put a send off: {e}");
                        return Some(item);
                    }
                    // Refused for a while: something lasting (a full neighbour table
                    // gives ENOBUFS for every new destination), not a burst. The
                    // datagram goes, so that the ones behind it, to other peers, can.
                    let why = format!(
                        "the kernel refused it for {} s ({e}; a full neighbour table does \
                         that: see net.ipv4.neigh.default.gc_thresh3)",
                        GIVE_UP.as_secs()
                    );
                    self.lost(now, &item, &why);
                    return None;
                }
                Err(e) => {
                    self.lost(now, &item, &e.to_string());
                    return None;
                }
            }
        }
        self.lost(now, &item, "the send failed twice with reported errors");
        None
    }

    fn enqueue(&mut self, now: Instant, mut item: Outgoing) {
        if self.queue.len() >= self.limit {
            self.lost(now, &item, "the send queue is full");
            return;
        }
        if !item.deferred {
            item.deferred = true;
            self.counters.deferred += 1;
        }
        self.queue.push_back(item);
    }

    /// Sets the next retry, unless one is still ahead.
    fn arm(&mut self, now: Instant) {
        if self.retry_at.is_none_or(|t| t <= now) {
            self.retry_at = Some(now + self.wait);
        }
    }

    fn lost(&mut self, now: Instant, item: &Outgoing, why: &str) {
        self.counters.failed += 1;
        self.unlogged += 1;
        if self.last_log.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            warn!(
                to = %item.remote,
                lost = self.unlogged,
                "IKE datagrams lost on the way out: {why}"
            );
            self.unlogged = 0;
            self.last_log = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8) -> Outgoing {
        let a: SocketAddr = "10.0.0.1:500".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:500".parse().unwrap();
        Outgoing::new(a, b, vec![n])
    }

    fn os(errno: i32) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn put_off_sends_wait_in_order_and_go_when_the_kernel_takes_them() {
        use std::cell::{Cell, RefCell};
        let now = Instant::now();
        let mut out = Outbox::new(16);
        let wire = RefCell::new(Vec::new());
        let full = Cell::new(true);
        let mut send = |o: &Outgoing| {
            if full.get() {
                return os(libc::ENOBUFS);
            }
            wire.borrow_mut().push(o.datagram[0]);
            Ok(1)
        };
        for n in 0..5 {
            out.send(now, item(n), &mut send);
        }
        assert_eq!(out.len(), 5);
        assert_eq!(out.next_retry(), Some(now + FIRST_RETRY_WAIT));
        // Still full at the first retry: the wait doubles.
        out.flush(now + FIRST_RETRY_WAIT, &mut send);
        assert_eq!(out.next_retry(), Some(now + FIRST_RETRY_WAIT * 3));
        full.set(false);
        out.flush(now + FIRST_RETRY_WAIT, &mut send);
        assert_eq!(out.len(), 5, "nothing before its time");
        out.flush(now + FIRST_RETRY_WAIT * 3, &mut send);
        assert!(out.is_empty() && out.next_retry().is_none());
        assert_eq!(*wire.borrow(), [0, 1, 2, 3, 4], "in the order they were given");
        let c = out.counters();
        assert_eq!((c.sent, c.deferred, c.failed), (5, 5, 0), "{c:?}");
    }

    #[test]
    fn a_new_datagram_waits_behind_older_ones() {
        let now = Instant::now();
        let mut out = Outbox::new(16);
        out.send(now, item(1), &mut |_| os(libc::EAGAIN));
        let mut tried = 0;
        out.send(now, item(2), &mut |_| {
            tried += 1;
            Ok(1)
        });
        assert_eq!((tried, out.len()), (0, 2));
    }

    #[test]
    fn a_full_outbox_and_a_refusal_lose_the_datagram_and_count_it() {
        let now = Instant::now();
        let mut out = Outbox::new(2);
        for n in 0..4 {
            out.send(now, item(n), &mut |_| os(libc::ENOBUFS));
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out.counters().failed, 2);
        let mut out = Outbox::new(2);
        out.send(now, item(0), &mut |_| os(libc::EACCES));
        assert_eq!((out.len(), out.counters().failed, out.counters().sent), (0, 1, 0));
    }

    #[test]
    fn an_earlier_datagrams_error_is_counted_and_this_one_sent_again() {
        let now = Instant::now();
        let mut out = Outbox::new(2);
        let mut calls = 0;
        out.send(now, item(0), &mut |_| {
            calls += 1;
            if calls == 1 { os(libc::ECONNREFUSED) } else { Ok(1) }
        });
        let c = out.counters();
        assert_eq!((calls, c.sent, c.errors_reported, c.failed), (2, 1, 1, 0));
    }

    #[test]
    fn a_datagram_refused_for_long_is_dropped_and_the_rest_go() {
        use std::cell::RefCell;
        let now = Instant::now();
        let mut out = Outbox::new(16);
        let wire = RefCell::new(Vec::new());
        // Datagram 0 is always refused (its destination cannot be resolved); 1 and 2
        // go when tried.
        let mut send = |o: &Outgoing| {
            if o.datagram[0] == 0 {
                return os(libc::ENOBUFS);
            }
            wire.borrow_mut().push(o.datagram[0]);
            Ok(1)
        };
        for n in 0..3 {
            out.send(now, item(n), &mut send);
        }
        let mut t = now;
        while !out.is_empty() && t < now + GIVE_UP * 2 {
            t = out.next_retry().unwrap();
            out.flush(t, &mut send);
        }
        assert!(out.is_empty() && t >= now + GIVE_UP, "{:?}", t - now);
        assert_eq!(*wire.borrow(), [1, 2]);
        assert_eq!((out.counters().failed, out.counters().sent), (1, 2));
    }
}
