//! Inference tables: a sampled record of an endpoint's queries (request, response or
//! error, status, latency, served entity, request ids), kept as append-only JSON Lines
//! segment files under `inference-tables/{tenant}/{endpoint}/` in the data folder (a
//! cap-std `Dir`: no path leaves it). The query path only hands a [`Capture`] (the bodies
//! cut at the payload limit, a small request shared, not copied) to a bounded queue (`try_send`); when it
//! is full the row is counted as dropped, never waited for. One writer thread turns
//! captures into rows (cuts, text, `client_request_id`, JSON), appends, rolls segments and
//! applies retention (age and bytes per endpoint).
//!
//! The writer is not woken per row: it wakes every [`WRITE_EVERY`], or at once when the
//! queue is half full or a caller waits for it (sync, remove). A request therefore never
//! pays for a thread wake-up, and rows are written in batches. Reads ask the writer to
//! sync first, so they see every row queued before.

use super::GovernanceError;
use bytes::Bytes;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a row may wait in the queue before the writer wakes for it (unless the
/// queue fills up to half first).
pub const WRITE_EVERY: Duration = Duration::from_millis(50);

/// How the tables are kept.
#[derive(Debug, Clone)]
pub struct TableSettings {
    /// Rows older than this are deleted (whole segments).
    pub retention: Duration,
    /// Bytes of segments kept per endpoint; the oldest go first.
    pub max_bytes_per_endpoint: u64,
    /// Request and response text longer than this is cut and marked truncated.
    pub max_payload_bytes: usize,
    /// Rows waiting for the writer; more are dropped.
    pub queue_rows: usize,
    /// A segment is closed past this size.
    pub segment_bytes: u64,
}

impl Default for TableSettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_bytes_per_endpoint: 1 << 30,
            max_payload_bytes: 64 << 10,
            queue_rows: 4096,
            segment_bytes: 16 << 20,
        }
    }
}

/// One captured query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// When the query arrived, Unix milliseconds.
    pub timestamp_ms: u64,
    /// The server's request id (the `x-request-id` header when the client sent one).
    pub request_id: Option<String>,
    /// The body's `client_request_id`, when it has one.
    pub client_request_id: Option<String>,
    /// The served entity that answered (or failed), when one was picked.
    pub served_entity_name: Option<String>,
    /// The HTTP status answered.
    pub status_code: u16,
    /// From arrival to answer, milliseconds.
    pub execution_time_ms: f64,
    /// The request body (as text; cut at the payload limit).
    pub request: String,
    /// Whether `request` was cut.
    pub request_truncated: bool,
    /// The answer body (as text; cut at the payload limit), on success.
    pub response: Option<String>,
    /// Whether `response` was cut.
    pub response_truncated: bool,
    /// The error message, on failure.
    pub error: Option<String>,
}

/// `bytes` as text of at most `limit` bytes, and whether it was cut.
pub fn payload_text(bytes: &[u8], limit: usize) -> (String, bool) {
    let cut = bytes.len() > limit;
    let kept = &bytes[..bytes.len().min(limit)];
    (String::from_utf8_lossy(kept).into_owned(), cut)
}

/// One query as the query path hands it to the table: the bodies within the payload limit
/// plus one byte (the request's bytes shared when it is within the limit, else its start
/// copied; the answer's start copied); the writer thread makes the [`Row`].
#[derive(Debug, Clone)]
pub struct Capture {
    /// When the query arrived, Unix milliseconds.
    pub timestamp_ms: u64,
    /// The server's request id.
    pub request_id: Option<String>,
    /// The served entity that answered (or failed), when one was picked.
    pub served_entity_name: Option<String>,
    /// The HTTP status answered.
    pub status_code: u16,
    /// From arrival to answer, milliseconds.
    pub execution_time_ms: f64,
    /// The request body: shared when within the payload limit, else its first
    /// `max_payload_bytes + 1` bytes (see [`Capture::request_part`]).
    pub request: Bytes,
    /// The body's `client_request_id` when it was read on the request path (a body over
    /// the limit); else the writer reads it from `request`.
    pub client_request_id: Option<String>,
    /// The answer body on success: at most the payload limit plus one byte (enough to
    /// tell that it was cut).
    pub response: Option<Vec<u8>>,
    /// The error message, on failure.
    pub error: Option<String>,
}

