#!/usr/bin/env bash
# The Python environment of the client compatibility suite: a project-local venv at
# .compat/venv (git-ignored) with the pinned clients of tests/compat/requirements.txt.
# Idempotent: a rerun with an unchanged requirements file takes about a second.
#   tests/compat/setup.sh          # PYTHON=python3.11 to choose the interpreter, FORCE=1 to reinstall
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.compat/venv"
REQS="$ROOT/tests/compat/requirements.txt"
STAMP="$ROOT/.compat/requirements.sha256"
PY="$VENV/bin/python"
say() { echo "[compat-setup] $*"; }

mkdir -p "$ROOT/.compat"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ "${FORCE:-0}" != 1 && -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    say "venv up to date ($VENV)"
    exit 0
fi
say "creating venv at $VENV"
rm -rf "$VENV" "$STAMP"
"${PYTHON:-python3}" -m venv "$VENV"
say "installing $REQS"
"$PY" -m pip install --quiet --disable-pip-version-check -r "$REQS"
echo "$want" > "$STAMP"
say "done"
