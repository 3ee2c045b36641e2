//! Admission on the query path: an endpoint's rate limits (GCRA token buckets from the
//! `governor` crate: a limit of N calls a minute admits a burst of N, then one more every
//! 60/N seconds) and a tenant's concurrent-query quota. Everything here is in memory and
//! lock-light: a direct limiter is one atomic, a keyed one a short mutex.

use super::gateway::{GatewayConfig, RateKey};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why a query was refused before any work was done.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A rate limit of the endpoint is used up.
    #[error("rate limit of {calls} calls per minute per {key} reached; retry in {} s", retry_secs(*.retry_after))]
    RateLimited {
        /// The limit.
        calls: u32,
        /// `endpoint` or `user`.
        key: &'static str,
        /// When a call will be admitted again.
        retry_after: Duration,
    },
    /// Cluster mode: the rate limits' shared state cannot be reached (a limited endpoint
    /// admits nothing then, rather than everything).
    #[error("the rate limit of this endpoint cannot be checked now; retry shortly")]
    Unavailable,
    /// The tenant runs as many queries as its quota allows.
    #[error("the tenant's quota of {max} concurrent requests is reached; retry shortly")]
    TooManyConcurrent {
        /// The quota.
        max: u32,
    },
}

/// Whole seconds to wait, at least 1.
pub fn retry_secs(wait: Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}

impl Refusal {
    /// Seconds the client should wait (the `Retry-After` header).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after, .. } => retry_secs(*retry_after),
            Self::TooManyConcurrent { .. } | Self::Unavailable => 1,
        }
    }
}

enum Bucket {
    /// `calls: 0`: nothing passes.
    Closed,
    Endpoint(DefaultDirectRateLimiter),
    User(DefaultKeyedRateLimiter<String>),
}

struct Limit {
    calls: u32,
    key: RateKey,
    bucket: Bucket,
}

/// The live rate limits of one endpoint.
pub struct RateLimits {
    limits: Vec<Limit>,
}

impl RateLimits {
    /// Fresh buckets for `config`'s limits, the per-user ones first.
    pub fn new(config: &GatewayConfig) -> Self {
        let mut limits: Vec<Limit> = config
            .rate_limits
            .iter()
            .map(|l| {
                let bucket = match NonZeroU32::new(l.calls) {
                    None => Bucket::Closed,
                    Some(n) => match l.key {
                        RateKey::Endpoint => {
                            Bucket::Endpoint(RateLimiter::direct(Quota::per_minute(n)))
                        }
                        RateKey::User => Bucket::User(RateLimiter::keyed(Quota::per_minute(n))),
                    },
                };
                Limit {
                    calls: l.calls,
                    key: l.key,
                    bucket,
                }
            })
            .collect();
        limits.sort_by_key(|l| l.key != RateKey::User);
        Self { limits }
    }

    /// Takes one call from every limit that applies to `user`; the first one used up
    /// refuses. The caller's own limits are checked first, so a caller over its own
    /// limit does not use up the endpoint's calls for the others (a call the endpoint's
    /// limit refuses still counts against the caller's own).
    pub fn check(&self, user: &str) -> Result<(), Refusal> {
        for limit in &self.limits {
            let refused = |retry_after| Refusal::RateLimited {
                calls: limit.calls,
                key: limit.key.as_str(),
                retry_after,
            };
            let now = DefaultClock::default().now();
            match &limit.bucket {
                Bucket::Closed => return Err(refused(Duration::from_secs(60))),
                Bucket::Endpoint(b) => b.check().map_err(|n| refused(n.wait_time_from(now)))?,
                Bucket::User(b) => b
                    .check_key(&user.to_string())
                    .map_err(|n| refused(n.wait_time_from(now)))?,
            }
        }
        Ok(())
    }

    /// Drops per-user buckets that are full again (bounded memory with many tokens).
    pub fn shrink(&self) {
        for limit in &self.limits {
            if let Bucket::User(b) = &limit.bucket {
                b.retain_recent();
                b.shrink_to_fit();
            }
        }
    }
}

/// A tenant's concurrent-query count against its quota.
#[derive(Default)]
pub struct InFlight {
    running: AtomicU32,
}

/// One admitted query of a tenant; counted until dropped.
pub struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Admits one more query unless `max` already run.
    pub fn enter(self: &Arc<Self>, max: u32) -> Result<Slot, Refusal> {
        let admitted = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Ok(Slot(self.clone()))
        } else {
            Err(Refusal::TooManyConcurrent { max })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::gateway::{RateLimit, RenewalPeriod};

    fn limits(list: &[(u32, RateKey)]) -> RateLimits {
        RateLimits::new(&GatewayConfig {
            rate_limits: list
                .iter()
                .map(|&(calls, key)| RateLimit {
                    calls,
                    key,
                    renewal_period: RenewalPeriod::Minute,
                })
                .collect(),
            ..GatewayConfig::default()
        })
    }

    #[test]
    fn a_limit_admits_its_burst_then_refuses_with_a_wait() {
        let l = limits(&[(3, RateKey::Endpoint)]);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let Err(Refusal::RateLimited { retry_after, .. }) = l.check("b") else {
            panic!("the fourth call passed");
        };
        assert!(retry_after > Duration::from_secs(10) && retry_after <= Duration::from_secs(20));
    }

    #[test]
    fn a_user_limit_counts_each_user_apart_and_the_stricter_applies() {
        let l = limits(&[(4, RateKey::Endpoint), (2, RateKey::User)]);
        assert!(l.check("a").is_ok() && l.check("a").is_ok());
        // Refused by its own limit: the endpoint's calls are not spent.
        assert!(matches!(
            l.check("a"),
            Err(Refusal::RateLimited { key: "user", .. })
        ));
        assert!(l.check("b").is_ok() && l.check("c").is_ok());
        assert!(matches!(
            l.check("d"),
            Err(Refusal::RateLimited {
                key: "endpoint",
                ..
            })
        ));
        assert!(limits(&[(0, RateKey::User)]).check("a").is_err());
    }

    #[test]
    fn the_concurrency_quota_counts_slots_until_dropped() {
        let f = Arc::new(InFlight::default());
        let one = f.enter(1);
        assert!(one.is_ok());
        assert!(f.enter(1).is_err());
        drop(one);
        assert!(f.enter(1).is_ok());
    }
}
