//! The bridge from the registry's synchronous traits to sqlx's async calls: the store owns
//! a small Tokio runtime of its own, every query runs there, and the calling thread waits.
//!
//! How the caller waits depends on where it is: on a worker of a multi-thread runtime (an
//! axum handler calling the registry directly) the wait is wrapped in
//! [`tokio::task::block_in_place`], so the worker's other tasks move to another thread
//! meanwhile; on a current-thread runtime (which `block_in_place` does not support) a
//! scoped thread waits instead; outside any runtime (a `spawn_blocking` thread, a plain
//! test) the caller waits directly. The query itself never runs on the caller's runtime,
//! so a caller that blocks cannot starve it: nothing here can deadlock on the caller's
//! workers being busy.

use std::future::Future;
use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};

/// Worker threads of the store's runtime: the pool's connections and the follower and
/// heartbeat tasks need little.
const WORKERS: usize = 2;

/// The store's runtime.
pub(super) struct Bridge {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl Bridge {
    /// Starts the runtime.
    pub fn new() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("sandserve-metadata")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// The runtime's handle, to spawn background tasks on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the store's runtime and waits for its output.
    pub fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => self.handle.block_on(future),
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.handle.block_on(future))
            }
            Ok(_) => std::thread::scope(|scope| {
                scope
                    .spawn(|| self.handle.block_on(future))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics; this never waits.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_from_every_kind_of_caller() {
        let bridge = Bridge::new().unwrap();
        assert_eq!(bridge.run(async { 1 }), 1);
        let current = Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(current.block_on(async { bridge.run(async { 2 }) }), 2);
        let multi = Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Even with the caller's only worker blocked, the store's runtime does the work.
        let bridge = std::sync::Arc::new(bridge);
        let b = bridge.clone();
        let out = multi.block_on(async move {
            tokio::spawn(async move { b.run(async { 3 }) })
                .await
                .unwrap()
        });
        assert_eq!(out, 3);
        let b = bridge.clone();
        let out = multi.block_on(async move {
            tokio::task::spawn_blocking(move || b.run(async { 4 }))
                .await
                .unwrap()
        });
        assert_eq!(out, 4);
    }
}
