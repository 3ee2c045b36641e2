//! What handlers printed, kept per served entity for its tenant to read: a bounded ring of
//! lines per (tenant, endpoint, entity) — the newest kept, the oldest dropped past
//! [`RING_BYTES`] — and a [`LogBook`] of rings. Two books exist: the handlers' output of
//! each request (`.../logs`) and what loading and validating the entity's image said at
//! each deploy (`.../build-logs`). A ring is found only under its own tenant's name, so a
//! tenant never reads another's lines.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most bytes of text one entity's ring keeps.
pub const RING_BYTES: usize = 256 * 1024;

/// One line of a ring.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When it was recorded, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The request it came from (empty for build lines).
    pub request_id: String,
    /// Where it came from: `stdout`, `stderr`, a log level, or `error`.
    pub source: &'static str,
    /// The text, without its newline.
    pub text: String,
}

impl LogLine {
    /// A line recorded now.
    pub fn now(request_id: &str, source: &'static str, text: impl Into<String>) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            at_ms,
            request_id: request_id.to_string(),
            source,
            text: text.into(),
        }
    }

    fn cost(&self) -> usize {
        self.text.len() + self.request_id.len() + 32
    }
}

/// The newest lines of one entity, within [`RING_BYTES`].
#[derive(Debug, Default)]
pub struct LogRing {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    dropped: u64,
}

impl LogRing {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `lines`, dropping the oldest past the bound.
    pub fn extend(&self, lines: impl IntoIterator<Item = LogLine>) {
        let mut ring = self.lock();
        for line in lines {
            ring.bytes += line.cost();
            ring.lines.push_back(line);
        }
        while ring.bytes > RING_BYTES {
            let Some(old) = ring.lines.pop_front() else {
                break;
            };
            ring.bytes -= old.cost();
            ring.dropped += 1;
        }
    }

    /// The lines kept, oldest first, and how many older ones were dropped.
    pub fn snapshot(&self) -> (Vec<LogLine>, u64) {
        let ring = self.lock();
        (ring.lines.iter().cloned().collect(), ring.dropped)
    }
}

type RingKey = (String, String, String);

/// Rings by (tenant, endpoint, entity).
#[derive(Debug, Default)]
pub struct LogBook {
    rings: Mutex<HashMap<RingKey, Arc<LogRing>>>,
}

impl LogBook {
    fn lock(&self) -> MutexGuard<'_, HashMap<RingKey, Arc<LogRing>>> {
        self.rings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ring of this entity, made empty when it has none (kept across config updates
    /// of its endpoint).
    pub fn ring(&self, tenant: &str, endpoint: &str, entity: &str) -> Arc<LogRing> {
        let key = (tenant.to_string(), endpoint.to_string(), entity.to_string());
        self.lock().entry(key).or_default().clone()
    }

    /// The ring of this entity, if it ever had one.
    pub fn find(&self, tenant: &str, endpoint: &str, entity: &str) -> Option<Arc<LogRing>> {
        let key = (tenant.to_string(), endpoint.to_string(), entity.to_string());
        self.lock().get(&key).cloned()
    }

    /// Forgets the rings of an endpoint (it was deleted).
    pub fn forget_endpoint(&self, tenant: &str, endpoint: &str) {
        self.lock()
            .retain(|(t, e, _), _| !(t == tenant && e == endpoint));
    }
}

/// The per-entity logs the server keeps.
#[derive(Debug, Default)]
pub struct EntityLogs {
    /// What handlers printed while serving requests.
    pub requests: LogBook,
    /// What loading and validating each entity's image said.
    pub builds: LogBook,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_newest_lines_within_its_bound() {
        let ring = LogRing::default();
        let line = |i: usize| LogLine::now("r", "stdout", format!("{i:0>1000}"));
        ring.extend((0..1000).map(line));
        let (lines, dropped) = ring.snapshot();
        assert!(lines.iter().map(LogLine::cost).sum::<usize>() <= RING_BYTES);
        assert_eq!(lines.len() as u64 + dropped, 1000);
        assert!(lines.last().is_some_and(|l| l.text.ends_with("999")));
    }

    #[test]
    fn rings_are_found_only_under_their_own_tenant() {
        let book = LogBook::default();
        book.ring("a", "e", "x")
            .extend([LogLine::now("r", "stdout", "secret")]);
        assert!(book.find("b", "e", "x").is_none());
        assert_eq!(
            book.find("a", "e", "x").map(|r| r.snapshot().0.len()),
            Some(1)
        );
        book.forget_endpoint("a", "e");
        assert!(book.find("a", "e", "x").is_none());
    }
}
