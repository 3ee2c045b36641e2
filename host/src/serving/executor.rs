//! The threads that run guests: a fixed pool, so that a request's sandbox and its engine
//! calls land on a thread whose caches and thread-local state are warm, and never on an
//! async worker (a slow guest cannot stall the server's network I/O).

use crossbeam_channel::{bounded, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking jobs from one queue.
pub struct GuestThreads {
    queue: Sender<Job>,
}

impl GuestThreads {
    /// Starts `threads` threads.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        // Each idle thread waits on the channel itself, so a job wakes exactly one thread.
        let (queue, jobs) = bounded::<Job>(threads.max(1) * 64);
        for i in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("sandserve-guest-{i}"))
                .spawn(move || {
                    while let Ok(job) = jobs.recv() {
                        job();
                    }
                })?;
        }
        Ok(Self { queue })
    }

    /// Runs `work` on a guest thread and waits for its result without blocking the caller's
    /// async worker. `None` if the pool is gone.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        // The queue is bounded; when every thread is busy and the queue is full the request
        // is refused rather than piling up (admission control keeps this rare).
        if self.queue.try_send(job).is_err() {
            return None;
        }
        result.await.ok()
    }
}
