//! Everything that can be wrong with a model package, or with building one, as one typed
//! error whose message tells the user what to fix.

use thiserror::Error;

/// Why a package was refused, or could not be built.
///
/// Every case except [`PackageError::Io`] and [`PackageError::BuildFailed`] is the
/// uploader's mistake (HTTP 400, or 413 for [`PackageError::TooLarge`],
/// [`PackageError::CompressionRatio`] and [`PackageError::HandlerTooLarge`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackageError {
    /// The bytes are not a tar or gzip-compressed tar archive.
    #[error(
        "not a package: {detail}; a package is a tar or tar.gz archive, \
         build one with `sandserve package`"
    )]
    NotAnArchive {
        /// What was found instead.
        detail: String,
    },
    /// The archive starts like a tar but is damaged further on (truncated, bad checksum,
    /// corrupt compression).
    #[error("the package archive is damaged: {detail}; rebuild it with `sandserve package`")]
    Corrupt {
        /// What is damaged.
        detail: String,
    },
    /// The first entry is not `sandserve.toml`.
    #[error(
        "sandserve.toml must be the first entry of the package, {}; \
         build packages with `sandserve package`",
        match found {
            Some(path) => format!("but the first entry is `{path}`"),
            None => "but the archive is empty".to_owned(),
        }
    )]
    ManifestNotFirst {
        /// The path of the entry found first, if there was one.
        found: Option<String>,
    },
    /// `sandserve.toml` is malformed or breaks a rule.
    #[error("sandserve.toml: `{field}`: {problem}")]
    BadManifest {
        /// The offending field, e.g. `graphs[1].files[0]`, or a position (`line 3, column 1`)
        /// for syntax errors.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An entry has an absolute path.
    #[error(
        "`{path}`: absolute paths are not allowed in a package; store files relative to \
         the package root"
    )]
    AbsolutePath {
        /// The entry's path as stored.
        path: String,
    },
    /// An entry's path has a `..` component.
    #[error(
        "`{path}`: path escapes the package (it contains `..`); store files below the package root"
    )]
    PathEscape {
        /// The entry's path as stored.
        path: String,
    },
    /// An entry is a symbolic or hard link.
    #[error("`{path}`: links are not allowed in a package; store the file itself")]
    Link {
        /// The entry's path.
        path: String,
    },
    /// An entry is a device, fifo or other special file.
    #[error(
        "`{path}`: {kind} entries are not allowed; a package holds only regular files \
         and directories"
    )]
    UnsupportedEntry {
        /// The entry's path.
        path: String,
        /// What kind of entry it is (`character device`, `fifo`, ...).
        kind: String,
    },
    /// A file that `sandserve.toml` does not name.
    #[error(
        "`{path}` is in the archive but sandserve.toml does not name it; remove it, or name \
         it as the `handler` or in a graph's `files`"
    )]
    UnexpectedFile {
        /// The file's path.
        path: String,
    },
    /// A file that appears twice.
    #[error("`{path}` appears more than once in the archive; keep one copy")]
    DuplicateFile {
        /// The file's path.
        path: String,
    },
    /// A file that `sandserve.toml` names but the archive lacks.
    #[error("`{path}` is named in sandserve.toml but missing from the archive; add it")]
    MissingFile {
        /// The missing path.
        path: String,
    },
    /// The archive unpacks to more bytes than allowed.
    #[error(
        "the package unpacks to more than {limit_bytes} bytes, the limit (is it a \
         decompression bomb?); make the package smaller"
    )]
    TooLarge {
        /// The limit on unpacked bytes.
        limit_bytes: u64,
    },
    /// The gzip-compressed archive inflates far more than real packages do.
    #[error(
        "the package inflates to more than {max_ratio} times its compressed size (is it a \
         decompression bomb?); if its files really compress that well, upload it as an \
         uncompressed .tar"
    )]
    CompressionRatio {
        /// The most unpacked bytes allowed per compressed byte.
        max_ratio: u64,
    },
    /// The handler component is larger than the host compiles.
    #[error(
        "`{path}`, the handler component, is larger than {limit_bytes} bytes, the limit; \
         load large models as graphs (`[[graphs]]` files) rather than inside the handler"
    )]
    HandlerTooLarge {
        /// The handler's path.
        path: String,
        /// The limit.
        limit_bytes: u64,
    },
    /// The archive has more entries than allowed.
    #[error("the package has more than {limit} entries, the limit; remove files it does not need")]
    TooManyEntries {
        /// The limit on entries.
        limit: usize,
    },
    /// Reading or writing a file failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// Building the handler with cargo failed.
    #[error("building the handler failed: {detail}")]
    BuildFailed {
        /// What failed, with a hint at the fix.
        detail: String,
    },
}

impl PackageError {
    /// A stable snake_case code for this error, for API responses and logs.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::NotAnArchive { .. } => "not_an_archive",
            Self::Corrupt { .. } => "corrupt_archive",
            Self::ManifestNotFirst { .. } => "manifest_not_first",
            Self::BadManifest { .. } => "bad_manifest",
            Self::AbsolutePath { .. } => "absolute_path",
            Self::PathEscape { .. } => "path_escape",
            Self::Link { .. } => "link_in_archive",
            Self::UnsupportedEntry { .. } => "unsupported_entry",
            Self::UnexpectedFile { .. } => "unexpected_file",
            Self::DuplicateFile { .. } => "duplicate_file",
            Self::MissingFile { .. } => "missing_file",
            Self::TooLarge { .. } => "too_large",
            Self::CompressionRatio { .. } => "compression_ratio",
            Self::HandlerTooLarge { .. } => "handler_too_large",
            Self::TooManyEntries { .. } => "too_many_entries",
            Self::Io(_) => "io_error",
            Self::BuildFailed { .. } => "build_failed",
        }
    }

    /// A [`PackageError::BadManifest`] for `field`.
    pub(crate) fn manifest(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::BadManifest {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// A [`PackageError::Io`] saying what was being done to what.
    pub(crate) fn io(doing: impl std::fmt::Display, error: std::io::Error) -> Self {
        Self::Io(format!("{doing}: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case() {
        let cases = [
            (PackageError::manifest("name", "bad"), "bad_manifest"),
            (
                PackageError::PathEscape {
                    path: "../x".into(),
                },
                "path_escape",
            ),
            (PackageError::Link { path: "x".into() }, "link_in_archive"),
            (PackageError::TooLarge { limit_bytes: 1 }, "too_large"),
            (
                PackageError::CompressionRatio { max_ratio: 100 },
                "compression_ratio",
            ),
            (PackageError::Io("x".into()), "io_error"),
        ];
        for (error, code) in cases {
            assert_eq!(error.error_code(), code);
        }
    }

    #[test]
    fn messages_say_what_to_fix() {
        let empty = PackageError::ManifestNotFirst { found: None };
        assert!(empty.to_string().contains("the archive is empty"));
        let other = PackageError::ManifestNotFirst {
            found: Some("model/a.onnx".into()),
        };
        assert!(other.to_string().contains("`model/a.onnx`"));
        assert!(other.to_string().contains("sandserve package"));
        let bad = PackageError::manifest("graphs[1].files[0]", "path escapes the package");
        assert_eq!(
            bad.to_string(),
            "sandserve.toml: `graphs[1].files[0]`: path escapes the package"
        );
    }
}
