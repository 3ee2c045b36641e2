//! The epoch ticker: one thread per engine that advances the epoch every tick, which is
//! what turns a request's wall-clock deadline into a trap inside a running guest, and
//! what a guest's epoch deadline does when it is reached (trap at the request's deadline;
//! before it, tell a long run, see `priority`).

use super::priority;
use super::state::HostState;
use std::thread;
use std::time::{Duration, Instant};
use wasmtime::{Engine, EngineWeak, Trap, UpdateDeadline};

/// Starts a thread that increments `engine`'s epoch every `tick` until the engine is
/// dropped.
pub fn spawn_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak: EngineWeak = engine.weak();
    thread::Builder::new()
        .name("sandserve-epoch".into())
        .spawn(move || loop {
            thread::sleep(tick);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .map(|_| ())
}

/// A running guest reached its epoch deadline: past the request's deadline it traps
/// (`Trap::Interrupt`, a timeout); before it, a thread that may be demoted is demoted once
/// the run has used [`priority::LONG_RUN`] of its CPU, and checked again every tick until
/// then; otherwise the guest runs on to the request's deadline.
pub(super) fn at_deadline(state: &HostState, tick: Duration) -> wasmtime::Result<UpdateDeadline> {
    let now = Instant::now();
    if now >= state.deadline {
        return Err(Trap::Interrupt.into());
    }
    if priority::this_thread_may_be_demoted() {
        // CPU a batch leader spent on other requests' rows is not this run's; what another
        // leader spent on this run's rows is.
        let used = priority::this_threads_cpu_time()
            .saturating_sub(state.cpu_at_start)
            .saturating_sub(super::call_scope::cpu_for_others())
            .saturating_add(super::call_scope::cpu_from_others());
        if used >= priority::LONG_RUN {
            priority::long_run_on_this_thread();
        } else {
            return Ok(UpdateDeadline::Continue(1));
        }
    }
    Ok(UpdateDeadline::Continue(ticks_for(
        state.deadline - now,
        tick,
    )))
}

/// Number of ticks that cover `timeout` (at least one).
pub fn ticks_for(timeout: Duration, tick: Duration) -> u64 {
    let tick_nanos = tick.as_nanos().max(1);
    let ticks = timeout.as_nanos().div_ceil(tick_nanos);
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_whole_ticks() {
        let tick = Duration::from_millis(10);
        assert_eq!(ticks_for(Duration::from_millis(95), tick), 10);
        assert_eq!(ticks_for(Duration::from_millis(100), tick), 10);
        assert_eq!(ticks_for(Duration::ZERO, tick), 1);
    }
}
