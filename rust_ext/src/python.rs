//! The PyO3 layer: argument conversion, GIL release, and the single place where Rust errors
//! become Python exceptions (`to_py_err`). No hashing logic lives here.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pyo3::basic::CompareOp;
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::algorithm::{bit_count, Algorithm, HashSpec, MAX_HASH_SIZE, MIN_HASH_SIZE};
use crate::decode::{Limits, ALPHA_BACKGROUND, DEFAULT_MAX_ALLOC, DEFAULT_MAX_PIXELS};
use crate::error::HashError;
use crate::hash::{hash_batch, hash_image as hash_image_core, HashBits, ImageHash, HASH_VERSION};
use crate::near::bits::{u32s, u64s, Owners, Packed};
use crate::near::forest::{spanning_forest as forest_core, Components as CoreComponents};
use crate::near::search::{search, search_bands, Images, Part, Sub};
use crate::near::{brute, collapse, resolve, Band, Layout};
use crate::seen::{SeenError, SeenSet as CoreSeenSet};

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
fn to_py_err(e: HashError) -> PyErr {
    match e {
        HashError::Config(m) => PyValueError::new_err(m),
        HashError::Internal(_) => InternalError::new_err(e.to_string()),
        other @ (HashError::Decode(_) | HashError::TooLarge(_)) => ImageDecodeError::new_err(other.to_string()),
    }
}

