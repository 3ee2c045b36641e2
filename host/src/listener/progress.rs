//! What a connection has in flight, and whether its answers move: the guards that count a
//! request until its answer's body is done, the stream wrapper that notes each write that
//! reached the client, and the body wrapper that hands hyper an answer in pieces (so that
//! "the body is done" means "nearly all of it was written", not "it was queued").

use super::connections::Connection;
use axum::body::{Body, Bytes};
use http_body::Frame;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest piece of an answer handed to hyper at once.
const PIECE_BYTES: usize = 64 << 10;

/// An answer body cut into pieces of at most [`PIECE_BYTES`] (zero-copy slices).
pub struct Chunked {
    inner: Body,
    rest: Bytes,
}

impl Chunked {
    /// Wraps `inner`.
    pub fn new(inner: Body) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
        }
    }
}

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.rest.is_empty() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let take = self.rest.len().min(PIECE_BYTES);
        let piece = self.rest.split_to(take);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The connection's stream, noting each write that moved bytes to the client (what
/// `Connection::stalled_for` measures).
pub struct Progress<S> {
    /// The stream.
    pub inner: S,
    /// Its connection's state.
    pub connection: Arc<Connection>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Progress<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Progress<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            if *n > 0 {
                self.connection.sent_some();
            }
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &written {
            if *n > 0 {
                self.connection.sent_some();
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Ends its request when dropped.
pub struct InFlight(pub Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// Ends its response's sending when dropped.
pub struct Sending(pub Arc<Connection>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.sending_ended();
    }
}
