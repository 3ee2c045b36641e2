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
//! Fair for the CPU too: the pool has two classes of threads. A tenant's first
//! `foreground_per_tenant` jobs run on foreground threads (normal priority); its further
//! jobs run on background threads, which run in the kernel's idle class (`SCHED_IDLE`, or
//! nice 19). On an idle machine that costs nothing (priority only matters under
//! contention); when a tenant keeps many guests busy, the scheduler still gives another
//! tenant's few guests nearly whole cores, instead of one share among dozens of spinning
//! threads. And short requests first: a guest that uses more than
//! `runtime::priority::LONG_RUN` of CPU on a foreground thread demotes that thread to the
//! idle class; the thread leaves the pool after that job and a fresh foreground thread
//! takes its place (an unprivileged thread cannot raise its priority back). A tenant whose
//! job ran that long is a heavy tenant for [`HEAVY_FOR`]: its jobs start in the background
//! meanwhile, so a tenant that keeps sending spinning handlers never holds a thread at
//! normal priority for more than one such run.
//!
//! Idle threads wait on a stack per class: a job goes to the thread that went idle last
//! (the one with the warmest caches) and wakes only that thread.

use crate::runtime::priority;
use crossbeam_channel::{bounded, Sender};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// How long a tenant whose job used more than `LONG_RUN` of CPU has its next jobs run in
/// the background.
pub const HEAVY_FOR: Duration = Duration::from_secs(2);

/// Who a job is run for: its share is counted per key.
pub type FairKey = Arc<str>;

/// A job and its tenant, as handed to a thread.
type Assigned = (FairKey, Job);

/// How many guest threads, and how many of them one tenant may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestThreadSettings {
    /// Threads in each class (foreground and background).
    pub threads: usize,
    /// Jobs one tenant may run at once.
    pub per_tenant: usize,
    /// Of those, how many run on foreground threads; the rest run at low priority.
    pub foreground_per_tenant: usize,
}

impl GuestThreadSettings {
    /// 16 threads per CPU, at least 64 (slow guests, each bounded by its timeout and its
    /// entity's `max_concurrency`, do not hold up the rest). A tenant may run two per CPU
    /// (at least 4) at once: more do not add throughput to CPU-bound guests, and every
    /// runnable thread of one tenant, even at the lowest priority, costs the others
    /// latency (docs/benchmarks.md: a share of 32 put a neighbour's p99 at 144x, a share
    /// of 4 at 12x). Half a CPU's worth of them (at least one) run at normal priority.
    pub fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (cpus * 16).max(64);
        Self {
            threads,
            per_tenant: (cpus * 2).max(4).min(threads),
            foreground_per_tenant: (cpus / 2).max(1),
        }
    }
}

/// The two kinds of guest thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Normal priority: a tenant's first jobs.
    Foreground = 0,
    /// Lowest priority (nice 19): a tenant's jobs past its foreground share.
    Background = 1,
}

#[derive(Default)]
struct TenantQueue {
    running: usize,
    /// Of `running`, on foreground threads.
    foreground: usize,
    waiting: VecDeque<Job>,
    /// Until when this tenant's jobs start in the background (one of them ran long).
    heavy_until: Option<Instant>,
}

impl TenantQueue {
    fn is_heavy(&self) -> bool {
        self.heavy_until.is_some_and(|until| until > Instant::now())
    }
}

struct State {
    /// Idle threads' own job channels per class, most recently idle last.
    idle: [Vec<Sender<Assigned>>; 2],
    tenants: HashMap<FairKey, TenantQueue>,
    /// Tenants with waiting jobs, in round-robin order.
    turn: VecDeque<FairKey>,
    queued: usize,
}

struct Shared {
    state: Mutex<State>,
    per_tenant: usize,
    foreground_per_tenant: usize,
    max_queued: usize,
    /// Jobs one tenant may have waiting: a quarter of the queue, so one tenant cannot
    /// fill it for everyone.
    max_queued_per_tenant: usize,
    /// Asks the replacement thread (which keeps normal priority) to start a foreground
    /// thread in place of a demoted one: threads inherit their creator's scheduling class.
    replace: Sender<(Arc<Shared>, String)>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The class a tenant's next job runs in.
    fn class_for(&self, tenant: &TenantQueue) -> Class {
        if tenant.foreground < self.foreground_per_tenant && !tenant.is_heavy() {
            Class::Foreground
        } else {
            Class::Background
        }
    }