fn seen_err(e: SeenError) -> PyErr {
    match e {
        SeenError::Full => pyo3::exceptions::PyMemoryError::new_err(e.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// An immutable perceptual hash: raw bytes plus the true bit count.
#[pyclass(frozen, module = "beam_phash", name = "PHash")]
pub struct PHash {
    inner: HashBits,
    width: u32,
    height: u32,
    quality: Option<u8>,
    variants: Vec<HashBits>,
}

impl PHash {
    fn bare(inner: HashBits) -> Self {
        PHash { inner, width: 0, height: 0, quality: None, variants: Vec::new() }
    }

    fn from_image(h: ImageHash) -> Self {
        PHash { inner: h.hash, width: h.width, height: h.height, quality: Some(h.quality), variants: h.variants }
    }
}

#[pymethods]
impl PHash {
    #[new]
    #[pyo3(signature = (data, bits=None, width=0, height=0, variants=None, quality=None))]
    fn new(data: &[u8], bits: Option<u32>, width: u32, height: u32, variants: Option<Vec<Vec<u8>>>, quality: Option<u8>) -> PyResult<Self> {
        if quality.is_some_and(|q| q > 100) {
            return Err(PyValueError::new_err(format!("quality must be between 0 and 100, got {}", quality.unwrap_or(0))));
        }
        let bits = checked_bits(data.len(), bits)?;
        let variants = variants.unwrap_or_default();
        if !(variants.is_empty() || variants.len() == 8) || variants.iter().any(|v| v.len() != data.len()) {
            return Err(PyValueError::new_err(format!(
                "variants must be 8 hashes of {} bytes (or none)",
                data.len()
            )));
        }
        let variants = variants.into_iter().map(|bytes| HashBits { bytes, bits }).collect();
        Ok(PHash { inner: HashBits { bytes: data.to_vec(), bits }, width, height, quality, variants })
    }

    /// How much the picture has to hash, 0-100: the mean gradient of its 32 x 32 grid (a blank
    /// or flat image scores near 0, its hash is noise). None when unknown (a hash from hex).
    #[getter]
    fn quality(&self) -> Option<u8> {
        self.quality
    }

    /// Width of the upright image that was hashed, in pixels (0 when unknown).
    #[getter]
    fn width(&self) -> u32 {
        self.width
    }

    /// Height of the upright image that was hashed, in pixels (0 when unknown).
    #[getter]
    fn height(&self) -> u32 {
        self.height
    }

    /// With ``dihedral=True``: the hashes of the 8 dihedral variants of the image (identity, rotations
    /// by 90/180/270 degrees clockwise, then the mirror image followed by each); else empty.
    #[getter]
    fn variants<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items = self
            .variants
            .iter()
            .map(|v| Py::new(py, PHash::bare(v.clone())))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, items)
    }

    /// Parse the hex form. `bits` defaults to 4 bits per hex digit.
    #[staticmethod]
    #[pyo3(signature = (s, bits=None))]
    fn from_hex(s: &str, bits: Option<u32>) -> PyResult<Self> {
        if s.len() % 2 != 0 || s.is_empty() {
            return Err(PyValueError::new_err(format!("hex string has odd length {}", s.len())));
        }
        let bits = checked_bits(s.len() / 2, bits)?;
        HashBits::from_hex(s, bits).map(PHash::bare).map_err(PyValueError::new_err)
    }

    /// Number of bits.
    #[getter]
    fn bits(&self) -> u32 {
        self.inner.bits
    }

    fn __len__(&self) -> usize {
        self.inner.bits as usize
    }

    /// Hamming distance. Hashes of different lengths cannot be compared.
    fn __sub__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let py = other.py();
        let Ok(other) = other.downcast::<PHash>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.get();
        match self.inner.hamming(&other.inner) {
            Some(d) => Ok(d.into_pyobject(py)?.into_any().unbind()),
            None => Err(PyTypeError::new_err(format!(
                "cannot compare a {}-bit hash with a {}-bit hash",
                self.inner.bits, other.inner.bits
            ))),
        }
    }

    fn hex(&self) -> String {
        self.inner.to_hex()
    }

    fn __str__(&self) -> String {
        self.inner.to_hex()
    }

    fn __repr__(&self) -> String {
        format!("PHash('{}', bits={})", self.inner.to_hex(), self.inner.bits)
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.bytes)
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyObject {
        let py = other.py();
        let Ok(other) = other.downcast::<PHash>() else {
            return py.NotImplemented();
        };
        let equal = self.inner == other.get().inner;
        match op {
            CompareOp::Eq => equal.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
            CompareOp::Ne => (!equal).into_pyobject(py).unwrap().to_owned().into_any().unbind(),
            _ => py.NotImplemented(),
        }
    }

    fn __hash__(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.inner.hash(&mut h);
        h.finish()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let me = slf.get();
        let variants: Vec<Bound<'py, PyBytes>> = me.variants.iter().map(|v| PyBytes::new(py, &v.bytes)).collect();
        let args = (PyBytes::new(py, &me.inner.bytes), me.inner.bits, me.width, me.height, variants, me.quality);
        PyTuple::new(py, [py.get_type::<PHash>().into_any(), args.into_pyobject(py)?.into_any()])
    }
}

fn checked_bits(nbytes: usize, bits: Option<u32>) -> PyResult<u32> {
    let max = (nbytes * 8) as u32;
    let bits = bits.unwrap_or(max);
    if bits == 0 || bits > max || bits + 8 <= max {
        return Err(PyValueError::new_err(format!("{bits} bits do not fit in {nbytes} bytes")));
    }
    Ok(bits)
}

fn spec_and_limits(algorithm: &str, hash_size: u32, max_pixels: u64, max_alloc: u64) -> PyResult<(HashSpec, Limits)> {
    let spec = HashSpec::parse(algorithm, hash_size).map_err(to_py_err)?;
    let limits = Limits::new(max_pixels, max_alloc).map_err(to_py_err)?;
    Ok((spec, limits))
}

/// A read-only, C-contiguous byte view of a bytes-like object, held for as long as we read it.
fn borrow_bytes(obj: &Bound<'_, PyAny>) -> Result<PyBuffer<u8>, String> {
    let buf = PyBuffer::<u8>::get(obj)
        .map_err(|_| format!("expected a bytes-like object, got {}", type_name(obj)))?;
    if !buf.is_c_contiguous() {
        return Err("expected a C-contiguous buffer".to_string());
    }
    Ok(buf)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// SAFETY: the buffer is held (and so its exporter pinned and non-resizable) while the slice lives.
unsafe fn as_slice(buf: &PyBuffer<u8>) -> &[u8] {
    std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes())
}

