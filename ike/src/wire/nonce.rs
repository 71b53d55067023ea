//! The Nonce payload (RFC 7296 section 3.9): 16 to 256 random bytes.

use super::{Error, Result, Writer};

/// Shortest nonce RFC 7296 allows.
pub const MIN_NONCE: usize = 16;
/// Longest nonce RFC 7296 allows.
pub const MAX_NONCE: usize = 256;

/// The body of a Nonce payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceRepr(pub Vec<u8>);

impl NonceRepr {
    /// Parses a Nonce payload body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        if !(MIN_NONCE..=MAX_NONCE).contains(&body.len()) {
            return Err(Error::malformed("Nonce payload", "nonce not between 16 and 256 bytes"));
        }
        Ok(NonceRepr(body.to_vec()))
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.bytes(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    #[test]
    fn accepts_16_to_256_bytes_only() {
        let bytes = [7u8; 32];
        check_body(
            &bytes,
            &NonceRepr(bytes.to_vec()),
            NonceRepr::parse,
            NonceRepr::emit,
            NonceRepr::buffer_len,
            false,
        );
        assert!(NonceRepr::parse(&[0; 15]).is_err());
        assert!(NonceRepr::parse(&[0; 16]).is_ok());
        assert!(NonceRepr::parse(&[0; 256]).is_ok());
        assert!(NonceRepr::parse(&[0; 257]).is_err());
    }
}
