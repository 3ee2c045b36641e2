//! The threads that run guests: a fixed pool, so that a request's sandbox and its engine
//! calls land on a thread whose caches and thread-local state are warm, and not on an async
//! worker (a slow guest cannot stall the server's network I/O). The one exception, small
//! fast requests on an otherwise idle server, is decided in `placement`.
//!
//! Fair between tenants: a tenant runs at most `per_tenant` jobs at once (its share of the
//! threads), so that one tenant's slow or spinning handlers can never take every thread;
//! jobs that must wait queue per tenant, and a thread that frees up takes the next job
//! round-robin across the tenants that are below their share. A tenant's waiting jobs
//! therefore wait behind its own, not behind its neighbours'. The wait counts against each
//! request's deadline (the caller passes a job that checks what is left of it).
//!
//! Idle threads wait on a stack: a job goes to the thread that went idle last (the one with
//! the warmest caches) and wakes only that thread.

use crossbeam_channel::{bounded, Sender};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Who a job is run for: its share is counted per key.
pub type FairKey = Arc<str>;

/// A job and its tenant, as handed to a thread.
type Assigned = (FairKey, Job);

/// How many guest threads, and how many of them one tenant may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestThreadSettings {
    /// Threads in the pool.
    pub threads: usize,
    /// Jobs one tenant may run at once.
    pub per_tenant: usize,
}

impl GuestThreadSettings {
    /// 16 threads per CPU, at least 64 (slow guests, each bounded by its timeout and its
    /// entity's `max_concurrency`, do not hold up the rest); a tenant may hold half.
    pub fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (cpus * 16).max(64);
        Self {
            threads,
            per_tenant: threads / 2,
        }
    }
}

#[derive(Default)]
struct TenantQueue {
    running: usize,
    waiting: VecDeque<Job>,
}

struct State {
    /// Idle threads' own job channels, most recently idle last.
    idle: Vec<Sender<Assigned>>,
    tenants: HashMap<FairKey, TenantQueue>,
    /// Tenants with waiting jobs, in round-robin order.
    turn: VecDeque<FairKey>,
    queued: usize,
}

struct Shared {
    state: Mutex<State>,
    per_tenant: usize,
    max_queued: usize,
    /// Jobs one tenant may have waiting: a quarter of the queue, so one tenant cannot
    /// fill it for everyone.
    max_queued_per_tenant: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job for a free thread: round-robin over the tenants below their share.
    fn next_job(&self, state: &mut State) -> Option<Assigned> {
        for _ in 0..state.turn.len() {
            let key = state.turn.pop_front()?;
            let Some(tenant) = state.tenants.get_mut(&key) else {
                continue;
            };
            if tenant.running >= self.per_tenant {
                state.turn.push_back(key);
                continue;
            }
            let Some(job) = tenant.waiting.pop_front() else {
                continue;
            };
            tenant.running += 1;
            state.queued -= 1;
            if !tenant.waiting.is_empty() {
                state.turn.push_back(key.clone());
            }
            return Some((key, job));
        }
        None
    }

    /// Counts a tenant's job as finished.
    fn finished(&self, state: &mut State, key: &FairKey) {
        if let Some(tenant) = state.tenants.get_mut(key) {
            tenant.running = tenant.running.saturating_sub(1);
            if tenant.running == 0 && tenant.waiting.is_empty() {
                state.tenants.remove(key);
            }
        }
    }
}

/// A fixed set of guest threads, shared fairly between tenants.
pub struct GuestThreads {
    shared: Arc<Shared>,
}

impl GuestThreads {
    /// Starts the threads; at most `threads * 64` jobs wait when all are busy, at most a
    /// quarter of them one tenant's.
    pub fn new(settings: GuestThreadSettings) -> std::io::Result<Self> {
        let threads = settings.threads.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                idle: Vec::with_capacity(threads),
                tenants: HashMap::new(),
                turn: VecDeque::new(),
                queued: 0,
            }),
            per_tenant: settings.per_tenant.clamp(1, threads),
            max_queued: threads * 64,
            max_queued_per_tenant: threads * 16,
        });
        for i in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("sandserve-guest-{i}"))
                .stack_size(crate::runtime::HOST_THREAD_STACK_BYTES)
                .spawn(move || worker(&shared))?;
        }
        Ok(Self { shared })
    }

    /// Runs `work` for `tenant` on a guest thread and waits for its result without blocking
    /// the caller's async worker; `work` also returns a clean-up that the thread runs after
    /// handing the result over. Fails when the queue is full (the caller answers 503), or
    /// when `work` panicked (the thread carries on with the next job).
    pub async fn run<T, C>(
        &self,
        tenant: &FairKey,
        work: impl FnOnce() -> (T, C) + Send + 'static,
    ) -> Result<T, GuestThreadError>
    where
        T: Send + 'static,
        C: FnOnce(),
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if done.is_closed() {
                // The caller went away while the job waited: nobody wants its answer.
                return;
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok((value, clean_up)) => {
                    let _ = done.send(value);
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(clean_up)).is_err() {
                        tracing::error!("a request's clean-up panicked on a guest thread");
                    }
                }
                // `done` is dropped unsent: the caller sees `Failed`.
                Err(_) => tracing::error!("a request's work panicked on a guest thread"),
            }
        });
        // Decided under the lock (never held across an await): a thread now, or a place in
        // the tenant's queue (queued under the lock, so a thread going idle cannot miss it).
        let thread = self.place(tenant, job)?;
        if let Some((thread, assigned)) = thread {
            // The thread is blocked on its own channel, which has room for one job.
            thread
                .send(assigned)
                .map_err(|_| GuestThreadError::Failed)?;
        }
        result.await.map_err(|_| GuestThreadError::Failed)
    }
}

