//! The one error type of the native core. The PyO3 layer maps it to Python exceptions in one
//! place (`python::to_py_err`); the seen-set's own errors convert into it.
use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Once;

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

thread_local! {
    /// How many [`guarded`] calls this thread is inside, and where the last panic inside one was.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
    static PANICKED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static QUIET_HOOK: Once = Once::new();

/// Installs, once per process, a panic hook that says nothing of a panic inside [`guarded`] (it
/// notes where it was, for the error) and hands any other to the hook it replaced: a worker that
/// meets many bad inputs does not write a panic line to stderr for each.
fn install_quiet_hook() {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) > 0 {
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                PANICKED_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Forgets where the last panic on this thread was: for code that catches a panic itself (a
/// C callback's), so that a later error is not said to be where that one was.
pub fn forget_panic() {
    PANICKED_AT.with(|p| p.borrow_mut().take());
}

/// Runs `f`; a panic inside it becomes [`Error::Internal`] with the panic's message and where
/// in the Rust code it was, so that it never unwinds further (into a batch's other inputs, or
/// into Python), and prints nothing.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    install_quiet_hook();
    forget_panic();
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    let at = PANICKED_AT.with(|p| p.borrow_mut().take());
    result.unwrap_or_else(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_string()
        };
        Err(Error::Internal(match at {
            Some(at) => format!("{message} (at {at})"),
            None => message,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_place(r: Result<(), Error>) -> Result<(), Error> {
        r.map_err(|e| match e {
            Error::Internal(m) => Error::Internal(m.split(" (at ").next().unwrap().to_string()),
            other => other,
        })
    }

    #[test]
    fn a_panic_inside_guarded_is_an_internal_error_with_its_message_and_place() {
        assert_eq!(guarded(|| Ok::<_, Error>(7)), Ok(7));
        assert_eq!(guarded::<()>(|| Err(Error::Decode("x".into()))), Err(Error::Decode("x".into())));
        assert_eq!(without_place(guarded::<()>(|| panic!("static"))), Err(Error::Internal("static".into())));
        let n = 3;
        assert_eq!(without_place(guarded::<()>(|| panic!("formatted {n}"))), Err(Error::Internal("formatted 3".into())));
        assert_eq!(
            without_place(guarded::<()>(|| std::panic::panic_any(5u8))),
            Err(Error::Internal("panic with a non-string payload".into()))
        );
        let line = line!() + 1;
        match guarded::<()>(|| panic!("here")) {
            Err(Error::Internal(m)) => assert_eq!(m, format!("here (at {}:{line})", file!())),
            other => panic!("{other:?}"),
        }
        // nested: the inner panic is caught and said where it was; the outer call goes on
        let outer = guarded(|| Ok::<_, Error>(guarded::<()>(|| panic!("inner")).is_err()));
        assert_eq!(outer, Ok(true));
        assert!(GUARDED.with(Cell::get) == 0 && PANICKED_AT.with(|p| p.borrow().is_none()));
    }

    #[test]
    fn a_place_is_never_that_of_a_panic_caught_elsewhere() {
        // a panic caught inside (a C callback's, which then forgets it), then one resumed from
        // another thread's (no hook ran here): no place
        let r = guarded::<()>(|| {
            let _ = std::panic::catch_unwind(|| panic!("callback"));
            forget_panic();
            std::panic::resume_unwind(Box::new("resumed"))
        });
        assert_eq!(r, Err(Error::Internal("resumed".into())));
        // a place noted in one call is not carried into the next
        let _ = guarded::<()>(|| {
            let _ = std::panic::catch_unwind(|| panic!("caught inside"));
            Ok(())
        });
        assert_eq!(guarded::<()>(|| std::panic::resume_unwind(Box::new("later"))), Err(Error::Internal("later".into())));
    }

    #[test]
    fn a_panic_outside_guarded_goes_to_the_hook_it_replaced() {
        let _ = guarded::<()>(|| panic!("installs the hook"));
        let caught = std::panic::catch_unwind(|| panic!("outside"));
        assert!(caught.is_err());
        assert!(PANICKED_AT.with(|p| p.borrow().is_none()), "a panic outside guarded is not noted");
    }
}
