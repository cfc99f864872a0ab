//! The image tool's error type: which step failed and what the farmer can do.

use std::fmt;
use std::path::Path;

use crate::config::ConfigError;

/// Why an image could not be made.
#[derive(Debug)]
pub enum ImageError {
    /// The node configuration is invalid.
    Config(ConfigError),
    /// Host tools are missing (the message says what to install).
    Deps(String),
    /// The kernel could not be built or is not usable.
    Kernel(String),
    /// A host program failed.
    Tool { program: String, detail: String },
    /// Reading or writing a file failed.
    Io { path: String, error: std::io::Error },
}

impl ImageError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> ImageError {
        ImageError::Io { path: path.display().to_string(), error }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Config(e) => write!(f, "node configuration: {e}"),
            ImageError::Deps(e) => f.write_str(e),
            ImageError::Kernel(e) => write!(f, "kernel: {e}"),
            ImageError::Tool { program, detail } => write!(f, "{program} failed: {detail}"),
            ImageError::Io { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

impl std::error::Error for ImageError {}

impl From<ConfigError> for ImageError {
    fn from(e: ConfigError) -> Self {
        ImageError::Config(e)
    }
}