impl Capture {
    /// The start of `answer` a capture keeps under `limit` (one byte more, so the
    /// writer can mark it cut).
    pub fn answer_prefix(answer: &[u8], limit: usize) -> Vec<u8> {
        answer[..answer.len().min(limit.saturating_add(1))].to_vec()
    }

    /// The request body as a capture keeps it: shared when within `limit` (no copy), else
    /// a copy of its first `limit + 1` bytes, so that the queue never holds large bodies;
    /// then the body's `client_request_id` is read here, while the whole body is at hand.
    pub fn request_part(body: &Bytes, limit: usize) -> (Bytes, Option<String>) {
        if body.len() <= limit {
            (body.clone(), None)
        } else {
            let kept = Bytes::copy_from_slice(&body[..limit.saturating_add(1)]);
            (kept, client_request_id(body))
        }
    }

    fn into_row(self, limit: usize) -> Row {
        let (request, request_truncated) = payload_text(&self.request, limit);
        let (response, response_truncated) = match &self.response {
            Some(answer) => {
                let (text, cut) = payload_text(answer, limit);
                (Some(text), cut)
            }
            None => (None, false),
        };
        Row {
            timestamp_ms: self.timestamp_ms,
            request_id: self.request_id,
            client_request_id: self
                .client_request_id
                .or_else(|| client_request_id(&self.request)),
            served_entity_name: self.served_entity_name,
            status_code: self.status_code,
            execution_time_ms: self.execution_time_ms,
            request,
            request_truncated,
            response,
            response_truncated,
            error: self.error,
        }
    }
}

/// The body's top-level `client_request_id` string (Databricks), if any. A body that does
/// not hold the key's text (most) is not parsed.
fn client_request_id(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"client_request_id";
    if !body.windows(KEY.len()).any(|w| w == KEY) {
        return None;
    }
    #[derive(Deserialize)]
    struct Id {
        client_request_id: Option<String>,
    }
    serde_json::from_slice::<Id>(body).ok()?.client_request_id
}

enum Message {
    Row {
        tenant: String,
        endpoint: String,
        capture: Capture,
    },
    Sync(Sender<()>),
    Remove {
        tenant: String,
        endpoint: String,
        done: Sender<()>,
    },
}

/// The inference tables of all endpoints.
pub struct Tables {
    queue: Sender<Message>,
    /// The writer thread, unparked when a row should not wait for [`WRITE_EVERY`].
    writer: std::thread::Thread,
    dropped: AtomicU64,
    root: Dir,
    /// How they are kept.
    pub settings: TableSettings,
}

fn io_error(e: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::Store(format!("inference tables: {e}"))
}

fn endpoint_dir(tenant: &str, endpoint: &str) -> PathBuf {
    Path::new(tenant).join(endpoint)
}

/// Segment files of a folder, oldest first, with their first row's time (the name).
fn segments(dir: &Dir) -> Vec<(u64, String, u64)> {
    let Ok(entries) = dir.entries() else {
        return Vec::new();
    };
    let mut out: Vec<(u64, String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let start = name.strip_suffix(".jsonl")?.parse::<u64>().ok()?;
            let len = e.metadata().ok()?.len();
            Some((start, name, len))
        })
        .collect();
    out.sort();
    out
}

impl Tables {
    /// Opens the tables under `path` (created if absent) and starts the writer thread.
    pub fn open(path: &Path, settings: TableSettings) -> Result<Self, GovernanceError> {
        std::fs::create_dir_all(path).map_err(io_error)?;
        let root = Dir::open_ambient_dir(path, ambient_authority()).map_err(io_error)?;
        let (queue, rx) = bounded(settings.queue_rows.max(1));
        let writer = Writer {
            root: root.try_clone().map_err(io_error)?,
            settings: settings.clone(),
            open: HashMap::new(),
            line: Vec::new(),
            last_segment_ms: 0,
        };
        let writer = std::thread::Builder::new()
            .name("inference-tables".into())
            .spawn(move || writer.run(rx))
            .map_err(io_error)?
            .thread()
            .clone();
        Ok(Self {
            queue,
            writer,
            dropped: AtomicU64::new(0),
            root,
            settings,
        })
    }

