"""tritonclient (HTTP, the pinned PyPI release) with its defaults against the real server:
binary tensors both ways, health, model readiness, metadata, configuration, repository
index, statistics (batch statistics of a graph that batches included), infer (the digits
classifier and the echo handler), JSON tensors when asked, async_infer, and errors as the
client raises them.

The bearer token travels through a client plugin, the hook tritonclient documents for
authentication headers; nothing else of the client is changed.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient._plugin import InferenceServerClientPlugin
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from conftest import ROOT, renamed_package, upload, wait_until

MODEL_DIR = ROOT / "examples/digits/model"


class Bearer(InferenceServerClientPlugin):
    """Adds `Authorization: Bearer <token>` to every request."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"


def client_for(url: str, token: str) -> httpclient.InferenceServerClient:
    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"), concurrency=4)
    client.register_plugin(Bearer(token))
    return client


@pytest.fixture
def triton(models):
    """A CAN_QUERY client of a tenant with `echo` v1 and `digits` v1."""
    client = client_for(models.url, models.tokens["CAN_QUERY"])
    yield client
    client.close()


def digits_test_set(n: int):
    """The first `n` held-out images as the client sends them (0..=16 intensities), with
    the labels and probabilities scripts/setup-engines.sh recorded for them."""
    images = np.fromfile(MODEL_DIR / "test_inputs.f32", dtype="<f4").reshape(-1, 64)[:n] * 16.0
    labels = np.fromfile(MODEL_DIR / "expected_labels.i64", dtype="<i8")[:n]
    probabilities = np.fromfile(MODEL_DIR / "expected_probabilities.f32", dtype="<f4")
    return images.astype(np.float32), labels, probabilities.reshape(-1, 10)[:n]


def images_input(images: np.ndarray, binary_data: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary_data)
    return tensor


def test_health_and_server_metadata(triton, server):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    # The protocol's health answers: a status code and an empty body, no token needed.
    for path in ("/v2/health/live", "/v2/health/ready"):
        r = requests.get(server.url + path, timeout=10)
        assert (r.status_code, r.content) == (200, b""), path
    meta = triton.get_server_metadata()
    assert meta["name"] == "sandserve"
    assert meta["version"]
    assert set(meta["extensions"]) == {
        "binary_tensor_data",
        "parameters",
        "model_configuration",
        "statistics",
    }, meta


def test_model_ready_metadata_and_config(triton):
    assert triton.is_model_ready("digits")
    assert triton.is_model_ready("digits", "1")
    assert not triton.is_model_ready("digits", "2")
    assert not triton.is_model_ready("nope")

    meta = triton.get_model_metadata("digits")
    assert meta["name"] == "digits"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ]
    assert triton.get_model_metadata("digits", "1") == meta
    # echo declares no signature and takes any tensors: it cannot describe them.
    echo = triton.get_model_metadata("echo")
    assert (echo["inputs"], echo["outputs"]) == ([], []), echo

    config = triton.get_model_config("digits")
    assert config["name"] == "digits"
    assert config["max_batch_size"] == 0
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("images", "TYPE_FP32", [-1, 64])
    ]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("label", "TYPE_INT64", [-1]),
        ("probabilities", "TYPE_FP32", [-1, 10]),
    ]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["instance_group"][0]["count"] >= 1
    assert config["default_model_filename"] == "digits.wasm"

    with pytest.raises(InferenceServerException) as missing:
        triton.get_model_config("nope")
    assert missing.value.status() == "404"
    assert "nope" in missing.value.message()


def test_infer_digits_with_binary_tensors(triton):
    images, labels, probabilities = digits_test_set(16)
    result = triton.infer("digits", [images_input(images)])
    # tritonclient's defaults: the input went as binary data, and every output came back
    # as binary data after the JSON header.
    response = result.get_response()
    assert response["model_name"] == "digits"
    assert response["model_version"] == "1"
    for output in response["outputs"]:
        assert "data" not in output, output
        assert output["parameters"]["binary_data_size"] > 0, output
    got_labels = result.as_numpy("label")
    assert got_labels.dtype == np.int64
    assert got_labels.shape == (16,)
    np.testing.assert_array_equal(got_labels, labels)
    got = result.as_numpy("probabilities")
    assert got.shape == (16, 10)
    np.testing.assert_allclose(got, probabilities, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(axis=1), labels)