#[pyfunction]
#[pyo3(signature = (data, *, algorithm="phash", hash_size=16, max_pixels=DEFAULT_MAX_PIXELS, max_alloc=DEFAULT_MAX_ALLOC, dihedral=false))]
fn hash_image(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    algorithm: &str,
    hash_size: u32,
    max_pixels: u64,
    max_alloc: u64,
    dihedral: bool,
) -> PyResult<PHash> {
    let (spec, limits) = spec_and_limits(algorithm, hash_size, max_pixels, max_alloc)?;
    let buf = borrow_bytes(data).map_err(PyTypeError::new_err)?;
    let slice = unsafe { as_slice(&buf) };
    let result = py.allow_threads(|| hash_image_core(slice, &spec, &limits, dihedral));
    drop(buf);
    result.map(PHash::from_image).map_err(to_py_err)
}

#[pyfunction]
#[pyo3(signature = (blobs, *, algorithm="phash", hash_size=16, threads=None, max_pixels=DEFAULT_MAX_PIXELS, max_alloc=DEFAULT_MAX_ALLOC, dihedral=false))]
#[allow(clippy::too_many_arguments)]
fn hash_images<'py>(
    py: Python<'py>,
    blobs: &Bound<'py, PyAny>,
    algorithm: &str,
    hash_size: u32,
    threads: Option<usize>,
    max_pixels: u64,
    max_alloc: u64,
    dihedral: bool,
) -> PyResult<Bound<'py, PyList>> {
    let (spec, limits) = spec_and_limits(algorithm, hash_size, max_pixels, max_alloc)?;
    if threads == Some(0) {
        return Err(PyValueError::new_err("threads must be at least 1"));
    }
    // Borrow every input's buffer (no copy). Inputs that are not bytes-like get their error now.
    let mut views: Vec<Result<PyBuffer<u8>, String>> = Vec::new();
    for item in blobs.try_iter()? {
        views.push(borrow_bytes(&item?));
    }
    let empty: &[u8] = &[];
    let slices: Vec<&[u8]> =
        views.iter().map(|v| v.as_ref().map(|b| unsafe { as_slice(b) }).unwrap_or(empty)).collect();
    let results = py.allow_threads(|| hash_batch(&slices, &spec, &limits, threads, dihedral));
    drop(slices);

    let out = PyList::empty(py);
    for (view, result) in views.iter().zip(results) {
        let item: PyObject = match (view, result) {
            (Err(msg), _) => ImageDecodeError::new_err(msg.clone()).into_value(py).into_any(),
            (Ok(_), Ok(h)) => Py::new(py, PHash::from_image(h))?.into_any(),
            (Ok(_), Err(e)) => to_py_err(e).into_value(py).into_any(),
        };
        out.append(item)?;
    }
    Ok(out)
}

/// Number of bits `algorithm` produces at `hash_size`.
#[pyfunction]
fn hash_bits(algorithm: &str, hash_size: u32) -> PyResult<u32> {
    let alg = Algorithm::parse(algorithm).map_err(to_py_err)?;
    HashSpec::new(alg, hash_size).map_err(to_py_err)?;
    Ok(bit_count(alg, hash_size))
}

/// Owner ids as u64: a buffer of uint64 (numpy, array('Q')), borrowed; or any iterable of ints.
fn owner_ids(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Ok(buf) = PyBuffer::<u64>::get(obj) {
        return buf.to_vec(obj.py());
    }
    obj.try_iter()?.map(|o| o?.extract::<u64>()).collect()
}

/// A compact seen-set of fixed-width hashes with their first owner (see rust_ext/src/seen.rs).
#[pyclass(module = "beam_phash", name = "SeenSet")]
pub struct SeenSet {
    inner: CoreSeenSet,
}

