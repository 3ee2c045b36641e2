//! `sandserve invoke`: one request through a handler, locally (a `.wasm`, or a package with
//! its graphs loaded, as the server would serve it) or remotely (an endpoint). The request
//! is any format the server takes: KServe V2 JSON (`{"inputs": [{"name", "shape",
//! "datatype", "data"}]}`) or the Databricks formats (`dataframe_split`,
//! `dataframe_records`, `instances`, `inputs`).

use super::client::{read_json, segment, Client};
use super::output;
use anyhow::{bail, Context, Result};
use reqwest::Method;
use sandserve_host::codec::{self, DatabricksCodec, QueryCodec, V2Codec};
use sandserve_host::inference::{
    EngineSettings, Engines, GraphFile, GraphSet, GraphSpec, GuestLoadPolicy,
};
use sandserve_host::package::{self, Manifest, UnpackLimits};
use sandserve_host::runtime::{empty_nn, RequestLimits, Runtime, RuntimeConfig};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which protocol a request body speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// V2 when `inputs` is a list of objects with a `datatype`, else Databricks.
    Auto,
    /// KServe Open Inference Protocol V2 (JSON).
    V2,
    /// Databricks: dataframe_split, dataframe_records, instances or inputs.
    Databricks,
}

/// The format `body` is in, for `Auto`.
pub fn detect(body: &[u8], format: Format) -> Format {
    if format != Format::Auto {
        return format;
    }
    let v2 = serde_json::from_slice::<Value>(body).ok().is_some_and(|v| {
        v["inputs"].as_array().is_some_and(|inputs| {
            inputs.iter().all(|i| i.get("datatype").is_some()) && !inputs.is_empty()
        })
    });
    if v2 {
        Format::V2
    } else {
        Format::Databricks
    }
}

/// The request body: `--data`, else the `--input` file (`-` is standard input).
pub fn read_body(data: Option<&str>, input: &Path) -> Result<Vec<u8>> {
    if let Some(data) = data {
        return Ok(data.as_bytes().to_vec());
    }
    if input.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin().read_to_end(&mut body)?;
        return Ok(body);
    }
    std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))
}

/// Limits for a local run.
pub struct LocalLimits {
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub fuel: Option<u64>,
}

/// A handler ready to run locally, with its graphs and manifest when it came in a package.
struct Local {
    name: String,
    wasm: Vec<u8>,
    manifest: Option<Manifest>,
    graphs: Option<GraphSet>,
    // Holds the unpacked files the graphs were loaded from.
    _unpacked: Option<tempfile::TempDir>,
}

/// The request body of a local run: `--example NAME` from the package's manifest, else
/// what [`read_body`] reads.
pub enum Body {
    /// Bytes given.
    Given(Vec<u8>),
    /// A named `[[examples]]` entry of the package.
    Example(String),
}