    /// The next job for a free thread of `class`: round-robin over the tenants below their
    /// share whose next job belongs in that class.
    fn next_job(&self, state: &mut State, class: Class) -> Option<Assigned> {
        for _ in 0..state.turn.len() {
            let key = state.turn.pop_front()?;
            let Some(tenant) = state.tenants.get_mut(&key) else {
                continue;
            };
            if tenant.running >= self.per_tenant || self.class_for(tenant) != class {
                state.turn.push_back(key);
                continue;
            }
            let Some(job) = tenant.waiting.pop_front() else {
                continue;
            };
            tenant.running += 1;
            if class == Class::Foreground {
                tenant.foreground += 1;
            }
            state.queued -= 1;
            if !tenant.waiting.is_empty() {
                state.turn.push_back(key.clone());
            }
            return Some((key, job));
        }
        None
    }

    /// Gives waiting jobs to idle threads that may take them. A tenant's next job changes
    /// class as its jobs start and end, so a thread finishing one job of one class can
    /// make a queued job runnable only in the other class, whose threads are asleep:
    /// this wakes them (called under the lock after every such change).
    fn hand_out(&self, state: &mut State) {
        for class in [Class::Foreground, Class::Background] {
            while !state.idle[class as usize].is_empty() {
                let Some(assigned) = self.next_job(state, class) else {
                    break;
                };
                let Some(thread) = state.idle[class as usize].pop() else {
                    break;
                };
                // An idle thread's channel is empty (it was sent nothing since it went
                // idle), so this never blocks; a thread that has died drops the job and
                // its caller sees `Failed`.
                let _ = thread.try_send(assigned);
            }
        }
    }

    /// A thread of `class` between two jobs: counts the one it finished (for tenant
    /// `last`), takes its next job or goes idle (as `mine`), and hands out what the change
    /// made runnable for other threads.
    fn between_jobs(
        &self,
        state: &mut State,
        class: Class,
        last: Option<Ran>,
        mine: &Sender<Assigned>,
    ) -> Option<Assigned> {
        if let Some(ran) = last {
            self.finished(state, &ran, class);
        }
        let next = self.next_job(state, class);
        if next.is_none() {
            state.idle[class as usize].push(mine.clone());
        }
        self.hand_out(state);
        next
    }

    /// Counts a tenant's job, run in `class`, as finished; one that ran long makes its
    /// tenant heavy for [`HEAVY_FOR`].
    fn finished(&self, state: &mut State, ran: &Ran, class: Class) {
        if let Some(tenant) = state.tenants.get_mut(&ran.tenant) {
            tenant.running = tenant.running.saturating_sub(1);
            if class == Class::Foreground {
                tenant.foreground = tenant.foreground.saturating_sub(1);
            }
            if ran.long {
                tenant.heavy_until = Some(Instant::now() + HEAVY_FOR);
            }
            if tenant.running == 0 && tenant.waiting.is_empty() && !tenant.is_heavy() {
                state.tenants.remove(&ran.tenant);
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
        let (replace, replacements) = crossbeam_channel::unbounded::<(Arc<Shared>, String)>();
        std::thread::Builder::new()
            .name("sandserve-guest-replacer".into())
            .spawn(move || {
                for (shared, name) in replacements {
                    if let Err(e) = spawn_worker(&shared, Class::Foreground, name) {
                        tracing::error!("cannot replace a demoted guest thread: {e}");
                    }
                }
            })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                idle: [Vec::with_capacity(threads), Vec::with_capacity(threads)],
                tenants: HashMap::new(),
                turn: VecDeque::new(),
                queued: 0,
            }),
            per_tenant: settings.per_tenant.clamp(1, threads),
            foreground_per_tenant: settings.foreground_per_tenant.max(1),
            max_queued: threads * 64,
            max_queued_per_tenant: threads * 16,
            replace,
        });
        for (class, prefix) in [
            (Class::Foreground, "sandserve-guest"),
            (Class::Background, "sandserve-guest-bg"),
        ] {
            for i in 0..threads {
                spawn_worker(&shared, class, format!("{prefix}-{i}"))?;
            }
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
            let class = self.shared.class_for(queue);
            if let Some(thread) = idle[class as usize].pop() {
                queue.running += 1;
                if class == Class::Foreground {
                    queue.foreground += 1;
                }
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
        // An idle thread of the other class may be the one this queue needs.
        self.shared.hand_out(&mut state);
        Ok(None)
    }
}

