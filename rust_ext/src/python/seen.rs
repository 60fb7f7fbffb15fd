//! `SeenSet`: the compact seen-set of exact dedup (`crate::exact::seen`).
use super::*;

/// A compact seen-set of fixed-width hashes with their first owner (see rust_ext/src/exact/seen.rs).
#[pyclass(module = "beam_phash", name = "SeenSet")]
pub(crate) struct SeenSet {
    inner: CoreSeenSet,
}

#[pymethods]
impl SeenSet {
    #[new]
    #[pyo3(signature = (hash_bytes=32, *, keep_labels=false))]
    fn new(#[pyo3(from_py_with = "wide_int")] hash_bytes: i128, keep_labels: bool) -> PyResult<Self> {
        Ok(SeenSet { inner: CoreSeenSet::new(int_arg("hash_bytes", hash_bytes, 1, 1024)?, keep_labels) })
    }

    /// n packed hashes (n * hash_bytes bytes) and n uint64 owners -> n booleans: True where the
    /// owner is the hash's first claimant (a new hash, or the same owner again).
    fn check_and_insert(&mut self, py: Python<'_>, hashes: &Bound<'_, PyAny>, owners: &Bound<'_, PyAny>) -> PyResult<Vec<bool>> {
        let owners = owner_ids(owners)?;
        let buf = borrow_bytes(hashes).map_err(PyTypeError::new_err)?;
        let packed = unsafe { as_slice(&buf) };
        let inner = &mut self.inner;
        py.allow_threads(|| inner.check_and_insert(packed, &owners)).map_err(to_py_err)
    }

    /// Like check_and_insert, storing `labels` (the records' ids) with new hashes. Returns, per
    /// hash, None where the caller is the first claimant, else the first claimant's label.
    fn claim(&mut self, hashes: &Bound<'_, PyAny>, owners: &Bound<'_, PyAny>, labels: Vec<String>) -> PyResult<Vec<Option<String>>> {
        let keepers = self.keepers(hashes, owners, &labels)?;
        Ok(self.labels_of(&keepers))
    }

    /// Like claim, with the keeper's entry number (its place in insertion order) per hash, as
    /// little-endian int64 bytes: -1 where the caller is the first claimant.
    fn claim_entries<'py>(&mut self, py: Python<'py>, hashes: &Bound<'_, PyAny>, owners: &Bound<'_, PyAny>,
                          labels: Vec<String>) -> PyResult<Bound<'py, PyTuple>> {
        let keepers = self.keepers(hashes, owners, &labels)?;
        let answers = self.labels_of(&keepers);
        let entries: Vec<u8> = keepers.iter().flat_map(|k| k.map_or(-1i64, |e| e as i64).to_le_bytes()).collect();
        let items: [Bound<'py, PyAny>; 2] = [answers.into_pyobject(py)?.into_any(), PyBytes::new(py, &entries).into_any()];
        PyTuple::new(py, items)
    }

    /// The stored owner of each packed hash, None where it is not held.
    fn owners_of(&self, hashes: &Bound<'_, PyAny>) -> PyResult<Vec<Option<u64>>> {
        let buf = borrow_bytes(hashes).map_err(PyTypeError::new_err)?;
        self.inner.owners_of(unsafe { as_slice(&buf) }).map_err(to_py_err)
    }

    /// Every entry, in insertion order, as ``(hashes, owners, labels)``: the packed hashes
    /// (len * hash_bytes bytes), the owners as packed little-endian uint64, and the labels ("" for
    /// each entry of a set without labels). Feeding them to :meth:`claim`, the owners as
    /// ``numpy.frombuffer(owners, numpy.uint64)``, rebuilds the set.
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

/// The bucket in [0, buckets) of each packed hash (`rows`: a buffer of hashes `width` bytes
/// each), as uint32 bytes: `crate::exact::mix::route`, the routing of `beam_phash.routing`.
#[pyfunction]
pub(crate) fn route_rows<'py>(py: Python<'py>, rows: &Bound<'py, PyAny>, width: usize, buckets: u32) -> PyResult<Bound<'py, PyBytes>> {
    if width == 0 || buckets == 0 {
        return Err(PyValueError::new_err("width and buckets must be at least 1"));
    }
    let buf = view(rows)?;
    let data = unsafe { as_slice(&buf) };
    if data.len() % width != 0 {
        return Err(PyValueError::new_err(format!("rows hold {} bytes, not a multiple of width {width}", data.len())));
    }
    let routed = kernel(py, || Ok(route(data, width, buckets)))?;
    Ok(PyBytes::new(py, &u32_bytes(&routed)))
}

impl SeenSet {
    /// `claim_labelled` on Python arguments: per hash, None where the caller is the first
    /// claimant, else the keeper's entry number.
    fn keepers(&mut self, hashes: &Bound<'_, PyAny>, owners: &Bound<'_, PyAny>, labels: &[String]) -> PyResult<Vec<Option<usize>>> {
        let owners = owner_ids(owners)?;
        let buf = borrow_bytes(hashes).map_err(PyTypeError::new_err)?;
        self.inner.claim_labelled(unsafe { as_slice(&buf) }, &owners, labels).map_err(to_py_err)
    }

    /// The keepers' labels (None where the caller is the first claimant).
    fn labels_of(&self, keepers: &[Option<usize>]) -> Vec<Option<String>> {
        keepers.iter().map(|k| k.map(|e| String::from_utf8_lossy(self.inner.label_at(e)).into_owned())).collect()
    }
}
