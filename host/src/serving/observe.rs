//! What one served entity reports while it serves: its Prometheus handles
//! ([`EntityMetrics`]) and its ring of handler output (the tenant's `.../logs` route),
//! with the request id on each line and the cause of each failed run (a handler's own
//! error message, a trap, a limit) as a line of its own; and the build lines written
//! while an endpoint's entities are loaded (the `.../build-logs` route). Everything here
//! is the serving tenant's: for a model version shared by another tenant, the counters,
//! log lines and fairness share are those of the tenant whose endpoint serves it, never the
//! owner's.

use crate::runtime::{GuestLog, RuntimeError, MAX_LINE_BYTES};
use crate::telemetry::metrics::{EntityLabels, EntityMetrics};
use crate::telemetry::{EntityLogs, LogLine, LogRing, ModelStats};
use std::sync::Arc;

/// An entity's metrics, inference counters and log ring, and the tenant they are for.
pub struct Observed {
    /// The tenant whose endpoint (or direct query) serves the entity.
    pub tenant: Arc<str>,
    /// Its Prometheus handles.
    pub metrics: EntityMetrics,
    /// Its Triton statistics (`/v2/models/.../stats`), under the serving tenant.
    pub stats: Arc<ModelStats>,
    /// Its handler-output ring (`None` for a model version queried directly: no route
    /// reads it).
    logs: Option<Arc<LogRing>>,
}

impl Observed {
    /// The handles and ring of an endpoint's entity (the ring is kept across config
    /// updates of the endpoint).
    pub fn endpoint_entity(
        logs: &EntityLogs,
        labels: &EntityLabels<'_>,
        stats: Arc<ModelStats>,
    ) -> Self {
        Self {
            tenant: labels.tenant.into(),
            metrics: EntityMetrics::new(labels),
            stats,
            logs: Some(
                logs.requests
                    .ring(labels.tenant, labels.endpoint, labels.entity),
            ),
        }
    }

    /// The handles of a model version queried directly (no endpoint, no ring).
    pub fn direct(labels: &EntityLabels<'_>, stats: Arc<ModelStats>) -> Self {
        Self {
            tenant: labels.tenant.into(),
            metrics: EntityMetrics::new(labels),
            stats,
            logs: None,
        }
    }

    /// Files what the guest wrote while serving `request_id`.
    pub fn guest_output(&self, request_id: &str, log: GuestLog) {
        let Some(ring) = &self.logs else { return };
        if log.is_empty() && !log.truncated {
            return;
        }
        let truncated = log.truncated;
        let mut lines: Vec<LogLine> = log
            .lines
            .into_iter()
            .map(|line| LogLine::now(request_id, line.source, line.text))
            .collect();
        if truncated {
            lines.push(LogLine::now(
                request_id,
                "sandserve",
                "[output over the per-request bound was dropped]",
            ));
        }
        ring.extend(lines);
    }

    /// Files why a run of `request_id` failed.
    pub fn failed(&self, request_id: &str, error: &RuntimeError) {
        let Some(ring) = &self.logs else { return };
        let text = error.to_string();
        let text = match text.char_indices().nth(MAX_LINE_BYTES) {
            Some((end, _)) => &text[..end],
            None => &text,
        };
        ring.extend([LogLine::now(
            request_id,
            "error",
            format!("request failed: {text}"),
        )]);
    }
}

/// Writes one build line for an entity of an endpoint.
pub fn build_line(logs: &EntityLogs, tenant: &str, endpoint: &str, entity: &str, text: String) {
    logs.builds
        .ring(tenant, endpoint, entity)
        .extend([LogLine::now("", "build", text)]);
}
