//! The log on standard error: `SANDSERVE_LOG` filters (default `info`), text with colours
//! only on a terminal, or JSON lines (`serve --log-format json`).

use sandserve_host::config::LogFormat;
use std::io::IsTerminal;

/// Starts the log in `format`.
pub fn start(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANDSERVE_LOG")
        .unwrap_or_else(|_| "info,wasmtime_wasi_nn=off".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
