//! Model versions queried directly (KServe V2 on a model name no endpoint of the tenant
//! has). Each gets an [`EntityRuntime`] of its own, so a direct query has the same
//! admission control (the manifest's `max_concurrency`, a bounded queue, fast 429s past
//! it), guest threads, inline runs and spare sandboxes as an endpoint's entity.
//!
//! Loaded versions cost memory (a compiled component, the graphs), so they are held
//! only while used: one unused for [`DIRECT_IDLE_LIMIT`] is released by the sweep, at most
//! [`MAX_DIRECT_VERSIONS_PER_TENANT`] per tenant and [`MAX_DIRECT_VERSIONS`] in the whole
//! server are held (past either, the least recently used one with no request running goes
//! first, the tenant's own before anyone else's), and deleting a version releases it at
//! once.

use super::entity::EntityRuntime;
use super::placement::now_millis;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a directly queried version stays loaded without requests.
pub const DIRECT_IDLE_LIMIT: Duration = Duration::from_secs(300);
/// Most directly queried versions loaded at once, over all tenants.
pub const MAX_DIRECT_VERSIONS: usize = 32;
/// Most directly queried versions one tenant has loaded at once.
pub const MAX_DIRECT_VERSIONS_PER_TENANT: usize = 8;

/// (tenant, model, version).
pub type VersionKey = (String, String, u64);

/// What the idle sweep needs to know of a held entity.
pub trait InUse {
    /// Whether a request is running on it right now.
    fn in_use(&self) -> bool;
}

impl InUse for EntityRuntime {
    fn in_use(&self) -> bool {
        self.running() > 0
    }
}

struct Held<E> {
    entity: Arc<E>,
    last_used_ms: AtomicU64,
}

/// The directly queried versions loaded now.
pub struct DirectModels<E = EntityRuntime> {
    held: Mutex<HashMap<VersionKey, Held<E>>>,
}

impl<E> Default for DirectModels<E> {
    fn default() -> Self {
        Self {
            held: Mutex::default(),
        }
    }
}

impl<E: InUse> DirectModels<E> {
    fn lock(&self) -> MutexGuard<'_, HashMap<VersionKey, Held<E>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loaded entity of this version, marking it used.
    pub fn get(&self, key: &VersionKey) -> Option<Arc<E>> {
        let held = self.lock();
        let entry = held.get(key)?;
        entry.last_used_ms.store(now_millis(), Ordering::Relaxed);
        Some(entry.entity.clone())
    }

    /// Holds `entity` for `key` (or returns the one a concurrent load put there first),
    /// releasing least recently used versions past the tenant's and the server's limits.
    /// Versions with a request running are never released here (the limits may be passed
    /// for as long as every held version is busy).
    pub fn insert(&self, key: VersionKey, entity: Arc<E>) -> Arc<E> {
        let mut held = self.lock();
        let now = now_millis();
        if let Some(existing) = held.get(&key) {
            existing.last_used_ms.store(now, Ordering::Relaxed);
            return existing.entity.clone();
        }
        let tenant = key.0.clone();
        let of_tenant = |k: &VersionKey| k.0 == tenant;
        while held.keys().filter(|k| of_tenant(k)).count() >= MAX_DIRECT_VERSIONS_PER_TENANT {
            if !release_least_recent(&mut held, of_tenant) {
                break;
            }
        }
        while held.len() >= MAX_DIRECT_VERSIONS {
            if !release_least_recent(&mut held, |_| true) {
                break;
            }
        }
        held.insert(
            key,
            Held {
                entity: entity.clone(),
                last_used_ms: AtomicU64::new(now),
            },
        );
        entity
    }

    /// Releases this version (it was deleted); true when it was held.
    pub fn remove(&self, key: &VersionKey) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Releases the versions unused for `idle_limit` that no request is running on;
    /// returns how many.
    pub fn release_idle(&self, idle_limit: Duration) -> usize {
        let limit_ms = u64::try_from(idle_limit.as_millis()).unwrap_or(u64::MAX);
        let now = now_millis();
        let mut held = self.lock();
        let before = held.len();
        held.retain(|_, h| {
            h.entity.in_use()
                || now.saturating_sub(h.last_used_ms.load(Ordering::Relaxed)) < limit_ms
        });
        before - held.len()
    }

    /// The versions held now.
    pub fn keys(&self) -> Vec<VersionKey> {
        self.lock().keys().cloned().collect()
    }

    /// Every held entity (for sweeping their spares).
    pub fn entities(&self) -> Vec<Arc<E>> {
        self.lock().values().map(|h| h.entity.clone()).collect()
    }
}

