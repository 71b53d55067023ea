//! The request side of `NETLINK_XFRM`: one socket, requests with acknowledgements,
//! batches of many requests in one send, and dumps.
//!
//! Batching: netlink lets many messages share one `sendmsg`. The kernel handles them in
//! order and acknowledges each one (`NLM_F_ACK`) with its own sequence number, carrying
//! on after a failure, so every entry's result is known. Batches are cut into chunks so
//! that the acknowledgements always fit in the receive buffer.
//!
//! Spreading a batch over several sockets on several CPUs does not help: the kernel
//! handles every XFRM netlink message of a namespace under one mutex
//! (`xfrm_cfg_mutex`, taken in `xfrm_netlink_rcv`). Tried and measured: 10,000 SA
//! pairs took as long over two sockets as over one.

use crate::Error;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_xfrm::XfrmMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_XFRM};
use nix::errno::Errno;
use std::path::Path;

/// Requests per `sendmsg`. Each acknowledgement takes 36 bytes with `NETLINK_CAP_ACK`,
/// and a message with keys and a template under 400: both far inside the buffers.
pub(crate) const CHUNK: usize = 256;

/// Socket buffer size asked for (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE` as root).
const BUFFER_BYTES: usize = 4 << 20;

/// The outcome of one request in a batch: `Ok`, or the kernel's errno.
pub(crate) type Ack = Result<(), Errno>;

pub(crate) struct Netlink {
    socket: Socket,
    seq: u32,
    out: Vec<u8>,
    inbuf: Vec<u8>,
}

/// Opens a `NETLINK_XFRM` socket, in the network namespace at `netns` if given (a path
/// such as `/run/netns/NAME` or `/proc/PID/ns/net`). A socket belongs to the namespace
/// it was created in, so it is created on a short-lived thread that joins `netns` first;
/// the caller's own thread never changes namespace.
pub(crate) fn open_socket(netns: Option<&Path>, groups: &[u32]) -> Result<Socket, Error> {
    let create = move || -> Result<Socket, Error> {
        let mut socket = Socket::new(NETLINK_XFRM).map_err(|e| {
            if e.raw_os_error() == Some(Errno::EPROTONOSUPPORT as i32) {
                Error::XfrmUnsupported
            } else {
                Error::Io(e)
            }
        })?;
        socket.bind(&SocketAddr::new(0, 0))?;
        // Errors carry only the failed request's header, not the request itself.
        socket.set_cap_ack(true)?;
        for &group in groups {
            socket.add_membership(group)?;
        }
        set_buffers(&socket);
        Ok(socket)
    };
    match netns {
        None => create(),
        Some(path) => {
            let ns = std::fs::File::open(path).map_err(|e| {
                Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            })?;
            std::thread::scope(|scope| {
                scope
                    .spawn(move || {
                        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| Error::Io(std::io::Error::other(format!("setns {e}"))))?;
                        create()
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(Error::Io(std::io::Error::other("socket thread panicked")))
                    })
            })
        }
    }
}

/// Large socket buffers: a batch's acknowledgements, a dump, or a burst of events must
/// not overflow them. Forcing needs `CAP_NET_ADMIN`, which XFRM needs anyway; without it
/// the plain limit (capped by `net.core.rmem_max`) is the fallback.
fn set_buffers(socket: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &BUFFER_BYTES).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &BUFFER_BYTES);
    }
    if setsockopt(socket, sockopt::SndBufForce, &BUFFER_BYTES).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &BUFFER_BYTES);
    }
}

/// Walks the netlink messages of one datagram.
pub(crate) fn messages(
    datagram: &[u8],
) -> impl Iterator<Item = Result<NetlinkMessage<XfrmMessage>, Error>> + '_ {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset + 16 > datagram.len() {
            return None;
        }
        let len = u32::from_ne_bytes(datagram[offset..offset + 4].try_into().ok()?) as usize;
        if len < 16 || offset + len > datagram.len() {
            offset = datagram.len();
            return Some(Err(Error::Decode(format!("netlink length {len} out of bounds"))));
        }
        let slice = &datagram[offset..offset + len];
        offset += (len + 3) & !3;
        Some(
            NetlinkMessage::<XfrmMessage>::deserialize(slice)
                .map_err(|e| Error::Decode(e.to_string())),
        )
    })
}

impl Netlink {
    pub(crate) fn open(netns: Option<&Path>) -> Result<Self, Error> {
        Ok(Self {
            socket: open_socket(netns, &[])?,
            seq: 0,
            out: Vec::with_capacity(64 << 10),
            inbuf: Vec::with_capacity(256 << 10),
        })
    }

