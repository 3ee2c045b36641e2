//! Traffic splitting: picks a served entity for each request with probability equal to its
//! route's percentage, lock-free (a splitmix64 stream over an atomic counter that each
//! split owns: no process-wide state, so two servers in one process, or two tests, draw
//! apart).

use std::sync::atomic::{AtomicU64, Ordering};

/// Cumulative routes: `(upper bound in 0..100, entity index)`, and the draws that pick
/// among them. Two splits are equal when their routes are.
#[derive(Debug, Clone)]
pub struct Split {
    bounds: Vec<(u32, usize)>,
    draws: Draws,
}

impl PartialEq for Split {
    fn eq(&self, other: &Self) -> bool {
        self.bounds == other.bounds
    }
}

impl Eq for Split {}

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
        Self {
            bounds,
            draws: Draws::seeded(),
        }
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
        self.pick_with(self.draws.percent())
    }

    /// Entities in route order, starting after `index` (for fallback).
    pub fn others(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.bounds
            .iter()
            .map(|&(_, i)| i)
            .filter(move |&i| i != index)
    }
}

/// A splitmix64 stream: one atomic add per draw, seeded from the operating system.
#[derive(Debug)]
struct Draws(AtomicU64);

impl Draws {
    fn seeded() -> Self {
        let mut seed = [0u8; 8];
        // Without entropy the stream still spreads requests evenly; it is only predictable.
        let _ = getrandom::fill(&mut seed);
        Self(AtomicU64::new(u64::from_le_bytes(seed)))
    }

    /// A draw in 0..100.
    fn percent(&self) -> u32 {
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % 100) as u32
    }
}

impl Clone for Draws {
    /// A copy draws its own stream.
    fn clone(&self) -> Self {
        Self::seeded()
    }
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

    #[test]
    fn each_split_draws_its_own_stream() {
        let first = Split::new(&[(50, 0), (50, 1)]);
        let second = first.clone();
        assert_eq!(first, second, "splits compare by their routes");
        let draws = |split: &Split| (0..64).map(|_| split.pick()).collect::<Vec<_>>();
        // Two seeds from the operating system give the same 64 draws with odds of 2^-64.
        assert_ne!(draws(&first), draws(&second));
    }
}
