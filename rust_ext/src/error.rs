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

/// Runs `f`; a panic inside it becomes [`Error::Internal`] with the panic's message, so that it
/// never unwinds further (into a batch's other inputs, or into Python).
pub fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_string()
        };
        Err(Error::Internal(message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_guarded_is_an_internal_error_with_its_message() {
        assert_eq!(guarded(|| Ok::<_, Error>(7)), Ok(7));
        assert_eq!(guarded::<()>(|| Err(Error::Decode("x".into()))), Err(Error::Decode("x".into())));
        assert_eq!(guarded::<()>(|| panic!("static")), Err(Error::Internal("static".into())));
        let n = 3;
        assert_eq!(guarded::<()>(|| panic!("formatted {n}")), Err(Error::Internal("formatted 3".into())));
        assert_eq!(
            guarded::<()>(|| std::panic::panic_any(5u8)),
            Err(Error::Internal("panic with a non-string payload".into()))
        );
    }
}
