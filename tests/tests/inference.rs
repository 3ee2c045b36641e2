//! Real inference through wasi-nn with the real engines: the digits handler agrees with
//! ONNX Runtime called natively on the whole held-out split (and with OpenVINO), graphs are
//! loaded once per version and run concurrently, a guest reaches only its own image's
//! graphs, and bad tensors come back as the caller's errors.
//!
//! Needs `scripts/setup-engines.sh` (engines + generated models). Without an engine these
//! tests print SKIPPED, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_host::inference::{
    graph_loads, load_graph, Encoding, EngineStatus, Engines, GraphFile, GraphOptions, GraphSet,
    GraphSpec, GuestLoadPolicy, InferenceError, Target,
};
use sandserve_host::runtime::{
    ElementType, LoadedHandler, Request, RequestLimits, Runtime, RuntimeError, Tensor,
};
use sandserve_tests::{
    bytes_tensor, engines, f32_tensor, f32_values, guest_wasm, i64_values, onnx_available,
    openvino_available, read, read_f32, read_i64, repo_root,
};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Serialises the tests that load graphs, so the process-wide load counter is exact.
static GRAPH_LOADING: Mutex<()> = Mutex::new(());

fn runtime() -> &'static Runtime {
    sandserve_tests::test_runtime()
}

