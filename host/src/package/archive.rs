//! Reading an uploaded package: one streaming pass over the (possibly gzipped) tar that
//! checks every entry before its bytes go anywhere, parses the manifest, and hands each
//! named file to a sink. Memory stays bounded whatever the archive claims: only the
//! manifest and small tar extension headers are buffered, and every byte read is charged
//! to the unpacked-size budget, which also refuses an absurd compression ratio as soon as
//! it shows (a gzip bomb stops after [`RATIO_GRACE_BYTES`], not at the size limit).

use super::budget::{Budget, Counted, Metered, RatioBound};
use super::paths::{entry_name, EntryName, MANIFEST_PATH};
use super::{sniff, Manifest, PackageError};
use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read};
use std::rc::Rc;
use tar::EntryType;

/// Largest `sandserve.toml`.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest tar extension header (GNU long name, PAX record block) accepted.
const MAX_EXTENSION_BYTES: u64 = 64 << 10;
/// Most bytes accepted after the end-of-archive marker (tar pads to 10 KiB records).
const MAX_TRAILING_BYTES: u64 = 1 << 20;
/// Largest handler component. The host reads the whole component into memory to compile
/// it (and compiling takes several times that), so this bounds what one upload can make
/// the server hold; real handlers are a few MiB.
pub const MAX_HANDLER_BYTES: u64 = 256 << 20;
/// Bytes a package may unpack to whatever its compression ratio: small packages (and
/// manifests, padding, sparse test models) compress far better than real model weights.
pub const RATIO_GRACE_BYTES: u64 = 64 << 20;
/// Default for [`UnpackLimits::max_compression_ratio`]. Model weights deflate by a few
/// times at most, and deflate itself cannot pass about 1032:1; 100:1 past the grace is
/// what zip-bomb guards commonly use (Apache POI's `MIN_INFLATE_RATIO` of 0.01).
pub const DEFAULT_MAX_COMPRESSION_RATIO: u64 = 100;

/// Bounds on what one package may unpack to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most bytes all entries together may hold once decompressed (default 4 GiB).
    pub max_unpacked_bytes: u64,
    /// Most entries (files and directories) the archive may have (default 10 000).
    pub max_entries: usize,
    /// Once more than [`RATIO_GRACE_BYTES`] are unpacked, most unpacked bytes per byte of
    /// the upload (default [`DEFAULT_MAX_COMPRESSION_RATIO`]; 0 turns the bound off). An
    /// uncompressed tar never reaches it.
    pub max_compression_ratio: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 4 << 30,
            max_entries: 10_000,
            max_compression_ratio: DEFAULT_MAX_COMPRESSION_RATIO,
        }
    }
}

/// What a valid package held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The validated manifest.
    pub manifest: Manifest,
    /// `sandserve.toml` exactly as uploaded.
    pub manifest_text: String,
    /// Each file handed to the sink, in archive order: path and size in bytes (the manifest
    /// itself is not listed).
    pub files: Vec<(String, u64)>,
}

/// The sink: receives each named file's path and contents, returns the bytes it consumed.
pub type Sink<'s> = dyn FnMut(&str, &mut dyn Read) -> Result<u64, PackageError> + 's;

/// Reads a package from `reader` (tar or tar.gz) in one pass.
///
/// The first entry must be `sandserve.toml`; every later regular file must be named by it
/// and is streamed to `sink` as it is read. Directories are skipped; links, devices and
/// other special entries, absolute paths and `..` are refused. When `sink` fails, its
/// error is returned as is, unless the budget ran out or the archive itself could not be
/// read (damaged gzip, cut short), which is reported instead.
pub fn unpack<R: Read>(
    reader: R,
    limits: &UnpackLimits,
    sink: &mut Sink<'_>,
) -> Result<Unpacked, PackageError> {
    let read = Rc::new(Cell::new(0));
    let mut archive = tar::Archive::new(sniff::open(Counted::new(reader, read.clone()))?);
    let mut budget = match limits.max_compression_ratio {
        0 => Budget::new(limits.max_unpacked_bytes),
        max => Budget::with_ratio(
            limits.max_unpacked_bytes,
            RatioBound {
                max,
                grace: RATIO_GRACE_BYTES,
                read,
            },
        ),
    };
    let mut state = State::default();
    {
        let entries = archive.entries().map_err(|e| state.damaged(&e))?.raw(true);
        for entry in entries {
            let mut entry = entry.map_err(|e| state.damaged(&e))?;
            state.entry(&mut entry, limits, &mut budget, sink)?;
        }
    }
    let unpacked = state.finish()?;
    drain_trailing(archive.into_inner())?;
    Ok(unpacked)
}

/// Tar extension headers seen since the last entry; they describe the next one.
#[derive(Debug, Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: bool,
    pax: bool,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && !self.long_link && !self.pax
    }
}

