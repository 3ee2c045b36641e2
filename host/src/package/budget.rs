//! The unpacked-size budget of one archive, and the metered reader every entry is read
//! through, so the bytes counted are the bytes really read, not what a header claims. The
//! budget also bounds the compression ratio: a gzip bomb is refused once it has inflated a
//! little, not once it has filled the size limit (a whole limit's worth of disk and time).

use super::PackageError;
use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Which bound an archive broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overrun {
    /// More bytes than the size limit.
    Size,
    /// Too many bytes per compressed byte read.
    Ratio,
}

/// The compression-ratio bound: once more than `grace` bytes are unpacked, at most `max`
/// unpacked bytes per byte read from the upload.
#[derive(Debug)]
pub(crate) struct RatioBound {
    /// Most unpacked bytes per upload byte.
    pub max: u64,
    /// Unpacked bytes allowed whatever the ratio (small packages compress well too).
    pub grace: u64,
    /// Bytes read from the upload so far (shared with the reader that counts them).
    pub read: Rc<Cell<u64>>,
}

/// Bytes an archive may still unpack to; remembers whether it was overrun.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    remaining: u64,
    ratio: Option<RatioBound>,
    exceeded: Option<Overrun>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            remaining: limit,
            ratio: None,
            exceeded: None,
        }
    }

    /// The same, also bounded by `ratio`.
    pub fn with_ratio(limit: u64, ratio: RatioBound) -> Self {
        Self {
            ratio: Some(ratio),
            ..Self::new(limit)
        }
    }

    /// Charges `got` bytes just read; the bound they break, if any.
    fn charge(&mut self, got: u64) -> Option<Overrun> {
        if got > self.remaining {
            self.remaining = 0;
            return Some(Overrun::Size);
        }
        self.remaining -= got;
        let unpacked = self.limit - self.remaining;
        let ratio = self.ratio.as_ref()?;
        let allowed = ratio.read.get().saturating_mul(ratio.max).max(ratio.grace);
        (unpacked > allowed).then_some(Overrun::Ratio)
    }

    /// The error for the bound that was broken, if one was.
    fn overrun(&self) -> Option<PackageError> {
        self.exceeded.map(|overrun| match overrun {
            Overrun::Size => PackageError::TooLarge {
                limit_bytes: self.limit,
            },
            Overrun::Ratio => PackageError::CompressionRatio {
                max_ratio: self.ratio.as_ref().map_or(0, |r| r.max),
            },
        })
    }
}

/// A reader that counts the bytes it passes on into a shared cell: the upload's bytes,
/// read below the decompressor, for the ratio bound.
pub(crate) struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Counted<R> {
    /// Counts what is read from `inner` into `read`.
    pub fn new(inner: R, read: Rc<Cell<u64>>) -> Self {
        Self { inner, read }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get().saturating_add(n as u64));
        Ok(n)
    }
}

/// A reader that charges every byte it returns to a [`Budget`] and fails once the budget is
/// spent. It asks the inner reader for at most one byte more than the budget has left, so an
/// overrun is noticed without reading (or decompressing) far past the limit. It remembers
/// whether the inner reader failed, so that a damaged archive is told from a failing sink.
pub(crate) struct Metered<'a, R> {
    inner: R,
    budget: &'a mut Budget,
    count: u64,
    damage: Option<String>,
}

impl<'a, R: Read> Metered<'a, R> {
    /// Meters `inner` against `budget`.
    pub fn new(inner: R, budget: &'a mut Budget) -> Self {
        Self {
            inner,
            budget,
            count: 0,
            damage: None,
        }
    }

    /// Bytes read through this reader so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// [`PackageError::TooLarge`] or [`PackageError::CompressionRatio`] when the budget has
    /// been overrun (by this reader or an earlier one).
    pub fn overrun(&self) -> Option<PackageError> {
        self.budget.overrun()
    }

    /// What the inner reader (the archive itself: tar, gzip) failed with, if it did.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.budget.exceeded.is_some() {
            return Err(io::Error::other("the package exceeds its unpacking limits"));
        }
        let allowed = self.budget.remaining.saturating_add(1);
        let take = usize::try_from(allowed).map_or(buf.len(), |a| a.min(buf.len()));
        let n = match self.inner.read(&mut buf[..take]) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.damage = Some(e.to_string());
                }
                return Err(e);
            }
        };
        if let Some(overrun) = self.budget.charge(n as u64) {
            self.budget.exceeded = Some(overrun);
            return Err(io::Error::other(match overrun {
                Overrun::Size => "the package exceeds its unpacked size limit",
                Overrun::Ratio => "the package inflates far more than any real package",
            }));
        }
        self.count += n as u64;
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
        assert_eq!(budget.exceeded, Some(Overrun::Size));
    }

    #[test]
    fn exact_fit_is_allowed() {
        let mut budget = Budget::new(4);
        let mut r = Metered::new(&[0u8; 4][..], &mut budget);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(budget.exceeded, None);
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
        // Four bytes for the first read (three plus the one that tells), none after it.
        assert_eq!(source.limit(), (1 << 20) - 4);
    }

    fn ratio(max: u64, grace: u64, read: &Rc<Cell<u64>>) -> RatioBound {
        RatioBound {
            max,
            grace,
            read: read.clone(),
        }
    }

    #[test]
    fn the_ratio_bound_applies_past_the_grace_only() {
        let read = Rc::new(Cell::new(1));
        let mut budget = Budget::with_ratio(1 << 20, ratio(10, 100, &read));
        // 100 bytes from 1 upload byte: within the grace.
        let mut r = Metered::new(io::repeat(0).take(100), &mut budget);
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 100);
        // Past the grace, 10 per upload byte: 20 upload bytes allow 200 in all.
        read.set(20);
        let mut r = Metered::new(io::repeat(0).take(100), &mut budget);
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 100);
        let mut r = Metered::new(io::repeat(0).take(1), &mut budget);
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("inflates"), "{err}");
        assert_eq!(r.count(), 0, "the refused byte is not passed on");
        assert_eq!(
            r.overrun(),
            Some(PackageError::CompressionRatio { max_ratio: 10 })
        );
        // Nothing more is read once refused.
        let mut source = io::repeat(0).take(10);
        let mut r = Metered::new(&mut source, &mut budget);
        assert!(r.read(&mut [0u8; 4]).is_err());
        assert_eq!(source.limit(), 10);
    }

    #[test]
    fn the_size_limit_still_applies_under_a_ratio_bound() {
        let read = Rc::new(Cell::new(u64::MAX));
        let mut budget = Budget::with_ratio(8, ratio(2, 0, &read));
        let mut r = Metered::new(io::repeat(0).take(9), &mut budget);
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        assert_eq!(r.overrun(), Some(PackageError::TooLarge { limit_bytes: 8 }));
    }

    #[test]
    fn a_failing_inner_reader_is_damage() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut short"))
            }
        }
        let mut budget = Budget::new(10);
        let mut r = Metered::new(Broken, &mut budget);
        assert!(r.read(&mut [0u8; 4]).is_err());
        assert_eq!(r.damage(), Some("cut short"));
        assert_eq!(r.overrun(), None);
    }

    #[test]
    fn counted_counts_what_it_passes_on() {
        let read = Rc::new(Cell::new(0));
        let mut r = Counted::new(&[1u8; 5][..], read.clone());
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(read.get(), 5);
    }
}
