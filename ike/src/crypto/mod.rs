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

pub mod keys;
pub mod prf;

pub use prf::{Prf, Secret};
