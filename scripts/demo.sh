#!/usr/bin/env bash
# The main job, from a fresh machine: builds the echo example handler and the sandserve
# host, then serves one request through the sandboxed runtime and prints the response.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "==> installing the wasm32-wasip2 target"
rustup target add wasm32-wasip2 >/dev/null
echo "==> building examples/echo for wasm32-wasip2"
(cd examples && cargo build --release --locked --target wasm32-wasip2 -p echo)
echo "==> building the sandserve host"
cargo build --locked -p sandserve-host
echo "==> one request through the sandbox"
request='{"inputs":[{"name":"pixels","shape":[2,3],"datatype":"FP32","data":[[0.1,0.2,0.3],[0.4,0.5,0.6]]},{"name":"label","shape":[1],"datatype":"BYTES","data":["seven"]}],"parameters":{"threshold":0.5}}'
echo "request: $request"
echo "$request" | target/debug/sandserve invoke examples/target/wasm32-wasip2/release/echo.wasm --input -