/// What one pass has seen so far.
#[derive(Debug, Default)]
struct State {
    manifest: Option<(Manifest, String)>,
    named: HashSet<String>,
    seen: HashSet<String>,
    files: Vec<(String, u64)>,
    members: usize,
    pending: Pending,
}

impl State {
    /// A tar-level read error: the upload is not a tar at all when nothing valid came yet.
    fn damaged(&self, error: &io::Error) -> PackageError {
        if self.manifest.is_none() {
            PackageError::NotAnArchive {
                detail: format!("it is not a tar archive ({error})"),
            }
        } else {
            corrupt(error)
        }
    }

    /// Handles one raw tar header and its data.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        limits: &UnpackLimits,
        budget: &mut Budget,
        sink: &mut Sink<'_>,
    ) -> Result<(), PackageError> {
        let kind = entry.header().entry_type();
        if self.extension_header(kind, entry, budget)? {
            return Ok(());
        }
        self.members += 1;
        if self.members > limits.max_entries {
            return Err(PackageError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        if kind == EntryType::XGlobalHeader {
            self.extension(entry, budget, false)?;
            return Ok(());
        }
        let size = entry.size();
        let pending = std::mem::take(&mut self.pending);
        let raw = pending
            .long_name
            .or(pending.pax_path)
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let shown = String::from_utf8_lossy(&raw).into_owned();
        if pending.pax_size.is_some_and(|s| s != size) {
            return Err(corrupt(format!(
                "`{shown}` has a PAX size record that overrides its header; such archives \
                 (or files over 8 GiB) are not supported"
            )));
        }
        let name = entry_name(&raw)?;
        match kind {
            EntryType::Regular | EntryType::Directory => {}
            EntryType::Symlink | EntryType::Link => return Err(PackageError::Link { path: shown }),
            other => {
                return Err(PackageError::UnsupportedEntry {
                    path: shown,
                    kind: kind_name(other),
                })
            }
        }
        if self.manifest.is_none() {
            if kind != EntryType::Regular || name.name != MANIFEST_PATH {
                return Err(PackageError::ManifestNotFirst { found: Some(shown) });
            }
            return self.read_manifest(entry, size, budget);
        }
        if kind == EntryType::Directory {
            finish_entry(Metered::new(entry, budget), size, &shown)?;
            return Ok(());
        }
        self.file(name, entry, size, budget, sink)
    }

    /// Takes in a GNU long name / long link or PAX header (they describe the next entry);
    /// `false` when `kind` is none of them.
    fn extension_header<R: Read>(
        &mut self,
        kind: EntryType,
        entry: &mut tar::Entry<'_, R>,
        budget: &mut Budget,
    ) -> Result<bool, PackageError> {
        match kind {
            EntryType::GNULongName => {
                let data = self.extension(entry, budget, self.pending.long_name.is_some())?;
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                self.pending.long_name = Some(data[..end].to_vec());
            }
            EntryType::GNULongLink => {
                self.extension(entry, budget, self.pending.long_link)?;
                self.pending.long_link = true;
            }
            EntryType::XHeader => {
                let data = self.extension(entry, budget, self.pending.pax)?;
                self.pending.pax = true;
                self.pax(&data)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A regular file after the manifest: named, first of its path, streamed to the sink.
    fn file<R: Read>(
        &mut self,
        name: EntryName,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
        budget: &mut Budget,
        sink: &mut Sink<'_>,
    ) -> Result<(), PackageError> {
        if !name.utf8 || !self.named.contains(&name.name) {
            if name.name == MANIFEST_PATH {
                return Err(PackageError::DuplicateFile { path: name.name });
            }
            return Err(PackageError::UnexpectedFile { path: name.name });
        }
        if !self.seen.insert(name.name.clone()) {
            return Err(PackageError::DuplicateFile { path: name.name });
        }
        // The header's size is exact (the entry reader stops there), so a handler too large
        // is refused before any of it is read.
        let is_handler = self
            .manifest
            .as_ref()
            .is_some_and(|(m, _)| m.handler == name.name);
        if is_handler && size > MAX_HANDLER_BYTES {
            return Err(PackageError::HandlerTooLarge {
                path: name.name,
                limit_bytes: MAX_HANDLER_BYTES,
            });
        }
        let mut metered = Metered::new(entry, budget);
        let result = sink(&name.name, &mut metered);
        if let Some(too_large) = metered.overrun() {
            return Err(too_large);
        }
        if result.is_err() {
            // The sink failed because the archive could not be read: the upload's fault.
            if let Some(damage) = metered.damage() {
                return Err(corrupt(format!("`{}`: {damage}", name.name)));
            }
        }
        result?;
        let read = finish_entry(metered, size, &name.name)?;
        self.files.push((name.name, read));
        Ok(())
    }

    /// Reads a small tar extension header's data; two of a kind for one entry are refused.
    fn extension<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        budget: &mut Budget,
        already: bool,
    ) -> Result<Vec<u8>, PackageError> {
        if already {
            return Err(corrupt(
                "two extension headers of one kind describe the same entry",
            ));
        }
        let size = entry.size();
        match read_capped(entry, budget, MAX_EXTENSION_BYTES, size)? {
            Some(data) => Ok(data),
            None => Err(corrupt(format!(
                "a tar extension header is larger than {MAX_EXTENSION_BYTES} bytes"
            ))),
        }
    }

    /// Takes the `path` and `size` records of a PAX header; ignores the others.
    fn pax(&mut self, data: &[u8]) -> Result<(), PackageError> {
        for record in tar::PaxExtensions::new(data) {
            let record = record.map_err(|e| corrupt(format!("malformed PAX header: {e}")))?;
            match record.key_bytes() {
                b"path" => self.pending.pax_path = Some(record.value_bytes().to_vec()),
                b"size" => {
                    let size = record.value().ok().and_then(|v| v.trim().parse().ok());
                    self.pending.pax_size =
                        Some(size.ok_or_else(|| corrupt("a PAX size record is not a number"))?);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_manifest<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
        budget: &mut Budget,
    ) -> Result<(), PackageError> {
        let whole = "(whole file)";
        let Some(bytes) = read_capped(entry, budget, MAX_MANIFEST_BYTES, size)? else {
            return Err(PackageError::manifest(
                whole,
                "is larger than 1 MiB; keep only settings in it",
            ));
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| PackageError::manifest(whole, "is not valid UTF-8; save it as UTF-8"))?;
        let manifest = Manifest::parse(&text)?;
        self.named = manifest.files().into_iter().map(str::to_owned).collect();
        self.manifest = Some((manifest, text));
        Ok(())
    }

    /// The result, once every entry has been read.
    fn finish(self) -> Result<Unpacked, PackageError> {
        if !self.pending.is_empty() {
            return Err(corrupt(
                "the archive ends with an extension header that describes no entry",
            ));
        }
        let Some((manifest, manifest_text)) = self.manifest else {
            return Err(PackageError::ManifestNotFirst { found: None });
        };
        if let Some(missing) = manifest
            .files()
            .into_iter()
            .find(|p| !self.seen.contains(*p))
        {
            return Err(PackageError::MissingFile {
                path: missing.to_owned(),
            });
        }
        Ok(Unpacked {
            manifest,
            manifest_text,
            files: self.files,
        })
    }
}

/// Reads a whole entry of at most `cap` bytes; `None` when it is larger.
fn read_capped<R: Read>(
    entry: R,
    budget: &mut Budget,
    cap: u64,
    claimed: u64,
) -> Result<Option<Vec<u8>>, PackageError> {
    if claimed > cap {
        return Ok(None);
    }
    let mut metered = Metered::new(entry, budget);
    let mut data = Vec::new();
    let result = (&mut metered).take(cap).read_to_end(&mut data);
    if let Some(too_large) = metered.overrun() {
        return Err(too_large);
    }
    result.map_err(corrupt)?;
    if metered.count() != claimed {
        return Err(corrupt("the archive is cut short"));
    }
    Ok(Some(data))
}

/// Reads what the sink left of an entry and checks the entry was complete; returns its size.
fn finish_entry<R: Read>(
    mut metered: Metered<'_, R>,
    claimed: u64,
    path: &str,
) -> Result<u64, PackageError> {
    if let Err(e) = io::copy(&mut metered, &mut io::sink()) {
        return Err(metered.overrun().unwrap_or_else(|| corrupt(e)));
    }
    if metered.count() != claimed {
        return Err(corrupt(format!(
            "`{path}` is cut short: {} of its {claimed} bytes are there",
            metered.count()
        )));
    }
    Ok(claimed)
}

/// Reads past the end-of-archive marker: a gzip stream's checksum is verified only at its
/// end, and more than padding after the marker means the upload is not what it claims.
fn drain_trailing(rest: impl Read) -> Result<(), PackageError> {
    let read =
        io::copy(&mut rest.take(MAX_TRAILING_BYTES + 1), &mut io::sink()).map_err(corrupt)?;
    if read > MAX_TRAILING_BYTES {
        return Err(corrupt(
            "more than 1 MiB of data follows the end of the archive",
        ));
    }
    Ok(())
}

fn corrupt(detail: impl std::fmt::Display) -> PackageError {
    PackageError::Corrupt {
        detail: detail.to_string(),
    }
}

fn type_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("type `{}`", byte as char)
    } else {
        format!("type {byte:#04x}")
    }
}

/// Words for a tar entry type we refuse.
fn kind_name(kind: EntryType) -> String {
    match kind {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "fifo".to_owned(),
        EntryType::Continuous => "contiguous file".to_owned(),
        EntryType::GNUSparse => "sparse file".to_owned(),
        other => format!("unknown ({})", type_byte(other.as_byte())),
    }
}

#[cfg(test)]
mod tests;