#[pymethods]
impl SeenSet {
    #[new]
    #[pyo3(signature = (hash_bytes=32, *, keep_labels=false))]
    fn new(hash_bytes: usize, keep_labels: bool) -> PyResult<Self> {
        if hash_bytes == 0 || hash_bytes > 1024 {
            return Err(PyValueError::new_err(format!("hash_bytes must be between 1 and 1024, got {hash_bytes}")));
        }
        Ok(SeenSet { inner: CoreSeenSet::new(hash_bytes, keep_labels) })
    }

    /// n packed hashes (n * hash_bytes bytes) and n uint64 owners -> n booleans: True where the
    /// owner is the hash's first claimant (a new hash, or the same owner again).
    fn check_and_insert(&mut self, py: Python<'_>, hashes: &Bound<'_, PyAny>, owners: &Bound<'_, PyAny>) -> PyResult<Vec<bool>> {
        let owners = owner_ids(owners)?;
        let buf = borrow_bytes(hashes).map_err(PyTypeError::new_err)?;
        let packed = unsafe { as_slice(&buf) };
        let inner = &mut self.inner;
        py.allow_threads(|| inner.check_and_insert(packed, &owners)).map_err(seen_err)
    }

    /// Like check_and_insert, storing `labels` (the records' ids) with new hashes. Returns, per
    /// hash, None where the caller is the first claimant, else the first claimant's label.
    fn claim(&mut self, hashes: &Bound<'_, PyAny>, owners: &Bound<'_, PyAny>, labels: Vec<String>) -> PyResult<Vec<Option<String>>> {
        let owners = owner_ids(owners)?;
        let buf = borrow_bytes(hashes).map_err(PyTypeError::new_err)?;
        let keepers = self.inner.claim_labelled(unsafe { as_slice(&buf) }, &owners, &labels).map_err(seen_err)?;
        let label = |e: usize| String::from_utf8_lossy(self.inner.label_at(e)).into_owned();
        Ok(keepers.into_iter().map(|k| k.map(label)).collect())
    }

    /// The stored owner of each packed hash, None where it is not held.
    fn owners_of(&self, hashes: &Bound<'_, PyAny>) -> PyResult<Vec<Option<u64>>> {
        let buf = borrow_bytes(hashes).map_err(PyTypeError::new_err)?;
        self.inner.owners_of(unsafe { as_slice(&buf) }).map_err(seen_err)
    }

    /// Every entry, in insertion order, as ``(hashes, owners, labels)``: the packed hashes
    /// (len * hash_bytes bytes), the owners as packed little-endian uint64, and the labels ("" for
    /// each entry of a set without labels). Feeding them to :meth:`claim` rebuilds the set.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let n = self.inner.len();
        let mut hashes = Vec::with_capacity(n * self.inner.hash_bytes());
        let mut owners = Vec::with_capacity(n * 8);
        let mut labels = Vec::with_capacity(n);
        for (hash, owner, label) in self.inner.iter() {
            hashes.extend_from_slice(hash);
            owners.extend_from_slice(&owner.to_le_bytes());
            labels.push(String::from_utf8_lossy(label).into_owned());
        }
        let items: [Bound<'py, PyAny>; 3] =
            [PyBytes::new(py, &hashes).into_any(), PyBytes::new(py, &owners).into_any(), labels.into_pyobject(py)?.into_any()];
        PyTuple::new(py, items)
    }

    #[getter]
    fn keeps_labels(&self) -> bool {
        self.inner.keeps_labels()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn hash_bytes(&self) -> usize {
        self.inner.hash_bytes()
    }

    /// Bytes allocated by the set.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    fn __repr__(&self) -> String {
        format!("SeenSet(hash_bytes={}, len={}, nbytes={})", self.inner.hash_bytes(), self.inner.len(), self.inner.memory_bytes())
    }
}

// ---- Near-duplicate kernels (rust_ext/src/near). Buffers in, bytes out (numpy.frombuffer views
// them without a copy); the GIL is released while a kernel runs, and a panic is an error.

