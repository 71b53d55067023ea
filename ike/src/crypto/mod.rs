//! Cryptographic transforms of IKEv2 (RFC 7296 section 3.3.2) behind small traits.
//!
//! Every primitive comes from a well-kept crate (RustCrypto, dalek, or the provider
//! rustls brings); this module only selects, wires and zeroizes. Key material types
//! zeroize on drop and print as `[redacted]` in `Debug` output.
//!
//! Planned contents, in RFC 7296 terms: the DH groups (31, 19, 14), the PRFs
//! (HMAC-SHA2-256/384/512), `prf+` (section 2.13), `SKEYSEED` and `SK_d`, `SK_ai`,
//! `SK_ar`, `SK_ei`, `SK_er`, `SK_pi`, `SK_pr` (section 2.14), child `KEYMAT`
//! (section 2.17), and SK payload protection with AES-GCM (RFC 5282) and
//! AES-CBC + HMAC-SHA2-256-128.

pub mod auth;
pub mod dh;
pub mod keys;
pub mod prf;
pub mod sk;

pub use prf::{Prf, Secret};

/// Where the protocol's randomness comes from: nonces, SPIs, private D-H values, IVs.
/// The `ike` crate draws none itself; the daemon passes the operating system's CSPRNG,
/// tests a deterministic one.
pub trait Random {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

#[cfg(test)]
pub(crate) mod tests {
    /// A deterministic generator for tests (splitmix64): reproducible, never for keys
    /// that protect anything.
    pub(crate) struct TestRng(u64);

    impl TestRng {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed)
        }
    }

    impl super::Random for TestRng {
        fn fill(&mut self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(8) {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
            }
        }
    }
}