/// Releases the least recently used held version matching `candidate` that no request is
/// running on; false when there is none.
fn release_least_recent<E: InUse>(
    held: &mut HashMap<VersionKey, Held<E>>,
    candidate: impl Fn(&VersionKey) -> bool,
) -> bool {
    let Some(oldest) = held
        .iter()
        .filter(|(k, h)| candidate(k) && !h.entity.in_use())
        .min_by_key(|(_, h)| h.last_used_ms.load(Ordering::Relaxed))
        .map(|(k, _)| k.clone())
    else {
        return false;
    };
    tracing::debug!(tenant = %oldest.0, model = %oldest.1, version = oldest.2,
        "releasing the least recently queried model version");
    held.remove(&oldest);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[derive(Default)]
    struct Entity {
        busy: AtomicBool,
    }

    impl InUse for Entity {
        fn in_use(&self) -> bool {
            self.busy.load(Ordering::Relaxed)
        }
    }

    fn key(version: u64) -> VersionKey {
        ("acme".into(), "digits".into(), version)
    }

    #[test]
    fn a_concurrent_load_gets_the_entity_already_held() {
        let direct = DirectModels::<Entity>::default();
        let first = direct.insert(key(1), Arc::new(Entity::default()));
        let second = direct.insert(key(1), Arc::new(Entity::default()));
        assert!(Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&direct.get(&key(1)).unwrap(), &first));
        assert!(direct.get(&key(2)).is_none());
    }

    fn tenant_key(tenant: &str, version: u64) -> VersionKey {
        (tenant.into(), "digits".into(), version)
    }

    #[test]
    fn past_a_tenants_limit_its_own_least_recently_used_idle_version_goes() {
        let direct = DirectModels::<Entity>::default();
        direct.insert(tenant_key("other", 1), Arc::new(Entity::default()));
        let busy = direct.insert(key(0), Arc::new(Entity::default()));
        busy.busy.store(true, Ordering::Relaxed);
        for v in 1..MAX_DIRECT_VERSIONS_PER_TENANT as u64 {
            direct.insert(key(v), Arc::new(Entity::default()));
        }
        // Every version but 1 was used after it (0 is busy, so it stays anyway).
        std::thread::sleep(Duration::from_millis(5));
        for v in 2..MAX_DIRECT_VERSIONS_PER_TENANT as u64 {
            direct.get(&key(v)).unwrap();
        }
        direct.insert(key(100), Arc::new(Entity::default()));
        assert!(direct.get(&key(1)).is_none());
        assert!(direct.get(&key(0)).is_some(), "busy versions stay");
        assert!(direct.get(&key(100)).is_some());
        assert!(
            direct.get(&tenant_key("other", 1)).is_some(),
            "others untouched"
        );
        assert_eq!(direct.keys().len(), MAX_DIRECT_VERSIONS_PER_TENANT + 1);
    }

    #[test]
    fn past_the_servers_limit_the_least_recently_used_idle_version_goes() {
        let direct = DirectModels::<Entity>::default();
        let tenants = MAX_DIRECT_VERSIONS / MAX_DIRECT_VERSIONS_PER_TENANT;
        for t in 0..tenants {
            for v in 0..MAX_DIRECT_VERSIONS_PER_TENANT as u64 {
                direct.insert(tenant_key(&format!("t{t}"), v), Arc::new(Entity::default()));
            }
        }
        assert_eq!(direct.keys().len(), MAX_DIRECT_VERSIONS);
        std::thread::sleep(Duration::from_millis(5));
        for t in 1..tenants {
            for v in 0..MAX_DIRECT_VERSIONS_PER_TENANT as u64 {
                direct.get(&tenant_key(&format!("t{t}"), v)).unwrap();
            }
        }
        for v in 1..MAX_DIRECT_VERSIONS_PER_TENANT as u64 {
            direct.get(&tenant_key("t0", v)).unwrap();
        }
        direct.insert(tenant_key("new", 1), Arc::new(Entity::default()));
        assert_eq!(direct.keys().len(), MAX_DIRECT_VERSIONS);
        assert!(direct.get(&tenant_key("t0", 0)).is_none());
        assert!(direct.get(&tenant_key("new", 1)).is_some());
    }

    #[test]
    fn idle_versions_are_released_unless_a_request_runs_on_them() {
        let direct = DirectModels::<Entity>::default();
        let busy = direct.insert(key(1), Arc::new(Entity::default()));
        busy.busy.store(true, Ordering::Relaxed);
        direct.insert(key(2), Arc::new(Entity::default()));
        assert_eq!(direct.release_idle(Duration::from_secs(60)), 0);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(direct.release_idle(Duration::from_millis(1)), 1);
        assert_eq!(direct.keys(), vec![key(1)]);
        assert!(direct.remove(&key(1)));
        assert!(!direct.remove(&key(1)));
        assert!(direct.keys().is_empty());
    }
}
