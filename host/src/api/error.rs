//! The one error shape every route answers with: an HTTP status and a JSON body
//! `{"error_code": ..., "message": ..., "details": [...]}` in Databricks' style (upper-case
//! codes; a `google.rpc.ErrorInfo` detail with a specific `reason` where there is one), plus
//! `"error"` (the message again), the field of KServe's Open Inference Protocol errors.

use crate::blobs::BlobError;
use crate::codec::CodecError;
use crate::images::{ImageError, UploadError};
use crate::inference::{InferenceError, NotSelfContained};
use crate::package::PackageError;
use crate::registry::RegistryError;
use crate::runtime::RuntimeError;
use crate::tenancy::NameError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    reason: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            reason: None,
            retry_after_secs: None,
        }
    }

    /// Adds a specific machine-readable reason.
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 400: malformed input.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    /// 405: the route does not take this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            message,
        )
    }

    /// Another client error, with its own status.
    pub fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "INVALID_PARAMETER_VALUE", message)
    }

    /// 403 `RESOURCE_EXHAUSTED`: a tenant quota set by the admin is used up.
    pub fn quota_exceeded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "RESOURCE_EXHAUSTED", message)
            .with_reason("quota_exceeded")
    }

    /// 501: a Databricks route sandserve does not implement (yet).
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", message)
    }

    /// 401: missing, unknown, revoked or expired token.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    /// 404: absent or not visible to the caller (the two are indistinguishable).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }

    /// 409: exists already.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "RESOURCE_ALREADY_EXISTS", message)
    }

    /// 409: conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "RESOURCE_CONFLICT", message)
    }

    /// 413: body over the limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
    }

    /// A request body that could not be read: 408 when the client paused past the body
    /// read timeout (the accept loop's limit), 400 when it broke off.
    pub fn body_unreadable(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return Self::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "REQUEST_TIMEOUT",
                    "the request body stopped arriving (the server's body read timeout); send it \
                     without pauses",
                );
            }
            cause = e.source();
        }
        Self::bad_request(format!("cannot read the body: {error}"))
    }

    /// 415: a body type the route does not take.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_PARAMETER_VALUE",
            message,
        )
    }

    /// 429 with Retry-After.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "REQUEST_LIMIT_EXCEEDED",
            message,
        );
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// 503 with Retry-After.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: Option<u64>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            message,
        );
        e.retry_after_secs = retry_after_secs;
        e
    }

    /// 504: the handler ran past its deadline.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED", message)
    }

    /// 500: logged in full, answered without internals.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error; the server log has the details",
        )
    }
}

impl std::fmt::Display for ApiError {
    /// The message the client reads (never an internal detail).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `error` is the field KServe V2 clients (tritonclient, ...) read.
        let mut body = json!({
            "error_code": self.code,
            "message": self.message,
            "error": self.message,
        });
        if let Some(reason) = self.reason {
            body["details"] = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "sandserve",
            }]);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// `Retry-After` of a 503 answered while the metadata database is unreachable.
pub const METADATA_RETRY_AFTER_SECS: u64 = 2;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound { .. } => Self::not_found(e.to_string()),
            RegistryError::AlreadyExists { .. } => Self::already_exists(e.to_string()),
            RegistryError::Conflict(m) => Self::conflict(m),
            RegistryError::Unavailable(detail) => {
                // The detail may name the database's host: for the log only.
                tracing::warn!("metadata store unavailable: {detail}");
                Self::unavailable(
                    "the metadata store is unavailable; retry shortly",
                    Some(METADATA_RETRY_AFTER_SECS),
                )
            }
            other => Self::internal(other),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::bad_request(e.to_string()).with_reason("invalid_name")
    }
}

impl From<CodecError> for ApiError {
    fn from(e: CodecError) -> Self {
        Self::bad_request(e.to_string()).with_reason("bad_request_body")
    }
}

