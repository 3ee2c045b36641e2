//! A server built in this process: the composition root's config over a fresh data folder,
//! sized so that several fit in one test process. For tests that drive the router with
//! `tower::ServiceExt::oneshot` (no socket, no listener).

use crate::repo_root;
use crate::server::ADMIN_TOKEN;
use sandserve_host::config::{ServeConfig, Settings};
use sandserve_host::serving::GuestThreadSettings;
use std::path::Path;

/// A server's config with its data in `dir/data`, the admin token of the tests, the
/// repository's engines, few sandbox slots and guest threads.
pub fn config(dir: &Path) -> ServeConfig {
    let settings = Settings {
        data_dir: Some(dir.join("data")),
        admin_token: Some(ADMIN_TOKEN.into()),
        engines_dir: Some(repo_root().join(".engines")),
        max_instances: Some(16),
        memory_budget_mib: Some(1024),
        ..Settings::default()
    };
    let mut config = ServeConfig::resolve(settings).expect("the tests' settings resolve");
    config.guest_threads = GuestThreadSettings {
        threads: 4,
        per_tenant: 2,
        foreground_per_tenant: 1,
    };
    config
}