fn handler(name: &str) -> LoadedHandler {
    runtime()
        .load(&format!("test/{name}@1"), &guest_wasm(name))
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

fn limits() -> RequestLimits {
    RequestLimits {
        timeout: Duration::from_secs(30),
        ..RequestLimits::default()
    }
}

fn digits_dir() -> PathBuf {
    repo_root().join("examples/digits/model")
}

fn spec(name: &str, encoding: Encoding, file: PathBuf, options: GraphOptions) -> GraphSpec {
    GraphSpec {
        name: name.to_string(),
        encoding,
        files: vec![GraphFile::open(&file).expect("model file opens")],
        options,
        image: String::new(),
    }
}

fn graphs(specs: &[GraphSpec], policy: GuestLoadPolicy) -> GraphSet {
    let _loading = GRAPH_LOADING.lock().unwrap_or_else(|p| p.into_inner());
    GraphSet::load(engines(), specs, policy).expect("graphs load")
}

fn digits_graphs(encoding: Encoding) -> GraphSet {
    graphs(
        &[spec(
            "digits",
            encoding,
            digits_dir().join("digits.onnx"),
            GraphOptions::default(),
        )],
        GuestLoadPolicy::Denied,
    )
}

fn request(inputs: Vec<Tensor>) -> Request {
    Request {
        inputs,
        parameters: None,
        raw_body: None,
    }
}

/// The held-out split as raw 0..=16 intensities (what a client sends), and its size.
fn test_images() -> (Vec<f32>, u64) {
    let normalised = read_f32(&digits_dir().join("test_inputs.f32"));
    let n = (normalised.len() / 64) as u64;
    (normalised.iter().map(|v| v * 16.0).collect(), n)
}

/// Native ONNX Runtime on the same model and inputs: (labels, probabilities).
fn native_digits(inputs: &[f32], n: usize) -> (Vec<i64>, Vec<f32>) {
    let mut session = sandserve_tests::native::session(&digits_dir().join("digits.onnx"));
    sandserve_tests::native::digits(&mut session, inputs, n)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run_digits(encoding: Encoding) {
    let graphs = digits_graphs(encoding);
    let digits = handler("digits");
    let (raw, n) = test_images();
    let out = digits
        .invoke(
            &request(vec![f32_tensor("images", &[n, 64], &raw)]),
            &limits(),
            graphs.nn_ctx(),
        )
        .expect("digits answers");
    let outputs = &out.response.outputs;
    assert_eq!(outputs[0].name, "label");
    assert_eq!(outputs[0].shape, vec![n]);
    assert_eq!(outputs[1].name, "probabilities");
    assert_eq!(outputs[1].shape, vec![n, 10]);
    let labels = i64_values(&outputs[0]);
    let probabilities = f32_values(&outputs[1]);

    let normalised = read_f32(&digits_dir().join("test_inputs.f32"));
    let (native_labels, native_probabilities) = native_digits(&normalised, n as usize);
    assert_eq!(
        labels, native_labels,
        "{encoding}: labels differ from native ORT"
    );
    let diff = max_abs_diff(&probabilities, &native_probabilities);
    assert!(
        diff <= 1e-5,
        "{encoding}: probabilities differ from native ORT by {diff}"
    );

    let python = read_f32(&digits_dir().join("expected_probabilities.f32"));
    assert!(max_abs_diff(&probabilities, &python) <= 1e-5);
    assert_eq!(labels, read_i64(&digits_dir().join("expected_labels.i64")));

    let truth = read_i64(&digits_dir().join("test_labels.i64"));
    let correct = labels.iter().zip(&truth).filter(|(a, b)| a == b).count();
    let accuracy = correct as f64 / n as f64;
    let meta: serde_json::Value =
        serde_json::from_slice(&read(&digits_dir().join("meta.json"))).expect("meta.json");
    let script_accuracy = meta["accuracy_onnx"].as_f64().expect("accuracy_onnx");
    println!(
        "digits on {encoding} through wasi-nn: accuracy {accuracy:.4} on {n} held-out images \
         (script: {script_accuracy:.4}), max |dp| vs native ORT {diff:.2e}"
    );
    assert!((accuracy - script_accuracy).abs() < 1e-9);

    // One image per request gives the same answer as the batch.
    for i in [0usize, 1, 17, n as usize - 1] {
        let image = &raw[i * 64..(i + 1) * 64];
        let single = digits
            .invoke(
                &request(vec![f32_tensor("image", &[8, 8], image)]),
                &limits(),
                graphs.nn_ctx(),
            )
            .expect("single image");
        assert_eq!(i64_values(&single.response.outputs[0]), vec![labels[i]]);
        let p = f32_values(&single.response.outputs[1]);
        assert!(max_abs_diff(&p, &probabilities[i * 10..(i + 1) * 10]) <= 1e-5);
    }
}

#[test]
fn digits_through_wasi_nn_matches_native_onnx_runtime_on_the_whole_test_split() {
    if onnx_available("digits on onnx") {
        run_digits(Encoding::Onnx);
    }
}

#[test]
fn digits_through_wasi_nn_on_openvino_matches_native_onnx_runtime() {
    if onnx_available("digits on openvino") && openvino_available("digits on openvino") {
        run_digits(Encoding::Openvino);
    }
}

#[test]
fn a_graph_is_loaded_once_per_version_not_per_request() {
    if !onnx_available("load once") {
        return;
    }
    let _loading = GRAPH_LOADING.lock().unwrap_or_else(|p| p.into_inner());
    let before = graph_loads();
    let set = GraphSet::load(
        engines(),
        &[spec(
            "digits",
            Encoding::Onnx,
            digits_dir().join("digits.onnx"),
            GraphOptions::default(),
        )],
        GuestLoadPolicy::Denied,
    )
    .expect("loads");
    assert_eq!(graph_loads(), before + 1);
    let digits = handler("digits");
    let (raw, _) = test_images();
    for i in 0..20 {
        let image = &raw[i * 64..(i + 1) * 64];
        digits
            .invoke(
                &request(vec![f32_tensor("image", &[1, 64], image)]),
                &limits(),
                set.nn_ctx(),
            )
            .expect("digits answers");
    }
    assert_eq!(graph_loads(), before + 1, "requests must not load graphs");
    let stats = set.get("digits").expect("digits graph").stats();
    assert_eq!(stats.runs, 20);
    assert_eq!(stats.failures, 0);
}

#[test]
fn concurrent_runs_on_one_graph_overlap_in_time() {
    if !onnx_available("concurrent runs") {
        return;
    }
    let models = repo_root().join("models");
    let set = graphs(
        &[spec(
            "bench",
            Encoding::Onnx,
            models.join("bench_cnn.onnx"),
            GraphOptions::default(),
        )],
        GuestLoadPolicy::Denied,
    );
    let input = read_f32(&models.join("bench_input.f32"));
    let expected = read_f32(&models.join("bench_expected.f32"));
    let proxy = handler("nn-proxy");
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let out = proxy
                    .invoke(
                        &request(vec![
                            bytes_tensor("graph", &["bench"]),
                            f32_tensor("input", &[1, 3, 64, 64], &input),
                        ]),
                        &limits(),
                        set.nn_ctx(),
                    )
                    .expect("bench graph answers");
                let logits = f32_values(&out.response.outputs[0]);
                let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(max_abs_diff(&logits, &expected) <= 1e-4 * scale.max(1.0));
            });
        }
    });
    let stats = set.get("bench").expect("bench graph").stats();
    assert_eq!(stats.runs, 8);
    println!(
        "bench graph: {} runs, at most {} at once",
        stats.runs, stats.max_active
    );
    assert!(
        stats.max_active >= 2,
        "8 concurrent requests never overlapped inside the graph: runs are serialised"
    );
}

