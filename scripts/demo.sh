#!/usr/bin/env bash
# The main job, from a fresh machine: installs the engines and models, builds sandserve and
# the digits example, starts the server with a demo tenant and the digits model deployed
# behind a serving endpoint, queries it once, and prints curl lines that work as printed.
# The server keeps running until Ctrl-C (DEMO_EXIT=1 stops it after the check instead).
# It serves plain HTTP on loopback; DEMO_TLS=1 serves HTTPS with a self-signed certificate
# made by `sandserve cert --self-signed` (the curl lines then trust it with --cacert).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${SANDSERVE_DEMO_PORT:-8080}
tls=${DEMO_TLS:-0}
if [ "$tls" = 1 ]; then
  url="https://localhost:$port"
  curl="curl --cacert $root/target/demo-tls/cert.pem"
else
  url="http://127.0.0.1:$port"
  curl="curl"
fi
data=${SANDSERVE_DEMO_DATA:-$root/target/demo-data}
admin_token=${SANDSERVE_ADMIN_TOKEN:-demo-admin-token-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')}

step() { echo; echo "==> $*"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

step "toolchain, wasm target, engines and models"
rustup target add wasm32-wasip2 >/dev/null
scripts/setup-engines.sh

step "building sandserve"
cargo build --locked -p sandserve-host
bin=target/debug/sandserve

step "packaging examples/digits (builds the handler for wasm32-wasip2)"
$bin package examples/digits --output target/digits.tar.gz

tls_args=()
if [ "$tls" = 1 ]; then
  step "making a self-signed certificate for localhost (target/demo-tls)"
  mkdir -p target/demo-tls
  $bin cert --self-signed --cert target/demo-tls/cert.pem --key target/demo-tls/key.pem
  tls_args=(--tls-cert target/demo-tls/cert.pem --tls-key target/demo-tls/key.pem)
  step "starting the server on $url: HTTPS (TLS 1.2/1.3, HTTP/2), data in $data"
else
  step "starting the server on $url: plain HTTP on loopback (DEMO_TLS=1 for HTTPS), data in $data"
fi
rm -rf "$data"
SANDSERVE_ADMIN_TOKEN="$admin_token" SANDSERVE_LOG=warn \
  $bin serve --listen "127.0.0.1:$port" --data-dir "$data" "${tls_args[@]}" > target/demo-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  $curl -sf "$url/health" >/dev/null && break
  sleep 0.1
done
$curl -sf "$url/health" >/dev/null || { cat target/demo-server.log; exit 1; }

step "creating tenant 'demo' and a CAN_MANAGE token"
$curl -sf -X POST "$url/api/2.0/tenants" -H "Authorization: Bearer $admin_token" -d '{"name":"demo"}' >/dev/null
token=$($curl -sf -X POST "$url/api/2.0/tokens" -H "Authorization: Bearer $admin_token" \
  -d '{"tenant":"demo","permissions":["CAN_MANAGE"],"comment":"demo"}' | json '["token"]')

step "uploading the digits package as model 'digits' (version 1)"
$curl -sf -X POST "$url/api/2.0/models/digits/versions" -H "Authorization: Bearer $token" \
  -H "Content-Type: application/gzip" --data-binary @target/digits.tar.gz
echo

step "creating serving endpoint 'digits'"
$curl -sf -X POST "$url/api/2.0/serving-endpoints" -H "Authorization: Bearer $token" \
  -d '{"name":"digits","config":{"served_entities":[{"entity_name":"digits","entity_version":"1"}]}}' >/dev/null
for _ in $(seq 1 200); do
  state=$($curl -sf "$url/api/2.0/serving-endpoints/digits" -H "Authorization: Bearer $token" | json '["state"]["ready"]')
  [ "$state" = READY ] && break
  sleep 0.1
done
echo "endpoint state: $state"

# One handwritten "0" from scikit-learn's digits set (pixel intensities 0..16).
zero='[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]'
step "querying it (Databricks 'instances' format)"
$curl -sf -X POST "$url/serving-endpoints/digits/invocations" -H "Authorization: Bearer $token" \
  -d "{\"instances\":[$zero]}"
echo

cat <<EOF_LINES

sandserve is running at $url. Try (these work as printed):

  # Databricks query API, four formats
  $curl -s -X POST $url/serving-endpoints/digits/invocations -H 'Authorization: Bearer $token' -d '{"instances":[$zero]}'
  $curl -s -X POST $url/serving-endpoints/digits/invocations -H 'Authorization: Bearer $token' -d '{"inputs":{"images":[$zero]}}'

  # KServe Open Inference Protocol V2
  $curl -s -X POST $url/v2/models/digits/infer -H 'Authorization: Bearer $token' -d '{"inputs":[{"name":"images","shape":[1,64],"datatype":"FP32","data":$zero}]}'
  $curl -s $url/v2/models/digits -H 'Authorization: Bearer $token'

  # Management
  $curl -s $url/api/2.0/serving-endpoints/digits -H 'Authorization: Bearer $token'
  $curl -s $url/api/2.0/models -H 'Authorization: Bearer $token'
  $curl -s $url/health

Server log: target/demo-server.log. Admin token: $admin_token
EOF_LINES

if [ "${DEMO_EXIT:-0}" = 1 ]; then
  exit 0
fi
echo "Press Ctrl-C to stop the server."
wait $server
