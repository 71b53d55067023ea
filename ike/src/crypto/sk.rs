//! Protection of IKE messages: the SK payload (RFC 7296 section 3.14) with AES-GCM with
//! a 16-byte ICV (RFC 5282) or AES-CBC with HMAC-SHA2-256-128 (RFC 3602, RFC 4868).
//!
//! ```text
//! | IKE header | SK generic header | IV | ciphertext of (inner payloads | padding | pad length) | ICV |
//!  '------------------ AEAD: associated data ------'
//!  '-------------- CBC: HMAC covers everything up to the ICV --------------------------------'
//! ```
//!
//! For AES-GCM the key material is the AES key followed by a 4-byte salt; the nonce is
//! the salt followed by the 8-byte IV sent in the payload. IVs come from the caller's
//! [`Random`]: a random 8-byte IV per message, never repeated in practice for the life of
//! an IKE SA's keys. The IKE header's Length is final before anything is authenticated.

use super::{Random, Secret};
use crate::wire::{
    Error as WireError, HeaderPacket, HeaderRepr, PayloadType, Payloads,
    header::HEADER_LEN,
    payload::{GENERIC_HEADER_LEN, Payload, chain_len, emit_chain, parse_chain},
};
use aes_gcm::aead::{AeadInOut, KeyInit};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// `ENCR_AES_CBC` (transform type 1, ID 12).
pub const ENCR_AES_CBC: u16 = 12;
/// `ENCR_AES_GCM_16` (transform type 1, ID 20).
pub const ENCR_AES_GCM_16: u16 = 20;
/// `AUTH_HMAC_SHA2_256_128` (transform type 3, ID 12).
pub const AUTH_HMAC_SHA2_256_128: u16 = 12;

/// How the SK payload is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkCipher {
    /// `ENCR_AES_GCM_16` with a 128- or 256-bit key.
    AesGcm16 {
        /// Key length in bits: 128 or 256.
        key_bits: u16,
    },
    /// `ENCR_AES_CBC` with `AUTH_HMAC_SHA2_256_128`, for interoperability.
    AesCbcHmacSha256 {
        /// Key length in bits: 128 or 256.
        key_bits: u16,
    },
}

impl SkCipher {
    /// Bytes of encryption key material (an AEAD's includes its 4-byte salt).
    pub fn encr_key_len(self) -> usize {
        match self {
            SkCipher::AesGcm16 { key_bits } => usize::from(key_bits / 8) + 4,
            SkCipher::AesCbcHmacSha256 { key_bits } => usize::from(key_bits / 8),
        }
    }

    /// Bytes of integrity key material (none for an AEAD).
    pub fn integ_key_len(self) -> usize {
        match self {
            SkCipher::AesGcm16 { .. } => 0,
            SkCipher::AesCbcHmacSha256 { .. } => 32,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            SkCipher::AesGcm16 { .. } => 8,
            SkCipher::AesCbcHmacSha256 { .. } => 16,
        }
    }

    fn block(self) -> usize {
        match self {
            SkCipher::AesGcm16 { .. } => 1,
            SkCipher::AesCbcHmacSha256 { .. } => 16,
        }
    }

    const ICV_LEN: usize = 16;
}

/// The keys of one direction: `SK_ei`/`SK_ai` or `SK_er`/`SK_ar`.
pub struct SkKeys {
    /// The algorithms.
    pub cipher: SkCipher,
    /// Encryption key material.
    pub encr: Secret,
    /// Integrity key (empty for an AEAD).
    pub integ: Secret,
}

impl std::fmt::Debug for SkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkKeys").field("cipher", &self.cipher).finish_non_exhaustive()
    }
}

/// Why an SK payload could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The message is not well formed around or inside the SK payload.
    #[error("malformed protected message: {0}")]
    Wire(#[from] WireError),
    /// The message has no SK payload, or payloads outside it.
    #[error("expected a message protected by one SK payload")]
    NotProtected,
    /// The ICV did not verify: forged, corrupted, or keyed for another SA.
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    /// The message is authentic but what was inside the SK payload is not well formed:
    /// a request like this is answered (section 2.21.2), so the header comes along.
    #[error("malformed protected content: {error}")]
    Inner {
        /// The (authenticated) header.
        header: HeaderRepr,
        /// What is wrong inside.
        error: WireError,
    },
}

