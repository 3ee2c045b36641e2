//! The one path of every query, whatever its protocol:
//!
//! 1. **authorize**: the caller's grant must allow `CAN_QUERY` on the name (handlers
//!    check it first to answer 401/403/404 in their words; a query that skipped it is
//!    refused here);
//! 2. `events::received`: the request id arrives; the hook for rate limits;
//! 3. **pick the entity** (`select.rs`): an endpoint's by its traffic split, by name or by
//!    image version, or a bare model version;
//! 4. **decode** with the protocol's [`QueryCodec`], **check the signature**, attach the
//!    raw body when the manifest asks for it; large bodies on the tenant's share of the
//!    guest threads (`stages.rs`);
//! 5. **invoke** the handler ([`EntityRuntime::invoke`]: admission, sandbox, placement);
//! 6. **encode** the answer, large ones off the async worker too;
//! 7. **fall back** once to another entity of the split after a server-side failure,
//!    when the endpoint has fallback on;
//!
//! with each try on an entity counted in its model version's statistics
//! (`events::Attempt`). A protocol is a codec; an HTTP route extracts its path,
//! headers and body, authorizes, and calls [`EndpointManager::query`].

mod error;
mod events;
mod select;
mod stages;
#[cfg(test)]
mod tests;

pub use error::QueryError;
pub use select::{Names, Pick};
pub use stages::{ENCODE_COST_PER_BYTE, INLINE_CODEC_BYTES, PARSE_COST_PER_BYTE};

use super::{EndpointManager, EntityRuntime};
use crate::codec::QueryCodec;
use crate::tenancy::{Permission, TenantGrant};
use bytes::Bytes;
use select::Chosen;
use std::sync::Arc;

/// One query, as its route extracted it.
pub struct Query<'a, C> {
    /// The caller's grant (its tenant is where the name is looked up).
    pub grant: &'a TenantGrant,
    /// The endpoint or model the route names.
    pub name: &'a str,
    /// Which of its entities serves the query.
    pub pick: Pick<'a>,
    /// What the name may be.
    pub names: Names,
    /// The protocol, with what the request told it besides the body.
    pub codec: &'a C,
    /// The request body.
    pub body: Bytes,
    /// The request's id (`x-request-id`), put on what the query logs.
    pub request_id: &'a str,
}

/// A query's answer and the entity that gave it.
pub struct Served<A> {
    /// The served entity that answered (its name goes in the `served-model-name` header).
    pub entity: Arc<EntityRuntime>,
    /// The encoded answer.
    pub answer: A,
}

/// The pipeline's first stage: `grant` must allow `CAN_QUERY` on `name`.
fn authorize(grant: &TenantGrant, name: &str) -> Result<(), QueryError> {
    if grant.allows(Permission::CanQuery, name) {
        Ok(())
    } else {
        Err(QueryError::NotAllowed(name.to_string()))
    }
}

impl EndpointManager {
    /// Serves one query: the whole pipeline of this module.
    pub async fn query<C: QueryCodec>(
        self: &Arc<Self>,
        query: Query<'_, C>,
    ) -> Result<Served<C::Answer>, QueryError> {
        let Query {
            grant,
            name,
            pick,
            names,
            codec,
            body,
            request_id,
        } = query;
        authorize(grant, name)?;
        events::received(&grant.tenant, name, request_id);
        match select::choose(self, &grant.tenant, name, pick, names).await? {
            Chosen::One(entity) => {
                let answer = stages::attempt(&entity, codec, &body, request_id).await?;
                Ok(Served { entity, answer })
            }
            Chosen::Routed { active, first } => {
                let entity = &active.entities[first];
                let error = match stages::attempt(entity, codec, &body, request_id).await {
                    Ok(answer) => {
                        return Ok(Served {
                            entity: entity.clone(),
                            answer,
                        })
                    }
                    Err(error) => error,
                };
                let Some(other) = select::fallback(active.fallback, &active.split, first, &error)
                else {
                    return Err(error);
                };
                let retry = &active.entities[other];
                events::falling_back(entity, retry);
                let answer = stages::attempt(retry, codec, &body, request_id).await?;
                Ok(Served {
                    entity: retry.clone(),
                    answer,
                })
            }
        }
    }
}
