//! Runtime benchmark: per-request cost of a fresh sandbox with the pooling allocator.
//!
//! Run: `cargo bench -p sandserve-tests --bench runtime` (results go in docs/benchmarks.md).
//! Reports p50 / p99 of: store + instantiate; a full call (store + instantiate + echo
//! predict + drop); and, as the baseline measured in the same run, the echo predict
//! alone, so the ratio full / predict shows what the fresh sandbox adds.

use sandserve_host::runtime::{empty_nn, Request, RequestLimits, Runtime, RuntimeConfig};
use sandserve_tests::{f32_tensor, guest_wasm};
use std::time::{Duration, Instant};

const WARMUP: usize = 200;
const ITERATIONS: usize = 5_000;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

fn measure(mut f: impl FnMut() -> Duration) -> (Duration, Duration) {
    for _ in 0..WARMUP {
        f();
    }
    percentiles((0..ITERATIONS).map(|_| f()).collect())
}

fn row(name: &str, (p50, p99): (Duration, Duration)) {
    println!(
        "| {name} | {:.1} | {:.1} |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
}

fn main() {
    let runtime = Runtime::new(RuntimeConfig {
        max_concurrent_instances: 16,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let echo = runtime
        .load("bench/echo@1", &guest_wasm("echo"))
        .expect("echo loads");
    let limits = RequestLimits::default();
    let request = Request {
        inputs: vec![f32_tensor("x", &[1, 64], &[0.5; 64])],
        parameters: None,
        raw_body: None,
    };

    let instantiate = measure(|| echo.instantiate_only(&limits).expect("instantiates"));
    let full = measure(|| {
        let start = Instant::now();
        echo.invoke(&request, &limits, empty_nn())
            .expect("echo answers");
        start.elapsed()
    });
    let predict = measure(|| {
        echo.invoke(&request, &limits, empty_nn())
            .expect("echo answers")
            .predict_time
    });

    println!("| measurement ({ITERATIONS} runs) | p50 (us) | p99 (us) |");
    println!("|---|---|---|");
    row("store + instantiate (pooling allocator)", instantiate);
    row("full call: store + instantiate + echo predict + drop", full);
    row("echo predict alone (inside the full call)", predict);
    println!(
        "\nfull call / predict alone at p50: {:.1}x",
        full.0.as_secs_f64() / predict.0.as_secs_f64()
    );
}
