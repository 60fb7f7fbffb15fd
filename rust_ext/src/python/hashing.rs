//! `PHash`, `hash_image`, `hash_images`, `hash_bits`, and hex hashes parsed in bulk.
use super::*;

/// An immutable perceptual hash: raw bytes plus the true bit count.
#[pyclass(frozen, module = "beam_phash", name = "PHash")]
pub(crate) struct PHash {
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
    fn new(
        data: &[u8],
        #[pyo3(from_py_with = "wide_int_or_none")] bits: Option<i128>,
        #[pyo3(from_py_with = "wide_int")] width: i128,
        #[pyo3(from_py_with = "wide_int")] height: i128,
        variants: Option<Vec<Vec<u8>>>,
        #[pyo3(from_py_with = "wide_int_or_none")] quality: Option<i128>,
    ) -> PyResult<Self> {
        let quality = quality.map(|q| int_arg::<u8>("quality", q, 0, 100)).transpose()?;
        let (width, height) = (int_arg("width", width, 0, u32::MAX.into())?, int_arg("height", height, 0, u32::MAX.into())?);
        let bits = checked_bits(data.len(), bits.map(|b| int_arg("bits", b, 1, u32::MAX.into())).transpose()?)?;
        let variants = variants.unwrap_or_default();
        if !(variants.is_empty() || variants.len() == 8) || variants.iter().any(|v| v.len() != data.len()) {
            return Err(PyValueError::new_err(format!(
                "variants must be 8 hashes of {} bytes (or none)",
                data.len()
            )));
        }
        let variants =
            variants.into_iter().map(|bytes| HashBits::new(bytes, bits)).collect::<Result<Vec<_>, _>>().map_err(PyValueError::new_err)?;
        let inner = HashBits::new(data.to_vec(), bits).map_err(PyValueError::new_err)?;
        Ok(PHash { inner, width, height, quality, variants })
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
    fn from_hex(s: &str, #[pyo3(from_py_with = "wide_int_or_none")] bits: Option<i128>) -> PyResult<Self> {
        let bits = bits.map(|b| int_arg("bits", b, 1, u32::MAX.into())).transpose()?;
        if s.is_empty() {
            return Err(PyValueError::new_err("hex string is empty"));
        }
        if s.len() % 2 != 0 {
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

pub(crate) fn checked_bits(nbytes: usize, bits: Option<u32>) -> PyResult<u32> {
    let max = (nbytes * 8) as u32;
    let bits = bits.unwrap_or(max);
    if bits == 0 || bits > max || bits + 8 <= max {
        return Err(PyValueError::new_err(format!("{bits} bits do not fit in {nbytes} bytes")));
    }
    Ok(bits)
}

pub(crate) fn spec_and_limits(algorithm: &str, hash_size: i128, max_pixels: i128, max_alloc: i128) -> PyResult<(HashSpec, Limits)> {
    let hash_size = int_arg("hash_size", hash_size, MIN_HASH_SIZE.into(), MAX_HASH_SIZE.into())?;
    let spec = HashSpec::parse(algorithm, hash_size).map_err(to_py_err)?;
    let max = i128::from(i64::MAX);
    let limits = Limits::new(int_arg("max_pixels", max_pixels, 1, max)?, int_arg("max_alloc", max_alloc, 1, max)?)
        .map_err(to_py_err)?;
    Ok((spec, limits))
}

/// An int argument in `min..=max`, converted to the type the core takes: out of range is a
/// ValueError naming it. (PyO3's own conversions raise OverflowError without the name, for a
/// negative value where the core takes an unsigned one and for any int past 64 bits.)
pub(crate) fn int_arg<T: TryFrom<i128>>(name: &str, value: i128, min: i128, max: i128) -> PyResult<T> {
    // `wide_int` saturates at the ends of i128.
    let got = match value {
        i128::MAX => "an int of 2**127 - 1 or more".to_string(),
        i128::MIN => "an int of -2**127 or less".to_string(),
        v => v.to_string(),
    };
    match T::try_from(value) {
        Ok(v) if (min..=max).contains(&value) => Ok(v),
        _ if max == i128::from(i64::MAX) && value < min => {
            Err(PyValueError::new_err(format!("{name} must be at least {min}, got {got}")))
        }
        _ if max == i128::from(i64::MAX) => Err(PyValueError::new_err(format!("{name} must be below 2**63, got {got}"))),
        _ => Err(PyValueError::new_err(format!("{name} must be between {min} and {max}, got {got}"))),
    }
}

/// A Python int (or any object with `__index__`, as PyO3's own int arguments take) as an i128
/// for `int_arg`, any size: past i128 it saturates, so that `int_arg` refuses it with its
/// ValueError like any other value out of range. Not an int: TypeError.
pub(crate) fn wide_int(value: &Bound<'_, PyAny>) -> PyResult<i128> {
    let py = value.py();
    let int = if value.is_instance_of::<PyInt>() {
        value.clone()
    } else {
        py.import("operator")?.getattr("index")?.call1((value,))?
    };
    match int.extract::<i128>() {
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) => {
            Ok(if int.gt(0)? { i128::MAX } else { i128::MIN })
        }
        other => other,
    }
}

/// `wide_int` for an optional argument (None stays None).
pub(crate) fn wide_int_or_none(value: &Bound<'_, PyAny>) -> PyResult<Option<i128>> {
    if value.is_none() { Ok(None) } else { wide_int(value).map(Some) }
}

/// A `threads` argument: None (one per core) or 1 to `MAX_THREADS`, for every parallel kernel.
pub(crate) fn threads_arg(threads: Option<i128>) -> PyResult<Option<usize>> {
    threads.map(|t| int_arg::<usize>("threads", t, 1, MAX_THREADS as i128)).transpose()
}


#[pyfunction]
#[pyo3(signature = (data, *, algorithm="phash", hash_size=16, max_pixels=DEFAULT_MAX_PIXELS as i128, max_alloc=DEFAULT_MAX_ALLOC as i128, dihedral=false))]
pub(crate) fn hash_image(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    algorithm: &str,
    #[pyo3(from_py_with = "wide_int")] hash_size: i128,
    #[pyo3(from_py_with = "wide_int")] max_pixels: i128,
    #[pyo3(from_py_with = "wide_int")] max_alloc: i128,
    dihedral: bool,
) -> PyResult<PHash> {
    let (spec, limits) = spec_and_limits(algorithm, hash_size, max_pixels, max_alloc)?;
    let buf = borrow_image(data).map_err(PyTypeError::new_err)?;
    let slice = unsafe { as_slice(&buf) };
    let result = py.allow_threads(|| hash_image_core(slice, &spec, &limits, dihedral));
    drop(buf);
    result.map(PHash::from_image).map_err(to_py_err)
}

#[pyfunction]
#[pyo3(signature = (blobs, *, algorithm="phash", hash_size=16, threads=None, max_pixels=DEFAULT_MAX_PIXELS as i128, max_alloc=DEFAULT_MAX_ALLOC as i128, dihedral=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn hash_images<'py>(
    py: Python<'py>,
    blobs: &Bound<'py, PyAny>,
    algorithm: &str,
    #[pyo3(from_py_with = "wide_int")] hash_size: i128,
    #[pyo3(from_py_with = "wide_int_or_none")] threads: Option<i128>,
    #[pyo3(from_py_with = "wide_int")] max_pixels: i128,
    #[pyo3(from_py_with = "wide_int")] max_alloc: i128,
    dihedral: bool,
) -> PyResult<Bound<'py, PyList>> {
    if blobs.is_instance_of::<PyString>() || is_bytes_like(blobs) {
        // One image where a sequence of images belongs: its bytes would each be an "image".
        return Err(PyTypeError::new_err(format!(
            "blobs must be a sequence of images, got one {} (pass [data] for a single image)",
            blobs.get_type().name()?
        )));
    }
    let (spec, limits) = spec_and_limits(algorithm, hash_size, max_pixels, max_alloc)?;
    let threads = threads_arg(threads)?;
    // Borrow every input's buffer (no copy). Inputs that are not bytes-like get their error now.
    let mut views: Vec<Result<Bytes, String>> = Vec::new();
    for item in blobs.try_iter()? {
        views.push(borrow_image(&item?));
    }
    let empty: &[u8] = &[];
    let slices: Vec<&[u8]> =
        views.iter().map(|v| v.as_ref().map(|b| unsafe { as_slice(b) }).unwrap_or(empty)).collect();
    let results = py.allow_threads(|| hash_batch(&slices, &spec, &limits, threads, dihedral)).map_err(to_py_err)?;
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
pub(crate) fn hash_bits(algorithm: &str, #[pyo3(from_py_with = "wide_int")] hash_size: i128) -> PyResult<u32> {
    let hash_size = int_arg("hash_size", hash_size, MIN_HASH_SIZE.into(), MAX_HASH_SIZE.into())?;
    let alg = Algorithm::parse(algorithm).map_err(to_py_err)?;
    HashSpec::new(alg, hash_size).map_err(to_py_err)?;
    Ok(bit_count(alg, hash_size))
}

/// Hex hashes of `bits` bits -> (packed bytes, one error message or None per value). A value
/// that is not a valid hash (None, not a str, wrong width, not hex) gets zero bytes and a reason.
#[pyfunction]
pub(crate) fn parse_hex_hashes<'py>(py: Python<'py>, values: &Bound<'py, PyAny>, bits: u32) -> PyResult<Bound<'py, PyTuple>> {
    check_bits(bits).map_err(to_py_err)?;
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
pub(crate) fn parse_hex_column<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    bits: u32,
    valid: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    check_bits(bits).map_err(to_py_err)?;
    let (obuf, dbuf) = (view(offsets)?, view(data)?);
    let vbuf = valid.map(view).transpose()?;
    let (odata, ddata) = unsafe { (as_slice(&obuf), as_slice(&dbuf)) };
    let vdata = vbuf.as_ref().map(|b| unsafe { as_slice(b) });
    let (packed, bad, reasons) = kernel(py, || {
        let offsets: Vec<i64> = u64s(odata, "offsets")?.into_iter().map(|o| o as i64).collect();
        let n = offsets.len().saturating_sub(1);
        if vdata.is_some_and(|v| v.len() != n) {
            return Err(Error::Config(format!("{} validity bytes for {n} values", vdata.map_or(0, |v| v.len()))));
        }
        let width = bits.div_ceil(8) as usize;
        let mut packed = Vec::with_capacity(n * width);
        let (mut bad, mut reasons) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (lo, hi) = (offsets[i], offsets[i + 1]);
            if lo < 0 || hi < lo || hi as usize > ddata.len() {
                return Err(Error::Config(format!("offsets {lo}..{hi} outside {} bytes of data", ddata.len())));
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
