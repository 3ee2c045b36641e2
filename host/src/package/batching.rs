//! `[graphs.batching]` in `sandserve.toml`: the schema of a graph's dynamic batching
//! (`batching = "auto"` or a table), its rules, and the [`BatchPolicy`] the host runs it
//! with.

use super::PackageError;
use crate::inference::{
    default_running_batches, BatchPolicy, DEFAULT_MAX_BATCH_MIB, DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_DELAY_US,
};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Largest `batch_dimension`.
const MAX_BATCH_DIMENSION: usize = 7;
/// Largest `max_batch_size`.
const MAX_BATCH_SIZE: usize = 1024;
/// Longest `max_delay_us` (100 ms).
const MAX_DELAY_US: u64 = 100_000;
/// Most `preferred_batch_sizes`.
const MAX_PREFERRED: usize = 16;
/// Largest `max_batch_mib`.
const MAX_BATCH_MIB: u64 = 1024;
/// Largest `max_running_batches`.
const MAX_RUNNING_BATCHES: usize = 64;

/// A graph's batching settings; `batching = "auto"` is this with every field left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// The dimension of every input and output that counts rows (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_dimension: Option<usize>,
    /// Most rows in one batch (default 32, 1..=1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    /// Longest the first request waits for others, in microseconds (default 2000,
    /// 1..=100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_us: Option<u64>,
    /// Batch sizes sent as soon as reached (increasing, each at most `max_batch_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_batch_sizes: Option<Vec<usize>>,
    /// Most input bytes the graph's open batches hold together, in MiB (default 64,
    /// 1..=1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_mib: Option<u64>,
    /// Most batches of the graph running at once (default half the host's CPUs, at least
    /// one; 1..=64). A ready batch waits for a running one to end, and keeps filling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_batches: Option<usize>,
}

