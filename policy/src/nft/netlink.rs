//! Set-element changes to our table over `nf_tables` netlink, in this process.
//!
//! The pinholes change with every admitted knock and every IKE SA that comes up or
//! ends. Through the `nft` program each change was a process: at a 100-node mesh's
//! start the nodes' `nft` runs took as much CPU as all their daemons' handshakes
//! together. So the element changes go to the kernel here, in one netlink batch (one
//! `nf_tables` transaction, all or nothing), as `nft` itself sends them. The table,
//! chain and rules stay with `nft` (see [`super`]): they change once per start.
//!
//! Written by hand because no well-kept crate does it without C: the `nftables` crate
//! drives the `nft` program, and `nftnl`/`mnl` bind the C libraries libnftnl and libmnl.
//! The messages are a handful of fixed attributes (`linux/netfilter/nf_tables.h`,
//! `linux/netfilter/nfnetlink.h`); `netlink-sys` gives the socket.

use std::io;
use std::net::IpAddr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};

/// A batch this long always fits a netlink socket's default send buffer.
const SMALL_BATCH: usize = 64 * 1024;

// netlink (linux/netlink.h)
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSGERR_ATTR_MSG: u16 = 1;
const HEADER_LEN: usize = 16;

// nfnetlink (linux/netfilter/nfnetlink.h)
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;
const AF_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;

// nf_tables (linux/netfilter/nf_tables.h)
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;

/// One element change in a set of our `inet` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetElem<'a> {
    /// Add (with a timeout in milliseconds, or the set's default) or delete.
    pub op: Op,
    /// The set's name.
    pub set: &'a str,
    /// The element: an address, IPv4 in the `*4` sets, IPv6 in the `*6` ones.
    pub addr: IpAddr,
}

/// What to do with an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `add element`: no error when it is there already (and its timeout stays).
    Add(Option<u64>),
    /// `delete element`: an error when it is not there.
    Delete,
}

/// The kernel's refusal of a batch: its errno and, where it gave one, its own words.
#[derive(Debug)]
pub(super) struct Refused {
    pub error: io::Error,
    pub message: Option<String>,
}

impl From<io::Error> for Refused {
    fn from(error: io::Error) -> Self {
        Self { error, message: None }
    }
}

/// Makes `changes` in the `inet` table `table`, in order, as one transaction.
pub(super) fn apply(table: &str, changes: &[SetElem<'_>]) -> Result<(), Refused> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // Errors short (the header of the message, not all of it), with the kernel's text.
    socket.set_cap_ack(true)?;
    socket.set_ext_ack(true)?;
    let seq = first_seq();
    let batch = encode(table, changes, seq);
    // A batch is one datagram, which must fit the send buffer: a burst of thousands of
    // changes (a node with a thousand peers restarting) passes the default 208 KiB.
    // With CAP_NET_ADMIN, which changing nftables needs anyway, the buffer is raised.
    if batch.len() > SMALL_BATCH {
        let want = batch.len() + 4096;
        setsockopt(&socket, sockopt::SndBufForce, &want).map_err(io::Error::from)?;
    }
    let sent = socket.send(&batch, 0)?;
    if sent != batch.len() {
        return Err(io::Error::other("the kernel took part of the batch").into());
    }
    // The kernel handles a netfilter batch while we send it, so its answers are
    // queued by now: read them without waiting.
    socket.set_non_blocking(true)?;
    let last = seq + u32::try_from(changes.len()).unwrap_or(u32::MAX);
    let mut answered = false;
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match socket.recv(&mut buf, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.into()),
        }
        for (seq_of, errno, message) in errors(&buf) {
            if errno != 0 {
                return Err(Refused { error: io::Error::from_raw_os_error(errno), message });
            }
            answered |= seq_of == last;
        }
    }
    if answered {
        Ok(())
    } else {
        Err(io::Error::other("the kernel did not answer the change").into())
    }
}

/// A sequence number for this batch's first message: only this socket sees it.
fn first_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1 << 16, Ordering::Relaxed)
}

