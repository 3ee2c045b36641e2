//! Waits a guest can start through WASI end by its request's deadline.
//!
//! The epoch deadline stops a guest only while it runs wasm code. A guest that sleeps or
//! polls (`wasi:clocks/monotonic-clock` `subscribe-duration` / `subscribe-instant`, then
//! `wasi:io/poll`) waits inside the host, where no epoch deadline reaches it: a guest
//! asking for an hour's sleep would hold its guest thread and sandbox slot for an hour. So
//! these two functions are replaced with ones that cap the wait at what is left of the
//! request's time. When a capped wait ends the guest is back in wasm code, where the epoch
//! deadline stops it, and should it answer first, its answer is still a timeout. Clock subscriptions are the only waits a sandbox can start that might not end
//! by themselves: it has no network or files, stdin is closed and its output is captured.

use super::state::HostState;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::{subscribe, DynPollable, Pollable};
use wasmtime_wasi::HostMonotonicClock;

/// The `wasi:clocks/monotonic-clock` instance wasmtime-wasi defines (guests importing an
/// older 0.2 version are linked to it by semver).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The guest's monotonic clock: nanoseconds since its request's store was created.
#[derive(Debug, Clone, Copy)]
pub struct GuestClock {
    start: Instant,
}

impl GuestClock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// The clock's reading at `instant`.
    fn at(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.at(Instant::now())
    }
}

/// A wait that ends at a fixed instant.
struct WaitUntil(tokio::time::Instant);

#[async_trait::async_trait]
impl Pollable for WaitUntil {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

/// Replaces wasmtime-wasi's clock subscriptions with deadline-capped ones; call after
/// `wasmtime_wasi::p2::add_to_linker_sync`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, HostState>, (nanos,): (u64,)| {
            let wait = Duration::from_nanos(nanos);
            Ok((capped_wait(store.data_mut(), wait)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, HostState>, (when,): (u64,)| {
            let now = store.data().clock.now();
            let wait = Duration::from_nanos(when.saturating_sub(now));
            Ok((capped_wait(store.data_mut(), wait)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable ready after `wait`, or at the request's deadline if that comes first.
fn capped_wait(state: &mut HostState, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
    let now = Instant::now();
    let wanted = now.checked_add(wait);
    if wanted.is_none_or(|t| t > state.deadline) {
        state.wait_cut = true;
    }
    let until = wanted
        .map_or(state.deadline, |t| t.min(state.deadline))
        .max(now);
    let resource = state
        .table
        .push(WaitUntil(tokio::time::Instant::from_std(until)))?;
    subscribe(&mut state.table, resource)
}
