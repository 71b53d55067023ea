//! The SPA gatekeeper on arbitrary input. The input is `family (1) || source (16) ||
//! now in ms since the epoch (8, big-endian) || datagram`. The datagram is checked as it
//! came (it almost never passes the AEAD check; if it does, only once), then sealed as the plaintext of a
//! genuine packet and checked again, so that the strict parser and every check after
//! the AEAD see arbitrary contents too. Nothing may panic; a plaintext that parses must
//! encode back to itself; a sealed knock that parses, sent from its own address at its
//! own time, must be admitted once and refused as a replay after.
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use policy::spa::{
    GateConfig, Gatekeeper, PLAINTEXT_LEN, Rejected, SpaKeys, encode, open, seal_plaintext,
};

const SECRET: &[u8; 32] = b"fuzzing secret, 32 bytes long..!";

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms)).unwrap_or(UNIX_EPOCH)
}

fuzz_target!(|data: &[u8]| {
    let Some((head, datagram)) = data.split_at_checked(25) else { return };
    let mut src = [0u8; 16];
    src.copy_from_slice(&head[1..17]);
    let source = if head[0] & 1 == 0 {
        IpAddr::from([src[0], src[1], src[2], src[3]])
    } else {
        IpAddr::from(src)
    };
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&head[17..25]);
    let now = at(u64::from_be_bytes(ms));
    let keys = SpaKeys::new(SECRET, None).unwrap();
    let cfg = GateConfig { nat: head[0] & 2 != 0, ..GateConfig::default() };
    let mut gate = Gatekeeper::new_at(keys.clone(), cfg, now).unwrap();

    // As it came. Admitted only if it is a genuine knock (a seed is), and then once.
    if gate.check(datagram, source, now).is_ok() {
        assert!(matches!(gate.check(datagram, source, now), Err(Rejected::Replayed { .. })));
    }

    // As the contents of a genuine packet.
    let sealed = seal_plaintext(&keys, datagram, [0x5a; 12]);
    let mut plain = [0u8; PLAINTEXT_LEN];
    let n = datagram.len().min(PLAINTEXT_LEN);
    plain[..n].copy_from_slice(&datagram[..n]);
    match open(&keys, &sealed) {
        Ok(opened) => {
            assert_eq!(encode(&opened), plain, "a parsed plaintext must encode back to itself");
            let _ = gate.check(&sealed, source, now);
            // From its own address at its own time, on a fresh gate: admitted, once.
            let when = at(opened.timestamp_ms);
            let mut fresh = Gatekeeper::new_at(keys, GateConfig::default(), when).unwrap();
            let a = fresh.check(&sealed, opened.knock.addr, when).unwrap();
            assert_eq!(a.node_id, opened.knock.node_id);
            assert_eq!(a.claimed, opened.knock.addr.to_canonical());
            assert!(matches!(
                fresh.check(&sealed, opened.knock.addr, when),
                Err(Rejected::Replayed { .. })
            ));
        }
        Err(Rejected::Invalid { .. }) => {
            assert!(matches!(gate.check(&sealed, source, now), Err(Rejected::Invalid { .. })));
        }
        Err(other) => panic!("a genuine seal did not open: {other}"),
    }
});
