//! `sandserve.toml`, the package manifest: its schema, parsing, and what the host derives
//! from it (request limits, graph options, the guest-load policy, the files it names).
//! The rules a parsed manifest must satisfy live in `validate.rs`.

use super::batching::Batching;
use super::{validate, PackageError};
use crate::inference::{Encoding, GraphOptions, GuestLoadPolicy, Optimization, Precision, Target};
use crate::runtime::{ElementType, RequestLimits};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A validated `sandserve.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name: 1..=64 characters of `[a-z0-9_-]`, starting with a letter or digit.
    pub name: String,
    /// Free text shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Path of the handler component inside the package.
    pub handler: String,
    /// Whether the handler receives the raw HTTP body.
    #[serde(default)]
    pub raw_body: bool,
    /// Per-request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Named graphs the host loads for the handler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graphs: Vec<GraphEntry>,
    /// Whether the guest may load graph bytes of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_load: Option<GuestLoad>,
    /// The model signature (MLflow style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// Example requests (`[[examples]]`), run by `sandserve invoke PACKAGE --example NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
}

/// `[[examples]]`: a named request body the model answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// 1-64 of `a-z A-Z 0-9 _ . -`, unique.
    pub name: String,
    /// The request body: a JSON object in any query format (Databricks or KServe V2).
    pub request: String,
}

/// `[limits]`: the sandbox limits of every request to this model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline per request, in milliseconds (1..=300000).
    pub timeout_ms: u64,
    /// Largest linear memory, in MiB (1..=4096).
    pub memory_mib: u64,
    /// Instruction budget; `None` means unmetered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Largest response, in MiB (1..=1024).
    pub max_output_mib: u64,
    /// Most requests running at once, per served entity (1..=1024).
    pub max_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            memory_mib: 256,
            fuel: None,
            max_output_mib: 32,
            max_concurrency: 8,
        }
    }
}

impl Limits {
    /// The runtime limits of one request (table and instance limits keep their defaults).
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            timeout: Duration::from_millis(self.timeout_ms),
            max_memory_bytes: mib_to_bytes(self.memory_mib),
            fuel: self.fuel,
            max_output_bytes: mib_to_bytes(self.max_output_mib),
            ..RequestLimits::default()
        }
    }
}

/// `[[graphs]]`: one named graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphEntry {
    /// Name the guest loads it by: `[a-zA-Z0-9_.-]{1,64}`, unique in the manifest.
    pub name: String,
    /// Engine.
    pub encoding: Encoding,
    /// Model files: one `.onnx`; or for OpenVINO one `.onnx`, or IR `.xml` then `.bin`.
    pub files: Vec<String>,
    /// Execution target (default `cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Threads one run may use inside the engine (default 1; 0 = engine default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<usize>,
    /// Graph optimisation level (default `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization: Option<Optimization>,
    /// OpenVINO precision (default `f32`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Dynamic batching across requests (`"auto"` or a table; default off).
    #[serde(
        default,
        deserialize_with = "super::batching::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub batching: Option<Batching>,
}

impl GraphEntry {
    /// Load options, with [`GraphOptions::default`] for whatever the manifest leaves out.
    pub fn options(&self) -> GraphOptions {
        let defaults = GraphOptions::default();
        GraphOptions {
            target: self.target.unwrap_or(defaults.target),
            intra_op_threads: self.intra_op_threads.unwrap_or(defaults.intra_op_threads),
            optimization: self.optimization.unwrap_or(defaults.optimization),
            precision: self.precision.unwrap_or(defaults.precision),
            batching: self.batching.as_ref().map(Batching::policy),
        }
    }
}

/// `[guest_load]`: the guest may pass graph bytes of its own to `wasi:nn/graph.load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestLoad {
    /// Largest total graph size the guest may load, in MiB (1..=1024).
    #[serde(default = "GuestLoad::default_max_mib")]
    pub max_mib: u64,
}

impl GuestLoad {
    fn default_max_mib() -> u64 {
        16
    }
}

/// `[signature]`: the model's inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Inputs, in order (at least one).
    pub inputs: Vec<TensorSignature>,
    /// Outputs, in order.
    #[serde(default)]
    pub outputs: Vec<TensorSignature>,
}

/// One tensor of a signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSignature {
    /// Tensor name, unique among the inputs (or outputs).
    pub name: String,
    /// KServe V2 datatype name (`FP32`, `INT64`, `BYTES`, ...).
    pub datatype: String,
    /// Dimensions; `-1` is a free dimension.
    pub shape: Vec<i64>,
}

impl TensorSignature {
    /// The element type; always `Some` in a manifest from [`Manifest::parse`].
    pub fn element_type(&self) -> Option<ElementType> {
        crate::runtime::element_type_from_v2(&self.datatype)
    }
}

impl Manifest {
    /// Parses and validates `sandserve.toml`. The error names the offending field.
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let manifest: Self = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        validate::check(&manifest)?;
        Ok(manifest)
    }

    /// Every path in the package the manifest names: the handler, then each graph's files
    /// in order.
    pub fn files(&self) -> Vec<&str> {
        std::iter::once(self.handler.as_str())
            .chain(
                self.graphs
                    .iter()
                    .flat_map(|g| g.files.iter().map(String::as_str)),
            )
            .collect()
    }

    /// Whether, and how much, the guest may load graph bytes of its own.
    pub fn guest_load_policy(&self) -> GuestLoadPolicy {
        match &self.guest_load {
            None => GuestLoadPolicy::Denied,
            Some(g) => GuestLoadPolicy::Allowed {
                max_bytes: mib_to_bytes(g.max_mib),
            },
        }
    }
}

