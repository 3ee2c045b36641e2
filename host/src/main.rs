//! The `sandserve` binary: parse the command line, start logging, call into the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sandserve_host::codec::v2;
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
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Invoke {
            component,
            input,
            timeout_ms,
            memory_mib,
            fuel,
        } => invoke(component, input, timeout_ms, memory_mib, fuel),
    }
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
    let (parsed, request) = v2::parse_request(&body).context("bad request")?;
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
