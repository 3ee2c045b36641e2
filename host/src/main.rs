//! The `sandserve` binary: parse the command line, start logging, call into the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sandserve_host::codec::v2;
use sandserve_host::config;
use sandserve_host::runtime::{empty_nn, RequestLimits, Runtime, RuntimeConfig};
use std::io::{IsTerminal, Read};
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
    /// first. Model files a script makes must exist (run scripts/setup-engines.sh).
    Package {
        /// Folder holding sandserve.toml (and the handler crate, if any).
        dir: PathBuf,
        /// Archive to write: .tar.gz (default) or .tar.
        #[arg(long, short)]
        output: PathBuf,
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

/// Starts the log on standard error: `SANDSERVE_LOG` filters (default `info`), colours
/// only when standard error is a terminal.
fn start_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANDSERVE_LOG")
        .unwrap_or_else(|_| "info,wasmtime_wasi_nn=off".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::Package { dir, output } => package(&dir, &output),
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
    start_logging(config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        // Workers run small requests' sandboxes inline (serving/placement.rs).
        .thread_stack_size(sandserve_host::runtime::HOST_THREAD_STACK_BYTES)
        .enable_all()
        .build()?
        .block_on(sandserve_host::server::serve(config))?;
    Ok(())
}

fn package(dir: &std::path::Path, output: &std::path::Path) -> Result<()> {
    start_logging(config::LogFormat::Text);
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

fn invoke(
    component: PathBuf,
    input: PathBuf,
    timeout_ms: u64,
    memory_mib: usize,
    fuel: Option<u64>,
) -> Result<()> {
    start_logging(config::LogFormat::Text);
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
