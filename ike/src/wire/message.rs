//! A whole IKE message: the header and its payload chain.
//!
//! Parsing checks the header (length, version), walks the chain and interprets every
//! payload; any error is returned with nothing half-parsed, for the caller to answer as
//! RFC 7296 section 2.21 asks (or to drop, for an unauthenticated message).

use super::{
    HeaderPacket, HeaderRepr, Result,
    header::HEADER_LEN,
    payload::{Payload, chain_len, emit_chain, parse_chain},
};

/// An IKE message that is not (or no longer) encrypted at this level: the header and the
/// payloads in order. An SK payload, if any, is the last one and still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; its `next_payload` and `payload_len` are derived on emit.
    pub header: HeaderRepr,
    /// The payloads.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses one datagram as one IKE message.
    pub fn parse(datagram: &[u8]) -> Result<Self> {
        let packet = HeaderPacket::new_checked(datagram)?;
        let header = HeaderRepr::parse(&packet)?;
        Self::parse_payloads(header, datagram)
    }

    /// [`Message::parse`] of a datagram whose header was parsed already (`header`, from
    /// `HeaderRepr::parse` of the same bytes): only the payloads are parsed.
    pub fn parse_payloads(header: HeaderRepr, datagram: &[u8]) -> Result<Self> {
        let packet = HeaderPacket::new_checked(datagram)?;
        let payloads = parse_chain(header.next_payload, packet.payload())?;
        Ok(Message { header, payloads })
    }

    /// Bytes of the whole message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + chain_len(&self.payloads)
    }

    /// Builds the datagram.
    pub fn emit(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        let first = emit_chain(&self.payloads, &mut buf[HEADER_LEN..]);
        let header =
            HeaderRepr { next_payload: first, payload_len: buf.len() - HEADER_LEN, ..self.header };
        header.emit(&mut HeaderPacket::new_unchecked(&mut buf[..]));
        buf
    }

    /// The first payload of a kind, if any.
    pub fn find(&self, kind: super::PayloadType) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.kind() == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        Error, ExchangeType, Flags, PayloadType,
        ke::KeRepr,
        nonce::NonceRepr,
        notify::{NotifyRepr, NotifyType},
        sa::{Proposal, ProtocolId, SaRepr, Transform, TransformType},
        sk::SkRepr,
    };

    fn init_request() -> Message {
        Message {
            header: HeaderRepr {
                spi_i: 0x0102_0304_0506_0708,
                spi_r: 0,
                next_payload: PayloadType::NoNextPayload,
                minor_version: 0,
                exchange_type: ExchangeType::IkeSaInit,
                flags: Flags { initiator: true, ..Flags::default() },
                message_id: 0,
                payload_len: 0,
            },
            payloads: vec![
                Payload::Sa(SaRepr {
                    proposals: vec![Proposal {
                        num: 1,
                        protocol: ProtocolId::Ike,
                        spi: vec![],
                        transforms: vec![
                            Transform::with_key_length(TransformType::Encr, 20, 256),
                            Transform::new(TransformType::Prf, 5),
                            Transform::new(TransformType::Dh, 31),
                        ],
                    }],
                }),
                Payload::Ke(KeRepr { group: 31, data: vec![0x42; 32] }),
                Payload::Nonce(NonceRepr(vec![0x17; 32])),
                Payload::Notify(NotifyRepr::new(
                    NotifyType::SignatureHashAlgorithms,
                    vec![0, 2, 0, 5],
                )),
            ],
        }
    }

    #[test]
    fn a_message_round_trips() {
        let msg = init_request();
        let bytes = msg.emit();
        assert_eq!(bytes.len(), msg.buffer_len());
        assert_eq!(bytes[16], 33, "first payload: SA");
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back.payloads, msg.payloads);
        assert_eq!(back.header.payload_len, bytes.len() - HEADER_LEN);
        assert_eq!(back.emit(), bytes);
    }

    #[test]
    fn every_truncation_and_every_extension_is_refused() {
        let bytes = init_request().emit();
        for n in 0..bytes.len() {
            assert!(Message::parse(&bytes[..n]).is_err(), "a {n}-byte prefix parsed");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(Message::parse(&long), Err(Error::TrailingBytes { .. })));
        // A header length that covers an extra byte the chain does not account for.
        let mut padded = bytes.clone();
        padded.push(0);
        let len = padded.len() as u32;
        padded[24..28].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            Message::parse(&padded),
            Err(Error::TrailingBytes { what: "payload chain", .. })
        ));
    }

    /// Inserts a payload of an unknown type 200 after the SA payload.
    fn with_unknown(critical: bool) -> Vec<u8> {
        let bytes = init_request().emit();
        let sa_len = usize::from(u16::from_be_bytes([bytes[30], bytes[31]]));
        let at = HEADER_LEN + sa_len;
        let mut out = bytes[..at].to_vec();
        out[HEADER_LEN] = 200; // SA's next payload: the unknown one
        out.extend_from_slice(&[34, if critical { 0x80 } else { 0 }, 0, 6, 0xde, 0xad]); // next: KE
        out.extend_from_slice(&bytes[at..]);
        let len = out.len() as u32;
        out[24..28].copy_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn unknown_payloads_are_skipped_unless_critical() {
        let msg = Message::parse(&with_unknown(false)).unwrap();
        assert_eq!(msg.payloads[1], Payload::Unknown { kind: 200, body: vec![0xde, 0xad] });
        assert_eq!(msg.payloads.len(), 5);
        assert_eq!(
            Message::parse(&with_unknown(true)),
            Err(Error::UnsupportedCriticalPayload(200))
        );
    }

    #[test]
    fn the_sk_payload_ends_the_chain_and_names_its_first_inner_payload() {
        let mut msg = init_request();
        msg.header.exchange_type = ExchangeType::IkeAuth;
        msg.payloads =
            vec![Payload::Sk(SkRepr { inner_first: PayloadType::IdInitiator, data: vec![9; 48] })];
        let bytes = msg.emit();
        assert_eq!(bytes[16], 46, "first payload: SK");
        assert_eq!(bytes[28], 35, "SK's next payload: IDi, inside it");
        assert_eq!(
            Message::parse(&bytes).unwrap(),
            Message {
                header: HeaderRepr {
                    next_payload: PayloadType::Encrypted,
                    payload_len: 52,
                    ..msg.header
                },
                ..msg
            }
        );
    }

    #[test]
    fn mutated_messages_never_panic() {
        // A deterministic sweep: every single-byte change of a valid message (each byte
        // set to 0x00, 0xff and flipped), plus a pseudo-random walk of multi-byte changes.
        let bytes = with_unknown(false);
        for i in 0..bytes.len() {
            for v in [0x00, 0xff, !bytes[i]] {
                let mut m = bytes.clone();
                m[i] = v;
                let _ = Message::parse(&m);
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut m = bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % m.len();
                m[i] = (state >> 32) as u8;
            }
            let _ = Message::parse(&m);
        }
    }
}
