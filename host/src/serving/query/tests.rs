//! The pipeline's decisions: which entity serves a query, and when a failed try falls
//! back to another one.

#![allow(clippy::unwrap_used)]

use super::authorize;
use super::error::QueryError;
use super::select::{fallback, model_version, on_endpoint, Candidate, Pick};
use crate::codec::CodecError;
use crate::runtime::RuntimeError;
use crate::serving::{ServingError, Split};
use crate::tenancy::{Permission, TenantGrant};
use std::time::Duration;

struct Fake(&'static str, u64);

impl Candidate for Fake {
    fn name(&self) -> &str {
        self.0
    }
    fn version(&self) -> u64 {
        self.1
    }
}

fn entities() -> Vec<Fake> {
    vec![Fake("digits-1", 1), Fake("digits-2", 2), Fake("spare", 7)]
}

/// 80% to entity 1, 20% to entity 0; entity 2 gets no traffic.
fn split() -> Split {
    Split::new(&[(80, 1), (20, 0)])
}

fn pick(p: Pick<'_>, roll: u32) -> Result<usize, ServingError> {
    on_endpoint("ep", &entities(), &split(), p, |s| s.pick_with(roll))
}

#[test]
fn the_split_picks_by_its_draw() {
    assert_eq!(pick(Pick::Split, 0).unwrap(), 1);
    assert_eq!(pick(Pick::Split, 79).unwrap(), 1);
    assert_eq!(pick(Pick::Split, 80).unwrap(), 0);
    // A split with no route (nothing to draw) is an endpoint not ready to serve.
    let e = on_endpoint("ep", &entities(), &Split::new(&[]), Pick::Split, |s| {
        s.pick()
    })
    .unwrap_err();
    assert!(
        matches!(e, ServingError::NotReady(ref n) if n == "ep"),
        "{e}"
    );
}

#[test]
fn a_named_entity_or_version_bypasses_the_split() {
    // Entity 2 has no traffic share, yet naming it reaches it.
    assert_eq!(pick(Pick::Entity("spare"), 0).unwrap(), 2);
    assert_eq!(pick(Pick::Version(7), 0).unwrap(), 2);
    assert_eq!(pick(Pick::Version(1), 99).unwrap(), 0);
    let e = pick(Pick::Entity("nope"), 0).unwrap_err();
    assert_eq!(e.to_string(), "endpoint `ep` has no served entity `nope`");
    let e = pick(Pick::Version(3), 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "endpoint `ep` has no served entity `version 3`"
    );
}

#[test]
fn a_bare_model_serves_the_version_asked_for_else_its_latest() {
    let latest = || Ok(5);
    assert_eq!(model_version(Pick::Split, latest).unwrap().unwrap(), 5);
    let never = || -> Result<u64, ServingError> { panic!("the latest version is not needed") };
    assert_eq!(model_version(Pick::Version(2), never).unwrap().unwrap(), 2);
    assert!(model_version(Pick::Entity("digits-1"), never).is_none());
    let missing = || Err(ServingError::NoSuchModel("digits".into()));
    let e = model_version(Pick::Split, missing).unwrap().unwrap_err();
    assert_eq!(e.to_string(), "model `digits` does not exist");
}

fn server_side() -> QueryError {
    QueryError::Serving(ServingError::Runtime(RuntimeError::Trap {
        trap: "unreachable".into(),
    }))
}

#[test]
fn only_a_server_side_failure_falls_back_and_only_when_enabled() {
    let split = split();
    // Entity 1 failed: the next in route order is 0.
    assert_eq!(fallback(true, &split, 1, &server_side()), Some(0));
    assert_eq!(fallback(true, &split, 0, &server_side()), Some(1));
    assert_eq!(fallback(false, &split, 1, &server_side()), None);
    let timeout = QueryError::Serving(ServingError::Runtime(RuntimeError::Timeout {
        timeout: Duration::from_secs(1),
    }));
    assert_eq!(fallback(true, &split, 1, &timeout), Some(0));
    let budget = QueryError::CodecBudget {
        cost_bytes: 1 << 30,
    };
    assert_eq!(fallback(true, &split, 1, &budget), Some(0));
    // The caller's mistakes and a full queue (429) stay with the entity that saw them.
    let bad_body = QueryError::Codec(CodecError::Json("expected a JSON object".into()));
    assert_eq!(fallback(true, &split, 1, &bad_body), None);
    let refused = QueryError::Serving(ServingError::Runtime(RuntimeError::InvalidInput(
        "x".into(),
    )));
    assert_eq!(fallback(true, &split, 1, &refused), None);
    let overloaded = QueryError::Serving(ServingError::Overloaded {
        entity: "digits-2".into(),
        running: 4,
        queued: 8,
    });
    assert_eq!(fallback(true, &split, 1, &overloaded), None);
    // With one route there is nowhere to go.
    assert_eq!(
        fallback(true, &Split::new(&[(100, 0)]), 0, &server_side()),
        None
    );
}

fn grant(permission: Permission, resources: &[&str]) -> TenantGrant {
    TenantGrant {
        tenant: "acme".into(),
        token_id: "t".into(),
        permission,
        resources: resources.iter().map(|r| r.to_string()).collect(),
        expires_at_ms: None,
    }
}

#[test]
fn a_query_needs_can_query_on_its_name() {
    assert!(authorize::<QueryError>(&grant(Permission::CanQuery, &["ep"]), "ep").is_ok());
    assert!(authorize::<QueryError>(&grant(Permission::CanManage, &["*"]), "ep").is_ok());
    let e: QueryError = authorize(&grant(Permission::CanView, &["ep"]), "ep").unwrap_err();
    assert_eq!(e.to_string(), "this token may not query `ep`");
    assert!(authorize::<QueryError>(&grant(Permission::CanQuery, &["other"]), "ep").is_err());
}
