//! Prometheus metrics: the process-wide recorder of the `metrics` facade (installed once,
//! rendered by `GET /metrics`), the names every layer reports under, the handles one served
//! entity updates on each request, and the filter that gives a tenant its own endpoint's
//! samples.
//!
//! Names follow Triton's families where one means the same thing, conformed to the
//! Prometheus naming rules that `promtool check metrics` enforces: counters end in
//! `_total` (`nv_inference_request_success_total`, `nv_inference_request_failure_total`,
//! `nv_inference_count_total`), and Triton's cumulative `*_duration_us` counters are
//! histograms in seconds under the same stem (`nv_inference_request_duration_seconds`,
//! `nv_inference_queue_duration_seconds`, `nv_inference_compute_input_duration_seconds`,
//! `nv_inference_compute_infer_duration_seconds`,
//! `nv_inference_compute_output_duration_seconds`; a histogram's `_sum` is Triton's
//! counter, in seconds). They carry Triton's `model` and `version` labels plus `tenant`,
//! `endpoint` and `entity`. What Triton has no name for is `sandserve_*`. The handles of
//! an entity are registered once, when it is built, so a request updates atomics and
//! allocates nothing.

use metrics::{Counter, Gauge, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Bucket bounds, seconds, of every `*_seconds` histogram: 50 µs to 30 s.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 30.0,
];

/// The recorder, installed on first use.
struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();

fn exporter() -> Option<&'static Exporter> {
    EXPORTER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder was installed first (none is in this
            // binary); metrics are then not exported, and serving goes on.
            metrics::set_global_recorder(recorder).ok()?;
            let process = metrics_process::Collector::default();
            process.describe();
            describe();
            Some(Exporter { handle, process })
        })
        .as_ref()
}

/// Installs the recorder (idempotent). Call before any handle is made: a handle made
/// before it counts nowhere.
pub fn install() -> bool {
    exporter().is_some()
}

/// Drains the histograms' pending samples; run every few seconds so that memory stays
/// bounded between scrapes.
pub fn upkeep() {
    if let Some(exporter) = exporter() {
        exporter.handle.run_upkeep();
    }
}

/// Every metric in Prometheus text format (process metrics refreshed first).
pub fn render() -> String {
    match exporter() {
        Some(exporter) => {
            exporter.process.collect();
            exporter.handle.render()
        }
        None => String::new(),
    }
}

