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
    Serve(Box<ServeArgs>),
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
    /// inline_max_run_us, tls_cert, tls_key, plain_http, max_connections,
    /// header_read_timeout_secs, body_read_timeout_secs, keep_alive_timeout_secs,
    /// tenant_guest_threads, memory_budget_mib).
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
    /// PEM certificate chain: serve HTTPS (TLS 1.2/1.3, HTTP/2 or HTTP/1.1 by ALPN). The
    /// pair is reloaded without a restart when its files change.
    #[arg(long, env = "SANDSERVE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SANDSERVE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other machines can reach (only behind a
    /// TLS-terminating proxy); loopback addresses never need it.
    #[arg(long, env = "SANDSERVE_PLAIN_HTTP")]
    plain_http: bool,
    /// Connections open at once; at the cap the longest-idle connection is closed for a
    /// newcomer, and when none is idle newcomers get 503 [default: 1024].
    #[arg(long, env = "SANDSERVE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a client has for its TLS handshake and for each request's headers
    /// [default: 10].
    #[arg(long, env = "SANDSERVE_HEADER_READ_TIMEOUT_SECS")]
    header_read_timeout_secs: Option<u64>,
    /// Longest pause, in seconds, while a request body is sent; past it the request ends
    /// with 408 [default: 15].
    #[arg(long, env = "SANDSERVE_BODY_READ_TIMEOUT_SECS")]
    body_read_timeout_secs: Option<u64>,
    /// Seconds a connection may sit with no request in flight before it is closed
    /// [default: 60].
    #[arg(long, env = "SANDSERVE_KEEP_ALIVE_TIMEOUT_SECS")]
    keep_alive_timeout_secs: Option<u64>,
    /// Guest threads one tenant may hold at once (its share: the rest stay free for the
    /// other tenants; its further requests wait, within their timeout, behind its own)
    /// [default: two per CPU, at least 4; the guest threads are 16 per CPU, at least 64].
    #[arg(long, env = "SANDSERVE_TENANT_GUEST_THREADS")]
    tenant_guest_threads: Option<usize>,
    /// Server-wide memory budget, MiB, for guest memories (charged as they grow), request
    /// parsing and answer encoding; what does not fit is answered 503 at once, and an
    /// entity whose memory limit alone exceeds it is not deployed [default: 3/4 of RAM].
    #[arg(long, env = "SANDSERVE_MEMORY_BUDGET_MIB")]
    memory_budget_mib: Option<u64>,
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
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            plain_http: args.plain_http,
            max_connections: args.max_connections,
            header_read_timeout_secs: args.header_read_timeout_secs,
            body_read_timeout_secs: args.body_read_timeout_secs,
            keep_alive_timeout_secs: args.keep_alive_timeout_secs,
            tenant_guest_threads: args.tenant_guest_threads,
            memory_budget_mib: args.memory_budget_mib,
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