/// Run a kernel without the GIL; a panic inside becomes `HashError::Internal`.
fn kernel<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, HashError> + Send) -> PyResult<T> {
    py.allow_threads(|| match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(HashError::Internal(msg))
        }
    })
    .map_err(to_py_err)
}

/// A borrowed byte view of a buffer (numpy array, bytes, memoryview).
fn view(obj: &Bound<'_, PyAny>) -> PyResult<PyBuffer<u8>> {
    borrow_bytes(obj).map_err(PyTypeError::new_err)
}

fn u64_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn layout_from(bits: u32, max_distance: u32, bands: Vec<(u32, u32, u32)>) -> PyResult<Layout> {
    let bands = bands.into_iter().map(|(start, width, radius)| Band { start, width, radius }).collect();
    Layout::new(bits, max_distance, bands).map_err(to_py_err)
}

/// Run `f` on the images given as buffers (hashes, uint64 ids, optional variants), as a kernel.
fn with_images<T: Send>(
    py: Python<'_>,
    hashes: &Bound<'_, PyAny>,
    ids: &Bound<'_, PyAny>,
    variants: Option<&Bound<'_, PyAny>>,
    hash_bytes: usize,
    fixed: usize,
    f: impl FnOnce(&Images) -> Result<T, HashError> + Send,
) -> PyResult<T> {
    let (hbuf, ibuf) = (view(hashes)?, view(ids)?);
    let vbuf = variants.map(view).transpose()?;
    let (hdata, idata) = unsafe { (as_slice(&hbuf), as_slice(&ibuf)) };
    let vdata = vbuf.as_ref().map(|b| unsafe { as_slice(b) });
    kernel(py, || {
        let ids = u64s(idata, "ids")?;
        let v = vdata.map(|d| Packed::new(d, hash_bytes)).transpose()?;
        f(&Images::with_fixed(Packed::new(hdata, hash_bytes)?, v, &ids, fixed)?)
    })
}

/// The band layout for `bits`-bit hashes within `max_distance`, for about `n` hashes (None: the
/// cost model's default): a list of (start bit, width, radius).
#[pyfunction]
#[pyo3(signature = (bits, max_distance, n=None))]
fn near_layout(bits: u32, max_distance: u32, n: Option<u64>) -> PyResult<Vec<(u32, u32, u32)>> {
    let layout = Layout::choose(bits, max_distance, n).map_err(to_py_err)?;
    Ok(layout.bands.iter().map(|b| (b.start, b.width, b.radius)).collect())
}

/// Bits [start, start + width) of each packed hash (row width `hash_bytes`), as uint64 bytes.
#[pyfunction]
fn near_fields<'py>(py: Python<'py>, hashes: &Bound<'py, PyAny>, hash_bytes: usize, start: u32, width: u32) -> PyResult<Bound<'py, PyBytes>> {
    if width == 0 || width > 64 || (start + width) as usize > hash_bytes * 8 {
        return Err(PyValueError::new_err(format!("bits {start}..{} of {hash_bytes}-byte hashes", start + width)));
    }
    let buf = view(hashes)?;
    let data = unsafe { as_slice(&buf) };
    let out = kernel(py, || {
        let packed = Packed::new(data, hash_bytes)?;
        Ok(u64_bytes(&(0..packed.len()).map(|i| crate::near::bits::field(packed.row(i), start, width)).collect::<Vec<_>>()))
    })?;
    Ok(PyBytes::new(py, &out))
}