/// The batch: begin (at `seq`), one message per change (`seq + 1` ..), end. Only the
/// last change asks for an acknowledgement: errors are always answered, and the last
/// one's answer means the kernel went through the whole batch.
fn encode(table: &str, changes: &[SetElem<'_>], seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + changes.len() * 96);
    let subsys = NFNL_SUBSYS_NFTABLES.to_be();
    message(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, AF_UNSPEC, subsys, |_| {});
    let mut seq_of = seq;
    for (i, c) in changes.iter().enumerate() {
        seq_of += 1;
        let (kind, mut flags) = match c.op {
            Op::Add(_) => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE),
            Op::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
        };
        if i + 1 == changes.len() {
            flags |= NLM_F_ACK;
        }
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
        message(&mut buf, kind, flags, seq_of, NFPROTO_INET, 0, |b| {
            attr(b, NFTA_SET_ELEM_LIST_TABLE, &nul_terminated(table));
            attr(b, NFTA_SET_ELEM_LIST_SET, &nul_terminated(c.set));
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                nested(b, NFTA_LIST_ELEM, |b| {
                    nested(b, NFTA_SET_ELEM_KEY, |b| match c.addr {
                        IpAddr::V4(a) => attr(b, NFTA_DATA_VALUE, &a.octets()),
                        IpAddr::V6(a) => attr(b, NFTA_DATA_VALUE, &a.octets()),
                    });
                    if let Op::Add(Some(ms)) = c.op {
                        attr(b, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                    }
                });
            });
        });
    }
    message(&mut buf, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq_of + 1, AF_UNSPEC, subsys, |_| {});
    buf
}

/// Appends one netlink message with an `nfgenmsg` header and `body`'s attributes.
fn message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // length, below
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    buf.extend_from_slice(&[family, NFNETLINK_V0]);
    buf.extend_from_slice(&res_id.to_ne_bytes());
    body(buf);
    set_len(buf, start);
}

fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).expect("a short attribute");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

