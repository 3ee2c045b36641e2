//! How a graph batches: the dimension requests are joined along, how many rows a batch may
//! hold, how long the first request waits for company, which sizes send a batch at once,
//! how many input bytes open batches may hold, and how many batches run at once.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default `max_batch_size` (also what `batching = "auto"` uses).
pub const DEFAULT_MAX_BATCH_SIZE: usize = 32;
/// Default `max_delay_us`.
pub const DEFAULT_MAX_DELAY_US: u64 = 2_000;
/// Default `max_batch_mib`.
pub const DEFAULT_MAX_BATCH_MIB: u64 = 64;

/// Default `max_running_batches`: half this machine's CPUs, at least one. The other half
/// serves the requests around the model (HTTP, decoding, sandboxes), and a batch that
/// waits for a running one keeps filling instead of competing with it for the cores.
pub fn default_running_batches() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A graph's dynamic batching settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchPolicy {
    /// The dimension of every input and output that counts rows (usually 0).
    pub batch_dimension: usize,
    /// Most rows in one batch.
    pub max_batch_size: usize,
    /// Longest the first request of a batch waits for others, in microseconds.
    pub max_delay_us: u64,
    /// Batch sizes that are sent as soon as reached, without waiting out the delay.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most input bytes this graph's open batches may hold together; a request that would
    /// go beyond runs alone.
    pub max_batch_bytes: usize,
    /// Most batches of this graph running at once. A batch that is ready (full, at a
    /// preferred size, or its delay out) while that many run waits for one to end, and
    /// keeps taking requests meanwhile (as Triton's dynamic batcher does with busy model
    /// instances): the model's own run time paces the batches.
    pub max_running_batches: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            batch_dimension: 0,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_delay_us: DEFAULT_MAX_DELAY_US,
            preferred_batch_sizes: Vec::new(),
            max_batch_bytes: (DEFAULT_MAX_BATCH_MIB << 20) as usize,
            max_running_batches: default_running_batches(),
        }
    }
}

impl BatchPolicy {
    /// The delay as a duration.
    pub fn max_delay(&self) -> Duration {
        Duration::from_micros(self.max_delay_us)
    }

    /// Whether a batch of `rows` rows is sent now, without waiting out the delay.
    pub fn sends_at(&self, rows: usize) -> bool {
        rows >= self.max_batch_size || self.preferred_batch_sizes.contains(&rows)
    }
}
