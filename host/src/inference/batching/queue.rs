//! The batcher of one graph: requests that call `compute` with inputs of one shape (apart
//! from the batch dimension) and type join one open batch; the first to arrive leads it. The
//! leader waits until the batch is full, reaches a preferred size, or its delay is out,
//! then joins the inputs, runs the graph once on its own thread, and hands every follower
//! its slice of the outputs. No thread of its own: a batch runs on its leader's guest
//! thread while the followers' threads wait, or on a follower's when the leader's thread
//! is in the idle scheduling class and the follower's is not (`handoff`).
//!
//! At most `max_running_batches` batches of the graph run at once: a ready batch waits
//! for a running one to end, and takes more requests meanwhile (up to `max_batch_size`),
//! so the model's own run time paces the batches and they fill, instead of small batches
//! competing for the same cores. A leader whose deadline would pass waiting for its turn
//! runs at once anyway.
//!
//! What is never held: a request whose inputs the graph refuses (it gets its own error at
//! once), one whose deadline would pass before the batch is sent and run (the last batch's
//! run time is the estimate), one larger than a batch, one that would take the open
//! batches' input bytes beyond `max_batch_bytes`, and one on a thread that must not block
//! (the caller says so). Those run alone, as they would without batching.
//!
//! Failures answer per request: when the batched run fails, or its outputs cannot be cut
//! into slices, every member runs again alone on its own thread and gets its own answer. A
//! follower whose deadline passes while it waits leaves with a timeout; the batch runs on
//! for the others and its slice is dropped. A follower whose leader went away without an
//! answer runs alone.
//!
//! Tenants: a graph belongs to one loaded image version, so its batches hold one tenant's
//! requests unless the version is shared, when the requests of every tenant serving it
//! meet here. Each member's rows go back only to its own thread (its own sandbox); the
//! CPU the leader spent on a follower's rows is handed to the follower with its answer
//! (`call_scope`), so each tenant is charged for its own rows. Batches that mixed tenants
//! are counted apart ([`BatchStatsSnapshot::cross_tenant_batches`] and the
//! `sandserve_batches_total` metric's `cross_tenant` label).

mod counters;
mod handoff;

pub use counters::BatchStatsSnapshot;

use super::super::context::RunGraph;
use super::super::failed;
use super::super::types::wasi_nn_name;
use super::executions::{self, RunTimes};
use super::policy::BatchPolicy;
use super::tensors;
use crate::runtime::call_scope as deadline;
use crate::runtime::priority;
use counters::Counters;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use wasmtime_wasi_nn::backend::{BackendError, NamedTensor};
use wasmtime_wasi_nn::Tensor;

type Outputs = Vec<NamedTensor>;

/// How often a ready leader waiting for its turn looks again, should a wake-up be missed.
const TURN_RECHECK: Duration = Duration::from_millis(10);

