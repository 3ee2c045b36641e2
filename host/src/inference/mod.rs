//! Inference behind wasi-nn: the native engines (ONNX Runtime, OpenVINO) loaded at run
//! time, our own wasi-nn backends over them, and the named graphs of an image version,
//! loaded once and shared by every instance of that version.
//!
//! A guest reaches only the graphs of its own image, by name (`load-by-name`). It may load
//! graph bytes of its own only when its manifest allows it, and then within a size limit.

mod batching;
mod context;
mod engines;
mod error;
mod gpu;
mod onnx;
mod openvino;
mod options;
mod self_contained;
mod stats;
mod types;

pub use batching::executions as batch_executions;
pub use batching::{
    default_running_batches, BatchPolicy, BatchStatsSnapshot, InFlightScope, RequestInFlight,
    DEFAULT_MAX_BATCH_MIB, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_DELAY_US,
};
pub use engines::{EngineSettings, EngineStatus, Engines};
pub use error::InferenceError;
pub use options::{Encoding, GraphOptions, Optimization, Precision, Target};
pub use self_contained::NotSelfContained;
pub use stats::{GraphStats, GraphStatsSnapshot};

use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime_wasi_nn::backend::{BackendError, BackendFromDir, BackendInner};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, WasiNnCtx};
use wasmtime_wasi_nn::{Backend, Graph, GraphRegistry};

/// What the host found out about a graph while loading it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoadedGraphInfo {
    /// Where it runs (`cpu`, `gpu`, or a note when `gpu-or-cpu` fell back).
    pub device: String,
    /// Declared inputs (`name: type[dims]`).
    pub inputs: Vec<String>,
    /// Declared outputs.
    pub outputs: Vec<String>,
}

/// Where a model file comes from.
#[derive(Debug, Clone)]
pub enum GraphFile {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A stored file: the handle the host opened (what it checks, and what OpenVINO reads)
    /// and the same file's path, which ONNX Runtime opens itself so that large models are
    /// never copied through the host. Stored files are immutable (content-addressed blobs).
    Stored {
        /// The open file.
        file: Arc<std::fs::File>,
        /// Its path, for engines that open it themselves.
        path: std::path::PathBuf,
    },
}

impl GraphFile {
    /// A model file given by path (local tools, tests); the server opens its blobs through
    /// the blob store instead.
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = cap_std::fs::File::open_ambient(path, cap_std::ambient_authority())?;
        Ok(Self::Stored {
            file: Arc::new(file.into_std()),
            path: path.to_path_buf(),
        })
    }

    /// Checks that this file, the `index`th of a graph on `encoding`, refers to nothing
    /// outside itself (the `self_contained` module says why).
    fn check_self_contained(
        &self,
        encoding: Encoding,
        index: usize,
    ) -> Result<(), NotSelfContained> {
        let ir_xml = encoding == Encoding::Openvino && index == 0;
        let ir_bin = encoding == Encoding::Openvino && index == 1;
        match self {
            _ if ir_bin => Ok(()),
            Self::Bytes(bytes) if ir_xml => self_contained::check_ir_xml(bytes.as_slice()),
            Self::Bytes(bytes) => self_contained::check_onnx(std::io::Cursor::new(bytes)),
            Self::Stored { file, .. } if ir_xml => {
                let mut file = file.as_ref();
                std::io::Seek::rewind(&mut file).map_err(|_| NotSelfContained::Unreadable)?;
                self_contained::check_ir_xml(file)
            }
            Self::Stored { file, .. } => self_contained::check_onnx(file.as_ref()),
        }
    }
}

impl From<Vec<u8>> for GraphFile {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

/// One graph to load: its name in the image, engine, files and options.
#[derive(Debug, Clone)]
pub struct GraphSpec {
    /// Name the guest loads it by.
    pub name: String,
    /// Engine.
    pub encoding: Encoding,
    /// The model files: one `.onnx`, or OpenVINO IR `.xml` then `.bin`.
    pub files: Vec<GraphFile>,
    /// Load options.
    pub options: GraphOptions,
    /// The image version it belongs to, `tenant/model@version` (labels its batching
    /// metric; empty outside the server).
    pub image: String,
}

/// A loaded graph with its counters.
#[derive(Clone)]
pub struct LoadedGraph {
    graph: Graph,
    info: LoadedGraphInfo,
    stats: Arc<GraphStats>,
    batcher: Option<Arc<batching::Batcher>>,
}

impl LoadedGraph {
    /// What the host found out while loading it.
    pub fn info(&self) -> &LoadedGraphInfo {
        &self.info
    }

