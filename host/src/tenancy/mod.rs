//! Who is calling and what they may do: permissions, API tokens (only salted hashes are
//! stored), the bootstrap admin credential, and resource-name rules.

mod admin_cache;
mod cache;
mod directory;
mod names;
mod tokens;

pub use crate::registry::Permission;
pub use cache::TokenCache;
pub use directory::{AdminBootstrap, AuthError, Directory, NewToken};
pub use names::{validate_name, NameError};
pub use tokens::{hash_secret, new_salt, redacted, secret_matches, IssuedToken, TokenString};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform administrator (bootstrap token): manages tenants and tokens.
    Admin,
    /// A tenant's token.
    Tenant(TenantGrant),
}

/// What a tenant token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantGrant {
    /// The tenant.
    pub tenant: String,
    /// The token id.
    pub token_id: String,
    /// Its permission level.
    pub permission: Permission,
    /// Resource names it covers (`*` = all).
    pub resources: Vec<String>,
    /// When it expires (Unix milliseconds).
    pub expires_at_ms: Option<u64>,
}

impl TenantGrant {
    /// Whether the grant covers the resource `name` at all (visibility).
    pub fn covers(&self, name: &str) -> bool {
        self.resources.iter().any(|r| r == "*" || r == name)
    }

    /// Whether the grant allows `permission` on `name`.
    pub fn allows(&self, permission: Permission, name: &str) -> bool {
        self.permission >= permission && self.covers(name)
    }

    /// Whether a token with these rights would be no wider than this one.
    pub fn may_delegate(
        &self,
        permission: Permission,
        resources: &[String],
        expires_at_ms: Option<u64>,
    ) -> bool {
        let resources_ok = self.resources.iter().any(|r| r == "*")
            || resources
                .iter()
                .all(|r| r != "*" && self.resources.contains(r));
        let expiry_ok = match (self.expires_at_ms, expires_at_ms) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs <= mine,
        };
        self.permission == Permission::CanManage
            && permission <= self.permission
            && resources_ok
            && expiry_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(
        permission: Permission,
        resources: &[&str],
        expires_at_ms: Option<u64>,
    ) -> TenantGrant {
        TenantGrant {
            tenant: "acme".into(),
            token_id: "t".into(),
            permission,
            resources: resources.iter().map(|s| s.to_string()).collect(),
            expires_at_ms,
        }
    }

    #[test]
    fn levels_include_lower_ones_within_scope() {
        let g = grant(Permission::CanQuery, &["digits"], None);
        assert!(g.allows(Permission::CanView, "digits"));
        assert!(g.allows(Permission::CanQuery, "digits"));
        assert!(!g.allows(Permission::CanManage, "digits"));
        assert!(!g.allows(Permission::CanView, "echo"));
    }

    #[test]
    fn delegation_is_never_wider() {
        let g = grant(Permission::CanManage, &["a", "b"], Some(100));
        assert!(g.may_delegate(Permission::CanQuery, &["a".into()], Some(50)));
        assert!(!g.may_delegate(Permission::CanQuery, &["*".into()], Some(50)));
        assert!(!g.may_delegate(Permission::CanQuery, &["c".into()], Some(50)));
        assert!(!g.may_delegate(Permission::CanQuery, &["a".into()], None));
        assert!(!g.may_delegate(Permission::CanQuery, &["a".into()], Some(101)));
        let viewer = grant(Permission::CanView, &["*"], None);
        assert!(!viewer.may_delegate(Permission::CanView, &["a".into()], None));
    }
}
