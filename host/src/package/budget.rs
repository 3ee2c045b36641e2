//! The unpacked-size budget of one archive, and the metered reader every entry is read
//! through, so the bytes counted are the bytes really read, not what a header claims.

use super::PackageError;
use std::io::{self, Read};

/// Bytes an archive may still unpack to; remembers whether it was overrun.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    remaining: u64,
    exceeded: bool,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            remaining: limit,
            exceeded: false,
        }
    }
}

/// A reader that charges every byte it returns to a [`Budget`] and fails once the budget is
/// spent. It asks the inner reader for at most one byte more than the budget has left, so an
/// overrun is noticed without reading (or decompressing) far past the limit.
pub(crate) struct Metered<'a, R> {
    inner: R,
    budget: &'a mut Budget,
    count: u64,
}

impl<'a, R: Read> Metered<'a, R> {
    /// Meters `inner` against `budget`.
    pub fn new(inner: R, budget: &'a mut Budget) -> Self {
        Self {
            inner,
            budget,
            count: 0,
        }
    }

    /// Bytes read through this reader so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// [`PackageError::TooLarge`] when the budget has been overrun (by this reader or an
    /// earlier one).
    pub fn overrun(&self) -> Option<PackageError> {
        self.budget.exceeded.then_some(PackageError::TooLarge {
            limit_bytes: self.budget.limit,
        })
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let allowed = self.budget.remaining.saturating_add(1);
        let take = usize::try_from(allowed).map_or(buf.len(), |a| a.min(buf.len()));
        let n = self.inner.read(&mut buf[..take])?;
        let got = n as u64;
        if got > self.budget.remaining {
            self.budget.exceeded = true;
            self.budget.remaining = 0;
            return Err(io::Error::other(
                "the package exceeds its unpacked size limit",
            ));
        }
        self.budget.remaining -= got;
        self.count += got;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_stops_at_the_limit() {
        let mut budget = Budget::new(10);
        let mut first = Metered::new(&[1u8; 6][..], &mut budget);
        io::copy(&mut first, &mut io::sink()).unwrap();
        assert_eq!(first.count(), 6);
        assert_eq!(first.overrun(), None);

        let mut second = Metered::new(&[1u8; 6][..], &mut budget);
        let err = io::copy(&mut second, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("unpacked size limit"));
        assert_eq!(second.count(), 0, "the overrunning read is not counted");
        assert_eq!(
            second.overrun(),
            Some(PackageError::TooLarge { limit_bytes: 10 })
        );
        assert!(budget.exceeded);
    }

    #[test]
    fn exact_fit_is_allowed() {
        let mut budget = Budget::new(4);
        let mut r = Metered::new(&[0u8; 4][..], &mut budget);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 4);
        assert!(!budget.exceeded);
    }

    #[test]
    fn reads_at_most_one_byte_past_the_budget() {
        let mut budget = Budget::new(3);
        let mut source = io::repeat(7).take(1 << 20);
        let mut buf = vec![0u8; 1 << 16];
        {
            let mut r = Metered::new(&mut source, &mut budget);
            assert!(r.read(&mut buf).is_err());
            assert!(r.read(&mut buf).is_err());
        }
        assert_eq!(source.limit(), (1 << 20) - 5);
    }
}
