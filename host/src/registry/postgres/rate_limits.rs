//! The AI gateway's rate limits shared by every node (cluster mode): GCRA, the algorithm the
//! node-local `governor` buckets implement, kept in one row per (endpoint, limit, caller)
//! holding the theoretical arrival time (`tat`) of the next call, on the database's clock.
//!
//! With a limit of N calls a minute, the emission interval is `T = 60 s / N` and the burst
//! tolerance `tau = (N - 1) T`: a call at `now` is admitted when `max(tat, now) - now <=
//! tau`, and then `tat` becomes `max(tat, now) + T`. One statement per call, admitted or
//! refused: the upsert locks the row, so concurrent calls from every node are serialised
//! on it and exactly N of a burst pass; a refusal answers how long until `tat - tau`, the
//! `Retry-After`. A row whose `tat` has passed means the same as none and is pruned.

use super::governance::{gov_error, PgGovernance};
use crate::governance::shared::{Bucket, SharedLimits};
use crate::governance::GovernanceError;
use async_trait::async_trait;
use std::time::Duration;

/// The admission statement (see the module doc); `$5` is `T`, `$6` is `tau`, in seconds.
/// `SET` expressions read the row as it was, so `admitted` and `tat` agree.
const TAKE: &str =
    "INSERT INTO rate_limits AS r (tenant, endpoint, bucket, caller, tat, admitted) \
    VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), true) \
    ON CONFLICT (tenant, endpoint, bucket, caller) DO UPDATE SET \
    admitted = greatest(r.tat, now()) - now() <= make_interval(secs => $6), \
    tat = CASE WHEN greatest(r.tat, now()) - now() <= make_interval(secs => $6) \
          THEN greatest(r.tat, now()) + make_interval(secs => $5) ELSE r.tat END \
    RETURNING admitted, extract(epoch FROM (tat - now()))::float8";

/// `T` and `tau` of a limit of `calls` a minute, in seconds.
fn gcra(calls: u32) -> (f64, f64) {
    let calls = f64::from(calls.max(1));
    let interval = 60.0 / calls;
    (interval, interval * (calls - 1.0))
}

/// How long a refused call waits: until `tat - tau` (at least a millisecond).
fn wait(ahead_secs: f64, tau: f64) -> Duration {
    let secs = (ahead_secs - tau).max(0.001);
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(60))
}

#[async_trait]
impl SharedLimits for PgGovernance {
    async fn take(&self, bucket: Bucket) -> Result<Option<Duration>, GovernanceError> {
        let (interval, tau) = gcra(bucket.calls);
        let pool = self.pool.clone();
        // On the store's runtime (its connections' I/O driver), awaited from the caller's.
        let answer = self.bridge.handle().spawn(async move {
            sqlx::query_as::<_, (bool, f64)>(TAKE)
                .bind(&bucket.tenant)
                .bind(&bucket.endpoint)
                .bind(&bucket.limit)
                .bind(&bucket.caller)
                .bind(interval)
                .bind(tau)
                .fetch_one(&pool)
                .await
        });
        let (admitted, ahead) = answer.await.map_err(gov_error)?.map_err(gov_error)?;
        Ok((!admitted).then(|| wait(ahead, tau)))
    }

    fn prune(&self) -> Result<(), GovernanceError> {
        self.run(|pool| async move {
            sqlx::query("DELETE FROM rate_limits WHERE tat < now()")
                .execute(&pool)
                .await
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_parameters_and_waits() {
        assert_eq!(gcra(1), (60.0, 0.0));
        let (t, tau) = gcra(6);
        assert!((t - 10.0).abs() < 1e-9 && (tau - 50.0).abs() < 1e-9);
        // Six calls at once: tat is 60 s ahead; the next call waits 10 s.
        assert_eq!(wait(60.0, tau).as_secs(), 10);
        assert_eq!(wait(-5.0, tau), Duration::from_millis(1));
    }
}
