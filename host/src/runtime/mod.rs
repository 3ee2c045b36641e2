//! The sandboxed runtime: one wasmtime `Engine` (pooling allocator, copy-on-write memory
//! images, epoch interruption, optional fuel), a `Linker` offering exactly the host
//! interfaces handlers may import, a compiled `InstancePre` per loaded handler, and a fresh
//! `Store` with hard limits for every request.
//!
//! Calls are synchronous: run them on a blocking thread (`tokio::task::spawn_blocking`),
//! never on an async worker. See `docs/benchmarks.md` for why (sync is faster here).

mod bindings;
mod budget;
pub mod call_scope;
mod datatype;
mod epoch;
mod error;
mod guest_log;
mod limits;
mod output;
pub mod priority;
mod state;
mod waits;

pub use bindings::{ElementType, HandlerError, Request, Response, Tensor};
pub use budget::{default_budget_bytes, MemoryBudget, Reservation};
pub use datatype::{element_type_from_v2, v2_datatype};
pub use error::RuntimeError;
pub use guest_log::{GuestLine, GuestLog, MAX_LINE_BYTES};
pub use limits::{LimitHit, RequestLimits};

use bindings::{ModelHandler, ModelHandlerPre};
use state::HostState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, Store, Trap,
};
use wasmtime_wasi_nn::wit::WasiNnCtx;

/// Native stack size for threads that run guests (guest threads and the server's async
/// workers, which run small requests inline). A guest's wasm stack lives on the calling
/// thread's stack, so this leaves room for the largest `max_wasm_stack_bytes` we allow
/// (1 MiB) plus the host frames below and above it (engine calls included).
pub const HOST_THREAD_STACK_BYTES: usize = 8 << 20;

/// Engine-wide settings, fixed when the runtime starts.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How many sandboxes may exist at once (pooling allocator slots).
    pub max_concurrent_instances: u32,
    /// Largest memory any request may be given, in bytes (the pool's slot size);
    /// per-request limits may only lower it.
    pub max_memory_bytes: usize,
    /// Meter instructions with fuel (costs some speed; enables `RequestLimits::fuel`).
    pub fuel_metering: bool,
    /// Epoch tick: the granularity of timeouts.
    pub epoch_tick: Duration,
    /// Most bytes of stdout and of stderr kept per request.
    pub max_guest_output_bytes: usize,
    /// Most bytes of wasm stack a guest may use.
    pub max_wasm_stack_bytes: usize,
    /// Bytes at the start of each pooled linear memory kept resident between requests and
    /// reset in place, instead of being handed back to the kernel and faulted in again.
    pub memory_keep_resident_bytes: usize,
    /// The server-wide memory budget every guest memory is charged to.
    pub memory_budget: Arc<MemoryBudget>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_concurrent_instances: 256,
            max_memory_bytes: 1 << 30,
            fuel_metering: false,
            epoch_tick: Duration::from_millis(5),
            max_guest_output_bytes: 64 * 1024,
            max_wasm_stack_bytes: 1 << 20,
            memory_keep_resident_bytes: 2 << 20,
            memory_budget: MemoryBudget::unlimited(),
        }
    }
}

/// The engine and linker shared by every handler.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    config: RuntimeConfig,
}

impl Runtime {
    /// Builds the engine, starts its epoch ticker and links the host interfaces.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(&config)).map_err(engine_error)?;
        epoch::spawn_ticker(&engine, config.epoch_tick).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        waits::add_to_linker(&mut linker).map_err(engine_error)?;
        wasmtime_wasi_nn::wit::add_to_linker(&mut linker, HostState::nn_view)
            .map_err(engine_error)?;
        bindings::sandserve::handler::logging::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(engine_error)?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            config,
        })
    }

    /// The settings it was started with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The engine, for compiling components ahead of time.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `wasm` and prepares it for instantiation. `label` tags its logs
    /// (`tenant/model@version`). Rejects non-components, components importing anything
    /// the host does not offer (naming the imports), and non-handlers.
    pub fn load(&self, label: &str, wasm: &[u8]) -> Result<LoadedHandler, RuntimeError> {
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| RuntimeError::InvalidComponent(format!("{e:#}")))?;
        self.prepare(label, component)
    }

    /// Prepares an already compiled component (for example one deserialized from the
    /// on-disk cache).
    pub fn prepare(
        &self,
        label: &str,
        component: Component,
    ) -> Result<LoadedHandler, RuntimeError> {
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| link_error(&self.engine, &component, &e))?;
        let pre = ModelHandlerPre::new(instance_pre)
            .map_err(|e| RuntimeError::NotAHandler(format!("{e:#}")))?;
        Ok(LoadedHandler {
            pre,
            component,
            label: Arc::from(label),
            engine: self.engine.clone(),
            config: self.config.clone(),
        })
    }
}

