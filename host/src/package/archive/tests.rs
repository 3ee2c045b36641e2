//! Tests of the archive reader against hostile and damaged archives built in memory.

use super::*;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;

const MANIFEST: &str = "name = \"m\"\nhandler = \"m.wasm\"\n\n[[graphs]]\nname = \"g\"\n\
                        encoding = \"onnx\"\nfiles = [\"model/g.onnx\"]\n";

/// An archive under construction; `raw` writes names the `tar` builder would refuse.
struct Tar(tar::Builder<Vec<u8>>);

fn header(kind: EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

impl Tar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = header(EntryType::Regular, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    /// An entry whose header name is exactly `name`, unchecked.
    fn raw(mut self, name: &[u8], kind: EntryType, data: &[u8]) -> Self {
        let mut h = header(kind, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn link(mut self, path: &str, kind: EntryType, target: &str) -> Self {
        let mut h = header(kind, 0);
        h.set_link_name(target).unwrap();
        self.0.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The manifest, then its two files.
fn valid() -> Tar {
    Tar::new()
        .file("sandserve.toml", MANIFEST.as_bytes())
        .file("m.wasm", b"wasm bytes")
        .file("model/g.onnx", b"onnx bytes")
}

fn with_manifest() -> Tar {
    Tar::new().file("sandserve.toml", MANIFEST.as_bytes())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

type Received = Vec<(String, Vec<u8>)>;

fn run_with(bytes: &[u8], limits: &UnpackLimits) -> (Result<Unpacked, PackageError>, Received) {
    let mut received = Vec::new();
    let result = unpack(bytes, limits, &mut |path: &str, r: &mut dyn Read| {
        let mut data = Vec::new();
        r.read_to_end(&mut data)
            .map_err(|e| PackageError::io(path, e))?;
        let n = data.len() as u64;
        received.push((path.to_owned(), data));
        Ok(n)
    });
    (result, received)
}

fn run(bytes: &[u8]) -> (Result<Unpacked, PackageError>, Received) {
    run_with(bytes, &UnpackLimits::default())
}

fn refused(bytes: &[u8]) -> PackageError {
    match run(bytes).0 {
        Err(e) => e,
        Ok(u) => panic!("accepted: {u:?}"),
    }
}

fn assert_happy(bytes: &[u8]) {
    let (result, received) = run(bytes);
    let unpacked = result.unwrap();
    assert_eq!(unpacked.manifest.name, "m");
    assert_eq!(unpacked.manifest_text, MANIFEST);
    assert_eq!(
        unpacked.files,
        [("m.wasm".to_owned(), 10), ("model/g.onnx".to_owned(), 10)]
    );
    assert_eq!(
        received,
        [
            ("m.wasm".to_owned(), b"wasm bytes".to_vec()),
            ("model/g.onnx".to_owned(), b"onnx bytes".to_vec()),
        ]
    );
}

#[test]
fn plain_tar_is_accepted() {
    assert_happy(&valid().bytes());
}

#[test]
fn gzipped_tar_is_accepted() {
    assert_happy(&gzip(&valid().bytes()));
}

#[test]
fn directories_and_a_leading_dot_slash_are_accepted() {
    let bytes = Tar::new()
        .raw(b"./sandserve.toml", EntryType::Regular, MANIFEST.as_bytes())
        .raw(b"./", EntryType::Directory, b"")
        .raw(b"./model/", EntryType::Directory, b"")
        .raw(b"./model/g.onnx", EntryType::Regular, b"onnx bytes")
        .file("m.wasm", b"wasm bytes")
        .bytes();
    let (result, received) = run(&bytes);
    let unpacked = result.unwrap();
    assert_eq!(unpacked.files.len(), 2);
    assert_eq!(received[0].0, "model/g.onnx");
}

#[test]
fn long_names_are_read_from_gnu_extension_headers() {
    let long = format!("model/{}/g.onnx", "d".repeat(180));
    let manifest = MANIFEST.replace("model/g.onnx", &long);
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("sandserve.toml", manifest.as_bytes()),
        ("m.wasm", b"w".as_slice()),
        (long.as_str(), b"o".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data).unwrap();
    }
    let (result, received) = run(&tar.into_inner().unwrap());
    result.unwrap();
    assert_eq!(received[1].0, long);
}

#[test]
fn path_traversal_is_refused() {
    let err = refused(
        &with_manifest()
            .raw(b"../evil", EntryType::Regular, b"x")
            .bytes(),
    );
    assert_eq!(
        err,
        PackageError::PathEscape {
            path: "../evil".into()
        }
    );
    assert_eq!(err.error_code(), "path_escape");

    let err = refused(
        &with_manifest()
            .raw(b"model/../../evil", EntryType::Directory, b"")
            .bytes(),
    );
    assert_eq!(
        err,
        PackageError::PathEscape {
            path: "model/../../evil".into()
        }
    );

    // Checked before the manifest-first rule: the hostile name is what gets reported.
    let err = refused(&Tar::new().raw(b"..", EntryType::Regular, b"x").bytes());
    assert_eq!(err, PackageError::PathEscape { path: "..".into() });
}

#[test]
fn traversal_through_a_gnu_long_name_is_refused() {
    let evil = format!("{}/../../../etc/cron.d/evil", "a".repeat(120));
    let mut name = evil.clone().into_bytes();
    name.push(0);
    let mut long = tar::Header::new_gnu();
    long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    long.set_entry_type(EntryType::GNULongName);
    long.set_size(name.len() as u64);
    long.set_cksum();
    let mut tar = with_manifest();
    tar.0.append(&long, name.as_slice()).unwrap();
    let bytes = tar.raw(b"harmless", EntryType::Regular, b"x").bytes();
    assert_eq!(refused(&bytes), PackageError::PathEscape { path: evil });
}

#[test]
fn traversal_through_a_pax_path_is_refused() {
    let record = "19 path=../../evil\n";
    assert_eq!(record.len(), 19);
    let bytes = with_manifest()
        .raw(b"PaxHeader", EntryType::XHeader, record.as_bytes())
        .raw(b"harmless", EntryType::Regular, b"x")
        .bytes();
    assert_eq!(
        refused(&bytes),
        PackageError::PathEscape {
            path: "../../evil".into()
        }
    );
}

#[test]
fn absolute_paths_are_refused() {
    let err = refused(
        &with_manifest()
            .raw(b"/etc/passwd", EntryType::Regular, b"x")
            .bytes(),
    );
    assert_eq!(
        err,
        PackageError::AbsolutePath {
            path: "/etc/passwd".into()
        }
    );
    assert_eq!(err.error_code(), "absolute_path");
}

#[test]
fn symlinks_are_refused() {
    let err = refused(
        &with_manifest()
            .link("m.wasm", EntryType::Symlink, "/etc/passwd")
            .bytes(),
    );
    assert_eq!(
        err,
        PackageError::Link {
            path: "m.wasm".into()
        }
    );
    assert_eq!(err.error_code(), "link_in_archive");
}

#[test]
fn hard_links_are_refused() {
    let err = refused(
        &with_manifest()
            .link("model/g.onnx", EntryType::Link, "sandserve.toml")
            .bytes(),
    );
    assert_eq!(
        err,
        PackageError::Link {
            path: "model/g.onnx".into()
        }
    );
}

#[test]
fn devices_and_fifos_are_refused() {
    let err = refused(&with_manifest().raw(b"pipe", EntryType::Fifo, b"").bytes());
    assert_eq!(
        err,
        PackageError::UnsupportedEntry {
            path: "pipe".into(),
            kind: "fifo".into()
        }
    );
    let err = refused(&with_manifest().raw(b"tty", EntryType::Char, b"").bytes());
    assert_eq!(err.error_code(), "unsupported_entry");
}

#[test]
fn manifest_must_come_first() {
    let bytes = Tar::new()
        .file("m.wasm", b"wasm bytes")
        .file("sandserve.toml", MANIFEST.as_bytes())
        .file("model/g.onnx", b"onnx bytes")
        .bytes();
    let err = refused(&bytes);
    assert_eq!(
        err,
        PackageError::ManifestNotFirst {
            found: Some("m.wasm".into())
        }
    );
    assert!(err.to_string().contains("sandserve package"));

    let empty = Tar::new().bytes();
    assert_eq!(
        refused(&empty),
        PackageError::ManifestNotFirst { found: None }
    );
}

#[test]
fn unexpected_files_are_refused_before_reaching_the_sink() {
    let bytes = valid().file("notes.txt", b"hello").bytes();
    let (result, received) = run(&bytes);
    assert_eq!(
        result.unwrap_err(),
        PackageError::UnexpectedFile {
            path: "notes.txt".into()
        }
    );
    assert!(received.iter().all(|(p, _)| p != "notes.txt"));
}

#[test]
fn missing_files_are_named() {
    let bytes = with_manifest().file("m.wasm", b"wasm bytes").bytes();
    assert_eq!(
        refused(&bytes),
        PackageError::MissingFile {
            path: "model/g.onnx".into()
        }
    );
}

#[test]
fn duplicate_files_are_refused() {
    let bytes = valid().file("m.wasm", b"second copy").bytes();
    assert_eq!(
        refused(&bytes),
        PackageError::DuplicateFile {
            path: "m.wasm".into()
        }
    );
    let bytes = valid().file("sandserve.toml", b"name = \"x\"").bytes();
    assert_eq!(
        refused(&bytes),
        PackageError::DuplicateFile {
            path: "sandserve.toml".into()
        }
    );
}

#[test]
fn decompression_bomb_fails_fast_with_bounded_reads() {
    const BOMB: u64 = 64 << 20;
    const LIMIT: u64 = 1 << 20;
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, size, data) in [
        ("sandserve.toml", MANIFEST.len() as u64, MANIFEST.as_bytes()),
        ("m.wasm", 1, b"w".as_slice()),
    ] {
        let mut h = header(EntryType::Regular, size);
        tar.append_data(&mut h, path, data).unwrap();
    }
    let mut h = header(EntryType::Regular, BOMB);
    tar.append_data(&mut h, "model/g.onnx", io::repeat(0).take(BOMB))
        .unwrap();
    let bomb = tar.into_inner().unwrap().finish().unwrap();
    assert!(bomb.len() < (1 << 20), "the bomb is {} bytes", bomb.len());

    let limits = UnpackLimits {
        max_unpacked_bytes: LIMIT,
        ..UnpackLimits::default()
    };
    let mut streamed = 0u64;
    let result = unpack(&bomb[..], &limits, &mut |path: &str, r: &mut dyn Read| {
        // Stream through a fixed buffer: nothing here holds a whole file.
        let n = io::copy(r, &mut io::sink()).map_err(|e| PackageError::io(path, e))?;
        streamed += n;
        Ok(n)
    });
    let err = result.unwrap_err();
    assert_eq!(err, PackageError::TooLarge { limit_bytes: LIMIT });
    assert_eq!(err.error_code(), "too_large");
    assert!(err.to_string().contains("decompression bomb"));
    // Only `m.wasm` completed; the bomb was cut off at the limit.
    assert_eq!(streamed, 1);
}

#[test]
fn too_many_entries_are_refused() {
    let bytes = with_manifest()
        .raw(b"model/", EntryType::Directory, b"")
        .file("m.wasm", b"wasm bytes")
        .file("model/g.onnx", b"onnx bytes")
        .bytes();
    let limits = UnpackLimits {
        max_entries: 3,
        ..UnpackLimits::default()
    };
    let (result, _) = run_with(&bytes, &limits);
    assert_eq!(
        result.unwrap_err(),
        PackageError::TooManyEntries { limit: 3 }
    );
    let (result, _) = run_with(
        &bytes,
        &UnpackLimits {
            max_entries: 4,
            ..UnpackLimits::default()
        },
    );
    assert!(result.is_ok());
}

#[test]
fn non_archives_are_refused() {
    let err = refused(b"this is a JSON file, not a package {}");
    assert!(
        matches!(err, PackageError::NotAnArchive { ref detail } if detail.contains("not a tar")),
        "{err:?}"
    );
    assert_eq!(err.error_code(), "not_an_archive");

    let err = refused(&[b'x'; 2048]);
    assert_eq!(err.error_code(), "not_an_archive");

    let err = refused(&gzip(&[b'x'; 2048]));
    assert_eq!(err.error_code(), "not_an_archive");

    let err = refused(b"");
    assert_eq!(
        err,
        PackageError::NotAnArchive {
            detail: "the upload is empty".into()
        }
    );
}

#[test]
fn truncated_archives_are_refused() {
    let bytes = valid().bytes();
    // Cut inside `m.wasm`'s data: header blocks of the manifest (512 + 512) and `m.wasm`
    // (512), then 4 of its 10 bytes.
    let cut = &bytes[..512 * 3 + 4];
    let err = refused(cut);
    assert!(
        matches!(err, PackageError::Corrupt { ref detail } if detail.contains("cut short")),
        "{err:?}"
    );
}

#[test]
fn corrupt_gzip_checksum_is_refused() {
    let mut bytes = gzip(&valid().bytes());
    let crc = bytes.len() - 8;
    bytes[crc] ^= 0xff;
    assert_eq!(refused(&bytes).error_code(), "corrupt_archive");
}

#[test]
fn bad_manifest_inside_the_archive_is_reported() {
    let text = MANIFEST.replace("name = \"m\"", "name = \"M\"");
    let bytes = Tar::new().file("sandserve.toml", text.as_bytes()).bytes();
    let err = refused(&bytes);
    assert!(
        matches!(err, PackageError::BadManifest { ref field, .. } if field == "name"),
        "{err:?}"
    );

    let bytes = Tar::new()
        .file("sandserve.toml", b"name = \"\xff\"")
        .bytes();
    let err = refused(&bytes);
    assert!(err.to_string().contains("UTF-8"), "{err}");

    let big = vec![b'#'; (MAX_MANIFEST_BYTES + 1) as usize];
    let err = refused(&Tar::new().file("sandserve.toml", &big).bytes());
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
}

#[test]
fn sink_errors_are_returned_as_is() {
    let result = unpack(
        &valid().bytes()[..],
        &UnpackLimits::default(),
        &mut |_: &str, _: &mut dyn Read| Err(PackageError::Io("disk full".into())),
    );
    assert_eq!(result.unwrap_err(), PackageError::Io("disk full".into()));
}

#[test]
fn a_leading_pax_global_header_is_skipped() {
    // `git archive` starts with one, carrying the commit id.
    let record = "16 comment=abcd\n";
    assert_eq!(record.len(), 16);
    let mut tar = Tar::new().raw(
        b"pax_global_header",
        EntryType::XGlobalHeader,
        record.as_bytes(),
    );
    for (path, data) in [
        ("sandserve.toml", MANIFEST.as_bytes()),
        ("m.wasm", b"wasm bytes".as_slice()),
        ("model/g.onnx", b"onnx bytes".as_slice()),
    ] {
        tar = tar.file(path, data);
    }
    assert_happy(&tar.bytes());
}

#[test]
fn pax_size_overrides_are_refused() {
    let bytes = with_manifest()
        .raw(b"PaxHeader", EntryType::XHeader, b"11 size=99\n")
        .raw(b"m.wasm", EntryType::Regular, b"x")
        .bytes();
    let err = refused(&bytes);
    assert!(
        matches!(err, PackageError::Corrupt { ref detail } if detail.contains("PAX size")),
        "{err:?}"
    );
}

#[test]
fn what_the_sink_leaves_unread_is_still_counted() {
    let limits = UnpackLimits {
        max_unpacked_bytes: MANIFEST.len() as u64 + 20,
        ..UnpackLimits::default()
    };
    // The sink reads nothing; the reader drains each file itself and records its size.
    let unpacked = unpack(
        &valid().bytes()[..],
        &limits,
        &mut |_: &str, _: &mut dyn Read| Ok(0),
    )
    .unwrap();
    assert_eq!(
        unpacked.files,
        [("m.wasm".to_owned(), 10), ("model/g.onnx".to_owned(), 10)]
    );
    let tight = UnpackLimits {
        max_unpacked_bytes: MANIFEST.len() as u64 + 19,
        ..UnpackLimits::default()
    };
    let result = unpack(
        &valid().bytes()[..],
        &tight,
        &mut |_: &str, _: &mut dyn Read| Ok(0),
    );
    assert_eq!(
        result.unwrap_err(),
        PackageError::TooLarge {
            limit_bytes: tight.max_unpacked_bytes
        }
    );
}

/// A writer that only counts what it is given.
struct Counted<'a>(&'a mut u64);

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        *self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The manifest, `m.wasm`, then the header of a `model/g.onnx` of `mib` MiB of zeros, as a
/// gzip member; then that data as one gzip member per MiB (a gzip stream may hold many
/// members). A bomb of any size in a few milliseconds and about 1 KiB of upload per MiB.
fn bomb_of_zeros(mib: u64) -> Vec<u8> {
    let mut head = Tar::new()
        .file("sandserve.toml", MANIFEST.as_bytes())
        .file("m.wasm", b"wasm bytes")
        .bytes();
    head.truncate(head.len() - 1024); // the end-of-archive marker
    let mut h = header(EntryType::Regular, mib << 20);
    h.set_path("model/g.onnx").unwrap();
    h.set_cksum();
    head.extend_from_slice(h.as_bytes());
    let mut bomb = gzip(&head);
    let mut one_mib = GzEncoder::new(Vec::new(), Compression::best());
    one_mib.write_all(&[0u8; 1 << 20]).unwrap();
    let one_mib = one_mib.finish().unwrap();
    for _ in 0..mib {
        bomb.extend_from_slice(&one_mib);
    }
    bomb
}

#[test]
fn a_bomb_is_refused_by_its_compression_ratio_far_below_the_size_limit() {
    // 1 GiB in about 1 MiB: under the default 4 GiB limit, yet no real package.
    let bomb = bomb_of_zeros(1024);
    assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
    let mut streamed = 0u64;
    let result = unpack(
        &bomb[..],
        &UnpackLimits::default(),
        &mut |path: &str, r: &mut dyn Read| {
            io::copy(r, &mut Counted(&mut streamed)).map_err(|e| PackageError::io(path, e))
        },
    );
    let err = result.unwrap_err();
    assert_eq!(err.error_code(), "compression_ratio", "{err:?}");
    assert!(err.to_string().contains("uncompressed"), "{err}");
    // Refused once past the grace allowed to any package, long before 1 GiB.
    assert!(
        streamed <= 64 << 20,
        "{} MiB reached the sink before the bomb was refused",
        streamed >> 20
    );
}

#[test]
fn an_uncompressed_package_is_never_refused_for_its_ratio() {
    // 96 MiB of zeros in a plain tar: large and highly compressible, but not compressed.
    let size: u64 = 96 << 20;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::Regular, MANIFEST.len() as u64);
    tar.append_data(&mut h, "sandserve.toml", MANIFEST.as_bytes())
        .unwrap();
    let mut head = tar.into_inner().unwrap();
    head.truncate(head.len() - 1024);
    let mut h = header(EntryType::Regular, size);
    h.set_path("m.wasm").unwrap();
    h.set_cksum();
    head.extend_from_slice(h.as_bytes());
    let tail = Tar::new().file("model/g.onnx", b"onnx bytes").bytes();
    let reader = io::Cursor::new(head)
        .chain(io::repeat(0).take(size))
        .chain(io::Cursor::new(tail));
    let result = unpack(
        reader,
        &UnpackLimits::default(),
        &mut |path: &str, r: &mut dyn Read| {
            io::copy(r, &mut io::sink()).map_err(|e| PackageError::io(path, e))
        },
    );
    let unpacked = result.unwrap();
    assert_eq!(unpacked.files[0], ("m.wasm".to_owned(), size));
}

#[test]
fn a_gzip_stream_cut_inside_a_file_is_a_damaged_archive_not_an_io_error() {
    // Incompressible handler bytes, so that a cut in the middle lands inside its data.
    let wasm: Vec<u8> = (0..256u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let bytes = gzip(
        &Tar::new()
            .file("sandserve.toml", MANIFEST.as_bytes())
            .file("m.wasm", &wasm)
            .file("model/g.onnx", b"onnx bytes")
            .bytes(),
    );
    for cut in [bytes.len() / 2, bytes.len() * 3 / 4] {
        // The sink copies as the image service's does: a failure of its own is an I/O error.
        let result = unpack(
            &bytes[..cut],
            &UnpackLimits::default(),
            &mut |path: &str, r: &mut dyn Read| {
                io::copy(r, &mut io::sink()).map_err(|e| PackageError::io(path, e))
            },
        );
        let err = result.unwrap_err();
        assert_eq!(err.error_code(), "corrupt_archive", "cut at {cut}: {err:?}");
    }
}

#[test]
fn a_handler_over_its_limit_is_refused_before_any_of_it_is_read() {
    // Only the header: the refusal must come before the reader looks for the data.
    let mut bytes = with_manifest().bytes();
    bytes.truncate(bytes.len() - 1024);
    let mut h = header(EntryType::Regular, MAX_HANDLER_BYTES + 1);
    h.set_path("m.wasm").unwrap();
    h.set_cksum();
    bytes.extend_from_slice(h.as_bytes());
    let (result, received) = run(&bytes);
    assert_eq!(
        result.unwrap_err(),
        PackageError::HandlerTooLarge {
            path: "m.wasm".into(),
            limit_bytes: MAX_HANDLER_BYTES
        }
    );
    assert!(received.is_empty());
}
