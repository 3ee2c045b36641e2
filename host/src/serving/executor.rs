//! The threads that run guests: a fixed pool, so that a request's sandbox and its engine
//! calls land on a thread whose caches and thread-local state are warm, and never on an
//! async worker (a slow guest cannot stall the server's network I/O).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking jobs from one queue.
pub struct GuestThreads {
    queue: SyncSender<Job>,
}

impl GuestThreads {
    /// Starts `threads` threads.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel::<Job>(threads.max(1) * 64);
        let jobs: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("sandserve-guest-{i}"))
                .spawn(move || loop {
                    let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
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
        let queue = self.queue.clone();
        // The queue is bounded; sending blocks only when every thread is busy and the queue
        // is full, which admission control keeps from happening in practice.
        if queue.try_send(job).is_err() {
            return None;
        }
        result.await.ok()
    }
}