    /// Its run counters.
    pub fn stats(&self) -> GraphStatsSnapshot {
        self.stats.snapshot()
    }

    /// Its batching counters, when it batches.
    pub fn batch_stats(&self) -> Option<BatchStatsSnapshot> {
        self.batcher.as_ref().map(|b| b.stats())
    }
}

/// How many graphs this process has loaded (each load is an engine compile).
static GRAPH_LOADS: AtomicU64 = AtomicU64::new(0);

/// Total graph loads so far in this process.
pub fn graph_loads() -> u64 {
    GRAPH_LOADS.load(Ordering::SeqCst)
}

/// Loads one graph on its engine.
pub fn load_graph(engines: &Engines, spec: &GraphSpec) -> Result<LoadedGraph, InferenceError> {
    // The server's own setup first: a missing engine is not the model's fault.
    match spec.encoding {
        Encoding::Onnx => engines.require_onnx()?,
        Encoding::Openvino => engines.require_openvino()?,
    }
    // An OpenVINO graph of two files is IR (.xml, .bin); of one, ONNX like the onnx encoding.
    let encoding = match (spec.encoding, spec.files.len()) {
        (Encoding::Openvino, 1) => Encoding::Onnx,
        (encoding, _) => encoding,
    };
    for (index, file) in spec.files.iter().enumerate() {
        file.check_self_contained(encoding, index)
            .map_err(|reason| InferenceError::NotSelfContained {
                graph: spec.name.clone(),
                reason,
            })?;
    }
    let stats = Arc::new(GraphStats::default());
    let ((graph, batcher), info) = match spec.encoding {
        Encoding::Onnx => {
            let [model] = spec.files.as_slice() else {
                return Err(InferenceError::GraphRejected {
                    graph: spec.name.clone(),
                    engine: "onnx",
                    reason: format!("expects one .onnx file, got {}", spec.files.len()),
                });
            };
            let (graph, info) = onnx::load(
                &spec.name,
                model,
                &spec.options,
                &engines.cuda,
                stats.clone(),
            )?;
            (with_batching(spec, graph)?, info)
        }
        Encoding::Openvino => {
            let (graph, info) =
                openvino::load(&spec.name, &spec.files, &spec.options, stats.clone())?;
            (with_batching(spec, graph)?, info)
        }
    };
    GRAPH_LOADS.fetch_add(1, Ordering::SeqCst);
    // The Prometheus counter (named in telemetry/metrics.rs; the facade is a crate, so
    // this module still imports no other).
    let engine = match spec.encoding {
        Encoding::Onnx => "onnx",
        Encoding::Openvino => "openvino",
    };
    metrics::counter!("sandserve_graph_loads_total", "engine" => engine).increment(1);
    tracing::info!(graph = %spec.name, encoding = %spec.encoding, device = %info.device, "graph loaded");
    Ok(LoadedGraph {
        graph,
        info,
        stats,
        batcher,
    })
}

/// The graph as wasi-nn runs it: behind a batcher when its options ask for batching.
type WithBatcher = (Graph, Option<Arc<batching::Batcher>>);

fn with_batching<G: context::RunGraph>(
    spec: &GraphSpec,
    graph: context::SharedGraph<G>,
) -> Result<WithBatcher, InferenceError> {
    let Some(policy) = &spec.options.batching else {
        return Ok((graph_from(graph), None));
    };
    let inner: Arc<dyn context::RunGraph> = graph.0;
    let batched = batching::Batched::new(&spec.name, &spec.image, inner, policy.clone()).map_err(
        |reason| InferenceError::GraphRejected {
            graph: spec.name.clone(),
            engine: match spec.encoding {
                Encoding::Onnx => "onnx",
                Encoding::Openvino => "openvino",
            },
            reason,
        },
    )?;
    let batcher = batched.batcher();
    Ok((
        graph_from(context::SharedGraph(Arc::new(batched))),
        Some(batcher),
    ))
}

fn graph_from(graph: impl wasmtime_wasi_nn::backend::BackendGraph + 'static) -> Graph {
    let boxed: Box<dyn wasmtime_wasi_nn::backend::BackendGraph> = Box::new(graph);
    boxed.into()
}

/// A backend failure whose message reaches the guest.
///
/// wasmtime-wasi-nn 48 hands a guest only the top-level `Display` of a `BackendError`, and
/// `BackendAccess` displays a fixed text, so our messages travel in the one variant that
/// carries a string. The guest SDK strips its fixed prefix (`Unsupported tensor type: `).
pub(crate) fn failed(message: String) -> BackendError {
    BackendError::UnsupportedTensorType(message)
}

/// A failure caused by the inputs the caller sent. The `invalid input: ` prefix lets the
/// guest SDK answer HTTP 400, since wasi-nn reports every backend error as `runtime-error`.
pub(crate) fn invalid(message: String) -> BackendError {
    failed(format!("invalid input: {message}"))
}

/// Whether, and how much, a guest may load graph bytes of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestLoadPolicy {
    /// Only the image's named graphs (the default).
    #[default]
    Denied,
    /// ONNX bytes up to this many, on the CPU.
    Allowed {
        /// Largest total size of the bytes passed to `load`.
        max_bytes: usize,
    },
}

