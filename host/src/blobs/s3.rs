//! Blobs in S3-compatible object storage through the `object_store` crate: the object of
//! blob `sha256:<hex>` is `<prefix>/sha256/<hex>`; blobs larger than one part go up as a
//! multipart upload. Credentials and the region come from the usual `AWS_*` variables
//! (`AmazonS3Builder::from_env`); the bucket, prefix and endpoint from the server's config.
//!
//! The server's blob reads and writes run on blocking threads, so this store offers a
//! blocking interface ([`RemoteBlobs`]) over a small Tokio runtime of its own: each call
//! is spawned there and its answer awaited over a channel, which works from any thread
//! (no `block_on` inside another runtime). Retries are few and short, so that an
//! unreachable store answers a cold load within seconds instead of minutes.

use super::remote::{RemoteBlobs, RemoteObject};
use super::{BlobError, Digest};
use futures_util::StreamExt as _;
use object_store::aws::AmazonS3ConfigKey::Client;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig,
};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Parts of a multipart upload (and the size from which one is used), bytes.
pub const PART_BYTES: usize = 8 << 20;

/// Where the blobs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// The server's URL for non-AWS servers (`http://127.0.0.1:8333`); AWS when absent.
    pub endpoint: Option<String>,
    /// Plain HTTP to the endpoint (the config allows it only for loopback or on request).
    pub allow_http: bool,
}

/// An S3 bucket holding blobs.
pub struct S3Blobs {
    store: Arc<AmazonS3>,
    settings: S3Settings,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl S3Blobs {
    /// A client for `settings` (it does not contact the server: a node starts, and serves
    /// what it has cached, while the store is down).
    pub fn connect(settings: S3Settings) -> Result<Self, BlobError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_allow_http(settings.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
            })
            // Keys, not `with_client_options`: that would replace the client options the
            // environment set (and `allow_http` with them).
            .with_config(Client(ClientConfigKey::ConnectTimeout), "2s")
            .with_config(Client(ClientConfigKey::Timeout), "120s");
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder
            .build()
            .map_err(|e| BlobError::Unavailable(format!("cannot configure the S3 client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sandserve-s3")
            .enable_all()
            .build()
            .map_err(|e| BlobError::Unavailable(format!("cannot start the S3 client: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            settings,
        })
    }

    fn key(&self, digest: &Digest) -> ObjectPath {
        ObjectPath::from(self.key_text(&format!("sha256/{}", digest.hex())))
    }

    fn key_text(&self, rest: &str) -> String {
        if self.settings.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.settings.prefix)
        }
    }

    /// Runs `future` on this store's runtime and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, BlobError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| BlobError::Unavailable("the S3 client stopped".into()))
    }

    fn object(&self, meta: &object_store::ObjectMeta) -> Option<RemoteObject> {
        let name = meta.location.filename()?;
        let digest = Digest::parse(name).ok()?;
        // Only `<prefix>/sha256/<hex>`: never an object someone else keeps under the prefix.
        if meta.location.as_ref() != self.key(&digest).as_ref() {
            return None;
        }
        let secs = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
        Some(RemoteObject {
            digest,
            size: meta.size,
            last_modified: std::time::UNIX_EPOCH + Duration::from_secs(secs),
        })
    }

    fn upload_parts(
        &self,
        key: ObjectPath,
        content: &mut dyn Read,
        size: u64,
    ) -> Result<(), BlobError> {
        let store = self.store.clone();
        let mut upload = self
            .run(async move { store.put_multipart(&key).await })?
            .map_err(unavailable)?;
        let mut sent = 0u64;
        let mut failure = None;
        while sent < size {
            let mut part =
                vec![0u8; PART_BYTES.min(usize::try_from(size - sent).unwrap_or(PART_BYTES))];
            if let Err(e) = content.read_exact(&mut part) {
                failure = Some(BlobError::Io {
                    action: "reading a blob to upload".into(),
                    source: e,
                });
                break;
            }
            sent += part.len() as u64;
            let put = upload.put_part(PutPayload::from(part));
            match self.run(put) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure = Some(unavailable(e));
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.run(async move {
            match failure {
                None => upload.complete().await.map(|_| ()).map_err(unavailable),
                Some(failure) => {
                    let _ = upload.abort().await;
                    Err(failure)
                }
            }
        })?
    }
}

fn unavailable(e: object_store::Error) -> BlobError {
    tracing::warn!("the object store failed: {e}");
    BlobError::Unavailable(e.to_string())
}

impl RemoteBlobs for S3Blobs {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.settings.bucket, self.settings.prefix)
    }

    fn upload(&self, digest: &Digest, size: u64, content: &mut dyn Read) -> Result<(), BlobError> {
        let key = self.key(digest);
        if size > PART_BYTES as u64 {
            return self.upload_parts(key, content, size);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        content
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|source| BlobError::Io {
                action: "reading a blob to upload".into(),
                source,
            })?;
        let store = self.store.clone();
        self.run(async move { store.put(&key, PutPayload::from(bytes)).await })?
            .map(|_| ())
            .map_err(unavailable)
    }

    fn download(&self, digest: &Digest, sink: &mut dyn Write) -> Result<u64, BlobError> {
        let store = self.store.clone();
        let key = self.key(digest);
        // Chunks come over a bounded channel, so a large blob is never held in memory.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<bytes::Bytes, BlobError>>(4);
        let wanted = digest.clone();
        self.handle.spawn(async move {
            let result = match store.get(&key).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => {
                    let _ = tx.send(Err(BlobError::NotFound(wanted)));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(unavailable(e)));
                    return;
                }
            };
            let mut stream = result.into_stream();
            while let Some(chunk) = stream.next().await {
                let stop = chunk.is_err();
                let sent = tokio::task::block_in_place(|| tx.send(chunk.map_err(unavailable)));
                if sent.is_err() || stop {
                    return;
                }
            }
        });
        let mut written = 0u64;
        for chunk in rx {
            let chunk = chunk?;
            sink.write_all(&chunk).map_err(|source| BlobError::Io {
                action: format!("caching {digest}"),
                source,
            })?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    fn head(&self, digest: &Digest) -> Result<Option<RemoteObject>, BlobError> {
        let store = self.store.clone();
        let key = self.key(digest);
        match self.run(async move { store.head(&key).await })? {
            Ok(meta) => Ok(self.object(&meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn list(&self) -> Result<Vec<RemoteObject>, BlobError> {
        let store = self.store.clone();
        let prefix = ObjectPath::from(self.key_text("sha256"));
        let metas = self.run(async move {
            let mut metas = Vec::new();
            let mut listing = store.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                metas.push(meta?);
            }
            Ok::<_, object_store::Error>(metas)
        })?;
        Ok(metas
            .map_err(unavailable)?
            .iter()
            .filter_map(|m| self.object(m))
            .collect())
    }

    fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        let store = self.store.clone();
        let key = self.key(digest);
        match self.run(async move { store.delete(&key).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl Drop for S3Blobs {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which a Tokio worker may not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
