//! One served entity at run time: the loaded image, its effective limits, and admission
//! control (at most `max_concurrency` requests running, at most `max_queue` waiting; past
//! that a request is refused at once instead of piling up in memory).

use super::ServingError;
use crate::images::LoadedImage;
use crate::registry::ServedEntity;
use crate::runtime::{Invocation, Request, RequestLimits};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
}

impl EntityRuntime {
    /// Builds the runtime view of `config` over a loaded image.
    pub fn new(config: &ServedEntity, version: u64, image: Arc<LoadedImage>) -> Self {
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
            name: config.name.clone(),
            model: config.entity_name.clone(),
            version,
            image,
            limits,
            max_concurrency,
            max_queue,
            slots: Arc::new(Semaphore::new(max_concurrency)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a slot within the queue bound and the request deadline.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, ServingError> {
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
        match tokio::time::timeout(self.limits.timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ServingError::QueueTimeout(self.name.clone())),
        }
    }

    /// Runs one request: admission, then a fresh sandbox on one of the guest threads.
    pub async fn invoke(
        self: &Arc<Self>,
        mut request: Request,
        raw_body: Option<&[u8]>,
    ) -> Result<Invocation, ServingError> {
        let _permit = self.admit().await?;
        if let (true, Some(raw)) = (self.image.manifest.raw_body, raw_body) {
            request.raw_body = Some(raw.to_vec());
        }
        let entity = self.clone();
        let threads = guest_threads().ok_or_else(|| {
            ServingError::Runtime(crate::runtime::RuntimeError::Exhausted(
                "the guest threads could not be started".into(),
            ))
        })?;
        let outcome = threads
            .run(move || {
                entity
                    .image
                    .handler
                    .invoke(&request, &entity.limits, entity.image.graphs.nn_ctx())
            })
            .await
            .ok_or_else(|| {
                ServingError::Runtime(crate::runtime::RuntimeError::Exhausted(
                    "every guest thread is busy".into(),
                ))
            })?;
        let invocation = outcome?;
        tracing::debug!(
            entity = %self.name,
            instantiate_us = invocation.instantiate_time.as_micros() as u64,
            predict_us = invocation.predict_time.as_micros() as u64,
            "request served"
        );
        Ok(invocation)
    }

    /// Requests running right now.
    pub fn running(&self) -> usize {
        self.max_concurrency - self.slots.available_permits()
    }
}

/// The process-wide guest threads: 16 per CPU, at least 64, so that slow guests (each
/// bounded by its timeout and by its entity's `max_concurrency`) do not hold up the rest.
fn guest_threads() -> Option<&'static super::executor::GuestThreads> {
    static THREADS: std::sync::OnceLock<Option<super::executor::GuestThreads>> =
        std::sync::OnceLock::new();
    THREADS
        .get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            super::executor::GuestThreads::new((cpus * 16).max(64))
                .map_err(|e| tracing::error!("cannot start the guest threads: {e}"))
                .ok()
        })
        .as_ref()
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
