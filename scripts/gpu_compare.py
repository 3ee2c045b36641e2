#!/usr/bin/env python3
"""GPU vs CPU over HTTP: latency (p50/p99), throughput and max relative error per model and batch.

Owns the measurement half of scripts/gpu-check.sh. Talks to a running sandserve whose tenant
token is in $TOKEN and which serves, for each model M, the endpoints `M-gpu` and `M-cpu`
(same image version, graphs with target gpu and cpu). Uses only the standard library plus
numpy (both on the GPU machine and in .engines/).

usage: gpu_compare.py URL MODEL[:INPUT_SHAPE_WITHOUT_BATCH] ...   e.g. digits:64 cnn:3,64,64
"""
import http.client
import json
import os
import sys
import time
import urllib.parse

import numpy as np

BATCHES = (1, 8, 64)
REQUESTS = int(os.environ.get("GPU_CHECK_REQUESTS", "50"))


def post(conn, path, body, token):
    conn.request("POST", path, body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"{path}: HTTP {response.status}: {data[:300]!r}")
    return json.loads(data)


def outputs(reply):
    return {o["name"]: np.asarray(o["data"], dtype=np.float64) for o in reply["outputs"]}


def main():
    url, models = sys.argv[1], sys.argv[2:]
    token = os.environ["TOKEN"]
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    rng = np.random.default_rng(0)
    rows = []
    for spec in models:
        model, _, shape = spec.partition(":")
        dims = [int(d) for d in shape.split(",")] if shape else [64]
        input_name = "images" if model == "digits" else "input"
        for batch in BATCHES:
            data = rng.uniform(0, 16 if model == "digits" else 1, size=[batch, *dims]).astype(np.float32)
            tensors = [{"name": input_name, "shape": [batch, *dims], "datatype": "FP32", "data": data.ravel().tolist()}]
            if model != "digits":
                tensors.insert(0, {"name": "graph", "shape": [1], "datatype": "BYTES", "data": ["bench"]})
            body = json.dumps({"inputs": tensors})
            results = {}
            for target in ("gpu", "cpu"):
                path = f"/v2/models/{model}-{target}/infer"
                first = outputs(post(conn, path, body, token))  # warm-up and reference output
                latencies = []
                started = time.perf_counter()
                for _ in range(REQUESTS):
                    t = time.perf_counter()
                    post(conn, path, body, token)
                    latencies.append(time.perf_counter() - t)
                wall = time.perf_counter() - started
                latencies.sort()
                results[target] = (first, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1], REQUESTS * batch / wall)
            gpu_out, cpu_out = results["gpu"][0], results["cpu"][0]
            rel = max(
                float(np.max(np.abs(gpu_out[k] - cpu_out[k]) / np.maximum(np.abs(cpu_out[k]), 1e-6)))
                for k in cpu_out
                if cpu_out[k].dtype.kind == "f"
            )
            rows.append((model, batch, results, rel))
    print("| model | batch | GPU p50 / p99 (ms) | CPU p50 / p99 (ms) | GPU items/s | CPU items/s | speed-up (p50) | max rel. error |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for model, batch, r, rel in rows:
        g, c = r["gpu"], r["cpu"]
        worst = max(worst, rel)
        print(f"| {model} | {batch} | {g[1]*1e3:.2f} / {g[2]*1e3:.2f} | {c[1]*1e3:.2f} / {c[2]*1e3:.2f} | {g[3]:.0f} | {c[3]:.0f} | {c[1]/g[1]:.2f}x | {rel:.2e} |")
    print(f"\nmax relative error GPU vs CPU: {worst:.2e} ({'ok' if worst <= 1e-3 else 'ABOVE 1e-3'})")


if __name__ == "__main__":
    main()
