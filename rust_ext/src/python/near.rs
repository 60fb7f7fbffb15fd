//! The near-duplicate kernels (`crate::near`): buffers in, bytes out (numpy.frombuffer views
//! them without a copy); the GIL is released while a kernel runs.
use super::*;

pub(crate) fn layout_from(bits: u32, max_distance: u32, bands: Vec<(u32, u32, u32)>) -> PyResult<Layout> {
    let bands = bands.into_iter().map(|(start, width, radius)| Band { start, width, radius }).collect();
    Layout::new(bits, max_distance, bands).map_err(to_py_err)
}

/// Run `f` on the images given as buffers (hashes, uint64 ids, optional variants), as a kernel.
pub(crate) fn with_images<T: Send>(
    py: Python<'_>,
    hashes: &Bound<'_, PyAny>,
    ids: &Bound<'_, PyAny>,
    variants: Option<&Bound<'_, PyAny>>,
    hash_bytes: usize,
    fixed: usize,
    f: impl FnOnce(&Images) -> Result<T, Error> + Send,
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
pub(crate) fn near_layout(bits: u32, max_distance: u32, n: Option<u64>) -> PyResult<Vec<(u32, u32, u32)>> {
    let layout = Layout::choose(bits, max_distance, n).map_err(to_py_err)?;
    Ok(layout.bands.iter().map(|b| (b.start, b.width, b.radius)).collect())
}

/// Bit fields of each packed hash (row width `hash_bytes`, `bits` real bits), read as the
/// search's bands read them (in the order of `order`): for each hash, each (start, width) of
/// `fields` as uint64 bytes, row-major (n, len(fields)).
#[pyfunction]
#[pyo3(signature = (hashes, *, hash_bytes, bits, fields))]
pub(crate) fn near_fields<'py>(py: Python<'py>, hashes: &Bound<'py, PyAny>, hash_bytes: usize, bits: u32, fields: Vec<(u32, u32)>) -> PyResult<Bound<'py, PyBytes>> {
    check_bits(bits).map_err(to_py_err)?;
    if bits as usize > hash_bytes.saturating_mul(8) {
        return Err(PyValueError::new_err(format!("{bits}-bit hashes of {hash_bytes} bytes")));
    }
    if let Some(&(start, width)) = fields.iter().find(|&&(s, w)| w == 0 || w > 64 || u64::from(s) + u64::from(w) > u64::from(bits)) {
        return Err(PyValueError::new_err(format!("bits {start}..{} of {bits}-bit hashes", u64::from(start) + u64::from(width))));
    }
    let buf = view(hashes)?;
    let data = unsafe { as_slice(&buf) };
    let out = kernel(py, || {
        let packed = Packed::new(data, hash_bytes)?;
        let positions = order(bits);
        let fields: Vec<Field> = fields.iter().map(|&(start, width)| Field::new(&positions, start, width)).collect();
        let values: Vec<u64> = (0..packed.len()).flat_map(|i| fields.iter().map(move |f| f.get(packed.row(i)))).collect();
        Ok(u64_bytes(&values))
    })?;
    Ok(PyBytes::new(py, &out))
}

/// The pairs within `max_distance` that qualify first on one band (or one sub-block partition of
/// it): (a ids, b ids, distances) as uint64, uint64, uint32 bytes, plus (candidates, big runs,
/// pairs of new images). With `forest`, of the pairs between new images only a spanning forest
/// is returned (memory linear in the images; for a list of bands, each band's forest in turn,
/// which together connect the same components); `pairs` still counts them all, each once.
/// `band` may be a list of whole bands, searched in parallel on `threads` threads (None: all
/// cores). The last `fixed` images are already kept: only pairs with a new image are searched,
/// and `variants` cover the new images only.
#[pyfunction]
#[pyo3(signature = (hashes, ids, *, hash_bytes, bits, max_distance, layout, band, variants=None, sub=None, prefix_bits=0, prefix=0, fixed=0, threads=None, forest=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn near_search<'py>(
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
    #[pyo3(from_py_with = "wide_int_or_none")] threads: Option<i128>,
    forest: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let threads = threads_arg(threads)?;
    let layout = layout_from(bits, max_distance, layout)?;
    let output = if forest { Output::Forest } else { Output::Pairs };
    let (edges, stats) = if let Ok(single) = band.extract::<usize>() {
        let part = Part { band: single, sub: sub.map(|index| Sub { index, prefix_bits, prefix }) };
        with_images(py, hashes, ids, variants, hash_bytes, fixed, |images| search_with(images, &layout, part, output))?
    } else {
        let bands: Vec<usize> = band.extract()?;
        if sub.is_some() {
            return Err(PyValueError::new_err("a sub-block partition is of one band, not a list"));
        }
        if let Some(twice) = bands.iter().enumerate().find_map(|(i, b)| bands[..i].contains(b).then_some(b)) {
            return Err(PyValueError::new_err(format!("band {twice} is listed twice")));
        }
        with_images(py, hashes, ids, variants, hash_bytes, fixed, |images| search_bands(images, &layout, &bands, output, threads))?
    };
    let items: [Bound<'py, PyAny>; 6] = [
        PyBytes::new(py, &u64_bytes(&edges.a)).into_any(),
        PyBytes::new(py, &u64_bytes(&edges.b)).into_any(),
        PyBytes::new(py, &u32_bytes(&edges.distance)).into_any(),
        stats.candidates.into_pyobject(py)?.into_any(),
        stats.big_runs.into_pyobject(py)?.into_any(),
        stats.pairs.into_pyobject(py)?.into_any(),
    ];
    PyTuple::new(py, items)
}

