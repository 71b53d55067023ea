//! Whole IKE datagrams: parsing never panics, and whatever parses builds back to bytes
//! that parse to the same message.
#![no_main]

use ike::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::parse(data) {
        let again = Message::parse(&msg.emit()).expect("an emitted message parses");
        assert_eq!(again.payloads, msg.payloads);
    }
});
