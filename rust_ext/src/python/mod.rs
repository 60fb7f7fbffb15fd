//! The PyO3 layer: argument conversion, GIL release, and the single place where Rust errors
//! become Python exceptions (`to_py_err`). No hashing logic lives here.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pyo3::basic::CompareOp;
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple};

use crate::error::{guarded, Error};
use crate::exact::mix::route;
use crate::exact::seen::SeenSet as CoreSeenSet;
use crate::hash::algorithm::{bit_count, check_bits, Algorithm, HashSpec, MAX_HASH_BYTES, MAX_HASH_SIZE, MIN_HASH_SIZE};
use crate::hash::{hash_batch, hash_image as hash_image_core, HashBits, ImageHash, HASH_VERSION};
use crate::image::decode::{Limits, ALPHA_BACKGROUND, DEFAULT_MAX_ALLOC, DEFAULT_MAX_PIXELS};
use crate::near::bits::{u64s, Owners, Packed};
use crate::near::forest::{spanning_forest as forest_core, Components as CoreComponents};
use crate::near::search::{search_bands, search_with, Images, Output, Part, Sub};
use crate::near::order::{order, Field};
use crate::near::{brute, collapse, resolve, Band, Layout};
use crate::pool::MAX_THREADS;

create_exception!(
    beam_phash,
    ImageDecodeError,
    PyValueError,
    "The bytes are not a usable image (empty, unknown format, corrupt, or over the size limits)."
);

create_exception!(
    beam_phash,
    InternalError,
    ImageDecodeError,
    "The Rust code failed on this input (a caught panic): a bug to report, not a bad image."
);

/// The one mapping from core errors to Python exceptions.
fn to_py_err(e: impl Into<Error>) -> PyErr {
    match e.into() {
        Error::Config(m) => PyValueError::new_err(m),
        Error::Full(m) => pyo3::exceptions::PyMemoryError::new_err(m),
        // As Python's own threading says when it cannot start a thread.
        Error::System(m) => pyo3::exceptions::PyRuntimeError::new_err(m),
        e @ Error::Internal(_) => InternalError::new_err(e.to_string()),
        e @ (Error::Decode(_) | Error::TooLarge(_)) => ImageDecodeError::new_err(e.to_string()),
    }
}

mod buffers;
mod hashing;
mod near;
mod seen;
mod tar;

use buffers::*;
use hashing::*;
use near::*;
use seen::*;
use tar::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ImageDecodeError", py.get_type::<ImageDecodeError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add_class::<PHash>()?;
    m.add_class::<SeenSet>()?;
    m.add_function(wrap_pyfunction!(hash_image, m)?)?;
    m.add_function(wrap_pyfunction!(hash_images, m)?)?;
    m.add_function(wrap_pyfunction!(hash_bits, m)?)?;
    m.add_class::<Components>()?;
    for f in [
        wrap_pyfunction!(near_layout, m)?,
        wrap_pyfunction!(near_fields, m)?,
        wrap_pyfunction!(near_search, m)?,
        wrap_pyfunction!(near_pairs_brute, m)?,
        wrap_pyfunction!(spanning_forest, m)?,
        wrap_pyfunction!(near_resolve, m)?,
        wrap_pyfunction!(collapse_heads, m)?,
        wrap_pyfunction!(parse_hex_hashes, m)?,
        wrap_pyfunction!(parse_hex_column, m)?,
        wrap_pyfunction!(route_rows, m)?,
        wrap_pyfunction!(tar_member_names, m)?,
    ] {
        m.add_function(f)?;
    }
    m.add("ALGORITHMS", PyTuple::new(py, Algorithm::NAMES)?)?;
    m.add("MIN_HASH_SIZE", MIN_HASH_SIZE)?;
    m.add("MAX_HASH_SIZE", MAX_HASH_SIZE)?;
    m.add("DEFAULT_MAX_PIXELS", DEFAULT_MAX_PIXELS)?;
    m.add("DEFAULT_MAX_ALLOC", DEFAULT_MAX_ALLOC)?;
    m.add("ALPHA_BACKGROUND", ALPHA_BACKGROUND)?;
    m.add("HASH_VERSION", HASH_VERSION)?;
    m.add("MAX_THREADS", MAX_THREADS)?;
    m.add("FLAT_QUALITY", crate::image::grid::FLAT_QUALITY)?;
    Ok(())
}
