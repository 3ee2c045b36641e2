//! Governance in cluster mode, on a real PostgreSQL started by the test and three real
//! `sandserve` nodes sharing it (each owning every version, `--owners 3`, so each node
//! serves what it is sent and nothing is forwarded): an AI gateway set on A is enforced on
//! B and C within the bound (2 s); a rate limit of N a minute admits exactly N of requests
//! sent at once to A, B and C and refuses the rest with 429 and `Retry-After`; the database
//! unreachable refuses a limited endpoint's queries with 503 (never admits them all);
//! usage read on any node sums what every node served (JSON and CSV); an admin action on A
//! is in the audit log read on B; quotas set on A are enforced on B and C. Also measures
//! the latency a shared rate limit adds to a query (docs/benchmarks.md). And the stores
//! themselves, as two nodes would use them: a per-user limit exact under 40 concurrent
//! callers, the `Retry-After` the row gives, a new gateway starting its buckets full and
//! reaching the outbox, usage added by two nodes, the audit log's limit, pruning.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_host::governance::audit::AuditEntry;
use sandserve_host::governance::shared::Bucket;
use sandserve_host::governance::usage::{Counters, UsageFilter, UsageKey};
use sandserve_host::governance::{GatewayConfig, RateLimit};
use sandserve_host::registry::{Change, PostgresRegistry};
use sandserve_tests::cluster::{start_node, wait_for, Node};
use sandserve_tests::packages::example_package;
use sandserve_tests::postgres::Postgres;
use sandserve_tests::server::{Client, RawReply};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The bound the docs state for a change to reach every node (operations.md).
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

fn query(client: &Client) -> RawReply {
    let body = json!({"inputs": {"x": [1.0, 2.0, 3.0]}}).to_string();
    let reply = client.post_raw(
        "/serving-endpoints/echo/invocations",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    if reply.status == 200 {
        assert_eq!(reply.json()["predictions"]["x"], json!([1.0, 2.0, 3.0]));
    }
    reply
}

/// A 429 of the endpoint's rate limit of 6 a minute: `Retry-After` within one interval.
fn assert_rate_limited(reply: &RawReply) {
    let body = reply.json();
    assert_eq!(reply.status, 429, "{body}");
    assert_eq!(body["error_code"], "REQUEST_LIMIT_EXCEEDED", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("6 calls per minute per endpoint"),
        "{message}"
    );
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
}

fn set_gateway(client: &Client, gateway: &Value) {
    let (status, body) = client.put("/api/2.0/serving-endpoints/echo/ai-gateway", gateway);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rate_limits"], gateway["rate_limits"], "{body}");
}

/// The endpoint's gateway as `client`'s node holds it live.
fn gateway_on(client: &Client) -> Value {
    let (status, body) = client.get("/api/2.0/serving-endpoints/echo");
    assert_eq!(status, 200, "{body}");
    body["ai_gateway"].clone()
}

fn usage_total(client: &Client) -> u64 {
    let (status, body) = client.get("/api/2.0/usage?endpoint=echo");
    assert_eq!(status, 200, "{body}");
    let rows = body["usage"].as_array().unwrap();
    rows.iter()
        .map(|r| {
            assert_eq!(r["endpoint"], "echo", "{r}");
            r["requests"].as_u64().unwrap()
        })
        .sum()
}

/// Median and 99th percentile of `n` sequential queries' latency.
fn latencies(client: &Client, n: usize) -> (Duration, Duration) {
    let mut all: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(query(client).status, 200);
            start.elapsed()
        })
        .collect();
    all.sort();
    (all[n / 2], all[n * 99 / 100])
}

