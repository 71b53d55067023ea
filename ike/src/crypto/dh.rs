//! Key exchange methods (transform type 4): the D-H groups ikemesh speaks.
//!
//! | group | RFC | public value | shared secret |
//! |---|---|---|---|
//! | 31, Curve25519 | 8031 | 32 bytes, little-endian u | 32 bytes; all-zero refused |
//! | 19, 256-bit random ECP | 5903 | x \| y, 64 bytes | x, 32 bytes |
//! | 14, 2048-bit MODP | 3526 | 256 bytes, big-endian | 256 bytes |
//!
//! The private value comes from the caller's [`Random`]: this crate draws no randomness
//! of its own. Public values from the peer are checked (length; on the curve; 1 < y <
//! p-1) before use, and a check that fails is a [`DhError`], never a panic.

use super::{Random, Secret};
use crypto_bigint::{
    BoxedUint, Odd, Resize,
    modular::{BoxedMontyForm, BoxedMontyParams},
};
use zeroize::Zeroizing;

/// A D-H group ikemesh implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// 31: Curve25519 (RFC 8031).
    Curve25519,
    /// 19: 256-bit random ECP group, NIST P-256 (RFC 5903).
    Ecp256,
    /// 14: 2048-bit MODP group (RFC 3526).
    Modp2048,
}

/// Why a peer's public value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// The KE data has the wrong length for the group.
    #[error("key exchange data of {got} bytes, group {group} needs {expected}")]
    BadLength {
        /// The group's number.
        group: u16,
        /// The length the group needs.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The value is not a valid public value of the group (off the curve, out of
    /// range, or giving a degenerate shared secret).
    #[error("invalid public value for group {0}")]
    InvalidPublicValue(u16),
}

/// RFC 3526 section 3: the 2048-bit MODP prime; the generator is 2.
const MODP2048_P: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD",
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F",
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510",
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF"
);
/// Bits of the private exponent for MODP-2048: RFC 3526 section 8 gives 224 to 320
/// for the group's strength; the upper end.
const MODP2048_EXP_BITS: u32 = 320;

fn modp2048() -> (BoxedUint, BoxedMontyParams) {
    let bytes: Vec<u8> = (0..MODP2048_P.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&MODP2048_P[i..i + 2], 16).unwrap_or_default())
        .collect();
    let p = BoxedUint::from_be_slice_vartime(&bytes);
    let params =
        BoxedMontyParams::new_vartime(Odd::new(p.clone()).expect("RFC 3526's prime is odd"));
    (p, params)
}

impl Group {
    /// The transform ID.
    pub fn id(self) -> u16 {
        match self {
            Group::Curve25519 => 31,
            Group::Ecp256 => 19,
            Group::Modp2048 => 14,
        }
    }

    /// The group with this transform ID, if implemented.
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            31 => Group::Curve25519,
            19 => Group::Ecp256,
            14 => Group::Modp2048,
            _ => return None,
        })
    }

    /// Length of a public value (the KE payload's data).
    pub fn public_len(self) -> usize {
        match self {
            Group::Curve25519 => 32,
            Group::Ecp256 => 64,
            Group::Modp2048 => 256,
        }
    }
}

