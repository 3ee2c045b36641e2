//! The `sandserve` binary: parse the command line, start logging, run the command
//! (`cli/` holds the commands).

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDSERVE_LOG")
                .unwrap_or_else(|_| "info,wasmtime_wasi_nn=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    cli::run(cli::Cli::parse().command)
}