#[test]
fn governance_holds_across_three_nodes_on_one_database() {
    let pg = Postgres::start();
    let url = pg.create_database("governance");
    let blobs = tempfile::tempdir().unwrap();
    let nodes = [
        start_node(&url, blobs.path(), "node-a", &["--owners", "3"], None),
        start_node(&url, blobs.path(), "node-b", &["--owners", "3"], None),
        start_node(&url, blobs.path(), "node-c", &["--owners", "3"], None),
    ];
    let [a, b, c] = &nodes;
    let token = a.server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let on = |node: &Node| node.server.client(&token);
    assert_eq!(on(a).upload("echo", &example_package("echo")).0, 201);
    let create = json!({"name": "echo", "config": {"served_entities": [
        {"name": "echo-1", "entity_name": "echo", "entity_version": "1"}]}});
    let (status, body) = on(a).post("/api/2.0/serving-endpoints", &create);
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        wait_for(Duration::from_secs(60), "endpoint served", || {
            query(&on(node)).status == 200
        });
    }

    // A gateway set on A is enforced on B and C: a limit of 0 refuses there within 2 s.
    let closed =
        json!({"rate_limits": [{"calls": 0, "key": "endpoint", "renewal_period": "minute"}]});
    set_gateway(&on(a), &closed);
    assert_eq!(query(&on(a)).status, 429, "refused at once where set");
    for node in [b, c] {
        let took = wait_for(PROPAGATION_BOUND, "gateway enforced", || {
            let reply = query(&on(node));
            assert!(
                reply.status == 200 || reply.status == 429,
                "{}",
                reply.status
            );
            reply.status == 429
        });
        println!("gateway set on A enforced on another node after {took:?}");
    }

    // Lifting it on B reaches A and C (the buckets start full).
    let limited = json!({
        "rate_limits": [{"calls": 6, "key": "endpoint", "renewal_period": "minute"}],
        "usage_tracking_config": {"enabled": true}
    });
    set_gateway(&on(b), &limited);
    for node in &nodes {
        wait_for(PROPAGATION_BOUND, "gateway seen", || {
            gateway_on(&on(node))["rate_limits"] == limited["rate_limits"]
        });
    }

    // 6 a minute across the cluster: 18 requests at once, 6 to each node, 6 admitted.
    let senders: Vec<_> = nodes
        .iter()
        .map(|node| {
            let client = on(node);
            std::thread::spawn(move || (0..6).map(|_| query(&client)).collect::<Vec<_>>())
        })
        .collect();
    let replies: Vec<RawReply> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    let admitted = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(admitted, 6, "exactly the limit passes across the nodes");
    for refused in replies.iter().filter(|r| r.status != 200) {
        assert_rate_limited(refused);
    }
    // Still used up on every node (per-node buckets would admit 6 on each).
    for node in &nodes {
        assert_rate_limited(&query(&on(node)));
    }

    // The database unreachable: a limited endpoint admits nothing (503), then recovers.
    pg.stop();
    for node in &nodes {
        let reply = query(&on(node));
        let body = reply.json();
        assert_eq!(reply.status, 503, "{body}");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("cannot be checked"),
            "{body}"
        );
    }
    pg.restart();
    // (A call may pass again once 10 s have gone since the burst: counted in the usage.)
    let mut late = 0;
    wait_for(Duration::from_secs(10), "the limit checked again", || {
        let status = query(&on(c)).status;
        late += u64::from(status == 200);
        status == 429
    });

    // Usage: requests served by A and B are summed on C (and on every node).
    let unlimited = json!({"rate_limits": [], "usage_tracking_config": {"enabled": true}});
    set_gateway(&on(c), &unlimited);
    for node in &nodes {
        wait_for(PROPAGATION_BOUND, "limit lifted", || {
            gateway_on(&on(node))["rate_limits"] == json!([])
        });
    }
    for (node, n) in [(a, 5), (b, 7)] {
        for _ in 0..n {
            assert_eq!(query(&on(node)).status, 200);
        }
    }
    let expected = 6 + late + 5 + 7;
    // Each node flushes what it counted every 2 s.
    let took = wait_for(Duration::from_secs(10), "usage summed on C", || {
        let total = usage_total(&on(c));
        assert!(total <= expected, "{total} > {expected}");
        total == expected
    });
    println!("usage of A and B summed on C after {took:?}");
    for node in [a, b] {
        assert_eq!(usage_total(&on(node)), expected);
    }
    let csv = on(b).get_raw("/api/2.0/usage?endpoint=echo&format=csv", &[]);
    assert_eq!(csv.status, 200);
    let text = String::from_utf8(csv.body.clone()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let requests = header.iter().position(|h| *h == "requests").unwrap();
    let csv_total: u64 = lines
        .map(|l| l.split(',').nth(requests).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(csv_total, expected, "{text}");

    // Quotas set on A are enforced on B and C; the admin's action is in B's audit log.
    let started = now_ms();
    let admin_a = a.server.admin();
    let (status, body) = admin_a.put("/api/2.0/tenants/acme/quotas", &json!({"max_endpoints": 1}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = b
        .server
        .admin()
        .get(&format!("/api/2.0/audit?from={started}"));
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["method"] == "PUT"
            && e["path"] == "/api/2.0/tenants/acme/quotas"
            && e["actor"] == "admin"
            && e["status"] == 200),
        "{body}"
    );
    for node in [b, c] {
        wait_for(PROPAGATION_BOUND, "quotas seen", || {
            node.server.admin().get("/api/2.0/tenants/acme/quotas").1["max_endpoints"] == 1
        });
        let second = json!({"name": "second", "config": {"served_entities": [
            {"entity_name": "echo", "entity_version": "1"}]}});
        let (status, body) = on(node).post("/api/2.0/serving-endpoints", &second);
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error_code"], "RESOURCE_EXHAUSTED", "{body}");
    }

    // What a shared limit adds to a query (measured on A, debug build, loopback).
    let n = 200;
    let (plain, plain_p99) = latencies(&on(a), n);
    let wide = json!({"rate_limits": [{"calls": 1_000_000_000u32, "key": "endpoint",
        "renewal_period": "minute"}]});
    set_gateway(&on(a), &wide);
    let (shared, shared_p99) = latencies(&on(a), n);
    println!(
        "query latency on A, {n} sequential: median {plain:?} (p99 {plain_p99:?}) without a \
         limit, {shared:?} (p99 {shared_p99:?}) with a cluster-wide limit"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn bucket(caller: &str, calls: u32) -> Bucket {
    Bucket {
        tenant: "acme".into(),
        endpoint: "ep".into(),
        limit: format!("0:user:{calls}"),
        caller: caller.into(),
        calls,
    }
}

fn usage_key(token: &str) -> UsageKey {
    UsageKey {
        minute: 29_000_000,
        tenant: "acme".into(),
        endpoint: "ep".into(),
        entity: "e".into(),
        token: token.into(),
    }
}

#[test]
fn the_shared_stores_are_exact_under_concurrency_and_sum_two_nodes() {
    let pg = Postgres::start();
    let url = pg.create_database("stores");
    let (one, two) = (
        PostgresRegistry::connect(&url).unwrap(),
        PostgresRegistry::connect(&url).unwrap(),
    );
    let mut changes = one.follow().unwrap();
    let (a, b) = (one.governance(), two.governance());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();

    // 5 a minute per user: 40 calls of u1 at once through both "nodes" admit exactly 5.
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let limits = if i % 2 == 0 { &a.limits } else { &b.limits }.clone();
            runtime.spawn(async move { limits.take(bucket("u1", 5)).await.unwrap() })
        })
        .collect();
    let waits: Vec<Option<Duration>> = runtime.block_on(async {
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    });
    assert_eq!(waits.iter().filter(|w| w.is_none()).count(), 5);
    // The next call is 12 s (60 / 5) after the burst began.
    for wait in waits.iter().flatten() {
        assert!(
            *wait > Duration::from_secs(10) && *wait <= Duration::from_secs(13),
            "{wait:?}"
        );
    }
    // Another user has a bucket of its own.
    assert_eq!(
        runtime.block_on(b.limits.take(bucket("u2", 5))).unwrap(),
        None
    );

    // Storing the endpoint's gateway starts its buckets full and reaches the outbox.
    let config = GatewayConfig {
        rate_limits: vec![serde_json::from_value::<RateLimit>(
            json!({"calls": 5, "key": "user", "renewal_period": "minute"}),
        )
        .unwrap()],
        ..GatewayConfig::default()
    };
    b.policies.put_gateway("acme", "ep", &config).unwrap();
    assert_eq!(a.policies.gateway("acme", "ep").unwrap(), Some(config));
    assert_eq!(
        runtime.block_on(a.limits.take(bucket("u1", 5))).unwrap(),
        None
    );
    let seen = runtime.block_on(async {
        tokio::time::timeout(PROPAGATION_BOUND, changes.recv())
            .await
            .unwrap()
            .unwrap()
    });
    let expected = Change::Gateway {
        tenant: "acme".into(),
        name: "ep".into(),
    };
    assert_eq!(seen, vec![expected]);
    b.policies
        .put_gateway("acme", "ep", &GatewayConfig::default())
        .unwrap();
    assert_eq!(a.policies.gateway("acme", "ep").unwrap(), None);

    // A bucket full again is pruned (600 a minute: full 0.1 s after one call).
    runtime.block_on(a.limits.take(bucket("u3", 600))).unwrap();
    assert_eq!(
        pg.psql(
            "stores",
            "SELECT count(*) FROM rate_limits WHERE caller = 'u3'"
        ),
        "1"
    );
    std::thread::sleep(Duration::from_millis(200));
    a.limits.prune().unwrap();
    assert_eq!(
        pg.psql(
            "stores",
            "SELECT count(*) FROM rate_limits WHERE caller = 'u3'"
        ),
        "0"
    );

    // Usage: two nodes add to the same row; another token's row apart.
    let counters = |requests, bytes| Counters {
        requests,
        input_bytes: bytes,
        ..Counters::default()
    };
    a.usage.add(&[(usage_key("k1"), counters(3, 30))]).unwrap();
    b.usage
        .add(&[
            (usage_key("k2"), counters(1, 5)),
            (usage_key("k1"), counters(4, 40)),
        ])
        .unwrap();
    let rows = b
        .usage
        .read(&UsageFilter {
            from_ms: 29_000_000 * 60_000,
            to_ms: 29_000_001 * 60_000,
            tenant: Some("acme".into()),
            endpoint: Some("ep".into()),
        })
        .unwrap();
    let got: Vec<(&str, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r.token_id.as_str(),
                r.counters.requests,
                r.counters.input_bytes,
            )
        })
        .collect();
    assert_eq!(got, [("k1", 7, 70), ("k2", 1, 5)]);
    let none = a
        .usage
        .read(&UsageFilter {
            from_ms: 29_000_001 * 60_000,
            to_ms: 29_000_002 * 60_000,
            ..UsageFilter::default()
        })
        .unwrap();
    assert!(none.is_empty());

    // Audit: both nodes' entries, oldest first, `limit` honoured.
    for (i, store) in [&a, &b, &a].into_iter().enumerate() {
        let entry = AuditEntry {
            timestamp_ms: 1_000 + i as u64,
            actor: "admin".into(),
            tenant: None,
            method: "PUT".into(),
            path: format!("/api/2.0/x/{i}"),
            status: 200,
        };
        store.audit.append(&entry).unwrap();
    }
    let (entries, truncated) = b.audit.read(1_000, 2_000, 2).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        (paths, truncated),
        (vec!["/api/2.0/x/0", "/api/2.0/x/1"], true)
    );
    let (entries, truncated) = a.audit.read(1_002, 2_000, 10).unwrap();
    assert_eq!((entries.len(), truncated), (1, false));
}
