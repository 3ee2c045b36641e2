//! The `sandserve` binary: parse the command line, start logging, run the command
//! (`cli/` holds the commands).

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    cli::run(cli::Cli::parse().command)
}
