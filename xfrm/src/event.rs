//! The kernel's XFRM notifications as a typed tokio stream.
//!
//! The kernel multicasts ACQUIRE (a policy needs an SA that does not exist), EXPIRE (an
//! SA reached a soft or hard limit), SA and POLICY changes (by anyone, us included).
//! [`Events`] subscribes to the groups asked for and yields one [`Event`] per message.
//! If the kernel had to drop notifications because the reader was slow, the stream
//! yields [`Event::Overrun`]: the caller should then re-read the tables.

use crate::model::{PolicyId, PolicyInfo, SaId, SaInfo, Selector, Template};
use crate::{Error, convert, socket};
use futures_core::Stream;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_xfrm::{
    XFRMNLGRP_ACQUIRE, XFRMNLGRP_EXPIRE, XFRMNLGRP_POLICY, XFRMNLGRP_SA, XfrmAttrs, XfrmMessage,
};
use netlink_sys::Socket;
use nix::errno::Errno;
use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;

/// Which notification groups to subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // four independent switches, named as the kernel names them
pub struct Groups {
    /// `XFRMNLGRP_ACQUIRE`.
    pub acquire: bool,
    /// `XFRMNLGRP_EXPIRE`.
    pub expire: bool,
    /// `XFRMNLGRP_SA`.
    pub sa: bool,
    /// `XFRMNLGRP_POLICY`.
    pub policy: bool,
}

impl Groups {
    /// All four groups.
    pub const ALL: Groups = Groups { acquire: true, expire: true, sa: true, policy: true };
    /// No group; start from it: `Groups { expire: true, ..Groups::NONE }`.
    pub const NONE: Groups = Groups { acquire: false, expire: false, sa: false, policy: false };