/// A handler compiled and linked once, instantiated afresh for every request.
#[derive(Clone)]
pub struct LoadedHandler {
    pre: ModelHandlerPre<HostState>,
    component: Component,
    label: Arc<str>,
    engine: Engine,
    config: RuntimeConfig,
}

/// A sandbox instantiated ahead of its request and never used.
pub struct ReadySandbox {
    store: Store<HostState>,
    instance: ModelHandler,
}

/// A used sandbox. Dropping it gives its memory and slot back to the pool (a few
/// microseconds), so callers drop it after the answer is on its way.
pub struct SpentSandbox {
    _store: Option<Store<HostState>>,
}

/// The outcome of [`LoadedHandler::run`] and the sandbox it used.
pub struct Finished {
    /// The result.
    pub outcome: Result<Invocation, RuntimeError>,
    /// The used sandbox, to drop when convenient.
    pub spent: SpentSandbox,
    /// What the guest printed and logged (bounded).
    pub log: GuestLog,
}

impl Finished {
    fn failed(error: RuntimeError, store: Option<Store<HostState>>) -> Self {
        Self {
            outcome: Err(error),
            spent: SpentSandbox { _store: store },
            log: GuestLog::default(),
        }
    }
}

/// The result of one successful call.
#[derive(Debug)]
pub struct Invocation {
    /// What the handler returned.
    pub response: Response,
    /// Instructions consumed, when fuel metering is on.
    pub fuel_consumed: Option<u64>,
    /// Time spent creating the store and instantiating.
    pub instantiate_time: Duration,
    /// Time spent in `predict`.
    pub predict_time: Duration,
}