/// The samples of `rendered` labelled with this tenant and endpoint, with the `# HELP`
/// and `# TYPE` lines of the families that keep a sample. Names are resource names
/// (`[a-z0-9_-]`), so the label text cannot be forged by another label's value.
pub fn for_endpoint(rendered: &str, tenant: &str, endpoint: &str) -> String {
    let tenant_label = format!("tenant=\"{tenant}\"");
    let endpoint_label = format!("endpoint=\"{endpoint}\"");
    let mut out = String::new();
    // The comment lines since the last sample: the next family's header.
    let mut header = String::new();
    let mut after_sample = false;
    for line in rendered.lines() {
        if line.starts_with('#') {
            if after_sample {
                header.clear();
                after_sample = false;
            }
            header.push_str(line);
            header.push('\n');
            continue;
        }
        after_sample = true;
        let labels = line.split_once('{').map_or("", |(_, rest)| rest);
        if labels.contains(&tenant_label) && labels.contains(&endpoint_label) {
            out.push_str(&header);
            header.clear();
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Names reported outside this module.
pub mod names {
    /// Bytes of package uploads received, by tenant.
    pub const UPLOAD_BYTES: &str = "sandserve_upload_bytes_total";
    /// Graphs loaded into an engine, by engine.
    pub const GRAPH_LOADS: &str = "sandserve_graph_loads_total";
    /// Batched runs of two or more requests, by image version, graph and whether the
    /// batch held more than one tenant's requests (`inference::batching`).
    pub const BATCHES: &str = "sandserve_batches_total";
    /// Time in one wasi-nn `compute` call, by engine.
    pub const NN_COMPUTE: &str = "sandserve_wasi_nn_compute_seconds";
    /// HTTP responses, by status class.
    pub const HTTP_REQUESTS: &str = "sandserve_http_requests_total";
    /// HTTP request latency, by status class.
    pub const HTTP_DURATION: &str = "sandserve_http_request_duration_seconds";
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        SUCCESS,
        "Inference requests that succeeded (Triton's family)."
    );
    describe_counter!(
        FAILURE,
        "Inference requests that failed, by status_class (Triton's family)."
    );
    describe_counter!(
        COUNT,
        "Inferences performed, one per request (Triton's family)."
    );
    describe_histogram!(
        REQUEST_S,
        Unit::Seconds,
        "Inference request time, decode to encode (Triton's family)."
    );
    describe_histogram!(
        QUEUE_S,
        Unit::Seconds,
        "Time waiting for a slot (Triton's family)."
    );
    describe_histogram!(
        INPUT_S,
        Unit::Seconds,
        "Time decoding and checking request bodies (Triton's family)."
    );
    describe_histogram!(
        INFER_S,
        Unit::Seconds,
        "Time in the handler's predict call (Triton's family)."
    );
    describe_histogram!(
        OUTPUT_S,
        Unit::Seconds,
        "Time encoding answers (Triton's family)."
    );
    describe_histogram!(
        INSTANTIATE_S,
        Unit::Seconds,
        "Time creating and instantiating a sandbox."
    );
    describe_counter!(
        FUEL,
        "Guest instructions executed (wasmtime fuel), when metered."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Requests admitted and not yet answered, per entity."
    );
    describe_counter!(
        names::UPLOAD_BYTES,
        Unit::Bytes,
        "Package upload bytes received."
    );
    describe_counter!(names::GRAPH_LOADS, "Graphs loaded into an engine.");
    describe_counter!(
        names::BATCHES,
        "Batched runs of two or more requests (cross_tenant: of more than one tenant)."
    );
    describe_histogram!(
        names::NN_COMPUTE,
        Unit::Seconds,
        "Time in one wasi-nn compute call."
    );
    describe_counter!(
        names::HTTP_REQUESTS,
        "HTTP responses sent, by status class."
    );
    describe_histogram!(
        names::HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, to the response head."
    );
}

const SUCCESS: &str = "nv_inference_request_success_total";
const FAILURE: &str = "nv_inference_request_failure_total";
const COUNT: &str = "nv_inference_count_total";
const REQUEST_S: &str = "nv_inference_request_duration_seconds";
const QUEUE_S: &str = "nv_inference_queue_duration_seconds";
const INPUT_S: &str = "nv_inference_compute_input_duration_seconds";
const INFER_S: &str = "nv_inference_compute_infer_duration_seconds";
const OUTPUT_S: &str = "nv_inference_compute_output_duration_seconds";
const INSTANTIATE_S: &str = "sandserve_instantiate_seconds";
const FUEL: &str = "sandserve_fuel_consumed_total";
const IN_FLIGHT: &str = "sandserve_instances_in_flight";

/// Whom a served entity's samples are labelled with.
pub struct EntityLabels<'a> {
    /// The owning tenant.
    pub tenant: &'a str,
    /// The serving endpoint ("" for a model version queried directly).
    pub endpoint: &'a str,
    /// The served entity's name within the endpoint.
    pub entity: &'a str,
    /// The model it serves.
    pub model: &'a str,
    /// The model version.
    pub version: u64,
}

/// The handles one served entity updates; made once per entity.
pub struct EntityMetrics {
    success: Counter,
    failure_client: Counter,
    failure_server: Counter,
    count: Counter,
    request_s: Histogram,
    queue_s: Histogram,
    input_s: Histogram,
    infer_s: Histogram,
    output_s: Histogram,
    instantiate_s: Histogram,
    fuel: Counter,
    in_flight: Gauge,
}

impl EntityMetrics {
    /// Registers the entity's series (they show from its first request on).
    pub fn new(labels: &EntityLabels<'_>) -> Self {
        install();
        let base = vec![
            Label::new("tenant", labels.tenant.to_string()),
            Label::new("endpoint", labels.endpoint.to_string()),
            Label::new("entity", labels.entity.to_string()),
            Label::new("model", labels.model.to_string()),
            Label::new("version", labels.version.to_string()),
        ];
        let with_class = |class: &'static str| {
            let mut labels = base.clone();
            labels.push(Label::from_static_parts("status_class", class));
            labels
        };
        Self {
            success: metrics::counter!(SUCCESS, base.clone()),
            failure_client: metrics::counter!(FAILURE, with_class("4xx")),
            failure_server: metrics::counter!(FAILURE, with_class("5xx")),
            count: metrics::counter!(COUNT, base.clone()),
            request_s: metrics::histogram!(REQUEST_S, base.clone()),
            queue_s: metrics::histogram!(QUEUE_S, base.clone()),
            input_s: metrics::histogram!(INPUT_S, base.clone()),
            infer_s: metrics::histogram!(INFER_S, base.clone()),
            output_s: metrics::histogram!(OUTPUT_S, base.clone()),
            instantiate_s: metrics::histogram!(INSTANTIATE_S, base.clone()),
            fuel: metrics::counter!(FUEL, base.clone()),
            in_flight: metrics::gauge!(IN_FLIGHT, base),
        }
    }

    /// A try on this entity ended after `took`: `None` when it succeeded, else whether the
    /// failure was the server's (5xx) or the client's (4xx).
    #[inline]
    pub fn request(&self, took: Duration, failure_server_side: Option<bool>) {
        match failure_server_side {
            None => {
                self.success.increment(1);
                self.count.increment(1);
            }
            Some(true) => self.failure_server.increment(1),
            Some(false) => self.failure_client.increment(1),
        }
        self.request_s.record(took.as_secs_f64());
    }

    /// A request waited `took` for its slot.
    #[inline]
    pub fn queued(&self, took: Duration) {
        self.queue_s.record(took.as_secs_f64());
    }

    /// The body was decoded and checked in `took`.
    #[inline]
    pub fn decoded(&self, took: Duration) {
        self.input_s.record(took.as_secs_f64());
    }

    /// The answer was encoded in `took`.
    #[inline]
    pub fn encoded(&self, took: Duration) {
        self.output_s.record(took.as_secs_f64());
    }

    /// A handler ran: instantiation, predict, and the fuel it used when metered.
    #[inline]
    pub fn ran(&self, instantiate: Duration, predict: Duration, fuel: Option<u64>) {
        self.instantiate_s.record(instantiate.as_secs_f64());
        self.infer_s.record(predict.as_secs_f64());
        if let Some(fuel) = fuel {
            self.fuel.increment(fuel);
        }
    }

    /// A request was admitted (`+1`) or left (`-1`).
    #[inline]
    pub fn in_flight(&self, delta: f64) {
        self.in_flight.increment(delta);
    }
}

