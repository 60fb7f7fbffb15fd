//! The one error type of the native core. The PyO3 layer maps it to Python exceptions in one
//! place (`python::to_py_err`); the seen-set's own errors convert into it.
use std::fmt;

use crate::exact::seen::SeenError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a usable image: empty, unknown format, corrupt or truncated data.
    Decode(String),
    /// The image is larger than the configured pixel or allocation limits.
    TooLarge(String),
    /// The hashing code panicked on this input; the panic was caught at the batch boundary.
    Internal(String),
    /// A configuration value (algorithm name, hash size, limits) is not supported, or an
    /// argument is malformed (buffer lengths, a hash of the wrong width).
    Config(String),
    /// A structure is full (the seen-set's 2^32 - 1 entries).
    Full(String),
    /// The operating system refused a resource the call needs (its threads).
    System(String),
}

impl From<SeenError> for Error {
    fn from(e: SeenError) -> Self {
        match e {
            SeenError::Full => Error::Full(e.to_string()),
            other => Error::Config(other.to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Decode(m) => write!(f, "cannot decode image: {m}"),
            Error::TooLarge(m) => write!(f, "image exceeds limits: {m}"),
            Error::Internal(m) => write!(f, "internal error in the Rust code: {m}"),
            Error::Config(m) | Error::Full(m) | Error::System(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}
