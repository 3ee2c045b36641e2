//! Gives the error answers that axum itself produces the one JSON error shape of every
//! other route: a method a route does not take (405), a path or query string that does not
//! decode, and any other plain-text rejection of its extractors. Clients then parse every
//! error the same way.

use super::error::ApiError;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Most bytes of a plain-text error kept as its message.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Middleware: the request's answer, with a non-JSON error answer rewritten into
/// [`ApiError`]'s shape.
pub async fn errors_as_json(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    as_json(method.as_str(), next.run(request).await).await
}

/// Rewrites a non-JSON error answer (to a `method` request) into [`ApiError`]'s shape;
/// leaves everything else.
async fn as_json(method: &str, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = match axum::body::to_bytes(response.into_body(), MAX_MESSAGE_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(match &allow {
            Some(allow) => format!(
                "this route does not take {method}, only {}; see the API reference in docs/api.md",
                allow.to_str().unwrap_or("other methods")
            ),
            None => {
                format!("this route does not take {method}; see the API reference in docs/api.md")
            }
        }),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(non_empty(text, "body too large")),
        s if s.is_server_error() => ApiError::internal(non_empty(text, "server error")),
        _ => ApiError::with_status(status, non_empty(text, "malformed request")),
    };
    let mut response = error.into_response();
    if let (StatusCode::METHOD_NOT_ALLOWED, Some(allow)) = (status, allow) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

fn non_empty(text: String, otherwise: &str) -> String {
    if text.is_empty() {
        otherwise.to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_plain_405_becomes_json_and_keeps_its_allow_header() {
        let plain = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "POST")
            .body(Body::empty())
            .unwrap();
        let answer = as_json("GET", plain).await;
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[header::ALLOW], "POST");
        let body = body_json(answer).await;
        assert_eq!(body["error_code"], "METHOD_NOT_ALLOWED");
        assert!(
            body["message"].as_str().unwrap().contains("GET, only POST"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_plain_400_keeps_its_text_and_json_answers_pass_through() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: bad path").into_response();
        let body = body_json(as_json("GET", plain).await).await;
        assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
        assert_eq!(body["message"], "Invalid URL: bad path");
        let ours = ApiError::not_found("no such model").into_response();
        let body = body_json(as_json("GET", ours).await).await;
        assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");
        let ok = as_json("GET", (StatusCode::OK, "fine").into_response()).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