impl LoadedHandler {
    /// The server-wide memory budget its sandboxes are charged to (request parsing and
    /// answer encoding reserve from it too).
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.config.memory_budget
    }

    /// The compiled component (to serialize into the cache).
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// The label its logs carry.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Instantiates a new store with `limits` and no wasi-nn graphs.
    pub fn instantiate_only(&self, limits: &RequestLimits) -> Result<Duration, RuntimeError> {
        let start = Instant::now();
        let mut store = self.new_store(limits, empty_nn())?;
        self.pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&mut store, limits, e))?;
        Ok(start.elapsed())
    }

    /// Runs one request in a fresh sandbox, with `nn` as its wasi-nn context (the graphs
    /// this handler may reach).
    pub fn invoke(
        &self,
        request: &Request,
        limits: &RequestLimits,
        nn: WasiNnCtx,
    ) -> Result<Invocation, RuntimeError> {
        self.run(None, request, limits, || nn).outcome
    }

    /// Creates and instantiates a sandbox ahead of the request that will use it. Its
    /// instantiation runs under `limits.timeout`; the call later gets a deadline of its own.
    pub fn instantiate_ahead(
        &self,
        limits: &RequestLimits,
        nn: WasiNnCtx,
    ) -> Result<ReadySandbox, RuntimeError> {
        let mut store = self.new_store(limits, nn)?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&mut store, limits, e))?;
        Ok(ReadySandbox { store, instance })
    }

    /// Runs one request in `ready` (a sandbox from [`LoadedHandler::instantiate_ahead`]
    /// with the same limits) or, when `None`, in a sandbox created now with `nn()` as its
    /// wasi-nn context. The used sandbox comes back in [`Finished::spent`], so the caller
    /// can release it after answering.
    pub fn run(
        &self,
        ready: Option<ReadySandbox>,
        request: &Request,
        limits: &RequestLimits,
        nn: impl FnOnce() -> WasiNnCtx,
    ) -> Finished {
        let start = Instant::now();
        #[cfg(feature = "bench-without-sandbox")]
        {
            drop(ready);
            let _ = (nn, limits);
            return Finished {
                outcome: Ok(Invocation {
                    response: Response {
                        outputs: request.inputs.clone(),
                        parameters: Default::default(),
                    },
                    fuel_consumed: None,
                    instantiate_time: Duration::ZERO,
                    predict_time: start.elapsed(),
                }),
                spent: SpentSandbox { _store: None },
                log: GuestLog::default(),
            };
        }
        #[cfg_attr(feature = "bench-without-sandbox", allow(unreachable_code))]
        let (mut store, instance) = match ready {
            Some(ready) => {
                let mut store = ready.store;
                if let Err(e) = self.arm(&mut store, limits) {
                    return Finished::failed(e, Some(store));
                }
                (store, ready.instance)
            }
            // A sandbox created now: its deadline, set in `new_store`, covers
            // instantiation and the call together.
            None => {
                let mut store = match self.new_store(limits, nn()) {
                    Ok(store) => store,
                    Err(e) => return Finished::failed(e, None),
                };
                match self.pre.instantiate(&mut store) {
                    Ok(instance) => (store, instance),
                    Err(e) => {
                        let error = self.classify(&mut store, limits, e);
                        return Finished::failed(error, Some(store));
                    }
                }
            }
        };
        let instantiated = Instant::now();
        // Host calls that may wait (a batched `compute`) see the call's deadline.
        let deadline = call_scope::DeadlineScope::enter(store.data().deadline);
        let outcome = instance
            .sandserve_handler_handler()
            .call_predict(&mut store, request);
        drop(deadline);
        let predict_time = instantiated.elapsed();
        let outcome = outcome
            .map_err(|e| self.classify(&mut store, limits, e))
            .and_then(|result| {
                // A guest whose WASI wait was cut at the deadline ran out of time, even if
                // it answered before the epoch deadline caught it; so did one that failed
                // past its deadline (a batched `compute` gives up waiting at the deadline).
                let late_failure = result.is_err() && Instant::now() >= store.data().deadline;
                if store.data().wait_cut || late_failure {
                    return Err(RuntimeError::Timeout {
                        timeout: limits.timeout,
                    });
                }
                self.finish(&store, limits, result)
            })
            .map(|(response, fuel_consumed)| Invocation {
                response,
                fuel_consumed,
                instantiate_time: instantiated - start,
                predict_time,
            });
        let log = self.collect_output(&mut store);
        Finished {
            outcome,
            spent: SpentSandbox {
                _store: Some(store),
            },
            log,
        }
    }

    /// Sets the deadline and fuel of what runs next in `store`.
    fn arm(
        &self,
        store: &mut Store<HostState>,
        limits: &RequestLimits,
    ) -> Result<(), RuntimeError> {
        let tick = self.config.epoch_tick;
        let mut ticks = epoch::ticks_for(limits.timeout, tick);
        // The thread's CPU clock is a system call: read only where a long run can demote.
        let demotable = priority::this_thread_may_be_demoted();
        if demotable {
            ticks = ticks.min(epoch::ticks_for(priority::LONG_RUN, tick));
        }
        store.set_epoch_deadline(ticks);
        let state = store.data_mut();
        state.deadline = std::time::Instant::now() + limits.timeout;
        state.wait_cut = false;
        if demotable {
            state.cpu_at_start = priority::this_threads_cpu_time();
        }
        if self.config.fuel_metering {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(engine_error)?;
        }
        Ok(())
    }

    /// Turns the handler's result into a response within the output limit, with the fuel
    /// it used.
    fn finish(
        &self,
        store: &Store<HostState>,
        limits: &RequestLimits,
        result: Result<Response, HandlerError>,
    ) -> Result<(Response, Option<u64>), RuntimeError> {
        let fuel_consumed = match (self.config.fuel_metering, store.get_fuel()) {
            (true, Ok(left)) => Some(limits.fuel.unwrap_or(u64::MAX) - left),
            _ => None,
        };
        let response = result.map_err(|e| match e {
            HandlerError::InvalidInput(m) => RuntimeError::InvalidInput(m),
            HandlerError::Unavailable(m) => RuntimeError::Unavailable(m),
            HandlerError::Internal(m) => {
                tracing::warn!(handler = &*self.label, "handler failed: {m}");
                RuntimeError::HandlerFailed(m)
            }
        })?;
        let bytes = response_size(&response);
        if bytes > limits.max_output_bytes {
            return Err(RuntimeError::OutputTooLarge {
                bytes,
                limit: limits.max_output_bytes,
            });
        }
        Ok((response, fuel_consumed))
    }

    fn new_store(
        &self,
        limits: &RequestLimits,
        nn: WasiNnCtx,
    ) -> Result<Store<HostState>, RuntimeError> {
        let state = HostState::new(
            self.label.clone(),
            nn,
            limits,
            self.config.max_guest_output_bytes,
            self.config.memory_budget.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let tick = self.config.epoch_tick;
        store.epoch_deadline_callback(move |store| epoch::at_deadline(store.data(), tick));
        self.arm(&mut store, limits)?;
        Ok(store)
    }

    /// Sends what the guest printed to the host log, tagged with the handler label, and
    /// gives it back with the request's log records as lines (for the tenant's log ring).
    fn collect_output(&self, store: &mut Store<HostState>) -> GuestLog {
        let state = store.data_mut();
        let mut log = std::mem::take(&mut state.records);
        for (stream, output) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
            let (text, truncated) = output.take();
            if !text.is_empty() {
                tracing::info!(target: "guest", handler = &*self.label, stream, truncated, "{}", text.trim_end());
                log.push_text(stream, &text, truncated);
            }
        }
        log
    }

    /// Turns a wasmtime error from instantiate or call into the limit or fault it was.
    fn classify(
        &self,
        store: &mut Store<HostState>,
        limits: &RequestLimits,
        error: wasmtime::Error,
    ) -> RuntimeError {
        if let Some(hit) = store.data().limiter.hit() {
            return match hit {
                LimitHit::Memory { requested } => RuntimeError::MemoryLimit {
                    limit_bytes: limits.max_memory_bytes,
                    requested_bytes: requested,
                },
                LimitHit::Table => RuntimeError::TableLimit {
                    limit: limits.max_table_elements,
                },
                LimitHit::Budget { requested } => RuntimeError::MemoryBudget {
                    requested_bytes: requested,
                },
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RuntimeError::Timeout {
                timeout: limits.timeout,
            },
            Some(Trap::OutOfFuel) => RuntimeError::FuelExhausted {
                fuel: limits.fuel.unwrap_or(u64::MAX),
            },
            Some(Trap::StackOverflow) => RuntimeError::StackOverflow,
            Some(Trap::AllocationTooLarge) => RuntimeError::MemoryLimit {
                limit_bytes: limits.max_memory_bytes,
                requested_bytes: 0,
            },
            Some(trap) => match panic_message(&store.data().stderr) {
                Some(message) => RuntimeError::GuestPanic { message },
                None => RuntimeError::Trap {
                    trap: trap.to_string(),
                },
            },
            // The pooling allocator's slots (instances, memories, tables, stacks) are all
            // in use: wasmtime says so with a type of its own.
            None if error.is::<PoolConcurrencyLimitError>() => {
                RuntimeError::Exhausted(format!("{error:#}"))
            }
            None => RuntimeError::Trap {
                trap: format!("{error:#}"),
            },
        }
    }
}

