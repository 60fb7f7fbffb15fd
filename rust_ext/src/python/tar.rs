//! Tar headers for the shard reader: `tar_member_names`.
use std::path::PathBuf;

use pyo3::prelude::*;

/// The regular members' names of the plain tar at local `path`, from its headers alone; None
/// when the file is not one this walk handles (see `tar.rs`): read it the Python way then.
#[pyfunction]
pub(crate) fn tar_member_names(py: Python<'_>, path: PathBuf) -> Option<Vec<String>> {
    py.allow_threads(|| crate::tar::member_names(&path))
}
