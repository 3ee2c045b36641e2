//! The toolchain check `sandserve new` and `sandserve build` run before cargo: is there a
//! `cargo`, and does its `rustc` have the `wasm32-wasip2` standard library? Each failure
//! says what to run.

use super::AuthoringError;
use std::path::Path;
use std::process::Command;

/// The target handlers are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Checks, from `dir` (so that a `rust-toolchain.toml` there applies), that cargo runs and
/// that the active `rustc` has the [`TARGET`] standard library installed.
pub fn check(dir: &Path) -> Result<(), AuthoringError> {
    let run = |tool: &str, args: &[&str]| {
        Command::new(tool)
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if run("cargo", &["--version"]).is_none() {
        return Err(AuthoringError::Toolchain(
            "`cargo` was not found on PATH: install Rust with rustup (https://rustup.rs), then \
             run `rustup target add wasm32-wasip2`"
                .to_string(),
        ));
    }
    let sysroot = run("rustc", &["--print", "sysroot"]).ok_or_else(|| {
        AuthoringError::Toolchain(
            "`rustc --print sysroot` failed: install Rust with rustup (https://rustup.rs)"
                .to_string(),
        )
    })?;
    if !Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        return Err(AuthoringError::Toolchain(format!(
            "the Rust toolchain in use has no {TARGET} target; run `rustup target add {TARGET}` \
             (Rust 1.82 or later)"
        )));
    }
    Ok(())
}