impl GuestThreads {
    /// Hands `job` to an idle thread (returned with it, to send outside the lock) when its
    /// tenant is below its share and has nothing waiting; else queues it.
    fn place(
        &self,
        tenant: &FairKey,
        job: Job,
    ) -> Result<Option<(Sender<Assigned>, Assigned)>, GuestThreadError> {
        let mut state = self.shared.lock();
        let State {
            idle,
            tenants,
            turn,
            queued,
        } = &mut *state;
        let queue = tenants.entry(tenant.clone()).or_default();
        if queue.running < self.shared.per_tenant && queue.waiting.is_empty() {
            if let Some(thread) = idle.pop() {
                queue.running += 1;
                return Ok(Some((thread, (tenant.clone(), job))));
            }
        }
        if *queued >= self.shared.max_queued
            || queue.waiting.len() >= self.shared.max_queued_per_tenant
        {
            if queue.running == 0 && queue.waiting.is_empty() {
                tenants.remove(tenant);
            }
            return Err(GuestThreadError::Busy);
        }
        if queue.waiting.is_empty() {
            turn.push_back(tenant.clone());
        }
        queue.waiting.push_back(job);
        *queued += 1;
        Ok(None)
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
    let (mine, jobs) = bounded::<Assigned>(1);
    let mut last: Option<FairKey> = None;
    loop {
        let next = {
            let mut state = shared.lock();
            if let Some(key) = last.take() {
                shared.finished(&mut state, &key);
            }
            let next = shared.next_job(&mut state);
            if next.is_none() {
                state.idle.push(mine.clone());
            }
            next
        };
        let (key, job) = match next {
            Some(assigned) => assigned,
            None => match jobs.recv() {
                Ok(assigned) => assigned,
                Err(_) => return,
            },
        };
        job();
        last = Some(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Runs `n` jobs for `tenant` that each hold their thread until `release` is set.
    fn hold(
        threads: &Arc<GuestThreads>,
        tenant: &str,
        n: usize,
        running: &Arc<AtomicUsize>,
        release: &Arc<std::sync::atomic::AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<Result<(), GuestThreadError>>> {
        let key: FairKey = tenant.into();
        (0..n)
            .map(|_| {
                let (threads, key, running, release) = (
                    threads.clone(),
                    key.clone(),
                    running.clone(),
                    release.clone(),
                );
                tokio::spawn(async move {
                    threads
                        .run(&key, move || {
                            running.fetch_add(1, Ordering::SeqCst);
                            while !release.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            running.fetch_sub(1, Ordering::SeqCst);
                            ((), || {})
                        })
                        .await
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_tenant_holds_at_most_its_share_and_others_run_past_its_queue() {
        let threads = Arc::new(
            GuestThreads::new(GuestThreadSettings {
                threads: 4,
                per_tenant: 2,
            })
            .expect("threads start"),
        );
        let running = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hogs = hold(&threads, "a", 10, &running, &release);
        while running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            2,
            "tenant a holds its share only"
        );
        // Tenant b runs at once, on a thread a cannot take, ahead of a's eight waiting jobs.
        let b: FairKey = "b".into();
        let answer = threads.run(&b, || (42, || {})).await;
        assert_eq!(answer, Ok(42));
        release.store(true, Ordering::SeqCst);
        for hog in hogs {
            assert_eq!(hog.await.expect("joined"), Ok(()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone() {
        let threads = GuestThreads::new(GuestThreadSettings {
            threads: 1,
            per_tenant: 1,
        })
        .expect("threads start");
        let key: FairKey = "t".into();
        let failed = threads
            .run(&key, || -> (u8, fn()) { panic!("handler bug") })
            .await;
        assert_eq!(failed, Err(GuestThreadError::Failed));
        assert_eq!(threads.run(&key, || (1, || {})).await, Ok(1));
    }
}