    /// Queues a row for `tenant`'s `endpoint`; counted as dropped when the queue is full.
    pub fn submit(&self, tenant: &str, endpoint: &str, capture: Capture) {
        let message = Message::Row {
            tenant: tenant.to_string(),
            endpoint: endpoint.to_string(),
            capture,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(message)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if self.queue.len() * 2 >= self.settings.queue_rows {
            self.writer.unpark();
        }
    }

    /// Rows dropped because the queue was full, since the server started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (up to 10 s) until every row queued before is written.
    pub fn sync(&self) {
        let (tx, rx) = bounded(1);
        self.writer.unpark();
        if self
            .queue
            .send_timeout(Message::Sync(tx), Duration::from_secs(10))
            .is_ok()
        {
            self.writer.unpark();
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Deletes `tenant`'s `endpoint`'s table (its endpoint is deleted), after the rows
    /// queued before are written; waits up to 10 s.
    pub fn remove(&self, tenant: &str, endpoint: &str) {
        let (done, rx) = bounded(1);
        let message = Message::Remove {
            tenant: tenant.to_string(),
            endpoint: endpoint.to_string(),
            done,
        };
        self.writer.unpark();
        if self
            .queue
            .send_timeout(message, Duration::from_secs(10))
            .is_ok()
        {
            self.writer.unpark();
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// The rows of `tenant`'s `endpoint` from `from_ms` (inclusive) to `to_ms`
    /// (exclusive), oldest first, as JSON lines; at most `limit`, and whether more were
    /// left out.
    pub fn read(
        &self,
        tenant: &str,
        endpoint: &str,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<(Vec<String>, bool), GovernanceError> {
        self.sync();
        let Ok(dir) = self.root.open_dir(endpoint_dir(tenant, endpoint)) else {
            return Ok((Vec::new(), false));
        };
        let list = segments(&dir);
        let mut rows = Vec::new();
        for (i, (start, name, _)) in list.iter().enumerate() {
            let ends_before_from = list.get(i + 1).is_some_and(|(next, _, _)| *next < from_ms);
            if *start >= to_ms || ends_before_from {
                continue;
            }
            let file = dir.open(name).map_err(io_error)?;
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                #[derive(Deserialize)]
                struct Time {
                    timestamp_ms: u64,
                }
                // A line cut by a crash does not parse and is skipped.
                let Ok(t) = serde_json::from_str::<Time>(&line) else {
                    continue;
                };
                if t.timestamp_ms >= from_ms && t.timestamp_ms < to_ms {
                    if rows.len() == limit {
                        return Ok((rows, true));
                    }
                    rows.push(line);
                }
            }
        }
        Ok((rows, false))
    }
}

struct Segment {
    file: std::io::BufWriter<cap_std::fs::File>,
    bytes: u64,
}

struct Writer {
    root: Dir,
    settings: TableSettings,
    open: HashMap<(String, String), Segment>,
    /// The row being serialised (reused).
    line: Vec<u8>,
    /// The name (start, Unix ms) of the last segment opened.
    last_segment_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    /// Drains the queue, writes, flushes; then sleeps until [`WRITE_EVERY`] has passed or
    /// a sender unparks it. Ends (after a last flush) once every sender is gone.
    fn run(mut self, rx: Receiver<Message>) {
        let mut last_sweep = Instant::now();
        loop {
            let mut wrote = false;
            loop {
                match rx.try_recv() {
                    Ok(message) => {
                        self.handle(message);
                        wrote = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            if wrote {
                self.flush();
            }
            if last_sweep.elapsed() > Duration::from_secs(60) {
                self.sweep_all();
                last_sweep = Instant::now();
            }
            std::thread::park_timeout(WRITE_EVERY);
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Sync(done) => {
                self.flush();
                let _ = done.send(());
            }
            Message::Remove {
                tenant,
                endpoint,
                done,
            } => {
                self.open.remove(&(tenant.clone(), endpoint.clone()));
                let dir = endpoint_dir(&tenant, &endpoint);
                if let Err(e) = self.root.remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!("inference table of a deleted endpoint not removed: {e}");
                    }
                }
                let _ = done.send(());
            }
            Message::Row {
                tenant,
                endpoint,
                capture,
            } => {
                let row = capture.into_row(self.settings.max_payload_bytes);
                self.line.clear();
                if serde_json::to_writer(&mut self.line, &row).is_err() {
                    return;
                }
                self.line.push(b'\n');
                let line = std::mem::take(&mut self.line);
                let written = self.append(tenant, endpoint, &line);
                self.line = line;
                if let Err(e) = written {
                    tracing::warn!("inference table row not written: {e}");
                }
            }
        }
    }

    fn append(&mut self, tenant: String, endpoint: String, line: &[u8]) -> std::io::Result<()> {
        let key = (tenant, endpoint);
        let full = self
            .open
            .get(&key)
            .is_some_and(|s| s.bytes >= self.settings.segment_bytes);
        if full {
            if let Some(mut s) = self.open.remove(&key) {
                s.file.flush()?;
            }
            self.sweep(&key.0, &key.1);
        }
        if !self.open.contains_key(&key) {
            let dir = endpoint_dir(&key.0, &key.1);
            self.root.create_dir_all(&dir)?;
            // Named by the millisecond it opens in, and never the name of the segment
            // before (a burst can roll several segments in one millisecond).
            let start = now_ms().max(self.last_segment_ms.saturating_add(1));
            self.last_segment_ms = start;
            let name = dir.join(format!("{start:016}.jsonl"));
            let file = self
                .root
                .open_with(&name, OpenOptions::new().append(true).create(true))?;
            let bytes = file.metadata()?.len();
            let file = std::io::BufWriter::new(file);
            self.open.insert(key.clone(), Segment { file, bytes });
        }
        if let Some(segment) = self.open.get_mut(&key) {
            segment.file.write_all(line)?;
            segment.bytes += line.len() as u64;
        }
        Ok(())
    }

    fn flush(&mut self) {
        for segment in self.open.values_mut() {
            if let Err(e) = segment.file.flush() {
                tracing::warn!("inference table flush failed: {e}");
            }
        }
    }

    fn sweep_all(&mut self) {
        let Ok(tenants) = self.root.entries() else {
            return;
        };
        for tenant in tenants.filter_map(Result::ok) {
            let Ok(tenant) = tenant.file_name().into_string() else {
                continue;
            };
            let Ok(dir) = self.root.open_dir(&tenant) else {
                continue;
            };
            let Ok(endpoints) = dir.entries() else {
                continue;
            };
            for endpoint in endpoints.filter_map(Result::ok) {
                if let Ok(endpoint) = endpoint.file_name().into_string() {
                    self.sweep(&tenant, &endpoint);
                }
            }
        }
    }

    /// Applies retention to one endpoint's closed segments: those whose rows are all
    /// older than the retention age, then the oldest while over the byte budget.
    fn sweep(&self, tenant: &str, endpoint: &str) {
        let Ok(dir) = self.root.open_dir(endpoint_dir(tenant, endpoint)) else {
            return;
        };
        let list = segments(&dir);
        let cutoff = now_ms().saturating_sub(self.settings.retention.as_millis() as u64);
        let mut total: u64 = list.iter().map(|s| s.2).sum();
        // The newest segment may be open: never removed here.
        for (i, (_, name, len)) in list.iter().enumerate().take(list.len().saturating_sub(1)) {
            let all_old = list[i + 1].0 < cutoff;
            let over = all_old || total > self.settings.max_bytes_per_endpoint;
            if over && dir.remove_file(name).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests;
