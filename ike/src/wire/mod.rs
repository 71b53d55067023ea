//! IKEv2 wire format (RFC 7296 section 3), one module per payload type.
//!
//! # The contract every module here keeps
//!
//! - A `Packet<T: AsRef<[u8]>>` is a view over a buffer. `Packet::new_checked` runs
//!   `check_len`, and after `check_len` has succeeded **no accessor panics**, whatever
//!   the bytes are. Field offsets are named ranges in a private `field` module.
//! - A `Repr` is the plain, owned meaning of the payload. `Repr::parse` does the
//!   semantic checks (versions, reserved values, lengths that must agree) and returns a
//!   [`Error`]; `Repr::emit` writes into a buffer of exactly `buffer_len()` bytes and
//!   never panics on such a buffer.
//! - Code points (exchange, payload, transform, notify types) are enums with an
//!   `Unknown(n)` fallback, so unknown values survive a parse and can be answered as
//!   RFC 7296 asks (for example `UNSUPPORTED_CRITICAL_PAYLOAD`) rather than dropped.
//! - Trailing bytes after what a length field covers are an error, never ignored.

/// Defines a code-point enum with an `Unknown(n)` fallback and both conversions.
macro_rules! code_points {
    ($(#[$meta:meta])* $name:ident: $repr:ty { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this implementation does not know, kept as it was on the wire.
            Unknown($repr),
        }

        impl From<$repr> for $name {
            fn from(value: $repr) -> Self {
                match value {
                    $($value => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                match value {
                    $($name::$variant => $value,)*
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

pub mod auth;
pub mod cert;
pub mod delete;
pub mod header;
pub mod id;
pub mod ke;
pub mod message;
pub mod nonce;
pub mod notify;
pub mod payload;
pub mod sa;
pub mod sk;
pub mod ts;

pub use header::{ExchangeType, Flags, HeaderPacket, HeaderRepr, PayloadType};
pub use message::Message;
pub use payload::{GenericPacket, Payload, Payloads, RawPayload};

/// Why bytes could not be read as an IKEv2 structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before the structure (or its own length field) does.
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// How many bytes the structure needs.
        needed: usize,
        /// How many bytes the buffer has.
        available: usize,
    },
    /// The buffer holds more bytes than the structure's length field covers.
    #[error("{extra} trailing bytes after the {what}")]
    TrailingBytes {
        /// The structure that was followed by extra bytes.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A length field is smaller than the fixed part it must include.
    #[error("length field {length} is shorter than the {minimum}-byte {what}")]
    BadLength {
        /// The structure whose length field is wrong.
        what: &'static str,
        /// The value of the length field.
        length: usize,
        /// The smallest value it may have.
        minimum: usize,
    },
    /// The major version is not 2 (answered with `INVALID_MAJOR_VERSION`, section 2.5).
    #[error("IKE major version {0} is not supported (only 2 is)")]
    UnsupportedMajorVersion(u8),
    /// A payload of a type this implementation does not know had its critical bit set
    /// (answered with `UNSUPPORTED_CRITICAL_PAYLOAD`, section 2.5).
    #[error("unsupported critical payload type {0}")]
    UnsupportedCriticalPayload(u8),
    /// A field holds a value the RFC forbids there.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The structure.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Error {
    /// Shorthand for [`Error::Malformed`].
    pub(crate) const fn malformed(what: &'static str, reason: &'static str) -> Self {
        Error::Malformed { what, reason }
    }
}

/// A bounds-checked reader over a payload body: every read either succeeds or returns
/// [`Error::Truncated`], so parsing never indexes out of range.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(data: &'a [u8]) -> Self {
        Self { data, offset: 0 }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.offset.checked_add(n).filter(|&e| e <= self.data.len()).ok_or(
            Error::Truncated { needed: self.offset.saturating_add(n), available: self.data.len() },
        )?;
        let out = &self.data[self.offset..end];
        self.offset = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.data[self.offset..];
        self.offset = self.data.len();
        out
    }

    pub(crate) const fn remaining(&self) -> usize {
        self.data.len() - self.offset
    }

    /// Fails if anything is left unread.
    pub(crate) fn finish(&self, what: &'static str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(Error::TrailingBytes { what, extra }),
        }
    }
}

/// A writer over a buffer that [`Repr::buffer_len`]-style sizing made exactly long
/// enough; writes past the end are dropped rather than panicking, and the emit tests
/// check that every byte was written.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    offset: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, offset: 0 }
    }

    pub(crate) fn bytes(&mut self, data: &[u8]) {
        let end = (self.offset + data.len()).min(self.buf.len());
        let n = end - self.offset.min(end);
        if let Some(dst) = self.buf.get_mut(self.offset..self.offset + n) {
            dst.copy_from_slice(&data[..n]);
        }
        self.offset += data.len();
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
}

/// Length as the u16 of a payload header, saturating: a payload that long cannot fit
/// in a datagram, and a saturated length never checks as valid on the other side.
pub(crate) fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Result of parsing wire data.
pub type Result<T> = core::result::Result<T, Error>;

#[cfg(test)]
pub(crate) mod tests {
    use super::{Result, Writer};

    /// The per-payload contract: `bytes` decodes to `expect`, `expect` is exactly
    /// `bytes.len()` long and builds back to `bytes`; with `refuse_truncations`, every
    /// shorter prefix is refused (for payloads whose length is fixed by their fields).
    pub(crate) fn check_body<T: PartialEq + std::fmt::Debug>(
        bytes: &[u8],
        expect: &T,
        parse: impl Fn(&[u8]) -> Result<T>,
        emit: impl Fn(&T, &mut Writer<'_>),
        len: impl Fn(&T) -> usize,
        refuse_truncations: bool,
    ) {
        assert_eq!(&parse(bytes).unwrap(), expect);
        assert_eq!(len(expect), bytes.len());
        let mut out = vec![0xee; bytes.len()];
        emit(expect, &mut Writer::new(&mut out));
        assert_eq!(out, bytes);
        if refuse_truncations {
            for n in 0..bytes.len() {
                assert!(parse(&bytes[..n]).is_err(), "a {n}-byte prefix was accepted");
            }
        }
    }
}
