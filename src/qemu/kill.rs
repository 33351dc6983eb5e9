//! `--kill-after SECS [--seed N]`: when to cut the power.
//!
//! The delay counts from the first `installing` event. Without a seed it is
//! SECS exactly. With `--seed N` it is drawn from N, uniformly in [0, SECS):
//! splitmix64(N) gives 64 bits, the top 53 of which make a fraction in
//! [0, 1) that scales SECS. The same N always gives the same point, and
//! consecutive seeds spread over the window, so a loop over seeds 1..=50
//! covers the install window reproducibly.

use std::time::Duration;

/// A planned power cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KillAfter {
    /// SECS: the delay, or the window it is drawn from with a seed.
    pub window: Duration,
    /// Draw the delay from this seed.
    pub seed: Option<u64>,
}

impl KillAfter {
    /// The delay between the first `installing` event and SIGKILL.
    pub fn delay(&self) -> Duration {
        match self.seed {
            None => self.window,
            Some(seed) => self.window.mul_f64(unit_fraction(seed)),
        }
    }
}

/// A number in [0, 1) derived from `seed`.
pub fn unit_fraction(seed: u64) -> f64 {
    // 53 bits fill an f64 mantissa exactly, so every value is representable.
    (splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// One step of Steele, Lea and Flood's SplitMix64: a well-mixed 64-bit
/// value from any seed, including 0 and small consecutive seeds.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_seed_the_delay_is_the_window() {
        let k = KillAfter {
            window: Duration::from_millis(2500),
            seed: None,
        };
        assert_eq!(k.delay(), Duration::from_millis(2500));
    }

    #[test]
    fn splitmix64_known_values() {
        // Reference outputs of SplitMix64 for state 0 (first output).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15_u64.wrapping_neg()), 0);
    }

    #[test]
    fn seeded_delays_are_deterministic_and_inside_the_window() {
        let window = Duration::from_secs(3);
        let delay = |seed| {
            KillAfter {
                window,
                seed: Some(seed),
            }
            .delay()
        };
        for seed in 0..1000 {
            assert_eq!(delay(seed), delay(seed));
            assert!(delay(seed) < window);
        }
        assert_ne!(delay(1), delay(2));
    }

    #[test]
    fn seeds_spread_over_the_window() {
        // 1000 seeds in 10 buckets: each bucket gets a fair share.
        let mut buckets = [0u32; 10];
        for seed in 0..1000 {
            let f = unit_fraction(seed);
            assert!((0.0..1.0).contains(&f));
            buckets[(f * 10.0) as usize] += 1;
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((60..=140).contains(n), "bucket {i} has {n} of 1000");
        }
    }
}
