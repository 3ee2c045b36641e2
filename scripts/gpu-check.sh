#!/usr/bin/env bash
# GPU check (issue 6): the digits example and the >= 10 ms benchmark CNN deployed with graphs
# on `gpu` and on `cpu`, queried over HTTP, compared (p50/p99, throughput at batch 1/8/64, max
# relative error). Three modes:
#
#   scripts/gpu-check.sh --cpu-only   here, no GPU: both sides on the CPU (checks the machinery)
#   scripts/gpu-check.sh stage        build machine: release build with `cuda`, packages, and
#                                     ONNX Runtime GPU staged into .gpu-1..4 (../shared/gpu)
#   .gpu-4/gpu-check.sh run           GPU machine, after `source .gpu-4/unpack-on-device.sh`
#
# On a lent GPU machine: carry .gpu-1, .gpu-2, .gpu-3 in three calls (each copied into
# /tmp/ortgpu), then .gpu-4 with `source .gpu-4/unpack-on-device.sh && .gpu-4/gpu-check.sh run`.
set -euo pipefail
mode=${1:---cpu-only}
here=$(cd "$(dirname "$0")" && pwd)

# make_packages OUT_DIR SANDSERVE_BIN DIGITS_WASM PROXY_WASM DIGITS_ONNX CNN_ONNX GPU_TARGET
# writes <model>-gpu.tar.gz (graph target GPU_TARGET) and <model>-cpu.tar.gz (target cpu).
make_packages() {
  local out=$1 bin=$2 digits_wasm=$3 proxy_wasm=$4 digits_onnx=$5 cnn_onnx=$6 gpu_target=$7 target model dir graph
  for target in gpu cpu; do
    for model in digits cnn; do
      dir=$(mktemp -d)
      mkdir -p "$dir/model"
      if [ $model = digits ]; then
        cp "$digits_wasm" "$dir/handler.wasm"; cp "$digits_onnx" "$dir/model/graph.onnx"; graph=digits
      else
        cp "$proxy_wasm" "$dir/handler.wasm"; cp "$cnn_onnx" "$dir/model/graph.onnx"; graph=bench
      fi
      cat > "$dir/sandserve.toml" <<EOT
name = "$model-$target"
handler = "handler.wasm"
[limits]
timeout_ms = 60000
memory_mib = 512
max_output_mib = 256
[[graphs]]
name = "$graph"
encoding = "onnx"
files = ["model/graph.onnx"]
target = "$([ $target = gpu ] && echo "$gpu_target" || echo cpu)"
intra_op_threads = 0
EOT
      "$bin" package "$dir" --output "$out/$model-$target.tar.gz" >/dev/null
      rm -rf "$dir"
    done
  done
}

# run_check BIN PACKAGES_DIR [targets...]: start a server, deploy, compare.
run_check() {
  local bin=$1 packages=$2 url port=18555 admin=gpu-check-admin-token-0123 data token model target
  data=$(mktemp -d)
  SANDSERVE_ADMIN_TOKEN=$admin SANDSERVE_LOG=warn "$bin" serve --listen 127.0.0.1:$port --data-dir "$data" &
  local server=$!
  trap 'kill $server 2>/dev/null || true' RETURN
  url=http://127.0.0.1:$port
  for _ in $(seq 1 100); do curl -sf $url/health >/dev/null && break; sleep 0.2; done
  echo "engines: $(curl -s $url/health -H "Authorization: Bearer $admin" | python3 -c 'import json,sys; e=json.load(sys.stdin)["engines"]; print({k: v.get("version") or v.get("error") for k, v in e.items()})')"
  curl -sf -X POST $url/api/2.0/tenants -H "Authorization: Bearer $admin" -d '{"name":"gpu"}' >/dev/null
  token=$(curl -sf -X POST $url/api/2.0/tokens -H "Authorization: Bearer $admin" \
    -d '{"tenant":"gpu","permissions":["CAN_MANAGE"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  for model in digits cnn; do
    for target in gpu cpu; do
      curl -sf -X POST "$url/api/2.0/models/$model-$target/versions" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/gzip' --data-binary "@$packages/$model-$target.tar.gz" >/dev/null \
        || { echo "upload of $model-$target refused:"; curl -s -X POST "$url/api/2.0/models/$model-$target/versions" \
               -H "Authorization: Bearer $token" --data-binary "@$packages/$model-$target.tar.gz" -H 'Content-Type: application/gzip'; echo; return 1; }
    done
  done
  TOKEN=$token "${PYTHON:-python3}" "$here/gpu_compare.py" $url digits:64 cnn:3,64,64
}

case "$mode" in
  --cpu-only)
    root=$(cd "$here/.." && pwd); cd "$root"
    scripts/setup-engines.sh >/dev/null
    # shellcheck source=/dev/null
    source .engines/env.sh
    cargo build --locked -p sandserve-host
    # The guests go to examples/target whatever CARGO_TARGET_DIR says; the server binary
    # is wherever cargo put it.
    bin="${CARGO_TARGET_DIR:-target}/debug/sandserve"
    (cd examples && cargo build --release --locked --target wasm32-wasip2 -p digits --target-dir "$root/examples/target")
    (cd tests/fixtures && cargo build --release --locked --target wasm32-wasip2 -p nn-proxy --target-dir "$root/examples/target")
    out=$(mktemp -d)
    wasm=examples/target/wasm32-wasip2/release
    # No GPU here: the "gpu" side asks for gpu-or-cpu and so runs on the CPU too.
    make_packages "$out" "$bin" $wasm/digits.wasm $wasm/nn_proxy.wasm \
      examples/digits/model/digits.onnx models/bench_cnn.onnx gpu-or-cpu
    PYTHON=$SANDSERVE_ENGINES_PYTHON \
    GPU_CHECK_REQUESTS=${GPU_CHECK_REQUESTS:-5} run_check "$bin" "$out"
    ;;
  stage)
    root=$(cd "$here/.." && pwd); cd "$root"
    scripts/setup-engines.sh >/dev/null
    cargo build --release --locked -p sandserve-host --features cuda
    (cd examples && cargo build --release --locked --target wasm32-wasip2 -p digits)
    (cd tests/fixtures && cargo build --release --locked --target wasm32-wasip2 -p nn-proxy --target-dir ../../examples/target)
    /work/shared/gpu/stage-onnxruntime-gpu.sh 2>/dev/null || ../shared/gpu/stage-onnxruntime-gpu.sh
    wasm=examples/target/wasm32-wasip2/release
    make_packages .gpu-4 target/release/sandserve $wasm/digits.wasm $wasm/nn_proxy.wasm \
      examples/digits/model/digits.onnx models/bench_cnn.onnx gpu
    cp target/release/sandserve scripts/gpu-check.sh scripts/gpu_compare.py .gpu-4/
    du -sh .gpu-4
    ;;
  run)
    run_check "$here/sandserve" "$here"
    ;;
  *)
    echo "usage: $0 [--cpu-only | stage | run]" >&2; exit 2 ;;
esac