/// Runs a request through the handler in `target` (a `.wasm` or a package) and prints the
/// answer the server would give.
pub fn local(target: &Path, body: Body, format: Format, limits: &LocalLimits) -> Result<()> {
    let local = load(target)?;
    let body = match body {
        Body::Given(bytes) => bytes,
        Body::Example(name) => {
            let examples = local
                .manifest
                .as_ref()
                .map(|m| m.examples.as_slice())
                .unwrap_or_default();
            let found = examples.iter().find(|e| e.name == name).with_context(|| {
                let names: Vec<&str> = examples.iter().map(|e| e.name.as_str()).collect();
                format!(
                    "{} has no example `{name}`; its [[examples]]: {}",
                    target.display(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            })?;
            found.request.clone().into_bytes()
        }
    };
    let body = body.as_slice();
    let runtime = Runtime::new(RuntimeConfig {
        fuel_metering: limits.fuel.is_some(),
        max_concurrent_instances: 4,
        ..RuntimeConfig::default()
    })?;
    let handler = runtime.load(&format!("local/{}", local.name), &local.wasm)?;
    let mut request_limits = local
        .manifest
        .as_ref()
        .map_or_else(RequestLimits::default, |m| m.limits.request_limits());
    if let Some(ms) = limits.timeout_ms {
        request_limits.timeout = Duration::from_millis(ms);
    }
    if let Some(mib) = limits.memory_mib {
        request_limits.max_memory_bytes = mib << 20;
    }
    if limits.fuel.is_some() {
        request_limits.fuel = limits.fuel;
    }
    let signature = local.manifest.as_ref().and_then(|m| m.signature.as_ref());
    let nn = || {
        local
            .graphs
            .as_ref()
            .map_or_else(empty_nn, GraphSet::nn_ctx)
    };
    let answer: Vec<u8> = match detect(body, format) {
        Format::V2 => {
            let codec = V2Codec {
                model_name: local.name.clone(),
                header_length: None,
            };
            let (decoded, request) = codec.decode(body, signature).context("bad V2 request")?;
            if let Some(signature) = signature {
                codec::signature::check_request(&request, signature)
                    .context("the request does not match the package's signature")?;
            }
            let invocation = handler.invoke(&request, &request_limits, nn())?;
            report(&invocation);
            let encoded = codec.encode(1, decoded, invocation.response)?;
            encoded
                .chunks
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect()
        }
        _ => {
            let codec = DatabricksCodec;
            let (decoded, request) = codec
                .decode(body, signature)
                .context("bad request (Databricks formats: dataframe_split, dataframe_records, instances, inputs)")?;
            if let Some(signature) = signature {
                codec::signature::check_request(&request, signature)
                    .context("the request does not match the package's signature")?;
            }
            let invocation = handler.invoke(&request, &request_limits, nn())?;
            report(&invocation);
            codec.encode(1, decoded, invocation.response)?
        }
    };
    print_answer(&answer);
    Ok(())
}

fn report(invocation: &sandserve_host::runtime::Invocation) {
    if let Some(fuel) = invocation.fuel_consumed {
        eprintln!("fuel consumed: {fuel}");
    }
    eprintln!(
        "instantiate {:?}, predict {:?}",
        invocation.instantiate_time, invocation.predict_time
    );
}

fn print_answer(answer: &[u8]) {
    match serde_json::from_slice::<Value>(answer) {
        Ok(value) => output::json(&value),
        Err(_) => println!("{}", String::from_utf8_lossy(answer)),
    }
}

fn load(target: &Path) -> Result<Local> {
    let bytes =
        std::fs::read(target).with_context(|| format!("cannot read {}", target.display()))?;
    let stem = target
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("handler")
                .to_string()
        })
        .unwrap_or_else(|| "handler".to_string());
    if bytes.starts_with(b"\0asm") {
        return Ok(Local {
            name: stem,
            wasm: bytes,
            manifest: None,
            graphs: None,
            _unpacked: None,
        });
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    let unpacked = package::unpack(
        bytes.as_slice(),
        &UnpackLimits::default(),
        &mut |path, reader| write_file(&root, path, reader),
    )
    .with_context(|| {
        format!(
            "{} is neither a handler component (.wasm) nor a valid package (.tar.gz)",
            target.display()
        )
    })?;
    let manifest = unpacked.manifest;
    let wasm = std::fs::read(root.join(&manifest.handler))?;
    let graphs = if manifest.graphs.is_empty() {
        None
    } else {
        let specs = manifest
            .graphs
            .iter()
            .map(|g| {
                let files = g
                    .files
                    .iter()
                    .map(|f| GraphFile::open(&root.join(f)))
                    .collect::<std::io::Result<Vec<_>>>()?;
                Ok(GraphSpec {
                    name: g.name.clone(),
                    encoding: g.encoding,
                    files,
                    options: g.options(),
                    image: String::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let engines = Engines::init(&EngineSettings::from_env());
        let policy: GuestLoadPolicy = manifest.guest_load_policy();
        Some(GraphSet::load(engines, &specs, policy).context(
            "loading the package's graphs (is the engine installed? `sandserve serve` finds them the same way: .engines/ or ORT_DYLIB_PATH)",
        )?)
    };
    Ok(Local {
        name: manifest.name.clone(),
        wasm,
        manifest: Some(manifest),
        graphs,
        _unpacked: Some(dir),
    })
}

/// The unpack sink: writes one checked package path under `root`.
fn write_file(
    root: &Path,
    path: &str,
    reader: &mut dyn Read,
) -> Result<u64, package::PackageError> {
    let full: PathBuf = root.join(path);
    let result = (|| {
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::File::create(&full)?;
        std::io::copy(reader, &mut file)
    })();
    result.map_err(|e| package::PackageError::Corrupt {
        detail: format!("unpacking `{path}`: {e}"),
    })
}

/// Sends `body` to endpoint `name` and prints the answer (`--json`: the body only).
pub fn remote(client: &Client, name: &str, body: Vec<u8>, format: Format) -> Result<()> {
    let path = match detect(&body, format) {
        Format::V2 => format!("/v2/models/{}/infer", segment(name)),
        _ => format!("/serving-endpoints/{}/invocations", segment(name)),
    };
    let response = client
        .request(Method::POST, &path)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .map_err(|e| client.unreachable(&e))?;
    let served = response
        .headers()
        .get("served-model-name")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = read_json(response)?;
    output::json(&answer);
    if let Some(served) = served {
        eprintln!("served by {served}");
    }
    Ok(())
}

/// Refuses `invoke` with neither a local target nor an endpoint.
pub fn need_target(target: Option<&Path>, endpoint: Option<&str>) -> Result<()> {
    if target.is_none() && endpoint.is_none() {
        bail!("give a package or .wasm to run locally, or --endpoint NAME to query a server");
    }
    Ok(())
}
