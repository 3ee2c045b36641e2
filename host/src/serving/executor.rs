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
//! Short jobs wait a little for the foreground: a job the caller marks short (a request of
//! an entity whose runs have proven fast, with a small input: the same test as for running
//! inline, see `placement`) that finds its tenant's foreground share taken waits up to
//! [`SHORT_WAIT`] for one of those threads (the thread that finishes a job takes it next)
//! before it goes to the background like any other. In the idle class it would wait for a
//! CPU that nothing else wants, and under load the server's own network work keeps every
//! CPU busy: a 30 us echo request sat tens of milliseconds there (p99 under wrk at 32
//! connections: 30-80 ms, against 2 ms for a bare route). Behind its own tenant's short
//! jobs it waits microseconds; behind one that turned out slow (a guest that sleeps, a
//! batch that waits for company), at most [`SHORT_WAIT`]. The tenant never holds more
//! threads at normal priority than its share, and a short job that runs long anyway is
//! caught as any other: its thread is demoted and its tenant turns heavy.
//!
//! Idle threads wait on a stack per class: a job goes to the thread that went idle last
//! (the one with the warmest caches) and wakes only that thread.

use crate::runtime::priority;
use crossbeam_channel::{bounded, Sender};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// What a caller knows of how long its job will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobLength {
    /// A request of an entity whose runs have proven fast, with a small input.
    Short,
    /// Anything else.
    Unknown,
}

/// A queued job, and since when it waits when its caller marked it short.
struct Waiting {
    job: Job,
    short_since: Option<Instant>,
}

impl Waiting {
    /// Whether it still waits for a foreground thread rather than start in the background.
    fn holds_out_for_foreground(&self) -> bool {
        self.short_since
            .is_some_and(|since| since.elapsed() < SHORT_WAIT)
    }
}

/// How long a short job waits for a foreground thread of its tenant before it may run in
/// the background: as long as a job may run there before it counts as long. (2 ms was
/// measured too short: under load a foreground thread shares its CPU with the async
/// workers and is often off it for longer, and the jobs that gave up starved in the idle
/// class as before, p99 24-35 ms.)
pub const SHORT_WAIT: Duration = priority::LONG_RUN;

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
    waiting: VecDeque<Waiting>,
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

    /// The class a tenant's next job may start in now; none for a short job that holds out
    /// for one of its tenant's foreground threads.
    fn class_for(&self, tenant: &TenantQueue, holds_out: bool) -> Option<Class> {
        if tenant.is_heavy() {
            Some(Class::Background)
        } else if tenant.foreground < self.foreground_per_tenant {
            Some(Class::Foreground)
        } else if holds_out {
            None
        } else {
            Some(Class::Background)
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
            let Some(holds_out) = tenant
                .waiting
                .front()
                .map(Waiting::holds_out_for_foreground)
            else {
                continue;
            };
            if tenant.running >= self.per_tenant || self.class_for(tenant, holds_out) != Some(class)
            {
                state.turn.push_back(key);
                continue;
            }
            let Some(Waiting { job, .. }) = tenant.waiting.pop_front() else {
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
    occupancy: super::placement::Occupancy,
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
        Ok(Self {
            shared,
            occupancy: Default::default(),
        })
    }

    /// Requests in a sandbox of this server right now, on these threads or inline (see
    /// `placement`: a request runs inline only when it is alone).
    pub fn occupancy(&self) -> &super::placement::Occupancy {
        &self.occupancy
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
        self.run_as(tenant, JobLength::Unknown, work).await
    }

    /// [`GuestThreads::run`] for a job whose length its caller knows: a short one, unless
    /// its tenant is heavy, holds out for a thread at normal priority rather than start in
    /// the idle class (see the module doc).
    pub async fn run_as<T, C>(
        &self,
        tenant: &FairKey,
        length: JobLength,
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
        let short = length == JobLength::Short;
        let short_since = short.then(Instant::now);
        let thread = self.place(tenant, Waiting { job, short_since })?;
        let Some((thread, assigned)) = thread else {
            if !short {
                return result.await.map_err(|_| GuestThreadError::Failed);
            }
            // Queued, holding out for the foreground: past `SHORT_WAIT` it may go to the
            // background, where a thread may be idle that no event would wake for it.
            tokio::pin!(result);
            tokio::select! {
                done = &mut result => return done.map_err(|_| GuestThreadError::Failed),
                () = tokio::time::sleep(SHORT_WAIT) => {}
            }
            self.shared.hand_out(&mut self.shared.lock());
            return result.await.map_err(|_| GuestThreadError::Failed);
        };
        // The thread is blocked on its own channel, which has room for one job.
        thread
            .send(assigned)
            .map_err(|_| GuestThreadError::Failed)?;
        result.await.map_err(|_| GuestThreadError::Failed)
    }
}

impl GuestThreads {
    /// Hands `waiting` to an idle thread (returned with it, to send outside the lock) when its
    /// tenant is below its share and has nothing waiting; else queues it.
    fn place(
        &self,
        tenant: &FairKey,
        waiting: Waiting,
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
            let class = self
                .shared
                .class_for(queue, waiting.holds_out_for_foreground());
            if let Some((class, thread)) =
                class.and_then(|class| Some((class, idle[class as usize].pop()?)))
            {
                queue.running += 1;
                if class == Class::Foreground {
                    queue.foreground += 1;
                }
                return Ok(Some((thread, (tenant.clone(), waiting.job))));
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
        queue.waiting.push_back(waiting);
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
    // The thread's CPU clock as the last job ended: a waiting thread uses no CPU, so one
    // read per job (a system call) measures the job, give or take the hand-over.
    let mut cpu_mark = priority::this_threads_cpu_time();
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
        {
            // The job's tenant, for a batch to tell whose rows it holds.
            let _tenant = crate::runtime::call_scope::TenantScope::enter(key.clone());
            job();
        }
        let cpu_now = priority::this_threads_cpu_time();
        // CPU spent running a batch for other requests is theirs, not this job's; what a
        // batch leader spent on this job's rows is this job's.
        let used = cpu_now
            .saturating_sub(cpu_mark)
            .saturating_sub(crate::runtime::call_scope::take_cpu_for_others())
            .saturating_add(crate::runtime::call_scope::take_cpu_from_others());
        cpu_mark = cpu_now;
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
mod tests;
