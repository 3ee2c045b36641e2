#!/usr/bin/env bash
# Vendors the wasi-nn WIT that wasmtime-wasi-nn ships into wit/deps/wasi-nn/, copied from the
# crate cargo downloaded (never fetched from the network), with its license kept.
#   scripts/vendor-wit.sh          write wit/deps/wasi-nn/
#   scripts/vendor-wit.sh --check  fail when the vendored copy drifted from the crate's
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
manifest=$(cargo metadata --format-version 1 --locked 2>/dev/null |
  python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="wasmtime-wasi-nn"))')
crate=$(dirname "$manifest")
version=$(basename "$crate" | sed 's/^wasmtime-wasi-nn-//')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
{
  echo "// Vendored from the wasmtime-wasi-nn $version crate (wit/wasi-nn.wit) by scripts/vendor-wit.sh."
  echo "// Do not edit; license: Apache-2.0 WITH LLVM-exception, see LICENSE beside this file."
  cat "$crate/wit/wasi-nn.wit"
} >"$out/wasi-nn.wit"
cp "$crate/LICENSE" "$out/LICENSE"
dest=wit/deps/wasi-nn
if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out" "$dest" >/dev/null 2>&1; then
    echo "wit/deps/wasi-nn drifted from wasmtime-wasi-nn $version: run scripts/vendor-wit.sh" >&2
    exit 1
  fi
  echo "wit/deps/wasi-nn matches wasmtime-wasi-nn $version"
else
  mkdir -p "$dest"
  cp "$out"/* "$dest"/
  echo "vendored wasi-nn WIT from wasmtime-wasi-nn $version into $dest"
fi
