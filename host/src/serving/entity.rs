//! One served entity at run time: the loaded image, its effective limits, admission control
//! (at most `max_concurrency` requests running, at most `max_queue` waiting; past that a
//! request is refused at once instead of piling up in memory), where each request's sandbox
//! runs (`placement`) and the spare sandbox its next request will use (`spare`).

use super::executor::{FairKey, GuestThreadError, GuestThreads, JobLength};
use super::observe::Observed;
use super::placement::{
    now_millis, InlinePolicy, Placement, RunHistory, INLINE_BUDGET, MAX_INLINE_INPUT_BYTES,
};
use super::spare::{Spare, SpareBudget};
use super::{PrepareError, ServingError};
use crate::images::LoadedImage;
use crate::inference::{InFlightScope, RequestInFlight};
use crate::registry::ServedEntity;
use crate::runtime::priority;
use crate::runtime::{
    Finished, GuestLog, Invocation, Request, RequestLimits, RuntimeError, SpentSandbox,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A served entity ready to take requests.
pub struct EntityRuntime {
    /// Name within the endpoint.
    pub name: String,
    /// Model name.
    pub model: String,
    /// Image version.
    pub version: u64,
    /// The loaded image.
    pub image: Arc<LoadedImage>,
    /// Effective per-request limits.
    pub limits: RequestLimits,
    /// Most requests running at once.
    pub max_concurrency: usize,
    /// Most requests waiting.
    pub max_queue: usize,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    history: RunHistory,
    spare: Spare,
    /// The serving tenant (the endpoint's, which for a shared model version is not the
    /// owner's): its share of the guest threads is counted under this key.
    tenant: FairKey,
    threads: Arc<GuestThreads>,
    /// Its metrics and log ring.
    pub observed: Observed,
}

impl EntityRuntime {
    /// Builds the runtime view of `config` over a loaded image.
    pub fn new(
        config: &ServedEntity,
        version: u64,
        image: Arc<LoadedImage>,
        inline: InlinePolicy,
        spares: Arc<SpareBudget>,
        threads: Arc<GuestThreads>,
        observed: Observed,
    ) -> Self {
        let mut limits = image.limits.clone();
        if let Some(ms) = config.timeout_ms {
            limits.timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(mib) = config.memory_mib {
            limits.max_memory_bytes =
                usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        }
        let max_concurrency = config
            .max_concurrency
            .unwrap_or(image.manifest.limits.max_concurrency)
            .max(1);
        let max_queue = config.max_queue.unwrap_or(max_concurrency * 2);
        Self {
            tenant: observed.tenant.clone(),
            name: config.name.clone(),
            model: config.entity_name.clone(),
            version,
            image,
            limits,
            max_concurrency,
            max_queue,
            slots: Arc::new(Semaphore::new(max_concurrency)),
            waiting: AtomicUsize::new(0),
            history: RunHistory::new(inline),
            spare: Spare::new(spares),
            threads,
            observed,
        }
    }

    /// Refuses an entity whose one sandbox could never fit the server's memory budget (it
    /// would answer every request 503): a deploy that cannot fit is refused, with why.
    pub fn fits_memory_budget(&self) -> Result<(), PrepareError> {
        let budget = self.image.handler.memory_budget().limit();
        if self.limits.max_memory_bytes > budget {
            return Err(PrepareError::OverMemoryBudget {
                entity: self.name.clone(),
                needs_mib: self.limits.max_memory_bytes >> 20,
                budget_mib: budget >> 20,
            });
        }
        Ok(())
    }

    /// Waits for a slot within the queue bound and the request's `deadline`.
    async fn admit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, ServingError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = scopeguard(|| {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        });
        if queued >= self.max_queue {
            return Err(ServingError::Overloaded {
                entity: self.name.clone(),
                running: self.max_concurrency,
                queued,
            });
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ServingError::QueueTimeout(self.name.clone())),
        }
    }

    /// Runs one request (decoded, checked, and with its raw body attached when the
    /// manifest asks for it): admission, then a fresh sandbox, inline or on a guest thread
    /// (see [`super::placement`]).
    pub async fn invoke(
        self: &Arc<Self>,
        request: Request,
        request_id: &str,
    ) -> Result<Invocation, ServingError> {
        // One deadline for the whole request: waiting for a slot or a guest thread counts.
        let arrived = Instant::now();
        // The slot travels with the work: a guest-thread job keeps it until the job ends,
        // even when the caller went away meanwhile (the job still runs to its end), so the
        // entity's concurrency limit holds whatever the clients do.
        let permit = self.admit(arrived + self.limits.timeout).await?;
        let waited = arrived.elapsed();
        self.observed.stats.queued(waited);
        self.observed.metrics.queued(waited);
        self.observed.metrics.in_flight(1.0);
        let _left = scopeguard(|| self.observed.metrics.in_flight(-1.0));
        // Counted in its image's batched graphs until it ends: a batch that holds every
        // request counted goes without waiting out its delay.
        let in_flight = self.image.graphs.requests_started();
        let in_sandbox = self.threads.occupancy().enter();
        // Proven fast and small: it runs inline when alone; on a guest thread it holds out
        // for one at normal priority rather than start in the idle class (`executor`).
        let short = self.history.inline_allowed(now_millis())
            && input_bytes(&request) <= MAX_INLINE_INPUT_BYTES;
        let inline = short && in_sandbox.alone();
        let (outcome, placement) = if inline {
            let ran = self
                .run_inline_first(request, request_id, arrived, permit, &in_flight)
                .await;
            drop(in_sandbox);
            ran
        } else {
            // Counted again only while its guest runs at normal priority (below).
            drop(in_sandbox);
            let length = if short {
                JobLength::Short
            } else {
                JobLength::Unknown
            };
            let outcome = self
                .run_on_guest_thread(request, request_id, arrived, permit, &in_flight, length)
                .await;
            (outcome, Placement::GuestThread)
        };
        match &outcome {
            Ok(invocation) => {
                let ran = invocation.instantiate_time + invocation.predict_time;
                self.history.record(ran);
                self.observed.stats.ran(ran);
                self.observed.metrics.ran(
                    invocation.instantiate_time,
                    invocation.predict_time,
                    invocation.fuel_consumed,
                );
            }
            Err(ServingError::Runtime(error)) => {
                if matches!(error, RuntimeError::Timeout { .. }) {
                    self.history.demote(now_millis());
                }
                self.observed.failed(request_id, error);
            }
            Err(_) => {}
        }
        let invocation = outcome?;
        tracing::debug!(
            entity = %self.name,
            placement = placement.as_str(),
            instantiate_us = invocation.instantiate_time.as_micros() as u64,
            predict_us = invocation.predict_time.as_micros() as u64,
            "request served"
        );
        Ok(invocation)
    }

    /// Runs the request on this async worker within [`INLINE_BUDGET`]; past it, runs it
    /// again on a guest thread with the rest of its timeout.
    async fn run_inline_first(
        self: &Arc<Self>,
        request: Request,
        request_id: &str,
        arrived: Instant,
        permit: OwnedSemaphorePermit,
        in_flight: &RequestInFlight,
    ) -> (Result<Invocation, ServingError>, Placement) {
        let started = arrived;
        let left = (arrived + self.limits.timeout).saturating_duration_since(Instant::now());
        let budgeted = left > INLINE_BUDGET;
        let mut limits = self.limits.clone();
        limits.timeout = left.min(INLINE_BUDGET).max(MIN_RUN);
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _counted = InFlightScope::enter(in_flight);
            // Whose run it is, as on a guest thread: a graph's statistics count each
            // tenant's runs apart (a shared version's owner must not see its guests').
            let _tenant = crate::runtime::call_scope::TenantScope::enter(self.tenant.clone());
            self.image
                .handler
                .run(self.spare.take(), &request, &limits, || {
                    self.image.graphs.nn_ctx()
                })
        }));
        let Finished {
            outcome,
            spent,
            log,
        } = match attempt {
            Ok(finished) => finished,
            Err(_) => {
                // A blocking WASI call (see `placement`): the sandbox is gone with the
                // unwinding; run the request again where such calls work.
                self.history.never_inline();
                tracing::info!(
                    entity = %self.name,
                    "the handler makes blocking WASI calls (output, sleep or poll); \
                     its requests run on guest threads from now on"
                );
                return self
                    .run_again_on_guest_thread(request, request_id, started, permit, in_flight)
                    .await;
            }
        };
        self.observed.guest_output(request_id, log);
        self.clean_up_after_answer(spent);
        match outcome {
            Err(RuntimeError::Timeout { .. }) if budgeted => {
                self.history.demote(now_millis());
                tracing::debug!(
                    entity = %self.name,
                    "inline run passed its budget; running it again on a guest thread"
                );
                self.run_again_on_guest_thread(request, request_id, started, permit, in_flight)
                    .await
            }
            other => (
                other.map_err(self.reporting_full_timeout()),
                Placement::Inline,
            ),
        }
    }

    /// Runs a request whose inline attempt (started at `started`) gave up, on a guest
    /// thread with what is left of the entity's timeout.
    async fn run_again_on_guest_thread(
        self: &Arc<Self>,
        request: Request,
        request_id: &str,
        started: Instant,
        permit: OwnedSemaphorePermit,
        in_flight: &RequestInFlight,
    ) -> (Result<Invocation, ServingError>, Placement) {
        // Its entity was just demoted or sent off the async workers for good: no longer short.
        let outcome = self
            .run_on_guest_thread(
                request,
                request_id,
                started,
                permit,
                in_flight,
                JobLength::Unknown,
            )
            .await;
        (outcome, Placement::InlineThenGuestThread)
    }

    /// Runs the request on a guest thread with what is left, when the thread takes it, of
    /// the entity's timeout counted from `started`; `length` is what the caller knows of
    /// its run.
    async fn run_on_guest_thread(
        self: &Arc<Self>,
        request: Request,
        request_id: &str,
        started: Instant,
        permit: OwnedSemaphorePermit,
        in_flight: &RequestInFlight,
        length: JobLength,
    ) -> Result<Invocation, ServingError> {
        let entity = self.clone();
        let in_flight = in_flight.clone();
        let deadline = started + self.limits.timeout;
        let work = move || {
            let _slot = permit;
            // A guest in the idle scheduling class does not compete with a short
            // request run inline, so only one at normal priority counts.
            let presence =
                (!priority::this_thread_is_demoted()).then(|| entity.threads.occupancy().enter());
            let mut limits = entity.limits.clone();
            limits.timeout = deadline.saturating_duration_since(Instant::now());
            let (outcome, spent, log) = if limits.timeout < MIN_RUN {
                // Its time went by waiting for a thread: never started.
                let timeout = RuntimeError::Timeout {
                    timeout: entity.limits.timeout,
                };
                (Err(timeout), None, GuestLog::default())
            } else {
                let counted = InFlightScope::enter(&in_flight);
                let Finished {
                    outcome,
                    spent,
                    log,
                } = entity
                    .image
                    .handler
                    .run(entity.spare.take(), &request, &limits, || {
                        entity.image.graphs.nn_ctx()
                    });
                drop(counted);
                (outcome, Some(spent), log)
            };
            drop(presence);
            // After the answer is sent, on this thread: release and prepare.
            let clean_up = move || {
                if let Some(spent) = spent {
                    drop(spent);
                    entity.refill_spare(&entity.limits);
                }
            };
            ((outcome, log), clean_up)
        };
        let job = self.threads.run_as(&self.tenant, length, work);
        // The guest traps at its deadline, but only when it runs: one in the idle scheduling
        // class on a machine saturated by other work, or inside a long engine call, may get
        // there late. The caller answers on time regardless (the job still ends by itself
        // and keeps its slot until then).
        let late = tokio::time::Instant::from_std(deadline + LATE_TRAP_GRACE);
        let outcome = match tokio::time::timeout_at(late, job).await {
            Ok(finished) => {
                let (outcome, log) = finished.map_err(thread_error)?;
                self.observed.guest_output(request_id, log);
                outcome
            }
            Err(_) => Err(RuntimeError::Timeout {
                timeout: self.limits.timeout,
            }),
        };
        outcome.map_err(self.reporting_full_timeout())
    }

    /// Runs host work done for this entity's tenant that grows with what the tenant sends
    /// (parsing a large body, encoding a large answer) on the tenant's share of the guest
    /// threads, so that it is shared out and prioritized like the tenant's guests: a tenant
    /// whose bodies take long to parse waits behind its own work and runs in the
    /// background, not on its neighbours' CPU.
    pub async fn run_bulk<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServingError> {
        self.threads
            .run(&self.tenant, move || (work(), || {}))
            .await
            .map_err(thread_error)
    }

    /// Releases an inline run's sandbox and prepares the next one once this worker is done
    /// answering (a task spawned here runs after the current one yields, which is after
    /// the response is written). The spare is instantiated only for an entity still
    /// allowed inline, and within the inline budget.
    fn clean_up_after_answer(self: &Arc<Self>, spent: SpentSandbox) {
        let entity = self.clone();
        tokio::spawn(async move {
            drop(spent);
            if entity.history.inline_allowed(now_millis()) {
                let mut limits = entity.limits.clone();
                limits.timeout = limits.timeout.min(INLINE_BUDGET);
                entity.refill_spare(&limits);
            }
        });
    }

    /// Instantiates a spare sandbox for the next request (its instantiation runs under
    /// `limits.timeout`; the call that uses it gets a deadline of its own).
    fn refill_spare(&self, limits: &RequestLimits) {
        if cfg!(feature = "bench-without-sandbox") {
            return;
        }
        self.spare.refill(now_millis(), || {
            self.image
                .handler
                .instantiate_ahead(limits, self.image.graphs.nn_ctx())
        });
    }

    /// Maps a runtime error to a serving error, naming the entity's own timeout (a rerun
    /// after an inline attempt runs under what was left of it).
    fn reporting_full_timeout(&self) -> impl Fn(RuntimeError) -> ServingError + '_ {
        |error| match error {
            RuntimeError::Timeout { .. } => ServingError::Runtime(RuntimeError::Timeout {
                timeout: self.limits.timeout,
            }),
            other => ServingError::Runtime(other),
        }
    }

    /// Releases this entity's spare sandbox if it has sat unused for `idle_limit`.
    pub fn release_idle_spare(&self, idle_limit: Duration) -> bool {
        self.spare.release_if_idle(now_millis(), idle_limit)
    }

    /// Requests running right now.
    pub fn running(&self) -> usize {
        self.max_concurrency - self.slots.available_permits()
    }
}