fn nested(buf: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 2]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    body(buf);
    let len = u16::try_from(buf.len() - start).expect("a short attribute");
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn set_len(buf: &mut [u8], start: usize) {
    let len = u32::try_from(buf.len() - start).expect("a short message");
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

/// The `NLMSG_ERROR` answers in `buf`: the sequence number each answers, its errno
/// (0 for an acknowledgement) and the kernel's message, if any.
fn errors(buf: &[u8]) -> Vec<(u32, i32, Option<String>)> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + HEADER_LEN <= buf.len() {
        let u16_at = |i: usize| u16::from_ne_bytes([buf[i], buf[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let len = u32_at(at) as usize;
        if len < HEADER_LEN || at + len > buf.len() {
            break;
        }
        let (kind, flags) = (u16_at(at + 4), u16_at(at + 6));
        // The error code, then the header of the message it answers.
        if kind == NLMSG_ERROR && len >= HEADER_LEN + 4 + HEADER_LEN {
            let body = at + HEADER_LEN;
            let errno =
                -i32::from_ne_bytes([buf[body], buf[body + 1], buf[body + 2], buf[body + 3]]);
            let seq = u32_at(body + 4 + 8);
            let message = if flags & NLM_F_ACK_TLVS != 0 {
                ext_ack_message(&buf[body + 4 + HEADER_LEN..at + len])
            } else {
                None
            };
            found.push((seq, errno, message));
        }
        at += (len + 3) & !3;
    }
    found
}

/// `NLMSGERR_ATTR_MSG` among an error's extended-ack attributes.
fn ext_ack_message(mut attrs: &[u8]) -> Option<String> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &attrs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|s| !s.is_empty());
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The bytes `nft` sends for `add element inet t s { 10.0.0.1 timeout 30s }` and
    /// `delete element inet t s6 { ::1 }` (the fields that matter: types, flags,
    /// families, nesting, lengths), written out by hand from the kernel's headers.
    #[test]
    fn a_batch_is_encoded_as_the_kernel_reads_it() {
        let changes = [
            SetElem {
                op: Op::Add(Some(30_000)),
                set: "s",
                addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            },
            SetElem { op: Op::Delete, set: "s6", addr: Ipv6Addr::LOCALHOST.into() },
        ];
        let b = encode("t", &changes, 7);
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);

        // Batch begin: 20 bytes, subsystem nf_tables in network order.
        assert_eq!((u32_at(0), u16_at(4), u16_at(6), u32_at(8)), (20, 0x10, 1, 7));
        assert_eq!(&b[16..20], &[0, 0, 0, 10]);

        // The add: header, nfgenmsg (inet), table "t\0", set "s\0", elements.
        let m = 20;
        let add_len = u32_at(m) as usize;
        assert_eq!((u16_at(m + 4), u16_at(m + 6), u32_at(m + 8)), (0x0a0c, 0x401, 8));
        assert_eq!(&b[m + 16..m + 20], &[1, 0, 0, 0]);
        assert_eq!(&b[m + 20..m + 28], &[6, 0, 1, 0, b't', 0, 0, 0]);
        assert_eq!(&b[m + 28..m + 36], &[6, 0, 2, 0, b's', 0, 0, 0]);
        // elements { elem { key { value 10.0.0.1 } timeout 30000 ms (be64) } }
        let e = m + 36;
        assert_eq!((u16_at(e), u16_at(e + 2)), (32, 0x8003));
        assert_eq!((u16_at(e + 4), u16_at(e + 6)), (28, 0x8001));
        assert_eq!((u16_at(e + 8), u16_at(e + 10)), (12, 0x8001));
        assert_eq!((u16_at(e + 12), u16_at(e + 14)), (8, 1));
        assert_eq!(&b[e + 16..e + 20], &[10, 0, 0, 1]);
        assert_eq!((u16_at(e + 20), u16_at(e + 22)), (12, 4));
        assert_eq!(&b[e + 24..e + 32], &30_000u64.to_be_bytes());
        assert_eq!(add_len, 36 + 32);

        // The delete, last: asks for the acknowledgement; IPv6 key of 16 bytes.
        let d = m + add_len;
        let del_len = u32_at(d) as usize;
        assert_eq!((u16_at(d + 4), u16_at(d + 6), u32_at(d + 8)), (0x0a0e, 0x5, 9));
        assert_eq!(&b[d + 28..d + 36], &[7, 0, 2, 0, b's', b'6', 0, 0]);
        let e = d + 36;
        assert_eq!((u16_at(e + 12), u16_at(e + 14)), (20, 1));
        assert_eq!(&b[e + 16..e + 32], &Ipv6Addr::LOCALHOST.octets());

        // Batch end.
        let end = d + del_len;
        assert_eq!((u32_at(end), u16_at(end + 4), u32_at(end + 8)), (20, 0x11, 10));
        assert_eq!(b.len(), end + 20);
    }

    #[test]
    fn answers_are_read_with_the_kernels_message() {
        // An acknowledgement of seq 5, then ENOENT for seq 6 with "No such set".
        let mut buf = Vec::new();
        for (seq, errno, text) in [(5u32, 0i32, None), (6, 2, Some("No such set"))] {
            let start = buf.len();
            let flags = if text.is_some() { NLM_F_ACK_TLVS } else { 0 };
            buf.extend_from_slice(&[0; 4]);
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&flags.to_ne_bytes());
            buf.extend_from_slice(&[0; 8]);
            buf.extend_from_slice(&(-errno).to_ne_bytes());
            // The answered message's header.
            buf.extend_from_slice(&[0; 8]);
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&[0; 4]);
            if let Some(text) = text {
                attr(&mut buf, NLMSGERR_ATTR_MSG, &nul_terminated(text));
            }
            set_len(&mut buf, start);
        }
        let found = errors(&buf);
        assert_eq!(found, vec![(5, 0, None), (6, 2, Some("No such set".to_owned()))]);
        // A truncated answer is not read past its end.
        assert_eq!(errors(&buf[..buf.len() - 3]), vec![(5, 0, None)]);
    }
}
