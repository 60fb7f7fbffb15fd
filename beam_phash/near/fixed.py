"""Fixed images: hashes that are already kept before this run, from an earlier run's state
(``--state``) or a reference set (``--reference``). They always win, are never output, and are
never compared with each other; a new image within k of one is a duplicate that names it.

They travel as packed batches (``batches.Fixed``: hashes, source, labels) straight to the band
search, without an exact collapse or ids of their own: a search gives its fixed images local
ids after its new images (``near_search(fixed=...)``), and reduces the pairs it finds to the
best fixed image per new image (``Named.best``: first source, nearest, smallest label), which
does not depend on how the fixed images were split or ordered. With one search group (the
default with fixed images, see ``NearDedup``) every fixed hash crosses the shuffle once.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_phash.near.batches import U64, Fixed, Named, partition_of_ids, take_labels
from beam_phash.routing import rows_by_bucket

#: Sources of fixed images, in the order a duplicate names them when it matches several.
REFERENCE = 0
STATE = 1
SOURCES = {REFERENCE: "reference", STATE: "state"}
#: What ``matched`` says of a duplicate of an image kept in this run.
INPUT = "input"


def fixed_batch(keys: np.ndarray, source: int, labels, flat=None) -> Fixed:
    """Fixed images from packed hashes and their labels; ``flat`` (bools) defaults to none flat."""
    labels = labels if isinstance(labels, (pa.Array, pa.ChunkedArray)) else pa.array(labels, pa.large_string())
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    labels = labels.cast(pa.large_string()).fill_null("")
    flat = np.zeros(len(keys), dtype=bool) if flat is None else np.asarray(flat, dtype=bool)
    return Fixed(np.ascontiguousarray(keys, dtype=np.uint8), np.full(len(keys), source, dtype=U64), labels, flat)


class PackFixedDoFn(beam.DoFn):
    """Fixed batches -> (exact partition, the batch's rows of that partition), by the hash's own
    bits as new images are partitioned (exact mode's reference join)."""

    def __init__(self, partitions: int):
        self._partitions = partitions

    def process(self, batch: Fixed):
        if not len(batch.keys):
            return
        for p, rows in rows_by_bucket(batch.keys, self._partitions):
            yield p, batch.take(rows)


def named_by_partition(new: np.ndarray, distance: np.ndarray, rows: np.ndarray,
                       fixed: Fixed) -> Iterable[Tuple[int, Named]]:
    """Pairs (new image id, fixed row, distance) -> the best fixed image per new image, with its
    source and label, keyed by the exact partition of the new image."""
    named = Named(new, distance, fixed.source[rows], take_labels(fixed.labels, rows)).best()
    parts = partition_of_ids(named.new)
    for p in np.unique(parts):
        yield int(p), named.take(np.flatnonzero(parts == p))
