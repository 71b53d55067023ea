//! Identification payloads (RFC 7296 section 3.5): IDi and IDr.

use super::{Result, Writer, payload::read_all};

code_points! {
    /// Identification types (section 3.5).
    IdType: u8 {
        /// A single IPv4 address.
        Ipv4Addr = 1,
        /// A fully qualified domain name.
        Fqdn = 2,
        /// An RFC 822 e-mail address.
        Rfc822Addr = 3,
        /// A single IPv6 address.
        Ipv6Addr = 5,
        /// A DER-encoded X.500 distinguished name.
        DerAsn1Dn = 9,
        /// A DER-encoded X.500 general name.
        DerAsn1Gn = 10,
        /// An opaque key identifier.
        KeyId = 11,
    }
}

/// The body of an ID payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRepr {
    /// How `data` is to be read.
    pub id_type: IdType,
    /// The identity.
    pub data: Vec<u8>,
}

impl IdRepr {
    /// Parses an ID payload body; addresses must have their family's length.
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "ID payload", |r| {
            let id_type = IdType::from(r.u8()?);
            r.bytes(3)?;
            let data = r.rest().to_vec();
            let ok = match id_type {
                IdType::Ipv4Addr => data.len() == 4,
                IdType::Ipv6Addr => data.len() == 16,
                _ => !data.is_empty(),
            };
            if !ok {
                return Err(super::Error::malformed(
                    "ID payload",
                    "identification data of the wrong length",
                ));
            }
            Ok(IdRepr { id_type, data })
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        4 + self.data.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.id_type.into());
        w.bytes(&[0; 3]);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    #[test]
    fn decodes_builds_back_and_checks_address_lengths() {
        let bytes = b"\x02\0\0\0node-1.mesh";
        let repr = IdRepr { id_type: IdType::Fqdn, data: b"node-1.mesh".to_vec() };
        check_body(bytes, &repr, IdRepr::parse, IdRepr::emit, IdRepr::buffer_len, false);
        assert!(IdRepr::parse(&[1, 0, 0, 0, 10, 0, 0]).is_err(), "IPv4 ID of 3 bytes");
        assert!(IdRepr::parse(&[1, 0, 0, 0, 10, 0, 0, 1]).is_ok());
        assert!(IdRepr::parse(&[2, 0, 0, 0]).is_err(), "empty FQDN");
        assert!(IdRepr::parse(&[2, 0, 0]).is_err());
    }
}
