//! The generic payload header (RFC 7296 section 3.2) and the payload chain.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Payload  |C|  RESERVED   |         Payload Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Each payload names the type of the one after it; the IKE header names the first.
//! [`Payloads`] walks such a chain and yields each payload or an error; it stops after
//! an SK (or SKF) payload, which must come last and whose Next Payload field names the
//! first payload *inside* it, and it refuses bytes after the end of the chain.

use super::{
    Error, Reader, Result, Writer, auth::AuthRepr, cert::CertRepr, delete::DeleteRepr, id::IdRepr,
    ke::KeRepr, len16, nonce::NonceRepr, notify::NotifyRepr, sa::SaRepr, sk::SkRepr, ts::TsRepr,
};
use crate::wire::PayloadType;

mod field {
    pub(super) const NEXT_PAYLOAD: usize = 0;
    pub(super) const FLAGS: usize = 1;
    pub(super) const LENGTH: core::ops::Range<usize> = 2..4;
}

/// Length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;

const CRITICAL: u8 = 0x80;

/// A view of one payload: its generic header and body.
#[derive(Debug, Clone)]
pub struct GenericPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GenericPacket<T> {
    /// Wraps a buffer that starts with a payload; checks that its length field fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the header is there and that the Payload Length covers at least the
    /// header and at most the buffer.
    pub fn check_len(&self) -> Result<()> {
        let available = self.buffer.as_ref().len();
        if available < GENERIC_HEADER_LEN {
            return Err(Error::Truncated { needed: GENERIC_HEADER_LEN, available });
        }
        let length = usize::from(self.length());
        if length < GENERIC_HEADER_LEN {
            return Err(Error::BadLength { what: "payload", length, minimum: GENERIC_HEADER_LEN });
        }
        if length > available {
            return Err(Error::Truncated { needed: length, available });
        }
        Ok(())
    }

    /// Type of the next payload.
    pub fn next_payload(&self) -> PayloadType {
        self.buffer.as_ref()[field::NEXT_PAYLOAD].into()
    }

    /// The critical bit.
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & CRITICAL != 0
    }

    /// Payload Length, header included.
    pub fn length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The payload's body, after the generic header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[GENERIC_HEADER_LEN..usize::from(self.length())]
    }
}

/// One payload of a chain, not yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// Its type (from the previous payload's header, or the IKE header).
    pub kind: PayloadType,
    /// The critical bit.
    pub critical: bool,
    /// For SK and SKF payloads, the type of the first payload inside; otherwise the next
    /// payload's type.
    pub next: PayloadType,
    /// The body.
    pub body: &'a [u8],
}

/// Walks a payload chain. Yields `Err` once and then stops on malformed input.
#[derive(Debug, Clone)]
pub struct Payloads<'a> {
    data: &'a [u8],
    next: PayloadType,
    done: bool,
}

impl<'a> Payloads<'a> {
    /// A chain starting with a payload of type `first`.
    pub fn new(first: PayloadType, data: &'a [u8]) -> Self {
        Self { data, next: first, done: false }
    }

    fn step(&mut self) -> Option<Result<RawPayload<'a>>> {
        if self.next == PayloadType::NoNextPayload {
            self.done = true;
            return match self.data.len() {
                0 => None,
                extra => Some(Err(Error::TrailingBytes { what: "payload chain", extra })),
            };
        }
        let packet = match GenericPacket::new_checked(self.data) {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let length = usize::from(packet.length());
        let raw = RawPayload {
            kind: self.next,
            critical: packet.critical(),
            next: packet.next_payload(),
            body: &self.data[GENERIC_HEADER_LEN..length],
        };
        self.data = &self.data[length..];
        self.next = raw.next;
        if matches!(raw.kind, PayloadType::Encrypted | PayloadType::EncryptedFragment) {
            // SK and SKF come last; their Next Payload names what is inside them.
            self.next = PayloadType::NoNextPayload;
        }
        Some(Ok(raw))
    }
}

impl<'a> Iterator for Payloads<'a> {
    type Item = Result<RawPayload<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if matches!(item, Some(Err(_))) {
            self.done = true;
        }
        item
    }
}

/// A payload, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// Security Association.
    Sa(SaRepr),
    /// Key Exchange.
    Ke(KeRepr),
    /// Identification - Initiator.
    IdI(IdRepr),
    /// Identification - Responder.
    IdR(IdRepr),
    /// Certificate.
    Cert(CertRepr),
    /// Certificate Request (same layout as a certificate: encoding and data).
    CertReq(CertRepr),
    /// Authentication.
    Auth(AuthRepr),
    /// Nonce.
    Nonce(NonceRepr),
    /// Notify.
    Notify(NotifyRepr),
    /// Delete.
    Delete(DeleteRepr),
    /// Vendor ID.
    VendorId(Vec<u8>),
    /// Traffic Selector - Initiator.
    TsI(TsRepr),
    /// Traffic Selector - Responder.
    TsR(TsRepr),
    /// Encrypted and Authenticated: the protected bytes, opened by the crypto layer.
    Sk(SkRepr),
    /// A payload of a type this implementation does not know, without the critical bit
    /// (kept so that it can be logged; it is otherwise ignored, as RFC 7296 asks).
    Unknown {
        /// Its type number.
        kind: u8,
        /// Its body.
        body: Vec<u8>,
    },
}

