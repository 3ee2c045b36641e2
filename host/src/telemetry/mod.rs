//! What the server counts about the work it does, kept in memory and shared by every
//! layer that reports it: the per-model-version inference counters behind the V2
//! statistics extension (`stats`). A metrics exporter reads the same counters.

pub mod stats;

pub use stats::{ModelStats, StageSnapshot, StatsSnapshot, StatsTable};
