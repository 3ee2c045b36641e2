//! The `sandserve` binary: parse the command line, start logging, call into the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sandserve_host::codec::v2;
use sandserve_host::config;
use sandserve_host::runtime::{empty_nn, RequestLimits, Runtime, RuntimeConfig};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// sandserve: multi-tenant model serving with sandboxed WebAssembly handlers.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the multi-tenant server.
    ///
    /// Every flag also reads an environment variable (shown below) and a key of the config
    /// file. The bootstrap admin token comes from SANDSERVE_ADMIN_TOKEN or the file's
    /// `admin_token`, never from a flag. Prints `listening on http://ADDR` once bound.
    Serve(Box<config::Settings>),
    /// Build a model package: `sandserve.toml` first, then the files it names.
    ///
    /// When DIR is a handler crate (has Cargo.toml), builds it for wasm32-wasip2 (release)
    /// first; when it is a Python project (app.py), builds app.py with componentize-py
    /// (installed into DIR/.sandserve/venv unless SANDSERVE_COMPONENTIZE_PY names one).
    /// With --model instead of DIR, packs a model with no handler code, served by the
    /// built-in generic handler (tensors in, the model, tensors out).
    ///
    /// Examples:
    ///   sandserve package examples/digits -o digits.tar.gz
    ///   sandserve package --model model.onnx --signature signature.toml -o model.tar.gz
    #[command(verbatim_doc_comment)]
    Package {
        /// Folder holding sandserve.toml (and the handler crate or app.py, if any).
        #[arg(required_unless_present = "model", conflicts_with = "model")]
        dir: Option<PathBuf>,
        /// Archive to write: .tar.gz (default) or .tar.
        #[arg(long, short)]
        output: PathBuf,
        /// A model file to serve with no handler code: .onnx, or OpenVINO .xml (+ .bin).
        #[arg(long)]
        model: Option<PathBuf>,
        /// With --model: TOML or JSON file with `inputs` and `outputs` (as [signature]).
        #[arg(long, requires = "model")]
        signature: Option<PathBuf>,
        /// With --model: the model's name (default: the file name).
        #[arg(long, requires = "model")]
        name: Option<String>,
    },
    /// Make a TLS certificate and key for `sandserve serve --tls-cert/--tls-key`.
    ///
    /// Only `--self-signed` (for development; clients must trust the certificate, e.g.
    /// `curl --cacert cert.pem`). In production use a certificate from your CA.
    Cert {
        /// Make a self-signed certificate.
        #[arg(long, required = true)]
        self_signed: bool,
        /// Names and addresses the certificate is for (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
        /// Certificate file to write (PEM).
        #[arg(long, default_value = "cert.pem")]
        cert: PathBuf,
        /// Private key file to write (PEM, mode 0600).
        #[arg(long, default_value = "key.pem")]
        key: PathBuf,
    },
    /// Run one request through a handler component locally and print the V2 JSON response.
    ///
    /// The request is a KServe V2 inference request, e.g.
    /// {"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}
    Invoke {
        /// The handler component (.wasm built for wasm32-wasip2).
        component: PathBuf,
        /// File holding the V2 JSON request; `-` reads standard input.
        #[arg(long, short, default_value = "-")]
        input: PathBuf,
        /// Wall-clock limit for the call, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Memory limit for the sandbox, in MiB.
        #[arg(long, default_value_t = 256)]
        memory_mib: usize,
        /// Instruction budget; enables fuel metering and reports consumption.
        #[arg(long)]
        fuel: Option<u64>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDSERVE_LOG")
                .unwrap_or_else(|_| "info,wasmtime_wasi_nn=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::Package {
            dir,
            output,
            model,
            signature,
            name,
        } => match (dir, model) {
            (Some(dir), _) => package(&dir, &output),
            (None, Some(model)) => package_model(&model, signature, name, &output),
            (None, None) => anyhow::bail!("give a package folder or --model FILE"),
        },
        Command::Cert {
            self_signed: _,
            hosts,
            cert,
            key,
        } => {
            let files = sandserve_host::listener::TlsFiles { cert, key };
            sandserve_host::listener::write_self_signed(&hosts, &files)?;
            println!(
                "wrote {} and {} (self-signed for {}); serve with --tls-cert {} --tls-key {}",
                files.cert.display(),
                files.key.display(),
                hosts.join(", "),
                files.cert.display(),
                files.key.display()
            );
            Ok(())
        }
        Command::Invoke {
            component,
            input,
            timeout_ms,
            memory_mib,
            fuel,
        } => invoke(component, input, timeout_ms, memory_mib, fuel),
    }
}

fn serve(flags: config::Settings) -> Result<()> {
    let config = config::ServeConfig::load(flags, std::env::var("SANDSERVE_ADMIN_TOKEN").ok())?;
    tokio::runtime::Builder::new_multi_thread()
        // Workers run small requests' sandboxes inline (serving/placement.rs).
        .thread_stack_size(sandserve_host::runtime::HOST_THREAD_STACK_BYTES)
        .enable_all()
        .build()?
        .block_on(sandserve_host::server::serve(config))?;
    Ok(())
}

fn package(dir: &std::path::Path, output: &std::path::Path) -> Result<()> {
    let summary = sandserve_host::package::package_dir(dir, output)?;
    println!(
        "wrote {} ({} files, {} bytes, sha256 {})",
        output.display(),
        summary.files,
        summary.bytes,
        summary.sha256
    );
    Ok(())
}

fn package_model(
    model: &std::path::Path,
    signature: Option<PathBuf>,
    name: Option<String>,
    output: &std::path::Path,
) -> Result<()> {
    use sandserve_host::authoring::model_only;
    let spec = model_only::ModelOnly {
        model,
        signature: signature.as_deref(),
        name: name.as_deref(),
    };
    let summary = model_only::package_model(spec, output)?;
    println!(
        "wrote {} ({} files, {} bytes, sha256 {}); the generic handler serves graph `{}`",
        output.display(),
        summary.files,
        summary.bytes,
        summary.sha256,
        model_only::GRAPH_NAME
    );
    Ok(())
}

fn invoke(
    component: PathBuf,
    input: PathBuf,
    timeout_ms: u64,
    memory_mib: usize,
    fuel: Option<u64>,
) -> Result<()> {
    let wasm = std::fs::read(&component)
        .with_context(|| format!("cannot read component {}", component.display()))?;
    let body = if input.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin().read_to_end(&mut body)?;
        body
    } else {
        std::fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?
    };
    let (parsed, request) = v2::parse_request(&body, None).context("bad request")?;
    let runtime = Runtime::new(RuntimeConfig {
        fuel_metering: fuel.is_some(),
        max_concurrent_instances: 4,
        ..RuntimeConfig::default()
    })?;
    let name = component.file_stem().map_or_else(
        || "handler".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let handler = runtime.load(&format!("local/{name}"), &wasm)?;
    let limits = RequestLimits {
        timeout: Duration::from_millis(timeout_ms),
        max_memory_bytes: memory_mib << 20,
        fuel,
        ..RequestLimits::default()
    };
    let invocation = handler.invoke(&request, &limits, empty_nn())?;
    let parsed = parsed.all_json();
    let response = v2::build_response(&name, None, &parsed, &invocation.response)?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    if let Some(fuel) = invocation.fuel_consumed {
        eprintln!("fuel consumed: {fuel}");
    }
    eprintln!(
        "instantiate {:?}, predict {:?}",
        invocation.instantiate_time, invocation.predict_time
    );
    Ok(())
}
