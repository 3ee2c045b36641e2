//! What the server counts and keeps about the work it does, shared by every layer that
//! reports it: the per-model-version inference counters behind the V2 statistics
//! extension (`stats`), the Prometheus metrics (`metrics`), and the per-entity rings of
//! handler and build output tenants read (`logs`).

pub mod logs;
pub mod metrics;
pub mod stats;

pub use logs::{EntityLogs, LogBook, LogLine, LogRing};
pub use stats::{ModelStats, StageSnapshot, StatsSnapshot, StatsTable};
