//! The IKE header (RFC 7296 section 3.1): 28 bytes in front of every IKE message.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Initiator's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Responder's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Message ID                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            Length                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The Length field covers the whole message, header included. A datagram is one
//! message: [`HeaderPacket::new_checked`] refuses a buffer shorter than Length and one
//! with bytes beyond it.

use super::{Error, Result};

mod field {
    use core::ops::Range;
    pub(super) const SPI_I: Range<usize> = 0..8;
    pub(super) const SPI_R: Range<usize> = 8..16;
    pub(super) const NEXT_PAYLOAD: usize = 16;
    pub(super) const VERSION: usize = 17;
    pub(super) const EXCHANGE_TYPE: usize = 18;
    pub(super) const FLAGS: usize = 19;
    pub(super) const MESSAGE_ID: Range<usize> = 20..24;
    pub(super) const LENGTH: Range<usize> = 24..28;
}

/// Length of the IKE header in bytes.
pub const HEADER_LEN: usize = field::LENGTH.end;

code_points! {
    /// Exchange types (RFC 7296 section 3.1; IANA "IKEv2 Exchange Types").
    ExchangeType: u8 {
        /// `IKE_SA_INIT`: negotiates algorithms, exchanges nonces and DH values.
        IkeSaInit = 34,
        /// `IKE_AUTH`: authenticates both peers and creates the first child SA.
        IkeAuth = 35,
        /// `CREATE_CHILD_SA`: new or rekeyed child SAs, and IKE SA rekey.
        CreateChildSa = 36,
        /// `INFORMATIONAL`: deletes, notifications, liveness checks.
        Informational = 37,
    }
}

code_points! {
    /// Payload types (RFC 7296 section 3.2; RFC 7383 for `SKF`).
    PayloadType: u8 {
        /// No next payload.
        NoNextPayload = 0,
        /// Security Association.
        SecurityAssociation = 33,
        /// Key Exchange.
        KeyExchange = 34,
        /// Identification - Initiator.
        IdInitiator = 35,
        /// Identification - Responder.
        IdResponder = 36,
        /// Certificate.
        Certificate = 37,
        /// Certificate Request.
        CertificateRequest = 38,
        /// Authentication.
        Authentication = 39,
        /// Nonce.
        Nonce = 40,
        /// Notify.
        Notify = 41,
        /// Delete.
        Delete = 42,
        /// Vendor ID.
        VendorId = 43,
        /// Traffic Selector - Initiator.
        TrafficSelectorInitiator = 44,
        /// Traffic Selector - Responder.
        TrafficSelectorResponder = 45,
        /// Encrypted and Authenticated (SK).
        Encrypted = 46,
        /// Configuration.
        Configuration = 47,
        /// Extensible Authentication.
        Eap = 48,
        /// Encrypted and Authenticated Fragment (SKF, RFC 7383).
        EncryptedFragment = 53,
    }
}

/// The flags octet of the IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// Set by the original initiator of the IKE SA.
    pub initiator: bool,
    /// Set when the sender can speak a higher major version than the one it uses.
    pub version: bool,
    /// Set when the message is a response to the message with the same ID.
    pub response: bool,
}

impl Flags {
    const INITIATOR: u8 = 0x08;
    const VERSION: u8 = 0x10;
    const RESPONSE: u8 = 0x20;

    /// Reads the flags from the octet; bits RFC 7296 leaves unassigned are ignored on
    /// receipt, as section 3.1 asks.
    pub fn from_octet(octet: u8) -> Self {
        Self {
            initiator: octet & Self::INITIATOR != 0,
            version: octet & Self::VERSION != 0,
            response: octet & Self::RESPONSE != 0,
        }
    }

    /// The octet on the wire; unassigned bits are zero, as section 3.1 asks.
    pub fn to_octet(self) -> u8 {
        (if self.initiator { Self::INITIATOR } else { 0 })
            | (if self.version { Self::VERSION } else { 0 })
            | (if self.response { Self::RESPONSE } else { 0 })
    }
}

