//! Traffic Selector payloads (RFC 7296 section 3.13): TSi and TSr.
//!
//! ```text
//! | Number of TSs | RESERVED (3) | Traffic Selectors…
//! Selector: | TS Type | IP Protocol ID | Selector Length | Start Port | End Port |
//!           | Starting Address (4 or 16) | Ending Address (4 or 16) |
//! ```

use super::{Error, Result, Writer, payload::read_all};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `TS_IPV4_ADDR_RANGE`.
pub const TS_IPV4_ADDR_RANGE: u8 = 7;
/// `TS_IPV6_ADDR_RANGE`.
pub const TS_IPV6_ADDR_RANGE: u8 = 8;

/// One traffic selector: an address range, a protocol (0 for any) and a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol (0: any).
    pub protocol: u8,
    /// First port (0 with `end_port` 65535: any).
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    /// All traffic of one host.
    pub fn host(addr: IpAddr) -> Self {
        Self { protocol: 0, start_port: 0, end_port: u16::MAX, start: addr, end: addr }
    }

    fn buffer_len(&self) -> usize {
        if self.start.is_ipv4() { 16 } else { 40 }
    }
}

/// The body of a TS payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsRepr {
    /// The selectors (at least one).
    pub selectors: Vec<TrafficSelector>,
}

impl TsRepr {
    /// Parses a TS payload body. Selector types other than the IPv4 and IPv6 ranges are
    /// refused, as are ranges whose two ends differ in family or are reversed.
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "TS payload", |r| {
            let count = r.u8()?;
            r.bytes(3)?;
            if count == 0 {
                return Err(Error::malformed("TS payload", "no traffic selector"));
            }
            let mut selectors = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let ts_type = r.u8()?;
                let protocol = r.u8()?;
                let length = r.u16()?;
                let (expected, addr_len) = match ts_type {
                    TS_IPV4_ADDR_RANGE => (16, 4),
                    TS_IPV6_ADDR_RANGE => (40, 16),
                    _ => return Err(Error::malformed("traffic selector", "unknown TS Type")),
                };
                if length != expected {
                    return Err(Error::malformed("traffic selector", "wrong Selector Length"));
                }
                let start_port = r.u16()?;
                let end_port = r.u16()?;
                let addr = |b: &[u8]| -> IpAddr {
                    if addr_len == 4 {
                        Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
                    } else {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        Ipv6Addr::from(a).into()
                    }
                };
                let start = addr(r.bytes(addr_len)?);
                let end = addr(r.bytes(addr_len)?);
                if start > end || start_port > end_port {
                    return Err(Error::malformed(
                        "traffic selector",
                        "range ends before it starts",
                    ));
                }
                selectors.push(TrafficSelector { protocol, start_port, end_port, start, end });
            }
            Ok(TsRepr { selectors })
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        4 + self.selectors.iter().map(TrafficSelector::buffer_len).sum::<usize>()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u8(self.selectors.len() as u8);
        w.bytes(&[0; 3]);
        for ts in &self.selectors {
            let v4 = ts.start.is_ipv4();
            w.u8(if v4 { TS_IPV4_ADDR_RANGE } else { TS_IPV6_ADDR_RANGE });
            w.u8(ts.protocol);
            w.u16(ts.buffer_len() as u16);
            w.u16(ts.start_port);
            w.u16(ts.end_port);
            for a in [ts.start, ts.end] {
                match a {
                    IpAddr::V4(a) => w.bytes(&a.octets()),
                    IpAddr::V6(a) => w.bytes(&a.octets()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    const BYTES: &[u8] = &[
        2, 0, 0, 0, // two selectors
        7, 17, 0, 16, 0x01, 0xf4, 0x01, 0xf4, 10, 0, 0, 1, 10, 0, 0, 1, // UDP 500, 10.0.0.1
        8, 0, 0, 40, 0, 0, 0xff, 0xff, // any protocol, all ports
        0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // fd77::
        0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, // fd77::ffff:…
    ];

    fn repr() -> TsRepr {
        TsRepr {
            selectors: vec![
                TrafficSelector {
                    protocol: 17,
                    start_port: 500,
                    end_port: 500,
                    start: "10.0.0.1".parse().unwrap(),
                    end: "10.0.0.1".parse().unwrap(),
                },
                TrafficSelector {
                    protocol: 0,
                    start_port: 0,
                    end_port: 65535,
                    start: "fd77::".parse().unwrap(),
                    end: "fd77::ffff:ffff:ffff:ffff".parse().unwrap(),
                },
            ],
        }
    }

    #[test]
    fn decodes_builds_back_and_refuses_truncations() {
        check_body(BYTES, &repr(), TsRepr::parse, TsRepr::emit, TsRepr::buffer_len, true);
    }

    #[test]
    fn refuses_bad_selectors() {
        let mut b = BYTES.to_vec();
        b[4] = 9; // unknown TS type
        assert!(TsRepr::parse(&b).is_err());
        let mut b = BYTES.to_vec();
        b[7] = 20; // wrong selector length
        assert!(TsRepr::parse(&b).is_err());
        let mut b = BYTES.to_vec();
        b[15] = 2; // start 10.0.0.2 > end 10.0.0.1
        assert!(TsRepr::parse(&b).is_err());
        assert!(TsRepr::parse(&[0, 0, 0, 0]).is_err(), "no selector");
    }
}
