//! Unit tests of the batcher over a small in-process graph (`y = 2x`, any shape, with
//! switches to fail and to be slow); the end-to-end tests run real engines.

use super::super::context::{Declared, RunGraph};
use super::super::invalid;
use super::{tensors, BatchPolicy, Batcher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use wasmtime_wasi_nn::backend::{BackendError, NamedTensor};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::Tensor;

/// A value no batched run accepts (a run alone holding it fails too).
const POISON: f32 = 666.0;
/// A value `check` refuses.
const REFUSED: f32 = -1.0;

#[derive(Default)]
struct Doubler {
    /// Dimensions of every run's input.
    runs: Mutex<Vec<Vec<u32>>>,
    /// How long each run takes.
    delay: Duration,
    /// Runs going on now, and the most there were at once.
    active: AtomicUsize,
    most_at_once: AtomicUsize,
    /// The thread of every run.
    threads: Mutex<Vec<thread::ThreadId>>,
}

fn values(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn tensor(dims: &[u32], v: &[f32]) -> Tensor {
    let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Tensor::new(dims.to_vec(), TensorType::Fp32, data)
}

impl RunGraph for Doubler {
    fn input_name(&self, _index: u32) -> Option<String> {
        Some("x".into())
    }
    fn declared(&self) -> (Vec<Declared>, Vec<Declared>) {
        let d = |n: &str| Declared {
            name: n.into(),
            dims: vec![-1, -1],
        };
        (vec![d("x")], vec![d("y")])
    }
    fn check(&self, inputs: &[(String, &Tensor)]) -> Result<(), BackendError> {
        match inputs {
            [(name, t)] if name == "x" && !values(t).contains(&REFUSED) => Ok(()),
            _ => Err(invalid("refused".into())),
        }
    }
    fn run(&self, inputs: &[(String, &Tensor)]) -> Result<Vec<NamedTensor>, BackendError> {
        self.check(inputs)?;
        let x = inputs[0].1;
        self.runs.lock().unwrap().push(x.dimensions.clone());
        self.threads.lock().unwrap().push(thread::current().id());
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        thread::sleep(self.delay);
        self.active.fetch_sub(1, Ordering::SeqCst);
        let v = values(x);
        if v.contains(&POISON) {
            return Err(invalid("poison".into()));
        }
        let y: Vec<f32> = v.iter().map(|a| a * 2.0).collect();
        Ok(vec![NamedTensor {
            name: "y".into(),
            tensor: tensor(&x.dimensions, &y),
        }])
    }
}

fn policy(max_delay_us: u64) -> BatchPolicy {
    BatchPolicy {
        max_batch_size: 8,
        max_delay_us,
        ..BatchPolicy::default()
    }
}

fn batcher(graph: &Arc<Doubler>, policy: BatchPolicy) -> Arc<Batcher> {
    let graph: Arc<dyn RunGraph> = graph.clone();
    Arc::new(Batcher::new("test", "acme/test@1", graph, policy))
}

/// A batcher with `policy` over a graph whose every run takes `run_ms`.
fn slow_batcher(run_ms: u64, policy: BatchPolicy) -> (Arc<Doubler>, Arc<Batcher>) {
    let graph = Arc::new(Doubler {
        delay: Duration::from_millis(run_ms),
        ..Doubler::default()
    });
    let b = batcher(&graph, policy);
    (graph, b)
}

/// Calls `b` with one row holding `value` on a thread of its own.
fn spawn_call(
    b: &Arc<Batcher>,
    value: f32,
    deadline: Option<Instant>,
) -> thread::JoinHandle<Result<Vec<f32>, String>> {
    let b = b.clone();
    thread::spawn(move || call(&b, &tensor(&[1, 1], &[value]), deadline))
}

/// Runs `x` through `b` and returns `y`'s values.
fn call(b: &Batcher, x: &Tensor, deadline: Option<Instant>) -> Result<Vec<f32>, String> {
    let out = b
        .run(&[("x".to_string(), x)], deadline, true)
        .map_err(|e| e.to_string())?;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, "y");
    assert_eq!(out[0].tensor.dimensions, x.dimensions);
    Ok(values(&out[0].tensor))
}

/// Calls `b` from one thread per input at once; the answers in input order.
fn concurrently(
    b: &Arc<Batcher>,
    inputs: Vec<(Tensor, Option<Instant>)>,
) -> Vec<Result<Vec<f32>, String>> {
    let start = Arc::new(Barrier::new(inputs.len()));
    let threads: Vec<_> = inputs
        .into_iter()
        .map(|(x, deadline)| {
            let (b, start) = (b.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                call(&b, &x, deadline)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_requests_run_as_one_batch_and_each_gets_its_own_slice() {
    let graph = Arc::new(Doubler::default());
    let b = batcher(&graph, policy(200_000));
    let inputs = (0..4)
        .map(|i| (tensor(&[1, 2], &[i as f32, 10.0 + i as f32]), None))
        .chain([(tensor(&[2, 2], &[7.0, 8.0, 9.0, 10.0]), None)])
        .collect();
    let answers = concurrently(&b, inputs);
    for (i, answer) in answers.iter().take(4).enumerate() {
        assert_eq!(answer, &Ok(vec![2.0 * i as f32, 20.0 + 2.0 * i as f32]));
    }
    assert_eq!(answers[4], Ok(vec![14.0, 16.0, 18.0, 20.0]));
    // Six rows: under max_batch_size (8), so the batch waited out the delay and ran once.
    assert_eq!(*graph.runs.lock().unwrap(), [vec![6, 2]]);
    let stats = b.stats();
    assert_eq!((stats.batches, stats.batched_requests), (1, 5));
}

#[test]
fn requests_of_two_tenants_share_a_batch_and_each_is_charged_its_own_rows() {
    use crate::runtime::call_scope;
    let graph = Arc::new(Doubler {
        delay: Duration::from_millis(30),
        ..Doubler::default()
    });
    let b = batcher(&graph, policy(200_000));
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (b, start) = (b.clone(), start.clone());
            thread::spawn(move || {
                let tenant = if i % 2 == 0 { "acme" } else { "globex" };
                let _tenant = call_scope::TenantScope::enter(tenant.into());
                let _call =
                    call_scope::DeadlineScope::enter(Instant::now() + Duration::from_secs(5));
                start.wait();
                let x = tensor(&[1, 2], &[i as f32, 100.0 + i as f32]);
                let y = call(&b, &x, None);
                // The leader credited away what it spent for the others; each follower
                // was charged a share; nobody both.
                let charged = call_scope::take_cpu_from_others();
                let credited = call_scope::take_cpu_for_others();
                (i, y, charged, credited)
            })
        })
        .collect();
    let mut leaders = 0;
    for t in threads {
        let (i, y, charged, credited) = t.join().unwrap();
        // Each request gets its own rows back, never another tenant's.
        assert_eq!(y, Ok(vec![2.0 * i as f32, 200.0 + 2.0 * i as f32]));
        if !credited.is_zero() {
            leaders += 1;
            assert!(charged.is_zero());
        }
    }
    assert!(leaders <= 1, "{leaders} leaders for one batch");
    assert_eq!(*graph.runs.lock().unwrap(), [vec![4, 2]]);
    let stats = b.stats();
    assert_eq!((stats.batches, stats.cross_tenant_batches), (1, 1));

    // One tenant's requests alone: a batch, but not a cross-tenant one.
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let (b, start) = (b.clone(), start.clone());
            thread::spawn(move || {
                let _tenant = call_scope::TenantScope::enter("acme".into());
                start.wait();
                call(&b, &tensor(&[1, 2], &[i as f32, 0.0]), None)
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().is_ok());
    }
    let stats = b.stats();
    assert_eq!((stats.batches, stats.cross_tenant_batches), (2, 1));
}

#[test]
fn a_full_batch_is_sent_without_waiting_out_the_delay() {
    let graph = Arc::new(Doubler::default());
    let b = batcher(&graph, policy(10_000_000));
    let started = Instant::now();
    let answers = concurrently(
        &b,
        (0..8)
            .map(|i| (tensor(&[1, 1], &[i as f32]), None))
            .collect(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited the 10 s delay"
    );
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &Ok(vec![2.0 * i as f32]));
    }
    assert_eq!(*graph.runs.lock().unwrap(), [vec![8, 1]]);
}

#[test]
fn a_request_whose_deadline_would_pass_is_not_held() {
    let graph = Arc::new(Doubler::default());
    let b = batcher(&graph, policy(500_000));
    // Alone, with 50 ms left and a 500 ms delay: it runs at once.
    let started = Instant::now();
    let x = tensor(&[1, 1], &[3.0]);
    let deadline = Some(Instant::now() + Duration::from_millis(50));
    assert_eq!(call(&b, &x, deadline), Ok(vec![6.0]));
    assert!(started.elapsed() < Duration::from_millis(250), "held");
    // With a batch open (a request with no deadline leads it), the short one does not
    // join it either: it answers first and alone; the leader waits out its delay.
    let leader = {
        let b = b.clone();
        thread::spawn(move || call(&b, &tensor(&[1, 1], &[1.0]), None))
    };
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let deadline = Some(Instant::now() + Duration::from_millis(100));
    assert_eq!(call(&b, &tensor(&[1, 1], &[4.0]), deadline), Ok(vec![8.0]));
    assert!(started.elapsed() < Duration::from_millis(250), "held");
    assert_eq!(leader.join().unwrap(), Ok(vec![2.0]));
    assert_eq!(b.stats().batches, 0);
    assert_eq!(b.stats().alone_requests, 3);
}

#[test]
fn a_failed_batch_is_answered_per_request() {
    let graph = Arc::new(Doubler::default());
    let b = batcher(&graph, policy(200_000));
    let answers = concurrently(
        &b,
        vec![
            (tensor(&[1, 1], &[1.0]), None),
            (tensor(&[1, 1], &[POISON]), None),
            (tensor(&[1, 1], &[3.0]), None),
        ],
    );
    assert_eq!(answers[0], Ok(vec![2.0]));
    assert!(
        answers[1].as_ref().unwrap_err().contains("poison"),
        "{answers:?}"
    );
    assert_eq!(answers[2], Ok(vec![6.0]));
    // One batched run of three that failed, then each alone.
    let runs = graph.runs.lock().unwrap().clone();
    assert_eq!(runs[0], [3, 1]);
    assert_eq!(runs[1..], [vec![1, 1], vec![1, 1], vec![1, 1]]);
    assert_eq!(b.stats().failed_batches, 1);
}

#[test]
fn refused_inputs_get_their_own_error_and_never_join() {
    let graph = Arc::new(Doubler::default());
    let b = batcher(&graph, policy(200_000));
    let answers = concurrently(
        &b,
        vec![
            (tensor(&[1, 1], &[1.0]), None),
            (tensor(&[1, 1], &[REFUSED]), None),
            (tensor(&[1, 1], &[3.0]), None),
        ],
    );
    assert_eq!(answers[0], Ok(vec![2.0]));
    assert!(answers[1].as_ref().unwrap_err().contains("refused"));
    assert_eq!(answers[2], Ok(vec![6.0]));
    assert_eq!(*graph.runs.lock().unwrap(), [vec![2, 1]]);
}

#[test]
fn requests_of_different_shapes_are_not_mixed() {
    let graph = Arc::new(Doubler::default());
    let b = batcher(&graph, policy(200_000));
    let answers = concurrently(
        &b,
        vec![
            (tensor(&[1, 2], &[1.0, 2.0]), None),
            (tensor(&[1, 3], &[3.0, 4.0, 5.0]), None),
            (tensor(&[1, 2], &[6.0, 7.0]), None),
            (tensor(&[1, 3], &[8.0, 9.0, 10.0]), None),
        ],
    );
    assert_eq!(answers[0], Ok(vec![2.0, 4.0]));
    assert_eq!(answers[1], Ok(vec![6.0, 8.0, 10.0]));
    assert_eq!(answers[2], Ok(vec![12.0, 14.0]));
    assert_eq!(answers[3], Ok(vec![16.0, 18.0, 20.0]));
    let mut runs = graph.runs.lock().unwrap().clone();
    runs.sort();
    assert_eq!(runs, [vec![2, 2], vec![2, 3]]);
}

#[test]
fn a_follower_that_leaves_at_its_deadline_does_not_break_the_batch() {
    // A patient request leads the batch (it waits up to 500 ms for members); 100 ms later
    // the impatient one (deadline 1 s after the start) and another patient one join it
    // (no run time is known yet), which fills it (max_batch_size 3): it is sent and runs
    // for 1.5 s, and the impatient member leaves at its deadline, during the run. (The
    // leader runs the batch itself, so the impatient one must not be the leader.)
    let (graph, b) = slow_batcher(
        1500,
        BatchPolicy {
            max_batch_size: 3,
            ..policy(500_000)
        },
    );
    let deadline = Some(Instant::now() + Duration::from_millis(1000));
    let spawn = |value: f32, deadline: Option<Instant>| spawn_call(&b, value, deadline);
    let leader = spawn(1.0, None);
    thread::sleep(Duration::from_millis(100));
    let impatient = spawn(2.0, deadline);
    let patient = spawn(3.0, None);
    let answers = [leader, impatient, patient].map(|t| t.join().unwrap());
    assert_eq!(answers[0], Ok(vec![2.0]));
    assert!(
        answers[1].as_ref().unwrap_err().contains("deadline passed"),
        "{answers:?}"
    );
    assert_eq!(answers[2], Ok(vec![6.0]));
    assert_eq!(*graph.runs.lock().unwrap(), [vec![3, 1]]);
}

#[test]
fn threads_that_must_not_block_and_oversized_batches_run_alone() {
    let graph = Arc::new(Doubler::default());
    let b = batcher(
        &graph,
        BatchPolicy {
            max_batch_bytes: 8,
            ..policy(10_000_000)
        },
    );
    let started = Instant::now();
    let x = tensor(&[1, 1], &[1.0]);
    let out = b.run(&[("x".to_string(), &x)], None, false).unwrap();
    assert_eq!(values(&out[0].tensor), [2.0]);
    // Three floats are 12 bytes, over the 8 the open batches may hold.
    let big = tensor(&[1, 3], &[1.0, 2.0, 3.0]);
    assert_eq!(call(&b, &big, None), Ok(vec![2.0, 4.0, 6.0]));
    // Nine rows are more than a batch (8) holds.
    let rows = tensor(&[9, 1], &[0.0; 9]);
    assert_eq!(call(&b, &rows, None), Ok(vec![0.0; 9]));
    assert!(started.elapsed() < Duration::from_secs(5), "held");
    assert_eq!(b.stats().alone_requests, 3);
}

#[test]
fn joining_and_cutting_along_an_inner_dimension_round_trips() {
    // Two [2, r, 2] tensors joined along dimension 1.
    let a = tensor(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = tensor(&[2, 2, 2], &[5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    let joined = tensors::join(&[&a, &b], 1).unwrap();
    assert_eq!(joined.dimensions, [2, 3, 2]);
    assert_eq!(
        values(&joined),
        [1.0, 2.0, 5.0, 6.0, 7.0, 8.0, 3.0, 4.0, 9.0, 10.0, 11.0, 12.0]
    );
    let parts = tensors::split(&joined, 1, &[1, 2]).unwrap();
    assert_eq!(values(&parts[0]), values(&a));
    assert_eq!(parts[0].dimensions, a.dimensions);
    assert_eq!(values(&parts[1]), values(&b));
    assert_eq!(parts[1].dimensions, b.dimensions);
    let e = tensors::split(&joined, 1, &[1, 1]).unwrap_err();
    assert_eq!(e, tensors::SliceError::RowsDiffer { got: 3, want: 2 });
    let e = tensors::split(&joined, 3, &[1]).unwrap_err();
    assert!(matches!(e, tensors::SliceError::NoBatchDimension { .. }));
}

/// Runs one request of `v` (one row of two) through `batched` on a thread of its own, as a
/// request counted by `counts`; its answer arrives on the returned channel.
fn counted_run(
    batched: &Arc<super::Batched>,
    counts: super::RequestInFlight,
    v: f32,
) -> std::sync::mpsc::Receiver<Result<Vec<NamedTensor>, BackendError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let batched = batched.clone();
    thread::spawn(move || {
        let _scope = super::InFlightScope::enter(&counts);
        let x = tensor(&[1, 2], &[v, v]);
        let answer = batched.run(&[("x".to_string(), &x)]);
        drop(tx.send(answer));
    });
    rx
}

#[test]
fn a_batch_of_every_request_in_flight_goes_without_waiting_out_its_delay() {
    use super::{Batched, InFlight, RequestInFlight};
    // A delay of an hour: only the count of requests in flight can send these batches.
    let graph = Arc::new(Doubler::default());
    let batched =
        Arc::new(Batched::new("g", "acme/m@1", graph.clone(), policy(3_600_000_000)).unwrap());
    let count = || RequestInFlight(vec![InFlight::start(batched.batcher())]);
    let patience = Duration::from_secs(120);

    // Alone in flight: it runs at once, and is counted down when answered.
    let lone = count();
    let answer = counted_run(&batched, lone.clone(), 1.0).recv_timeout(patience);
    let y = answer
        .expect("a lone request waited out the delay")
        .unwrap();
    assert_eq!(values(&y[0].tensor), [2.0, 2.0]);
    assert_eq!(
        batched
            .batcher()
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire),
        0
    );
    drop(lone);

    // Three in flight, two compute: their batch goes when the third ends without a
    // `compute` (a handler that failed before it, or used another graph).
    let (first, second, third) = (count(), count(), count());
    let a = counted_run(&batched, first, 3.0);
    let b = counted_run(&batched, second, 4.0);
    thread::sleep(Duration::from_millis(50));
    drop(third);
    let a = a
        .recv_timeout(patience)
        .expect("the batch waited out its delay")
        .unwrap();
    let b = b
        .recv_timeout(patience)
        .expect("the batch waited out its delay")
        .unwrap();
    assert_eq!(values(&a[0].tensor), [6.0, 6.0]);
    assert_eq!(values(&b[0].tensor), [8.0, 8.0]);
    let runs = graph.runs.lock().unwrap().clone();
    assert_eq!(runs, [vec![1, 2], vec![2, 2]], "the two ran as one batch");
    // A request nobody counts (the batcher used on its own) still waits for company: not
    // tested here, its delay being an hour; the other tests use the batcher uncounted.
}

/// A lone request runs for 400 ms; meanwhile three more arrive 20 ms apart, each ready
/// after a 1 ms delay. Returns the runs the graph saw.
fn requests_behind_a_running_batch(max_running_batches: usize) -> Vec<Vec<u32>> {
    let (graph, b) = slow_batcher(
        400,
        BatchPolicy {
            max_running_batches,
            ..policy(1_000)
        },
    );
    let spawn = |value: f32| spawn_call(&b, value, None);
    let first = spawn(1.0);
    thread::sleep(Duration::from_millis(100));
    let mut later = Vec::new();
    for value in [2.0, 3.0, 4.0] {
        later.push(spawn(value));
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(first.join().unwrap(), Ok(vec![2.0]));
    for (t, value) in later.into_iter().zip([2.0, 3.0, 4.0]) {
        assert_eq!(t.join().unwrap(), Ok(vec![2.0 * value]));
    }
    let runs = graph.runs.lock().unwrap().clone();
    runs
}

#[test]
fn a_ready_batch_waits_for_its_turn_and_keeps_filling() {
    // One batch at a time: the three that came while the first ran go together after it.
    assert_eq!(requests_behind_a_running_batch(1), [vec![1, 1], vec![3, 1]]);
    // With room for more running batches, each went alone once its delay was out.
    assert_eq!(
        requests_behind_a_running_batch(4),
        [vec![1, 1], vec![1, 1], vec![1, 1], vec![1, 1]]
    );
}

#[test]
fn a_request_whose_deadline_cannot_wait_for_its_turn_runs_at_once() {
    let run = |deadline_ms: u64| {
        let (graph, b) = slow_batcher(
            400,
            BatchPolicy {
                max_running_batches: 1,
                ..policy(1_000)
            },
        );
        let call_at = |value: f32, deadline: Option<Instant>| spawn_call(&b, value, deadline);
        // The first run teaches the batcher that a run takes 400 ms.
        assert_eq!(call_at(1.0, None).join().unwrap(), Ok(vec![2.0]));
        let running = call_at(2.0, None);
        thread::sleep(Duration::from_millis(50));
        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
        assert_eq!(call_at(3.0, Some(deadline)).join().unwrap(), Ok(vec![6.0]));
        assert_eq!(running.join().unwrap(), Ok(vec![4.0]));
        graph.most_at_once.load(Ordering::SeqCst)
    };
    // Time for the running batch and its own run (~800 ms): it waits for its turn.
    assert_eq!(run(1_500), 1);
    // Not enough: it runs at once, next to the running batch.
    assert_eq!(run(700), 2);
}

/// Calls `b` with one row holding `value` on a thread of its own, in the idle scheduling
/// class when `idle`; gives back the thread's id with the answer.
fn spawn_call_at(
    b: &Arc<Batcher>,
    value: f32,
    idle: bool,
) -> thread::JoinHandle<(thread::ThreadId, Result<Vec<f32>, String>)> {
    let b = b.clone();
    thread::spawn(move || {
        if idle {
            crate::runtime::priority::lower_this_thread_to_idle();
        }
        let answer = call(&b, &tensor(&[1, 1], &[value]), None);
        (thread::current().id(), answer)
    })
}

/// Two requests in one batch of two: the first (the leader) joins alone, then the second;
/// each on a thread of its own in the idle class or not. Returns both threads' ids and
/// the thread the batch ran on.
fn batch_of_two(
    leader_idle: bool,
    follower_idle: bool,
) -> (thread::ThreadId, thread::ThreadId, thread::ThreadId) {
    let graph = Arc::new(Doubler::default());
    // Full at two; a delay long enough that nothing is sent before the follower joins.
    let b = batcher(
        &graph,
        BatchPolicy {
            max_batch_size: 2,
            max_delay_us: 30_000_000,
            ..BatchPolicy::default()
        },
    );
    let leader = spawn_call_at(&b, 1.0, leader_idle);
    let waiting_since = Instant::now();
    while b.held_members() < 1 {
        assert!(
            waiting_since.elapsed() < Duration::from_secs(30),
            "the leader never joined"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let follower = spawn_call_at(&b, 2.0, follower_idle);
    let (leader_id, leader_answer) = leader.join().unwrap();
    let (follower_id, follower_answer) = follower.join().unwrap();
    assert_eq!(leader_answer, Ok(vec![2.0]));
    assert_eq!(follower_answer, Ok(vec![4.0]));
    assert_eq!(
        *graph.runs.lock().unwrap(),
        vec![vec![2, 1]],
        "one batched run"
    );
    assert_eq!(b.stats().batches, 1);
    assert_eq!(b.held_members(), 0, "the batch gave its members back");
    let ran_on = graph.threads.lock().unwrap()[0];
    (leader_id, follower_id, ran_on)
}

#[test]
fn a_leader_in_the_idle_class_hands_its_batch_to_a_member_that_is_not() {
    let (_, follower, ran_on) = batch_of_two(true, false);
    assert_eq!(ran_on, follower);
}

#[test]
fn a_leader_runs_its_batch_itself_unless_it_is_idle_and_a_member_is_not() {
    let (leader, _, ran_on) = batch_of_two(false, false);
    assert_eq!(
        ran_on, leader,
        "a leader at normal priority keeps its batch"
    );
    let (leader, _, ran_on) = batch_of_two(false, true);
    assert_eq!(ran_on, leader, "never handed to an idle member");
    let (leader, _, ran_on) = batch_of_two(true, true);
    assert_eq!(ran_on, leader, "nobody better to hand it to");
}