/// Our half of a key exchange: the private value (zeroized on drop) and the public one.
pub struct KeyPair {
    group: Group,
    private: Secret,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("group", &self.group).finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair for `group`.
    pub fn generate(group: Group, rng: &mut dyn Random) -> Self {
        match group {
            Group::Curve25519 => {
                let mut k = Zeroizing::new([0u8; 32]);
                rng.fill(&mut k[..]);
                // aws-lc-rs (s2n-bignum's X25519) rather than x25519-dalek's serial
                // ladder: about twice as fast on x86-64; the scalar still comes from
                // `rng`, and every 32-byte string is a valid X25519 private key.
                let public = x25519_private(&k[..])
                    .and_then(|s| s.compute_public_key().map_err(|_| ()))
                    .map(|p| p.as_ref().to_vec())
                    .unwrap_or_default();
                KeyPair { group, private: Secret::new(k.to_vec()), public }
            }
            Group::Ecp256 => loop {
                // A uniformly random scalar: retry the ~2^-32 draws that are 0 or >= n.
                let mut k = Zeroizing::new([0u8; 32]);
                rng.fill(&mut k[..]);
                // aws-lc-rs (already here for ECDSA) does the point arithmetic about
                // 4x faster than RustCrypto's p256; the scalar still comes from `rng`.
                if let Ok(secret) = ecdh_p256_private(&k[..])
                    && let Ok(sec1) = secret.compute_public_key()
                {
                    // Uncompressed SEC1 is 0x04 | x | y; RFC 5903 sends x | y.
                    let public = sec1.as_ref().get(1..).unwrap_or_default().to_vec();
                    break KeyPair { group, private: Secret::new(k.to_vec()), public };
                }
            },
            Group::Modp2048 => {
                let mut x = Zeroizing::new(vec![0u8; (MODP2048_EXP_BITS / 8) as usize]);
                rng.fill(&mut x);
                x[0] |= 0x80; // full-length exponent, never zero
                let (_, params) = modp2048();
                let g = BoxedMontyForm::new(
                    BoxedUint::from_be_slice_vartime(&[2]).resize(2048),
                    &params,
                );
                let exp = BoxedUint::from_be_slice_vartime(&x);
                let y = g.pow_bounded_exp(&exp, MODP2048_EXP_BITS).retrieve();
                KeyPair { group, private: Secret::new(x.to_vec()), public: fixed_be(&y, 256) }
            }
        }
    }

    /// The group.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Our public value, for the KE payload.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret `g^ir` with the peer's public value.
    pub fn agree(&self, peer: &[u8]) -> Result<Secret, DhError> {
        let id = self.group.id();
        if peer.len() != self.group.public_len() {
            return Err(DhError::BadLength {
                group: id,
                expected: self.group.public_len(),
                got: peer.len(),
            });
        }
        match self.group {
            Group::Curve25519 => {
                use aws_lc_rs::agreement;
                let secret =
                    x25519_private(&self.private).map_err(|()| DhError::InvalidPublicValue(id))?;
                let public = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
                // RFC 8031 section 2.3: a low-order point gives all zeros; aws-lc refuses
                // that result, and we check again.
                let shared = agreement::agree(&secret, public, (), |x| Ok(Secret::new(x.to_vec())))
                    .map_err(|()| DhError::InvalidPublicValue(id))?;
                if shared.iter().all(|&b| b == 0) {
                    return Err(DhError::InvalidPublicValue(id));
                }
                Ok(shared)
            }
            Group::Ecp256 => {
                use aws_lc_rs::agreement;
                let secret = ecdh_p256_private(&self.private)
                    .map_err(|()| DhError::InvalidPublicValue(id))?;
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(0x04);
                sec1.extend_from_slice(peer);
                // aws-lc refuses points not on the curve (and the point at infinity,
                // which has no uncompressed encoding).
                let public = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &sec1);
                agreement::agree(&secret, public, (), |x| Ok(Secret::new(x.to_vec())))
                    .map_err(|()| DhError::InvalidPublicValue(id))
            }
            Group::Modp2048 => {
                let (p, params) = modp2048();
                let y = BoxedUint::from_be_slice(peer, 2048)
                    .map_err(|_| DhError::InvalidPublicValue(id))?;
                let one = BoxedUint::one_with_precision(2048);
                let p_minus_1 = p.wrapping_sub(&one);
                // RFC 7296 section 2.12's checks for MODP: 1 < y < p-1 (y = 1 and
                // y = p-1 would give a secret of 1 or +-1).
                if y <= one || y >= p_minus_1 {
                    return Err(DhError::InvalidPublicValue(id));
                }
                let exp = BoxedUint::from_be_slice_vartime(&self.private);
                let shared = BoxedMontyForm::new(y, &params)
                    .pow_bounded_exp(&exp, MODP2048_EXP_BITS)
                    .retrieve();
                Ok(Secret::new(fixed_be(&shared, 256)))
            }
        }
    }
}

