//! Opening protected messages with fixed keys: arbitrary input never panics, for every
//! SK cipher.
#![no_main]

use ike::crypto::Secret;
use ike::crypto::sk::{SkCipher, SkKeys, open};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for cipher in [
        SkCipher::AesGcm16 { key_bits: 128 },
        SkCipher::AesGcm16 { key_bits: 256 },
        SkCipher::AesCbcHmacSha256 { key_bits: 256 },
    ] {
        let keys = SkKeys {
            cipher,
            encr: Secret::new(vec![0x11; cipher.encr_key_len()]),
            integ: Secret::new(vec![0x22; cipher.integ_key_len()]),
        };
        let _ = open(&keys, data);
    }
});