fn mib_to_bytes(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}

/// A TOML or schema error, placed by line and column.
fn syntax_error(text: &str, error: &toml::de::Error) -> PackageError {
    let field = match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}")
        }
        None => "(whole file)".to_owned(),
    };
    PackageError::manifest(field, error.message().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGITS: &str = r#"
        name = "digits"
        description = "8x8 digits"
        handler = "digits.wasm"
        [limits]
        timeout_ms = 2000
        memory_mib = 128
        fuel = 5000000
        max_output_mib = 4
        [[graphs]]
        name = "digits"
        encoding = "onnx"
        files = ["model/digits.onnx"]
        target = "gpu-or-cpu"
        intra_op_threads = 2
        [[graphs]]
        name = "ir.v1"
        encoding = "openvino"
        files = ["ir/model.xml", "ir/model.bin"]
        precision = "bf16"
        optimization = "basic"
        [guest_load]
        max_mib = 8
        [signature]
        inputs = [ { name = "images", datatype = "FP32", shape = [-1, 64] } ]
        outputs = [ { name = "label", datatype = "INT64", shape = [-1] } ]
    "#;

    #[test]
    fn full_manifest_parses() {
        let m = Manifest::parse(DIGITS).unwrap();
        assert_eq!(m.name, "digits");
        assert_eq!(
            m.files(),
            [
                "digits.wasm",
                "model/digits.onnx",
                "ir/model.xml",
                "ir/model.bin"
            ]
        );
        let limits = m.limits.request_limits();
        assert_eq!(limits.timeout, Duration::from_millis(2000));
        assert_eq!(limits.max_memory_bytes, 128 << 20);
        assert_eq!(limits.fuel, Some(5_000_000));
        assert_eq!(limits.max_output_bytes, 4 << 20);
        assert_eq!(limits.max_instances, RequestLimits::default().max_instances);
        assert_eq!(m.limits.max_concurrency, 8);
        let onnx = m.graphs[0].options();
        assert_eq!(onnx.target, Target::GpuOrCpu);
        assert_eq!(onnx.intra_op_threads, 2);
        assert_eq!(onnx.optimization, Optimization::All);
        let ov = m.graphs[1].options();
        assert_eq!(ov.target, Target::Cpu);
        assert_eq!(ov.precision, Precision::Bf16);
        assert_eq!(ov.optimization, Optimization::Basic);
        assert_eq!(
            m.guest_load_policy(),
            GuestLoadPolicy::Allowed { max_bytes: 8 << 20 }
        );
        let sig = m.signature.as_ref().unwrap();
        assert_eq!(sig.inputs[0].element_type(), Some(ElementType::F32));
        assert_eq!(sig.outputs[0].shape, [-1]);
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = Manifest::parse("name = \"echo\"\nhandler = \"echo.wasm\"\n").unwrap();
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.limits.request_limits(), RequestLimits::default());
        assert_eq!(m.guest_load_policy(), GuestLoadPolicy::Denied);
        assert!(!m.raw_body);
        assert_eq!(m.files(), ["echo.wasm"]);
    }

    #[test]
    fn syntax_and_schema_errors_are_placed() {
        let err = Manifest::parse("name = \"a\"\nhandler = \"a.wasm\"\ncolour = 1\n").unwrap_err();
        let PackageError::BadManifest { field, problem } = err else {
            panic!("{err:?}");
        };
        assert_eq!(field, "line 3, column 1");
        assert!(problem.contains("unknown field `colour`"), "{problem}");

        let err = Manifest::parse("handler = \"a.wasm\"\n").unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");

        let err = Manifest::parse("name = \"a\"\nhandler = \"a.wasm\"\n[limits]\nmemory = 3\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `memory`"), "{err}");

        let err = Manifest::parse(
            "name = \"a\"\nhandler = \"a.wasm\"\n[[graphs]]\nname = \"g\"\nencoding = \"tflite\"\nfiles = [\"g\"]\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `tflite`"),
            "{err}"
        );
    }

    #[test]
    fn example_manifests_parse() {
        let echo = Manifest::parse(include_str!("../../../examples/echo/sandserve.toml")).unwrap();
        assert_eq!(echo.name, "echo");
        assert_eq!(echo.files(), ["echo.wasm"]);
        assert_eq!(echo.limits.timeout_ms, 5000);
        assert_eq!(echo.limits.memory_mib, 64);
        assert!(echo.signature.is_none());

        let digits =
            Manifest::parse(include_str!("../../../examples/digits/sandserve.toml")).unwrap();
        assert_eq!(digits.files(), ["digits.wasm", "model/digits.onnx"]);
        assert_eq!(digits.graphs[0].options(), GraphOptions::default());
        let sig = digits.signature.unwrap();
        assert_eq!(sig.inputs[0].shape, [-1, 64]);
        assert_eq!(
            sig.outputs
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["label", "probabilities"]
        );
    }
}