/// A job a thread has finished: whose, and whether it used more than `LONG_RUN` of CPU.
struct Ran {
    tenant: FairKey,
    long: bool,
}

/// Why [`GuestThreads::run`] gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestThreadError {
    /// Every thread is busy and the queue is full.
    Busy,
    /// The work panicked.
    Failed,
}

/// Starts one guest thread of `class`.
fn spawn_worker(shared: &Arc<Shared>, class: Class, name: String) -> std::io::Result<()> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(name)
        .stack_size(crate::runtime::HOST_THREAD_STACK_BYTES)
        .spawn(move || worker(&shared, class))
        .map(|_| ())
}

fn worker(shared: &Arc<Shared>, class: Class) {
    match class {
        Class::Background => priority::lower_this_thread_to_idle(),
        Class::Foreground => priority::allow_demotion_of_this_thread(),
    }
    let (mine, jobs) = bounded::<Assigned>(1);
    let mut last: Option<Ran> = None;
    loop {
        if class == Class::Foreground && priority::this_thread_is_demoted() {
            if let Some(ran) = last.take() {
                if retire_demoted(shared, &ran) {
                    return;
                }
                // No replacement could start: this thread carries on, demoted.
            }
        }
        let next = shared.between_jobs(&mut shared.lock(), class, last.take(), &mine);
        let (key, job) = match next {
            Some(assigned) => assigned,
            None => match jobs.recv() {
                Ok(assigned) => assigned,
                Err(_) => return,
            },
        };
        let cpu_before = priority::this_threads_cpu_time();
        job();
        let used = priority::this_threads_cpu_time().saturating_sub(cpu_before);
        last = Some(Ran {
            tenant: key,
            long: used >= priority::LONG_RUN,
        });
    }
}

