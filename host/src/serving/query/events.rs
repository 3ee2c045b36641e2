//! The hook points of the query pipeline: the one place where what is counted, logged or
//! limited per query attaches, for every protocol at once.
//!
//! | event | today | what attaches here later |
//! |---|---|---|
//! | [`received`] (authorized, nothing run yet) | nothing | request ids, rate limits |
//! | [`Attempt`] started / [`Attempt::finished`] (one served entity) | the version's request count and latency | metrics, usage |
//! | [`decoded`] / [`encoded`] | decode and encode times | payload capture (inference tables) |
//! | [`falling_back`] | a warning in the log | metrics |
//!
//! Admission and run times are counted where they happen, in
//! [`super::super::EntityRuntime::invoke`].

use super::super::EntityRuntime;
use std::time::{Duration, Instant};

/// An authorized query is about to pick its entity. Nothing listens yet: this is where
/// a request id is assigned and a rate limit refuses (before any work is done).
#[inline]
pub(super) fn received(_tenant: &str, _name: &str) {}

/// One try of the query on one served entity.
pub(super) struct Attempt {
    started: Instant,
}

impl Attempt {
    /// The try starts (before its body is decoded).
    #[inline]
    pub(super) fn started() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// The try ended, answered or not: counted in the entity's model version statistics.
    #[inline]
    pub(super) fn finished(self, entity: &EntityRuntime, ok: bool) {
        entity.image.stats.request(ok, self.started.elapsed());
    }
}

/// The body was decoded and checked (or refused) in `took`.
#[inline]
pub(super) fn decoded(entity: &EntityRuntime, took: Duration) {
    entity.image.stats.decoded(took);
}

/// The answer was encoded (or failed to be) in `took`.
#[inline]
pub(super) fn encoded(entity: &EntityRuntime, took: Duration) {
    entity.image.stats.encoded(took);
}

/// A server-side failure on `from` is retried on `to`.
pub(super) fn falling_back(from: &EntityRuntime, to: &EntityRuntime) {
    tracing::warn!(from = %from.name, to = %to.name, "falling back after a server-side failure");
}
