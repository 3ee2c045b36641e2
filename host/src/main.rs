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
    Serve(ServeArgs),
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

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "SANDSERVE_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Folder for metadata, blobs and caches.
    #[arg(long, env = "SANDSERVE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file (keys: listen, data_dir, admin_token, max_upload_mib,
    /// max_unpacked_mib, max_concurrent_uploads, max_instances, fuel_metering, engines_dir,
    /// inline_max_run_us).
    #[arg(long, env = "SANDSERVE_CONFIG")]
    config: Option<PathBuf>,
    /// Largest package upload, MiB [default: 1024].
    #[arg(long, env = "SANDSERVE_MAX_UPLOAD_MIB")]
    max_upload_mib: Option<u64>,
    /// Largest unpacked package, MiB [default: 4096].
    #[arg(long, env = "SANDSERVE_MAX_UNPACKED_MIB")]
    max_unpacked_mib: Option<u64>,
    /// Package uploads that may be in progress at once across the server; one more is
    /// refused at once with 429 and Retry-After, at most 1024 [default: 4].
    #[arg(long, env = "SANDSERVE_MAX_CONCURRENT_UPLOADS")]
    max_concurrent_uploads: Option<usize>,
    /// Sandboxes that may run at once across the server [default: 256].
    #[arg(long, env = "SANDSERVE_MAX_INSTANCES")]
    max_instances: Option<u32>,
    /// Meter instructions (needed by images that set limits.fuel).
    #[arg(long, env = "SANDSERVE_FUEL_METERING")]
    fuel_metering: bool,
    /// Folder of the engine libraries [default: .engines].
    #[arg(long, env = "SANDSERVE_ENGINES_DIR")]
    engines_dir: Option<PathBuf>,
    /// On an otherwise idle server, small requests of an entity whose last run took less
    /// than this many microseconds run on the async worker instead of a guest thread
    /// (saves two thread wake-ups); 0 turns this off, at most 10000 [default: 1000].
    #[arg(long, env = "SANDSERVE_INLINE_MAX_RUN_US")]
    inline_max_run_us: Option<u64>,
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
        Command::Serve(args) => serve(args),
        Command::Package { dir, output } => package(&dir, &output),
        Command::Invoke {
            component,
            input,
            timeout_ms,
            memory_mib,
            fuel,
        } => invoke(component, input, timeout_ms, memory_mib, fuel),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let file = match &args.config {
        Some(path) => config::read_file(path)?,
        None => config::FileConfig::default(),
    };
    let config = config::ServeConfig::resolve(
        config::Overrides {
            listen: args.listen,
            data_dir: args.data_dir,
            max_upload_mib: args.max_upload_mib,
            max_unpacked_mib: args.max_unpacked_mib,
            max_instances: args.max_instances,
            fuel_metering: args.fuel_metering,
            engines_dir: args.engines_dir,
            inline_max_run_us: args.inline_max_run_us,
            max_concurrent_uploads: args.max_concurrent_uploads,
        },
        std::env::var("SANDSERVE_ADMIN_TOKEN").ok(),
        file,
    )?;
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
