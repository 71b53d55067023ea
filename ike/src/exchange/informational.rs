//! `INFORMATIONAL` (RFC 7296 sections 1.4 and 1.5): deletes of the IKE SA or of child
//! SAs, liveness checks, and private use status notifications.
//!
//! ```text
//! delete IKE SA:   HDR, SK {D(IKE)}                  -->  <--  HDR, SK {}
//! delete child:    HDR, SK {D(ESP, SPI in)}          -->  <--  HDR, SK {D(ESP, SPI in)}
//! liveness:        HDR, SK {}                        -->  <--  HDR, SK {}
//! private notify:  HDR, SK {N(40960..=65535, data)}  -->  <--  HDR, SK {}
//! ```
//!
//! This module builds the requests and sorts out the peer's; the IKE SA keeps the
//! books (which children exist, which events to raise).

use crate::wire::{
    Payload,
    delete::DeleteRepr,
    notify::{NotifyRepr, NotifyType},
    sa::ProtocolId,
};

/// The request that deletes the IKE SA it is sent on (and so its children).
pub fn delete_ike() -> Vec<Payload> {
    vec![Payload::Delete(DeleteRepr { protocol: ProtocolId::Ike, spis: vec![] })]
}

/// The request that deletes a child SA, named by our inbound SPI.
pub fn delete_child(spi_in: u32) -> Vec<Payload> {
    vec![Payload::Delete(DeleteRepr {
        protocol: ProtocolId::Esp,
        spis: vec![spi_in.to_be_bytes()],
    })]
}

/// The request of a liveness check: empty.
pub fn liveness() -> Vec<Payload> {
    Vec::new()
}

/// The request of a private use status notification: one Notify payload without
/// protocol or SPI.
pub fn notify(kind: u16, data: Vec<u8>) -> Vec<Payload> {
    vec![Payload::Notify(NotifyRepr::new(NotifyType::from(kind), data))]
}

/// One thing the peer's `INFORMATIONAL` request asks besides deleting the IKE SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A Delete payload for child SAs, by the peer's inbound SPIs (our outbound SPIs).
    DeleteChildren(Vec<u32>),
    /// A private use status notification: Notify Message Type and data.
    Notify(u16, Vec<u8>),
}

/// What the peer's `INFORMATIONAL` request asks. Other notifications are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// It deletes the IKE SA it came on.
    pub delete_ike: bool,
    /// The rest, in the order of the request's payloads.
    pub items: Vec<Item>,
}

impl Request {
    /// Sorts out a request's payloads.
    pub fn parse(payloads: &[Payload]) -> Self {
        let mut r = Request::default();
        for p in payloads {
            match p {
                Payload::Delete(d) if d.protocol == ProtocolId::Ike => r.delete_ike = true,
                Payload::Delete(d) if d.protocol == ProtocolId::Esp => {
                    let spis = d.spis.iter().map(|s| u32::from_be_bytes(*s)).collect();
                    r.items.push(Item::DeleteChildren(spis));
                }
                Payload::Notify(n) if n.kind.is_private_use_status() => {
                    r.items.push(Item::Notify(n.kind.into(), n.data.clone()));
                }
                _ => {}
            }
        }
        r
    }

    /// Our response: empty for a delete of the IKE SA (section 1.4.1); otherwise, for
    /// each of the request's Delete payloads in turn, one with our inbound SPIs of the
    /// children we deleted for it (`deleted`, in the same order), if any.
    pub fn response(&self, deleted: Vec<Vec<[u8; 4]>>) -> Vec<Payload> {
        if self.delete_ike {
            return Vec::new();
        }
        deleted
            .into_iter()
            .filter(|spis| !spis.is_empty())
            .map(|spis| Payload::Delete(DeleteRepr { protocol: ProtocolId::Esp, spis }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sorted_out_and_answered() {
        let mut payloads = delete_child(0x1234_5678);
        payloads.extend(notify(40960, b"use".to_vec()));
        payloads.push(Payload::Notify(NotifyRepr::new(NotifyType::InitialContact, vec![])));
        payloads.extend(delete_child(7));
        let r = Request::parse(&payloads);
        let items = vec![
            Item::DeleteChildren(vec![0x1234_5678]),
            Item::Notify(40960, b"use".to_vec()),
            Item::DeleteChildren(vec![7]),
        ];
        assert_eq!(r, Request { delete_ike: false, items });
        let mut answer = delete_child(256);
        answer.extend(delete_child(300));
        assert_eq!(r.response(vec![vec![[0, 0, 1, 0]], vec![], vec![[0, 0, 1, 44]]]), answer);
        assert!(r.response(vec![vec![], vec![]]).is_empty());
        let mut both = delete_ike();
        both.extend(delete_child(300));
        let r = Request::parse(&both);
        assert!(r.delete_ike && r.response(vec![vec![[0, 0, 1, 0]]]).is_empty());
        assert_eq!(Request::parse(&liveness()), Request::default());
    }
}
