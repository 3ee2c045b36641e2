//! Dynamic batching benchmark: the same weight-bound model (`models/bench_mlp.onnx`, an MLP
//! of 4 layers of 2048, 64 MiB of weights, from `scripts/make_mlp_model.py`) behind the same
//! handler (the `nn-proxy` fixture), uploaded twice to one server: once plain, once with
//! `[graphs.batching]`. Both are measured in the same run, in alternating rounds, at
//! concurrency 1 and 32, over HTTP with the closed-loop client of `sandserve_tests::load`.
//!
//! Run: `scripts/bench-http.sh` (or, after a release build, `cargo bench -p sandserve-tests
//! --bench batching`). `SANDSERVE_BENCH_BATCH_DELAY_US` (default 2000) sets `max_delay_us`,
//! `SANDSERVE_BENCH_MAX_BATCH` (default 32) `max_batch_size` and `SANDSERVE_BENCH_BATCH_THREADS`
//! (default: the machine's CPUs) the batched graph's `intra_op_threads`;
//! `SANDSERVE_BENCH_TENANT_THREADS` (default 32) the tenant's guest-thread share, which
//! bounds how many requests can wait in one batch; `SANDSERVE_BENCH_ROUNDS` and
//! `SANDSERVE_BENCH_SECS` as in the HTTP benchmark. Results go in docs/benchmarks.md.

use sandserve_tests::load::{compare, env_number, print_row};
use sandserve_tests::packages::{
    bench_mlp_packages, bench_model_packages, mlp_query, MlpBenchSettings, MLP_WIDTH,
};
use sandserve_tests::server::TestServer;
use sandserve_tests::wrk::{self, Target, WrkRun};
use sandserve_tests::{native, repo_root};

fn main() {
    let settings = MlpBenchSettings::from_env();
    let threads = env_number("SANDSERVE_BENCH_TENANT_THREADS", 32).to_string();
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(data.path(), &["--tenant-guest-threads", &threads]);
    eprintln!("sandserve pid {}", server.pid());
    let token = server.admin().tenant_with_token("bench", "CAN_MANAGE");
    let client = server.client(&token);
    let floor = bench_model_packages("bench_floor.onnx", "floor", settings);
    for (name, package) in bench_mlp_packages(settings).into_iter().chain(floor) {
        let (status, reply) = client.upload(&name, &package);
        assert_eq!(status, 201, "{reply}");
    }
    let body = mlp_query();
    let url = |name: &str| format!("{}/v2/models/{name}/versions/1/infer", server.url);
    // Both answer, and the same (the end-to-end test checks this on many inputs).
    let (status, plain) = client.post("/v2/models/mlp-plain/versions/1/infer", &body);
    assert_eq!(status, 200, "{plain}");
    let (status, batched) = client.post("/v2/models/mlp-batched/versions/1/infer", &body);
    assert_eq!(status, 200, "{batched}");
    assert_eq!(plain["outputs"][0]["shape"], batched["outputs"][0]["shape"]);
    println!("{settings:?}, tenant guest threads = {threads}; base = unbatched, other = batched");
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
    let Some(wrk_body) = wrk::enabled().then(|| serde_json::to_vec(&body).expect("body")) else {
        return;
    };
    let pair = |prefix: &str| wrk_pair(&server, &token, &wrk_body, prefix);
    let (mlp, floor) = (pair("mlp"), pair("floor"));
    println!();
    println!("| wrk | connections | unbatched req/s | batched req/s | throughput ratio | unbatched p50 / p99 (us) | batched p50 / p99 (us) | unbatched CPU us/req | batched CPU us/req | machine idle unbatched / batched |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    print_wrk_row("mlp 4x2048", mlp);
    print_wrk_row("floor (no hidden layer)", floor);
    print_ceiling(mlp, floor);
}

/// `<prefix>-plain` against `<prefix>-batched` at 32 connections, driven by `wrk` (a C
/// client much lighter than the Rust one, so more of the 2 cores go to the server), with
/// the server's CPU time per request.
fn wrk_pair(server: &TestServer, token: &str, body: &[u8], prefix: &str) -> (WrkRun, WrkRun) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let url = |side: &str| format!("{}/v2/models/{prefix}-{side}/versions/1/infer", server.url);
    let (plain, batched, pid) = (url("plain"), url("batched"), server.pid());
    let batches_before = batches_run(server, &format!("{prefix}-batched"));
    let runs = wrk::alternate(
        scratch.path(),
        Target { url: &plain, pid },
        Target { url: &batched, pid },
        token,
        body,
        32,
        wrk::seconds(),
        wrk::rounds(),
    );
    assert_eq!(
        runs.0.errors + runs.1.errors,
        0,
        "wrk {prefix}: requests failed"
    );
    let batches = batches_run(server, &format!("{prefix}-batched")) - batches_before;
    println!(
        "wrk {prefix}: {batches} batches for {} batched requests, {:.1} requests a batch",
        runs.1.requests,
        runs.1.requests as f64 / batches.max(1) as f64
    );
    runs
}

/// Batched runs of model `model` so far (a request that ran alone is in none).
fn batches_run(server: &TestServer, model: &str) -> u64 {
    server
        .admin()
        .batches_total(&format!("bench/{model}@1"), None)
}

fn print_wrk_row(row: &str, (plain, batched): (WrkRun, WrkRun)) {
    println!(
        "| {row} | 32 | {:.0} | {:.0} | {:.2}x | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} | {:.0} | {:.0}% / {:.0}% |",
        plain.per_second,
        batched.per_second,
        batched.per_second / plain.per_second,
        plain.p50_us,
        plain.p99_us,
        batched.p50_us,
        batched.p99_us,
        plain.cpu_us_per_request(),
        batched.cpu_us_per_request(),
        plain.machine_idle_share() * 100.0,
        batched.machine_idle_share() * 100.0,
    );
}

/// How far batching can go on this machine. With every core busy, the throughput ratio is
/// the ratio of CPU per request. A batched request cannot take less CPU than its row of
/// the model run natively at a full batch (ONNX Runtime alone, one thread, in this
/// process) plus what the platform spends around a model (the floor model's batched
/// request, whose graph costs next to nothing); the unbatched request's CPU is measured.
fn print_ceiling(mlp: (WrkRun, WrkRun), floor: (WrkRun, WrkRun)) {
    let mut session = native::session(&repo_root().join("models/bench_mlp.onnx"));
    let one = native::time_rows(&mut session, 1, MLP_WIDTH, 40);
    let full = native::time_rows(&mut session, 32, MLP_WIDTH, 10) / 32;
    let unbatched = mlp.0.cpu_us_per_request();
    let platform = floor.1.cpu_us_per_request();
    let least = full.as_secs_f64() * 1e6 + platform;
    println!();
    println!("| ceiling (CPU per request, us) | unbatched | batched |");
    println!("|---|---|---|");
    println!(
        "| the model alone, native ONNX Runtime, 1 thread, a row at batch 1 / 32 | {:.0} | {:.0} |",
        one.as_secs_f64() * 1e6,
        full.as_secs_f64() * 1e6
    );
    println!(
        "| the platform around a model (floor model, server CPU) | {:.0} | {platform:.0} |",
        floor.0.cpu_us_per_request()
    );
    println!(
        "| measured (mlp, server CPU) / least a batched request can take | {unbatched:.0} | {least:.0} |"
    );
    println!(
        "throughput ratio ceiling on this machine: {unbatched:.0} / {least:.0} = {:.2}x \
         (measured: {:.2}x)",
        unbatched / least,
        mlp.1.per_second / mlp.0.per_second
    );
}