/// The pairs within `max_distance` that qualify first on one band (or one sub-block partition of
/// it): (a ids, b ids, distances) as uint64, uint64, uint32 bytes, plus (candidates, big runs).
/// `band` may be a list of whole bands, searched in parallel on `threads` threads (None: all
/// cores). The last `fixed` images are already kept: only pairs with a new image are searched,
/// and `variants` cover the new images only.
#[pyfunction]
#[pyo3(signature = (hashes, ids, *, hash_bytes, bits, max_distance, layout, band, variants=None, sub=None, prefix_bits=0, prefix=0, fixed=0, threads=None))]
#[allow(clippy::too_many_arguments)]
fn near_search<'py>(
    py: Python<'py>,
    hashes: &Bound<'py, PyAny>,
    ids: &Bound<'py, PyAny>,
    hash_bytes: usize,
    bits: u32,
    max_distance: u32,
    layout: Vec<(u32, u32, u32)>,
    band: &Bound<'py, PyAny>,
    variants: Option<&Bound<'py, PyAny>>,
    sub: Option<usize>,
    prefix_bits: u32,
    prefix: u64,
    fixed: usize,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyTuple>> {
    let layout = layout_from(bits, max_distance, layout)?;
    let (edges, stats) = if let Ok(single) = band.extract::<usize>() {
        let part = Part { band: single, sub: sub.map(|index| Sub { index, prefix_bits, prefix }) };
        with_images(py, hashes, ids, variants, hash_bytes, fixed, |images| search(images, &layout, part))?
    } else {
        let bands: Vec<usize> = band.extract()?;
        if sub.is_some() {
            return Err(PyValueError::new_err("a sub-block partition is of one band, not a list"));
        }
        with_images(py, hashes, ids, variants, hash_bytes, fixed, |images| search_bands(images, &layout, &bands, threads))?
    };
    let items: [Bound<'py, PyAny>; 5] = [
        PyBytes::new(py, &u64_bytes(&edges.a)).into_any(),
        PyBytes::new(py, &u64_bytes(&edges.b)).into_any(),
        PyBytes::new(py, &u32_bytes(&edges.distance)).into_any(),
        stats.candidates.into_pyobject(py)?.into_any(),
        stats.big_runs.into_pyobject(py)?.into_any(),
    ];
    PyTuple::new(py, items)
}

/// Every pair within `max_distance` by brute force (the oracle): (a, b, distances) bytes; the
/// last `fixed` images pair only with the others.
#[pyfunction]
#[pyo3(signature = (hashes, ids, *, hash_bytes, max_distance, variants=None, threads=None, fixed=0))]
fn near_pairs_brute<'py>(
    py: Python<'py>,
    hashes: &Bound<'py, PyAny>,
    ids: &Bound<'py, PyAny>,
    hash_bytes: usize,
    max_distance: u32,
    variants: Option<&Bound<'py, PyAny>>,
    threads: Option<usize>,
    fixed: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let edges =
        with_images(py, hashes, ids, variants, hash_bytes, fixed, |images| brute::all_pairs(images, max_distance, threads))?;
    let items = [
        PyBytes::new(py, &u64_bytes(&edges.a)),
        PyBytes::new(py, &u64_bytes(&edges.b)),
        PyBytes::new(py, &u32_bytes(&edges.distance)),
    ];
    PyTuple::new(py, items)
}

/// The indices (uint64 bytes) of the edges that form a spanning forest of the graph (a, b).
#[pyfunction]
fn spanning_forest<'py>(py: Python<'py>, a: &Bound<'py, PyAny>, b: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let (abuf, bbuf) = (view(a)?, view(b)?);
    let (ad, bd) = unsafe { (as_slice(&abuf), as_slice(&bbuf)) };
    let keep = kernel(py, || {
        let keep = forest_core(&u64s(ad, "a")?, &u64s(bd, "b")?)?;
        Ok(u64_bytes(&keep.iter().map(|&e| e as u64).collect::<Vec<_>>()))
    })?;
    Ok(PyBytes::new(py, &keep))
}

