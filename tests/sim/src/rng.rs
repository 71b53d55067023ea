//! Seeded randomness: the simulation's network draws and each node's IKE randomness
//! come from `ChaCha` streams derived from the one seed, so a seed replays a run.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng as _, SeedableRng as _};

/// A seeded generator.
#[derive(Debug, Clone)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// The stream for `seed` and `stream` (a node, a restart, the network).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(&stream.to_le_bytes());
        s[16..24].copy_from_slice(b"ikemesh!");
        Self(ChaCha8Rng::from_seed(s))
    }

    /// A uniform `u64`.
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits as a fraction in [0, 1).
        #[allow(clippy::cast_precision_loss)]
        let x = (self.u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// A share from 0 to `max_percent` %, in whole percents.
    pub fn share(&mut self, max_percent: u32) -> f64 {
        let p = u32::try_from(self.u64() % u64::from(max_percent + 1)).unwrap_or(0);
        f64::from(p) / 100.0
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.u64() % (hi - lo + 1) }
    }
}

impl ike::crypto::Random for SimRng {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}
