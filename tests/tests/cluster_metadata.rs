//! Cluster mode's metadata on a real PostgreSQL 15 started by the test: the PostgreSQL
//! registry against the same checks as the sled one (side by side), its compare-and-swap and
//! version counter under concurrent writers, and three real `sandserve` nodes sharing one
//! database: an upload on A served by B and C, a config change and a token revocation seen
//! everywhere within the stated bound (2 s), catch-up by revision after PostgreSQL restarts
//! and after the listeners' connections are killed, concurrent publishes of one endpoint
//! config version (exactly one wins, the other 409), and the node leases.

#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing

use sandserve_host::blobs::Digest;
use sandserve_host::registry::{
    ConfigUpdate, EndpointRecord, EndpointState, EndpointStore, ImageDraft, ImageFile, ImageStore,
    ModelRegistry, Permission, PostgresRegistry, Readiness, RegistryError, SledRegistry,
    TenantStore, TokenRecord, TokenStore,
};
use sandserve_tests::cluster::{start_node, wait_for, Node};
use sandserve_tests::packages::example_package;
use sandserve_tests::postgres::Postgres;
use sandserve_tests::server::{Client, TestServer};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The bound the docs state for a change to reach every node (operations.md).
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

// ---- The registry itself: the same checks on sled and on PostgreSQL ----

fn draft(tenant: &str, name: &str) -> ImageDraft {
    ImageDraft {
        tenant: tenant.into(),
        name: name.into(),
        digest: Digest::of(name.as_bytes()),
        size_bytes: 10,
        manifest: "name = \"x\"".into(),
        files: vec![ImageFile {
            path: "h.wasm".into(),
            digest: Digest::of(b"h"),
            size_bytes: 1,
        }],
        created_by: "t1".into(),
    }
}

fn token(tenant: &str, id: &str) -> TokenRecord {
    TokenRecord {
        token_id: id.into(),
        tenant: tenant.into(),
        salt: "00".into(),
        hash: "11".into(),
        permission: Permission::CanManage,
        resources: vec!["*".into()],
        created_at_ms: 1,
        expires_at_ms: Some(1_700_000_000_123),
        comment: Some("c".into()),
        created_by: "admin".into(),
    }
}

fn endpoint(tenant: &str, name: &str) -> EndpointRecord {
    EndpointRecord {
        name: name.into(),
        id: "0123".into(),
        tags: Vec::new(),
        description: Some("d".into()),
        tenant: tenant.into(),
        creator: "t1".into(),
        creation_timestamp: 1,
        last_updated_timestamp: 1,
        config: None,
        pending_config: None,
        state: EndpointState {
            ready: Readiness::NotReady,
            config_update: ConfigUpdate::InProgress,
        },
        update_error: None,
        update_node: None,
        fallback_enabled: false,
    }
}

fn is_missing(result: Result<impl std::fmt::Debug, RegistryError>, kind: &str) -> bool {
    matches!(result, Err(RegistryError::NotFound { kind: k, .. }) if k == kind)
}

