//! The Notify payload (RFC 7296 section 3.10).
//!
//! ```text
//! | Protocol ID | SPI Size | Notify Message Type (2) | SPI… | Notification Data…
//! ```

use super::{Result, Writer, payload::read_all, sa::ProtocolId};

code_points! {
    /// Notify message types: errors below 16384, status from 16384 on (section 3.10.1,
    /// and the RFCs named on each).
    NotifyType: u16 {
        /// A critical payload of an unknown type.
        UnsupportedCriticalPayload = 1,
        /// A message for an IKE SA the receiver does not know.
        InvalidIkeSpi = 4,
        /// A major version the receiver does not speak.
        InvalidMajorVersion = 5,
        /// A malformed message.
        InvalidSyntax = 7,
        /// A message ID outside the window.
        InvalidMessageId = 9,
        /// ESP or AH with an unknown SPI.
        InvalidSpi = 11,
        /// None of the proposals was acceptable.
        NoProposalChosen = 14,
        /// The KE payload's group is not the one wanted (the data names it).
        InvalidKePayload = 17,
        /// Authentication failed.
        AuthenticationFailed = 24,
        /// Only a single pair of selectors is acceptable.
        SinglePairRequired = 34,
        /// No more child SAs on this IKE SA.
        NoAdditionalSas = 35,
        /// No internal address could be assigned.
        InternalAddressFailure = 36,
        /// A configuration payload was required.
        FailedCpRequired = 37,
        /// The traffic selectors are unacceptable.
        TsUnacceptable = 38,
        /// Packet selectors did not match the SA's.
        InvalidSelectors = 39,
        /// Try again later (for example, during a rekey).
        TemporaryFailure = 43,
        /// The child SA to rekey does not exist.
        ChildSaNotFound = 44,
        /// The sender has no other IKE SA with the receiver.
        InitialContact = 16384,
        /// The sender's message ID window.
        SetWindowSize = 16385,
        /// More traffic selectors would have been possible.
        AdditionalTsPossible = 16386,
        /// IPComp is supported.
        IpcompSupported = 16387,
        /// NAT detection: hash of the source address and port.
        NatDetectionSourceIp = 16388,
        /// NAT detection: hash of the destination address and port.
        NatDetectionDestinationIp = 16389,
        /// A stateless cookie (section 2.6).
        Cookie = 16390,
        /// Transport mode is requested (or accepted).
        UseTransportMode = 16391,
        /// Hash and URL certificate lookup is supported.
        HttpCertLookupSupported = 16392,
        /// The child SA being rekeyed (its SPI is in the payload).
        RekeySa = 16393,
        /// TFC padding is not supported.
        EspTfcPaddingNotSupported = 16394,
        /// Non-first fragments are also sent on this SA.
        NonFirstFragmentsAlso = 16395,
        /// MOBIKE is supported (RFC 4555).
        MobikeSupported = 16396,
        /// `IKE_AUTH` without a child SA is supported (RFC 6023).
        ChildlessIkev2Supported = 16418,
        /// IKE fragmentation is supported (RFC 7383).
        Ikev2FragmentationSupported = 16430,
        /// The hash algorithms supported for signatures (RFC 7427).
        SignatureHashAlgorithms = 16431,
    }
}

impl NotifyType {
    /// The Notify Message Types reserved for private use status types (section 3.10.1).
    pub const PRIVATE_USE_STATUS: std::ops::RangeInclusive<u16> = 40960..=65535;

    /// Whether this is an error type (below 16384).
    pub fn is_error(self) -> bool {
        u16::from(self) < 16384
    }

    /// Whether this is a private use status type (40960 to 65535, section 3.10.1).
    pub fn is_private_use_status(self) -> bool {
        Self::PRIVATE_USE_STATUS.contains(&u16::from(self))
    }
}

/// The body of a Notify payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRepr {
    /// The SA the notification is about (`None`: not about a particular SA, SPI size 0).
    pub protocol: Option<ProtocolId>,
    /// SPI of that SA (empty if none).
    pub spi: Vec<u8>,
    /// The notification.
    pub kind: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

impl NotifyRepr {
    /// A notification with data and no SPI.
    pub fn new(kind: NotifyType, data: Vec<u8>) -> Self {
        Self { protocol: None, spi: Vec::new(), kind, data }
    }

    /// Parses a Notify payload body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "Notify payload", |r| {
            let protocol = r.u8()?;
            let spi_size = usize::from(r.u8()?);
            let kind = NotifyType::from(r.u16()?);
            let spi = r.bytes(spi_size)?.to_vec();
            Ok(NotifyRepr {
                protocol: (protocol != 0).then(|| ProtocolId::from(protocol)),
                spi,
                kind,
                data: r.rest().to_vec(),
            })
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        4 + self.spi.len() + self.data.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.protocol.map_or(0, u8::from));
        w.u8(self.spi.len() as u8);
        w.u16(self.kind.into());
        w.bytes(&self.spi);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    #[test]
    fn decodes_and_builds_back_with_and_without_spi() {
        let bytes = [0, 0, 0x40, 0x06, 0xab, 0xcd]; // COOKIE with 2 bytes of data
        let repr = NotifyRepr::new(NotifyType::Cookie, vec![0xab, 0xcd]);
        check_body(
            &bytes,
            &repr,
            NotifyRepr::parse,
            NotifyRepr::emit,
            NotifyRepr::buffer_len,
            false,
        );
        let bytes = [3, 4, 0x40, 0x09, 1, 2, 3, 4]; // REKEY_SA for ESP SPI 0x01020304
        let repr = NotifyRepr {
            protocol: Some(ProtocolId::Esp),
            spi: vec![1, 2, 3, 4],
            kind: NotifyType::RekeySa,
            data: vec![],
        };
        check_body(
            &bytes,
            &repr,
            NotifyRepr::parse,
            NotifyRepr::emit,
            NotifyRepr::buffer_len,
            true,
        );
        assert!(NotifyType::NoProposalChosen.is_error() && !NotifyType::Cookie.is_error());
        assert_eq!(NotifyType::from(40000), NotifyType::Unknown(40000));
        assert!(NotifyType::from(40960).is_private_use_status());
        assert!(NotifyType::from(65535).is_private_use_status());
        assert!(!NotifyType::from(40959).is_private_use_status());
        assert!(!NotifyType::InitialContact.is_private_use_status());
    }
}
