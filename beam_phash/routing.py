"""Route hashes to buckets by the hash's own bits.

Never Python's ``hash()``: it is salted per process, so two Beam workers would send the same hash
to different buckets. Every 64-bit word of the hash is chained through a multiply-xorshift mix
(a plain XOR fold would cancel repeated words), because single bits of a perceptual hash are far
from uniform (pHash's DC bit, for one, is almost always set).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def bucket_of(hashes: Sequence[bytes], num_buckets: int) -> np.ndarray:
    """Bucket index in [0, num_buckets) for each hash (all hashes of one length)."""
    if not hashes:
        return np.zeros(0, dtype=np.int64)
    width = len(hashes[0])
    padded = -(-width // 8) * 8
    packed = np.frombuffer(b"".join(h.ljust(padded, b"\0") for h in hashes), dtype="<u8")
    words = packed.reshape(len(hashes), padded // 8)
    mixed = np.zeros(len(hashes), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in words.T:
            mixed = (mixed ^ column) * _GOLDEN
            mixed ^= mixed >> np.uint64(29)
    return ((mixed >> np.uint64(32)) % np.uint64(num_buckets)).astype(np.int64)
