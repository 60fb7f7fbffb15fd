//! Borrowing Python buffers without a copy, and running a kernel on them without the GIL, a
//! panic inside becoming `Error::Internal`.
use super::*;

/// A read-only, C-contiguous byte view of a bytes-like object, held for as long as we read it.
pub(crate) fn borrow_bytes(obj: &Bound<'_, PyAny>) -> Result<PyBuffer<u8>, String> {
    let buf = PyBuffer::<u8>::get(obj)
        .map_err(|_| format!("expected a bytes-like object, got {}", type_name(obj)))?;
    if !buf.is_c_contiguous() {
        return Err("expected a C-contiguous buffer".to_string());
    }
    Ok(buf)
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// SAFETY: the buffer is held (and so its exporter pinned and non-resizable) while the slice lives.
pub(crate) unsafe fn as_slice(buf: &PyBuffer<u8>) -> &[u8] {
    std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes())
}

/// Owner ids as u64: a buffer of uint64 (numpy, array('Q')), borrowed; or any iterable of ints.
pub(crate) fn owner_ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Ok(buf) = PyBuffer::<u64>::get(obj) {
        return buf.to_vec(obj.py());
    }
    obj.try_iter()?.map(|o| o?.extract::<u64>()).collect()
}

/// Run a kernel without the GIL; a panic inside becomes `Error::Internal`.
pub(crate) fn kernel<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Error> + Send) -> PyResult<T> {
    py.allow_threads(|| match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(Error::Internal(msg))
        }
    })
    .map_err(to_py_err)
}

/// A borrowed byte view of a buffer (numpy array, bytes, memoryview).
pub(crate) fn view(obj: &Bound<'_, PyAny>) -> PyResult<PyBuffer<u8>> {
    borrow_bytes(obj).map_err(PyTypeError::new_err)
}

pub(crate) fn u64_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