def test_infer_digits_with_json_tensors(triton):
    images, labels, _ = digits_test_set(4)
    outputs = [httpclient.InferRequestedOutput("label", binary_data=False)]
    result = triton.infer(
        "digits", [images_input(images, binary_data=False)], outputs=outputs, model_version="1"
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["label"]
    assert response["outputs"][0]["data"] == labels.tolist()
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    assert result.as_numpy("probabilities") is None


def test_infer_echo_several_inputs_of_every_kind(triton):
    values = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "f16": np.array([1.0, -2.5, 65504.0], dtype=np.float16),
        "i64": np.array([[np.iinfo(np.int64).min], [7]], dtype=np.int64),
        "u8": np.array([0, 255], dtype=np.uint8),
        "flags": np.array([True, False, True]),
        "text": np.array([b"hello", b"", "h\u00e9".encode()], dtype=np.object_),
    }
    inputs = []
    for name, array in values.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        # One input as JSON among the binary ones.
        tensor.set_data_from_numpy(array, binary_data=name != "u8")
        inputs.append(tensor)
    result = triton.infer("echo", inputs, request_id="several", parameters={"note": "kept"})
    response = result.get_response()
    assert response["id"] == "several"
    assert response["parameters"] == {"note": "kept"}, "the handler sees custom parameters"
    for name, array in values.items():
        got = result.as_numpy(name)
        assert got.shape == array.shape, name
        np.testing.assert_array_equal(got, array, err_msg=name)
    counts = result.as_numpy("element_counts")
    np.testing.assert_array_equal(counts, [a.size for a in values.values()])


def test_fp64_json_data_arrives_exactly(triton):
    # Doubles whose shortest text (what tritonclient's JSON encoding writes) a fast,
    # not exactly rounded float parser reads one ulp off; the echo handler must get, and
    # give back, the very same doubles.
    values = np.array(
        [0.17004902735071079, 3816.7244344497485, 103795.96131000601, -230.76437453339406],
        dtype=np.float64,
    )
    tensor = httpclient.InferInput("x", list(values.shape), "FP64")
    tensor.set_data_from_numpy(values, binary_data=False)
    result = triton.infer("echo", [tensor])
    got = result.as_numpy("x")
    assert got.dtype == np.float64
    assert got.tobytes() == values.tobytes(), (got.tolist(), values.tolist())


def test_async_infer(triton):
    images, labels, _ = digits_test_set(12)
    pending = [
        triton.async_infer("digits", [images_input(images[i : i + 3])]) for i in range(0, 12, 3)
    ]
    got = np.concatenate([p.get_result(timeout=60).as_numpy("label") for p in pending])
    np.testing.assert_array_equal(got, labels)


def test_errors_reach_the_client_with_the_field_named(triton):
    wrong = httpclient.InferInput("pixels", [1, 64], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    with pytest.raises(InferenceServerException) as refused:
        triton.infer("digits", [wrong])
    assert refused.value.status() == "400"
    assert "images" in refused.value.message() or "pixels" in refused.value.message()

    classify = [httpclient.InferRequestedOutput("probabilities", class_count=3)]
    images, _, _ = digits_test_set(1)
    with pytest.raises(InferenceServerException) as refused:
        triton.infer("digits", [images_input(images)], outputs=classify)
    assert refused.value.status() == "400"
    assert "classification" in refused.value.message()

    with pytest.raises(InferenceServerException) as refused:
        triton.load_model("digits")
    assert refused.value.status() == "400"
    assert "not supported" in refused.value.message()


def test_statistics_count_what_ran(triton, models):
    images, _, _ = digits_test_set(2)
    for _ in range(3):
        triton.infer("digits", [images_input(images)])
    wrong = httpclient.InferInput("images", [1, 63], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        triton.infer("digits", [wrong])

    stats = triton.get_inference_statistics("digits")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("digits", "1")]
    s = stats[0]
    inference = s["inference_stats"]
    assert inference["success"]["count"] == 3, s
    assert inference["fail"]["count"] == 1, s
    assert s["inference_count"] == 3
    assert s["execution_count"] == 3
    assert inference["compute_infer"]["count"] == 3
    assert inference["compute_input"]["count"] == 4, "the refused request was decoded too"
    assert inference["compute_output"]["count"] == 3
    assert inference["queue"]["count"] == 3
    for stage in ("success", "fail", "compute_input", "compute_infer", "compute_output"):
        assert inference[stage]["ns"] > 0, stage
    assert inference["success"]["ns"] >= inference["compute_infer"]["ns"]
    assert s["last_inference"] > 1_600_000_000_000, "epoch milliseconds"
    one = triton.get_inference_statistics("digits", "1")["model_stats"]
    assert [(x["name"], x["version"]) for x in one] == [("digits", "1")]
    assert one[0]["inference_stats"]["success"]["count"] == 3

    # All models: echo has never run.
    every = {(m["name"], m["version"]): m for m in triton.get_inference_statistics()["model_stats"]}
    assert set(every) == {("digits", "1"), ("echo", "1")}
    assert every[("echo", "1")]["inference_stats"]["success"]["count"] == 0
    assert every[("digits", "1")]["inference_stats"]["success"]["count"] == 3


def test_repository_index_lists_models_and_endpoints(triton, models):
    index = triton.get_model_repository_index()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("digits", "1", "READY"),
        ("echo", "1", "READY"),
    ]
    # A serving endpoint is a V2 model of its own name, served by its entities.
    api = models.api()
    r = api.post(
        "/api/2.0/serving-endpoints",
        {"name": "classifier",
         "config": {"served_entities": [{"entity_name": "digits", "entity_version": "1"}]}},
    )
    assert r.status in (200, 201), (r.status, r.body)
    wait_until(lambda: triton.is_model_ready("classifier"), what="endpoint ready")
    index = triton.get_model_repository_index()
    assert ("classifier", "1", "READY") in [(m["name"], m["version"], m["state"]) for m in index]
    images, labels, _ = digits_test_set(5)
    result = triton.infer("classifier", [images_input(images)])
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    assert triton.get_model_metadata("classifier")["inputs"][0]["name"] == "images"
    stats = triton.get_inference_statistics("classifier")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("digits", "1")]
    assert stats[0]["inference_stats"]["success"]["count"] >= 1


