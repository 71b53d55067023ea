//! Opening protected messages, for every SK cipher. Arbitrary input is opened as it
//! came (it almost never passes the integrity check), and its tail is also sealed as the
//! inner contents of a genuine SK payload and opened again, so that the decryption,
//! padding and inner-payload parsing of authentic messages see arbitrary bytes too.
//! Nothing may panic, and sealed contents that parse must come back as sealed.
#![no_main]

use ike::crypto::sk::{OpenError, SkCipher, SkKeys, open, seal_bytes};
use ike::crypto::{Random, Secret};
use ike::wire::{ExchangeType, Flags, HeaderRepr, PayloadType, payload::parse_chain};
use libfuzzer_sys::fuzz_target;

/// Deterministic IVs: the fuzzer must be reproducible.
struct Counter(u8);

impl Random for Counter {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

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
        let Some((&first, inner)) = data.split_first() else { continue };
        let header = HeaderRepr {
            spi_i: 1,
            spi_r: 2,
            next_payload: PayloadType::NoNextPayload,
            minor_version: 0,
            exchange_type: ExchangeType::Informational,
            flags: Flags { initiator: true, ..Flags::default() },
            message_id: 7,
            payload_len: 0,
        };
        let sealed = seal_bytes(&keys, &header, first, inner, &mut Counter(0));
        match (open(&keys, &sealed), parse_chain(PayloadType::from(first), inner)) {
            (Ok(opened), Ok(payloads)) => assert_eq!(opened.payloads, payloads),
            (Err(OpenError::Inner { header: h, .. }), Err(_)) => assert_eq!(h.message_id, 7),
            (got, want) => panic!("sealed contents opened as {got:?}, parsed as {want:?}"),
        }
    }
});
