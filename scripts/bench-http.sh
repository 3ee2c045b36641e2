#!/usr/bin/env bash
# HTTP benchmark of the serving endpoints against a bare axum route (docs/benchmarks.md):
# builds the release binary, then runs `cargo bench -p sandserve-tests --bench http`, then
# the dynamic batching benchmarks (`--bench batching`, `--bench shared_batching`) and the
# cluster benchmark (`--bench cluster`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-engines.sh >/dev/null
# shellcheck source=/dev/null
source .engines/env.sh
cargo build --release --locked -p sandserve-host
cargo bench --locked -p sandserve-tests --bench http
# Dynamic batching: the same MLP batched and unbatched, at concurrency 1 and 32.
cargo bench --locked -p sandserve-tests --bench batching
# Two tenants on one shared MLP, batched together against unbatched, 16 clients each.
cargo bench --locked -p sandserve-tests --bench shared_batching
# Cluster mode: a forwarding hop against direct serving, and a new node's cold start for
# 100 versions (three nodes on PostgreSQL + S3, started by the bench).
cargo bench --locked -p sandserve-tests --bench cluster
