//! Paths inside a package: the rules for the confined relative paths a manifest may name,
//! and the checks every archive entry's raw name must pass before anything else happens.

use super::PackageError;

/// Path of the manifest inside a package; always the first entry.
pub const MANIFEST_PATH: &str = "sandserve.toml";

/// Longest path a manifest may name, in bytes.
pub const MAX_PATH_BYTES: usize = 255;

/// Why `path` is not a confined relative path, or `None` when it is one.
///
/// A confined path is non-empty, relative, at most [`MAX_PATH_BYTES`] long, uses `/` between
/// non-empty components that are neither `.` nor `..`, has no control characters and is not
/// the manifest itself.
pub(crate) fn confined_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("path is empty");
    }
    if path.starts_with('/') {
        return Some("path is absolute; name it relative to the package root");
    }
    if path.contains('\\') {
        return Some("path contains a backslash; separate folders with `/`");
    }
    let mut components = path.split('/');
    if components.clone().any(|c| c == "..") {
        return Some("path escapes the package");
    }
    if components.clone().any(|c| c == ".") {
        return Some("path has a `.` component; remove the `./`");
    }
    if components.any(str::is_empty) {
        return Some("path has an empty component (a `//` or a trailing `/`)");
    }
    if path.chars().any(char::is_control) {
        return Some("path contains a control character");
    }
    if path.len() > MAX_PATH_BYTES {
        return Some("path is longer than 255 bytes");
    }
    if path == MANIFEST_PATH {
        return Some("`sandserve.toml` is the manifest itself and cannot be named");
    }
    None
}

/// The name of an archive entry after the safety checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryName {
    /// The path with one leading `./` and any trailing `/` removed (lossy UTF-8).
    pub name: String,
    /// Whether the raw bytes were valid UTF-8 (otherwise `name` cannot match a manifest path).
    pub utf8: bool,
}

/// Checks an entry's raw path bytes: absolute paths and any `..` component (with `/` or `\`
/// as separator) are refused. Only a single leading `./` is normalised away.
pub(crate) fn entry_name(raw: &[u8]) -> Result<EntryName, PackageError> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    let path = raw.strip_prefix(b"./").unwrap_or(raw);
    if path.first().is_some_and(|b| *b == b'/' || *b == b'\\') {
        return Err(PackageError::AbsolutePath { path: shown() });
    }
    if path
        .split(|b| *b == b'/' || *b == b'\\')
        .any(|c| c == b"..")
    {
        return Err(PackageError::PathEscape { path: shown() });
    }
    let mut trimmed = path;
    while let Some(rest) = trimmed.strip_suffix(b"/") {
        trimmed = rest;
    }
    Ok(match std::str::from_utf8(trimmed) {
        Ok(name) => EntryName {
            name: name.to_owned(),
            utf8: true,
        },
        Err(_) => EntryName {
            name: String::from_utf8_lossy(trimmed).into_owned(),
            utf8: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_paths_pass() {
        for ok in [
            "digits.wasm",
            "model/digits.onnx",
            "a-b_c/d.e/f",
            "ünïcode.bin",
        ] {
            assert_eq!(confined_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn unconfined_paths_say_why() {
        let cases = [
            ("", "path is empty"),
            ("/etc/passwd", "path is absolute"),
            ("../evil", "path escapes the package"),
            ("model/../../evil", "path escapes the package"),
            ("./model.onnx", "`.` component"),
            ("model//a.onnx", "empty component"),
            ("model/", "empty component"),
            ("model\\a.onnx", "backslash"),
            ("a\u{7}b", "control character"),
            ("sandserve.toml", "manifest itself"),
        ];
        for (path, expected) in cases {
            let problem = confined_problem(path).unwrap_or("(accepted)");
            assert!(problem.contains(expected), "{path:?}: {problem}");
        }
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        assert_eq!(
            confined_problem(&long),
            Some("path is longer than 255 bytes")
        );
        assert_eq!(confined_problem(&"a".repeat(MAX_PATH_BYTES)), None);
    }

    #[test]
    fn entry_names_are_checked_on_raw_bytes() {
        assert_eq!(
            entry_name(b"/etc/passwd"),
            Err(PackageError::AbsolutePath {
                path: "/etc/passwd".into()
            })
        );
        assert_eq!(
            entry_name(b"./../evil"),
            Err(PackageError::PathEscape {
                path: "./../evil".into()
            })
        );
        assert_eq!(
            entry_name(b"model\\..\\evil"),
            Err(PackageError::PathEscape {
                path: "model\\..\\evil".into()
            })
        );
        assert_eq!(
            entry_name(b"./model/").map(|n| n.name),
            Ok("model".to_owned())
        );
        assert_eq!(entry_name(b"./").map(|n| n.name), Ok(String::new()));
        // Only one leading `./` is normalised; the rest stays and then cannot match.
        assert_eq!(entry_name(b"././a").map(|n| n.name), Ok("./a".to_owned()));
        let odd = entry_name(b"caf\xe9").unwrap();
        assert!(!odd.utf8);
    }
}