impl From<PackageError> for ApiError {
    fn from(e: PackageError) -> Self {
        match e {
            PackageError::Io(detail) => Self::internal(format!("package I/O: {detail}")),
            PackageError::TooLarge { .. }
            | PackageError::CompressionRatio { .. }
            | PackageError::HandlerTooLarge { .. } => {
                let reason = e.error_code();
                Self::too_large(e.to_string()).with_reason(reason)
            }
            other => {
                let reason = other.error_code();
                Self::bad_request(other.to_string()).with_reason(reason)
            }
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> Self {
        let reason = match &e {
            // The server's setup, not the caller's request: 503, and the library paths and
            // settings go to the operator's log, not to the tenant.
            InferenceError::EngineUnavailable { engine, .. }
            | InferenceError::EngineLoad { engine, .. } => {
                tracing::error!("inference engine unavailable: {e}");
                return Self::unavailable(
                    format!(
                        "the {engine} inference engine is not available on this server; \
                         ask its operator (the server log says why)"
                    ),
                    None,
                )
                .with_reason("engine_unavailable");
            }
            InferenceError::TargetUnavailable { .. } => "target_unavailable",
            InferenceError::UnknownEncoding(_) => "unknown_encoding",
            InferenceError::NotSelfContained {
                reason: NotSelfContained::ExternalData { .. },
                ..
            } => "graph_not_self_contained",
            _ => "graph_rejected",
        };
        Self::bad_request(e.to_string()).with_reason(reason)
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Package(p) => p.into(),
            ImageError::NameMismatch { .. } => {
                Self::bad_request(e.to_string()).with_reason("name_mismatch")
            }
            ImageError::Component(r) => {
                let reason = match r {
                    RuntimeError::ForbiddenImport { .. } => "forbidden_import",
                    RuntimeError::InvalidComponent(_) => "not_a_component",
                    RuntimeError::NotAHandler(_) => "not_a_handler",
                    _ => "component_refused",
                };
                Self::bad_request(format!("handler component refused: {r}")).with_reason(reason)
            }
            ImageError::Graph(g) => g.into(),
            ImageError::Unsupported(m) => Self::bad_request(m).with_reason("unsupported"),
            ImageError::Registry(r) => r.into(),
            ImageError::Blob(b) => b.into(),
        }
    }
}

/// When a request that found the object store unreachable may be tried again, seconds.
pub const BLOB_STORE_RETRY_AFTER_SECS: u64 = 5;

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            // The detail names the store's endpoint: for the log only.
            BlobError::Unavailable(detail) => {
                tracing::warn!("the object store is unavailable: {detail}");
                Self::unavailable(
                    format!(
                        "the object store that holds model files cannot be reached (files \
                         this node has cached are still served); retry in \
                         {BLOB_STORE_RETRY_AFTER_SECS} seconds"
                    ),
                    Some(BLOB_STORE_RETRY_AFTER_SECS),
                )
                .with_reason("blob_store_unavailable")
            }
            BlobError::Corrupt { expected, .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "DATA_LOSS",
                format!(
                    "blob {expected} in the object store is corrupted (its content does not \
                     match its sha256) and was refused; upload the model version again"
                ),
            )
            .with_reason("blob_corrupt"),
            other => Self::internal(other),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Busy { .. } => Self::rate_limited(
                format!("{e}; retry in {UPLOAD_RETRY_AFTER_SECS} seconds"),
                UPLOAD_RETRY_AFTER_SECS,
            )
            .with_reason("too_many_uploads"),
            UploadError::TooLarge { .. } => Self::too_large(e.to_string()),
            UploadError::DigestMismatch { .. } => {
                Self::bad_request(e.to_string()).with_reason("digest_mismatch")
            }
            UploadError::Image(image) => image.into(),
            UploadError::Blob(blob) => blob.into(),
            UploadError::Io(_) => Self::internal(e),
        }
    }
}

/// When an upload refused for want of a slot may be tried again, in seconds.
pub const UPLOAD_RETRY_AFTER_SECS: u64 = 5;

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::InvalidInput(m) => Self::bad_request(m).with_reason("invalid_input"),
            RuntimeError::Timeout { .. } => Self::timeout(e.to_string()),
            RuntimeError::Unavailable(m) => {
                Self::unavailable(format!("handler unavailable: {m}"), Some(1))
            }
            RuntimeError::Exhausted(_) => {
                Self::unavailable("no free sandbox; retry shortly", Some(1))
            }
            RuntimeError::MemoryBudget { .. } => {
                Self::unavailable(e.to_string(), Some(1)).with_reason("memory_budget_exhausted")
            }
            RuntimeError::MemoryLimit { .. }
            | RuntimeError::TableLimit { .. }
            | RuntimeError::FuelExhausted { .. }
            | RuntimeError::StackOverflow
            | RuntimeError::OutputTooLarge { .. } => {
                tracing::warn!("handler hit a limit: {e}");
                let mut err = Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    e.to_string(),
                );
                err.reason = Some("limit_exceeded");
                err
            }
            RuntimeError::GuestPanic { .. }
            | RuntimeError::Trap { .. }
            | RuntimeError::HandlerFailed(_) => {
                tracing::warn!("handler failed: {e}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "the model handler failed; its owner can find the cause in the server log",
                )
                .with_reason("handler_failed")
            }
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_engine_is_the_servers_problem_and_its_paths_stay_in_the_log() {
        let error = ApiError::from(InferenceError::EngineLoad {
            engine: "onnx",
            path: "/opt/private/libonnxruntime.so".into(),
            reason: "undefined symbol".into(),
        });
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.reason, Some("engine_unavailable"));
        assert!(error.message.contains("onnx"), "{}", error.message);
        assert!(!error.message.contains("/opt/private"), "{}", error.message);
    }
}
