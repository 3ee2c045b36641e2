//! Dynamic batching benchmark: the same weight-bound model (`models/bench_mlp.onnx`, an MLP
//! of 4 layers of 2048, 64 MiB of weights, from `scripts/make_mlp_model.py`) behind the same
//! handler (the `nn-proxy` fixture), uploaded twice to one server: once plain, once with
//! `[graphs.batching]`. Both are measured in the same run, in alternating rounds, at
//! concurrency 1 and 32, over HTTP with the closed-loop client of `sandserve_tests::load`.
//!
//! Run: `scripts/bench-http.sh` (or, after a release build, `cargo bench -p sandserve-tests
//! --bench batching`). `SANDSERVE_BENCH_BATCH_DELAY_US` (default 2000) sets `max_delay_us`;
//! `SANDSERVE_BENCH_TENANT_THREADS` (default 32) the tenant's guest-thread share, which
//! bounds how many requests can wait in one batch; `SANDSERVE_BENCH_ROUNDS` and
//! `SANDSERVE_BENCH_SECS` as in the HTTP benchmark. Results go in docs/benchmarks.md.

use sandserve_tests::load::{compare, env_number, print_row};
use sandserve_tests::packages::bench_mlp_packages;
use sandserve_tests::server::TestServer;
use serde_json::json;

const WIDTH: usize = 2048;

fn main() {
    let delay = env_number("SANDSERVE_BENCH_BATCH_DELAY_US", 2000);
    let threads = env_number("SANDSERVE_BENCH_TENANT_THREADS", 32).to_string();
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(data.path(), &["--tenant-guest-threads", &threads]);
    eprintln!("sandserve pid {}", server.pid());
    let token = server.admin().tenant_with_token("bench", "CAN_MANAGE");
    let client = server.client(&token);
    for (name, package) in bench_mlp_packages(delay) {
        let (status, reply) = client.upload(name, &package);
        assert_eq!(status, 201, "{reply}");
    }
    let x: Vec<f32> = (0..WIDTH)
        .map(|i| ((i * 37 % 101) as f32) / 100.0 - 0.5)
        .collect();
    let body = json!({"inputs": [
        {"name": "graph", "shape": [1], "datatype": "BYTES", "data": ["mlp"]},
        {"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": x},
    ]});
    let url = |name: &str| format!("{}/v2/models/{name}/versions/1/infer", server.url);
    // Both answer, and the same (the end-to-end test checks this on many inputs).
    let (status, plain) = client.post("/v2/models/mlp-plain/versions/1/infer", &body);
    assert_eq!(status, 200, "{plain}");
    let (status, batched) = client.post("/v2/models/mlp-batched/versions/1/infer", &body);
    assert_eq!(status, 200, "{batched}");
    assert_eq!(plain["outputs"][0]["shape"], batched["outputs"][0]["shape"]);
    println!(
        "max_delay_us = {delay}, tenant guest threads = {threads}; base = unbatched, other = batched"
    );
    println!("| model | concurrency | unbatched req/s | batched req/s | throughput ratio | unbatched p50 / p99 (us) | batched p50 / p99 (us) | p50 ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for concurrency in [1, 32] {
        let (plain, batched) = compare(
            &url("mlp-plain"),
            &url("mlp-batched"),
            &token,
            &body,
            concurrency,
        );
        print_row("mlp 4x2048", concurrency, &plain, &batched);
    }
}
