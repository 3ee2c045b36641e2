#!/usr/bin/env bash
# Hostile-neighbour benchmark (docs/benchmarks.md, docs/security.md): tenant B's p50/p99 and
# errors while tenant A attacks at its limits, against B's quiet baseline in the same run,
# and the server's peak memory against its budget. Builds the release binary first.
#   SANDSERVE_BENCH_SECS=N     seconds each phase measures (default 5)
#   SANDSERVE_BENCH_ONLY=spin  the quiet phase and one attack (spin, memory, json, slowloris, stalled)
#   SANDSERVE_BENCH_A_ELSEWHERE=1  tenant A on a second server process (a diagnostic)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-engines.sh >/dev/null
# shellcheck source=/dev/null
source .engines/env.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -p sandserve-host
cargo bench --locked -p sandserve-tests --bench neighbour