/// Keep-by-rank over the nodes (ids, primary rank, owners packed as offsets + UTF-8 blob, keys
/// as rows of `key_bytes` for the last tie-break) and their edges: (dropped node index, keeper node index, distance), each uint32 bytes.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn near_resolve<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    primary: &Bound<'py, PyAny>,
    owner_offsets: &Bound<'py, PyAny>,
    owner_blob: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyAny>,
    key_bytes: usize,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    distance: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    let bufs = [view(ids)?, view(primary)?, view(owner_offsets)?, view(owner_blob)?, view(keys)?, view(a)?, view(b)?, view(distance)?];
    let s: Vec<&[u8]> = bufs.iter().map(|b| unsafe { as_slice(b) }).collect();
    let dropped = kernel(py, || {
        let offsets = u64s(s[2], "owner_offsets")?;
        let owners = Owners::new(&offsets, s[3])?;
        let keys = Packed::new(s[4], key_bytes)?;
        resolve::resolve(&u64s(s[0], "ids")?, &u64s(s[1], "primary")?, &owners, &keys, &u64s(s[5], "a")?, &u64s(s[6], "b")?, &u32s(s[7], "distance")?)
    })?;
    let nodes: Vec<u32> = dropped.iter().map(|d| d.node).collect();
    let keepers: Vec<u32> = dropped.iter().map(|d| d.keeper).collect();
    let dist: Vec<u32> = dropped.iter().map(|d| d.distance).collect();
    let items = [PyBytes::new(py, &u32_bytes(&nodes)), PyBytes::new(py, &u32_bytes(&keepers)), PyBytes::new(py, &u32_bytes(&dist))];
    PyTuple::new(py, items)
}

/// Per distinct key (rows of `key_bytes`), ascending, the index of its best-ranked record, as
/// uint32 bytes.
#[pyfunction]
fn collapse_heads<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyAny>,
    key_bytes: usize,
    primary: &Bound<'py, PyAny>,
    owner_offsets: &Bound<'py, PyAny>,
    owner_blob: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let bufs = [view(keys)?, view(primary)?, view(owner_offsets)?, view(owner_blob)?];
    let s: Vec<&[u8]> = bufs.iter().map(|b| unsafe { as_slice(b) }).collect();
    let heads = kernel(py, || {
        let offsets = u64s(s[2], "owner_offsets")?;
        collapse::heads(&Packed::new(s[0], key_bytes)?, &u64s(s[1], "primary")?, &Owners::new(&offsets, s[3])?)
    })?;
    Ok(PyBytes::new(py, &u32_bytes(&heads)))
}

