//! Databricks query API: `POST /serving-endpoints/{name}/invocations` (routed by the
//! traffic split, with optional fallback) and
//! `POST /serving-endpoints/{name}/served-models/{entity}/invocations` (one entity).
//! Bodies: exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs`,
//! plus `params`; answers `{"predictions": ...}` with the `served-model-name` header.
//! Both routes only authorize and hand the query to the pipeline
//! (`serving::query`); the protocol is [`DatabricksCodec`].

use super::{ApiError, AppState, Caller, RawBody, RequestIdText};
use crate::codec::DatabricksCodec;
use crate::governance::Refusal;
use crate::serving::query::{Answered, Names, Pick, Query, QueryError, Served};
use crate::tenancy::Permission;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Largest query body.
pub const MAX_QUERY_BYTES: usize = 64 << 20;

static SERVED_MODEL_NAME: HeaderName = HeaderName::from_static("served-model-name");

/// A JSON answer already serialized (answers are written straight from the handler's
/// output bytes, never held as a JSON tree).
pub struct JsonText(pub Vec<u8>);

impl IntoResponse for JsonText {
    fn into_response(self) -> Response {
        (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.0,
        )
            .into_response()
    }
}

/// A served query's answer, with the `served-model-name` of the entity that gave it.
pub fn answer<A>(served: Served<A>, body: impl FnOnce(A) -> Response) -> Response {
    let mut response = body(served.answer);
    if let Ok(value) = HeaderValue::from_str(&served.entity.name) {
        response
            .headers_mut()
            .insert(SERVED_MODEL_NAME.clone(), value);
    }
    response
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::NotAllowed(_) => ApiError::forbidden(e.to_string()),
            QueryError::Refused(refusal @ Refusal::Unavailable) => {
                ApiError::unavailable(refusal.to_string(), Some(refusal.retry_after_secs()))
            }
            QueryError::Refused(refusal) => {
                ApiError::rate_limited(refusal.to_string(), refusal.retry_after_secs())
            }
            QueryError::Serving(e) => e.into(),
            QueryError::Codec(e) => e.into(),
            QueryError::CodecBudget { .. } => {
                ApiError::unavailable(e.to_string(), Some(1)).with_reason("memory_budget_exhausted")
            }
            QueryError::Output { .. } => ApiError::internal(e),
        }
    }
}

impl Answered for ApiError {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

async fn databricks(
    state: &AppState,
    caller: &Caller,
    name: &str,
    pick: Pick<'_>,
    body: axum::body::Bytes,
    request_id: &RequestIdText,
) -> Result<Response, ApiError> {
    let grant = caller.require(Permission::CanQuery, "serving endpoint", name)?;
    let served = state
        .endpoints
        .query_as::<_, ApiError>(Query {
            grant,
            name,
            pick,
            names: Names::Endpoints,
            codec: &DatabricksCodec,
            body,
            request_id: request_id.as_str(),
        })
        .await?;
    Ok(answer(served, |json| JsonText(json).into_response()))
}

/// `POST /serving-endpoints/{name}/invocations`.
pub async fn invocations(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestIdText,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    databricks(&state, &caller, &name, Pick::Split, body, &request_id).await
}

/// `POST /serving-endpoints/{name}/served-models/{entity}/invocations`: bypasses the split.
pub async fn served_model_invocations(
    State(state): State<AppState>,
    caller: Caller,
    request_id: RequestIdText,
    Path((name, entity)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    databricks(
        &state,
        &caller,
        &name,
        Pick::Entity(&entity),
        body,
        &request_id,
    )
    .await
}

#[cfg(test)]
mod tests;