    fn numbers(self) -> Vec<u32> {
        [
            (self.acquire, XFRMNLGRP_ACQUIRE),
            (self.expire, XFRMNLGRP_EXPIRE),
            (self.sa, XFRMNLGRP_SA),
            (self.policy, XFRMNLGRP_POLICY),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// One notification from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A policy needs an SA that does not exist: time to negotiate one.
    Acquire {
        /// The packet's flow that triggered it.
        selector: Selector,
        /// The SA the policy's template asks for.
        template: Option<Template>,
        /// The policy's selector and direction.
        policy: PolicyId,
        /// The policy's priority (tells whether it is ours).
        policy_priority: u32,
    },
    /// An SA reached a limit: soft (rekey now) or hard (the kernel deleted it).
    Expire {
        /// The SA.
        sa: SaId,
        /// Its reqid.
        reqid: u32,
        /// Hard (deleted) or soft (warning).
        hard: bool,
    },
    /// An SA was added.
    SaAdded(SaInfo),
    /// An SA was replaced.
    SaUpdated(SaInfo),
    /// An SA was deleted.
    SaDeleted {
        /// The SA.
        sa: SaId,
        /// Its reqid, when the kernel said.
        reqid: Option<u32>,
    },
    /// All SAs (of a protocol) were flushed.
    SasFlushed,
    /// A policy was added.
    PolicyAdded(PolicyInfo),
    /// A policy was replaced.
    PolicyUpdated(PolicyInfo),
    /// A policy was deleted.
    PolicyDeleted {
        /// The policy.
        policy: PolicyId,
        /// Its priority, when the kernel said.
        priority: Option<u32>,
    },
    /// A policy reached a lifetime limit.
    PolicyExpire {
        /// The policy.
        policy: PolicyInfo,
        /// Hard or soft.
        hard: bool,
    },
    /// All policies were flushed.
    PoliciesFlushed,
    /// The kernel dropped notifications because they were not read fast enough.
    Overrun,
    /// A notification of a type not listed here (its netlink message type).
    Other(u16),
}

fn event_from(message: XfrmMessage) -> Event {
    match message {
        XfrmMessage::Acquire(m) => {
            let a = &m.acquire;
            let template = m.nlas.iter().find_map(|n| match n {
                XfrmAttrs::Template(t) => t.first().map(|t| Template {
                    src: convert::addr_from(&t.saddr, t.family),
                    dst: convert::addr_from(&t.id.daddr, t.family),
                    reqid: t.reqid,
                    mode: if t.mode == netlink_packet_xfrm::XFRM_MODE_TUNNEL {
                        crate::Mode::Tunnel
                    } else {
                        crate::Mode::Transport
                    },
                    level: if t.optional != 0 { crate::Level::Use } else { crate::Level::Require },
                }),
                _ => None,
            });
            let policy = convert::policy_info(&a.policy, &[]);
            Event::Acquire {
                selector: convert::selector_from(&a.selector),
                template,
                policy: policy.id,
                policy_priority: policy.priority,
            }
        }
        XfrmMessage::Expire(m) => {
            let s = &m.expire.state;
            Event::Expire {
                sa: SaId {
                    dst: convert::addr_from(&s.id.daddr, s.family),
                    spi: s.id.spi,
                    src: convert::addr_from(&s.saddr, s.family),
                    mark: None,
                },
                reqid: s.reqid,
                hard: m.expire.hard != 0,
            }
        }
        XfrmMessage::AddSa(m) => {
            convert::sa_info(&m.user_sa_info, &m.nlas).map_or(Event::Other(16), Event::SaAdded)
        }
        XfrmMessage::UpdateSa(m) => {
            convert::sa_info(&m.user_sa_info, &m.nlas).map_or(Event::Other(26), Event::SaUpdated)
        }
        XfrmMessage::DeleteSa(m) => {
            let full = m.nlas.iter().find_map(|n| match n {
                XfrmAttrs::SaInfo(info) => Some(info),
                _ => None,
            });
            let id = &m.user_sa_id;
            let src = full.map_or_else(
                || {
                    if id.family == convert::AF_INET6 {
                        "::".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED.into())
                    } else {
                        std::net::Ipv4Addr::UNSPECIFIED.into()
                    }
                },
                |i| convert::addr_from(&i.saddr, i.family),
            );
            Event::SaDeleted {
                sa: SaId {
                    dst: convert::addr_from(&id.daddr, id.family),
                    spi: id.spi,
                    src,
                    mark: None,
                },
                reqid: full.map(|i| i.reqid),
            }
        }
        XfrmMessage::FlushSa(_) => Event::SasFlushed,
        XfrmMessage::AddPolicy(m) => {
            Event::PolicyAdded(convert::policy_info(&m.user_policy_info, &m.nlas))
        }
        XfrmMessage::UpdatePolicy(m) => {
            Event::PolicyUpdated(convert::policy_info(&m.user_policy_info, &m.nlas))
        }
        XfrmMessage::DeletePolicy(m) => {
            let full = m.nlas.iter().find_map(|n| match n {
                XfrmAttrs::PolicyInfo(info) => Some(info),
                _ => None,
            });
            let id = &m.user_policy_id;
            Event::PolicyDeleted {
                policy: PolicyId {
                    selector: convert::selector_from(&id.selector),
                    dir: convert::dir_from(id.direction),
                    mark: None,
                },
                priority: full.map(|i| i.priority),
            }
        }
        XfrmMessage::PolicyExpire(m) => Event::PolicyExpire {
            policy: convert::policy_info(&m.expire.pol, &m.nlas),
            hard: m.expire.hard != 0,
        },
        XfrmMessage::FlushPolicy(_) => Event::PoliciesFlushed,
        other => Event::Other(other.message_type()),
    }
}

/// A subscription to XFRM notifications. Create it inside a tokio runtime.
pub struct Events {
    fd: AsyncFd<Socket>,
    queue: VecDeque<Event>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("queued", &self.queue.len()).finish_non_exhaustive()
    }
}

impl Events {
    /// Subscribes, in the caller's network namespace.
    pub fn open(groups: Groups) -> Result<Self, Error> {
        Self::from_socket(socket::open_socket(None, &groups.numbers())?)
    }

    /// Subscribes, in the network namespace at `netns`.
    pub fn open_in(netns: &Path, groups: Groups) -> Result<Self, Error> {
        Self::from_socket(socket::open_socket(Some(netns), &groups.numbers())?)
    }

    fn from_socket(socket: Socket) -> Result<Self, Error> {
        socket.set_non_blocking(true)?;
        Ok(Self {
            fd: crate::fd::register(socket)?,
            queue: VecDeque::new(),
            buf: Vec::with_capacity(64 << 10),
        })
    }

    /// The next event.
    pub async fn next(&mut self) -> Result<Event, Error> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, Error>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Poll::Ready(Ok(event));
            }
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            self.buf.clear();
            let buf = &mut self.buf;
            match guard.try_io(|socket| socket.get_ref().recv(buf, 0)) {
                Err(_would_block) => {}
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                    return Poll::Ready(Ok(Event::Overrun));
                }
                Ok(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Ok(Ok(_)) => {
                    for message in socket::messages(&self.buf) {
                        // A message this crate cannot read is skipped, not fatal: the
                        // stream must outlive kernel versions with new attributes.
                        let Ok(message) = message else { continue };
                        match message.payload {
                            NetlinkPayload::InnerMessage(m) => self.queue.push_back(event_from(m)),
                            NetlinkPayload::Overrun(_) => self.queue.push_back(Event::Overrun),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

impl Stream for Events {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx).map(Some)
    }
}
