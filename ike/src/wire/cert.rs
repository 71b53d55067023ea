//! Certificate and Certificate Request payloads (RFC 7296 sections 3.6 and 3.7): an
//! encoding and data (a DER certificate; for a request, SHA-1 hashes of trusted CAs'
//! public keys).

use super::{Error, Result, Writer, payload::read_all};

/// "X.509 Certificate - Signature": a DER-encoded certificate.
pub const X509_SIGNATURE: u8 = 4;

/// The body of a CERT or CERTREQ payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRepr {
    /// Certificate Encoding.
    pub encoding: u8,
    /// Certificate (or Certification Authority) data.
    pub data: Vec<u8>,
}

impl CertRepr {
    /// Parses a CERT or CERTREQ payload body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "CERT payload", |r| {
            let encoding = r.u8()?;
            let data = r.rest().to_vec();
            if encoding == X509_SIGNATURE && data.is_empty() {
                return Err(Error::malformed("CERT payload", "empty certificate"));
            }
            Ok(CertRepr { encoding, data })
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        1 + self.data.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.encoding);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    #[test]
    fn decodes_and_builds_back() {
        let bytes = [4, 0x30, 0x82, 0x01];
        let repr = CertRepr { encoding: 4, data: vec![0x30, 0x82, 0x01] };
        check_body(&bytes, &repr, CertRepr::parse, CertRepr::emit, CertRepr::buffer_len, false);
        assert!(CertRepr::parse(&[]).is_err());
        assert!(CertRepr::parse(&[4]).is_err(), "an X.509 CERT needs a certificate");
    }
}