/// What the sled registry's own tests check, through the traits only.
fn check_registry(reg: &dyn ModelRegistry) {
    // Tenants.
    let acme = reg.create_tenant("acme").unwrap();
    assert_eq!(reg.tenant("acme").unwrap(), acme);
    assert!(matches!(
        reg.create_tenant("acme"),
        Err(RegistryError::AlreadyExists { kind: "tenant", .. })
    ));
    reg.create_tenant("beta").unwrap();
    let names: Vec<String> = reg.tenants().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["acme", "beta"]);
    assert!(is_missing(reg.tenant("nope"), "tenant"));

    // Tokens.
    reg.put_token(&token("acme", "t1")).unwrap();
    reg.put_token(&token("beta", "t2")).unwrap();
    assert_eq!(reg.token("t1").unwrap(), token("acme", "t1"));
    assert!(matches!(
        reg.put_token(&token("acme", "t1")),
        Err(RegistryError::AlreadyExists { kind: "token", .. })
    ));
    assert!(is_missing(reg.put_token(&token("nope", "t3")), "tenant"));
    assert_eq!(reg.tokens(None).unwrap().len(), 2);
    let of_acme = reg.tokens(Some("acme")).unwrap();
    assert_eq!(of_acme, [token("acme", "t1")]);
    reg.delete_token("t2").unwrap();
    assert!(is_missing(reg.token("t2"), "token"));
    assert!(is_missing(reg.delete_token("t2"), "token"));

    // Model versions: counted per model, never reused.
    assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 1);
    assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 2);
    assert_eq!(reg.publish_image(draft("acme", "b")).unwrap().version, 1);
    assert!(is_missing(reg.publish_image(draft("nope", "a")), "tenant"));
    let deleted = reg.delete_image("acme", "a", 2).unwrap();
    assert_eq!((deleted.name.as_str(), deleted.version), ("a", 2));
    assert!(is_missing(
        reg.delete_image("acme", "a", 2),
        "model version"
    ));
    assert!(is_missing(reg.image("acme", "a", 2), "model version"));
    assert!(is_missing(
        reg.image("acme", "a", u64::MAX),
        "model version"
    ));
    assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 3);
    let versions: Vec<u64> = reg
        .images("acme", "a")
        .unwrap()
        .iter()
        .map(|i| i.version)
        .collect();
    assert_eq!(versions, [1, 3]);
    assert_eq!(
        reg.image("acme", "a", 3).unwrap().files,
        draft("acme", "a").files
    );
    assert_eq!(reg.models("acme").unwrap(), ["a", "b"]);
    assert!(reg.models("beta").unwrap().is_empty());
    let blobs = reg.referenced_blobs().unwrap();
    assert_eq!(blobs.len(), 3, "a, b and the shared handler blob");
    assert!(blobs.contains(&Digest::of(b"h")));

    // Endpoints.
    let ep = endpoint("acme", "ep");
    reg.create_endpoint(&ep).unwrap();
    assert!(matches!(
        reg.create_endpoint(&ep),
        Err(RegistryError::AlreadyExists {
            kind: "serving endpoint",
            ..
        })
    ));
    assert!(is_missing(
        reg.create_endpoint(&endpoint("nope", "ep")),
        "tenant"
    ));
    assert_eq!(reg.endpoint("acme", "ep").unwrap(), ep);
    let mut tagged = ep.clone();
    tagged.description = Some("changed".into());
    reg.put_endpoint(&tagged).unwrap();
    assert_eq!(reg.endpoint("acme", "ep").unwrap(), tagged);
    // The compare-and-swap: a writer that read the record before the change loses.
    let mut stale = ep.clone();
    stale.fallback_enabled = true;
    assert!(matches!(
        reg.swap_endpoint(&ep, &stale),
        Err(RegistryError::Conflict(_))
    ));
    let mut fresh = tagged.clone();
    fresh.fallback_enabled = true;
    reg.swap_endpoint(&tagged, &fresh).unwrap();
    assert_eq!(reg.endpoint("acme", "ep").unwrap(), fresh);
    assert_eq!(reg.endpoints(Some("acme")).unwrap(), [fresh.clone()]);
    assert!(reg.endpoints(Some("beta")).unwrap().is_empty());
    assert_eq!(reg.endpoints(None).unwrap().len(), 1);

    // A tenant with models or endpoints is not deleted; its tokens go with it otherwise.
    let Err(RegistryError::Conflict(message)) = reg.delete_tenant("acme") else {
        panic!("a tenant with models and endpoints was deleted");
    };
    assert!(
        message.contains("3 model version(s) (of `a`, `b`)"),
        "{message}"
    );
    assert!(message.contains("serving endpoint(s) `ep`"), "{message}");
    assert_eq!(
        reg.tokens(Some("acme")).unwrap().len(),
        1,
        "nothing removed"
    );
    reg.delete_endpoint("acme", "ep").unwrap();
    assert!(is_missing(
        reg.delete_endpoint("acme", "ep"),
        "serving endpoint"
    ));
    assert!(is_missing(reg.put_endpoint(&fresh), "serving endpoint"));
    assert!(is_missing(
        reg.swap_endpoint(&fresh, &fresh),
        "serving endpoint"
    ));
    for (name, version) in [("a", 1), ("a", 3), ("b", 1)] {
        reg.delete_image("acme", name, version).unwrap();
    }
    assert!(reg.referenced_blobs().unwrap().is_empty());
    reg.delete_tenant("acme").unwrap();
    assert!(is_missing(reg.tenant("acme"), "tenant"));
    assert!(
        is_missing(reg.token("t1"), "token"),
        "the tenant's tokens went with it"
    );
    assert!(is_missing(reg.delete_tenant("acme"), "tenant"));
    // Created again: a fresh tenant, and the model's versions still never reused.
    reg.create_tenant("acme").unwrap();
    assert!(is_missing(reg.token("t1"), "token"));
    assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 4);

    // The admin credential.
    assert_eq!(reg.admin_credential().unwrap(), None);
    reg.set_admin_credential("s1", "h1").unwrap();
    reg.set_admin_credential("s2", "h2").unwrap();
    assert_eq!(
        reg.admin_credential().unwrap(),
        Some(("s2".to_string(), "h2".to_string()))
    );
}

