//! What one request's `Store` owns: WASI with nothing granted, wasi-nn scoped to the
//! handler's own graphs, captured output, the limiter, and the tags its logs carry.

use super::bindings::{sandserve::handler::logging, LogLevel};
use super::limits::{RequestLimiter, RequestLimits};
use super::output::BoundedOutput;
use super::waits::GuestClock;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_nn::wit::{WasiNnCtx, WasiNnView};

/// Most bytes of guest log records kept per request.
const MAX_LOG_RECORD_BYTES: usize = 4096;

/// Most bytes of log records (the SDK's logging calls) kept per request for the tenant's
/// log ring; later records are dropped and the drop is marked.
pub const MAX_LOG_BYTES_PER_REQUEST: usize = 16 * 1024;

/// Per-request host state.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) nn: WasiNnCtx,
    pub(super) limiter: RequestLimiter,
    pub(super) stdout: BoundedOutput,
    pub(super) stderr: BoundedOutput,
    pub(super) label: std::sync::Arc<str>,
    /// The guest's monotonic clock.
    pub(super) clock: GuestClock,
    /// When the request's time is up: no WASI wait the guest starts lasts past it.
    pub(super) deadline: Instant,
    /// Set when a wait was cut at the deadline: the request has timed out.
    pub(super) wait_cut: bool,
    /// The running thread's CPU time when this request's run began (to tell a long run).
    pub(super) cpu_at_start: std::time::Duration,
    /// The log records of this request, bounded by [`MAX_LOG_BYTES_PER_REQUEST`].
    pub(super) records: super::GuestLog,
}

impl HostState {
    /// Fresh state for one request: no environment, no args, no preopens, no network,
    /// stdin empty, stdout / stderr captured up to `output_capacity` bytes each.
    pub fn new(
        label: std::sync::Arc<str>,
        nn: WasiNnCtx,
        limits: &RequestLimits,
        output_capacity: usize,
        budget: std::sync::Arc<super::MemoryBudget>,
    ) -> Self {
        let stdout = BoundedOutput::new(output_capacity);
        let stderr = BoundedOutput::new(output_capacity);
        let clock = GuestClock::start();
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .monotonic_clock(clock)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            nn,
            limiter: RequestLimiter::new(limits, budget),
            stdout,
            stderr,
            label,
            clock,
            deadline: Instant::now() + limits.timeout,
            wait_cut: false,
            cpu_at_start: std::time::Duration::ZERO,
            records: super::GuestLog::default(),
        }
    }

    pub(super) fn nn_view(&mut self) -> WasiNnView<'_> {
        WasiNnView::new(&mut self.table, &mut self.nn)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let message = truncate(&message, MAX_LOG_RECORD_BYTES);
        let handler = &*self.label;
        let source = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        self.records
            .push(source, message, MAX_LOG_BYTES_PER_REQUEST);
        match level {
            LogLevel::Trace => tracing::trace!(target: "guest", handler, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "guest", handler, "{message}"),
            LogLevel::Info => tracing::info!(target: "guest", handler, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "guest", handler, "{message}"),
            LogLevel::Error => tracing::error!(target: "guest", handler, "{message}"),
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
pub(super) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
