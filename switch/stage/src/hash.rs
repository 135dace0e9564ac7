//! Seeded hashing of a few words (flow tuples: conntrack's table, VXLAN's outer source port)
//! and a seeded generator (port probes): no global state, no clock; the seed comes from the
//! caller's configuration (so remote peers cannot aim at one bucket, and tests replay exactly).
//!
//! Plain values: each table owns its own.

/// Folded 64x64->128 multiply: the mixing step of foldhash and wyhash.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;

/// Hash of two 64-bit words under `seed` (chain calls, the last result as the next seed, for
/// more words).
#[inline]
pub fn hash2(seed: u64, a: u64, b: u64) -> u64 {
    fold_mul(fold_mul(a ^ seed ^ K0, b ^ K1), seed ^ K2)
}

/// SplitMix64: a small seeded generator (port probe positions).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`; the modulo bias is irrelevant for probe positions).
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n.max(1))) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_seed_and_input() {
        assert_ne!(hash2(1, 2, 3), hash2(2, 2, 3));
        assert_ne!(hash2(1, 2, 3), hash2(1, 3, 2));
        let mut a = SplitMix::new(7);
        let mut b = SplitMix::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert!((0..1000).all(|_| a.below(10) < 10));
    }
}
