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
    let reg = reopen(dir.path());
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

#[test]
fn sharing_is_recorded_with_who_and_when_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sharing = |shared, by: &str| Sharing {
        shared,
        changed_by: by.into(),
        changed_at_ms: 1_700_000_000_000,
    };
    {
        let reg = SledRegistry::open(dir.path()).unwrap();
        reg.create_tenant("acme").unwrap();
        let published = reg.publish_image(draft("acme", "a")).unwrap();
        assert!(!published.is_shared() && published.sharing.is_none());
        let shared = reg
            .set_sharing("acme", "a", 1, sharing(true, "t1"))
            .unwrap();
        assert!(shared.is_shared());
        assert!(matches!(
            reg.set_sharing("acme", "a", 2, sharing(true, "t1")),
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            reg.set_sharing("globex", "a", 1, sharing(true, "admin")),
            Err(RegistryError::NotFound { .. })
        ));
    }
    let reg = reopen(dir.path());
    let record = reg.image("acme", "a", 1).unwrap();
    assert_eq!(record.sharing, Some(sharing(true, "t1")));
    let unshared = reg
        .set_sharing("acme", "a", 1, sharing(false, "admin"))
        .unwrap();
    assert!(!unshared.is_shared());
    assert_eq!(unshared.sharing.unwrap().changed_by, "admin");
    // Nothing else of the record changes.
    assert_eq!(reg.image("acme", "a", 1).unwrap().files, record.files);
}

/// Opens the registry at `path` again once the last handle's lock is gone: sled releases
/// its file lock when its background flusher thread has seen the database dropped, which
/// on a loaded machine can lag the drop.
pub(super) fn reopen(path: &std::path::Path) -> SledRegistry {
    let started = std::time::Instant::now();
    loop {
        match SledRegistry::open(path) {
            Ok(reg) => return reg,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("the registry stays locked: {e}"),
        }
    }
}