#[test]
fn a_guest_reaches_only_its_own_images_graphs() {
    if !onnx_available("graph isolation") {
        return;
    }
    let model = digits_dir().join("digits.onnx");
    let image_a = digits_graphs(Encoding::Onnx);
    let _image_b = graphs(
        &[spec(
            "secret",
            Encoding::Onnx,
            model.clone(),
            GraphOptions::default(),
        )],
        GuestLoadPolicy::Denied,
    );
    let proxy = handler("nn-proxy");
    let pixels = vec![0.5f32; 64];
    let ask = |name: &str| {
        proxy.invoke(
            &request(vec![
                bytes_tensor("graph", &[name]),
                f32_tensor("input", &[1, 64], &pixels),
            ]),
            &limits(),
            image_a.nn_ctx(),
        )
    };
    ask("digits").expect("its own graph works");
    let host_path = model.display().to_string();
    for name in [
        "secret",
        host_path.as_str(),
        "../digits",
        "digits.onnx",
        "/etc/passwd",
        "",
    ] {
        match ask(name) {
            Err(RuntimeError::HandlerFailed(message)) => {
                assert!(message.contains("not-found"), "{name}: {message}");
            }
            other => panic!("{name:?} must not be reachable, got {other:?}"),
        }
    }
}

#[test]
fn guest_loaded_graph_bytes_need_the_manifest_and_fit_its_limit() {
    if !onnx_available("guest-loaded bytes") {
        return;
    }
    let model = read(&digits_dir().join("digits.onnx"));
    let from_bytes = handler("nn-bytes");
    let pixels = vec![0.25f32; 64];
    let ask = |policy| {
        let set = graphs(&[], policy);
        from_bytes.invoke(
            &request(vec![
                Tensor {
                    name: "model".into(),
                    shape: vec![model.len() as u64],
                    element_type: ElementType::U8,
                    data: model.clone(),
                },
                f32_tensor("input", &[1, 64], &pixels),
            ]),
            &limits(),
            set.nn_ctx(),
        )
    };
    match ask(GuestLoadPolicy::Denied) {
        Err(RuntimeError::HandlerFailed(message)) => {
            assert!(message.contains("invalid-encoding"), "{message}")
        }
        other => panic!("denied by default, got {other:?}"),
    }
    match ask(GuestLoadPolicy::Allowed { max_bytes: 1024 }) {
        Err(RuntimeError::HandlerFailed(message)) => {
            assert!(message.contains("exceed"), "{message}")
        }
        other => panic!("over the limit, got {other:?}"),
    }
    let out = ask(GuestLoadPolicy::Allowed {
        max_bytes: 16 << 20,
    })
    .expect("allowed and within the limit");
    let names: Vec<&str> = out
        .response
        .outputs
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["label", "probabilities"]);
}

#[test]
fn tensors_the_graph_or_handler_rejects_are_the_callers_errors() {
    if !onnx_available("bad tensors") {
        return;
    }
    let set = digits_graphs(Encoding::Onnx);
    let proxy = handler("nn-proxy");
    let wrong_type = Tensor {
        name: "input".into(),
        shape: vec![1, 64],
        element_type: ElementType::I64,
        data: vec![0; 64 * 8],
    };
    let cases = [
        (wrong_type, "must be float"),
        (f32_tensor("input", &[1, 63], &[0.0; 63]), "must have shape"),
        (
            f32_tensor("pixels", &[1, 64], &[0.0; 64]),
            "has no input `pixels`",
        ),
    ];
    for (tensor, expected) in cases {
        let result = proxy.invoke(
            &request(vec![bytes_tensor("graph", &["digits"]), tensor]),
            &limits(),
            set.nn_ctx(),
        );
        match result {
            Err(e @ RuntimeError::InvalidInput(_)) => {
                assert!(e.to_string().contains(expected), "{e}");
            }
            other => panic!("expected invalid input ({expected}), got {other:?}"),
        }
    }
    let digits = handler("digits");
    for (tensor, expected) in [
        (f32_tensor("x", &[1, 64], &[17.0; 64]), "within 0..=16"),
        (
            f32_tensor("x", &[2, 5], &[1.0; 10]),
            "expected images shaped",
        ),
    ] {
        match digits.invoke(&request(vec![tensor]), &limits(), set.nn_ctx()) {
            Err(e @ RuntimeError::InvalidInput(_)) => {
                assert!(e.to_string().contains(expected), "{e}")
            }
            other => panic!("expected invalid input ({expected}), got {other:?}"),
        }
    }
}

