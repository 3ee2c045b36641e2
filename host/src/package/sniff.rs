//! Recognising the upload's format from its first bytes: gzip-compressed tar, plain tar,
//! or something we can name and refuse (empty, zip, bzip2, xz, zstd).

use super::PackageError;
use flate2::read::MultiGzDecoder;
use std::io::{self, Cursor, Read};

/// Bytes looked at to recognise a format.
const HEAD: usize = 6;

/// The upload as a stream of tar bytes: decompressed when it is gzip, as is otherwise.
pub(crate) fn open<'a, R: Read + 'a>(mut reader: R) -> Result<Box<dyn Read + 'a>, PackageError> {
    let mut head = [0u8; HEAD];
    let n =
        read_head(&mut reader, &mut head).map_err(|e| PackageError::io("reading the upload", e))?;
    let head = &head[..n];
    let refuse = |detail: &str| {
        Err(PackageError::NotAnArchive {
            detail: detail.to_owned(),
        })
    };
    if head.is_empty() {
        return refuse("the upload is empty");
    }
    if head.starts_with(b"PK\x03\x04") {
        return refuse("this is a zip file");
    }
    if head.starts_with(b"BZh") {
        return refuse("this is bzip2-compressed; only gzip compression is supported");
    }
    if head.starts_with(b"\xfd7zXZ\x00") {
        return refuse("this is xz-compressed; only gzip compression is supported");
    }
    if head.starts_with(b"\x28\xb5\x2f\xfd") {
        return refuse("this is zstd-compressed; only gzip compression is supported");
    }
    let stream = Cursor::new(head.to_vec()).chain(reader);
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(stream)))
    } else {
        Ok(Box::new(stream))
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_head<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn read_all(r: &mut dyn Read) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn plain_bytes_pass_through() {
        let mut r = open(&b"hello world"[..]).unwrap();
        assert_eq!(read_all(&mut r), b"hello world");
        let mut r = open(&b"ab"[..]).unwrap();
        assert_eq!(read_all(&mut r), b"ab");
    }

    #[test]
    fn gzip_is_decompressed() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(b"inside").unwrap();
        let bytes = gz.finish().unwrap();
        let mut r = open(&bytes[..]).unwrap();
        assert_eq!(read_all(&mut r), b"inside");
    }

    #[test]
    fn known_formats_are_refused_by_name() {
        let detail = |bytes: &[u8]| match open(bytes) {
            Err(PackageError::NotAnArchive { detail }) => detail,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(detail(b""), "the upload is empty");
        assert_eq!(detail(b"PK\x03\x04rest"), "this is a zip file");
        assert!(detail(b"BZh91AY").contains("bzip2"));
        assert!(detail(b"\xfd7zXZ\x00..").contains("xz"));
        assert!(detail(b"\x28\xb5\x2f\xfd..").contains("zstd"));
    }
}
