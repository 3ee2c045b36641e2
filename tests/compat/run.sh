#!/usr/bin/env bash
# The client compatibility suite: real clients from PyPI (pinned in requirements.txt)
# against the real sandserve binary on loopback. Builds nothing but the venv: build the
# binary first (`cargo build -p sandserve-host`) and generate the example models
# (scripts/setup-engines.sh); scripts/test.sh does both before it calls this.
#   tests/compat/run.sh [pytest args...]
# Env: SANDSERVE_BIN (default $CARGO_TARGET_DIR/debug/sandserve, else target/debug/sandserve).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$ROOT/tests/compat/setup.sh"
cd "$ROOT"
exec "$ROOT/.compat/venv/bin/python" -m pytest tests/compat -p no:cacheprovider "$@"
