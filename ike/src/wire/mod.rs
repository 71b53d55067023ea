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

pub mod header;

pub use header::{ExchangeType, Flags, HeaderPacket, HeaderRepr, PayloadType};

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
}

/// Result of parsing wire data.
pub type Result<T> = core::result::Result<T, Error>;