def with_batching(package: bytes, name: str) -> bytes:
    """The digits package as model `name`, its graph batching requests together (up to 8
    rows, waiting up to 100 ms for them: long enough that concurrent requests meet even on
    a loaded machine)."""
    batching = "\n[graphs.batching]\nmax_batch_size = 8\nmax_delay_us = 100000\n"

    def edit(text: str) -> str:
        assert "intra_op_threads = 1\n" in text
        return text.replace("intra_op_threads = 1\n", "intra_op_threads = 1\n" + batching, 1)

    return renamed_package(package, "digits", name, edit)


def test_statistics_show_the_batches_a_batched_graph_ran(triton, models, packages):
    """tritonclient's concurrent requests to a model whose graph batches: the answers are
    the unbatched model's, and `get_inference_statistics` shows the batches as Triton's
    dynamic batcher reports them (`batch_stats` by batch size, `execution_count` one per
    batch)."""
    upload(models.api(), "digits-batched", with_batching(packages["digits"], "digits-batched"))
    images, labels, probabilities = digits_test_set(16)
    # Requests batch when they are in flight together: 8 clients, each in a thread of its
    # own (tritonclient's HTTP client belongs to the thread that made it), sending one row
    # at once after a barrier, twice.
    start = threading.Barrier(8)

    def send(i: int):
        client = client_for(models.url, models.tokens["CAN_QUERY"])
        try:
            start.wait()
            return client.infer("digits-batched", [images_input(images[i : i + 1])])
        finally:
            client.close()

    results = []
    for burst in (range(0, 8), range(8, 16)):
        with ThreadPoolExecutor(8) as pool:
            results += list(pool.map(send, burst))
    np.testing.assert_array_equal(np.concatenate([r.as_numpy("label") for r in results]), labels)
    got = np.concatenate([r.as_numpy("probabilities") for r in results])
    np.testing.assert_allclose(got, probabilities, rtol=1e-4, atol=1e-6)

    (s,) = triton.get_inference_statistics("digits-batched", "1")["model_stats"]
    assert s["inference_count"] == 16, s
    batches = s["batch_stats"]
    assert batches, s
    runs = sum(b["compute_infer"]["count"] for b in batches)
    rows = sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches)
    assert rows == 16, batches
    assert s["execution_count"] == runs < 16, s
    assert max(b["batch_size"] for b in batches) >= 2, batches
    for b in batches:
        assert b["compute_infer"]["count"] >= 1 and b["compute_infer"]["ns"] > 0, b
        # Joining and cutting take time only where there was more than one request.
        if b["batch_size"] >= 2:
            assert b["compute_input"]["ns"] > 0 and b["compute_output"]["ns"] > 0, b

    # The unbatched model has no batch statistics, and one execution per request.
    for _ in range(2):
        triton.infer("digits", [images_input(images[:1])])
    (plain,) = triton.get_inference_statistics("digits", "1")["model_stats"]
    assert plain["batch_stats"] == [] and plain["execution_count"] == 2, plain
