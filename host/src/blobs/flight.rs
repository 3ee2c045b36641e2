//! Single-flight: however many callers want the same missing blob at once, one fetches it
//! and the others wait for its outcome (the blob, or a copy of its error), so N cold
//! requests for one model make one GET.

use super::{BlobError, Digest};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct Flight {
    outcome: Mutex<Option<Result<(), BlobError>>>,
    done: Condvar,
}

/// Fetches in progress, by blob.
#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<Digest, Arc<Flight>>>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

/// Publishes the leader's outcome even when its work panics, and retires the flight.
struct Landing<'a> {
    flights: &'a Flights,
    digest: &'a Digest,
    flight: Arc<Flight>,
    outcome: Option<Result<(), BlobError>>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Err(BlobError::Unavailable(
                "the fetch of this blob failed".into(),
            ))
        });
        self.flights
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.digest);
        *self
            .flight
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.flight.done.notify_all();
    }
}

impl Flights {
    /// Runs `work` for `digest` unless a call for it is already running, in which case
    /// this waits for that call's outcome instead.
    pub(crate) fn run(
        &self,
        digest: &Digest,
        work: impl FnOnce() -> Result<(), BlobError>,
    ) -> Result<(), BlobError> {
        let (flight, leader) = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match running.get(digest) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight::default());
                    running.insert(digest.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        if leader {
            let mut landing = Landing {
                flights: self,
                digest,
                flight,
                outcome: None,
            };
            let result = work();
            landing.outcome = Some(result.as_ref().map(|_| ()).map_err(BlobError::duplicate));
            return result;
        }
        let mut outcome = flight.outcome.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = outcome.as_ref() {
                return result.as_ref().map(|_| ()).map_err(BlobError::duplicate);
            }
            outcome = flight.done.wait(outcome).unwrap_or_else(|p| p.into_inner());
        }
    }
}
