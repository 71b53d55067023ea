//! Why an IKE SA, an exchange or a child SA failed, and what we tell the peer about it.
//!
//! [`Error`] is what the public API reports: [`Event::Failed`](crate::sa::Event::Failed)
//! and the other failure events carry one, and its `Display` is one line, fit for a
//! log. [`Error::notify`] is the one mapping from an error to the error notification we
//! send on the wire (RFC 7296 section 3.10.1): the exchanges build their refusals from
//! it rather than picking a Notify type by hand.

use crate::crypto::dh::{DhError, Group};
use crate::wire::{
    self, ExchangeType,
    notify::{NotifyRepr, NotifyType},
    sa::ProtocolId,
};
use std::time::Duration;

/// Why something failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An authentic message of the peer could not be parsed (sections 2.5 and 2.21.2).
    #[error("{exchange:?}: the peer's message is malformed: {error}")]
    Malformed {
        /// The exchange the message belongs to.
        exchange: ExchangeType,
        /// What is wrong with it.
        error: wire::Error,
    },
    /// The peer did something the protocol does not allow.
    #[error("{0}")]
    PeerMisbehaved(#[from] Misbehavior),
    /// No proposal of the peer's is acceptable to us: the algorithms, or the mode of a
    /// child SA (a mesh only does transport mode).
    #[error("no proposal acceptable to us")]
    NoProposalChosen,
    /// The peer's KE payload is not of the group we chose: it should send one of this
    /// group (section 1.2).
    #[error("the peer's KE payload is not of the chosen group {0:?}")]
    InvalidKe(Group),
    /// The peer's traffic selectors do not include the two hosts.
    #[error("the peer's traffic selectors do not include the two hosts")]
    TsUnacceptable,
    /// Authentication failed, one way or the other.
    #[error("IKE_AUTH: {0}")]
    Authentication(#[from] AuthFailure),
    /// The peer did not answer our request, however often it was sent.
    #[error("the peer did not answer ({sends} sends over {} s)", .over.as_secs())]
    Timeout {
        /// How many times the request was sent.
        sends: u32,
        /// From the first send to giving up.
        over: Duration,
    },
    /// A responder SA the peer did not finish (`IKE_AUTH`) in time was dropped.
    #[error("the peer did not complete IKE_AUTH in time (half-open SA dropped)")]
    HalfOpenExpired,
    /// The peer refused our request with this error notification.
    #[error("the peer refused: {0:?}")]
    PeerRefused(NotifyType),
    /// The peer answered `TEMPORARY_FAILURE` every time we asked (section 2.25).
    #[error("the peer stayed busy")]
    PeerBusy,
    /// The peer has no child SA with the SPI we named.
    #[error("the peer has no such child SA")]
    PeerChildSaNotFound,
    /// We are busy with an exchange the request would straddle (a rekey): the peer is to
    /// ask again later (`TEMPORARY_FAILURE`, section 2.25).
    #[error("busy with a colliding exchange")]
    Busy,
    /// The peer asked about a child SA we do not have, by the SPI it receives on (our
    /// outbound SPI).
    #[error("no child SA with outbound SPI {0:#010x}")]
    ChildSaNotFound(u32),
    /// The IKE SA was deleted by the peer (an orderly end).
    #[error("deleted by the peer")]
    DeletedByPeer,
    /// The IKE SA was deleted by us (an orderly end).
    #[error("deleted by us")]
    DeletedByUs,
}

/// How the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misbehavior {
    /// A request lacks a payload it must have, or its payloads contradict each other.
    #[error("the peer's request is not well formed: {0}")]
    InvalidRequest(&'static str),
    /// The peer's answer to our request is not one we can accept.
    #[error("{0}")]
    BadAnswer(&'static str),
    /// The peer's D-H public value is not valid.
    #[error("the peer's D-H public value: {0}")]
    InvalidKe(#[from] DhError),
    /// The peer asked for a KE of a D-H group we did not offer.
    #[error("the peer asked for a D-H group we did not offer")]
    UnofferedGroup,
    /// The peer asked for a cookie again and again (section 2.6).
    #[error("the peer keeps asking for a cookie")]
    CookieLoop,
    /// The peer sent a COOKIE of a length section 2.6 does not allow.
    #[error("the peer sent a COOKIE of a length RFC 7296 does not allow")]
    BadCookie,
}

/// Why `IKE_AUTH` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The peer's identity or certificates were refused by the
    /// [`PeerAuthenticator`](crate::sa::PeerAuthenticator): its one-line message.
    #[error("peer not authenticated: {0}")]
    Certificate(String),
    /// The peer's AUTH payload did not verify with its key, or its method or algorithm
    /// is not accepted.
    #[error("peer not authenticated: {0}")]
    Signature(String),
    /// The peer's message lacks a payload authentication needs.
    #[error("peer not authenticated: no {0} payload")]
    Missing(&'static str),
    /// We cannot sign anything this peer would accept.
    #[error("cannot authenticate ourselves: {0}")]
    Ourselves(String),
    /// The peer answered `AUTHENTICATION_FAILED`.
    #[error("the peer refused our authentication (AUTHENTICATION_FAILED)")]
    Refused,
}

impl Error {
    /// The error notification we send the peer for this error, if we send one: the one
    /// mapping from errors to Notify types.
    pub fn notify(&self) -> Option<NotifyType> {
        Some(match self {
            Error::Malformed { error: wire::Error::UnsupportedCriticalPayload(_), .. } => {
                NotifyType::UnsupportedCriticalPayload
            }
            Error::Malformed { .. }
            | Error::PeerMisbehaved(Misbehavior::InvalidRequest(_) | Misbehavior::InvalidKe(_)) => {
                NotifyType::InvalidSyntax
            }
            Error::NoProposalChosen => NotifyType::NoProposalChosen,
            Error::InvalidKe(_) => NotifyType::InvalidKePayload,
            Error::TsUnacceptable => NotifyType::TsUnacceptable,
            Error::Authentication(_) => NotifyType::AuthenticationFailed,
            Error::Busy => NotifyType::TemporaryFailure,
            Error::ChildSaNotFound(_) => NotifyType::ChildSaNotFound,
            _ => return None,
        })
    }

    /// The Notify payload of [`Error::notify`], with its SPI and data: the payload type
    /// for `UNSUPPORTED_CRITICAL_PAYLOAD`, the group we want for `INVALID_KE_PAYLOAD`,
    /// the child SA's SPI for `CHILD_SA_NOT_FOUND`.
    pub fn notify_payload(&self) -> Option<NotifyRepr> {
        let kind = self.notify()?;
        Some(match self {
            Error::Malformed { error: wire::Error::UnsupportedCriticalPayload(t), .. } => {
                NotifyRepr::new(kind, vec![*t])
            }
            Error::InvalidKe(group) => NotifyRepr::new(kind, group.id().to_be_bytes().to_vec()),
            Error::ChildSaNotFound(spi) => NotifyRepr {
                protocol: Some(ProtocolId::Esp),
                spi: spi.to_be_bytes().to_vec(),
                kind,
                data: Vec::new(),
            },
            _ => NotifyRepr::new(kind, Vec::new()),
        })
    }

    /// The payloads of a response that refuses a request for this reason: its Notify
    /// payload, or nothing.
    pub(crate) fn refusal(&self) -> Vec<wire::Payload> {
        self.notify_payload().map(wire::Payload::Notify).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_notifications_we_send() {
        let malformed = |error| Error::Malformed { exchange: ExchangeType::IkeAuth, error };
        let cases = [
            (malformed(wire::Error::UnsupportedCriticalPayload(99)), Some((1, vec![99]))),
            (malformed(wire::Error::UnsupportedMajorVersion(3)), Some((7, vec![]))),
            (Misbehavior::InvalidRequest("no nonce").into(), Some((7, vec![]))),
            (Error::NoProposalChosen, Some((14, vec![]))),
            (Error::InvalidKe(Group::Ecp256), Some((17, vec![0, 19]))),
            (AuthFailure::Missing("AUTH").into(), Some((24, vec![]))),
            (Error::TsUnacceptable, Some((38, vec![]))),
            (Error::Busy, Some((43, vec![]))),
            (Error::Timeout { sends: 5, over: Duration::from_secs(70) }, None),
            (Error::PeerRefused(NotifyType::NoProposalChosen), None),
            (Misbehavior::CookieLoop.into(), None),
            (Error::DeletedByPeer, None),
        ];
        for (error, want) in cases {
            let got = error.notify_payload().map(|n| (u16::from(n.kind), n.data));
            assert_eq!(got, want, "{error}");
            assert!(!error.to_string().contains('\n'));
        }
        let n = Error::ChildSaNotFound(0x1234_5678).notify_payload().unwrap();
        assert_eq!(
            (n.kind, n.protocol, n.spi),
            (NotifyType::ChildSaNotFound, Some(ProtocolId::Esp), vec![0x12, 0x34, 0x56, 0x78])
        );
        assert_eq!(
            Error::Timeout { sends: 5, over: Duration::from_secs(70) }.to_string(),
            "the peer did not answer (5 sends over 70 s)"
        );
    }
}