/// HTTP responses by status class, registered once.
pub struct HttpMetrics {
    classes: [(Counter, Histogram); 5],
}

impl HttpMetrics {
    /// The process's handles (made on first use).
    pub fn get() -> &'static HttpMetrics {
        static HTTP: OnceLock<HttpMetrics> = OnceLock::new();
        HTTP.get_or_init(|| {
            install();
            let make = |class: &'static str| {
                let labels = [Label::from_static_parts("status_class", class)];
                (
                    metrics::counter!(names::HTTP_REQUESTS, labels.iter()),
                    metrics::histogram!(names::HTTP_DURATION, labels.iter()),
                )
            };
            HttpMetrics {
                classes: [
                    make("1xx"),
                    make("2xx"),
                    make("3xx"),
                    make("4xx"),
                    make("5xx"),
                ],
            }
        })
    }

    /// A response with `status` went out `took` after its request arrived.
    #[inline]
    pub fn response(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let (count, latency) = &self.classes[class];
        count.increment(1);
        latency.record(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_keeps_only_its_own_samples_and_their_headers() {
        let text = "# HELP a_total help a\n# TYPE a_total counter\n\
                    a_total{tenant=\"t\",endpoint=\"e\",entity=\"x\"} 1\n\
                    a_total{tenant=\"u\",endpoint=\"e\",entity=\"x\"} 5\n\
                    a_total{tenant=\"t\",endpoint=\"e2\",entity=\"x\"} 6\n\
                    # HELP b_total help b\n# TYPE b_total counter\n\
                    b_total{tenant=\"u\",endpoint=\"e\"} 2\n\
                    # TYPE c counter\nc{tenant=\"t\",endpoint=\"e\"} 3\n";
        let mine = for_endpoint(text, "t", "e");
        assert_eq!(
            mine,
            "# HELP a_total help a\n# TYPE a_total counter\n\
             a_total{tenant=\"t\",endpoint=\"e\",entity=\"x\"} 1\n\
             # TYPE c counter\nc{tenant=\"t\",endpoint=\"e\"} 3\n"
        );
    }
}
