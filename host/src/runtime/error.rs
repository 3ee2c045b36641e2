//! Everything that can go wrong loading or running a handler, as one typed error.

use std::time::Duration;
use thiserror::Error;

/// A failure to load or run a handler. The API layer maps each case to one HTTP status.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine could not be configured (a host setup problem, not a guest's).
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid WebAssembly component.
    #[error("not a valid WebAssembly component: {0}")]
    InvalidComponent(String),
    /// The component imports interfaces the host does not offer.
    #[error(
        "component imports `{}`, which sandserve does not offer; handlers may import only \
         wasi:nn, sandserve:handler/logging and the WASI p2 CLI interfaces",
        imports.join("`, `")
    )]
    ForbiddenImport {
        /// The offending import names.
        imports: Vec<String>,
    },
    /// The component does not export `sandserve:handler/handler` with the right type.
    #[error("component is not a sandserve handler: {0}")]
    NotAHandler(String),
    /// The host has no free sandbox slot right now (the pooling allocator is full).
    #[error("no free sandbox slot: {0}")]
    Exhausted(String),
    /// The call passed its wall-clock deadline.
    #[error("handler exceeded its {}ms timeout", timeout.as_millis())]
    Timeout {
        /// The deadline it ran into.
        timeout: Duration,
    },
    /// The guest tried to grow its memory past the limit.
    #[error(
        "handler exceeded its memory limit of {limit_bytes} bytes (asked for {requested_bytes})"
    )]
    MemoryLimit {
        /// The limit.
        limit_bytes: usize,
        /// What the guest asked for.
        requested_bytes: usize,
    },
    /// The server's memory budget could not hold the guest's memory right now.
    #[error(
        "the server's memory budget is in use by other requests (this one asked for \
         {requested_bytes} more bytes); retry shortly"
    )]
    MemoryBudget {
        /// What the guest asked for.
        requested_bytes: usize,
    },
    /// The guest tried to grow a table past the limit.
    #[error("handler exceeded its table limit of {limit} elements")]
    TableLimit {
        /// The limit.
        limit: usize,
    },
    /// The guest used up its instruction budget.
    #[error("handler used up its fuel budget of {fuel} instructions")]
    FuelExhausted {
        /// The budget.
        fuel: u64,
    },
    /// The guest overflowed its call stack.
    #[error("handler overflowed its call stack")]
    StackOverflow,
    /// The guest panicked.
    #[error("handler panicked: {message}")]
    GuestPanic {
        /// The panic message the guest printed.
        message: String,
    },
    /// Any other trap.
    #[error("handler trapped: {trap}")]
    Trap {
        /// What wasmtime reported.
        trap: String,
    },
    /// The handler's response is larger than allowed.
    #[error("handler returned {bytes} bytes of output, more than the {limit} allowed")]
    OutputTooLarge {
        /// Response size.
        bytes: usize,
        /// Limit.
        limit: usize,
    },
    /// The handler refused the request as malformed; the message is for the caller.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The handler reported a temporarily missing dependency.
    #[error("handler unavailable: {0}")]
    Unavailable(String),
    /// The handler reported an internal failure; the message is for the host log only.
    #[error("handler failed: {0}")]
    HandlerFailed(String),
}

impl RuntimeError {
    /// True when the request's sender caused the failure (HTTP 4xx), false when the
    /// handler or the host did (5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::InvalidInput(_))
    }
}
