"""Route hashes to buckets by the hash's own bits.

Never Python's ``hash()``: it is salted per process, so two Beam workers would send the same hash
to different buckets. Every 64-bit word of the hash is chained through a multiply-xorshift mix
(a plain XOR fold would cancel repeated words), because single bits of a perceptual hash are far
from uniform (pHash's DC bit, for one, is almost always set).
"""
from __future__ import annotations

from typing import Iterator, Sequence, Tuple

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def bucket_of(hashes: Sequence[bytes], num_buckets: int) -> np.ndarray:
    """Bucket index in [0, num_buckets) for each hash (all hashes of one length)."""
    if not hashes:
        return np.zeros(0, dtype=np.int64)
    width = len(hashes[0])
    rows = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), width)
    return bucket_of_rows(rows, num_buckets)


def bucket_of_rows(rows: np.ndarray, num_buckets: int) -> np.ndarray:
    """:func:`bucket_of` for packed hashes: a (n, width) uint8 array, one hash per row."""
    n, width = rows.shape
    padded = -(-width // 8) * 8
    if padded != width:
        rows = np.concatenate([rows, np.zeros((n, padded - width), dtype=np.uint8)], axis=1)
    words = np.ascontiguousarray(rows).view("<u8").reshape(n, padded // 8)
    mixed = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in words.T:
            mixed = (mixed ^ column) * _GOLDEN
            mixed ^= mixed >> np.uint64(29)
    return ((mixed >> np.uint64(32)) % np.uint64(num_buckets)).astype(np.int64)


def rows_by_bucket(rows: np.ndarray, num_buckets: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(bucket, indices of the rows routed there) for each bucket that gets any of ``rows``."""
    parts = bucket_of_rows(rows, num_buckets)
    for p in np.unique(parts):
        yield int(p), np.flatnonzero(parts == p)
