//! Bounded capture of a guest's stdout / stderr.
//!
//! A guest may print as much as it likes; the host keeps the first `capacity` bytes,
//! silently drops the rest (the guest never sees an error for it) and remembers that it
//! truncated, so one chatty request cannot grow host memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How many bytes a guest may write per `check-write` permit.
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// A shared, size-bounded output buffer usable as a guest's stdout or stderr.
#[derive(Debug, Clone)]
pub struct BoundedOutput {
    capacity: usize,
    inner: Arc<Mutex<Captured>>,
}

impl BoundedOutput {
    /// A buffer that keeps at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Arc::default(),
        }
    }

    fn append(&self, data: &[u8]) {
        let mut captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity.saturating_sub(captured.bytes.len());
        if data.len() > room {
            captured.truncated = true;
        }
        let keep = data.len().min(room);
        captured.bytes.extend_from_slice(&data[..keep]);
    }

    /// What was captured so far, as lossy UTF-8, leaving it in place.
    pub fn snapshot(&self) -> String {
        let captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&captured.bytes).into_owned()
    }

    /// Takes what was captured, as lossy UTF-8, and whether anything was dropped.
    pub fn take(&self) -> (String, bool) {
        let mut captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&captured.bytes).into_owned();
        let truncated = captured.truncated;
        *captured = Captured::default();
        (text, truncated)
    }
}

impl IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for BoundedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_prefix_and_flags_truncation() {
        let out = BoundedOutput::new(5);
        out.append(b"abc");
        out.append(b"defg");
        assert_eq!(out.take(), ("abcde".to_string(), true));
        assert_eq!(out.take(), (String::new(), false));
    }
}
