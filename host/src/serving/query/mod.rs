//! The one path of every query, whatever its protocol:
//!
//! 1. **authorize**: the caller's grant must allow `CAN_QUERY` on the name (handlers
//!    check it first to answer 401/403/404 in their words; a query that skipped it is
//!    refused here);
//! 2. `events::received`: governance admission (concurrency quota, rate limits); the
//!    request id arrives;
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
//! (`events::Attempt`, also usage) and each query's outcome offered to the endpoint's
//! inference table (`events::finished`). A protocol is a codec; an HTTP route extracts its path,
//! headers and body, authorizes, and calls [`EndpointManager::query`].

mod error;
mod events;
mod select;
mod stages;
#[cfg(test)]
mod tests;

pub use error::{Answered, QueryError};
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
fn authorize<E: From<QueryError>>(grant: &TenantGrant, name: &str) -> Result<(), E> {
    if grant.allows(Permission::CanQuery, name) {
        Ok(())
    } else {
        Err(QueryError::NotAllowed(name.to_string()).into())
    }
}

impl EndpointManager {
    /// Serves one query: the whole pipeline of this module.
    pub async fn query<C: QueryCodec>(
        self: &Arc<Self>,
        query: Query<'_, C>,
    ) -> Result<Served<C::Answer>, QueryError> {
        self.query_as(query).await
    }

    /// [`EndpointManager::query`], failing with the caller's error type `E`, whose
    /// status the inference table records.
    pub async fn query_as<C: QueryCodec, E: Answered>(
        self: &Arc<Self>,
        query: Query<'_, C>,
    ) -> Result<Served<C::Answer>, E> {
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
        let context = events::Context {
            governance: &self.governance,
            admission: events::received(&self.governance, grant, name).await?,
            grant,
            name,
            body_len: body.len(),
            request_id,
        };
        let (result, entity) = self.serve(&context, pick, names, codec, &body).await;
        let result = result.map_err(E::from);
        let outcome = match &result {
            Ok(served) => Ok(C::answer_bytes(&served.answer).1),
            Err(e) => Err(e),
        };
        events::finished(&context, &body, entity.as_deref(), outcome);
        result
    }

    /// Picks the entity and tries it (and, on a split with fallback, the next); gives the
    /// last entity tried.
    async fn serve<C: QueryCodec>(
        self: &Arc<Self>,
        context: &events::Context<'_>,
        pick: Pick<'_>,
        names: Names,
        codec: &C,
        body: &Bytes,
    ) -> (
        Result<Served<C::Answer>, QueryError>,
        Option<Arc<EntityRuntime>>,
    ) {
        let (tenant, name) = (&context.grant.tenant, context.name);
        let chosen = match select::choose(self, tenant, name, pick, names).await {
            Ok(chosen) => chosen,
            Err(e) => return (Err(e.into()), None),
        };
        match chosen {
            Chosen::One(entity) => {
                let result = stages::attempt(context, &entity, codec, body).await;
                let served = result.map(|answer| Served {
                    entity: entity.clone(),
                    answer,
                });
                (served, Some(entity))
            }
            Chosen::Routed { active, first } => {
                let entity = &active.entities[first];
                let error = match stages::attempt(context, entity, codec, body).await {
                    Ok(answer) => {
                        let served = Served {
                            entity: entity.clone(),
                            answer,
                        };
                        return (Ok(served), Some(entity.clone()));
                    }
                    Err(error) => error,
                };
                let Some(other) = select::fallback(active.fallback, &active.split, first, &error)
                else {
                    return (Err(error), Some(entity.clone()));
                };
                let retry = &active.entities[other];
                events::falling_back(entity, retry);
                let result = stages::attempt(context, retry, codec, body).await;
                let served = result.map(|answer| Served {
                    entity: retry.clone(),
                    answer,
                });
                (served, Some(retry.clone()))
            }
        }
    }
}
