#!/usr/bin/env python3
"""Digits example model: trains the classifier and writes the ONNX model plus test fixtures.

Owns: examples/digits/model/{digits.onnx, test_inputs.f32, test_labels.i64,
expected_labels.i64, expected_probabilities.f32, meta.json} (all generated, git-ignored).
Run by scripts/setup-engines.sh with the .engines venv python.

Usage: make_model.py [OUT_DIR]   (default: this script's directory)

Model: scikit-learn MLPClassifier on load_digits() (8x8 images, pixels 0..16 scaled to [0,1]),
exported with skl2onnx (zipmap off). Graph: input `input` float32 [N,64] ->
`label` int64 [N], `probabilities` float32 [N,10].
skl2onnx maps ArgMax -> class via ai.onnx.ml.ArrayFeatureExtractor, which OpenVINO's ONNX
frontend cannot convert; we rewrite that one node to the standard-opset Gather (same result
for a 1-D class table), so the model uses only default-domain ops and loads in both ORT and
OpenVINO. Note: OpenVINO CPU defaults to bf16 on AMX/AVX512-bf16 hosts; set
INFERENCE_PRECISION_HINT=f32 to match expected_probabilities.f32 tightly.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

OPSET = 17


def standard_ops_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make the graph default-domain only (ArrayFeatureExtractor -> Gather) with clean output names."""
    for i, node in enumerate(model.graph.node):
        if node.domain == "ai.onnx.ml" and node.op_type == "ArrayFeatureExtractor":
            gather = helper.make_node("Gather", list(node.input), list(node.output),
                                      name=node.name or "class_lookup", axis=0)
            model.graph.node.remove(node)
            model.graph.node.insert(i, gather)
    # Fold Identity nodes that only rename a graph output, so each output tensor has a single
    # name (OpenVINO otherwise reports the pre-Identity name, e.g. `out_activations_result`).
    outputs = {o.name for o in model.graph.output}
    for node in [n for n in model.graph.node if n.op_type == "Identity" and n.output[0] in outputs]:
        src, dst = node.input[0], node.output[0]
        if any(src == o.name for o in model.graph.output) or not any(
                src in n.output for n in model.graph.node):
            continue
        model.graph.node.remove(node)
        for n in model.graph.node:
            n.output[:] = [dst if t == src else t for t in n.output]
            n.input[:] = [dst if t == src else t for t in n.input]
    leftover = {n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    assert not leftover, f"non-standard ops left in graph: {leftover}"
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out_dir, exist_ok=True)

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)

    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=0)
    clf.fit(x_train, y_train)
    sk_labels = clf.predict(x_test)
    acc_sklearn = float(np.mean(sk_labels == y_test))

    model = to_onnx(clf, initial_types=[("input", FloatTensorType([None, 64]))],
                    options={id(clf): {"zipmap": False}},
                    target_opset={"": OPSET, "ai.onnx.ml": 3})
    model = standard_ops_only(model)
    model_path = os.path.join(out_dir, "digits.onnx")
    onnx.save(model, model_path)

    # Verify with ONNX Runtime; these outputs become the engine test expectations.
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    output_names = [o.name for o in sess.get_outputs()]
    assert input_name == "input" and output_names == ["label", "probabilities"], output_names
    labels, probs = sess.run(None, {input_name: x_test})
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float32)
    assert probs.shape == (len(x_test), 10), probs.shape
    assert np.array_equal(labels, sk_labels), "ONNX labels disagree with scikit-learn"
    assert np.allclose(probs, clf.predict_proba(x_test), atol=1e-4)
    acc_onnx = float(np.mean(labels == y_test))

    x_test.astype("<f4").tofile(os.path.join(out_dir, "test_inputs.f32"))
    y_test.astype("<i8").tofile(os.path.join(out_dir, "test_labels.i64"))
    labels.astype("<i8").tofile(os.path.join(out_dir, "expected_labels.i64"))
    probs.astype("<f4").tofile(os.path.join(out_dir, "expected_probabilities.f32"))
    meta = {"n_test": int(len(x_test)), "accuracy_sklearn": acc_sklearn,
            "accuracy_onnx": acc_onnx, "input_name": input_name, "output_names": output_names}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"digits: {len(x_test)} test samples, accuracy sklearn={acc_sklearn:.4f} "
          f"onnx={acc_onnx:.4f} -> {model_path}")


if __name__ == "__main__":
    main()