/// Least time worth starting a sandbox for: a request with less left has waited its
/// deadline away and is answered 504 without running.
const MIN_RUN: Duration = Duration::from_millis(1);

/// How long past its deadline a caller waits for a guest-thread job before answering that
/// the request timed out (a guest normally traps within an epoch tick of its deadline).
const LATE_TRAP_GRACE: Duration = Duration::from_millis(100);

/// Total bytes the request hands the guest: its input tensors and its raw body, if any.
fn input_bytes(request: &Request) -> usize {
    let tensors: usize = request.inputs.iter().map(|t| t.data.len()).sum();
    tensors + request.raw_body.as_ref().map_or(0, Vec::len)
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Why a guest thread gave no result, as a serving error.
fn thread_error(error: GuestThreadError) -> ServingError {
    match error {
        GuestThreadError::Busy => {
            ServingError::Runtime(RuntimeError::Exhausted("every guest thread is busy".into()))
        }
        GuestThreadError::Failed => ServingError::Runtime(RuntimeError::Engine(
            "the host failed while running this request; the server log says why".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ElementType, Tensor};

    #[test]
    fn input_size_counts_tensors_and_the_raw_body() {
        let tensor = |bytes: usize| Tensor {
            name: "x".into(),
            shape: vec![bytes as u64],
            element_type: ElementType::U8,
            data: vec![0; bytes],
        };
        let mut request = Request {
            inputs: vec![tensor(100), tensor(20)],
            parameters: None,
            raw_body: None,
        };
        assert_eq!(input_bytes(&request), 120);
        request.raw_body = Some(vec![0; 1000]);
        assert_eq!(input_bytes(&request), 1120);
    }
}