/// Every pair within `max_distance` by brute force (the oracle): (a, b, distances) bytes; the
/// last `fixed` images pair only with the others.
#[pyfunction]
#[pyo3(signature = (hashes, ids, *, hash_bytes, max_distance, variants=None, threads=None, fixed=0))]
pub(crate) fn near_pairs_brute<'py>(
    py: Python<'py>,
    hashes: &Bound<'py, PyAny>,
    ids: &Bound<'py, PyAny>,
    hash_bytes: usize,
    max_distance: u32,
    variants: Option<&Bound<'py, PyAny>>,
    #[pyo3(from_py_with = "wide_int_or_none")] threads: Option<i128>,
    fixed: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let threads = threads_arg(threads)?;
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
pub(crate) fn spanning_forest<'py>(py: Python<'py>, a: &Bound<'py, PyAny>, b: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let (abuf, bbuf) = (view(a)?, view(b)?);
    let (ad, bd) = unsafe { (as_slice(&abuf), as_slice(&bbuf)) };
    let keep = kernel(py, || {
        let keep = forest_core(&u64s(ad, "a")?, &u64s(bd, "b")?)?;
        Ok(u64_bytes(&keep.iter().map(|&e| e as u64).collect::<Vec<_>>()))
    })?;
    Ok(PyBytes::new(py, &keep))
}

/// Keep-by-rank over the nodes of whole components (each node's component as uint64, primary
/// rank, owners packed as offsets + UTF-8 blob, image keys: the hash, with `dihedral` its 8
/// variants, then a flat byte): (dropped node index, kept neighbour index, distance), each
/// uint32 bytes. Nodes are compared with the kept nodes of their component by popcount; no edges.
#[pyfunction]
#[pyo3(signature = (components, primary, owner_offsets, owner_blob, keys, *, hash_bytes, dihedral, max_distance, threads=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn near_resolve<'py>(
    py: Python<'py>,
    components: &Bound<'py, PyAny>,
    primary: &Bound<'py, PyAny>,
    owner_offsets: &Bound<'py, PyAny>,
    owner_blob: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyAny>,
    hash_bytes: usize,
    dihedral: bool,
    max_distance: u32,
    #[pyo3(from_py_with = "wide_int_or_none")] threads: Option<i128>,
) -> PyResult<Bound<'py, PyTuple>> {
    let threads = threads_arg(threads)?;
    let bufs = [view(components)?, view(primary)?, view(owner_offsets)?, view(owner_blob)?, view(keys)?];
    let s: Vec<&[u8]> = bufs.iter().map(|b| unsafe { as_slice(b) }).collect();
    let layout = resolve::KeyLayout { hash_bytes, dihedral };
    let dropped = kernel(py, || {
        if hash_bytes == 0 || hash_bytes > MAX_HASH_BYTES {
            return Err(Error::Config(format!("hash_bytes must be between 1 and {MAX_HASH_BYTES}, got {hash_bytes}")));
        }
        let offsets = u64s(s[2], "owner_offsets")?;
        let owners = Owners::new(&offsets, s[3])?;
        let keys = Packed::new(s[4], layout.key_bytes())?;
        resolve::resolve(&u64s(s[0], "components")?, &u64s(s[1], "primary")?, &owners, &keys, layout, max_distance, threads)
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
pub(crate) fn collapse_heads<'py>(
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

/// The one global union-find step over the forests' edges, in compact form (12 bytes per id):
/// `add_ids` with every edge's ends, then `union` with every edge, then `components`.
#[pyclass(module = "beam_phash", name = "Components")]
pub(crate) struct Components {
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

    /// (ids, components) as uint64 bytes: every id given to `add_ids`, ascending, and the
    /// smallest id of its component (itself, for an id no edge reached).
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
