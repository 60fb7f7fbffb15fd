"""Route hashes to buckets by the hash's own bits, with the one mixer of the native core
(``rust_ext/src/exact/mix.rs``, also the seen-set's, with another seed).

Never Python's ``hash()``: it is salted per process, so two Beam workers would send the same hash
to different buckets.
"""
from __future__ import annotations

from typing import Iterator, Sequence, Tuple

import numpy as np

from beam_phash._native import route_rows


def bucket_of(hashes: Sequence[bytes], num_buckets: int) -> np.ndarray:
    """Bucket index in [0, num_buckets) for each hash (all hashes of one length)."""
    if not hashes:
        return np.zeros(0, dtype=np.int64)
    width = len(hashes[0])
    rows = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), width)
    return bucket_of_rows(rows, num_buckets)


def bucket_of_rows(rows: np.ndarray, num_buckets: int) -> np.ndarray:
    """:func:`bucket_of` for packed hashes: a (n, width) uint8 array, one hash per row."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    return np.frombuffer(route_rows(rows.reshape(-1), rows.shape[1], num_buckets), dtype=np.uint32).astype(np.int64)


def rows_by_bucket(rows: np.ndarray, num_buckets: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(bucket, indices of the rows routed there) for each bucket that gets any of ``rows``."""
    parts = bucket_of_rows(rows, num_buckets)
    for p in np.unique(parts):
        yield int(p), np.flatnonzero(parts == p)
