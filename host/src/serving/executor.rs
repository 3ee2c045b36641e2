//! The threads that run guests: a fixed pool, so that a request's sandbox and its engine
//! calls land on a thread whose caches and thread-local state are warm, and not on an async
//! worker (a slow guest cannot stall the server's network I/O). The one exception, small
//! fast requests on an otherwise idle server, is decided in `placement`.
//!
//! Idle threads wait on a stack: a job goes to the thread that went idle last (the one with
//! the warmest caches) and wakes only that thread. When no thread is idle, jobs wait in a
//! bounded queue that every thread drains before going idle again.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

struct Shared {
    /// Idle threads' own job channels, most recently idle last.
    idle: Mutex<Vec<Sender<Job>>>,
    /// Jobs waiting for a thread.
    queued: Sender<Job>,
    waiting: Receiver<Job>,
}

/// A fixed set of guest threads.
pub struct GuestThreads {
    shared: Arc<Shared>,
}

impl GuestThreads {
    /// Starts `threads` threads; at most `threads * 64` jobs wait when all are busy.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (queued, waiting) = bounded::<Job>(threads.max(1) * 64);
        let shared = Arc::new(Shared {
            idle: Mutex::new(Vec::with_capacity(threads)),
            queued,
            waiting,
        });
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("sandserve-guest-{i}"))
                .stack_size(crate::runtime::HOST_THREAD_STACK_BYTES)
                .spawn(move || worker(&shared))?;
        }
        Ok(Self { shared })
    }

    /// Runs `work` on a guest thread and waits for its result without blocking the caller's
    /// async worker; `work` also returns a clean-up that the thread runs after handing the
    /// result over. Fails when every thread is busy and the queue is full (the caller
    /// answers 503), or when `work` panicked (the thread carries on with the next job).
    pub async fn run<T, C>(
        &self,
        work: impl FnOnce() -> (T, C) + Send + 'static,
    ) -> Result<T, GuestThreadError>
    where
        T: Send + 'static,
        C: FnOnce(),
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok((value, clean_up)) => {
                    let _ = done.send(value);
                    clean_up();
                }
                // `done` is dropped unsent: the caller sees `Failed`.
                Err(_) => tracing::error!("a request's work panicked on a guest thread"),
            }
        });
        {
            let mut idle = self.shared.idle.lock().unwrap_or_else(|p| p.into_inner());
            match idle.pop() {
                // The thread is blocked on its own channel, which has room for one job.
                Some(thread) => {
                    drop(idle);
                    thread.send(job).map_err(|_| GuestThreadError::Failed)?;
                }
                // Queued under the lock, so a thread going idle cannot miss it.
                None => self
                    .shared
                    .queued
                    .try_send(job)
                    .map_err(|_| GuestThreadError::Busy)?,
            }
        }
        result.await.map_err(|_| GuestThreadError::Failed)
    }
}

/// Why [`GuestThreads::run`] gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestThreadError {
    /// Every thread is busy and the queue is full.
    Busy,
    /// The work panicked.
    Failed,
}

fn worker(shared: &Shared) {
    let (mine, jobs) = bounded::<Job>(1);
    loop {
        let next = {
            let mut idle = shared.idle.lock().unwrap_or_else(|p| p.into_inner());
            match shared.waiting.try_recv() {
                Ok(job) => Some(job),
                Err(_) => {
                    idle.push(mine.clone());
                    None
                }
            }
        };
        let job = match next {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        job();
    }
}
