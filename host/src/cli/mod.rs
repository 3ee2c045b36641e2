//! The `sandserve` command line: what each command takes (clap) and which module runs it.
//! Server-side commands (`serve`, `package`, `cert`) call the library; the client commands
//! (`login`, `push`, `models`, `endpoints`, `deploy`, `invoke --endpoint`, `tokens`,
//! `tenants`) talk to a server over HTTP (`client`); authoring (`new`, `build`) writes and
//! builds handler projects.

mod client;
mod deploy;
mod endpoints;
mod invoke;
mod logging;
mod output;
mod profile;
mod push;
mod resources;
mod subcommands;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use profile::Remote;
use reqwest::Method;
use sandserve_host::authoring::{self, Lang, Template};
use sandserve_host::config;
use std::path::PathBuf;
use std::time::Duration;
use subcommands::{EndpointsCommand, ModelsCommand, TenantsCommand, TokensCommand};

/// sandserve: multi-tenant model serving with sandboxed WebAssembly handlers.
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples (docs/quickstart.md walks through them):
  sandserve new hello && cd hello            # a Rust handler project
  sandserve build                            # -> hello.tar.gz
  sandserve invoke hello.tar.gz --data '{\"inputs\": {\"x\": [[1, 2, 3]]}}'
  sandserve login --url http://127.0.0.1:8080 --token TOKEN
  sandserve deploy hello.tar.gz              # push + endpoint `hello`, READY
  sandserve invoke --endpoint hello --data '{\"inputs\": {\"x\": [[1, 2, 3]]}}'";

