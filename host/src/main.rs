//! The `sandserve` binary: parse the command line, start logging, run the command
//! (`cli/` holds the commands).

mod cli;

use anyhow::Result;
use clap::Parser;

/// mimalloc instead of glibc malloc: requests allocate on an async worker and free on a
/// guest thread (and back), which glibc's arenas handle poorly (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    cli::run(cli::Cli::parse().command)
}