/// A message opened: its header and the payloads that were inside the SK payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The header.
    pub header: HeaderRepr,
    /// The inner payloads.
    pub payloads: Vec<Payload>,
}

type HmacSha256 = Hmac<sha2::Sha256>;

fn gcm_nonce(keys: &SkKeys, iv: &[u8]) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    let salt_at = keys.encr.len().saturating_sub(4);
    nonce[..4].copy_from_slice(keys.encr.get(salt_at..).unwrap_or(&[0; 4]));
    nonce[4..].copy_from_slice(iv);
    nonce
}

/// AES-GCM over `buf` in place with `aad`; the tag.
fn gcm_seal(keys: &SkKeys, iv: &[u8], aad: &[u8], buf: &mut [u8]) -> Option<[u8; 16]> {
    let nonce = gcm_nonce(keys, iv);
    let key = keys.encr.get(..keys.encr.len().saturating_sub(4))?;
    let tag = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key).ok()?.encrypt_inout_detached(
            &nonce.into(),
            aad,
            buf.into(),
        ),
        32 => aes_gcm::Aes256Gcm::new_from_slice(key).ok()?.encrypt_inout_detached(
            &nonce.into(),
            aad,
            buf.into(),
        ),
        _ => return None,
    }
    .ok()?;
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag);
    Some(out)
}

fn gcm_open(keys: &SkKeys, iv: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
    let nonce = gcm_nonce(keys, iv);
    let Some(key) = keys.encr.get(..keys.encr.len().saturating_sub(4)) else { return false };
    let Ok(tag) = <&[u8; 16]>::try_from(tag) else { return false };
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key).is_ok_and(|c| {
            c.decrypt_inout_detached(&nonce.into(), aad, buf.into(), tag.into()).is_ok()
        }),
        32 => aes_gcm::Aes256Gcm::new_from_slice(key).is_ok_and(|c| {
            c.decrypt_inout_detached(&nonce.into(), aad, buf.into(), tag.into()).is_ok()
        }),
        _ => false,
    }
}

fn cbc_crypt(keys: &SkKeys, iv: &[u8], buf: &mut [u8], encrypt: bool) -> bool {
    use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
    let len = buf.len();
    macro_rules! run {
        ($aes:ty) => {
            if encrypt {
                cbc::Encryptor::<$aes>::new_from_slices(&keys.encr, iv)
                    .is_ok_and(|c| c.encrypt_padded::<NoPadding>(buf, len).is_ok())
            } else {
                cbc::Decryptor::<$aes>::new_from_slices(&keys.encr, iv)
                    .is_ok_and(|c| c.decrypt_padded::<NoPadding>(buf).is_ok())
            }
        };
    }
    match keys.encr.len() {
        16 => run!(aes::Aes128),
        32 => run!(aes::Aes256),
        _ => false,
    }
}

fn hmac_icv(keys: &SkKeys, data: &[u8]) -> [u8; 16] {
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&keys.integ)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Builds a protected message: `header` (its next payload and lengths are set here) and
/// one SK payload holding `inner`.
pub fn seal(
    keys: &SkKeys,
    header: &HeaderRepr,
    inner: &[Payload],
    rng: &mut dyn Random,
) -> Vec<u8> {
    let mut bytes = vec![0u8; chain_len(inner)];
    let first = emit_chain(inner, &mut bytes);
    seal_bytes(keys, header, first.into(), &bytes, rng)
}

