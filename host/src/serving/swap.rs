//! Changes of an endpoint record as a compare-and-swap: read, edit, write only if nobody
//! wrote in between (another node, with shared metadata; the manager's lock already keeps
//! this node's own writers apart). When someone did, the change is decided afresh on what
//! they wrote: of two nodes that start an update of one endpoint at once, exactly one
//! publishes the next config version and the other is refused (409, an update runs).

use super::{EndpointManager, ServingError};
use crate::registry::{EndpointRecord, RegistryError};

/// How many times a change is tried on a record others keep changing.
const ATTEMPTS: usize = 8;

impl EndpointManager {
    /// Reads endpoint `tenant`/`name`, lets `edit` change it (`Some`), leave it (`None`) or
    /// refuse (an error), and writes it back with
    /// [`crate::registry::EndpointStore::swap_endpoint`]; on a conflict, again from a fresh
    /// read. Returns the record written and what `edit` returned, `None` when it left the
    /// record. Call with the records lock held.
    pub(super) fn change_record_if<T>(
        &self,
        tenant: &str,
        name: &str,
        mut edit: impl FnMut(&mut EndpointRecord) -> Result<Option<T>, ServingError>,
    ) -> Result<Option<(EndpointRecord, T)>, ServingError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.registry.endpoint(tenant, name)?;
            let mut next = current.clone();
            let Some(out) = edit(&mut next)? else {
                return Ok(None);
            };
            match self.registry.swap_endpoint(&current, &next) {
                Ok(()) => return Ok(Some((next, out))),
                Err(RegistryError::Conflict(_)) if attempt < ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`EndpointManager::change_record_if`] for an edit that always changes the record.
    pub(super) fn change_record<T>(
        &self,
        tenant: &str,
        name: &str,
        mut edit: impl FnMut(&mut EndpointRecord) -> Result<T, ServingError>,
    ) -> Result<(EndpointRecord, T), ServingError> {
        self.change_record_if(tenant, name, |record| edit(record).map(Some))?
            .ok_or_else(|| ServingError::Internal("an endpoint change was not recorded".into()))
    }
}