/// Reads `"auto"` or a table.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Batching>, D::Error> {
    struct AutoOrTable;
    impl<'de> Visitor<'de> for AutoOrTable {
        type Value = Batching;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("\"auto\" or a table of batching settings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Batching, E> {
            match v {
                "auto" => Ok(Batching::default()),
                other => Err(E::custom(format!(
                    "batching must be \"auto\" or a table, got \"{other}\""
                ))),
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Batching, A::Error> {
            Batching::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(AutoOrTable).map(Some)
}

impl Batching {
    /// Checks the settings of `graphs[i].batching`; the error names the field.
    pub(super) fn check(&self, i: usize) -> Result<(), PackageError> {
        let field = |name: &str| format!("graphs[{i}].batching.{name}");
        let bad = |name: &str, problem: String| Err(PackageError::manifest(field(name), problem));
        let policy = self.policy();
        if policy.batch_dimension > MAX_BATCH_DIMENSION {
            return bad(
                "batch_dimension",
                format!(
                    "must be at most {MAX_BATCH_DIMENSION}, got {}",
                    policy.batch_dimension
                ),
            );
        }
        if !(1..=MAX_BATCH_SIZE).contains(&policy.max_batch_size) {
            return bad(
                "max_batch_size",
                format!(
                    "must be between 1 and {MAX_BATCH_SIZE}, got {}",
                    policy.max_batch_size
                ),
            );
        }
        if !(1..=MAX_DELAY_US).contains(&policy.max_delay_us) {
            return bad(
                "max_delay_us",
                format!(
                    "must be between 1 and {MAX_DELAY_US} microseconds, got {}",
                    policy.max_delay_us
                ),
            );
        }
        if let Some(mib) = self.max_batch_mib {
            if !(1..=MAX_BATCH_MIB).contains(&mib) {
                return bad(
                    "max_batch_mib",
                    format!("must be between 1 and {MAX_BATCH_MIB} MiB, got {mib}"),
                );
            }
        }
        if let Some(n) = self.max_running_batches {
            if !(1..=MAX_RUNNING_BATCHES).contains(&n) {
                return bad(
                    "max_running_batches",
                    format!("must be between 1 and {MAX_RUNNING_BATCHES}, got {n}"),
                );
            }
        }
        let sizes = &policy.preferred_batch_sizes;
        if sizes.len() > MAX_PREFERRED {
            return bad(
                "preferred_batch_sizes",
                format!("holds {} sizes; at most {MAX_PREFERRED}", sizes.len()),
            );
        }
        if let Some(&s) = sizes.iter().find(|&&s| s < 2 || s > policy.max_batch_size) {
            return bad(
                "preferred_batch_sizes",
                format!(
                    "holds {s}; each size must be between 2 and max_batch_size ({})",
                    policy.max_batch_size
                ),
            );
        }
        if sizes.windows(2).any(|w| w[0] >= w[1]) {
            return bad(
                "preferred_batch_sizes",
                format!("must be strictly increasing, got {sizes:?}"),
            );
        }
        Ok(())
    }

    /// The policy the host runs, with defaults for what is left out.
    pub fn policy(&self) -> BatchPolicy {
        let mib = self.max_batch_mib.unwrap_or(DEFAULT_MAX_BATCH_MIB);
        BatchPolicy {
            batch_dimension: self.batch_dimension.unwrap_or(0),
            max_batch_size: self.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH_SIZE),
            max_delay_us: self.max_delay_us.unwrap_or(DEFAULT_MAX_DELAY_US),
            preferred_batch_sizes: self.preferred_batch_sizes.clone().unwrap_or_default(),
            max_batch_bytes: usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            max_running_batches: self
                .max_running_batches
                .unwrap_or_else(default_running_batches),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::package::{Manifest, PackageError};

    fn manifest(batching: &str) -> Result<Manifest, PackageError> {
        Manifest::parse(&format!(
            "name = \"m\"\nhandler = \"m.wasm\"\n[[graphs]]\nname = \"g\"\nencoding = \"onnx\"\n\
             files = [\"g.onnx\"]\n{batching}\n"
        ))
    }

    fn problem(batching: &str) -> (String, String) {
        match manifest(batching) {
            Err(PackageError::BadManifest { field, problem }) => (field, problem),
            other => panic!("{batching}: {other:?}"),
        }
    }

    #[test]
    fn auto_and_tables_parse_to_policies() {
        let auto = manifest("batching = \"auto\"").unwrap();
        let policy = auto.graphs[0].options().batching.unwrap();
        assert_eq!(policy, crate::inference::BatchPolicy::default());
        assert_eq!(policy.max_batch_size, 32);
        assert_eq!(policy.max_delay_us, 2000);

        let table = manifest(
            "[graphs.batching]\nbatch_dimension = 1\nmax_batch_size = 16\nmax_delay_us = 500\n\
             preferred_batch_sizes = [4, 8]\nmax_batch_mib = 2\nmax_running_batches = 3",
        )
        .unwrap();
        let policy = table.graphs[0].options().batching.unwrap();
        assert_eq!(policy.batch_dimension, 1);
        assert_eq!(policy.max_batch_size, 16);
        assert_eq!(policy.max_delay_us, 500);
        assert_eq!(policy.preferred_batch_sizes, [4, 8]);
        assert_eq!(policy.max_batch_bytes, 2 << 20);
        assert_eq!(policy.max_running_batches, 3);
        assert!(policy.sends_at(8) && policy.sends_at(16) && !policy.sends_at(5));

        let none = manifest("").unwrap();
        assert_eq!(none.graphs[0].options().batching, None);
        // What the registry stores reads back the same.
        let stored = toml::to_string(&table).unwrap();
        assert_eq!(Manifest::parse(&stored).unwrap(), table);
    }

    #[test]
    fn nonsense_is_refused_naming_the_field() {
        let (_, p) = problem("batching = \"yes\"");
        assert!(p.contains("\"auto\" or a table"), "{p}");
        let (_, p) = problem("batching = 3");
        assert!(p.contains("\"auto\" or a table"), "{p}");
        let (_, p) = problem("[graphs.batching]\nmax_wait = 3");
        assert!(p.contains("unknown field `max_wait`"), "{p}");
        for (table, field, says) in [
            ("max_batch_size = 0", "max_batch_size", "between 1 and 1024"),
            (
                "max_batch_size = 5000",
                "max_batch_size",
                "between 1 and 1024",
            ),
            ("max_delay_us = 0", "max_delay_us", "between 1 and 100000"),
            (
                "max_delay_us = 1000000",
                "max_delay_us",
                "between 1 and 100000",
            ),
            ("batch_dimension = 9", "batch_dimension", "at most 7"),
            ("max_batch_mib = 0", "max_batch_mib", "between 1 and 1024"),
            (
                "max_running_batches = 0",
                "max_running_batches",
                "between 1 and 64",
            ),
            (
                "preferred_batch_sizes = [8, 4]",
                "preferred_batch_sizes",
                "increasing",
            ),
            (
                "preferred_batch_sizes = [64]",
                "preferred_batch_sizes",
                "max_batch_size (32)",
            ),
            (
                "preferred_batch_sizes = [1]",
                "preferred_batch_sizes",
                "between 2",
            ),
        ] {
            let (f, p) = problem(&format!("[graphs.batching]\n{table}"));
            assert_eq!(f, format!("graphs[0].batching.{field}"), "{table}");
            assert!(p.contains(says), "{table}: {p}");
        }
    }
}
