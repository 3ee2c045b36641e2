//! Bearer authentication: turns the `Authorization` header into a [`Principal`], or a 401.
//! Tenant tokens are looked up by id and checked against their salted hash; anything else
//! is compared with the bootstrap admin credential.

use super::{ApiError, AppState};
use crate::tenancy::{AuthError, Permission, Principal, TenantGrant};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

/// Whether `headers` carry the admin token (for routes that show the operator more than
/// the public; a missing or wrong token is simply not the admin).
pub fn is_admin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .is_some_and(|presented| matches!(authenticate(state, presented), Ok(Principal::Admin)))
}

/// Who the `Authorization` header names, when it names someone valid (the audit log).
pub fn principal(state: &AppState, headers: &axum::http::HeaderMap) -> Option<Principal> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    authenticate(state, presented).ok()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "missing credentials: send `Authorization: Bearer <token>`",
                )
            })?;
        let value = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthenticated("use `Authorization: Bearer <token>`"))?;
        let principal = authenticate(state, value)?;
        match &principal {
            Principal::Admin => super::access::record_tenant("admin"),
            Principal::Tenant(grant) => super::access::record_tenant(&grant.tenant),
        }
        Ok(Caller(principal))
    }
}

fn authenticate(state: &AppState, presented: &str) -> Result<Principal, ApiError> {
    state
        .directory
        .authenticate(presented)
        .map_err(|e| match e {
            AuthError::Store(e) => e.into(),
            e => ApiError::unauthenticated(e.to_string()),
        })
}

impl Caller {
    /// Only the admin passes.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0 {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(ApiError::forbidden("this route needs the admin token")),
        }
    }

    /// The tenant grant, for routes that act inside one tenant.
    pub fn tenant(&self) -> Result<&TenantGrant, ApiError> {
        match &self.0 {
            Principal::Tenant(grant) => Ok(grant),
            Principal::Admin => Err(ApiError::forbidden(
                "the admin token manages tenants and tokens; use a tenant token for models and endpoints",
            )),
        }
    }

    /// The tenant grant, checked for `permission` on resource `name`. A resource outside
    /// the token's scope is reported as absent (404), so names do not leak; a visible one
    /// without the level is 403.
    pub fn require(
        &self,
        permission: Permission,
        kind: &str,
        name: &str,
    ) -> Result<&TenantGrant, ApiError> {
        let grant = self.tenant()?;
        if !grant.covers(name) {
            return Err(ApiError::not_found(format!(
                "{kind} `{name}` does not exist"
            )));
        }
        if grant.permission < permission {
            return Err(ApiError::forbidden(format!(
                "this token has {}; {permission} is needed",
                grant.permission
            )));
        }
        Ok(grant)
    }
}
