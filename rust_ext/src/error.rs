//! Error type of the pure-Rust core. The PyO3 layer maps it to Python exceptions in one place
//! (`python::to_py_err`).
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// The bytes are not a usable image: empty, unknown format, corrupt or truncated data.
    Decode(String),
    /// The image is larger than the configured pixel or allocation limits.
    TooLarge(String),
    /// The hashing code panicked on this input; the panic was caught at the batch boundary.
    Internal(String),
    /// A configuration value (algorithm name, hash size, limits) is not supported.
    Config(String),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Decode(m) => write!(f, "cannot decode image: {m}"),
            HashError::TooLarge(m) => write!(f, "image exceeds limits: {m}"),
            HashError::Internal(m) => write!(f, "internal error while hashing image: {m}"),
            HashError::Config(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for HashError {}
