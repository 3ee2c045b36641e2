//! Writing a package from a folder (`sandserve package`): `sandserve.toml` first, then each
//! file it names, in manifest order, with fixed metadata so the same inputs always give the
//! same archive bytes. Written to a temporary file next to the output, then renamed.

use super::archive::MAX_MANIFEST_BYTES;
use super::paths::MANIFEST_PATH;
use super::{build_handler, Manifest, PackageError};
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    /// Entries in the archive, `sandserve.toml` included.
    pub files: usize,
    /// Size of the archive file, in bytes.
    pub bytes: u64,
    /// SHA-256 of the archive file, lowercase hex.
    pub sha256: String,
}

/// Builds the handler with cargo when `dir` has a `Cargo.toml` (see [`build_handler`]),
/// then packs `dir` into `output`. Python projects are built by
/// `authoring::package_dir` (which calls [`pack`] with the built component).
pub fn package_dir(dir: &Path, output: &Path) -> Result<PackSummary, PackageError> {
    if dir.join("Cargo.toml").is_file() {
        let handler = build_handler(dir)?;
        pack(dir, output, Some(&handler))
    } else {
        pack(dir, output, None)
    }
}

/// Packs `dir` into `output`: a `.tar` when `output` ends in `.tar`, else a `.tar.gz`.
///
/// Reads and validates `dir/sandserve.toml`, then writes it and every file it names, read
/// from `dir/<path>`; the handler comes from `built_handler` instead when given (stored
/// under the manifest's `handler` path). Entries have mtime 0, mode 0644 and owner 0.
pub fn pack(
    dir: &Path,
    output: &Path,
    built_handler: Option<&Path>,
) -> Result<PackSummary, PackageError> {
    let manifest_path = dir.join(MANIFEST_PATH);
    let text = read_manifest(&manifest_path)?;
    let manifest = Manifest::parse(&text)?;
    let sources: Vec<(&str, std::path::PathBuf)> = manifest
        .files()
        .into_iter()
        .map(|path| match built_handler {
            Some(built) if path == manifest.handler => (path, built.to_path_buf()),
            _ => (path, dir.join(path)),
        })
        .collect();

    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".sandserve-package-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(|e| PackageError::io(format!("creating a file in {}", parent.display()), e))?;
    let writing = |e: io::Error| PackageError::io(format!("writing {}", output.display()), e);
    let out = Hashing::new(BufWriter::new(temp.as_file()));
    let gzip = output.extension().is_none_or(|ext| ext != "tar");
    let out = if gzip {
        let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::default()));
        append_all(&mut tar, &text, &sources)?;
        tar.into_inner()
            .and_then(GzEncoder::finish)
            .map_err(writing)?
    } else {
        let mut tar = tar::Builder::new(out);
        append_all(&mut tar, &text, &sources)?;
        tar.into_inner().map_err(writing)?
    };
    let (buffered, bytes, digest) = out.finish();
    buffered
        .into_inner()
        .map_err(|e| writing(e.into_error()))?
        .sync_all()
        .map_err(writing)?;
    temp.persist(output).map_err(|e| {
        PackageError::io(
            format!("moving the package to {}", output.display()),
            e.error,
        )
    })?;
    Ok(PackSummary {
        files: sources.len() + 1,
        bytes,
        sha256: hex::encode(digest),
    })
}

fn read_manifest(path: &Path) -> Result<String, PackageError> {
    let reading = |e| PackageError::io(format!("reading {}", path.display()), e);
    let file = File::open(path).map_err(reading)?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(reading)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(PackageError::manifest(
            "(whole file)",
            "is larger than 1 MiB; keep only settings in it",
        ));
    }
    Ok(text)
}

fn append_all<W: Write>(
    tar: &mut tar::Builder<W>,
    manifest: &str,
    sources: &[(&str, std::path::PathBuf)],
) -> Result<(), PackageError> {
    let bytes = manifest.as_bytes();
    append(tar, MANIFEST_PATH, bytes.len() as u64, bytes)
        .map_err(|e| PackageError::io("writing sandserve.toml into the package", e))?;
    for (path, source) in sources {
        let reading = |e| PackageError::io(format!("reading {}", source.display()), e);
        let file = File::open(source).map_err(reading)?;
        let meta = file.metadata().map_err(reading)?;
        if !meta.is_file() {
            return Err(PackageError::Io(format!(
                "{} is not a regular file; sandserve.toml names `{path}`",
                source.display()
            )));
        }
        let mut counted = Counted {
            inner: file.take(meta.len()),
            count: 0,
        };
        append(tar, path, meta.len(), &mut counted).map_err(reading)?;
        if counted.count != meta.len() {
            return Err(PackageError::Io(format!(
                "{} changed while it was being packed; try again",
                source.display()
            )));
        }
    }
    Ok(())
}

