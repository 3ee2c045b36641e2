//! Inference benchmark: a full request through the sandbox and wasi-nn (fresh instance +
//! handler + our ONNX Runtime backend) against ONNX Runtime called natively from Rust on the
//! same model and inputs, measured in the same run, at concurrency 1 and 2.
//!
//! Run: `source .engines/env.sh && cargo bench -p sandserve-tests --bench inference`
//! (needs `scripts/setup-engines.sh`). Results go in docs/benchmarks.md.

use sandserve_host::inference::{
    Encoding, GraphFile, GraphOptions, GraphSet, GraphSpec, GuestLoadPolicy,
};
use sandserve_host::runtime::{LoadedHandler, Request, RequestLimits, Runtime, RuntimeConfig};
use sandserve_tests::{bytes_tensor, engines, f32_tensor, guest_wasm, read_f32, repo_root};
use std::path::Path;
use std::time::{Duration, Instant};

struct Stats {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

/// Runs `work` `iterations` times on each of `threads` threads; latency percentiles over all
/// calls, throughput over the wall time.
fn measure<S>(
    threads: usize,
    iterations: usize,
    setup: impl Fn() -> S + Sync,
    work: impl Fn(&mut S) + Sync,
) -> Stats {
    let start = Instant::now();
    let mut samples: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut state = setup();
                    for _ in 0..iterations / 10 {
                        work(&mut state);
                    }
                    (0..iterations)
                        .map(|_| {
                            let t = Instant::now();
                            work(&mut state);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let wall = start.elapsed();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.5),
        p99: at(0.99),
        per_second: samples.len() as f64 / wall.as_secs_f64(),
    }
}

fn native_session(model: &Path) -> ort::session::Session {
    ort::session::Session::builder()
        .and_then(|b| b.with_intra_threads(1))
        .and_then(|b| b.with_inter_threads(1))
        .and_then(|b| b.commit_from_file(model))
        .expect("native session")
}

fn native_run(session: &mut ort::session::Session, shape: &[usize], input: &[f32]) {
    let tensor = ort::value::Tensor::from_array((shape.to_vec(), input.to_vec())).expect("tensor");
    let outputs = session
        .run(ort::inputs!["input" => tensor])
        .expect("native run");
    // Read every output once, as the wasi-nn path does.
    for (_, value) in outputs.iter() {
        std::hint::black_box(value.try_extract_tensor::<f32>().map(|(_, d)| d.len()).ok());
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[allow(clippy::too_many_arguments)]
fn compare(
    model_name: &str,
    model: &Path,
    graphs: &GraphSet,
    handler: &LoadedHandler,
    request: &Request,
    shape: &[usize],
    input: &[f32],
    iterations: usize,
) {
    let limits = RequestLimits {
        timeout: Duration::from_secs(30),
        ..RequestLimits::default()
    };
    for threads in [1, 2] {
        let native = measure(
            threads,
            iterations,
            || native_session(model),
            |s| native_run(s, shape, input),
        );
        let sandboxed = measure(
            threads,
            iterations,
            || (),
            |_| {
                handler
                    .invoke(request, &limits, graphs.nn_ctx())
                    .expect("request succeeds");
            },
        );
        println!(
            "| {model_name} | {threads} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} | {:.0} | {:.3}x | {:+.1} |",
            us(native.p50),
            us(native.p99),
            us(sandboxed.p50),
            us(sandboxed.p99),
            native.per_second,
            sandboxed.per_second,
            sandboxed.p50.as_secs_f64() / native.p50.as_secs_f64(),
            us(sandboxed.p50) - us(native.p50),
        );
    }
}

fn main() {
    if let Err(e) = engines().require_onnx() {
        eprintln!("needs ONNX Runtime: {e}");
        std::process::exit(1);
    }
    let runtime = Runtime::new(RuntimeConfig {
        max_concurrent_instances: 16,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let load = |name: &str| {
        runtime
            .load(&format!("bench/{name}@1"), &guest_wasm(name))
            .expect("handler loads")
    };
    let graph = |name: &str, path: &Path| {
        GraphSet::load(
            engines(),
            &[GraphSpec {
                name: name.into(),
                encoding: Encoding::Onnx,
                files: vec![GraphFile::open(path).expect("model file opens")],
                options: GraphOptions::default(),
                image: String::new(),
            }],
            GuestLoadPolicy::Denied,
        )
        .expect("graph loads")
    };

    println!("| model | concurrency | native ORT p50 / p99 (us) | sandboxed request p50 / p99 (us) | native req/s | sandboxed req/s | p50 ratio | p50 delta (us) |");
    println!("|---|---|---|---|---|---|---|---|");

    let digits_model = repo_root().join("examples/digits/model/digits.onnx");
    let image: Vec<f32> =
        read_f32(&repo_root().join("examples/digits/model/test_inputs.f32"))[..64].to_vec();
    let raw: Vec<f32> = image.iter().map(|v| v * 16.0).collect();
    let digits_request = Request {
        inputs: vec![f32_tensor("image", &[1, 64], &raw)],
        parameters: None,
        raw_body: None,
    };
    compare(
        "digits MLP (batch 1)",
        &digits_model,
        &graph("digits", &digits_model),
        &load("digits"),
        &digits_request,
        &[1, 64],
        &image,
        4000,
    );

    let cnn_model = repo_root().join("models/bench_cnn.onnx");
    let cnn_input = read_f32(&repo_root().join("models/bench_input.f32"));
    let cnn_request = Request {
        inputs: vec![
            bytes_tensor("graph", &["bench"]),
            f32_tensor("input", &[1, 3, 64, 64], &cnn_input),
        ],
        parameters: None,
        raw_body: None,
    };
    compare(
        "ResNet-style CNN (batch 1)",
        &cnn_model,
        &graph("bench", &cnn_model),
        &load("nn-proxy"),
        &cnn_request,
        &[1, 3, 64, 64],
        &cnn_input,
        150,
    );
}
