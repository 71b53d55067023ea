//! What the kernel can do: XFRM, ESP for IPv4 and IPv6, and which ESP algorithms.
//!
//! There is no kernel interface that lists these. The probe asks the kernel to add a
//! short-lived SA for each algorithm and family and reads the answer: the kernel checks
//! the algorithm first (`ENOSYS` when it is missing) and the ESP type second
//! (`EPROTONOSUPPORT` when ESP is missing). An add that succeeds is deleted at once.
//! Asking also makes a stock kernel autoload the modules (`esp4`, `gcm`, …), exactly as
//! the first real SA would. Probe SAs use documentation addresses (`192.0.2.0/24`,
//! `2001:db8::/32`), an SPI of their own and a reqid in ikemesh's range, and no policy
//! refers to them, so no packet can ever use one; if a crash leaves one behind,
//! [`crate::Xfrm::flush_ours`] removes it.

use crate::model::{AEAD_CHACHA20_POLY1305, AEAD_GCM, AUTHENC_CBC_SHA256, Crypto, Key, Sa};
use crate::{Xfrm, convert, error};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_xfrm::{XfrmAttrs, XfrmMessage};
use nix::errno::Errno;
use std::fmt::Write as _;
use std::net::IpAddr;

/// SPI of probe SAs.
const PROBE_SPI: u32 = 0x4D00_0F0F;
/// Reqid of probe SAs (inside ikemesh's range).
const PROBE_REQID: u32 = 0x4D00_0000;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// ESP over IPv4 (`None`: unknown, because no ESP algorithm was available to try).
    pub esp_v4: Option<bool>,
    /// ESP over IPv6.
    pub esp_v6: Option<bool>,
    /// Each ESP algorithm the probe knows, and whether the kernel offers it.
    pub algorithms: Vec<(&'static str, bool)>,
}

impl Capabilities {
    /// Whether ESP SAs with AES-GCM, ikemesh's default, can be installed for both
    /// families.
    pub fn esp_ready(&self) -> bool {
        self.esp_v4 == Some(true) && self.esp_v6 == Some(true) && self.has(AEAD_GCM)
    }

    /// Whether the kernel offers the algorithm (by its kernel name).
    pub fn has(&self, name: &str) -> bool {
        self.algorithms.iter().any(|&(n, ok)| n == name && ok)
    }

    /// What is missing, in one line with what provides it; `None` when nothing is.
    pub fn problem(&self) -> Option<String> {
        let mut missing = Vec::new();
        for (v6, present) in [(false, self.esp_v4), (true, self.esp_v6)] {
            if present == Some(false) {
                missing.push(error::esp_missing(v6).to_string());
            }
        }
        if !self.has(AEAD_GCM) {
            missing.push(error::algorithm_missing(AEAD_GCM).to_string());
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }

    /// A one-line summary: `ESP IPv4 yes, IPv6 yes; algorithms: rfc4106(gcm(aes)) yes, …`.
    pub fn summary(&self) -> String {
        let word = |p: Option<bool>| match p {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        let mut s =
            format!("ESP IPv4 {}, IPv6 {}; algorithms:", word(self.esp_v4), word(self.esp_v6));
        for (name, ok) in &self.algorithms {
            let _ = write!(s, " {name} {}", if *ok { "yes" } else { "no" });
        }
        s
    }
}

/// The probe's candidate algorithms, as a message builder for each.
fn candidates() -> [(&'static str, Crypto); 3] {
    [
        (AEAD_GCM, Crypto::AesGcm16 { key: Key::new(vec![0x11; 20]) }),
        (
            AUTHENC_CBC_SHA256,
            Crypto::AesCbcHmacSha256 {
                enc_key: Key::new(vec![0x22; 16]),
                auth_key: Key::new(vec![0x33; 32]),
            },
        ),
        // Not in the model yet: probed by renaming the AEAD attribute of a GCM message.
        (AEAD_CHACHA20_POLY1305, Crypto::AesGcm16 { key: Key::new(vec![0x44; 36]) }),
    ]
}

fn probe_addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        let doc = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0x4d, last]);
        (doc(1), doc(2))
    } else {
        (IpAddr::from([192, 0, 2, 77]), IpAddr::from([192, 0, 2, 78]))
    }
}

impl Xfrm {
    /// Tries one probe SA; the kernel's answer.
    /// `None` when the add succeeded (and the SA was deleted again).
    fn try_probe_sa(
        &mut self,
        v6: bool,
        name: &'static str,
        crypto: Crypto,
    ) -> Result<Option<Errno>, crate::Error> {
        let (src, dst) = probe_addrs(v6);
        let sa = Sa::transport(src, dst, PROBE_SPI, PROBE_REQID, crypto);
        let mut msg = convert::sa_modify(&sa);
        if name == AEAD_CHACHA20_POLY1305 {
            for attr in &mut msg.nlas {
                if let XfrmAttrs::EncryptionAlgAead(a) = attr {
                    a.alg_name = [0; 64];
                    a.alg_name[..name.len()].copy_from_slice(name.as_bytes());
                }
            }
        }
        for _ in 0..2 {
            let ack = self
                .nl
                .batch(vec![(XfrmMessage::AddSa(msg.clone()), NLM_F_CREATE | NLM_F_EXCL)])?
                .pop()
                .unwrap_or(Err(Errno::EIO));
            match ack {
                Ok(()) => {
                    let _ = self.delete_sa(&sa.id());
                    return Ok(None);
                }
                // A probe SA left by a crash: remove it and ask again.
                Err(Errno::EEXIST) => {
                    let _ = self.delete_sa(&sa.id());
                }
                Err(errno) => return Ok(Some(errno)),
            }
        }
        Ok(Some(Errno::EEXIST))
    }

    /// Whether ESP for the family is there: `None` if no algorithm was available to ask
    /// with.
    pub(crate) fn esp_present(&mut self, v6: bool) -> Option<bool> {
        let mut verdict = None;
        for (name, crypto) in candidates() {
            match self.try_probe_sa(v6, name, crypto) {
                Ok(None) => return Some(true),
                Ok(Some(Errno::EPROTONOSUPPORT)) => verdict = Some(false),
                _ => {}
            }
        }
        verdict
    }

    /// Finds out what the kernel offers. It needs `CAP_NET_ADMIN`, like everything here.
    pub fn probe(&mut self) -> Result<Capabilities, crate::Error> {
        let mut caps = Capabilities { esp_v4: None, esp_v6: None, algorithms: Vec::new() };
        for v6 in [false, true] {
            let mut esp = None;
            for (name, crypto) in candidates() {
                let answer = self.try_probe_sa(v6, name, crypto)?;
                let algorithm_ok = match answer {
                    None => {
                        esp = Some(true);
                        true
                    }
                    Some(Errno::EPROTONOSUPPORT) => {
                        esp = esp.or(Some(false));
                        true
                    }
                    Some(Errno::ENOSYS) => false,
                    Some(Errno::EPERM | Errno::EACCES) => {
                        return Err(crate::Error::PermissionDenied { op: "probe".into() });
                    }
                    Some(other) => {
                        return Err(crate::Error::Kernel {
                            op: format!("probe SA for {name}"),
                            errno: other,
                        });
                    }
                };
                if !v6 {
                    caps.algorithms.push((name, algorithm_ok));
                }
            }
            if v6 { caps.esp_v6 = esp } else { caps.esp_v4 = esp }
        }
        Ok(caps)
    }
}
