//! Typed errors for the whole library. Every error that comes from a file names the file; every
//! error that comes from a field names the field and what was expected.

use std::path::PathBuf;

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an I/O operation on a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its contents are not what its format requires.
    #[error("{path}: malformed {format}: {detail}")]
    Format {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    /// A file or folder is not in any format quill can load.
    #[error("{path}: not a model quill can load: {detail}")]
    UnknownFormat { path: PathBuf, detail: String },
    /// A checkpoint is well-formed but describes something quill does not run.
    #[error("{path}: unsupported: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    /// A tensor the architecture needs is missing or has the wrong shape or type.
    #[error("{path}: tensor `{name}`: {detail}")]
    Tensor {
        path: PathBuf,
        name: String,
        detail: String,
    },
    /// A configuration value (from a file or from the caller) is out of range.
    #[error("invalid {field}: {detail}")]
    Config { field: String, detail: String },
    /// Text could not be tokenized, or ids could not be detokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A request cannot be run (empty prompt, prompt longer than the context, ...).
    #[error("invalid request: {0}")]
    Request(String),
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(
        path: impl Into<PathBuf>,
        format: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Error::Format {
            path: path.into(),
            format,
            detail: detail.into(),
        }
    }

    pub(crate) fn tensor(
        path: impl Into<PathBuf>,
        name: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            name: name.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn config(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            detail: detail.into(),
        }
    }
}