#[test]
fn gpu_is_refused_without_a_provider_and_gpu_or_cpu_falls_back_saying_so() {
    if !onnx_available("gpu policy") {
        return;
    }
    let model = digits_dir().join("digits.onnx");
    let with_target = |target| GraphOptions {
        target,
        ..GraphOptions::default()
    };
    let _loading = GRAPH_LOADING.lock().unwrap_or_else(|p| p.into_inner());
    match load_graph(
        engines(),
        &spec(
            "digits",
            Encoding::Onnx,
            model.clone(),
            with_target(Target::Gpu),
        ),
    ) {
        Err(e @ InferenceError::TargetUnavailable { .. }) => {
            assert!(e.to_string().contains("gpu"), "{e}")
        }
        Err(other) => panic!("expected target unavailable, got {other}"),
        Ok(_) => panic!("gpu must be refused on a host without a GPU provider"),
    }
    let fallback = load_graph(
        engines(),
        &spec(
            "digits",
            Encoding::Onnx,
            model,
            with_target(Target::GpuOrCpu),
        ),
    )
    .expect("gpu-or-cpu loads on the CPU");
    assert!(
        fallback.info().device.starts_with("cpu"),
        "{:?}",
        fallback.info()
    );
    assert!(fallback.info().device.contains("gpu-or-cpu"));
}

#[test]
fn a_graph_whose_engine_is_missing_fails_with_a_clear_error() {
    let missing = |name| EngineStatus {
        name,
        loaded: false,
        path: None,
        version: None,
        error: Some("no library found".into()),
    };
    let no_engines = Engines {
        onnx: missing("onnx"),
        openvino: missing("openvino"),
        cuda: missing("cuda"),
    };
    for encoding in [Encoding::Onnx, Encoding::Openvino] {
        let result = load_graph(
            &no_engines,
            &GraphSpec {
                name: "digits".into(),
                encoding,
                files: vec![GraphFile::Bytes(b"not even a model".to_vec())],
                options: GraphOptions::default(),
                image: String::new(),
            },
        );
        match result {
            Err(e @ InferenceError::EngineUnavailable { .. }) => {
                let message = e.to_string();
                assert!(message.contains("setup-engines.sh"), "{message}");
            }
            Err(other) => panic!("expected engine unavailable, got {other}"),
            Ok(_) => panic!("must not load without its engine"),
        }
    }
}

/// A model whose weights are "external" must not load from any source, on any engine: the
/// engines would read the named file (next to a stored model, or in the server's working
/// directory for bytes) and hand its contents to whoever queries the graph.
#[test]
fn graphs_that_name_files_outside_themselves_do_not_load() {
    if !onnx_available("external data") || !openvino_available("external data") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"another tenant's weights").unwrap();
    let stored = dir.path().join("model.onnx");
    std::fs::write(
        &stored,
        sandserve_tests::hostile_onnx::external_data_model("secret.txt", 8),
    )
    .unwrap();
    // Relative to this test's working directory (the tests/ crate), as OpenVINO resolves it.
    let in_memory = sandserve_tests::hostile_onnx::external_data_model("Cargo.toml", 8);
    let refused = |encoding: Encoding, files: Vec<GraphFile>| {
        let spec = GraphSpec {
            name: "leak".into(),
            encoding,
            files,
            options: GraphOptions::default(),
            image: String::new(),
        };
        let _loading = GRAPH_LOADING.lock().unwrap_or_else(|p| p.into_inner());
        match load_graph(engines(), &spec) {
            Err(InferenceError::NotSelfContained { graph, reason }) => {
                assert_eq!(graph, "leak");
                reason.to_string()
            }
            Err(other) => panic!("{encoding}: refused for the wrong reason: {other}"),
            Ok(_) => panic!("{encoding}: a graph with external data loaded"),
        }
    };
    for encoding in [Encoding::Onnx, Encoding::Openvino] {
        let message = refused(encoding, vec![GraphFile::open(&stored).unwrap()]);
        assert!(message.contains("tensor `w`"), "{message}");
        assert!(
            !message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        refused(encoding, vec![GraphFile::Bytes(in_memory.clone())]);
    }
    // An ONNX file passed off as OpenVINO IR's .xml.
    let message = refused(
        Encoding::Openvino,
        vec![
            GraphFile::Bytes(in_memory.clone()),
            GraphFile::Bytes(vec![0; 8]),
        ],
    );
    assert!(message.contains("IR .xml"), "{message}");
}

#[test]
fn guest_loaded_bytes_with_external_data_are_refused() {
    if !onnx_available("guest-loaded external data") {
        return;
    }
    let model = sandserve_tests::hostile_onnx::external_data_model("Cargo.toml", 8);
    let set = graphs(&[], GuestLoadPolicy::Allowed { max_bytes: 1 << 20 });
    let result = handler("nn-bytes").invoke(
        &request(vec![Tensor {
            name: "model".into(),
            shape: vec![model.len() as u64],
            element_type: ElementType::U8,
            data: model,
        }]),
        &limits(),
        set.nn_ctx(),
    );
    match result {
        Err(RuntimeError::HandlerFailed(message)) => {
            assert!(message.contains("external file"), "{message}")
        }
        other => panic!("the guest's graph must not load, got {other:?}"),
    }
}
