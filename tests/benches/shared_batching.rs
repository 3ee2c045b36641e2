//! Batching across tenants: two tenants query one shared, weight-bound model version
//! (`models/bench_mlp.onnx`, 4 layers of 2048, behind the `nn-proxy` fixture) at the same
//! time, each from its own endpoint. Tenant `owner` uploads the model twice, plain and with
//! `[graphs.batching]`, and shares both versions; tenant `guest` serves them as
//! `owner/mlp-plain` and `owner/mlp-batched`. The pair (16 closed-loop clients per tenant,
//! each on its own endpoint) is measured on the plain version and on the batched one, in
//! alternating rounds of the same run; the throughput is the pair's together.
//!
//! Run: `scripts/bench-http.sh` (or, after a release build, `cargo bench -p sandserve-tests
//! --bench shared_batching`). `SANDSERVE_BENCH_BATCH_DELAY_US` (default 2000),
//! `SANDSERVE_BENCH_PAIR_CONCURRENCY` (clients per tenant, default 16),
//! `SANDSERVE_BENCH_ROUNDS` and `SANDSERVE_BENCH_SECS` as in the other benchmarks. Results
//! go in docs/benchmarks.md, with the load average it prints.

use sandserve_tests::load::{env_number, load_together, print_row, Samples};
use sandserve_tests::packages::{bench_mlp_packages, mlp_query, MlpBenchSettings};
use sandserve_tests::server::{Client, TestServer};
use serde_json::json;
use std::time::{Duration, Instant};

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn wait_ready(client: &Client, endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = client.get(&format!("/api/2.0/serving-endpoints/{endpoint}"));
        assert_eq!(status, 200, "{body}");
        if body["state"]["ready"] == "READY" && body["state"]["config_update"] == "NOT_UPDATING" {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let settings = MlpBenchSettings::from_env();
    let concurrency = env_number("SANDSERVE_BENCH_PAIR_CONCURRENCY", 16) as usize;
    let threads = concurrency.to_string();
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(data.path(), &["--tenant-guest-threads", &threads]);
    eprintln!("sandserve pid {}", server.pid());
    let admin = server.admin();
    let owner_token = admin.tenant_with_token("owner", "CAN_MANAGE");
    let guest_token = admin.tenant_with_token("guest", "CAN_MANAGE");
    let (owner, guest) = (server.client(&owner_token), server.client(&guest_token));
    for (name, package) in bench_mlp_packages(settings) {
        let (status, reply) = owner.upload(&name, &package);
        assert_eq!(status, 201, "{reply}");
        let (status, reply) = owner.patch(
            &format!("/api/2.0/models/{name}/versions/1"),
            &json!({"shared": true}),
        );
        assert_eq!(status, 200, "{reply}");
        for (client, entity) in [
            (&owner, name.to_string()),
            (&guest, format!("owner/{name}")),
        ] {
            let (status, reply) = client.post(
                "/api/2.0/serving-endpoints",
                &json!({"name": name, "config": {"served_entities": [
                    {"entity_name": entity, "entity_version": "1", "max_concurrency": 64}]}}),
            );
            assert_eq!(status, 200, "{reply}");
            wait_ready(client, &name);
        }
    }
    let body = mlp_query();
    let pair = |endpoint: &str| -> Vec<(String, String)> {
        let url = format!("{}/v2/models/{endpoint}/infer", server.url);
        vec![
            (url.clone(), owner_token.clone()),
            (url, guest_token.clone()),
        ]
    };
    // Every endpoint answers, the same for both tenants.
    let (status, mine) = owner.post("/v2/models/mlp-batched/infer", &body);
    assert_eq!(status, 200, "{mine}");
    let (status, theirs) = guest.post("/v2/models/mlp-batched/infer", &body);
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(mine["outputs"][0]["shape"], theirs["outputs"][0]["shape"]);

    let before = load_average();
    let (mut plain, mut batched) = (Samples::default(), Samples::default());
    for round in 0..env_number("SANDSERVE_BENCH_ROUNDS", 6) {
        if round % 2 == 0 {
            plain.add(load_together(&pair("mlp-plain"), &body, concurrency));
            batched.add(load_together(&pair("mlp-batched"), &body, concurrency));
        } else {
            batched.add(load_together(&pair("mlp-batched"), &body, concurrency));
            plain.add(load_together(&pair("mlp-plain"), &body, concurrency));
        }
    }
    let (plain, batched) = (plain.stats(), batched.stats());
    assert_eq!(plain.errors + batched.errors, 0, "requests failed");
    let image = "owner/mlp-batched@1";
    let cross = (
        admin.batches_total(image, Some(true)),
        admin.batches_total(image, Some(false)),
    );
    println!(
        "{settings:?}, {concurrency} clients per tenant, tenant guest threads = {threads}; \
         load average before {before}, after {}",
        load_average()
    );
    println!(
        "batches of the shared version: {} mixing both tenants, {} of one tenant",
        cross.0, cross.1
    );
    println!("| model | concurrency | unbatched req/s | batched req/s | throughput ratio | unbatched p50 / p99 (us) | batched p50 / p99 (us) | p50 ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    print_row("mlp 4x2048, two tenants", concurrency * 2, &plain, &batched);
}