/// The graphs of one image version: shared by every request of that version.
#[derive(Clone, Default)]
pub struct GraphSet {
    graphs: Arc<HashMap<String, LoadedGraph>>,
    guest_load: GuestLoadPolicy,
    /// The engines a guest's own graph bytes load into (the ones `load` was given).
    engines: Option<&'static Engines>,
}

impl GraphSet {
    /// Loads every graph in `specs`; fails on the first that does not load.
    pub fn load(
        engines: &'static Engines,
        specs: &[GraphSpec],
        guest_load: GuestLoadPolicy,
    ) -> Result<Self, InferenceError> {
        let mut graphs = HashMap::with_capacity(specs.len());
        for spec in specs {
            graphs.insert(spec.name.clone(), load_graph(engines, spec)?);
        }
        Ok(Self {
            graphs: Arc::new(graphs),
            guest_load,
            engines: Some(engines),
        })
    }

    /// A graph by name.
    pub fn get(&self, name: &str) -> Option<&LoadedGraph> {
        self.graphs.get(name)
    }

    /// Counts a request that starts now in every batched graph, until it ends (drop the
    /// result) or its `compute` of the graph is answered (see `batching::in_flight`).
    pub fn requests_started(&self) -> batching::RequestInFlight {
        batching::RequestInFlight(
            self.graphs
                .values()
                .filter_map(|g| g.batcher.clone())
                .map(batching::InFlight::start)
                .collect(),
        )
    }

    /// Graph names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.graphs.keys().map(String::as_str)
    }

    /// A wasi-nn context for one request: these graphs by name, and a loader for guest
    /// bytes only when the policy allows it.
    pub fn nn_ctx(&self) -> WasiNnCtx {
        let backends: Vec<Backend> = match self.guest_load {
            GuestLoadPolicy::Denied => Vec::new(),
            GuestLoadPolicy::Allowed { max_bytes } => {
                vec![Backend::from(GuestOnnxLoader {
                    max_bytes,
                    engines: self.engines,
                })]
            }
        };
        WasiNnCtx::new(backends, SharedRegistry(self.graphs.clone()).into())
    }
}

/// The registry a request sees: its image's graphs, shared, read-only.
struct SharedRegistry(Arc<HashMap<String, LoadedGraph>>);

impl GraphRegistry for SharedRegistry {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name).map(|g| &g.graph)
    }

    fn get_mut(&mut self, _name: &str) -> Option<&mut Graph> {
        None
    }
}

/// Loads ONNX bytes a guest passes to `wasi:nn/graph.load`, within a size limit, on the CPU.
struct GuestOnnxLoader {
    max_bytes: usize,
    engines: Option<&'static Engines>,
}

impl BackendInner for GuestOnnxLoader {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn load(&mut self, builders: &[&[u8]], target: ExecutionTarget) -> Result<Graph, BackendError> {
        let fail = failed;
        let total: usize = builders.iter().map(|b| b.len()).sum();
        if total > self.max_bytes {
            return Err(fail(format!(
                "graph bytes ({total}) exceed this image's limit of {} bytes",
                self.max_bytes
            )));
        }
        if target != ExecutionTarget::Cpu {
            return Err(fail("guest-loaded graphs run on the CPU only".into()));
        }
        let [model] = builders else {
            return Err(BackendError::InvalidNumberOfBuilders(1, builders.len()));
        };
        let engines = self
            .engines
            .ok_or_else(|| fail("no inference engine loaded".into()))?;
        let spec = GraphSpec {
            name: "guest-loaded".into(),
            encoding: Encoding::Onnx,
            files: vec![GraphFile::Bytes(model.to_vec())],
            options: GraphOptions::default(),
            image: String::new(),
        };
        load_graph(engines, &spec)
            .map(|g| g.graph)
            .map_err(|e| fail(e.to_string()))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}
