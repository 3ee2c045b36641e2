//! Builds the built-in generic handler (`guests/generic`, the handler of model-only
//! packages) for wasm32-wasip2 from source and leaves it in `OUT_DIR` for
//! `authoring::model_only` to embed. No .wasm is committed; the target must be installed
//! (`rustup target add wasm32-wasip2`, which scripts/test.sh does).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let host = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = host.parent().expect("host/ lives in the repository root");
    let guest = root.join("guests/generic");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    for rel in [
        "guests/generic/src",
        "guests/generic/Cargo.toml",
        "guests/generic/Cargo.lock",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(rel).display());
    }
    // `sqlx::migrate!` embeds the PostgreSQL migrations: a changed one rebuilds the host.
    println!(
        "cargo:rerun-if-changed={}",
        host.join("migrations").display()
    );
    let target_dir = out.join("guest-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", guest.display()));
    assert!(
        status.success(),
        "building the generic handler (guests/generic) for wasm32-wasip2 failed; is the \
         target installed? Run `rustup target add wasm32-wasip2`"
    );
    let wasm = target_dir.join("wasm32-wasip2/release/generic_handler.wasm");
    std::fs::copy(&wasm, out.join("generic_handler.wasm"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", wasm.display()));
}
