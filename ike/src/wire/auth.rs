//! The Authentication payload (RFC 7296 section 3.8; RFC 7427 for method 14). What the
//! data of each method is, and which methods are sent and accepted, is
//! `crypto::auth`'s and `exchange::ike_auth`'s business.

use super::{Result, Writer, payload::read_all};

code_points! {
    /// Authentication methods.
    AuthMethod: u8 {
        /// RSA digital signature: RSASSA-PKCS1-v1_5, with SHA-1 as implementations
        /// (strongSwan among them) make and expect it.
        RsaSignature = 1,
        /// Shared key message integrity code.
        SharedKey = 2,
        /// DSS digital signature.
        DssSignature = 3,
        /// ECDSA with SHA-256 on the P-256 curve (RFC 4754): the data is `r | s`.
        EcdsaP256 = 9,
        /// ECDSA with SHA-384 on the P-384 curve.
        EcdsaP384 = 10,
        /// ECDSA with SHA-512 on the P-521 curve.
        EcdsaP521 = 11,
        /// Digital Signature (RFC 7427): the data starts with an `AlgorithmIdentifier`.
        DigitalSignature = 14,
    }
}

/// The body of an AUTH payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRepr {
    /// How the data was computed.
    pub method: AuthMethod,
    /// The signature or MAC (for method 14, preceded by its algorithm identifier).
    pub data: Vec<u8>,
}

impl AuthRepr {
    /// Parses an AUTH payload body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "AUTH payload", |r| {
            let method = AuthMethod::from(r.u8()?);
            r.bytes(3)?;
            let data = r.rest().to_vec();
            if data.is_empty() {
                return Err(super::Error::malformed("AUTH payload", "no authentication data"));
            }
            Ok(AuthRepr { method, data })
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        4 + self.data.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.method.into());
        w.bytes(&[0; 3]);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    #[test]
    fn decodes_builds_back_and_needs_data() {
        let bytes = [14, 0, 0, 0, 1, 2, 3];
        let repr = AuthRepr { method: AuthMethod::DigitalSignature, data: vec![1, 2, 3] };
        check_body(&bytes, &repr, AuthRepr::parse, AuthRepr::emit, AuthRepr::buffer_len, false);
        for len in 0..=4 {
            assert!(AuthRepr::parse(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn classic_methods_keep_their_numbers() {
        for (n, method) in [(1, AuthMethod::RsaSignature), (9, AuthMethod::EcdsaP256)] {
            let repr = AuthRepr::parse(&[n, 0, 0, 0, 0xaa]).unwrap();
            assert_eq!(repr, AuthRepr { method, data: vec![0xaa] });
            assert_eq!(u8::from(method), n);
        }
    }
}