/// Hex hashes of `bits` bits -> (packed bytes, one error message or None per value). A value
/// that is not a valid hash (None, not a str, wrong width, not hex) gets zero bytes and a reason.
#[pyfunction]
fn parse_hex_hashes<'py>(py: Python<'py>, values: &Bound<'py, PyAny>, bits: u32) -> PyResult<Bound<'py, PyTuple>> {
    if bits == 0 {
        return Err(PyValueError::new_err("bits must be at least 1"));
    }
    let width = bits.div_ceil(8) as usize;
    let mut packed = Vec::new();
    let errors = PyList::empty(py);
    for item in values.try_iter()? {
        let item = item?;
        let parsed = if item.is_none() {
            Err("missing hash".to_string())
        } else {
            match item.extract::<&str>() {
                Ok(s) => HashBits::from_hex(s.trim(), bits),
                Err(_) => Err(format!("hash is a {}, expected a hex string", type_name(&item))),
            }
        };
        match parsed {
            Ok(h) => {
                packed.extend_from_slice(&h.bytes);
                errors.append(py.None())?;
            }
            Err(e) => {
                packed.extend(std::iter::repeat(0u8).take(width));
                errors.append(e)?;
            }
        }
    }
    let items: [Bound<'py, PyAny>; 2] = [PyBytes::new(py, &packed).into_any(), errors.into_any()];
    PyTuple::new(py, items)
}

/// A column of hex hashes in Arrow layout (int64 `offsets`, n + 1 of them, into `data`; `valid`
/// one byte per value, 0 for null, or None) -> (packed bytes, indices of the bad values as
/// uint32 bytes, one reason per bad value). Bad values get zero bytes.
#[pyfunction]
#[pyo3(signature = (offsets, data, bits, valid=None))]
fn parse_hex_column<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    bits: u32,
    valid: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    if bits == 0 {
        return Err(PyValueError::new_err("bits must be at least 1"));
    }
    let (obuf, dbuf) = (view(offsets)?, view(data)?);
    let vbuf = valid.map(view).transpose()?;
    let (odata, ddata) = unsafe { (as_slice(&obuf), as_slice(&dbuf)) };
    let vdata = vbuf.as_ref().map(|b| unsafe { as_slice(b) });
    let (packed, bad, reasons) = kernel(py, || {
        let offsets: Vec<i64> = u64s(odata, "offsets")?.into_iter().map(|o| o as i64).collect();
        let n = offsets.len().saturating_sub(1);
        if vdata.is_some_and(|v| v.len() != n) {
            return Err(HashError::Config(format!("{} validity bytes for {n} values", vdata.map_or(0, |v| v.len()))));
        }
        let width = bits.div_ceil(8) as usize;
        let mut packed = Vec::with_capacity(n * width);
        let (mut bad, mut reasons) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (lo, hi) = (offsets[i], offsets[i + 1]);
            if lo < 0 || hi < lo || hi as usize > ddata.len() {
                return Err(HashError::Config(format!("offsets {lo}..{hi} outside {} bytes of data", ddata.len())));
            }
            let parsed = if vdata.is_some_and(|v| v[i] == 0) {
                Err("missing hash".to_string())
            } else {
                match std::str::from_utf8(&ddata[lo as usize..hi as usize]) {
                    Ok(s) => HashBits::from_hex(s.trim(), bits),
                    Err(_) => Err("hash is not UTF-8 text".to_string()),
                }
            };
            match parsed {
                Ok(h) => packed.extend_from_slice(&h.bytes),
                Err(e) => {
                    packed.extend(std::iter::repeat(0u8).take(width));
                    bad.push(i as u32);
                    reasons.push(e);
                }
            }
        }
        Ok((packed, bad, reasons))
    })?;
    let items: [Bound<'py, PyAny>; 3] = [
        PyBytes::new(py, &packed).into_any(),
        PyBytes::new(py, &u32_bytes(&bad)).into_any(),
        PyList::new(py, reasons)?.into_any(),
    ];
    PyTuple::new(py, items)
}

/// The one global union-find step over the forests' edges, in compact form (12 bytes per id):
/// `add_ids` with every edge's ends, then `union` with every edge, then `components`.
#[pyclass(module = "beam_phash", name = "Components")]
pub struct Components {
    inner: CoreComponents,
}

#[pymethods]
impl Components {
    #[new]
    fn new() -> Self {
        Components { inner: CoreComponents::new() }
    }

    fn add_ids(&mut self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = view(ids)?;
        let data = unsafe { as_slice(&buf) };
        let inner = &mut self.inner;
        kernel(py, || inner.add_ids(&u64s(data, "ids")?))
    }

    fn union(&mut self, py: Python<'_>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<()> {
        let (abuf, bbuf) = (view(a)?, view(b)?);
        let (ad, bd) = unsafe { (as_slice(&abuf), as_slice(&bbuf)) };
        let inner = &mut self.inner;
        kernel(py, || {
            inner.freeze()?;
            inner.union(&u64s(ad, "a")?, &u64s(bd, "b")?)
        })
    }

    /// (ids, components) as uint64 bytes: every id with a neighbour, ascending, and the smallest
    /// id of its component.
    fn components<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let inner = &mut self.inner;
        let (ids, comp) = kernel(py, || inner.components())?;
        PyTuple::new(py, [PyBytes::new(py, &u64_bytes(&ids)), PyBytes::new(py, &u64_bytes(&comp))])
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Bytes held by the union-find.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}

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
    m.add("FLAT_QUALITY", crate::grid::FLAT_QUALITY)?;
    Ok(())
}