#[test]
fn the_postgres_registry_passes_the_checks_of_the_sled_registry() {
    let dir = tempfile::tempdir().unwrap();
    check_registry(&SledRegistry::open(dir.path()).unwrap());
    let pg = Postgres::start();
    let url = pg.create_database("registry");
    check_registry(&PostgresRegistry::connect(&url).unwrap());
    // Records and versions survive reconnecting (another node, a restart).
    let again = PostgresRegistry::connect(&url).unwrap();
    assert_eq!(again.images("acme", "a").unwrap()[0].version, 4);
    assert_eq!(again.publish_image(draft("acme", "a")).unwrap().version, 5);
}

#[test]
fn concurrent_writers_on_postgres_get_distinct_versions_and_one_swap_wins() {
    let pg = Postgres::start();
    let url = pg.create_database("races");
    // Two nodes: two registries, each with its own pool.
    let nodes: Vec<Arc<PostgresRegistry>> = (0..2)
        .map(|_| Arc::new(PostgresRegistry::connect(&url).unwrap()))
        .collect();
    nodes[0].create_tenant("acme").unwrap();
    nodes[0].create_endpoint(&endpoint("acme", "ep")).unwrap();
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(4));
        let current = nodes[0].endpoint("acme", "ep").unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (node, barrier, current) =
                    (nodes[i % 2].clone(), barrier.clone(), current.clone());
                std::thread::spawn(move || {
                    let mut next = current.clone();
                    next.description = Some(format!("round {round} writer {i}"));
                    barrier.wait();
                    let published = node.publish_image(draft("acme", "m")).unwrap().version;
                    (published, node.swap_endpoint(&current, &next))
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut versions: Vec<u64> = outcomes.iter().map(|(v, _)| *v).collect();
        versions.sort_unstable();
        let first = round * 4 + 1;
        assert_eq!(versions, [first, first + 1, first + 2, first + 3]);
        let won = outcomes.iter().filter(|(_, swap)| swap.is_ok()).count();
        let lost = outcomes
            .iter()
            .filter(|(_, swap)| matches!(swap, Err(RegistryError::Conflict(_))))
            .count();
        assert_eq!((won, lost), (1, 3), "round {round}: {outcomes:?}");
    }
    // A tenant deleted while tokens are issued into it: each issue either lands before
    // the deletion (and is deleted with it) or is refused; none outlives the tenant.
    for round in 0..10 {
        let tenant = format!("t{round}");
        nodes[0].create_tenant(&tenant).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (issuer, b) = (nodes[1].clone(), barrier.clone());
        let name = tenant.clone();
        let issue = std::thread::spawn(move || {
            b.wait();
            (0..5)
                .map(|i| issuer.put_token(&token(&name, &format!("{name}-{i}"))))
                .collect::<Vec<_>>()
        });
        barrier.wait();
        nodes[0].delete_tenant(&tenant).unwrap();
        for result in issue.join().unwrap() {
            assert!(
                result.is_ok() || is_missing(result, "tenant"),
                "unexpected failure"
            );
        }
        assert!(
            nodes[0].tokens(Some(&tenant)).unwrap().is_empty(),
            "round {round}"
        );
    }
}

// ---- Three real nodes sharing one database ----

fn entity(name: &str, model: &str, version: u64) -> Value {
    json!({"name": name, "entity_name": model, "entity_version": version.to_string()})
}

