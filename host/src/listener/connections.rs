//! The table of open connections: a hard cap, and who gives way when it is reached.
//!
//! Why not just refuse past the cap: slowloris. An attacker without a token can fill any
//! cap with connections that send nothing, or half a header, and keep refilling it as the
//! header timeout closes them; refusing newcomers would then lock every tenant out. So at
//! the cap a newcomer evicts the connection that has been *idle* longest (no request in
//! flight: a keep-alive connection between requests, or one still sending its headers);
//! only when every connection is serving a request (each of which costs its sender a
//! token and counts against that tenant's limits) is the newcomer refused, at once.
//!
//! Each connection has a [`Connection`] state whose `in_flight` counter doubles as the
//! eviction lock: eviction swaps 0 for [`EVICTED`], and a request may only start while the
//! counter is not [`EVICTED`], so a connection is never closed under a request it accepted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// `in_flight` of a connection that has been chosen for eviction.
const EVICTED: i64 = -1;

/// One open connection's state, shared by its task and the table.
pub struct Connection {
    id: u64,
    /// Requests being served (response bodies included), or [`EVICTED`].
    in_flight: AtomicI64,
    /// When it last became idle, in ms since the table's start.
    idle_since_ms: AtomicU64,
    /// Requests it has started.
    requests: AtomicU64,
    /// Responses whose bodies are being sent.
    sending: AtomicI64,
    /// When a response body last moved, in ms since the table's start.
    sent_ms: AtomicU64,
    /// When it was admitted, in ms since the table's start.
    admitted_ms: u64,
    /// Wakes the connection's task when it is evicted.
    evicted: Notify,
    started: Instant,
}

impl Connection {
    /// Marks a request started; false when the connection is being evicted.
    pub fn begin_request(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != EVICTED).then_some(n + 1)
            })
            .inspect(|_| {
                self.requests.fetch_add(1, Ordering::AcqRel);
            })
            .is_ok()
    }

    /// Marks a response ready to send (its body starts moving).
    pub fn sending_started(&self) {
        self.sent_ms.store(self.now_ms(), Ordering::Release);
        self.sending.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks bytes as written to the client.
    pub fn sent_some(&self) {
        self.sent_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Marks a response body as done (sent or dropped).
    pub fn sending_ended(&self) {
        self.sending.fetch_sub(1, Ordering::AcqRel);
    }

    /// How long a response has been ready without its body moving, while one is: a client
    /// that does not read its answers (or an HTTP/2 peer that grants no window) would
    /// otherwise keep the connection busy, and unevictable, for ever.
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        (self.sending.load(Ordering::Acquire) > 0).then(|| {
            let since = self.sent_ms.load(Ordering::Acquire);
            std::time::Duration::from_millis(self.now_ms().saturating_sub(since))
        })
    }

    /// How long it has been open without starting a single request (`None` once it has).
    pub fn silent_for(&self) -> Option<std::time::Duration> {
        (self.requests.load(Ordering::Acquire) == 0).then(|| {
            std::time::Duration::from_millis(self.now_ms().saturating_sub(self.admitted_ms))
        })
    }

    /// Marks a request finished (its response body sent or dropped).
    pub fn end_request(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// How long it has had no request in flight, if it has none now.
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| {
            let since = self.idle_since_ms.load(Ordering::Acquire);
            std::time::Duration::from_millis(self.now_ms().saturating_sub(since))
        })
    }

    /// Resolves when the table has evicted this connection.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }

    /// Claims an idle connection for closing: true when it had no request in flight (and
    /// now can start none), false when it is busy.
    pub fn close_if_idle(&self) -> bool {
        self.in_flight
            .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The open connections, at most `cap` of them.
pub struct ConnectionTable {
    cap: usize,
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
}

/// A connection's place in the table; dropping it frees the place.
pub struct Admitted {
    table: Arc<ConnectionTable>,
    /// The connection's state.
    pub connection: Arc<Connection>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.lock().open.remove(&self.connection.id);
    }
}

impl ConnectionTable {
    /// A table for at most `cap` connections.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            started: Instant::now(),
            inner: Mutex::default(),
        })
    }

    /// Admits a new connection, evicting the longest-idle one at the cap; `None` when the
    /// table is full of connections that are all serving requests.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut inner = self.lock();
        if inner.open.len() >= self.cap {
            let mut idle: Vec<&Arc<Connection>> = inner
                .open
                .values()
                .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
                .collect();
            idle.sort_by_key(|c| c.idle_since_ms.load(Ordering::Acquire));
            let victim = idle.into_iter().find(|c| c.close_if_idle())?.clone();
            inner.open.remove(&victim.id);
            victim.evicted.notify_one();
            tracing::debug!(
                connection = victim.id,
                "connection cap reached: closed the longest-idle connection"
            );
        }
        inner.next_id += 1;
        let started_ms = self.started.elapsed().as_millis() as u64;
        let connection = Arc::new(Connection {
            id: inner.next_id,
            in_flight: AtomicI64::new(0),
            idle_since_ms: AtomicU64::new(started_ms),
            requests: AtomicU64::new(0),
            sending: AtomicI64::new(0),
            sent_ms: AtomicU64::new(started_ms),
            admitted_ms: started_ms,
            evicted: Notify::new(),
            started: self.started,
        });
        inner.open.insert(connection.id, connection.clone());
        Some(Admitted {
            table: self.clone(),
            connection,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_gives_way() {
        let table = ConnectionTable::new(2);
        let first = table.admit().expect("room");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = table.admit().expect("room");
        assert!(second.connection.begin_request());
        // Full: the idle first connection is closed for the newcomer.
        let third = table.admit().expect("an idle connection gives way");
        assert!(
            !first.connection.begin_request(),
            "an evicted connection starts nothing"
        );
        drop(first);
        assert_eq!(table.open(), 2);
        // A response that does not move is seen as stalled; one that moves is not.
        third.connection.sending_started();
        assert!(third.connection.stalled_for().is_some());
        third.connection.sending_ended();
        assert!(third.connection.stalled_for().is_none());
        // Now both are busy: the next newcomer is refused.
        assert!(third.connection.begin_request());
        assert!(table.admit().is_none());
        // A finished request makes its connection idle, and evictable, again.
        second.connection.end_request();
        assert!(second.connection.idle_for().is_some());
        assert!(table.admit().is_some());
        assert!(!second.connection.begin_request());
    }

    #[test]
    fn a_busy_connection_is_never_evicted() {
        let table = ConnectionTable::new(1);
        let only = table.admit().expect("room");
        assert!(only.connection.begin_request());
        assert!(table.admit().is_none());
        assert!(only.connection.idle_for().is_none());
        only.connection.end_request();
        assert!(table.admit().is_some());
    }
}
