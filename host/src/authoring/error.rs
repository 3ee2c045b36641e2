//! The error of the authoring functions: each message says what to do next.

use thiserror::Error;

/// Why a handler project could not be made or built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthoringError {
    /// The project name is not a valid model / crate name.
    #[error("`{0}` is not a valid project name: use 1-64 of a-z 0-9 _ -, starting with a letter")]
    BadName(String),
    /// The target folder exists and is not empty.
    #[error("{0} already exists and is not empty; choose another name or remove it")]
    Exists(std::path::PathBuf),
    /// The toolchain cannot build handlers; the message says what to install.
    #[error("{0}")]
    Toolchain(String),
    /// A name, flag or file given by the user is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A tool the build needs is missing or failed; the message says how to get it.
    #[error("{0}")]
    Tool(String),
    /// The handler failed to build; the tool's own messages went to standard error.
    #[error("{0}")]
    BuildFailed(String),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl AuthoringError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
