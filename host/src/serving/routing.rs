//! Traffic splitting: picks a served entity for each request with probability equal to its
//! route's percentage, lock-free (a splitmix64 stream over an atomic counter).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Cumulative routes: `(upper bound in 0..100, entity index)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    bounds: Vec<(u32, usize)>,
}

impl Split {
    /// From `(percentage, entity index)` pairs that sum to 100; zero shares are skipped.
    pub fn new(shares: &[(u32, usize)]) -> Self {
        let mut total = 0;
        let bounds = shares
            .iter()
            .filter(|(p, _)| *p > 0)
            .map(|&(p, i)| {
                total += p;
                (total, i)
            })
            .collect();
        Self { bounds }
    }

    /// The entity for a draw `roll` in 0..100.
    pub fn pick_with(&self, roll: u32) -> Option<usize> {
        self.bounds
            .iter()
            .find(|(bound, _)| roll < *bound)
            .or(self.bounds.last())
            .map(|&(_, i)| i)
    }

    /// The entity for this request.
    pub fn pick(&self) -> Option<usize> {
        self.pick_with(roll_percent())
    }

    /// Entities in route order, starting after `index` (for fallback).
    pub fn others(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.bounds
            .iter()
            .map(|&(_, i)| i)
            .filter(move |&i| i != index)
    }
}

fn roll_percent() -> u32 {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        AtomicU64::new(u64::from_le_bytes(seed))
    });
    let mut z = state.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % 100) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_cumulative_share() {
        let split = Split::new(&[(80, 0), (20, 1)]);
        assert_eq!(split.pick_with(0), Some(0));
        assert_eq!(split.pick_with(79), Some(0));
        assert_eq!(split.pick_with(80), Some(1));
        assert_eq!(split.pick_with(99), Some(1));
        let counts = (0..10_000).fold([0u32; 2], |mut c, _| {
            c[split.pick().unwrap()] += 1;
            c
        });
        assert!((7_500..8_500).contains(&counts[0]), "{counts:?}");
        assert_eq!(Split::new(&[(0, 0), (100, 1)]).pick_with(0), Some(1));
    }
}
