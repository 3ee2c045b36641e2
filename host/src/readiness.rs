//! Whether this node should get traffic (`GET /readyz`): every start-up condition met and
//! not draining. A condition is a [`Gate`] its owner opens: `startup` (the server's parts
//! built and its endpoints restored; opened just before it accepts connections), and in
//! cluster mode whatever the cluster layer registers (membership caught up, owned versions
//! warm). Draining (SIGTERM) closes readiness at once and for good, so a load balancer
//! stops sending new requests while the ones in flight finish.
//!
//! Liveness is another question (`GET /health`): a node that is draining or still warming
//! up is alive and must not be restarted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Name of the gate the server opens once it is built and about to accept connections.
pub const STARTUP: &str = "startup";

/// Name of the gate a cluster node opens once the endpoint configs it owns are loaded (at
/// start-up only: a node that gains configs later, as nodes come and go, stays ready and
/// serves them, loading on demand, while they warm).
pub const OWNED_WARM: &str = "owned_versions_warm";

/// The node's readiness: named gates, and whether it is draining.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
    gates: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
}

/// One condition of readiness, closed until its owner opens it.
#[derive(Debug, Clone)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Marks the condition met (`true`) or not met again (`false`).
    pub fn set(&self, met: bool) {
        self.0.store(met, Ordering::Release);
    }
}

/// What `GET /readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyState {
    /// Ready for traffic.
    Ready,
    /// Still waiting for these conditions.
    Waiting(Vec<&'static str>),
    /// Shutting down: finishing requests in flight, taking no new ones.
    Draining,
}

impl Readiness {
    /// Readiness with no gates yet (ready until one is registered).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers the condition `name`, not met until the returned gate is opened.
    pub fn gate(&self, name: &'static str) -> Gate {
        let flag = Arc::new(AtomicBool::new(false));
        self.gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, flag.clone()));
        Gate(flag)
    }

    /// From now on the node is not ready (shutdown has begun).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The node's state now.
    pub fn state(&self) -> ReadyState {
        if self.is_draining() {
            return ReadyState::Draining;
        }
        let waiting: Vec<&'static str> = self
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, met)| !met.load(Ordering::Acquire))
            .map(|(name, _)| *name)
            .collect();
        if waiting.is_empty() {
            ReadyState::Ready
        } else {
            ReadyState::Waiting(waiting)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_every_gate_open_and_not_draining() {
        let readiness = Readiness::new();
        assert_eq!(readiness.state(), ReadyState::Ready);
        let startup = readiness.gate(STARTUP);
        let warm = readiness.gate("warm");
        assert_eq!(
            readiness.state(),
            ReadyState::Waiting(vec![STARTUP, "warm"])
        );
        startup.set(true);
        assert_eq!(readiness.state(), ReadyState::Waiting(vec!["warm"]));
        warm.set(true);
        assert_eq!(readiness.state(), ReadyState::Ready);
        warm.set(false);
        assert_eq!(readiness.state(), ReadyState::Waiting(vec!["warm"]));
        warm.set(true);
        readiness.start_draining();
        assert_eq!(readiness.state(), ReadyState::Draining);
        // Draining is for good.
        startup.set(true);
        assert_eq!(readiness.state(), ReadyState::Draining);
    }
}
