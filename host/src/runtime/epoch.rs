//! The epoch ticker: one thread per engine that advances the epoch every tick, which is
//! what turns a request's wall-clock deadline into a trap inside a running guest.

use std::thread;
use std::time::Duration;
use wasmtime::{Engine, EngineWeak};

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
