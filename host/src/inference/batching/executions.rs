//! How many executions of each batch size a batched graph's image version ran, and where
//! their time went: what Triton reports as a model's `batch_stats` and what its
//! `execution_count` is made of (one execution can answer several requests).
//!
//! Counted per tenant and image version (`tenant/model@version`, the label batches carry)
//! in a table that lives as long as the server, like the version's other counters
//! (`telemetry::stats`): a version released after idling and loaded again counts on. A
//! batch of a shared version that holds several tenants' requests counts, for each
//! tenant, as one execution of its own rows: a tenant's statistics never show that
//! another tenant's requests were there.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Counters of one batch size.
#[derive(Debug, Default, Clone, Copy)]
struct SizeCounters {
    executions: u64,
    requests: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

/// One tenant's executions of one image version, by batch size (rows).
#[derive(Debug, Default)]
struct Executions {
    sizes: BTreeMap<usize, SizeCounters>,
}

/// How long one run's stages took: joining the requests' inputs into one tensor each,
/// the graph's run, and cutting the outputs into each request's slice.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTimes {
    /// Joining the inputs (zero for a request run alone).
    pub input: Duration,
    /// The graph's run.
    pub infer: Duration,
    /// Cutting the outputs (zero for a request run alone).
    pub output: Duration,
}

/// One tenant's part of one run: its rows along the batch dimension (Triton's batch
/// size) and its requests.
#[derive(Debug, Clone, Copy)]
struct Execution {
    rows: usize,
    requests: usize,
    times: RunTimes,
}

/// The executions of one batch size, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchSizeSnapshot {
    /// Rows along the batch dimension.
    pub batch_size: usize,
    /// Executions of that size.
    pub executions: u64,
    /// Requests they answered.
    pub requests: u64,
    /// Nanoseconds spent joining inputs, all together.
    pub input_ns: u64,
    /// Nanoseconds spent running the graph.
    pub infer_ns: u64,
    /// Nanoseconds spent cutting outputs.
    pub output_ns: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Executions {
    /// Counts one execution.
    fn record(&mut self, run: Execution) {
        let c = self.sizes.entry(run.rows).or_default();
        c.executions += 1;
        c.requests += run.requests as u64;
        c.input_ns = c.input_ns.saturating_add(nanos(run.times.input));
        c.infer_ns = c.infer_ns.saturating_add(nanos(run.times.infer));
        c.output_ns = c.output_ns.saturating_add(nanos(run.times.output));
    }

    /// Every batch size seen, smallest first.
    fn snapshot(&self) -> Vec<BatchSizeSnapshot> {
        self.sizes
            .iter()
            .map(|(&batch_size, c)| BatchSizeSnapshot {
                batch_size,
                executions: c.executions,
                requests: c.requests,
                input_ns: c.input_ns,
                infer_ns: c.infer_ns,
                output_ns: c.output_ns,
            })
            .collect()
    }
}

/// By image version label, then by the tenant whose requests ran. Looked up by borrowed
/// names, so that counting a run allocates nothing once both are known.
type Table = HashMap<String, HashMap<String, Executions>>;

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// The executions of `tenant` on `image` in `table`, made on first use (always `Some`).
fn executions<'t>(table: &'t mut Table, image: &str, tenant: &str) -> Option<&'t mut Executions> {
    if !table.contains_key(image) {
        table.insert(image.to_string(), HashMap::new());
    }
    let by_tenant = table.get_mut(image)?;
    if !by_tenant.contains_key(tenant) {
        by_tenant.insert(tenant.to_string(), Executions::default());
    }
    by_tenant.get_mut(tenant)
}

/// Counts one run on image version `image` (`owner/model@version`) that held requests of
/// `held` (each request's tenant, `None` for one off the guest-thread pool, which counts
/// for the owner, and its rows): for each tenant, one execution of its own rows.
pub fn record_run<'t>(
    image: &str,
    held: impl IntoIterator<Item = (Option<&'t str>, usize)>,
    times: RunTimes,
) {
    let owner = image.split('/').next().unwrap_or_default();
    let mut parts: Vec<(&str, Execution)> = Vec::with_capacity(2);
    for (tenant, rows) in held {
        let tenant = tenant.unwrap_or(owner);
        match parts.iter_mut().find(|(t, _)| *t == tenant) {
            Some((_, part)) => {
                part.rows += rows;
                part.requests += 1;
            }
            None => parts.push((
                tenant,
                Execution {
                    rows,
                    requests: 1,
                    times,
                },
            )),
        }
    }
    let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
    for (tenant, part) in parts {
        if let Some(executions) = executions(&mut table, image, tenant) {
            executions.record(part);
        }
    }
}

/// The executions of `tenant`'s requests on `model@version` as read now: its own model, or
/// `owner/model` shared with it (empty when none of its graphs batches, or none ran).
pub fn snapshot(tenant: &str, model: &str, version: u64) -> Vec<BatchSizeSnapshot> {
    let image = if model.contains('/') {
        format!("{model}@{version}")
    } else {
        format!("{tenant}/{model}@{version}")
    };
    let table = table().lock().unwrap_or_else(|p| p.into_inner());
    table
        .get(&image)
        .and_then(|by_tenant| by_tenant.get(tenant))
        .map(Executions::snapshot)
        .unwrap_or_default()
}

/// Drops a deleted version's counters (every tenant's).
pub fn forget(tenant: &str, model: &str, version: u64) {
    let image = format!("{tenant}/{model}@{version}");
    table()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&image);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_add_up_per_batch_size_and_version() {
        let times = |ns| RunTimes {
            input: Duration::from_nanos(ns),
            infer: Duration::from_nanos(10 * ns),
            output: Duration::from_nanos(2 * ns),
        };
        let image = "acme/executions-test@1";
        let (acme, globex) = (Some("acme"), Some("globex"));
        // A batch of acme's three requests (4 rows), one that also held two of globex's
        // (a shared version), one off the guest threads (the owner's), and one request alone.
        record_run(image, [(acme, 2), (acme, 1), (acme, 1)], times(5));
        record_run(
            image,
            [(acme, 2), (globex, 1), (None, 2), (globex, 1)],
            times(7),
        );
        record_run(image, [(acme, 1)], times(1));
        record_run("acme/executions-test@2", [(acme, 8)], times(1));
        // globex sees its own part only: one execution of its two rows.
        let theirs = snapshot("globex", "acme/executions-test", 1);
        assert_eq!(
            (theirs.len(), theirs[0].batch_size, theirs[0].requests),
            (1, 2, 2)
        );
        let read = snapshot("acme", "executions-test", 1);
        assert_eq!(
            read,
            vec![
                BatchSizeSnapshot {
                    batch_size: 1,
                    executions: 1,
                    requests: 1,
                    input_ns: 1,
                    infer_ns: 10,
                    output_ns: 2
                },
                BatchSizeSnapshot {
                    batch_size: 4,
                    executions: 2,
                    requests: 5,
                    input_ns: 12,
                    infer_ns: 120,
                    output_ns: 24
                },
            ]
        );
        forget("acme", "executions-test", 1);
        assert!(snapshot("acme", "executions-test", 1).is_empty());
        assert!(snapshot("globex", "acme/executions-test", 1).is_empty());
        assert_eq!(snapshot("acme", "executions-test", 2).len(), 1);
    }
}
