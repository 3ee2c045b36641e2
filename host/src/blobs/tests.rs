//! The blob store's unit tests: the local folder, the cache's budget and pins, fetches
//! from a remote store (sha256 checked, one fetch for many callers).

use super::*;
use std::io::{Read, Write};

#[test]
fn stores_by_content_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobs::open(dir.path()).unwrap();
    let a = store.put(b"hello").unwrap();
    assert_eq!(a, Digest::of(b"hello"));
    assert_eq!(store.put(b"hello").unwrap(), a, "same content, same blob");
    assert_eq!(store.read(&a).unwrap(), b"hello");
    assert_eq!(store.list().unwrap(), vec![a.clone()]);
    {
        let mut w = store.writer(4).unwrap();
        assert!(w.write_all(b"too long").is_err());
    }
    assert_eq!(
        store.pending_writes().unwrap(),
        0,
        "abandoned writes vanish"
    );
    store.remove(&a).unwrap();
    assert!(matches!(store.read(&a), Err(BlobError::NotFound(_))));
}

#[test]
fn digests_parse_strictly() {
    let d = Digest::of(b"x");
    assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    assert!(Digest::parse("sha256:xyz").is_err());
    assert!(Digest::parse("../../etc/passwd").is_err());
}

/// An object store in memory, for the cache's own logic (the S3 client itself is tested
/// end to end against a real server in `tests/tests/cluster_blobs.rs`).
#[derive(Debug, Default)]
struct MemoryRemote {
    objects: std::sync::Mutex<std::collections::HashMap<Digest, (Vec<u8>, std::time::SystemTime)>>,
    downloads: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
    delay: std::time::Duration,
}

impl MemoryRemote {
    fn check_up(&self) -> Result<(), BlobError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(BlobError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }

    fn overwrite(&self, digest: &Digest, bytes: &[u8]) {
        let mut objects = self.objects.lock().unwrap();
        objects.get_mut(digest).unwrap().0 = bytes.to_vec();
    }

    fn age(&self, digest: &Digest, by: std::time::Duration) {
        let mut objects = self.objects.lock().unwrap();
        let entry = objects.get_mut(digest).unwrap();
        entry.1 -= by;
    }

    fn downloads(&self) -> usize {
        self.downloads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl RemoteBlobs for MemoryRemote {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn upload(
        &self,
        digest: &Digest,
        size: u64,
        content: &mut dyn std::io::Read,
    ) -> Result<(), BlobError> {
        self.check_up()?;
        let mut bytes = Vec::new();
        content.take(size).read_to_end(&mut bytes).unwrap();
        self.objects
            .lock()
            .unwrap()
            .insert(digest.clone(), (bytes, std::time::SystemTime::now()));
        Ok(())
    }

    fn download(&self, digest: &Digest, sink: &mut dyn Write) -> Result<u64, BlobError> {
        self.check_up()?;
        self.downloads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let bytes = self
            .objects
            .lock()
            .unwrap()
            .get(digest)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        sink.write_all(&bytes).unwrap();
        Ok(bytes.len() as u64)
    }

    fn head(&self, digest: &Digest) -> Result<Option<RemoteObject>, BlobError> {
        self.check_up()?;
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(digest)
            .map(|(b, t)| RemoteObject {
                digest: digest.clone(),
                size: b.len() as u64,
                last_modified: *t,
            }))
    }

    fn list(&self) -> Result<Vec<RemoteObject>, BlobError> {
        self.check_up()?;
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .map(|(d, (b, t))| RemoteObject {
                digest: d.clone(),
                size: b.len() as u64,
                last_modified: *t,
            })
            .collect())
    }

    fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        self.check_up()?;
        self.objects.lock().unwrap().remove(digest);
        Ok(())
    }
}

fn cached(
    budget_bytes: u64,
    remote: std::sync::Arc<MemoryRemote>,
) -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open_cached(dir.path(), remote, CacheSettings { budget_bytes }).unwrap();
    (dir, store)
}

#[test]
fn the_cache_stays_under_its_budget_and_never_evicts_a_pinned_blob() {
    let remote = std::sync::Arc::new(MemoryRemote::default());
    let (_dir, store) = cached(250, remote.clone());
    let a = store.put(&[b'a'; 100]).unwrap();
    let pin = store.use_pins().pin(a.clone(), 100);
    let b = store.put(&[b'b'; 100]).unwrap();
    store.read(&b).unwrap(); // b is now more recently used than a
    let c = store.put(&[b'c'; 100]).unwrap();
    // Over budget: the least recently used is `a`, but it is pinned, so `b` goes.
    assert!(store.contains(&a), "a pinned blob is never evicted");
    assert!(
        !store.contains(&b),
        "the least recently used unpinned blob is evicted"
    );
    assert!(store.contains(&c), "the blob just written stays");
    assert_eq!(store.cache_usage(), Some((200, 250)));
    assert_eq!(
        remote.objects.lock().unwrap().len(),
        3,
        "every blob is in the object store"
    );
    // Unpinned, `a` goes at the next eviction; `b` comes back from the object store.
    drop(pin);
    assert_eq!(store.read(&b).unwrap(), vec![b'b'; 100]);
    assert_eq!(remote.downloads(), 1);
    assert!(
        !store.contains(&a),
        "a was the least recently used unpinned blob"
    );
    let (used, budget) = store.cache_usage().unwrap();
    assert!(used <= budget, "{used} > {budget}");
    // An upload's pin protects too; a blob larger than the budget stays while pinned.
    let d = store.put(&[b'd'; 300]).unwrap();
    assert!(
        store.contains(&d),
        "the fresh blob stays even over the budget"
    );
    let upload_pin = store.upload_pins().pin(d.clone(), 300);
    store.read(&a).unwrap();
    assert!(store.contains(&d), "an upload's pin keeps it");
    drop(upload_pin);
}