/// Builds a protected message around already encoded inner payloads, `first` being the
/// type of the first: for tests and fuzzing, which need contents [`seal`] would never
/// make.
pub fn seal_bytes(
    keys: &SkKeys,
    header: &HeaderRepr,
    first: u8,
    inner: &[u8],
    rng: &mut dyn Random,
) -> Vec<u8> {
    let c = keys.cipher;
    let inner_len = inner.len();
    let padding = (c.block() - (inner_len + 1) % c.block()) % c.block();
    let plain_len = inner_len + padding + 1;
    let body_len = c.iv_len() + plain_len + SkCipher::ICV_LEN;
    let total = HEADER_LEN + GENERIC_HEADER_LEN + body_len;
    let mut buf = vec![0u8; total];
    let header = HeaderRepr {
        next_payload: PayloadType::Encrypted,
        payload_len: total - HEADER_LEN,
        ..*header
    };
    header.emit(&mut HeaderPacket::new_unchecked(&mut buf[..]));
    let iv_from = HEADER_LEN + GENERIC_HEADER_LEN;
    let cipher_from = iv_from + c.iv_len();
    let tag_from = cipher_from + plain_len;
    buf[cipher_from..cipher_from + inner_len].copy_from_slice(inner);
    buf[HEADER_LEN] = first;
    buf[HEADER_LEN + 2..HEADER_LEN + 4]
        .copy_from_slice(&((GENERIC_HEADER_LEN + body_len) as u16).to_be_bytes());
    buf[tag_from - 1] = padding as u8;
    rng.fill(&mut buf[iv_from..cipher_from]);
    let (head, rest) = buf.split_at_mut(cipher_from);
    let (plain, icv) = rest.split_at_mut(plain_len);
    let iv = &head[iv_from..];
    match c {
        SkCipher::AesGcm16 { .. } => {
            let tag = gcm_seal(keys, iv, &head[..iv_from], plain).unwrap_or_default();
            icv.copy_from_slice(&tag);
        }
        SkCipher::AesCbcHmacSha256 { .. } => {
            let iv = iv.to_vec();
            cbc_crypt(keys, &iv, plain, true);
            let mac = hmac_icv(keys, &buf[..tag_from]);
            buf[tag_from..].copy_from_slice(&mac);
        }
    }
    buf
}

/// Opens a protected message: checks the header, finds the SK payload (which must be the
/// only payload), verifies the ICV, decrypts, and parses the inner payloads.
pub fn open(keys: &SkKeys, datagram: &[u8]) -> Result<Opened, OpenError> {
    let packet = HeaderPacket::new_checked(datagram)?;
    let header = HeaderRepr::parse(&packet)?;
    open_parsed(keys, header, datagram)
}