#[derive(Subcommand)]
pub enum Command {
    /// Start the multi-tenant server.
    ///
    /// Every flag also reads an environment variable (shown below) and a key of the config
    /// file. The bootstrap admin token comes from SANDSERVE_ADMIN_TOKEN or the file's
    /// `admin_token`, never from a flag. Prints `listening on http://ADDR` once bound.
    Serve(Box<config::Settings>),
    /// Write a new handler project into the folder NAME.
    ///
    /// The project carries its own copy of the SDK and the WIT contract, so it builds
    /// anywhere on disk with only crates.io to reach.
    #[command(
        after_help = "Example:\n  sandserve new hello && cd hello && cargo test && sandserve build"
    )]
    New {
        /// Project (and model) name: 1-64 of a-z 0-9 _ -, starting with a letter.
        name: String,
        /// Language of the handler.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// What the project starts as.
        #[arg(long, value_enum, default_value_t = Template::Echo)]
        template: Template,
    },
    /// Build a handler project into a package (checks the wasm32-wasip2 toolchain first).
    #[command(
        after_help = "Example:\n  sandserve build            # in the project folder -> NAME.tar.gz"
    )]
    Build {
        /// Project folder (holding sandserve.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Package to write (default DIR/NAME.tar.gz).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Build a model package: `sandserve.toml` first, then the files it names.
    ///
    /// When DIR is a handler crate (has Cargo.toml), builds it for wasm32-wasip2 (release)
    /// first. Model files a script makes must exist (run scripts/setup-engines.sh).
    ///
    /// When DIR is a Python project (app.py), builds app.py with componentize-py
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
    /// `curl --cacert cert.pem` or `sandserve login --cacert cert.pem`). In production use a
    /// certificate from your CA.
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
    /// Run one request through a handler, locally or on a server, and print the answer.
    ///
    /// Locally: TARGET is a package (its graphs loaded, its signature checked, as the server
    /// serves it) or a handler component (.wasm). Remotely: --endpoint NAME. The request is
    /// KServe V2 JSON or a Databricks format (dataframe_split, dataframe_records, instances,
    /// inputs); --format says which when the guess is wrong.
    #[command(after_help = "Examples:
  sandserve invoke hello.tar.gz --data '{\"inputs\": {\"x\": [[1, 2, 3]]}, \"params\": {\"scale\": 2}}'
  sandserve invoke hello.tar.gz --input request.json
  sandserve invoke hello.tar.gz --example scaled      # a request from its [[examples]]
  sandserve invoke handler.wasm --data '{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP32\",\"data\":[1,2]}]}'
  sandserve invoke --endpoint hello --data '{\"dataframe_split\": {\"columns\": [\"x\"], \"data\": [[1]]}}'")]
    Invoke {
        /// Package (.tar.gz / .tar) or handler component (.wasm) to run locally.
        target: Option<PathBuf>,
        /// Query this endpoint on the server instead of running locally.
        #[arg(long, conflicts_with = "target")]
        endpoint: Option<String>,
        /// The request body, inline.
        #[arg(long, conflicts_with = "input")]
        data: Option<String>,
        /// Local: run the package's `[[examples]]` entry of this name.
        #[arg(long, conflicts_with_all = ["data", "input", "endpoint"])]
        example: Option<String>,
        /// File holding the request body; `-` reads standard input.
        #[arg(long, short, default_value = "-")]
        input: PathBuf,
        /// Request format.
        #[arg(long, value_enum, default_value_t = invoke::Format::Auto)]
        format: invoke::Format,
        /// Local: wall-clock limit in milliseconds (default: the package's, else 10000).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Local: sandbox memory limit in MiB (default: the package's, else 256).
        #[arg(long)]
        memory_mib: Option<usize>,
        /// Local: instruction budget; enables fuel metering and reports consumption.
        #[arg(long)]
        fuel: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Save the server URL and token (and a CA certificate) for the client commands.
    ///
    /// Written to config.toml in your config folder (mode 0600), or the file
    /// SANDSERVE_CLI_CONFIG names. SANDSERVE_URL, SANDSERVE_TOKEN and SANDSERVE_CACERT (or
    /// the flags) override it. The token is checked against the server first.
    #[command(after_help = "Examples:
  sandserve login --url http://127.0.0.1:8080 --token \"$TOKEN\"
  sandserve login --url https://models.example.com --cacert cert.pem --token \"$TOKEN\"")]
    Login {
        #[command(flatten)]
        remote: Remote,
    },
    /// Upload a package as a new version of the model its sandserve.toml names.
    ///
    /// Shows a progress bar on a terminal. Retry-safe: a version with the same sha256 is
    /// reused, not uploaded again; connection failures, 429 and 5xx are retried.
    #[command(
        after_help = "Example:\n  sandserve push hello.tar.gz          # model `hello` (the manifest's name)"
    )]
    Push {
        /// The package (.tar.gz or .tar).
        package: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Push a package and serve it from an endpoint, READY.
    ///
    /// A project folder is built first. The endpoint is created, or updated to send all its
    /// traffic to the new version; the command waits until it is READY.
    #[command(
        after_help = "Examples:\n  sandserve deploy hello.tar.gz\n  sandserve deploy . --endpoint hello-prod"
    )]
    Deploy {
        /// Package, or project folder to build first.
        path: PathBuf,
        /// Endpoint name (default: the model's).
        #[arg(long)]
        endpoint: Option<String>,
        /// Give up waiting for READY after this many seconds.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        #[command(flatten)]
        limits: endpoints::EntityLimits,
        #[command(flatten)]
        remote: Remote,
    },
    /// Models (uploaded packages) and their versions.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Serving endpoints: what they serve and their traffic split.
    #[command(after_help = "Examples:
  sandserve endpoints create hello --serve hello:1
  sandserve endpoints update hello --serve hello:1=80 --serve hello:2=20
  sandserve endpoints list --json")]
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// API tokens (admin token, or a tenant's CAN_MANAGE token for its own tenant).
    #[command(
        after_help = "Example:\n  sandserve tokens create --tenant acme --permission CAN_MANAGE --comment ci"
    )]
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Tenants (admin token).
    #[command(after_help = "Example:\n  sandserve tenants create acme")]
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a shell completion script.
    ///
    /// e.g. `sandserve completions bash > ~/.local/share/bash-completion/completions/sandserve`
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

pub(crate) fn connect(remote: &Remote) -> Result<client::Client> {
    client::Client::new(remote.target()?)
}