impl Payload {
    /// Interprets one raw payload. Unknown types with the critical bit set are refused
    /// with [`Error::UnsupportedCriticalPayload`]; the critical bit of known types is
    /// ignored, as section 2.5 asks.
    pub fn parse(raw: &RawPayload<'_>) -> Result<Self> {
        let body = raw.body;
        Ok(match raw.kind {
            PayloadType::SecurityAssociation => Payload::Sa(SaRepr::parse(body)?),
            PayloadType::KeyExchange => Payload::Ke(KeRepr::parse(body)?),
            PayloadType::IdInitiator => Payload::IdI(IdRepr::parse(body)?),
            PayloadType::IdResponder => Payload::IdR(IdRepr::parse(body)?),
            PayloadType::Certificate => Payload::Cert(CertRepr::parse(body)?),
            PayloadType::CertificateRequest => Payload::CertReq(CertRepr::parse(body)?),
            PayloadType::Authentication => Payload::Auth(AuthRepr::parse(body)?),
            PayloadType::Nonce => Payload::Nonce(NonceRepr::parse(body)?),
            PayloadType::Notify => Payload::Notify(NotifyRepr::parse(body)?),
            PayloadType::Delete => Payload::Delete(DeleteRepr::parse(body)?),
            PayloadType::VendorId => Payload::VendorId(body.to_vec()),
            PayloadType::TrafficSelectorInitiator => Payload::TsI(TsRepr::parse(body)?),
            PayloadType::TrafficSelectorResponder => Payload::TsR(TsRepr::parse(body)?),
            PayloadType::Encrypted => Payload::Sk(SkRepr::parse(raw.next, body)?),
            other => {
                let kind = u8::from(other);
                if raw.critical {
                    return Err(Error::UnsupportedCriticalPayload(kind));
                }
                Payload::Unknown { kind, body: body.to_vec() }
            }
        })
    }

    /// The payload's type.
    pub fn kind(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SecurityAssociation,
            Payload::Ke(_) => PayloadType::KeyExchange,
            Payload::IdI(_) => PayloadType::IdInitiator,
            Payload::IdR(_) => PayloadType::IdResponder,
            Payload::Cert(_) => PayloadType::Certificate,
            Payload::CertReq(_) => PayloadType::CertificateRequest,
            Payload::Auth(_) => PayloadType::Authentication,
            Payload::Nonce(_) => PayloadType::Nonce,
            Payload::Notify(_) => PayloadType::Notify,
            Payload::Delete(_) => PayloadType::Delete,
            Payload::VendorId(_) => PayloadType::VendorId,
            Payload::TsI(_) => PayloadType::TrafficSelectorInitiator,
            Payload::TsR(_) => PayloadType::TrafficSelectorResponder,
            Payload::Sk(_) => PayloadType::Encrypted,
            Payload::Unknown { kind, .. } => PayloadType::from(*kind),
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Payload::Sa(r) => r.buffer_len(),
            Payload::Ke(r) => r.buffer_len(),
            Payload::IdI(r) | Payload::IdR(r) => r.buffer_len(),
            Payload::Cert(r) | Payload::CertReq(r) => r.buffer_len(),
            Payload::Auth(r) => r.buffer_len(),
            Payload::Nonce(r) => r.buffer_len(),
            Payload::Notify(r) => r.buffer_len(),
            Payload::Delete(r) => r.buffer_len(),
            Payload::VendorId(b) | Payload::Unknown { body: b, .. } => b.len(),
            Payload::TsI(r) | Payload::TsR(r) => r.buffer_len(),
            Payload::Sk(r) => r.buffer_len(),
        }
    }

    /// Bytes of the payload, generic header included.
    pub fn buffer_len(&self) -> usize {
        GENERIC_HEADER_LEN + self.body_len()
    }

    fn emit_body(&self, w: &mut Writer<'_>) {
        match self {
            Payload::Sa(r) => r.emit(w),
            Payload::Ke(r) => r.emit(w),
            Payload::IdI(r) | Payload::IdR(r) => r.emit(w),
            Payload::Cert(r) | Payload::CertReq(r) => r.emit(w),
            Payload::Auth(r) => r.emit(w),
            Payload::Nonce(r) => r.emit(w),
            Payload::Notify(r) => r.emit(w),
            Payload::Delete(r) => r.emit(w),
            Payload::VendorId(b) | Payload::Unknown { body: b, .. } => w.bytes(b),
            Payload::TsI(r) | Payload::TsR(r) => r.emit(w),
            Payload::Sk(r) => r.emit(w),
        }
    }
}

/// Parses a whole chain into payloads.
pub fn parse_chain(first: PayloadType, data: &[u8]) -> Result<Vec<Payload>> {
    Payloads::new(first, data).map(|raw| Payload::parse(&raw?)).collect()
}

/// Bytes of a chain.
pub fn chain_len(payloads: &[Payload]) -> usize {
    payloads.iter().map(Payload::buffer_len).sum()
}

/// Writes a chain into `buf`, which must be [`chain_len`] long; returns the type of
/// the first payload (for the IKE header or the enclosing SK payload).
pub fn emit_chain(payloads: &[Payload], buf: &mut [u8]) -> PayloadType {
    let mut w = Writer::new(buf);
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Sk(sk) => sk.inner_first,
            _ => payloads.get(i + 1).map_or(PayloadType::NoNextPayload, Payload::kind),
        };
        w.u8(next.into());
        w.u8(0);
        w.u16(len16(p.buffer_len()));
        p.emit_body(&mut w);
    }
    payloads.first().map_or(PayloadType::NoNextPayload, Payload::kind)
}

/// Reads a body completely with `f`, failing on bytes it leaves.
pub(crate) fn read_all<T>(
    body: &[u8],
    what: &'static str,
    f: impl FnOnce(&mut Reader<'_>) -> Result<T>,
) -> Result<T> {
    let mut r = Reader::new(body);
    let out = f(&mut r)?;
    r.finish(what)?;
    Ok(out)
}
