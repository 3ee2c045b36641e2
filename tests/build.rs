//! Builds the guest components the tests and benchmarks run (examples/ and
//! tests/fixtures/) from source for wasm32-wasip2, in a target folder of their own, and
//! tells the tests where they are (`SANDSERVE_GUEST_DIR`). No .wasm is ever committed.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_WORKSPACES: [&str; 2] = ["examples", "tests/fixtures"];

fn main() {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let target_dir = out_dir.join("guest-target");
    for rel in ["guest-sdk/src", "guest-sdk/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(rel).display());
    }
    for workspace in GUEST_WORKSPACES {
        let dir = root.join(workspace);
        watch_workspace(&dir);
        build(&dir, &target_dir);
    }
    let guests = target_dir.join("wasm32-wasip2/release");
    println!("cargo:rustc-env=SANDSERVE_GUEST_DIR={}", guests.display());
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// Reruns this script when a guest crate's sources or manifest change (not its target/).
fn watch_workspace(dir: &Path) {
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
    }
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join("Cargo.toml").is_file() {
            println!(
                "cargo:rerun-if-changed={}",
                path.join("Cargo.toml").display()
            );
            println!("cargo:rerun-if-changed={}", path.join("src").display());
        }
    }
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--workspace",
        ])
        .arg("--target-dir")
        .arg(target_dir);
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
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", workspace.display()));
    assert!(
        status.success(),
        "building the guests in {} failed; is the target installed? `rustup target add wasm32-wasip2`",
        workspace.display()
    );
}
