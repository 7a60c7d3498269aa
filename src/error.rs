//! Typed errors of the library. `main` prints the chain and maps [`Error::exit_code`].

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the library reports. Input errors name the file, line and value and say what
/// to do; they map to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A structural or value error at one line of a CSV (1-based, header = line 1).
    #[error("{}:{line}: {msg}", file.display())]
    Csv {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// A file-level problem with an input (missing column, empty file, unknown layout).
    #[error("{}: {msg}", file.display())]
    Input { file: PathBuf, msg: String },
    /// An image that cannot be decoded or has an unsupported layout.
    #[error("image {}: {msg}", path.display())]
    Image { path: PathBuf, msg: String },
    /// A configuration value that fails validation (names the field).
    #[error("config: {0}")]
    Config(String),
    /// Bad command-line usage.
    #[error("usage: {0}")]
    Usage(String),
    /// A subcommand whose issue has not landed yet.
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Process exit code: 2 for bad usage or bad input, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Csv { .. }
            | Error::Input { .. }
            | Error::Image { .. }
            | Error::Config(_)
            | Error::Usage(_) => 2,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 2,
            _ => 1,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A CSV error at `line` (1-based, the header is line 1).
    pub fn csv(file: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Csv {
            file: file.into(),
            line,
            msg: msg.into(),
        }
    }

    /// A file-level input error.
    pub fn input(file: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Input {
            file: file.into(),
            msg: msg.into(),
        }
    }

    /// An image decoding error.
    pub fn image(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Image {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