/// Appends one regular file with fixed metadata.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, path, data)
}

/// A reader that counts what it returned.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the bytes written and their SHA-256.
    fn finish(self) -> (W, u64, [u8; 32]) {
        (self.inner, self.bytes, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{unpack, UnpackLimits};
    use std::fs;

    const MANIFEST: &str = r#"name = "tiny"
handler = "tiny.wasm"

[[graphs]]
name = "g"
encoding = "onnx"
files = ["model/g.onnx"]
"#;

    fn package_dir_with(handler: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("sandserve.toml"), MANIFEST).unwrap();
        fs::write(dir.path().join("tiny.wasm"), handler).unwrap();
        fs::create_dir(dir.path().join("model")).unwrap();
        fs::write(dir.path().join("model/g.onnx"), b"not really onnx").unwrap();
        fs::write(dir.path().join("notes.txt"), b"not named, not packed").unwrap();
        dir
    }

    fn unpack_file(path: &Path) -> (crate::package::Unpacked, Vec<(String, Vec<u8>)>) {
        let mut got = Vec::new();
        let unpacked = unpack(
            File::open(path).unwrap(),
            &UnpackLimits::default(),
            &mut |path: &str, r: &mut dyn Read| {
                let mut data = Vec::new();
                r.read_to_end(&mut data)
                    .map_err(|e| PackageError::io(path, e))?;
                got.push((path.to_owned(), data));
                Ok(got.last().map_or(0, |(_, d)| d.len() as u64))
            },
        )
        .unwrap();
        (unpacked, got)
    }

    #[test]
    fn round_trip_tar_gz() {
        let dir = package_dir_with(b"\0asm fake handler");
        let out = tempfile::tempdir().unwrap();
        let output = out.path().join("tiny.tar.gz");
        let summary = pack(dir.path(), &output, None).unwrap();
        assert_eq!(summary.files, 3);
        let bytes = fs::read(&output).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        assert_eq!(summary.bytes, bytes.len() as u64);
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));

        let (unpacked, got) = unpack_file(&output);
        assert_eq!(unpacked.manifest_text, MANIFEST);
        assert_eq!(unpacked.manifest.name, "tiny");
        assert_eq!(
            got,
            [
                ("tiny.wasm".to_owned(), b"\0asm fake handler".to_vec()),
                ("model/g.onnx".to_owned(), b"not really onnx".to_vec()),
            ]
        );
        assert_eq!(
            unpacked.files,
            [
                ("tiny.wasm".to_owned(), 17),
                ("model/g.onnx".to_owned(), 15)
            ]
        );
        // No temporary file is left next to the output.
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 1);
    }

    #[test]
    fn plain_tar_is_deterministic_with_fixed_metadata() {
        let dir = package_dir_with(b"handler");
        let out = tempfile::tempdir().unwrap();
        let first = pack(dir.path(), &out.path().join("a.tar"), None).unwrap();
        let second = pack(dir.path(), &out.path().join("b.tar"), None).unwrap();
        assert_eq!(first.sha256, second.sha256);

        let bytes = fs::read(out.path().join("a.tar")).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.mode().unwrap(), 0o644);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            names.push(String::from_utf8(entry.path_bytes().into_owned()).unwrap());
        }
        assert_eq!(names, ["sandserve.toml", "tiny.wasm", "model/g.onnx"]);
    }

    #[test]
    fn built_handler_replaces_the_one_in_the_folder() {
        let dir = package_dir_with(b"stale");
        let built = dir.path().join("built.wasm");
        fs::write(&built, b"freshly built").unwrap();
        let output = dir.path().join("out.tgz");
        pack(dir.path(), &output, Some(&built)).unwrap();
        let (_, got) = unpack_file(&output);
        assert_eq!(got[0], ("tiny.wasm".to_owned(), b"freshly built".to_vec()));
    }

    #[test]
    fn missing_source_file_is_named() {
        let dir = package_dir_with(b"h");
        fs::remove_file(dir.path().join("model/g.onnx")).unwrap();
        let output = dir.path().join("out.tar.gz");
        let err = pack(dir.path(), &output, None).unwrap_err();
        assert!(
            matches!(err, PackageError::Io(ref m) if m.contains("g.onnx")),
            "{err}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn invalid_manifest_is_refused_before_writing() {
        let dir = package_dir_with(b"h");
        fs::write(
            dir.path().join("sandserve.toml"),
            "name = \"Bad\"\nhandler = \"tiny.wasm\"\n",
        )
        .unwrap();
        let output = dir.path().join("out.tar.gz");
        let err = pack(dir.path(), &output, None).unwrap_err();
        assert_eq!(err.error_code(), "bad_manifest");
        assert!(!output.exists());
    }
}
