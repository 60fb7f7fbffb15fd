"""Fixed images: hashes that are already kept before this run, from an earlier run's state
(``--state``) or a reference set (``--reference``). They always win, are never output, and are
never compared with each other; a new image within k of one is a duplicate that names it.

Their path through near-duplicate dedup, all in packed batches (``batches.Fixed``):

1. ``PackFixedDoFn``: per exact partition, by the hash's own bits (as new images).
2. ``CollapseFixedDoFn``: identical fixed hashes become one fixed image, labelled by the best
   (first source, then smallest label); ids with ``FIXED_BIT`` and the source set, assigned in
   key order, so they do not depend on the runner or the input order. The images join the band
   search (after the new images, ``near_search(fixed=...)``), the labels stay here.
3. The search emits, per new image, its best fixed neighbour (``Blocks``), keyed by the fixed
   image's partition; ``NameBlocksDoFn`` looks up the label there.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_phash._native import collapse_heads
from beam_phash.near.batches import (
    FIXED_BIT,
    PARTITION_SHIFT,
    SOURCE_SHIFT,
    U64,
    Blocks,
    Fixed,
    FixedClasses,
    Images,
    Named,
    concat,
    pack_labels,
    partition_of_ids,
    take_labels,
    u8,
    u32s,
)
from beam_phash.routing import bucket_of_rows

#: Sources of fixed images, in the order a duplicate names them when it matches several.
REFERENCE = 0
STATE = 1
SOURCES = {REFERENCE: "reference", STATE: "state"}
#: What ``matched`` says of a duplicate of an image kept in this run.
INPUT = "input"
FIXED_CLASSES = "fixed_classes"


def fixed_batch(keys: np.ndarray, source: int, labels) -> Fixed:
    labels = labels if isinstance(labels, pa.Array) else pa.array(labels, pa.large_string())
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    labels = labels.cast(pa.large_string()).fill_null("")
    return Fixed(np.ascontiguousarray(keys, dtype=np.uint8), np.full(len(keys), source, dtype=U64), labels)


class PackFixedDoFn(beam.DoFn):
    """Fixed batches -> (exact partition, the batch's rows of that partition)."""

    def __init__(self, partitions: int):
        self._partitions = partitions

    def process(self, batch: Fixed):
        if not len(batch.keys):
            return
        parts = bucket_of_rows(batch.keys, self._partitions)
        for p in np.unique(parts):
            yield int(p), batch.take(np.flatnonzero(parts == p))


class CollapseFixedDoFn(beam.DoFn):
    """One exact partition of fixed rows -> its distinct fixed images: ``Images`` (ids, hashes)
    for the band search, and on ``fixed_classes`` their (ids, source, label)."""

    def process(self, element: Tuple[int, Iterable[Fixed]]):
        p, batches = element
        rows = concat(Fixed, batches)
        offsets, blob = pack_labels(rows.labels)
        heads = u32s(collapse_heads(u8(rows.keys), rows.keys.shape[1], u8(rows.source), u8(offsets), blob))
        source = rows.source[heads]
        ids = (FIXED_BIT | (source << U64(SOURCE_SHIFT)) | (U64(p) << U64(PARTITION_SHIFT))
               | np.arange(len(heads), dtype=U64))
        yield beam.pvalue.TaggedOutput(FIXED_CLASSES, (p, FixedClasses(ids, source, take_labels(rows.labels, heads))))
        yield Images(ids, np.ascontiguousarray(rows.keys[heads]), None)


def blocks_by_partition(blocks: Blocks) -> Iterable[Tuple[int, Blocks]]:
    """Blocks keyed by the exact partition of their fixed image."""
    parts = partition_of_ids(blocks.fixed)
    for p in np.unique(parts):
        yield int(p), blocks.take(np.flatnonzero(parts == p))


class NameBlocksDoFn(beam.DoFn):
    """One exact partition of fixed images and the blocks naming them -> the blocks with the
    fixed image's source and label, keyed by the exact partition of the new image."""

    def process(self, element):
        _, joined = element
        blocks = list(joined["blocks"])
        if not blocks:
            return
        blocks = concat(Blocks, blocks)
        classes = concat(FixedClasses, joined[FIXED_CLASSES])
        order = np.argsort(classes.ids)
        rows = order[np.searchsorted(classes.ids[order], blocks.fixed)]
        named = Named(blocks.new, blocks.fixed, blocks.distance, classes.source[rows],
                      take_labels(classes.labels, rows))
        parts = partition_of_ids(named.new)
        for q in np.unique(parts):
            yield int(q), named.take(np.flatnonzero(parts == q))
