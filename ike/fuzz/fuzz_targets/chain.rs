//! Payload chains as they come out of a decrypted SK payload: the first byte is the
//! type of the first inner payload, the rest is the chain.
#![no_main]

use ike::wire::{PayloadType, payload::parse_chain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&first, chain)) = data.split_first() {
        let _ = parse_chain(PayloadType::from(first), chain);
    }
});
