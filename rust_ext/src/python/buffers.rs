//! Borrowing Python buffers without a copy, and running a kernel on them without the GIL, a
//! panic inside becoming `Error::Internal`.
use super::*;

/// A read-only byte view of a bytes-like object, held (its exporter pinned and non-resizable)
/// for as long as we read it: unsigned bytes (format "B": bytes, bytearray, numpy uint8) or
/// signed ones (format "b": pyarrow's `Buffer`, numpy int8, `memoryview.cast("b")`), read as
/// the same bytes.
pub(crate) enum Bytes {
    Unsigned(PyBuffer<u8>),
    Signed(PyBuffer<i8>),
}

impl Bytes {
    fn get(obj: &Bound<'_, PyAny>) -> Option<Self> {
        PyBuffer::<u8>::get(obj)
            .map(Bytes::Unsigned)
            .or_else(|_| PyBuffer::<i8>::get(obj).map(Bytes::Signed))
            .ok()
    }

    fn is_c_contiguous(&self) -> bool {
        match self {
            Bytes::Unsigned(b) => b.is_c_contiguous(),
            Bytes::Signed(b) => b.is_c_contiguous(),
        }
    }
}

/// Whether `obj` exports bytes (of either sign), as one image would.
pub(crate) fn is_bytes_like(obj: &Bound<'_, PyAny>) -> bool {
    Bytes::get(obj).is_some()
}

/// A read-only, C-contiguous byte view of a bytes-like object.
pub(crate) fn borrow_bytes(obj: &Bound<'_, PyAny>) -> Result<Bytes, String> {
    contiguous(Bytes::get(obj).ok_or_else(|| not_bytes(obj))?)
}

fn contiguous(buf: Bytes) -> Result<Bytes, String> {
    if !buf.is_c_contiguous() {
        return Err("expected a C-contiguous buffer (a strided view: pass bytes(view))".to_string());
    }
    Ok(buf)
}

fn not_bytes(obj: &Bound<'_, PyAny>) -> String {
    format!("expected a bytes-like object, got {}", type_name(obj))
}

/// One image's bytes: a bytes-like object, or a pyarrow binary scalar (an element of a pyarrow
/// binary array), whose bytes are borrowed from the array's data through its `as_buffer()`.
/// The object's buffer is asked for once.
pub(crate) fn borrow_image(obj: &Bound<'_, PyAny>) -> Result<Bytes, String> {
    if let Some(buf) = Bytes::get(obj) {
        return contiguous(buf);
    }
    if !obj.hasattr("as_buffer").unwrap_or(false) {
        return Err(not_bytes(obj));
    }
    match obj.call_method0("as_buffer") {
        Ok(buffer) if buffer.is_none() => Err(format!("a null {}", type_name(obj))),
        Ok(buffer) => borrow_bytes(&buffer),
        Err(_) => Err(not_bytes(obj)),
    }
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// SAFETY: the buffer is held (and so its exporter pinned and non-resizable) while the slice lives.
pub(crate) unsafe fn as_slice(buf: &Bytes) -> &[u8] {
    match buf {
        Bytes::Unsigned(b) => std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()),
        Bytes::Signed(b) => std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()),
    }
}

/// Owner ids as u64: a buffer of uint64 (numpy, array('Q')), borrowed; or any iterable of ints.
pub(crate) fn owner_ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Ok(buf) = PyBuffer::<u64>::get(obj) {
        // pyo3 takes a uint64 buffer of either byte order for a native one: read a foreign order
        // (numpy's ">u8" on this little-endian machine) item by item below, as ints.
        let order = buf.format().to_bytes().first().copied();
        let foreign = if cfg!(target_endian = "little") { matches!(order, Some(b'>' | b'!')) } else { order == Some(b'<') };
        if !foreign {
            return buf.to_vec(obj.py());
        }
    }
    obj.try_iter()?
        .map(|o| {
            let o = o?;
            o.extract::<u64>().map_err(|_| {
                let shown = o.repr().map(|r| r.to_string()).unwrap_or_else(|_| type_name(&o));
                PyValueError::new_err(format!("owners must be ints from 0 to 2**64 - 1, got {shown}"))
            })
        })
        .collect()
}

/// Run a kernel without the GIL; a panic inside becomes `Error::Internal`.
pub(crate) fn kernel<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Error> + Send) -> PyResult<T> {
    py.allow_threads(|| guarded(f)).map_err(to_py_err)
}

/// A borrowed byte view of a buffer (numpy array, bytes, memoryview).
pub(crate) fn view(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    borrow_bytes(obj).map_err(PyTypeError::new_err)
}

pub(crate) fn u64_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