#[test]
fn a_corrupted_object_is_refused_and_not_cached() {
    let remote = std::sync::Arc::new(MemoryRemote::default());
    let (dir, store) = cached(1 << 20, remote.clone());
    let a = store.put(b"the real weights").unwrap();
    store.remove(&a).unwrap();
    remote.overwrite(&a, b"tampered weights");
    match store.read(&a) {
        Err(BlobError::Corrupt { expected, actual }) => {
            assert_eq!(expected, a);
            assert_eq!(actual, Digest::of(b"tampered weights"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!store.contains(&a), "never cached");
    assert!(
        !store.contains(&Digest::of(b"tampered weights")),
        "not under its own name either"
    );
    assert_eq!(store.pending_writes().unwrap(), 0, "no temp file left");
    assert!(std::fs::read_dir(dir.path().join("sha256"))
        .unwrap()
        .next()
        .is_none());
    remote.overwrite(&a, b"the real weights");
    assert_eq!(
        store.read(&a).unwrap(),
        b"the real weights",
        "fixed at the source, fetched"
    );
}

#[test]
fn concurrent_misses_make_one_fetch() {
    let remote = std::sync::Arc::new(MemoryRemote {
        delay: std::time::Duration::from_millis(200),
        ..MemoryRemote::default()
    });
    let (_dir, store) = cached(1 << 20, remote.clone());
    let a = store.put(b"shared weights").unwrap();
    store.remove(&a).unwrap();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let a = a.clone();
            std::thread::spawn(move || store.read(&a).unwrap())
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), b"shared weights");
    }
    assert_eq!(remote.downloads(), 1, "8 concurrent misses, one GET");
    assert_eq!(store.fetches(), 1);
    // A failure is shared the same way, and the next call tries again.
    store.remove(&a).unwrap();
    remote.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let failures: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let a = a.clone();
            std::thread::spawn(move || store.read(&a))
        })
        .collect();
    for failure in failures {
        assert!(matches!(
            failure.join().unwrap(),
            Err(BlobError::Unavailable(_))
        ));
    }
    remote
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.read(&a).unwrap(), b"shared weights", "recovers");
}

#[test]
fn cached_blobs_are_read_while_the_store_is_down() {
    let remote = std::sync::Arc::new(MemoryRemote::default());
    let (dir, store) = cached(1 << 20, remote.clone());
    let a = store.put(b"cached").unwrap();
    let b = store.put(b"cold").unwrap();
    store.remove(&b).unwrap();
    remote.down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.read(&a).unwrap(), b"cached");
    assert!(matches!(store.read(&b), Err(BlobError::Unavailable(_))));
    assert!(matches!(store.put(b"new"), Err(BlobError::Unavailable(_))));
    // A restart counts what the folder holds.
    drop(store);
    let again = BlobStore::open_cached(
        dir.path(),
        remote,
        CacheSettings {
            budget_bytes: 1 << 20,
        },
    )
    .unwrap();
    assert_eq!(again.cache_usage().map(|(used, _)| used), Some(6 + 3));
}

#[test]
fn only_old_unreferenced_objects_are_deleted() {
    let remote = std::sync::Arc::new(MemoryRemote::default());
    let (_dir, store) = cached(1 << 20, remote.clone());
    let kept = store.put(b"referenced").unwrap();
    let young = store.put(b"another node is uploading this").unwrap();
    let old = store.put(b"garbage").unwrap();
    let hour_and_more = REMOTE_DELETE_GRACE + std::time::Duration::from_secs(60);
    remote.age(&kept, hour_and_more);
    remote.age(&old, hour_and_more);
    assert_eq!(store.sweep_remote(|d| *d == kept).unwrap(), 1);
    let left: std::collections::HashSet<Digest> =
        remote.objects.lock().unwrap().keys().cloned().collect();
    assert_eq!(left, [kept, young].into_iter().collect());
    // Single node: nothing remote to sweep.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        BlobStore::open(dir.path())
            .unwrap()
            .sweep_remote(|_| false)
            .unwrap(),
        0
    );
}

#[test]
fn an_unavailable_store_never_shows_its_endpoint_in_the_message() {
    // The message reaches tenants (an endpoint's update_error after a failed load).
    let error = BlobError::Unavailable("error sending request for http://10.1.2.3:9000/b".into());
    let shown = error.to_string();
    assert!(!shown.contains("10.1.2.3"), "{shown}");
    assert!(shown.contains("cannot be reached"), "{shown}");
}