/// A foreground thread whose job ran long and demoted it: counts the job as finished and
/// asks for a fresh foreground thread (at normal priority) to take its place. False when
/// none can be asked for.
fn retire_demoted(shared: &Arc<Shared>, last: &Ran) -> bool {
    let name = std::thread::current()
        .name()
        .unwrap_or("sandserve-guest")
        .to_owned();
    {
        let mut state = shared.lock();
        shared.finished(&mut state, last, Class::Foreground);
        shared.hand_out(&mut state);
    }
    shared.replace.send((shared.clone(), name)).is_ok()
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
                foreground_per_tenant: 1,
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
    async fn a_tenants_jobs_past_its_foreground_share_run_in_the_background() {
        let threads = Arc::new(
            GuestThreads::new(GuestThreadSettings {
                threads: 4,
                per_tenant: 4,
                foreground_per_tenant: 1,
            })
            .expect("threads start"),
        );
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let names = Arc::new(Mutex::new(Vec::new()));
        let a: FairKey = "a".into();
        let busy: Vec<_> = (0..3)
            .map(|_| {
                let (threads, a, release, names) =
                    (threads.clone(), a.clone(), release.clone(), names.clone());
                tokio::spawn(async move {
                    threads
                        .run(&a, move || {
                            let name = std::thread::current().name().map(str::to_owned);
                            names.lock().expect("names").push(name.unwrap_or_default());
                            while !release.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            ((), || {})
                        })
                        .await
                })
            })
            .collect();
        while names.lock().expect("names").len() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let background = |name: &String| name.starts_with("sandserve-guest-bg-");
        let seen = names.lock().expect("names").clone();
        assert_eq!(seen.iter().filter(|n| background(n)).count(), 2, "{seen:?}");
        // Another tenant's job runs in the foreground, next to a's three.
        let b: FairKey = "b".into();
        let where_b = threads
            .run(&b, || {
                let name = std::thread::current().name().map(str::to_owned);
                (name.unwrap_or_default(), || {})
            })
            .await
            .expect("b runs");
        assert!(!background(&where_b), "{where_b}");
        release.store(true, Ordering::SeqCst);
        for job in busy {
            assert_eq!(job.await.expect("joined"), Ok(()));
        }
    }

    #[test]
    fn a_job_that_becomes_the_other_classs_wakes_an_idle_thread_of_it() {
        // A background thread went idle; then a tenant's jobs were queued (say, before the
        // foreground threads were up). When a foreground thread takes the first, the next
        // is a background job: the idle background thread must get it, or it waits for ever.
        let shared = Shared {
            state: Mutex::new(State {
                idle: [Vec::new(), Vec::new()],
                tenants: HashMap::new(),
                turn: VecDeque::new(),
                queued: 0,
            }),
            per_tenant: 2,
            foreground_per_tenant: 1,
            max_queued: 16,
            max_queued_per_tenant: 16,
            replace: crossbeam_channel::unbounded().0,
        };
        let (background, background_jobs) = bounded::<Assigned>(1);
        let (foreground, _foreground_jobs) = bounded::<Assigned>(1);
        let mut state = shared.lock();
        state.idle[Class::Background as usize].push(background);
        let key: FairKey = "a".into();
        let queue = state.tenants.entry(key.clone()).or_default();
        queue.waiting.push_back(Box::new(|| {}));
        queue.waiting.push_back(Box::new(|| {}));
        state.turn.push_back(key.clone());
        state.queued = 2;
        let first = shared.between_jobs(&mut state, Class::Foreground, None, &foreground);
        assert!(first.is_some(), "the foreground thread takes the first job");
        let (woken_for, _) = background_jobs
            .try_recv()
            .expect("the idle background thread was handed the second job");
        assert_eq!(woken_for, key);
        assert_eq!(state.queued, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_demoted_foreground_thread_is_replaced_by_a_fresh_one() {
        let threads = GuestThreads::new(GuestThreadSettings {
            threads: 1,
            per_tenant: 1,
            foreground_per_tenant: 1,
        })
        .expect("threads start");
        let key: FairKey = "t".into();
        let current = || {
            let id = std::thread::current().id();
            let demoted = priority::this_thread_is_demoted();
            #[cfg(target_os = "linux")]
            // SAFETY: reads the calling thread's scheduling policy; no pointers involved.
            let idle = unsafe { libc::sched_getscheduler(0) } == libc::SCHED_IDLE;
            #[cfg(not(target_os = "linux"))]
            let idle = demoted;
            (id, demoted, idle)
        };
        // A job that ran long: its thread drops to the idle class.
        let (first, _, _) = threads
            .run(&key, move || {
                priority::lower_this_thread_to_idle();
                (current(), || {})
            })
            .await
            .expect("runs");
        // The tenant's next job runs on a foreground thread at normal priority again.
        let (second, demoted, idle) = threads
            .run(&key, move || (current(), || {}))
            .await
            .expect("runs");
        assert_ne!(first, second, "the demoted thread was retired");
        assert!(!demoted && !idle, "the fresh thread has normal priority");
        // And the pool still has its one foreground thread: another job runs.
        assert_eq!(threads.run(&key, || (7, || {})).await, Ok(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_whose_job_ran_long_starts_its_next_jobs_in_the_background() {
        let threads = GuestThreads::new(GuestThreadSettings {
            threads: 2,
            per_tenant: 2,
            foreground_per_tenant: 1,
        })
        .expect("threads start");
        let thread_name = || std::thread::current().name().unwrap_or_default().to_owned();
        let heavy: FairKey = "heavy".into();
        let light: FairKey = "light".into();
        // Short jobs stay in the foreground.
        let short = threads.run(&light, move || (thread_name(), || {})).await;
        assert!(!short.expect("runs").contains("-bg-"));
        // A job that burns more than LONG_RUN of CPU (spinning, as a hostile guest would).
        threads
            .run(&heavy, move || {
                let start = priority::this_threads_cpu_time();
                while priority::this_threads_cpu_time() - start < priority::LONG_RUN {
                    std::hint::spin_loop();
                }
                ((), || {})
            })
            .await
            .expect("runs");
        let next = threads.run(&heavy, move || (thread_name(), || {})).await;
        assert!(
            next.expect("runs").contains("-bg-"),
            "a heavy tenant runs in the background"
        );
        // Other tenants are not affected.
        let other = threads.run(&light, move || (thread_name(), || {})).await;
        assert!(!other.expect("runs").contains("-bg-"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone() {
        let threads = GuestThreads::new(GuestThreadSettings {
            threads: 1,
            per_tenant: 1,
            foreground_per_tenant: 1,
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
