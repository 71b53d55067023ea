//! Key derivation for IKE and child SAs (RFC 7296 sections 2.14, 2.17 and 2.18).
//!
//! ```text
//! SKEYSEED = prf(Ni | Nr, g^ir)
//! {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
//! KEYMAT   = prf+(SK_d, Ni | Nr)                  child SA, no PFS
//! KEYMAT   = prf+(SK_d, g^ir (new) | Ni | Nr)     child SA with PFS
//! SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)  IKE SA rekey
//! ```
//!
//! For the PRF key `Ni | Nr` of SKEYSEED, RFC 7296 takes the nonces whole for HMAC
//! PRFs, which is every PRF here.

use super::prf::{Prf, Secret};
use std::fmt;

/// The seven keys of an IKE SA.
pub struct IkeKeys {
    /// For deriving child SA keys and the next SKEYSEED.
    pub sk_d: Secret,
    /// Integrity key, initiator to responder (empty with an AEAD).
    pub sk_ai: Secret,
    /// Integrity key, responder to initiator.
    pub sk_ar: Secret,
    /// Encryption key, initiator to responder (an AEAD's includes its salt).
    pub sk_ei: Secret,
    /// Encryption key, responder to initiator.
    pub sk_er: Secret,
    /// For the initiator's AUTH payload.
    pub sk_pi: Secret,
    /// For the responder's AUTH payload.
    pub sk_pr: Secret,
}

impl fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IkeKeys([redacted])")
    }
}

/// `SKEYSEED = prf(Ni | Nr, g^ir)`.
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], g_ir: &[u8]) -> Secret {
    let key = Secret::new([ni, nr].concat());
    prf.prf(&key, &[g_ir])
}

/// `SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)`, for an IKE SA rekey. Both the
/// PRF and `sk_d` are the old SA's: the rekey exchange belongs to the old SA (RFC 7296
/// section 2.18); the new SA's PRF only drives the `prf+` that follows.
pub fn skeyseed_rekey(prf: Prf, sk_d_old: &[u8], g_ir_new: &[u8], ni: &[u8], nr: &[u8]) -> Secret {
    prf.prf(sk_d_old, &[g_ir_new, ni, nr])
}

/// The IKE SA's keys from SKEYSEED. `integ_len` is the integrity key length (0 with
/// an AEAD), `encr_len` the encryption key length (with salt, for an AEAD).
pub fn ike_keys(
    prf: Prf,
    skeyseed: &[u8],
    (ni, nr): (&[u8], &[u8]),
    (spi_i, spi_r): (u64, u64),
    integ_len: usize,
    encr_len: usize,
) -> IkeKeys {
    let p = prf.output_len();
    let total = 3 * p + 2 * integ_len + 2 * encr_len;
    // At most 3*64 + 2*64 + 2*36 bytes for the algorithms here: far inside prf+'s limit.
    let km = prf
        .prf_plus(skeyseed, &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()], total)
        .unwrap_or_default();
    let mut at = 0;
    let mut take = |n: usize| {
        let s = Secret::new(km.get(at..at + n).unwrap_or_default().to_vec());
        at += n;
        s
    };
    IkeKeys {
        sk_d: take(p),
        sk_ai: take(integ_len),
        sk_ar: take(integ_len),
        sk_ei: take(encr_len),
        sk_er: take(encr_len),
        sk_pi: take(p),
        sk_pr: take(p),
    }
}