/// An X25519 private key from its 32 bytes (clamped by aws-lc, RFC 7748 section 5).
fn x25519_private(k: &[u8]) -> Result<aws_lc_rs::agreement::PrivateKey, ()> {
    aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::X25519, k)
        .map_err(|_| ())
}

/// An ECDH P-256 private key from its scalar (refused if 0 or >= n).
fn ecdh_p256_private(scalar: &[u8]) -> Result<aws_lc_rs::agreement::PrivateKey, ()> {
    aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::ECDH_P256, scalar)
        .map_err(|_| ())
}

/// `n` as exactly `len` big-endian bytes (left-padded with zeros).
fn fixed_be(n: &BoxedUint, len: usize) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut out = vec![0u8; len];
    let take = bytes.len().min(len);
    out[len - take..].copy_from_slice(&bytes[bytes.len() - take..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::TestRng;
    use hex_literal::hex;

    /// A "random" source that returns fixed bytes, for known-answer tests.
    struct Fixed(Vec<u8>);
    impl Random for Fixed {
        fn fill(&mut self, buf: &mut [u8]) {
            buf.copy_from_slice(&self.0[..buf.len()]);
        }
    }

    #[test]
    fn every_group_agrees_with_itself() {
        let mut rng = TestRng::new(7);
        for group in [Group::Curve25519, Group::Ecp256, Group::Modp2048] {
            let a = KeyPair::generate(group, &mut rng);
            let b = KeyPair::generate(group, &mut rng);
            assert_eq!(a.public().len(), group.public_len());
            let s1 = a.agree(b.public()).unwrap();
            let s2 = b.agree(a.public()).unwrap();
            assert_eq!(s1, s2, "{group:?}");
            assert_ne!(a.public(), b.public());
            assert_eq!(Group::from_id(group.id()), Some(group));
        }
    }

    #[test]
    fn x25519_matches_rfc_7748_section_6_1() {
        let alice = KeyPair::generate(
            Group::Curve25519,
            &mut Fixed(
                hex!("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").to_vec(),
            ),
        );
        assert_eq!(
            alice.public(),
            hex!("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let bob_public = hex!("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        assert_eq!(
            alice.agree(&bob_public).unwrap().as_slice(),
            hex!("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
    }

    #[test]
    fn ecp256_matches_rfc_5903_section_8_1() {
        let i = KeyPair::generate(
            Group::Ecp256,
            &mut Fixed(
                hex!("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433").to_vec(),
            ),
        );
        assert_eq!(
            i.public(),
            hex!(
                "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
                "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3"
            )
        );
        let gr = hex!(
            "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
            "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB"
        );
        assert_eq!(
            i.agree(&gr).unwrap().as_slice(),
            hex!("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE")
        );
    }

    #[test]
    fn bad_public_values_are_refused() {
        let mut rng = TestRng::new(9);
        let x = KeyPair::generate(Group::Curve25519, &mut rng);
        assert_eq!(x.agree(&[0; 32]), Err(DhError::InvalidPublicValue(31)), "low-order point");
        assert!(matches!(x.agree(&[1; 31]), Err(DhError::BadLength { expected: 32, got: 31, .. })));
        let e = KeyPair::generate(Group::Ecp256, &mut rng);
        assert_eq!(e.agree(&[7; 64]), Err(DhError::InvalidPublicValue(19)), "not on the curve");
        let m = KeyPair::generate(Group::Modp2048, &mut rng);
        let mut one = [0u8; 256];
        one[255] = 1;
        assert_eq!(m.agree(&one), Err(DhError::InvalidPublicValue(14)));
        assert_eq!(m.agree(&[0; 256]), Err(DhError::InvalidPublicValue(14)));
        assert_eq!(m.agree(&[0xff; 256]), Err(DhError::InvalidPublicValue(14)), "y >= p");
        let (p, _) = modp2048();
        let p_minus_1 = fixed_be(&p.wrapping_sub(BoxedUint::one_with_precision(2048)), 256);
        assert_eq!(m.agree(&p_minus_1), Err(DhError::InvalidPublicValue(14)));
        assert!(!format!("{m:?}").contains(&format!("{:?}", m.private.as_slice())));
    }
}