/// Runs one command.
pub fn run(command: Command) -> Result<()> {
    // The server starts its log once its settings (and so its log format) are read.
    if !matches!(command, Command::Serve(_)) {
        logging::start(config::LogFormat::Text);
    }
    match command {
        Command::Serve(args) => serve(*args),
        Command::New {
            name,
            lang,
            template,
        } => new(&name, lang, template),
        Command::Build { dir, output } => deploy::build(&dir, output).map(|_| ()),
        Command::Package {
            dir,
            output,
            model,
            signature,
            name,
        } => match (dir, model) {
            (Some(dir), _) => {
                let summary = sandserve_host::authoring::package_dir(&dir, &output)?;
                println!(
                    "wrote {} ({} files, {} bytes, sha256 {})",
                    output.display(),
                    summary.files,
                    summary.bytes,
                    summary.sha256
                );
                Ok(())
            }
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
            target,
            endpoint,
            data,
            example,
            input,
            format,
            timeout_ms,
            memory_mib,
            fuel,
            remote,
        } => {
            invoke::need_target(target.as_deref(), endpoint.as_deref())?;
            let body = match example {
                Some(name) => invoke::Body::Example(name),
                None => invoke::Body::Given(invoke::read_body(data.as_deref(), &input)?),
            };
            match (endpoint, target, body) {
                (Some(endpoint), _, invoke::Body::Given(body)) => {
                    invoke::remote(&connect(&remote)?, &endpoint, body, format)
                }
                (Some(_), _, invoke::Body::Example(_)) => {
                    anyhow::bail!("--example runs a package locally; for an endpoint give --data")
                }
                (None, Some(target), body) => invoke::local(
                    &target,
                    body,
                    format,
                    &invoke::LocalLimits {
                        timeout_ms,
                        memory_mib,
                        fuel,
                    },
                ),
                (None, None, _) => Ok(()),
            }
        }
        Command::Login { remote } => login(&remote),
        Command::Push { package, remote } => {
            push::check_is_package(&package)?;
            let pushed = push::push(&connect(&remote)?, &package)?;
            let answer = serde_json::json!({"name": pushed.name, "version": pushed.version, "digest": pushed.digest, "uploaded": pushed.uploaded});
            if remote.json {
                output::json(&answer);
            } else {
                output::table(
                    &["MODEL", "VERSION", "DIGEST", "UPLOADED"],
                    &[vec![
                        pushed.name.clone(),
                        pushed.version.to_string(),
                        pushed.digest.clone(),
                        if pushed.uploaded {
                            "yes"
                        } else {
                            "no (same sha256 as this version)"
                        }
                        .to_string(),
                    ]],
                );
            }
            Ok(())
        }
        Command::Deploy {
            path,
            endpoint,
            wait_secs,
            limits,
            remote,
        } => deploy::deploy(
            &connect(&remote)?,
            &deploy::Deploy {
                path: &path,
                endpoint: endpoint.as_deref(),
                limits: &limits,
                wait: Duration::from_secs(wait_secs),
                json: remote.json,
            },
        ),
        Command::Models { command, remote } => subcommands::models(command, &remote),
        Command::Endpoints { command, remote } => subcommands::endpoints(command, &remote),
        Command::Tokens { command, remote } => subcommands::tokens(command, &remote),
        Command::Tenants { command, remote } => subcommands::tenants(command, &remote),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "sandserve",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

fn new(name: &str, lang: Lang, template: Template) -> Result<()> {
    let dir = PathBuf::from(name);
    let made = authoring::scaffold(&dir, name, lang, template)?;
    println!(
        "created {} ({} files)",
        made.dir.display(),
        made.files.len()
    );
    if lang == Lang::Rust {
        if let Err(e) = authoring::toolchain::check(std::path::Path::new(".")) {
            eprintln!("warning: {e}");
        }
    }
    println!(
        "next: cd {name} && cargo test && sandserve build && sandserve invoke {name}.tar.gz --data '{}'",
        authoring::example_request(template)
    );
    Ok(())
}

fn login(remote: &Remote) -> Result<()> {
    let mut saved = profile::load()?;
    if remote.url.is_some() {
        saved.url = remote.url.clone();
    }
    if remote.token.is_some() {
        saved.token = remote.token.clone();
    }
    if remote.cacert.is_some() {
        saved.cacert = remote
            .cacert
            .as_ref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    }
    let target = Remote {
        url: saved.url.clone(),
        token: saved.token.clone(),
        cacert: saved.cacert.clone(),
        json: false,
    }
    .target()?;
    let client = client::Client::new(target)?;
    // Any authenticated route tells a known token from an unknown one (401).
    match client.call(Method::GET, "/api/2.0/serving-endpoints", None) {
        Err(e) if e.to_string().contains("401") => return Err(e),
        Err(e) if e.to_string().contains("cannot reach") => return Err(e),
        _ => {}
    }
    let path = profile::save(&saved).context("saving the login")?;
    println!(
        "logged in to {}; saved in {} (mode 0600)",
        client.url(),
        path.display()
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

fn serve(flags: config::Settings) -> Result<()> {
    let config = config::ServeConfig::load(flags, std::env::var("SANDSERVE_ADMIN_TOKEN").ok())?;
    logging::start(config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        // Workers run small requests' sandboxes inline (serving/placement.rs).
        .thread_stack_size(sandserve_host::runtime::HOST_THREAD_STACK_BYTES)
        .enable_all()
        .build()?
        .block_on(sandserve_host::server::serve(config))?;
    Ok(())
}