/// [`open`] of a datagram whose header was parsed already (`header`, from
/// `HeaderRepr::parse` of the same bytes), so that it is not parsed twice.
pub fn open_parsed(
    keys: &SkKeys,
    header: HeaderRepr,
    datagram: &[u8],
) -> Result<Opened, OpenError> {
    let c = keys.cipher;
    let packet = HeaderPacket::new_checked(datagram)?;
    let mut chain = Payloads::new(header.next_payload, packet.payload());
    let sk = chain.next().ok_or(OpenError::NotProtected)??;
    if sk.kind != PayloadType::Encrypted {
        return Err(OpenError::NotProtected);
    }
    if let Some(after) = chain.next() {
        after?; // bytes after the SK payload: a malformed chain
        return Err(OpenError::NotProtected);
    }
    let body_at = datagram.len() - sk.body.len();
    if sk.body.len() < c.iv_len() + 1 + SkCipher::ICV_LEN {
        return Err(
            WireError::malformed("SK payload", "shorter than IV, pad length and ICV").into()
        );
    }
    let cipher_from = body_at + c.iv_len();
    let tag_from = datagram.len() - SkCipher::ICV_LEN;
    let iv = &datagram[body_at..cipher_from];
    let icv = &datagram[tag_from..];
    let mut plain = datagram[cipher_from..tag_from].to_vec();
    let ok = match c {
        SkCipher::AesGcm16 { .. } => gcm_open(keys, iv, &datagram[..body_at], &mut plain, icv),
        SkCipher::AesCbcHmacSha256 { .. } => {
            let expected = hmac_icv(keys, &datagram[..tag_from]);
            bool::from(expected.ct_eq(icv))
                && plain.len().is_multiple_of(16)
                && cbc_crypt(keys, iv, &mut plain, false)
        }
    };
    if !ok {
        return Err(OpenError::IntegrityCheckFailed);
    }
    let pad = usize::from(*plain.last().unwrap_or(&0));
    let inner = plain
        .len()
        .checked_sub(pad + 1)
        .ok_or(WireError::malformed("SK payload", "pad length exceeds the plaintext"))
        .and_then(|len| parse_chain(sk.next, &plain[..len]));
    match inner {
        Ok(payloads) => Ok(Opened { header, payloads }),
        Err(error) => Err(OpenError::Inner { header, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::TestRng;
    use crate::wire::{
        ExchangeType, Flags,
        id::{IdRepr, IdType},
        notify::{NotifyRepr, NotifyType},
    };

    fn header() -> HeaderRepr {
        HeaderRepr {
            spi_i: 1,
            spi_r: 2,
            next_payload: PayloadType::NoNextPayload,
            minor_version: 0,
            exchange_type: ExchangeType::IkeAuth,
            flags: Flags { initiator: true, ..Flags::default() },
            message_id: 1,
            payload_len: 0,
        }
    }

    fn inner() -> Vec<Payload> {
        vec![
            Payload::IdI(IdRepr { id_type: IdType::Fqdn, data: b"node-a.mesh".to_vec() }),
            Payload::Notify(NotifyRepr::new(NotifyType::UseTransportMode, vec![])),
        ]
    }

    fn all_ciphers(rng: &mut TestRng) -> Vec<SkKeys> {
        let mut out = Vec::new();
        for cipher in [
            SkCipher::AesGcm16 { key_bits: 128 },
            SkCipher::AesGcm16 { key_bits: 256 },
            SkCipher::AesCbcHmacSha256 { key_bits: 128 },
            SkCipher::AesCbcHmacSha256 { key_bits: 256 },
        ] {
            let mut encr = vec![0; cipher.encr_key_len()];
            let mut integ = vec![0; cipher.integ_key_len()];
            rng.fill(&mut encr);
            rng.fill(&mut integ);
            out.push(SkKeys { cipher, encr: Secret::new(encr), integ: Secret::new(integ) });
        }
        out
    }

    #[test]
    fn seal_then_open_for_every_cipher() {
        let mut rng = TestRng::new(1);
        for keys in all_ciphers(&mut rng) {
            let bytes = seal(&keys, &header(), &inner(), &mut rng);
            assert_eq!(bytes[16], 46, "{:?}: first payload is SK", keys.cipher);
            assert!(
                !bytes.windows(11).any(|w| w == b"node-a.mesh"),
                "{:?}: identity encrypted",
                keys.cipher
            );
            let opened = open(&keys, &bytes).unwrap();
            assert_eq!(opened.payloads, inner(), "{:?}", keys.cipher);
            assert_eq!(opened.header.message_id, 1);
            assert_eq!(opened.header.payload_len, bytes.len() - HEADER_LEN);
        }
    }

    #[test]
    fn any_changed_byte_fails_the_integrity_check() {
        let mut rng = TestRng::new(2);
        for keys in all_ciphers(&mut rng) {
            let bytes = seal(&keys, &header(), &inner(), &mut rng);
            for i in 0..bytes.len() {
                let mut m = bytes.clone();
                m[i] ^= 0x01;
                assert!(
                    open(&keys, &m).is_err(),
                    "{:?}: byte {i} changed and still opened",
                    keys.cipher
                );
            }
            for n in 0..bytes.len() {
                assert!(open(&keys, &bytes[..n]).is_err());
            }
        }
    }

    #[test]
    fn the_wrong_key_fails_the_integrity_check() {
        let mut rng = TestRng::new(3);
        let keys = all_ciphers(&mut rng);
        let other = all_ciphers(&mut rng);
        for (k, o) in keys.iter().zip(&other) {
            let bytes = seal(k, &header(), &inner(), &mut rng);
            assert_eq!(open(o, &bytes), Err(OpenError::IntegrityCheckFailed));
        }
    }

    #[test]
    fn unprotected_messages_are_refused() {
        let mut rng = TestRng::new(4);
        let keys = all_ciphers(&mut rng).remove(0);
        let plain = crate::wire::Message { header: header(), payloads: inner() }.emit();
        assert_eq!(open(&keys, &plain), Err(OpenError::NotProtected));
    }
}
