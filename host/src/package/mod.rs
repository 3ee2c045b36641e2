//! Model packages: the archive a tenant uploads to publish a model, how the host reads
//! and checks it, and how `sandserve package` builds one.
//!
//! # The package format
//!
//! A package is a **tar archive**, optionally **gzip-compressed** (`.tar` or `.tar.gz`;
//! the host recognises gzip by its magic bytes, whatever the file is called). It holds:
//!
//! 1. `sandserve.toml`, the manifest, as the **first entry** (a regular file, at most
//!    1 MiB, UTF-8);
//! 2. exactly the files the manifest names: the handler component and each graph's model
//!    files, at the paths the manifest gives. Directories may appear and are ignored.
//!
//! Anything else is refused, with an error that names the entry: files the manifest does
//! not name, a file twice, a named file missing, symbolic or hard links, devices and
//! fifos, absolute paths, and paths with `..`. A package may unpack to at most 4 GiB and
//! hold at most 10 000 entries (the host may set lower limits). A gzip-compressed package
//! may inflate to at most 100 times its compressed size once past its first 64 MiB; a
//! package whose files compress better than that is uploaded as an uncompressed `.tar`.
//! The handler component may be at most 256 MiB.
//!
//! Build packages with `sandserve package DIR -o NAME.tar.gz`: it builds the handler when
//! `DIR` has a `Cargo.toml` (cargo, `wasm32-wasip2`) or is a Python project (`app.py`,
//! componentize-py; see docs/handlers.md), puts `sandserve.toml` first, and writes the same
//! bytes for the same inputs. `sandserve package --model model.onnx --signature sig.toml
//! -o NAME.tar.gz` packs a model with no handler code: the manifest it writes names the
//! built-in generic handler (`generic-handler.wasm`) and the graph `model`.
//!
//! # `sandserve.toml`
//!
//! ```toml
//! name = "digits"            # required: 1-64 of a-z 0-9 _ -, starting with a letter or digit
//! description = "..."        # optional
//! handler = "digits.wasm"    # required: path of the handler component in the package
//! raw_body = false           # optional: the handler also receives the raw HTTP body
//!
//! [limits]                   # optional, each field optional
//! timeout_ms = 10000         # 1..=300000, per request
//! memory_mib = 256           # 1..=4096, linear memory
//! fuel = 1000000000          # instruction budget; leave out for unmetered
//! max_output_mib = 32        # 1..=1024, largest response
//! max_concurrency = 8        # 1..=1024, requests at once per served model
//!
//! [[graphs]]                 # zero or more named graphs, loaded once per version
//! name = "digits"            # 1-64 of a-z A-Z 0-9 _ . -, unique; the guest loads it by this
//! encoding = "onnx"          # "onnx" or "openvino"
//! files = ["model/digits.onnx"]  # onnx: one file; openvino: one .onnx, or .xml then .bin
//! target = "cpu"             # optional: "cpu", "gpu" or "gpu-or-cpu"
//! intra_op_threads = 1       # optional (0 = engine default)
//! optimization = "all"       # optional: "disabled", "basic", "extended", "all"
//! precision = "f32"          # optional (OpenVINO): "f32", "bf16", "f16"
//! [graphs.batching]          # optional: dynamic batching across requests; `batching = "auto"` takes every default
//! batch_dimension = 0        # 0..=7: the dimension rows are counted along (free in every input and output)
//! max_batch_size = 32        # 1..=1024 rows in one batch
//! max_delay_us = 2000        # 1..=100000: longest the first request of a batch waits for others
//! preferred_batch_sizes = [] # sizes sent at once, without waiting out the delay (increasing, 2..=max_batch_size)
//! max_batch_mib = 64         # 1..=1024: input bytes the graph's open batches may hold together
//! max_running_batches = 1    # 1..=64: batches running at once (default: half the host's CPUs, at least 1)
//!
//! [guest_load]               # optional: the guest may load ONNX bytes itself
//! max_mib = 16               # 1..=1024
//!
//! [signature]                # optional, MLflow-style; datatypes are KServe V2 names
//! inputs = [ { name = "images", datatype = "FP32", shape = [-1, 64] } ]
//! outputs = [ { name = "label", datatype = "INT64", shape = [-1] } ]
//!
//! [[examples]]               # optional, at most 16: requests `sandserve invoke --example` runs
//! name = "two-rows"          # 1-64 of a-z A-Z 0-9 _ . -, unique
//! request = '{"instances": [[0, 1, 2]]}'  # a JSON object in any query format, <= 64 KiB
//! ```
//!
//! Every path the manifest names is relative to the package root, uses `/` between
//! folders, has no `.`, `..` or empty components, is at most 255 bytes, and is named once.
//! Unknown keys are errors, so a typo does not go unnoticed.
//!
//! # Dynamic batching
//!
//! A graph with `batching` set batches the `compute` calls of concurrent requests: the first
//! request to call `compute` opens a batch and waits up to `max_delay_us` for requests whose
//! inputs have the same names, types and dimensions (apart from `batch_dimension`); then the
//! host joins their inputs along that dimension, runs the graph once, and hands each request
//! its own rows of every output. A batch is sent at once when it holds `max_batch_size` rows
//! or reaches one of `preferred_batch_sizes`, and also as soon as every request of the image
//! version that is running (admitted to an entity, and not yet answered by this graph) is in
//! a batch: nobody else can join, so a lone request runs at once instead of waiting out the
//! delay. At most `max_running_batches` batches of the graph run at once: a batch that is
//! ready while that many run waits for one to end and takes more requests meanwhile (up to
//! `max_batch_size`), as Triton's dynamic batcher does while its model instances are busy,
//! so the model's own run time paces the batches and they fill. With one running batch, a
//! graph may give the batch every core (`intra_op_threads`) while the next one fills
//! (docs/benchmarks.md, "One batch at a time"). The handler does not change: each sandbox still
//! sees only its own tensors. Batching spans every request of the image version (every
//! entity and endpoint that serves it); it spans tenants only for a version its owner shares (see `PATCH /api/2.0/models/{name}/versions/{v}` in api.md).
//! A batch holds requests that are running at the same time, so one tenant's requests in a
//! batch are at most the guest threads it may hold at once (`--tenant-guest-threads`, default
//! two per CPU and at least 4; see docs/runtime.md): with the default, a 2-CPU server batches at
//! most 4 requests of one tenant whatever `max_batch_size` says. Raise it on the server for
//! bigger batches (the batching benchmark runs with 32). `GET /v2/models/{name}/stats` shows
//! the batch sizes reached (`batch_stats`).
//!
//! Requests that are never held, but run alone at once as without batching: one whose inputs
//! the graph refuses (it gets its own 400), one whose deadline would pass before the batch is
//! sent and run (counting one more run when every running slot is taken), one with more rows than `max_batch_size`, one that would take the graph's
//! open batches beyond `max_batch_mib` of inputs, and one running inline on a server worker
//! (docs/runtime.md). When a batched run fails, every request in it runs again alone and gets
//! its own answer. Every input and output of the graph must have a free (`-1`) dimension
//! `batch_dimension`, or the upload is refused saying which does not; the outputs' rows must
//! follow the inputs' (row `i` of an output depends on row `i` of the inputs only), which is
//! the model author's promise, as with any batching server. Batching works on both engines
//! (`onnx` and `openvino`).

mod archive;
mod batching;
mod budget;
mod build;
mod error;
mod manifest;
mod pack;
mod paths;
mod sniff;
mod validate;

pub use archive::{
    unpack, Sink, UnpackLimits, Unpacked, DEFAULT_MAX_COMPRESSION_RATIO, MAX_HANDLER_BYTES,
    MAX_MANIFEST_BYTES, RATIO_GRACE_BYTES,
};
pub use batching::Batching;
pub use build::build_handler;
pub use error::PackageError;
pub use manifest::{Example, GraphEntry, GuestLoad, Limits, Manifest, Signature, TensorSignature};
pub use pack::{pack, package_dir, PackSummary};
pub use paths::{MANIFEST_PATH, MAX_PATH_BYTES};

#[cfg(test)]
mod docs_tests {
    /// `docs/packages.md` carries this module's documentation; keep them equal.
    #[test]
    fn docs_packages_md_matches_the_module_documentation() {
        let source = include_str!("mod.rs");
        let doc: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .skip(3)
            .collect();
        let markdown = include_str!("../../../docs/packages.md");
        assert!(
            markdown.contains(doc.join("\n").trim()),
            "docs/packages.md drifted from host/src/package/mod.rs"
        );
    }
}
