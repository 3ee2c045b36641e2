//! The accept loop: every connection, plain or TLS, is admitted through the connection
//! table (a hard cap; at the cap the longest-idle connection gives way), has its request
//! headers, TLS handshake and request body bounded in time, is closed when idle past the
//! keep-alive timeout, and is served as HTTP/1.1 or HTTP/2. On shutdown, accepting stops,
//! idle connections close, and requests in flight are finished.
//!
//! Why our own loop rather than `axum::serve`: axum's has no header or body timeouts, no
//! connection cap and no idle timeout, so one client without a token could hold every
//! file descriptor the server has (slowloris).

mod connections;
mod progress;
mod tls;

pub use connections::ConnectionTable;
pub use tls::{write_self_signed, TlsError, TlsFiles};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use connections::Connection;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use progress::{Chunked, InFlight, Progress, Sending};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How connections are bounded.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once (at the cap, the longest-idle one is closed for a
    /// newcomer; when none is idle, newcomers are refused at once).
    pub max_connections: usize,
    /// Time a client has to finish its TLS handshake and to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest pause while sending a request body (between two reads that got data).
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub keep_alive_timeout: Duration,
    /// On shutdown, how long requests in flight may take to finish; past it they are cut.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(15),
            keep_alive_timeout: Duration::from_secs(60),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Streams HTTP/2 allows on one connection at once.
const MAX_H2_STREAMS: u32 = 128;

/// How long a shutdown waits for requests in flight, unless configured (Kubernetes gives a
/// pod 30 s between SIGTERM and SIGKILL by default; the manifests leave room above this).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<&TlsFiles>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), TlsError> {
    let acceptor = match tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(files)?)),
        None => None,
    };
    let table = ConnectionTable::new(limits.max_connections);
    let limits = Arc::new(limits);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let Some(admitted) = table.admit() else {
            tracing::warn!(%peer, "connection refused: every connection is busy (max_connections)");
            tasks.spawn(refuse(stream, acceptor.is_none()));
            continue;
        };
        let app = app.clone();
        let limits = limits.clone();
        let acceptor = acceptor.clone();
        let stopping = stopping.clone();
        tasks.spawn(async move {
            let connection = admitted.connection.clone();
            match acceptor {
                None => serve_connection(stream, app, &limits, &connection, stopping).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    // A handshake in progress gives way at the cap like an idle connection.
                    let handshake = tokio::select! {
                        done = handshake => done,
                        () = connection.evicted() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, app, &limits, &connection, stopping).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(admitted);
        });
    }
    // No new connections from here on: a client that connects now is refused by the
    // kernel (and tries another node) instead of waiting in a backlog nobody accepts.
    drop(listener);
    let _ = stop.send(true);
    let drain = limits.drain_timeout;
    let drained = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("shutdown: requests still running after {drain:?} were cut off");
        tasks.abort_all();
    }
    Ok(())
}

/// Answers a connection over the cap with 503 (plain HTTP) or a close (TLS), at once.
async fn refuse(mut stream: tokio::net::TcpStream, plain: bool) {
    if plain {
        let body = r#"{"error_code":"TEMPORARILY_UNAVAILABLE","error":"the server is at its connection limit; retry shortly","message":"the server is at its connection limit; retry shortly"}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    }
}

/// Serves one connection until it ends, is evicted, idles out or the server stops.
async fn serve_connection<S>(
    stream: S,
    app: Router,
    limits: &ConnectionLimits,
    connection: &Arc<Connection>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_connection = connection.clone();
    let body_timeout = limits.body_read_timeout;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let connection = service_connection.clone();
        let app = app.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                respond(
                    app,
                    request.map(|b| bounded_body(b, body_timeout)),
                    connection,
                )
                .await,
            )
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(Some(limits.keep_alive_timeout / 2))
        .keep_alive_timeout(limits.header_read_timeout);
    let stream = Progress {
        inner: stream,
        connection: connection.clone(),
    };
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    // hyper's header timeout starts with the first byte of a request; a connection that
    // sends nothing at all is closed by this check instead.
    let mut check = tokio::time::interval(
        limits
            .keep_alive_timeout
            .min(limits.header_read_timeout)
            .min(Duration::from_secs(1)),
    );
    loop {
        tokio::select! {
            _ = served.as_mut() => return,
            () = connection.evicted() => return,
            _ = stopping.changed() => {
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.drain_timeout, served.as_mut()).await;
                return;
            }
            _ = check.tick() => {
                let idle_out = connection
                    .idle_for()
                    .is_some_and(|idle| idle >= limits.keep_alive_timeout)
                    || connection
                        .silent_for()
                        .is_some_and(|silent| silent >= limits.header_read_timeout);
                if idle_out && connection.close_if_idle() {
                    return;
                }
                // A client that stopped reading its answer: cut it (the body is dropped).
                if connection
                    .stalled_for()
                    .is_some_and(|stalled| stalled >= limits.body_read_timeout)
                {
                    tracing::debug!("closing a connection whose client stopped reading its answer");
                    return;
                }
            }
        }
    }
}

/// A request body whose reads may pause for at most `timeout` each.
fn bounded_body(body: hyper::body::Incoming, timeout: Duration) -> Body {
    Body::new(tower_http::timeout::TimeoutBody::new(timeout, body))
}

/// Runs one request through the app, counting it in flight until its body is sent.
async fn respond(
    app: Router,
    request: Request<Body>,
    connection: Arc<Connection>,
) -> Response<Body> {
    if !connection.begin_request() {
        let mut refused = Response::new(Body::from(
            r#"{"error_code":"TEMPORARILY_UNAVAILABLE","error":"connection closing; retry","message":"connection closing; retry"}"#,
        ));
        *refused.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        refused
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return refused;
    }
    let in_flight = InFlight(connection.clone());
    let response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // The request stays in flight until the body is written out (or dropped), and the
    // body must keep moving (see `Connection::stalled_for`).
    connection.sending_started();
    let sending = Sending(connection);
    // Sent in pieces, so that hyper asks for the next one only as the client reads: the
    // request stays in flight while its answer is really being written.
    response.map(|body| {
        Body::new(Chunked::new(body).map_frame(move |frame| {
            let _ = (&in_flight, &sending);
            frame
        }))
    })
}

/// Raises the open-file limit to its hard limit (servers hold one descriptor per
/// connection) and returns the connection cap the limit leaves room for: `wanted`, or less
/// when the limit is lower, keeping `reserve` descriptors for blobs, sled and engines.
pub fn fit_connection_cap(wanted: usize, reserve: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), hard) = (limit.current, limit.maximum) {
        let want = (wanted + reserve) as u64;
        if current < want {
            limit.current = Some(hard.map_or(want, |h| h.min(want)));
            if setrlimit(Resource::Nofile, limit).is_err() {
                limit.current = Some(current);
            }
        }
    }
    match limit.current {
        Some(current) => {
            let room = (current as usize).saturating_sub(reserve).max(1);
            if room < wanted {
                tracing::warn!(
                    wanted,
                    allowed = room,
                    "the open-file limit leaves room for fewer connections than max_connections; \
                     raise `ulimit -n` to serve more"
                );
            }
            room.min(wanted)
        }
        None => wanted,
    }
}