/// A wasi-nn context that reaches no graphs and may load none.
pub fn empty_nn() -> WasiNnCtx {
    WasiNnCtx::new(Vec::new(), wasmtime_wasi_nn::InMemoryRegistry::new().into())
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let slots = config.max_concurrent_instances;
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(4))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_memory_size(config.max_memory_bytes)
        .linear_memory_keep_resident(config.memory_keep_resident_bytes)
        .table_keep_resident(64 * 1024)
        .pagemap_scan(Enabled::Auto);
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .epoch_interruption(true)
        .consume_fuel(config.fuel_metering)
        .max_wasm_stack(config.max_wasm_stack_bytes);
    wasm
}

fn engine_error(error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Engine(error.to_string())
}

/// Explains a failed link: which imports the host does not offer, or another mismatch.
fn link_error(engine: &Engine, component: &Component, error: &wasmtime::Error) -> RuntimeError {
    let message = format!("{error:#}");
    let missing: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| message.contains(&format!("`{name}`")))
        .collect();
    if missing.is_empty() {
        RuntimeError::NotAHandler(message)
    } else {
        RuntimeError::ForbiddenImport { imports: missing }
    }
}

/// The message of a Rust panic, when the guest's stderr shows one.
fn panic_message(stderr: &output::BoundedOutput) -> Option<String> {
    let text = stderr.snapshot();
    let start = text.find("panicked at")?;
    let after = &text[start..];
    let message = after
        .split_once(":\n")
        .map_or(after, |(_, rest)| rest)
        .lines()
        .next()
        .unwrap_or_default();
    Some(state::truncate(message.trim(), 1024).to_string())
}

fn response_size(response: &Response) -> usize {
    response
        .outputs
        .iter()
        .map(|t| t.data.len() + t.name.len() + t.shape.len() * 8)
        .sum::<usize>()
        + response.parameters.as_ref().map_or(0, String::len)
}
