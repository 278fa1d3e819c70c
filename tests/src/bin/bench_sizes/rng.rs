//! A small seeded random generator (SplitMix64) and the distributions the repository
//! generator draws from. Hand-written rather than a crate so that the same seed gives the
//! same repository whatever crate versions the lock file holds.

/// SplitMix64: fast, 64-bit state, good enough statistics for generating test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_F0E1_7A6B_C3D2)
    }

    /// An independent generator for a sub-task, so that adding draws in one place does
    /// not shift everything after it.
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng(self.next() ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An index in `[0, n)` skewed towards 0 (a rough Zipf law): natural text and
    /// identifiers reuse a few words a lot and most words rarely.
    pub fn skewed(&mut self, n: usize) -> usize {
        ((self.unit().powf(2.6) * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// A uniformly chosen element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A word from `items`, skewed towards the front of the list.
    pub fn word<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.skewed(items.len())]
    }

    /// A size around `median` with a log-normal spread, clamped to `[lo, hi]`.
    pub fn size(&mut self, median: usize, lo: usize, hi: usize) -> usize {
        // Sum of uniforms: close enough to a normal with standard deviation 0.7.
        let normal = ((0..6).map(|_| self.unit()).sum::<f64>() - 3.0) * 0.7 * 2f64.sqrt();
        ((median as f64 * normal.exp()) as usize).clamp(lo, hi)
    }

    /// `n` uniformly random bytes (incompressible).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// `n` lowercase hex digits.
    pub fn hex(&mut self, n: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..n).map(|_| DIGITS[self.below(16)] as char).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!((0..100).map(|_| a.next()).collect::<Vec<_>>(), (0..100).map(|_| b.next()).collect::<Vec<_>>());
        assert_ne!(Rng::new(7).next(), Rng::new(8).next());
    }
}
