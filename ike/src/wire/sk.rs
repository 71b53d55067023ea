//! The Encrypted and Authenticated payload (RFC 7296 section 3.14).
//!
//! On the wire its body is the IV, the ciphertext (inner payloads, padding, pad length)
//! and the integrity checksum; which of those bytes is which depends on the negotiated
//! algorithms, so this module keeps the body whole, with the type of the first inner
//! payload (the SK payload's Next Payload field). The crypto layer opens and seals it.

use super::{Error, Result, Writer, header::PayloadType};

/// The body of an SK payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkRepr {
    /// Type of the first payload inside.
    pub inner_first: PayloadType,
    /// IV, ciphertext and ICV.
    pub data: Vec<u8>,
}

impl SkRepr {
    /// Keeps an SK payload body; it cannot be empty.
    pub fn parse(inner_first: PayloadType, body: &[u8]) -> Result<Self> {
        if body.is_empty() {
            return Err(Error::malformed("SK payload", "empty"));
        }
        Ok(SkRepr { inner_first, data: body.to_vec() })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.bytes(&self.data);
    }
}
