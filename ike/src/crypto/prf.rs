//! Pseudorandom functions (RFC 7296 section 3.3.2, transform type 2) and `prf+`
//! (section 2.13).

use hmac::{Hmac, KeyInit, Mac};
use zeroize::Zeroizing;

/// Key material: zeroized on drop.
pub type Secret = Zeroizing<Vec<u8>>;

/// The PRFs ikemesh implements, with their IANA transform IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// `PRF_HMAC_SHA1` (2): for interoperability only; never proposed by default.
    HmacSha1,
    /// `PRF_HMAC_SHA2_256` (5).
    HmacSha256,
    /// `PRF_HMAC_SHA2_384` (6).
    HmacSha384,
    /// `PRF_HMAC_SHA2_512` (7).
    HmacSha512,
}

impl Prf {
    /// The transform ID.
    pub fn id(self) -> u16 {
        match self {
            Prf::HmacSha1 => 2,
            Prf::HmacSha256 => 5,
            Prf::HmacSha384 => 6,
            Prf::HmacSha512 => 7,
        }
    }

    /// The PRF with this transform ID, if implemented.
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            2 => Prf::HmacSha1,
            5 => Prf::HmacSha256,
            6 => Prf::HmacSha384,
            7 => Prf::HmacSha512,
            _ => return None,
        })
    }

    /// Output length in bytes, which is also the preferred key length (section 2.13).
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha1 => 20,
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// `prf(key, data)` over the concatenation of `data`'s parts.
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Secret {
        fn run<M: Mac + KeyInit>(key: &[u8], data: &[&[u8]]) -> Secret {
            // HMAC accepts keys of any length, so this cannot fail.
            let mut mac = <M as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            for part in data {
                mac.update(part);
            }
            Zeroizing::new(mac.finalize().into_bytes().to_vec())
        }
        match self {
            Prf::HmacSha1 => run::<Hmac<sha1::Sha1>>(key, data),
            Prf::HmacSha256 => run::<Hmac<sha2::Sha256>>(key, data),
            Prf::HmacSha384 => run::<Hmac<sha2::Sha384>>(key, data),
            Prf::HmacSha512 => run::<Hmac<sha2::Sha512>>(key, data),
        }
    }

    /// `prf+(key, seed)` truncated to `len` bytes (section 2.13):
    /// `T1 = prf(K, S | 0x01)`, `Tn = prf(K, Tn-1 | S | n)`. `None` if `len` needs more
    /// than the 255 blocks the counter allows.
    ///
    /// This is the RFC's expansion construction on top of the PRF, written here because
    /// it is part of the protocol (HKDF-Expand has the same shape, but only for keys at
    /// least as long as the hash; IKE's are not always).
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Option<Secret> {
        if len > 255 * self.output_len() {
            return None;
        }
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut block: Secret = Zeroizing::new(Vec::new());
        let mut counter = 1u8;
        while out.len() < len {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
            parts.push(&block);
            parts.extend_from_slice(seed);
            let c = [counter];
            parts.push(&c);
            block = self.prf(key, &parts);
            out.extend_from_slice(&block);
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        Some(out)
    }
}
