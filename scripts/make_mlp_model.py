#!/usr/bin/env python3
"""Weight-bound benchmark model for dynamic batching: a plain MLP with a free batch dimension.

Owns: models/bench_mlp.onnx (4 hidden layers of 2048, 64 MiB of float32 weights: the
benchmark model), models/bench_floor.onnx (no hidden layer: the same input and output with
128 KiB of weights, so a request costs what the platform spends around the model: the
benchmark's floor) and models/test_mlp.onnx (4 layers of 256: the same graph, small enough
for end-to-end tests in a debug build). Generated, git-ignored. Run by
scripts/setup-engines.sh with the .engines venv python.

Usage: make_mlp_model.py [OUT_DIR]   (default: <repo>/models)

Graph (opset 17, IR 8): `x` float32 [N, W] -> L x (MatMul [W, W] + Add bias + Relu) ->
MatMul [W, 16] + Add -> `y` float32 [N, 16]. N is a free dimension (`batch`), so the host can
join requests along it. Weights are seeded numpy randoms (He init keeps activations O(1)),
so every run writes the same bytes. At batch 1 every run streams all of the weights through
the CPU for one row: the model is bound by memory bandwidth, which is what batching repays.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 2048
CLASSES = 16
MODELS = {"bench_mlp.onnx": (2048, 4), "bench_floor.onnx": (2048, 0), "test_mlp.onnx": (256, 4)}


def build(width, layers, seed=SEED):
    rng = np.random.default_rng(seed)
    nodes, inits, h = [], [], "x"
    dims = [width] * (layers + 1) + [CLASSES]
    for i, (cin, cout) in enumerate(zip(dims, dims[1:])):
        w = (rng.standard_normal((cin, cout)) * np.sqrt(2.0 / cin)).astype(np.float32)
        b = (0.01 * rng.standard_normal(cout)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(dims) - 2
        nodes.append(helper.make_node("MatMul", [h, f"w{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], ["y" if last else f"add{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"add{i}"], [f"relu{i}"]))
            h = f"relu{i}"
    graph = helper.make_graph(
        nodes, f"mlp_{layers}x{width}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        inits)
    model = helper.make_model(graph, producer_name="sandserve-bench",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17 needs IR >= 8; keeps ORT and OpenVINO happy
    onnx.checker.check_model(model)
    return model


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "models")
    os.makedirs(out_dir, exist_ok=True)
    for name, (width, layers) in MODELS.items():
        path = os.path.join(out_dir, name)
        onnx.save(build(width, layers), path)
        print(f"wrote {path} ({layers} x {width}, {os.path.getsize(path) >> 20} MiB)")


if __name__ == "__main__":
    main()