/// Queries endpoint `echo`: the status and the served entity's name.
fn query(client: &Client) -> (u16, String) {
    let body = json!({"inputs": {"x": [1.0, 2.0, 3.0]}}).to_string();
    let reply = client.post_raw(
        "/serving-endpoints/echo/invocations",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    if reply.status == 200 {
        assert_eq!(
            reply.json()["predictions"]["x"],
            json!([1.0, 2.0, 3.0]),
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let served = reply.header("served-model-name").unwrap_or("").to_string();
    (reply.status, served)
}

/// Waits until endpoint `echo` is READY with no update running on `client`'s node.
fn wait_settled(client: &Client) -> Value {
    let mut last = Value::Null;
    wait_for(Duration::from_secs(60), "endpoint settles", || {
        let (status, body) = client.get("/api/2.0/serving-endpoints/echo");
        assert_eq!(status, 200, "{body}");
        last = body;
        last["state"]["ready"] == "READY" && last["state"]["config_update"] == "NOT_UPDATING"
    });
    last
}

fn token_id(token: &str) -> String {
    let rest = token.strip_prefix("ssv_").unwrap();
    rest.split_once('_').unwrap().0.to_string()
}

/// Revokes `token` on `at` and measures how long until every node in `others` refuses it.
fn revoke_and_measure(at: &Node, others: &[&Node], token: &str) -> Duration {
    for node in others {
        assert_eq!(query(&node.server.client(token)).0, 200, "cached before");
    }
    let (status, body) = at
        .server
        .admin()
        .delete(&format!("/api/2.0/tokens/{}", token_id(token)));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        query(&at.server.client(token)).0,
        401,
        "refused at once where revoked"
    );
    others
        .iter()
        .map(|node| {
            wait_for(Duration::from_secs(10), "revoked token refused", || {
                let (status, body) = node.server.client(token).get("/api/2.0/serving-endpoints");
                assert!(status == 200 || status == 401, "{status} {body}");
                status == 401
            })
        })
        .max()
        .unwrap()
}

#[test]
fn three_nodes_share_metadata_and_follow_each_others_changes() {
    let pg = Postgres::start();
    let url = pg.create_database("cluster");
    let blobs = tempfile::tempdir().unwrap();
    let a = start_node(&url, blobs.path(), "node-a", &[], None);
    let b = start_node(&url, blobs.path(), "node-b", &[], None);
    let mut c = start_node(&url, blobs.path(), "node-c", &[], None);

    // Leases: every node lists the three, at the URLs they listen on.
    let expected: Vec<Value> = [("node-a", &a), ("node-b", &b), ("node-c", &c)]
        .iter()
        .map(|(id, node)| json!({"id": id, "url": node.server.url}))
        .collect();
    for node in [&a, &b, &c] {
        wait_for(Duration::from_secs(5), "three live nodes", || {
            let (status, body) = node.server.admin().get("/api/2.0/cluster/nodes");
            assert_eq!(status, 200, "{body}");
            body["nodes"] == json!(expected)
        });
    }
    let (_, me) = b.server.admin().get("/api/2.0/cluster/nodes");
    assert_eq!(me["self"], "node-b");
    let (status, _) = b.server.client("").get("/api/2.0/cluster/nodes");
    assert_eq!(status, 401, "the node list is the admin's");

    // A tenant and token made on A work on B and C at once; an upload on A is listed there.
    let token = a.server.admin().tenant_with_token("acme", "CAN_MANAGE");
    let on = |node: &Node| node.server.client(&token);
    let (status, body) = on(&b).get("/api/2.0/cluster/nodes");
    assert_eq!(status, 403, "{body}");
    assert_eq!(on(&a).upload("echo", &example_package("echo")).0, 201);
    for node in [&b, &c] {
        let (status, body) = on(node).get("/api/2.0/models/echo/versions");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["versions"][0]["version"], 1, "{body}");
        assert_eq!(body["versions"].as_array().map(Vec::len), Some(1), "{body}");
    }

    // An endpoint created on A is served by B and C (each loads it from the shared blobs).
    let create =
        json!({"name": "echo", "config": {"served_entities": [entity("echo-1", "echo", 1)]}});
    let (status, body) = on(&a).post("/api/2.0/serving-endpoints", &create);
    assert_eq!(status, 200, "{body}");
    wait_settled(&on(&a));
    for node in [&a, &b, &c] {
        wait_for(Duration::from_secs(60), "endpoint served", || {
            query(&on(node)) == (200, "echo-1".into())
        });
    }

    // Many requests at once on B, each reading the shared metadata from an async worker
    // (listing endpoints) or serving from memory (queries): none waits on another.
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let client = on(&b);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    if i % 2 == 0 {
                        let (status, body) = client.get("/api/2.0/serving-endpoints");
                        assert_eq!(status, 200, "{body}");
                        assert_eq!(body["endpoints"][0]["name"], "echo", "{body}");
                    } else {
                        assert_eq!(query(&client), (200, "echo-1".into()));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    println!(
        "400 requests on B, half of them reading PostgreSQL: {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // A node started again neither sweeps the shared blobs nor rewrites the records: it
    // loads the endpoint and serves it; the record is as A left it.
    let before = wait_settled(&on(&a));
    let data = c.data;
    c.server.stop();
    let server = TestServer::start(data.path(), &["--metadata", &url, "--node-id", "node-c"]);
    c = Node { server, data };
    wait_for(Duration::from_secs(60), "restarted node serves", || {
        query(&on(&c)) == (200, "echo-1".into())
    });
    assert_eq!(wait_settled(&on(&a)), before);

    // A config change on A is served by B and C within the bound once A has it ready.
    let renamed = json!({"served_entities": [entity("renamed", "echo", 1)]});
    let (status, body) = on(&a).put("/api/2.0/serving-endpoints/echo/config", &renamed);
    assert_eq!(status, 200, "{body}");
    wait_settled(&on(&a));
    let took = [&b, &c]
        .iter()
        .map(|node| {
            wait_for(Duration::from_secs(10), "config change seen", || {
                query(&on(node)).1 == "renamed"
            })
        })
        .max()
        .unwrap();
    println!("config change on A served by B and C after {took:?}");
    assert!(took <= PROPAGATION_BOUND, "config change took {took:?}");

    // Concurrent publishes of the next config version on A and B: when they overlap (the
    // second reads the record before the first has finished), exactly one wins and the
    // other gets 409; never do both publish the same version (a lost update).
    let mut conflicts = 0;
    for round in 0..12 {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [&a, &b]
            .iter()
            .map(|node| {
                let (client, barrier) = (on(node), barrier.clone());
                let config = json!({"served_entities": [entity(&format!("r{round}"), "echo", 1)]});
                std::thread::spawn(move || {
                    barrier.wait();
                    client.put("/api/2.0/serving-endpoints/echo/config", &config)
                })
            })
            .collect();
        let mut replies: Vec<(u16, Value)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        replies.sort_by_key(|(status, _)| *status);
        let version = |reply: &Value| reply["pending_config"]["config_version"].as_u64();
        match (replies[0].0, replies[1].0) {
            (200, 409) => {
                conflicts += 1;
                assert_eq!(
                    replies[1].1["error_code"], "RESOURCE_CONFLICT",
                    "{replies:?}"
                );
            }
            (200, 200) => assert_ne!(
                version(&replies[0].1),
                version(&replies[1].1),
                "both nodes published one version: {replies:?}"
            ),
            _ => panic!("{replies:?}"),
        }
        let winner = version(&replies[0].1).max(version(&replies[1].1));
        let settled = wait_settled(&on(&b));
        assert_eq!(
            settled["config"]["config_version"].as_u64(),
            winner,
            "{settled}"
        );
    }
    println!("{conflicts} of 12 concurrent publishes overlapped (one 409 each)");
    assert!(conflicts > 0, "no two publishes overlapped in 12 rounds");

    // Concurrent uploads of one model on two nodes: two distinct versions.
    let barrier = Arc::new(Barrier::new(2));
    let uploads: Vec<_> = [&a, &b]
        .iter()
        .map(|node| {
            let (client, barrier) = (on(node), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                client.upload("echo", &example_package("echo"))
            })
        })
        .collect();
    let mut versions: Vec<u64> = uploads
        .into_iter()
        .map(|h| {
            let (status, body) = h.join().unwrap();
            assert_eq!(status, 201, "{body}");
            body["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, [2, 3]);

    // A token revoked on A is refused by B and C within the bound.
    let querier = a.server.admin().token("acme", "CAN_QUERY", &["*"], None);
    let took = revoke_and_measure(&a, &[&b, &c], &querier);
    println!("token revoked on A refused by B and C after {took:?}");
    assert!(took <= PROPAGATION_BOUND, "revocation took {took:?}");

    // The followers' LISTEN connections killed: a change made before they listen again
    // still arrives, by revision.
    let querier = a.server.admin().token("acme", "CAN_QUERY", &["*"], None);
    for node in [&b, &c] {
        assert_eq!(query(&node.server.client(&querier)).0, 200);
    }
    let killed = pg.psql(
        "cluster",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'sandserve' AND query LIKE 'LISTEN%'",
    );
    assert_eq!(killed, "3", "one listener per node");
    let took = revoke_and_measure(&a, &[&b, &c], &querier);
    println!("revocation with the listeners killed: {took:?}");
    assert!(took <= PROPAGATION_BOUND, "revocation took {took:?}");

    // A change whose notification never comes (written here without NOTIFY, as if it
    // had been lost): the nodes find it by revision within the catch-up period.
    let querier = a.server.admin().token("acme", "CAN_QUERY", &["*"], None);
    for node in [&a, &b, &c] {
        assert_eq!(query(&node.server.client(&querier)).0, 200);
    }
    let id = token_id(&querier);
    pg.psql(
        "cluster",
        &format!(
            "BEGIN; DELETE FROM tokens WHERE token_id = '{id}'; \
             UPDATE revision SET revision = revision + 1; \
             INSERT INTO changes (revision, kind, name) SELECT revision, 'token', '{id}' \
             FROM revision; COMMIT;"
        ),
    );
    let took = [&a, &b, &c]
        .iter()
        .map(|node| {
            wait_for(Duration::from_secs(10), "silent change found", || {
                node.server
                    .client(&querier)
                    .get("/api/2.0/serving-endpoints")
                    .0
                    == 401
            })
        })
        .max()
        .unwrap();
    println!("a change without a notification reached every node after {took:?}");
    assert!(took <= PROPAGATION_BOUND, "catch-up took {took:?}");

    // PostgreSQL stopped and started again: the nodes catch up by revision.
    let querier = a.server.admin().token("acme", "CAN_QUERY", &["*"], None);
    // The token's issue reaches the nodes too (and drops what they cached of it): cache it
    // after that.
    std::thread::sleep(PROPAGATION_BOUND);
    for node in [&b, &c] {
        assert_eq!(query(&node.server.client(&querier)).0, 200);
    }
    pg.stop();
    std::thread::sleep(Duration::from_secs(2));
    // Cached tokens keep working while the database is down.
    assert_eq!(query(&b.server.client(&querier)).0, 200);
    pg.restart();
    let revoked_after = wait_for(Duration::from_secs(15), "A writes again", || {
        let (status, _) = a
            .server
            .admin()
            .delete(&format!("/api/2.0/tokens/{}", token_id(&querier)));
        status == 200
    });
    println!("A wrote again {revoked_after:?} after PostgreSQL came back");
    for node in [&b, &c] {
        let took = wait_for(
            Duration::from_secs(10),
            "caught up after the restart",
            || {
                node.server
                    .client(&querier)
                    .get("/api/2.0/serving-endpoints")
                    .0
                    == 401
            },
        );
        println!("a node caught up {took:?} after the first write");
        assert!(took <= PROPAGATION_BOUND, "catch-up took {took:?}");
    }
    // And the leases are renewed again (C's at its new address).
    let expected: Vec<Value> = [("node-a", &a), ("node-b", &b), ("node-c", &c)]
        .iter()
        .map(|(id, node)| json!({"id": id, "url": node.server.url}))
        .collect();
    wait_for(Duration::from_secs(10), "three live nodes again", || {
        a.server.admin().get("/api/2.0/cluster/nodes").1["nodes"] == json!(expected)
    });
    for node in [&a, &b, &c] {
        assert_eq!(query(&on(node)).0, 200);
    }

    // A node that stops gives its lease up at once.
    c.server.stop();
    wait_for(Duration::from_secs(2), "a stopped node leaves", || {
        let (_, body) = a.server.admin().get("/api/2.0/cluster/nodes");
        body["nodes"].as_array().map(Vec::len) == Some(2)
    });
}

#[test]
fn a_single_node_lists_itself_and_refuses_an_unknown_metadata_store() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &["--node-id", "solo"]);
    let (status, body) = server.admin().get("/api/2.0/cluster/nodes");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"self": "solo", "nodes": [{"id": "solo", "url": server.url}]})
    );
    server.stop();

    let out = std::process::Command::new(sandserve_tests::server::sandserve_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--metadata", "mysql://db/meta"])
        .env(
            "SANDSERVE_ADMIN_TOKEN",
            sandserve_tests::server::ADMIN_TOKEN,
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metadata: give a PostgreSQL URL"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("mysql://"),
        "the URL is not echoed: {stderr}"
    );
}
