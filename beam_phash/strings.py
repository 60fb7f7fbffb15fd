"""Strings packed for the native kernels: (uint64 offsets, UTF-8 bytes), string i being
``blob[offsets[i]:offsets[i + 1]]``. Record ids (owners) and labels cross into Rust this way, never
as one Python object per string; the state files' digests hash the same packing.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import pyarrow as pa


def pack_owners(owners: Sequence[str]) -> Tuple[np.ndarray, bytes]:
    """(uint64 offsets, UTF-8 blob) of a list of ``str``."""
    encoded = [o.encode("utf-8", "surrogatepass") for o in owners]
    offsets = np.zeros(len(encoded) + 1, dtype=np.uint64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return offsets, b"".join(encoded)


def pack_labels(labels: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """(uint64 offsets, UTF-8 blob) of an Arrow string array without nulls: its own buffers,
    not copied string by string."""
    labels = labels.cast(pa.large_string())
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    _, offsets, data = labels.buffers()
    n = len(labels)
    offsets = np.frombuffer(offsets, dtype=np.int64)[labels.offset:labels.offset + n + 1]
    blob = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return (offsets - offsets[0]).astype(np.uint64), blob[offsets[0]:offsets[-1]]