/// What requests must share to be batched: each input's name, type, and dimensions with
/// the batch dimension left out (zeroed), sorted by name.
type Key = Vec<(String, &'static str, Vec<u32>)>;

/// What a follower is told.
enum Reply {
    /// Its own slice of the outputs, or the error of its request, and the CPU the leader
    /// spent on its rows.
    Done(Result<Outputs, BackendError>, Duration),
    /// The batch failed as a whole: run alone.
    RunAlone,
    /// Run the batch (its leader's thread is in the idle class and this one's is not),
    /// then answer the others as a leader does.
    Lead(handoff::Running),
}

/// One request in a batch: its inputs (in key order) and where its answer goes.
struct Member {
    inputs: Vec<Tensor>,
    rows: usize,
    /// The tenant it runs for (`None` off the guest-thread pool).
    tenant: Option<Arc<str>>,
    /// Whether its thread runs in the idle scheduling class.
    idle: bool,
    /// `None` for the leader, which answers itself.
    reply: Option<Sender<Reply>>,
}

/// A batch that is being filled.
struct Open {
    id: u64,
    members: Vec<Member>,
    rows: usize,
    bytes: usize,
    flush_at: Instant,
    wake: Arc<Condvar>,
}

#[derive(Default)]
struct State {
    /// At most one open batch per key.
    open: HashMap<Key, Open>,
    /// Batches that are ready to run, by id, until their leader takes them.
    sealed: HashMap<u64, Open>,
    /// Input bytes held by open and running batches.
    held_bytes: usize,
    /// Requests in open, sealed and running batches (see [`Batcher::everyone_joined`]).
    held_members: usize,
    /// Batches running now (at most `max_running_batches`, but for leaders that could not
    /// wait for their turn).
    running: usize,
    next_id: u64,
}

/// The batcher of one graph.
pub struct Batcher {
    name: String,
    /// The image version the graph belongs to (`tenant/model@version`; the metric's label).
    image: String,
    graph: Arc<dyn RunGraph>,
    policy: BatchPolicy,
    /// Shared with the turns of running batches, which may travel to another thread.
    state: Arc<Mutex<State>>,
    /// How long the last batched run took, in nanoseconds: the estimate of the next.
    last_run_nanos: AtomicU64,
    counters: Counters,
    /// Requests of this graph's image that are running and have not yet had a `compute`
    /// of it answered (`super::in_flight`): the most that can still join a batch. Zero
    /// when nobody counts (the batcher used on its own): then batches wait out their delay.
    pub(super) in_flight: AtomicUsize,
}

impl Batcher {
    /// A batcher over `graph` (named `name` in messages) of image version `image`.
    pub fn new(name: &str, image: &str, graph: Arc<dyn RunGraph>, policy: BatchPolicy) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            graph,
            policy,
            state: Arc::default(),
            last_run_nanos: AtomicU64::new(0),
            counters: Counters::default(),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// The graph it batches.
    pub fn graph(&self) -> &Arc<dyn RunGraph> {
        &self.graph
    }

    /// Its counters.
    pub fn stats(&self) -> BatchStatsSnapshot {
        self.counters.snapshot()
    }

    /// Runs one request's `inputs`, in a batch when it can be held until `deadline`
    /// (`None`: no deadline) and `may_wait` (the thread may block).
    pub fn run(
        &self,
        inputs: &[(String, &Tensor)],
        deadline: Option<Instant>,
        may_wait: bool,
    ) -> Result<Outputs, BackendError> {
        // A request the graph refuses gets its own error and never joins a batch.
        self.graph.check(inputs)?;
        let Some((key, rows)) = self.key(inputs) else {
            return self.alone(inputs);
        };
        if !may_wait || self.policy.sends_at(rows) {
            return self.alone(inputs);
        }
        let mut sorted: Vec<&(String, &Tensor)> = inputs.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<String> = sorted.iter().map(|(n, _)| n.clone()).collect();
        let bytes: usize = inputs.iter().map(|(_, t)| t.data.len()).sum();
        let expected = Duration::from_nanos(self.last_run_nanos.load(Ordering::Relaxed));
        // Sent at `flush_at`, after one more run when every running slot is taken, and run.
        let in_time = |flush_at: Instant, slots_taken: bool| {
            let turn = if slots_taken {
                expected
            } else {
                Duration::ZERO
            };
            deadline.is_none_or(|d| flush_at + turn + expected < d)
        };

        // The member's copy of its inputs is made before the lock, which every request of
        // the graph (of every tenant, for a shared version) takes.
        let owned: Vec<Tensor> = sorted.iter().map(|(_, t)| (*t).clone()).collect();
        let tenant = deadline::current_tenant();
        let idle = handoff::this_thread_is_idle();
        let member = move |reply| Member {
            inputs: owned,
            rows,
            tenant,
            idle,
            reply,
        };
        let mut state = self.lock();
        if state.held_bytes.saturating_add(bytes) > self.policy.max_batch_bytes {
            return self.alone_unlocked(state, inputs);
        }
        let slots_taken = self.slots_taken(&state);
        if let Some(open) = state.open.get_mut(&key) {
            if !in_time(open.flush_at, slots_taken) {
                return self.alone_unlocked(state, inputs);
            }
            if open.rows + rows <= self.policy.max_batch_size {
                let (tx, rx) = bounded(1);
                open.members.push(member(Some(tx)));
                open.rows += rows;
                open.bytes += bytes;
                let full = self.policy.sends_at(open.rows);
                state.held_bytes += bytes;
                state.held_members += 1;
                if full {
                    Self::seal(&mut state, &key);
                } else if self.everyone_joined(&state) {
                    // Its leader sends it when its turn comes; until then it stays open.
                    Self::wake_leaders(&state);
                }
                drop(state);
                return self.follow(&rx, deadline, inputs, &names);
            }
            // No room: send the open batch now and lead a new one.
            Self::seal(&mut state, &key);
        }
        let flush_at = Instant::now() + self.policy.max_delay();
        if !in_time(flush_at, slots_taken) {
            return self.alone_unlocked(state, inputs);
        }
        let id = state.next_id;
        state.next_id += 1;
        let wake = Arc::new(Condvar::new());
        state.open.insert(
            key.clone(),
            Open {
                id,
                members: vec![member(None)],
                rows,
                bytes,
                flush_at,
                wake: wake.clone(),
            },
        );
        state.held_bytes += bytes;
        state.held_members += 1;
        let running = loop {
            let now = Instant::now();
            // Nobody else can come (every request that may is already in a batch): send
            // now rather than wait out the delay; a lone request runs at once.
            let ready =
                state.sealed.contains_key(&id) || now >= flush_at || self.everyone_joined(&state);
            let cannot_wait = deadline.is_some_and(|d| now + expected >= d);
            if ready && (!self.slots_taken(&state) || cannot_wait) {
                let batch = match state.sealed.remove(&id) {
                    Some(batch) => batch,
                    None => match state.open.remove(&key) {
                        Some(batch) if batch.id == id => batch,
                        // Ours is neither sealed nor open (cannot happen): run alone
                        // rather than wait for nothing.
                        other => {
                            if let Some(other) = other {
                                state.open.insert(key.clone(), other);
                            }
                            state.held_bytes = state.held_bytes.saturating_sub(bytes);
                            state.held_members = state.held_members.saturating_sub(1);
                            return self.alone_unlocked(state, inputs);
                        }
                    },
                };
                state.running += 1;
                let turn = handoff::Turn::new(&self.state, &batch);
                break handoff::Running { batch, turn };
            }
            // Ready, but its turn has not come: a running batch that ends wakes it.
            let wait = if ready {
                TURN_RECHECK
            } else {
                flush_at.saturating_duration_since(now)
            };
            state = wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        drop(state);
        match handoff::hand_over(running) {
            Ok(own) => self.follow(&own, deadline, inputs, &names),
            Err(running) => self.lead(running, &names),
        }
    }

    /// Keeps how long the run started at `started` took: the estimate of the next.
    fn remember_run_time(&self, started: Instant) {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_run_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Requests held in batches now.
    #[cfg(test)]
    pub(super) fn held_members(&self) -> usize {
        self.lock().held_members
    }

    /// Whether `max_running_batches` batches are running.
    fn slots_taken(&self, state: &State) -> bool {
        state.running >= self.policy.max_running_batches
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every request that may still join a batch is in one already (so waiting
    /// longer gains nothing); never when nobody counts the requests in flight.
    fn everyone_joined(&self, state: &State) -> bool {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        in_flight > 0 && state.held_members >= in_flight
    }

    /// A request in flight had its `compute` answered or ended: if every one left is in a
    /// batch now, the open batches go as soon as they have their turn.
    pub(super) fn one_less_in_flight(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let state = self.lock();
        if !state.open.is_empty() && self.everyone_joined(&state) {
            Self::wake_leaders(&state);
        }
    }

    /// Wakes the leader of every open and sealed batch to look at its batch again.
    fn wake_leaders(state: &State) {
        for batch in state.open.values().chain(state.sealed.values()) {
            batch.wake.notify_one();
        }
    }

    /// Moves the open batch of `key` to the sealed ones and wakes its leader.
    fn seal(state: &mut State, key: &Key) {
        if let Some(open) = state.open.remove(key) {
            open.wake.notify_one();
            state.sealed.insert(open.id, open);
        }
    }

    /// The batch key and rows of `inputs`; `None` when they cannot be batched (an input
    /// without the batch dimension, inputs that disagree on rows, or no rows).
    fn key(&self, inputs: &[(String, &Tensor)]) -> Option<(Key, usize)> {
        let d = self.policy.batch_dimension;
        let mut rows = None;
        let mut key: Key = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let r = *tensor.dimensions.get(d)? as usize;
            if *rows.get_or_insert(r) != r {
                return None;
            }
            let mut dims = tensor.dimensions.clone();
            dims[d] = 0;
            key.push((name.clone(), wasi_nn_name(tensor.ty), dims));
        }
        key.sort();
        rows.filter(|&r| r > 0).map(|r| (key, r))
    }

    fn alone(&self, inputs: &[(String, &Tensor)]) -> Result<Outputs, BackendError> {
        self.counters.alone_requests.fetch_add(1, Ordering::Relaxed);
        self.run_one(inputs)
    }

    /// Runs one request's `inputs` on the graph by themselves, counted as an execution of
    /// their rows when it succeeds.
    fn run_one(&self, inputs: &[(String, &Tensor)]) -> Result<Outputs, BackendError> {
        let started = Instant::now();
        let outputs = self.graph.run(inputs)?;
        let rows = inputs.first().map_or(1, |(_, t)| {
            t.dimensions
                .get(self.policy.batch_dimension)
                .map_or(1, |&r| r as usize)
        });
        let tenant = deadline::current_tenant();
        let times = RunTimes {
            infer: started.elapsed(),
            ..RunTimes::default()
        };
        executions::record_run(&self.image, [(tenant.as_deref(), rows)], times);
        Ok(outputs)
    }

    fn alone_unlocked(
        &self,
        state: MutexGuard<'_, State>,
        inputs: &[(String, &Tensor)],
    ) -> Result<Outputs, BackendError> {
        drop(state);
        self.alone(inputs)
    }

    /// Waits for the leader's answer, at most until `deadline`; runs the batch when the
    /// leader hands it over.
    fn follow(
        &self,
        rx: &Receiver<Reply>,
        deadline: Option<Instant>,
        inputs: &[(String, &Tensor)],
        names: &[String],
    ) -> Result<Outputs, BackendError> {
        let reply = match deadline {
            Some(d) => rx.recv_deadline(d),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match reply {
            Ok(Reply::Done(result, cpu)) => {
                deadline::charge_cpu_from_others(cpu);
                result
            }
            Ok(Reply::Lead(running)) => self.lead(running, names),
            Ok(Reply::RunAlone) | Err(RecvTimeoutError::Disconnected) => self.run_one(inputs),
            Err(RecvTimeoutError::Timeout) => {
                // The batch may have been handed over just now: run it for the others.
                if let Ok(Reply::Lead(running)) = rx.try_recv() {
                    drop(self.lead(running, names));
                }
                Err(failed(format!(
                    "graph `{}`: the request's deadline passed while it waited for its batch",
                    self.name
                )))
            }
        }
    }

    /// Runs a batch and answers its members; returns the answer of the first member (the
    /// one running it). Its turn ends when this returns.
    fn lead(&self, running: handoff::Running, names: &[String]) -> Result<Outputs, BackendError> {
        let handoff::Running { batch, mut turn } = running;
        let members = batch.members;
        let outcome = if members.len() == 1 {
            None
        } else {
            Some(self.run_joined(&members, names))
        };
        turn.release_held();
        let own_inputs = |members: &[Member]| -> Vec<(String, Tensor)> {
            names
                .iter()
                .cloned()
                .zip(members[0].inputs.iter().cloned())
                .collect()
        };
        match outcome {
            None => {
                self.counters.alone_requests.fetch_add(1, Ordering::Relaxed);
                let own = own_inputs(&members);
                let refs: Vec<(String, &Tensor)> =
                    own.iter().map(|(n, t)| (n.clone(), t)).collect();
                let started = Instant::now();
                let outputs = self.run_one(&refs);
                self.remember_run_time(started);
                outputs
            }
            Some(Ok((mut slices, shares))) => {
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .batched_requests
                    .fetch_add(members.len() as u64, Ordering::Relaxed);
                let tenants = distinct_tenants(&members);
                let cross = tenants > 1;
                if cross {
                    self.counters
                        .cross_tenant_batches
                        .fetch_add(1, Ordering::Relaxed);
                }
                // Named in telemetry/metrics.rs (`names::BATCHES`); the facade is a crate,
                // so this module still imports no other.
                metrics::counter!(
                    "sandserve_batches_total",
                    "image" => self.image.clone(),
                    "graph" => self.name.clone(),
                    "cross_tenant" => if cross { "true" } else { "false" },
                )
                .increment(1);
                tracing::debug!(graph = %self.name, requests = members.len(), tenants, "batch of {} requests ran", members.len());
                let mut own = Vec::new();
                for ((member, slice), cpu) in members.iter().zip(slices.drain(..)).zip(shares) {
                    match &member.reply {
                        // A follower that left (deadline) no longer listens: fine.
                        Some(tx) => drop(tx.send(Reply::Done(Ok(slice), cpu))),
                        None => own = slice,
                    }
                }
                Ok(own)
            }
            Some(Err(e)) => {
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(graph = %self.name, requests = members.len(), "batched run failed, each request runs alone: {e}");
                for member in &members {
                    if let Some(tx) = &member.reply {
                        drop(tx.send(Reply::RunAlone));
                    }
                }
                let own = own_inputs(&members);
                let refs: Vec<(String, &Tensor)> =
                    own.iter().map(|(n, t)| (n.clone(), t)).collect();
                self.run_one(&refs)
            }
        }
    }

    /// Joins the members' inputs, runs the graph once, and cuts the outputs into one slice
    /// per member (in member order); with each member's share of the run's CPU.
    fn run_joined(
        &self,
        members: &[Member],
        names: &[String],
    ) -> Result<(Vec<Outputs>, Vec<Duration>), String> {
        let d = self.policy.batch_dimension;
        let joining = Instant::now();
        let mut joined = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let parts: Vec<&Tensor> = members.iter().map(|m| &m.inputs[i]).collect();
            let tensor = tensors::join(&parts, d).map_err(|e| format!("input `{name}` {e}"))?;
            joined.push((name.clone(), tensor));
        }
        let refs: Vec<(String, &Tensor)> = joined.iter().map(|(n, t)| (n.clone(), t)).collect();
        let started = Instant::now();
        let input = started - joining;
        let cpu_before = priority::this_threads_cpu_time();
        let outputs = self.graph.run(&refs);
        let cpu = priority::this_threads_cpu_time().saturating_sub(cpu_before);
        let infer = started.elapsed();
        self.remember_run_time(started);
        let rows: Vec<usize> = members.iter().map(|m| m.rows).collect();
        // The leader's own rows are its work; the rest it did for the followers.
        let total: usize = rows.iter().sum();
        let share = |r: usize| {
            let nanos = cpu.as_nanos() * r as u128 / (total.max(1) as u128);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        let shares: Vec<Duration> = rows.iter().map(|&r| share(r)).collect();
        deadline::credit_cpu_for_others(share(total - rows[0]));
        let outputs = outputs.map_err(|e| e.to_string())?;
        let cutting = Instant::now();
        let mut slices: Vec<Outputs> = members.iter().map(|_| Vec::new()).collect();
        for output in outputs {
            let parts = tensors::split(&output.tensor, d, &rows)
                .map_err(|e| format!("output `{}` {e}", output.name))?;
            for (slice, tensor) in slices.iter_mut().zip(parts) {
                slice.push(NamedTensor {
                    name: output.name.clone(),
                    tensor,
                });
            }
        }
        let times = RunTimes {
            input,
            infer,
            output: cutting.elapsed(),
        };
        let held = members.iter().map(|m| (m.tenant.as_deref(), m.rows));
        executions::record_run(&self.image, held, times);
        Ok((slices, shares))
    }
}

/// How many tenants the members of a batch run for (members off the guest-thread pool,
/// which never wait for a batch, count as none).
fn distinct_tenants(members: &[Member]) -> usize {
    let mut seen: Vec<&str> = Vec::with_capacity(2);
    for tenant in members.iter().filter_map(|m| m.tenant.as_deref()) {
        if !seen.contains(&tenant) {
            seen.push(tenant);
        }
    }
    seen.len()
}
