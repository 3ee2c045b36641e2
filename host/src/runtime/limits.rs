//! Per-request resource limits and the limiter that enforces them inside a `Store`.

use super::MemoryBudget;
use std::sync::Arc;
use std::time::Duration;

/// Hard limits for one request's sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Wall-clock deadline for the whole call (instantiate + predict).
    pub timeout: Duration,
    /// Most linear memory one instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Most elements one table may hold.
    pub max_table_elements: usize,
    /// Most component and core instances one request may create.
    pub max_instances: usize,
    /// Instruction budget (fuel) when the runtime meters fuel; `None` means unlimited.
    pub fuel: Option<u64>,
    /// Largest response (sum of tensor data and names) a handler may return, in bytes.
    pub max_output_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_memory_bytes: 256 << 20,
            max_table_elements: 100_000,
            max_instances: 32,
            fuel: None,
            max_output_bytes: 32 << 20,
        }
    }
}

/// Which limit a guest ran into, recorded so that the resulting trap can be reported as
/// the limit it really was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A `memory.grow` past `max_memory_bytes`.
    Memory {
        /// Size the guest asked for.
        requested: usize,
    },
    /// A `table.grow` past `max_table_elements`.
    Table,
    /// A `memory.grow` the server's memory budget could not hold.
    Budget {
        /// Bytes the growth needed.
        requested: usize,
    },
}

/// `wasmtime::ResourceLimiter` for one store: denies growth past the request's limits or
/// the server's memory budget, and remembers the first denial. What it charged to the
/// budget is given back when the store (and with it the limiter) is dropped.
#[derive(Debug)]
pub struct RequestLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    hit: Option<LimitHit>,
    budget: Arc<MemoryBudget>,
    /// Bytes charged to the budget so far.
    charged: usize,
    /// The last charge, given back if wasmtime then fails the growth.
    last_charge: usize,
}

impl Drop for RequestLimiter {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

impl RequestLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: &RequestLimits, budget: Arc<MemoryBudget>) -> Self {
        Self {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements,
            max_instances: limits.max_instances,
            hit: None,
            budget,
            charged: 0,
            last_charge: 0,
        }
    }

    /// The first limit the guest ran into, if any.
    pub fn hit(&self) -> Option<LimitHit> {
        self.hit
    }
}

impl wasmtime::ResourceLimiter for RequestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.hit
                .get_or_insert(LimitHit::Memory { requested: desired });
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        tracing::trace!(
            current,
            desired,
            budget_used = self.budget.used(),
            "memory growing"
        );
        if !self.budget.try_charge(more) {
            self.hit.get_or_insert(LimitHit::Budget { requested: more });
            return Ok(false);
        }
        self.charged += more;
        self.last_charge = more;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.budget.release(self.last_charge);
        self.charged -= self.last_charge;
        self.last_charge = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.hit.get_or_insert(LimitHit::Table);
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn memories(&self) -> usize {
        self.max_instances
    }

    fn tables(&self) -> usize {
        self.max_instances.saturating_mul(4)
    }
}
