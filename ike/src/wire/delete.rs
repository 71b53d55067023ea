//! The Delete payload (RFC 7296 section 3.11).
//!
//! ```text
//! | Protocol ID | SPI Size | Num of SPIs (2) | SPIs…
//! ```
//! Deleting the IKE SA itself: protocol IKE, SPI size 0, no SPIs.

use super::{Error, Result, Writer, payload::read_all, sa::ProtocolId};

/// The body of a Delete payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRepr {
    /// IKE (the IKE SA carrying the message) or ESP/AH (the SPIs listed).
    pub protocol: ProtocolId,
    /// The inbound SPIs (of the sender) of the child SAs to delete, 4 bytes each.
    pub spis: Vec<[u8; 4]>,
}

impl DeleteRepr {
    /// Parses a Delete payload body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "Delete payload", |r| {
            let protocol = ProtocolId::from(r.u8()?);
            let spi_size = r.u8()?;
            let count = r.u16()?;
            match (protocol, spi_size) {
                (ProtocolId::Ike, 0) if count == 0 => Ok(DeleteRepr { protocol, spis: Vec::new() }),
                (ProtocolId::Ike, _) => {
                    Err(Error::malformed("Delete payload", "IKE delete with SPIs"))
                }
                (ProtocolId::Esp | ProtocolId::Ah, 4) => {
                    let mut spis = Vec::with_capacity(usize::from(count).min(r.remaining() / 4));
                    for _ in 0..count {
                        let b = r.bytes(4)?;
                        spis.push([b[0], b[1], b[2], b[3]]);
                    }
                    Ok(DeleteRepr { protocol, spis })
                }
                _ => Err(Error::malformed("Delete payload", "unknown protocol or SPI size")),
            }
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        4 + 4 * self.spis.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.protocol.into());
        w.u8(if self.protocol == ProtocolId::Ike { 0 } else { 4 });
        w.u16(self.spis.len() as u16);
        for spi in &self.spis {
            w.bytes(spi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    #[test]
    fn decodes_builds_back_and_refuses_truncations() {
        let bytes = [3, 4, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8];
        let repr = DeleteRepr { protocol: ProtocolId::Esp, spis: vec![[1, 2, 3, 4], [5, 6, 7, 8]] };
        check_body(
            &bytes,
            &repr,
            DeleteRepr::parse,
            DeleteRepr::emit,
            DeleteRepr::buffer_len,
            true,
        );
        let ike = [1, 0, 0, 0];
        let repr = DeleteRepr { protocol: ProtocolId::Ike, spis: vec![] };
        check_body(&ike, &repr, DeleteRepr::parse, DeleteRepr::emit, DeleteRepr::buffer_len, true);
        assert!(DeleteRepr::parse(&[1, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(DeleteRepr::parse(&[3, 8, 0, 0]).is_err(), "ESP SPIs are 4 bytes");
    }
}