    fn push(&mut self, message: XfrmMessage, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let start = self.out.len();
        let len = packet.header.length as usize;
        // Netlink messages are 4-byte aligned within a batch.
        self.out.resize(start + ((len + 3) & !3), 0);
        packet.serialize(&mut self.out[start..start + len]);
        self.seq
    }

    fn send_out(&mut self) -> Result<(), Error> {
        let sent = self.socket.send(&self.out, 0)?;
        if sent != self.out.len() {
            return Err(Error::Io(std::io::Error::other(format!(
                "netlink send wrote {sent} of {} bytes",
                self.out.len()
            ))));
        }
        self.out.clear();
        Ok(())
    }

    /// Receives one datagram into `self.inbuf`.
    fn recv(&mut self) -> Result<(), Error> {
        self.inbuf.clear();
        self.socket.recv(&mut self.inbuf, 0)?;
        Ok(())
    }

    /// Sends every request with `NLM_F_ACK` and returns each one's outcome, in order.
    /// Requests are serialized as the iterator yields them, a chunk at a time.
    pub(crate) fn batch(
        &mut self,
        requests: impl IntoIterator<Item = (XfrmMessage, u16)>,
    ) -> Result<Vec<Ack>, Error> {
        let mut requests = requests.into_iter().peekable();
        let mut results = Vec::with_capacity(requests.size_hint().0);
        while requests.peek().is_some() {
            self.out.clear();
            let first = self.seq.wrapping_add(1).max(1);
            let mut count = 0usize;
            for (message, flags) in requests.by_ref().take(CHUNK) {
                self.push(message, flags | NLM_F_REQUEST | NLM_F_ACK);
                count += 1;
            }
            self.send_out()?;
            let mut acks: Vec<Option<Ack>> = vec![None; count];
            let mut pending = count;
            while pending > 0 {
                self.recv()?;
                for message in messages(&self.inbuf) {
                    let message = message?;
                    let index = message.header.sequence_number.wrapping_sub(first) as usize;
                    if index >= count {
                        continue; // a late answer to an earlier, abandoned request
                    }
                    if let NetlinkPayload::Error(e) = message.payload
                        && acks[index].is_none()
                    {
                        acks[index] = Some(match e.code {
                            None => Ok(()),
                            Some(code) => Err(Errno::from_raw(-code.get())),
                        });
                        pending -= 1;
                    }
                }
            }
            results.extend(acks.into_iter().map(|a| a.unwrap_or(Err(Errno::EIO))));
        }
        Ok(results)
    }

    /// Sends one request and hands each answer to it (same sequence number) to `take`,
    /// until `take` returns a result.
    fn exchange<R>(
        &mut self,
        message: XfrmMessage,
        flags: u16,
        mut take: impl FnMut(NetlinkPayload<XfrmMessage>) -> Option<R>,
    ) -> Result<R, Error> {
        self.out.clear();
        let seq = self.push(message, flags | NLM_F_REQUEST);
        self.send_out()?;
        loop {
            self.recv()?;
            for message in messages(&self.inbuf) {
                let message = message?;
                if message.header.sequence_number == seq
                    && let Some(result) = take(message.payload)
                {
                    return Ok(result);
                }
            }
        }
    }

    /// Sends one request that the kernel answers with a message (a GET).
    pub(crate) fn get(
        &mut self,
        message: XfrmMessage,
    ) -> Result<Result<XfrmMessage, Errno>, Error> {
        self.exchange(message, 0, |payload| match payload {
            NetlinkPayload::InnerMessage(reply) => Some(Ok(reply)),
            NetlinkPayload::Error(e) => {
                Some(Err(e.code.map_or(Errno::EIO, |c| Errno::from_raw(-c.get()))))
            }
            _ => None,
        })
    }

    /// Dumps a table: every message until `NLMSG_DONE`.
    pub(crate) fn dump(&mut self, message: XfrmMessage) -> Result<Vec<XfrmMessage>, Error> {
        let mut entries = Vec::new();
        self.exchange(message, NLM_F_DUMP, |payload| match payload {
            NetlinkPayload::InnerMessage(entry) => {
                entries.push(entry);
                None
            }
            NetlinkPayload::Done(_) => Some(Ok(())),
            NetlinkPayload::Error(e) => {
                e.code.map(|code| Err(Error::from_errno("dump", Errno::from_raw(-code.get()))))
            }
            _ => None,
        })??;
        Ok(entries)
    }
}
