//! The sled registry: versions, tenants and records survive reopening.

use super::*;
use crate::registry::ImageFile;

/// A draft of model `name` for `tenant` (shared with the tenant-deletion tests).
pub(super) fn draft(tenant: &str, name: &str) -> ImageDraft {
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

#[test]
fn versions_count_up_per_model_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = SledRegistry::open(dir.path()).unwrap();
        reg.create_tenant("acme").unwrap();
        assert!(matches!(
            reg.create_tenant("acme"),
            Err(RegistryError::AlreadyExists { .. })
        ));
        assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 1);
        assert_eq!(reg.publish_image(draft("acme", "a")).unwrap().version, 2);
        assert_eq!(reg.publish_image(draft("acme", "b")).unwrap().version, 1);
        reg.delete_image("acme", "a", 2).unwrap();
    }
    let reg = SledRegistry::open(dir.path()).unwrap();
    assert_eq!(reg.models("acme").unwrap(), vec!["a", "b"]);
    assert_eq!(
        reg.publish_image(draft("acme", "a")).unwrap().version,
        3,
        "deleted versions are never reused"
    );
    assert!(matches!(
        reg.delete_tenant("acme"),
        Err(RegistryError::Conflict(_))
    ));
    assert_eq!(reg.referenced_blobs().unwrap().len(), 3);
}
