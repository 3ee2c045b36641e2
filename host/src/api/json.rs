//! JSON request bodies with errors in our shape: 400 naming the offending field
//! (`permissions[0]: unknown variant ...`), 413 past 1 MiB. The body is parsed as JSON
//! whatever its Content-Type says (curl's `-d` sends form encoding by default).

use super::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// Largest JSON body a management route accepts.
const MAX_JSON_BYTES: usize = 1 << 20;

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

/// Parses `bytes` as `T`, naming the field that does not fit.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("malformed JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("field `{path}`: {inner}"))
        }
    })
}

/// Reads an already parsed JSON value as `T`, naming the field that does not fit.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("malformed body: {inner}"))
        } else {
            ApiError::bad_request(format!("field `{path}`: {inner}"))
        }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if bytes.len() > MAX_JSON_BYTES {
            return Err(ApiError::too_large("JSON bodies are limited to 1 MiB"));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// A whole request body, within the route's body limit (413 past it).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(format!("request body too large: {e}"))
                } else {
                    ApiError::body_unreadable(&e)
                }
            })
    }
}
