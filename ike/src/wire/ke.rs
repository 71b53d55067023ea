//! The Key Exchange payload (RFC 7296 section 3.4): a D-H group and its public value.

use super::{Result, Writer, payload::read_all};

/// The body of a KE payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeRepr {
    /// The D-H group (Transform Type 4 ID) the data belongs to.
    pub group: u16,
    /// The public value.
    pub data: Vec<u8>,
}

impl KeRepr {
    /// Parses a KE payload body (the data's length is the group's business).
    pub fn parse(body: &[u8]) -> Result<Self> {
        read_all(body, "KE payload", |r| {
            let group = r.u16()?;
            r.u16()?;
            Ok(KeRepr { group, data: r.rest().to_vec() })
        })
    }

    /// Bytes of the body.
    pub fn buffer_len(&self) -> usize {
        4 + self.data.len()
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) {
        w.u16(self.group);
        w.u16(0);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::check_body;

    #[test]
    fn decodes_builds_back_and_refuses_truncations_of_the_fixed_part() {
        let bytes = [0, 31, 0, 0, 0xaa, 0xbb, 0xcc];
        let repr = KeRepr { group: 31, data: vec![0xaa, 0xbb, 0xcc] };
        check_body(&bytes, &repr, KeRepr::parse, KeRepr::emit, KeRepr::buffer_len, false);
        for len in 0..4 {
            assert!(KeRepr::parse(&bytes[..len]).is_err());
        }
    }
}
