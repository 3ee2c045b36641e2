//! The guest-thread pool: shares, classes, demotion, failures.
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

/// A pool of four threads (one foreground per tenant) in which tenant `a` runs `n` jobs
/// that hold their threads until `release` is set; returns once `started` of them run.
async fn pool_held_by_a(
    per_tenant: usize,
    n: usize,
    started: usize,
) -> (
    Arc<GuestThreads>,
    Arc<AtomicUsize>,
    Arc<std::sync::atomic::AtomicBool>,
    Vec<tokio::task::JoinHandle<Result<(), GuestThreadError>>>,
) {
    let threads = Arc::new(
        GuestThreads::new(GuestThreadSettings {
            threads: 4,
            per_tenant,
            foreground_per_tenant: 1,
        })
        .expect("threads start"),
    );
    let running = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = hold(&threads, "a", n, &running, &release);
    while running.load(Ordering::SeqCst) < started {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (threads, running, release, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tenant_holds_at_most_its_share_and_others_run_past_its_queue() {
    let (threads, running, release, hogs) = pool_held_by_a(2, 10, 2).await;
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

/// A pool's shared state with no threads, for testing its rules directly.
fn bare_shared(per_tenant: usize, foreground_per_tenant: usize) -> Shared {
    Shared {
        state: Mutex::new(State {
            idle: [Vec::new(), Vec::new()],
            tenants: HashMap::new(),
            turn: VecDeque::new(),
            queued: 0,
        }),
        per_tenant,
        foreground_per_tenant,
        max_queued: 16,
        max_queued_per_tenant: 16,
        replace: crossbeam_channel::unbounded().0,
    }
}

#[test]
fn a_short_job_past_the_foreground_share_holds_out_for_it_then_takes_the_background() {
    // Tenant a runs one job on its one foreground thread; a short job of a's waits. A free
    // background thread may not take it until it has waited `SHORT_WAIT`; a foreground
    // thread that frees up takes it at once. An unmarked job goes to the background at once
    // (`a_tenants_jobs_past_its_foreground_share_run_in_the_background`).
    let shared = bare_shared(4, 1);
    let key: FairKey = "a".into();
    let mut state = shared.lock();
    let queue = state.tenants.entry(key.clone()).or_default();
    queue.running = 1;
    queue.foreground = 1;
    queue.waiting.push_back(Waiting {
        job: Box::new(|| {}),
        short_since: Some(Instant::now()),
    });
    state.turn.push_back(key.clone());
    state.queued = 1;
    assert!(
        shared.next_job(&mut state, Class::Background).is_none(),
        "a fresh short job does not start in the background"
    );
    // Its foreground job ends: that thread takes the short job next.
    let ran = Ran {
        tenant: key.clone(),
        long: false,
    };
    let (foreground, _jobs) = bounded::<Assigned>(1);
    let next = shared.between_jobs(&mut state, Class::Foreground, Some(ran), &foreground);
    assert!(next.is_some(), "the freed foreground thread takes it");
    // Once it has waited `SHORT_WAIT`, a short job may start in the background.
    let queue = state.tenants.get_mut(&key).expect("a still runs");
    queue.waiting.push_back(Waiting {
        job: Box::new(|| {}),
        short_since: Some(Instant::now() - SHORT_WAIT),
    });
    state.turn.push_back(key.clone());
    state.queued = 1;
    assert!(
        shared.next_job(&mut state, Class::Background).is_some(),
        "a short job that has held out long enough takes the background"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_jobs_behind_a_slow_one_wait_at_most_short_wait() {
    // The tenant's foreground thread is held (a job that turned out slow): its short jobs
    // still run, in the background, while it holds.
    let (threads, running, release, holder) = pool_held_by_a(4, 1, 1).await;
    let a: FairKey = "a".into();
    for _ in 0..2 {
        let name = threads
            .run_as(&a, JobLength::Short, || {
                let name = std::thread::current().name().map(str::to_owned);
                (name.unwrap_or_default(), || {})
            })
            .await
            .expect("runs");
        assert!(name.starts_with("sandserve-guest-bg-"), "{name}");
    }
    assert_eq!(
        running.load(Ordering::SeqCst),
        1,
        "the slow job still holds"
    );
    release.store(true, Ordering::SeqCst);
    for job in holder {
        assert_eq!(job.await.expect("joined"), Ok(()));
    }
}

#[test]
fn a_job_that_becomes_the_other_classs_wakes_an_idle_thread_of_it() {
    // A background thread went idle; then a tenant's jobs were queued (say, before the
    // foreground threads were up). When a foreground thread takes the first, the next
    // is a background job: the idle background thread must get it, or it waits for ever.
    let shared = bare_shared(2, 1);
    let (background, background_jobs) = bounded::<Assigned>(1);
    let (foreground, _foreground_jobs) = bounded::<Assigned>(1);
    let mut state = shared.lock();
    state.idle[Class::Background as usize].push(background);
    let key: FairKey = "a".into();
    let queue = state.tenants.entry(key.clone()).or_default();
    queue.waiting.push_back(Waiting {
        job: Box::new(|| {}),
        short_since: None,
    });
    queue.waiting.push_back(Waiting {
        job: Box::new(|| {}),
        short_since: None,
    });
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
    let marked_short = threads
        .run_as(&heavy, JobLength::Short, move || (thread_name(), || {}))
        .await;
    assert!(
        marked_short.expect("runs").contains("-bg-"),
        "even the jobs it marks short"
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
