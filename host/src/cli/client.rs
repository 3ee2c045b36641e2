//! The HTTP client of the client commands: reqwest's blocking client on rustls (no
//! OpenSSL), the token on every request, the server's JSON errors turned into messages that
//! say what to do next.

use super::profile::Target;
use anyhow::{anyhow, Context, Result};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A connection to one server with one token.
pub struct Client {
    http: Http,
    target: Target,
}

/// How long a JSON call may take (uploads have no overall limit).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

impl Client {
    /// A client for `target`, trusting its `cacert` besides the usual roots.
    pub fn new(target: Target) -> Result<Self> {
        let mut builder = Http::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(None::<Duration>)
            .user_agent(concat!("sandserve-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &target.cacert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --cacert {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--cacert {} holds no PEM certificate", path.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build().context("cannot set up the HTTP client")?,
            target,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// A request to `path` (starting with `/`) with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.target.url))
            .bearer_auth(&self.target.token)
    }

    /// Sends a JSON call and returns the answer's JSON (`null` for an empty body).
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut request = self.request(method, path).timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().map_err(|e| self.unreachable(&e))?;
        read_json(response)
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None)
    }

    /// Says why the server could not be reached, and what to try.
    pub fn unreachable(&self, error: &reqwest::Error) -> anyhow::Error {
        let mut chain = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(error);
        while let Some(e) = source {
            chain.push_str(&format!(": {e}"));
            source = e.source();
        }
        let hint = if chain.contains("certificate") || chain.contains("UnknownIssuer") {
            "the server's certificate is not trusted: pass --cacert CERT.pem (or set SANDSERVE_CACERT)"
        } else if error.is_timeout() {
            "the server did not answer in time; try again"
        } else {
            "is the server running and the URL right? (`sandserve login --url URL` changes it)"
        };
        anyhow!("cannot reach {}{chain}\nhint: {hint}", self.target.url)
    }
}

/// The answer's JSON on success; on an error status, the server's message and a hint.
pub fn read_json(response: Response) -> Result<Value> {
    let status = response.status();
    let text = response.text().context("reading the server's answer")?;
    if status.is_success() {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text)
            .with_context(|| format!("the server answered {status} with a body that is not JSON"));
    }
    Err(api_error(status, &text))
}

/// An error for a non-2xx answer: `STATUS ERROR_CODE: message` and what to do next.
pub fn api_error(status: StatusCode, text: &str) -> anyhow::Error {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = body["error_code"].as_str().unwrap_or("");
    let message = body["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(500).collect());
    let hint = match status.as_u16() {
        401 => Some("the token was refused: run `sandserve login` with a valid token, or set SANDSERVE_TOKEN"),
        403 => Some("this token's permission is too low for that: ask for a CAN_MANAGE token (`sandserve tokens create`)"),
        404 => Some("check the name: `sandserve models list` / `sandserve endpoints list`"),
        409 => Some("it exists or is in use: look at it with `get`, or wait for the update in progress"),
        413 => Some("too large for this server's limits (docs/api.md lists them)"),
        429 | 503 => Some("the server is busy: try again shortly"),
        _ => None,
    };
    let mut out = format!("server answered {status}");
    if !code.is_empty() {
        out.push_str(&format!(" {code}"));
    }
    out.push_str(&format!(": {message}"));
    if let Some(hint) = hint {
        out.push_str(&format!("\nhint: {hint}"));
    }
    anyhow!(out)
}

/// Escapes one path segment (names are plain, but a user may type anything).
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
