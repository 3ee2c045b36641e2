#!/usr/bin/env python3
"""Benchmark model generator: a small ResNet-style CNN built with the plain onnx helper API.

Owns: models/bench_cnn.onnx, models/bench_input.f32, models/bench_expected.f32 (generated,
git-ignored). Run by scripts/setup-engines.sh with the .engines venv python.

Usage: make_bench_model.py [OUT_PATH]   (default: <repo>/models/bench_cnn.onnx)

Graph (opset 17, IR 8): `input` float32 [N,3,64,64] -> stem conv -> residual stages
(conv-relu-conv + skip, relu) with stride-2 transitions -> GlobalAveragePool -> Flatten ->
Gemm -> `logits` float32 [N,1000]. Weights are seeded numpy randoms (deterministic output).
Sized so one batch-1 inference with onnxruntime on one CPU thread takes roughly 10-25 ms.
bench_input.f32 / bench_expected.f32 are raw little-endian float32 (one batch-1 input and
ORT's logits for it).
"""
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 1234
IMAGE = 64
STEM = 48
STAGES = [(48, 3), (96, 3), (192, 3)]  # (channels, residual blocks); stride 2 between stages
CLASSES = 1000


class Builder:
    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0

    def name(self, kind):
        self.n += 1
        return f"{kind}_{self.n}"

    def conv(self, x, cin, cout, k=3, stride=1, relu=True, gain=1.0):
        w = self.rng.standard_normal((cout, cin, k, k)).astype(np.float32)
        w *= gain * np.sqrt(2.0 / (cin * k * k))  # He init keeps activations O(1)
        b = (0.01 * self.rng.standard_normal(cout)).astype(np.float32)
        wn, bn, y = self.name("w"), self.name("b"), self.name("conv")
        self.inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(b, bn)]
        self.nodes.append(helper.make_node("Conv", [x, wn, bn], [y], kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4))
        return self.relu(y) if relu else y

    def relu(self, x):
        y = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def block(self, x, c):
        h = self.conv(x, c, c)
        h = self.conv(h, c, c, relu=False, gain=0.3)  # damped so the residual sum stays bounded
        s = self.name("add")
        self.nodes.append(helper.make_node("Add", [x, h], [s]))
        return self.relu(s)


def build() -> onnx.ModelProto:
    g = Builder(np.random.default_rng(SEED))
    x, c = g.conv("input", 3, STEM), STEM
    for i, (ch, blocks) in enumerate(STAGES):
        if i > 0 or ch != c:
            x, c = g.conv(x, c, ch, stride=2 if i > 0 else 1), ch
        for _ in range(blocks):
            x = g.block(x, c)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    fw = (g.rng.standard_normal((CLASSES, c)) / np.sqrt(c)).astype(np.float32)
    fb = np.zeros(CLASSES, np.float32)
    g.inits += [numpy_helper.from_array(fw, "fc_w"), numpy_helper.from_array(fb, "fc_b")]
    g.nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        g.nodes, "bench_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        g.inits)
    model = helper.make_model(graph, producer_name="sandserve-bench",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17 needs IR >= 8; keeps ORT 1.31 and OpenVINO happy
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    import onnxruntime as ort

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "models", "bench_cnn.onnx")
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(build(), out)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(out, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(SEED + 1).standard_normal((1, 3, IMAGE, IMAGE)).astype(np.float32)
    for _ in range(3):
        (y,) = sess.run(None, {"input": x})
    times = []
    for _ in range(20):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    assert y.shape == (1, CLASSES) and np.isfinite(y).all()
    x.astype("<f4").tofile(os.path.join(out_dir, "bench_input.f32"))
    y.astype("<f4").tofile(os.path.join(out_dir, "bench_expected.f32"))
    print(f"bench: {out} ({os.path.getsize(out) / 1e6:.1f} MB), ORT 1 thread batch 1: "
          f"median {np.median(times) * 1e3:.1f} ms (min {min(times) * 1e3:.1f} ms, 20 runs)")


if __name__ == "__main__":
    main()
