//! Tenant deletion against the writes that race with it, called in the racing order.

use super::tests::draft;
use super::*;
use crate::registry::EndpointState;
use crate::registry::Permission;

fn token(tenant: &str, id: &str) -> TokenRecord {
    TokenRecord {
        token_id: id.into(),
        tenant: tenant.into(),
        salt: "00".into(),
        hash: "11".into(),
        permission: Permission::CanManage,
        resources: vec!["*".into()],
        created_at_ms: 1,
        expires_at_ms: None,
        comment: None,
        created_by: "admin".into(),
    }
}

fn endpoint(tenant: &str, name: &str) -> EndpointRecord {
    EndpointRecord {
        name: name.into(),
        id: String::new(),
        tags: Vec::new(),
        description: None,
        tenant: tenant.into(),
        creator: "t1".into(),
        creation_timestamp: 1,
        last_updated_timestamp: 1,
        config: None,
        pending_config: None,
        state: EndpointState {
            ready: crate::registry::Readiness::NotReady,
            config_update: crate::registry::ConfigUpdate::UpdateFailed,
        },
        update_error: None,
        update_node: None,
        fallback_enabled: false,
    }
}

fn is_missing_tenant(result: Result<impl std::fmt::Debug, RegistryError>) -> bool {
    matches!(result, Err(RegistryError::NotFound { kind: "tenant", .. }))
}

fn open() -> (tempfile::TempDir, SledRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = SledRegistry::open(dir.path()).unwrap();
    (dir, reg)
}

#[test]
fn a_token_issued_for_a_tenant_deleted_after_the_check_is_refused() {
    let (_dir, reg) = open();
    reg.create_tenant("acme").unwrap();
    // The token route checked that the tenant exists; then the tenant is deleted.
    reg.tenant("acme").unwrap();
    reg.delete_tenant("acme").unwrap();
    assert!(is_missing_tenant(reg.put_token(&token("acme", "t1"))));
    assert!(reg.tokens(None).unwrap().is_empty());
    reg.create_tenant("acme").unwrap();
    assert!(matches!(
        reg.token("t1"),
        Err(RegistryError::NotFound { .. })
    ));
}

#[test]
fn a_publish_whose_tenant_was_deleted_during_the_upload_fails() {
    let (_dir, reg) = open();
    reg.create_tenant("acme").unwrap();
    // The upload was authorised, then the tenant deleted while the body streamed.
    reg.delete_tenant("acme").unwrap();
    assert!(is_missing_tenant(
        reg.publish_image(draft("acme", "digits"))
    ));
    assert!(reg.referenced_blobs().unwrap().is_empty());
    reg.create_tenant("acme").unwrap();
    assert!(reg.models("acme").unwrap().is_empty());
}

#[test]
fn an_endpoint_created_for_a_deleted_tenant_is_refused() {
    let (_dir, reg) = open();
    reg.create_tenant("acme").unwrap();
    reg.delete_tenant("acme").unwrap();
    assert!(is_missing_tenant(
        reg.create_endpoint(&endpoint("acme", "ep"))
    ));
    reg.create_tenant("acme").unwrap();
    assert!(reg.endpoints(Some("acme")).unwrap().is_empty());
}

#[test]
fn a_tenant_with_only_an_endpoint_is_not_deleted() {
    let (_dir, reg) = open();
    reg.create_tenant("acme").unwrap();
    reg.put_token(&token("acme", "t1")).unwrap();
    reg.create_endpoint(&endpoint("acme", "ep")).unwrap();
    assert!(matches!(
        reg.delete_tenant("acme"),
        Err(RegistryError::Conflict(_))
    ));
    assert!(reg.tenant("acme").is_ok());
    assert!(reg.token("t1").is_ok(), "a refused delete keeps the tokens");
    reg.delete_endpoint("acme", "ep").unwrap();
    reg.delete_tenant("acme").unwrap();
    assert!(reg.tokens(None).unwrap().is_empty());
}

#[test]
fn a_tenant_with_a_model_is_not_deleted_until_its_last_version_is() {
    let (_dir, reg) = open();
    reg.create_tenant("acme").unwrap();
    let v1 = reg.publish_image(draft("acme", "digits")).unwrap();
    let v2 = reg.publish_image(draft("acme", "digits")).unwrap();
    reg.delete_image("acme", "digits", v1.version).unwrap();
    assert!(matches!(
        reg.delete_tenant("acme"),
        Err(RegistryError::Conflict(_))
    ));
    reg.delete_image("acme", "digits", v2.version).unwrap();
    reg.delete_tenant("acme").unwrap();
}

#[test]
fn a_recreated_tenant_sees_nothing_of_the_old_one() {
    let (_dir, reg) = open();
    reg.create_tenant("acme").unwrap();
    reg.put_token(&token("acme", "t1")).unwrap();
    reg.put_token(&token("acme", "t2")).unwrap();
    reg.put_token(&token("other", "t3")).unwrap_err();
    reg.create_tenant("other").unwrap();
    reg.put_token(&token("other", "t3")).unwrap();
    reg.delete_token("t2").unwrap();
    reg.delete_tenant("acme").unwrap();
    reg.create_tenant("acme").unwrap();
    assert!(reg.tokens(Some("acme")).unwrap().is_empty());
    assert!(reg.models("acme").unwrap().is_empty());
    assert!(reg.endpoints(Some("acme")).unwrap().is_empty());
    assert_eq!(
        reg.tokens(None).unwrap().len(),
        1,
        "other tenants keep theirs"
    );
}

#[test]
fn records_an_older_release_wrote_are_owned_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = SledRegistry::open(dir.path()).unwrap();
        reg.create_tenant("acme").unwrap();
        // Written the way releases before the tenant index wrote them.
        let raw = |tree: &sled::Tree, key: &str, value: Vec<u8>| {
            tree.insert(key, value).unwrap();
        };
        raw(&reg.tokens, "t1", encode(&token("acme", "t1")).unwrap());
        raw(
            &reg.endpoints,
            "acme/ep",
            encode(&endpoint("acme", "ep")).unwrap(),
        );
        // Left behind by a deletion that raced with writes: a token and an endpoint
        // of a tenant that no longer exists.
        raw(&reg.tokens, "t9", encode(&token("gone", "t9")).unwrap());
        raw(
            &reg.endpoints,
            "gone/ep",
            encode(&endpoint("gone", "ep")).unwrap(),
        );
        reg.flush().unwrap();
    }
    let reg = super::tests::reopen(dir.path());
    assert!(matches!(
        reg.delete_tenant("acme"),
        Err(RegistryError::Conflict(_))
    ));
    reg.delete_endpoint("acme", "ep").unwrap();
    reg.delete_tenant("acme").unwrap();
    assert!(
        matches!(reg.token("t1"), Err(RegistryError::NotFound { .. })),
        "the older release's token goes with its tenant"
    );
    assert!(
        matches!(reg.token("t9"), Err(RegistryError::NotFound { .. })),
        "a token of a deleted tenant is revoked"
    );
    // The deleted tenant's endpoint is not handed to whoever creates `gone` next: the
    // tenant is listed again, so that the admin sees and cleans it up.
    reg.tenant("gone").unwrap();
    assert!(matches!(
        reg.delete_tenant("gone"),
        Err(RegistryError::Conflict(_))
    ));
}