/// Child SA KEYMAT of `len` bytes: `prf+(SK_d, [g^ir (new) |] Ni | Nr)`. The caller
/// splits it (section 2.17): the initiator-to-responder SA's keys come first.
pub fn child_keymat(
    prf: Prf,
    sk_d: &[u8],
    g_ir_new: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Option<Secret> {
    match g_ir_new {
        Some(g) => prf.prf_plus(sk_d, &[g, ni, nr], len),
        None => prf.prf_plus(sk_d, &[ni, nr], len),
    }
}

#[cfg(test)]
mod tests {
    //! Known answers from NIST's SP 800-135 component test vectors for the IKEv2 KDF
    //! (CAVS `ikev2.zip`, HMAC-SHA-1 case): one vector exercises every derivation here,
    //! and the construction does not depend on the hash.
    use super::*;
    use hex_literal::hex;

    const NI: [u8; 8] = hex!("3651fef5c9c35e93");
    const NR: [u8; 8] = hex!("c09a8b90a3f04d59");
    const GIR: [u8; 128] = hex!(
        "d084a30166a50fb7325c3960874a839449ef9741c2f4f947d0201dd8c1269273d79509f37e3ca3eb4fa2fe2a28254e289cd3f34dad4eb4df1a07685a4b8a94fa61e2491f7598b3ce65547ff133b3f63d1ac4175eaa695033f3cedb026a6873a36455172a8540b8a5d23a0143bed0390ee49b168269d75fffee9fb62be965993c"
    );
    const GIR_NEW: [u8; 128] = hex!(
        "52f00ab174c25d5b7139ae5ff4e8e9eddee5992d2e36adf8a559ffd90dab1442e4fbe429d320c0f33552a17d1557fa41ea70e8fb916c4fa27ed52b5f8ebd8461afa78f1159159a64055ac5f6319e29c28eae58cbc6847770f32c3fed1d04750484f854790f95e9ec01bc5bc461f24966462e359511329305038e94deb6dd42c2"
    );
    const SPI_I: u64 = 0x8e5c_3ae5_0722_1684;
    const SPI_R: u64 = 0xb1f2_01bb_155c_3acd;
    const SKEYSEED: [u8; 20] = hex!("cd2e8050137832245f1dbacc6e4f0a92f94d45d6");
    const DKM: [u8; 132] = hex!(
        "6f1b12cad3cbe097b35430356d869d54cddb0198ec859174d53ceb92dddedbe2436db69f60977c58fa63bbb667f8d36920b109baae8f6c61a9ac49feda01843225d080ec5539d5881a25521ffb2a0a91874a9c0a27fcc2d717eb8963a9e3a89c7ab264757284c28cf8c3ca40576f4220b052b1fb8e9ad60ba3c80557323331a8cbb89f20"
    );
    const DKM_CHILD: [u8; 132] = hex!(
        "4727dc0ef94eb326ce131cf282fb652faa638ad0ddae3786a11bcc0309876009f8c485de011ad962c5b1ca8a41ff8145445749079c5686e26ffebbc342f06981f3da745e11ca0976424d1f8caec623d59dc7186deb20a27b411d1dcb70a365440bf7de905088b0692e8addc094e18d1939bdb67e89798ca6b239e2ccb81c2409dac0106c"
    );
    const DKM_CHILD_DH: [u8; 132] = hex!(
        "b109c21ad4c0797768c1cec9e63554681e48f224bca7f23c20c4ea7041983451e9aa1d5408656c8a975ff1b9d9a12c75ffeb64bdecb30174664cccb4e14f1c377b7f6d1525af77c7092aac3e47f917ebae8297fb5539d2008ce830823a09cc197361d4a289c72745f6ce9fefe812be5bf55b3200fbb82e41a4a40877d3fe106db909707b"
    );
    const SKEYSEED_REKEY: [u8; 20] = hex!("3b03bce748c96d5e8306918d2ff89b68f0648da3");

    #[test]
    fn nist_sp800_135_ikev2_vector() {
        let prf = Prf::HmacSha1;
        let seed = skeyseed(prf, &NI, &NR, &GIR);
        assert_eq!(seed.as_slice(), SKEYSEED);
        let dkm = prf
            .prf_plus(&seed, &[&NI, &NR, &SPI_I.to_be_bytes(), &SPI_R.to_be_bytes()], DKM.len())
            .unwrap();
        assert_eq!(dkm.as_slice(), DKM);
        // The split: SK_d is the first PRF-length block of DKM.
        let keys = ike_keys(prf, &seed, (&NI, &NR), (SPI_I, SPI_R), 20, 16);
        assert_eq!(keys.sk_d.as_slice(), &DKM[..20]);
        assert_eq!(keys.sk_ai.as_slice(), &DKM[20..40]);
        assert_eq!(keys.sk_er.as_slice(), &DKM[76..92]);
        assert_eq!(keys.sk_pr.as_slice(), &DKM[112..132]);
        let child = child_keymat(prf, &keys.sk_d, None, &NI, &NR, 132).unwrap();
        assert_eq!(child.as_slice(), DKM_CHILD);
        let child_pfs = child_keymat(prf, &keys.sk_d, Some(&GIR_NEW), &NI, &NR, 132).unwrap();
        assert_eq!(child_pfs.as_slice(), DKM_CHILD_DH);
        let rekey = skeyseed_rekey(prf, &keys.sk_d, &GIR_NEW, &NI, &NR);
        assert_eq!(rekey.as_slice(), SKEYSEED_REKEY);
    }

    #[test]
    fn prf_plus_stops_at_255_blocks() {
        assert!(Prf::HmacSha256.prf_plus(b"k", &[b"s"], 255 * 32).is_some());
        assert!(Prf::HmacSha256.prf_plus(b"k", &[b"s"], 255 * 32 + 1).is_none());
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let out = Prf::HmacSha256.prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            out.as_slice(),
            hex!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn keys_are_redacted_in_debug_output() {
        let keys = ike_keys(Prf::HmacSha256, &[1; 32], (&[2; 16], &[3; 16]), (1, 2), 0, 36);
        assert_eq!(format!("{keys:?}"), "IkeKeys([redacted])");
        assert!(keys.sk_ai.is_empty() && keys.sk_ei.len() == 36);
    }
}
