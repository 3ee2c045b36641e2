//! The hook points of the query pipeline: the one place where what is counted, logged or
//! limited per query attaches, for every protocol at once.
//!
//! | event | what listens |
//! |---|---|
//! | [`received`] (authorized, nothing run yet) | governance admission: the tenant's concurrency quota, the endpoint's rate limits |
//! | [`Attempt`] started / [`Attempt::finished`] (one served entity) | the version's request count and latency; usage (when the endpoint tracks it) |
//! | [`decoded`] / [`encoded`] | decode and encode times |
//! | [`finished`] (the query's answer or error) | the inference table (sampled) |
//! | [`falling_back`] | a warning in the log |
//!
//! Admission and run times are counted where they happen, in
//! [`super::super::EntityRuntime::invoke`]. Nothing here does disk I/O or holds a lock
//! across an await: usage is summed in memory, rows are queued (see `governance`).

use super::super::EntityRuntime;
use super::error::{Answered, QueryError};
use crate::governance::tables::{payload_text, Row};
use crate::governance::usage::{Counters, UsageKey};
use crate::governance::{Admission, Governance};
use crate::tenancy::TenantGrant;
use std::time::{Duration, Instant};

/// Who asked what: what the hooks record a query under.
pub(super) struct Context<'a> {
    pub governance: &'a Governance,
    pub admission: Admission,
    pub grant: &'a TenantGrant,
    pub name: &'a str,
    pub body_len: usize,
}

/// An authorized query is about to pick its entity: the tenant's concurrency quota and
/// the endpoint's rate limits admit or refuse it, before any work is done.
#[inline]
pub(super) fn received(
    governance: &Governance,
    grant: &TenantGrant,
    name: &str,
) -> Result<Admission, QueryError> {
    Ok(governance.admit(&grant.tenant, name, &grant.token_id)?)
}

/// What a try measured besides its time.
#[derive(Default)]
pub(super) struct Tally {
    /// Answer bytes.
    pub output_bytes: usize,
    /// Guest instructions, when the server meters fuel.
    pub fuel: Option<u64>,
}

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

    /// The try ended, answered or not: counted in the entity's model version statistics
    /// and, when the endpoint tracks usage, in its usage.
    #[inline]
    pub(super) fn finished(
        self,
        context: &Context<'_>,
        entity: &EntityRuntime,
        ok: bool,
        tally: &Tally,
    ) {
        let took = self.started.elapsed();
        entity.image.stats.request(ok, took);
        if !context.admission.tracks_usage() {
            return;
        }
        let key = UsageKey {
            minute: context.admission.arrived_ms / 60_000,
            tenant: context.grant.tenant.clone(),
            endpoint: context.name.to_string(),
            entity: entity.name.clone(),
            token: context.grant.token_id.clone(),
        };
        let one = Counters {
            requests: 1,
            errors: u64::from(!ok),
            input_bytes: context.body_len as u64,
            output_bytes: tally.output_bytes as u64,
            wall_time_us: took.as_micros() as u64,
            fuel: tally.fuel.unwrap_or(0),
            fuel_measured: u64::from(tally.fuel.is_some()),
        };
        context.governance.usage.record(key, &one);
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

/// The query is answered (`Ok`: the answer's text) or failed: a sampled row goes to the
/// endpoint's inference table (queued; never waited for).
pub(super) fn finished<E: Answered>(
    context: &Context<'_>,
    request_id: Option<&str>,
    body: &[u8],
    entity: Option<&EntityRuntime>,
    outcome: Result<&[u8], &E>,
) {
    if !context.admission.sampled() {
        return;
    }
    let tables = &context.governance.tables;
    let limit = tables.settings.max_payload_bytes;
    let (request, request_truncated) = payload_text(body, limit);
    let (status_code, response, response_truncated, error) = match outcome {
        Ok(answer) => {
            let (text, cut) = payload_text(answer, limit);
            (200, Some(text), cut, None)
        }
        Err(e) => (e.status_code(), None, false, Some(e.to_string())),
    };
    let row = Row {
        timestamp_ms: context.admission.arrived_ms,
        request_id: request_id.map(str::to_string),
        client_request_id: client_request_id(body),
        served_entity_name: entity.map(|e| e.name.clone()),
        status_code,
        execution_time_ms: context.admission.arrived.elapsed().as_secs_f64() * 1000.0,
        request,
        request_truncated,
        response,
        response_truncated,
        error,
    };
    tables.submit(&context.grant.tenant, context.name, &row);
}

/// The body's top-level `client_request_id` string (Databricks), if any.
fn client_request_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        client_request_id: Option<String>,
    }
    serde_json::from_slice::<Id>(body).ok()?.client_request_id
}