/// A read (and, over a mutable buffer, write) view of an IKE header.
#[derive(Debug, Clone)]
pub struct HeaderPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderPacket<T> {
    /// Wraps a buffer without checking it; call [`Self::check_len`] before any accessor.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer that holds exactly one IKE message.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and exactly the `Length` it announces.
    pub fn check_len(&self) -> Result<()> {
        let available = self.buffer.as_ref().len();
        if available < HEADER_LEN {
            return Err(Error::Truncated { needed: HEADER_LEN, available });
        }
        let length = self.length() as usize;
        if length < HEADER_LEN {
            return Err(Error::BadLength { what: "IKE header", length, minimum: HEADER_LEN });
        }
        if length > available {
            return Err(Error::Truncated { needed: length, available });
        }
        if length < available {
            return Err(Error::TrailingBytes { what: "IKE message", extra: available - length });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn data(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// IKE SA Initiator's SPI.
    pub fn spi_i(&self) -> u64 {
        u64::from_be_bytes(self.data()[field::SPI_I].try_into().unwrap_or_default())
    }

    /// IKE SA Responder's SPI (zero in the first `IKE_SA_INIT` request).
    pub fn spi_r(&self) -> u64 {
        u64::from_be_bytes(self.data()[field::SPI_R].try_into().unwrap_or_default())
    }

    /// Type of the first payload after the header.
    pub fn next_payload(&self) -> PayloadType {
        self.data()[field::NEXT_PAYLOAD].into()
    }

    /// Major version (high nibble of the version octet).
    pub fn major_version(&self) -> u8 {
        self.data()[field::VERSION] >> 4
    }

    /// Minor version (low nibble of the version octet).
    pub fn minor_version(&self) -> u8 {
        self.data()[field::VERSION] & 0x0f
    }

    /// Exchange type.
    pub fn exchange_type(&self) -> ExchangeType {
        self.data()[field::EXCHANGE_TYPE].into()
    }

    /// Flags.
    pub fn flags(&self) -> Flags {
        Flags::from_octet(self.data()[field::FLAGS])
    }

    /// Message ID.
    pub fn message_id(&self) -> u32 {
        u32::from_be_bytes(self.data()[field::MESSAGE_ID].try_into().unwrap_or_default())
    }

    /// Length of the whole message, header included.
    pub fn length(&self) -> u32 {
        u32::from_be_bytes(self.data()[field::LENGTH].try_into().unwrap_or_default())
    }

    /// The bytes after the header: the payload chain.
    pub fn payload(&self) -> &[u8] {
        &self.data()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HeaderPacket<T> {
    fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the initiator's SPI.
    pub fn set_spi_i(&mut self, spi: u64) {
        self.data_mut()[field::SPI_I].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the responder's SPI.
    pub fn set_spi_r(&mut self, spi: u64) {
        self.data_mut()[field::SPI_R].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the type of the first payload.
    pub fn set_next_payload(&mut self, next: PayloadType) {
        self.data_mut()[field::NEXT_PAYLOAD] = next.into();
    }

    /// Sets the version octet from major and minor nibbles.
    pub fn set_version(&mut self, major: u8, minor: u8) {
        self.data_mut()[field::VERSION] = (major << 4) | (minor & 0x0f);
    }

    /// Sets the exchange type.
    pub fn set_exchange_type(&mut self, exchange: ExchangeType) {
        self.data_mut()[field::EXCHANGE_TYPE] = exchange.into();
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, flags: Flags) {
        self.data_mut()[field::FLAGS] = flags.to_octet();
    }

    /// Sets the message ID.
    pub fn set_message_id(&mut self, id: u32) {
        self.data_mut()[field::MESSAGE_ID].copy_from_slice(&id.to_be_bytes());
    }

    /// Sets the length of the whole message.
    pub fn set_length(&mut self, length: u32) {
        self.data_mut()[field::LENGTH].copy_from_slice(&length.to_be_bytes());
    }
}

/// The meaning of an IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// IKE SA Initiator's SPI.
    pub spi_i: u64,
    /// IKE SA Responder's SPI.
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Minor version; the major version is always 2.
    pub minor_version: u8,
    /// Exchange type.
    pub exchange_type: ExchangeType,
    /// Flags.
    pub flags: Flags,
    /// Message ID.
    pub message_id: u32,
    /// Length of the payload chain that follows the header.
    pub payload_len: usize,
}

impl HeaderRepr {
    /// The only major version this implementation speaks.
    pub const MAJOR_VERSION: u8 = 2;

    /// Reads a checked header. A major version other than 2 is refused so the caller can
    /// answer `INVALID_MAJOR_VERSION` (section 2.5); the minor version is kept and
    /// otherwise ignored, as the RFC asks.
    pub fn parse<T: AsRef<[u8]>>(packet: &HeaderPacket<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.major_version() != Self::MAJOR_VERSION {
            return Err(Error::UnsupportedMajorVersion(packet.major_version()));
        }
        Ok(Self {
            spi_i: packet.spi_i(),
            spi_r: packet.spi_r(),
            next_payload: packet.next_payload(),
            minor_version: packet.minor_version(),
            exchange_type: packet.exchange_type(),
            flags: packet.flags(),
            message_id: packet.message_id(),
            payload_len: packet.length() as usize - HEADER_LEN,
        })
    }

    /// Bytes of the header alone.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Bytes of the whole message: header plus payload chain.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `packet`, whose buffer
    /// must be [`Self::buffer_len`] long; the payload bytes are left to the caller.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut HeaderPacket<T>) {
        packet.set_spi_i(self.spi_i);
        packet.set_spi_r(self.spi_r);
        packet.set_next_payload(self.next_payload);
        packet.set_version(Self::MAJOR_VERSION, self.minor_version);
        packet.set_exchange_type(self.exchange_type);
        packet.set_flags(self.flags);
        packet.set_message_id(self.message_id);
        // A message longer than 4 GiB cannot be built from a UDP datagram; saturate
        // rather than wrap so such a length can never check as valid.
        packet.set_length(u32::try_from(self.buffer_len()).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of an `IKE_SA_INIT` request: `SPIi` set, `SPIr` zero, SA payload first,
    /// version 2.0, Initiator flag, message ID 0, length 28 + 4 payload bytes.
    const INIT_REQUEST: [u8; 32] = [
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // SPIi
        0, 0, 0, 0, 0, 0, 0, 0, // SPIr
        33, 0x20, 34, 0x08, // next payload SA, version 2.0, IKE_SA_INIT, I flag
        0, 0, 0, 0, // message ID
        0, 0, 0, 32, // length
        0xde, 0xad, 0xbe, 0xef, // payload bytes (opaque to the header)
    ];

    fn init_repr() -> HeaderRepr {
        HeaderRepr {
            spi_i: 0x1122_3344_5566_7788,
            spi_r: 0,
            next_payload: PayloadType::SecurityAssociation,
            minor_version: 0,
            exchange_type: ExchangeType::IkeSaInit,
            flags: Flags { initiator: true, version: false, response: false },
            message_id: 0,
            payload_len: 4,
        }
    }

    #[test]
    fn decodes_a_known_header() {
        let packet = HeaderPacket::new_checked(&INIT_REQUEST[..]).unwrap();
        assert_eq!(HeaderRepr::parse(&packet).unwrap(), init_repr());
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn builds_the_same_bytes_back() {
        let repr = init_repr();
        let mut buf = vec![0u8; repr.buffer_len()];
        buf[HEADER_LEN..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        repr.emit(&mut HeaderPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, INIT_REQUEST);
    }

    #[test]
    fn refuses_every_truncation() {
        for len in 0..INIT_REQUEST.len() {
            let err = HeaderPacket::new_checked(&INIT_REQUEST[..len]).unwrap_err();
            assert!(matches!(err, Error::Truncated { .. }), "length {len}: {err}");
        }
    }

    #[test]
    fn refuses_trailing_bytes() {
        let mut long = INIT_REQUEST.to_vec();
        long.push(0);
        assert_eq!(
            HeaderPacket::new_checked(&long[..]).unwrap_err(),
            Error::TrailingBytes { what: "IKE message", extra: 1 }
        );
    }

    #[test]
    fn refuses_a_length_field_shorter_than_the_header() {
        let mut bytes = INIT_REQUEST;
        bytes[27] = 27;
        assert!(matches!(
            HeaderPacket::new_checked(&bytes[..]).unwrap_err(),
            Error::BadLength { length: 27, .. }
        ));
    }

    #[test]
    fn refuses_other_major_versions_but_keeps_the_minor() {
        let mut bytes = INIT_REQUEST;
        bytes[17] = 0x30;
        let packet = HeaderPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(HeaderRepr::parse(&packet).unwrap_err(), Error::UnsupportedMajorVersion(3));
        bytes[17] = 0x21;
        let packet = HeaderPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(HeaderRepr::parse(&packet).unwrap().minor_version, 1);
    }

    #[test]
    fn unknown_code_points_survive_a_round_trip() {
        let mut bytes = INIT_REQUEST;
        bytes[16] = 200;
        bytes[18] = 99;
        bytes[19] = 0xff; // unassigned flag bits are ignored on receipt, zero on emit
        let repr = HeaderRepr::parse(&HeaderPacket::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(repr.next_payload, PayloadType::Unknown(200));
        assert_eq!(repr.exchange_type, ExchangeType::Unknown(99));
        assert_eq!(repr.flags, Flags { initiator: true, version: true, response: true });
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut HeaderPacket::new_unchecked(&mut out[..]));
        assert_eq!((out[16], out[18], out[19]), (200, 99, 0x38));
    }

    #[test]
    fn accessors_never_panic_after_check_len() {
        // Every 28- to 40-byte buffer whose length field is right passes check_len; the
        // accessors must then work on any content.
        for len in HEADER_LEN..=40 {
            for fill in [0x00u8, 0xff, 0x5a] {
                let mut bytes = vec![fill; len];
                bytes[24..28].copy_from_slice(&(len as u32).to_be_bytes());
                let packet = HeaderPacket::new_checked(&bytes[..]).unwrap();
                let _ = HeaderRepr::parse(&packet);
                let _ = (packet.spi_i(), packet.spi_r(), packet.flags(), packet.payload());
            }
        }
    }
}
