"""Packed values that cross the near-duplicate shuffles: numpy arrays, thousands per element.

Never one Python object per hash: an element holds a batch of images (``Images``), of ranked
records (``Ranked``), of edges (``Edges``) or of component assignments (``Assigned``). Owners
(record ids) travel as a list of ``str`` per batch and are packed to UTF-8 for the kernels
(``beam_phash.strings``).
"""
from __future__ import annotations

from typing import Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import pyarrow as pa

U64 = np.uint64
#: A class id is (exact partition << PARTITION_SHIFT) | index in that partition. In a band
#: search, a fixed image (see ``fixed``) is FIXED_BIT | its index among that search's fixed images.
PARTITION_SHIFT = 40
FIXED_BIT = U64(1 << 63)


def u8(a: np.ndarray) -> np.ndarray:
    """A contiguous uint8 view (what the kernels take)."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


def u64s(buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype=U64)


def u32s(buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint32)


def concat(cls, parts: Iterable):
    """One ``cls`` batch from several: array fields concatenated, list fields joined, Arrow
    arrays concatenated, fields that are None in every part stay None."""
    parts = list(parts)
    fields = []
    for name in cls._fields:
        values = [getattr(p, name) for p in parts]
        if values[0] is None:
            fields.append(None)
        elif isinstance(values[0], list):
            fields.append([x for v in values for x in v])
        elif isinstance(values[0], pa.Array):
            fields.append(pa.concat_arrays([v.cast(pa.large_string()) for v in values]))
        else:
            fields.append(np.concatenate(values))
    return cls(*fields)


def partition_of_ids(ids: np.ndarray) -> np.ndarray:
    return (ids >> U64(PARTITION_SHIFT)).astype(np.int64)


def is_fixed(ids: np.ndarray) -> np.ndarray:
    return (ids & FIXED_BIT) != 0


def take_labels(labels: pa.Array, index) -> pa.Array:
    return labels.take(pa.array(np.asarray(index, dtype=np.int64)))


class Ranked(NamedTuple):
    """Records with their key (hash, then the 8 variant hashes with dihedral, then one byte: 1
    for a flat image), rank, owner, and whether the image is flat. A flat image and another with
    the same hashes are two keys: they meet in the band search's first band, at distance 0."""

    keys: np.ndarray  # (n, key_bytes) uint8
    primary: np.ndarray  # (n,) uint64
    owners: List[str]
    flat: np.ndarray  # (n,) bool



class Images(NamedTuple):
    """Distinct images for the band search: ids, hashes and (dihedral) variants."""

    ids: np.ndarray  # (n,) uint64
    hashes: np.ndarray  # (n, hash_bytes) uint8
    variants: Optional[np.ndarray]  # (n, 8, hash_bytes) uint8 or None

    def take(self, mask: np.ndarray) -> "Images":
        return Images(self.ids[mask], self.hashes[mask], None if self.variants is None else self.variants[mask])


class Flat(NamedTuple):
    """Flat images (quality under FLAT_QUALITY): kept out of the band search at k, they meet the
    other images and the fixed ones at distance 0 only (an identical hash, or one of their
    dihedral variants)."""

    images: Images

    def take(self, mask: np.ndarray) -> "Flat":
        return Flat(self.images.take(mask))


class Classes(NamedTuple):
    """The distinct images of one exact partition with their best rank: ids, keys, primary, owner."""

    ids: np.ndarray
    keys: np.ndarray
    primary: np.ndarray
    owners: List[str]

    def take(self, index: np.ndarray) -> "Classes":
        return Classes(self.ids[index], self.keys[index], self.primary[index], [self.owners[i] for i in index])


class Members(NamedTuple):
    """Images of whole components (``Classes``), each with its component: the smallest id in it."""

    nodes: Classes
    components: np.ndarray  # (n,) uint64


class Edges(NamedTuple):
    """Pairs of image ids within k, with their distance."""

    a: np.ndarray  # uint64
    b: np.ndarray  # uint64
    distance: np.ndarray  # uint32

    def take(self, mask) -> "Edges":
        return Edges(self.a[mask], self.b[mask], self.distance[mask])

    def split_fixed(self) -> Tuple["Edges", "Edges"]:
        """(edges between new images, edges from a new image ``a`` to a fixed image ``b``)."""
        mixed = is_fixed(self.b)
        return self.take(~mixed), self.take(mixed)

    @staticmethod
    def empty() -> "Edges":
        return Edges(np.zeros(0, U64), np.zeros(0, U64), np.zeros(0, np.uint32))


class Assigned(NamedTuple):
    """Image ids (ascending) and their component: the smallest id in it."""

    ids: np.ndarray
    components: np.ndarray


class Fixed(NamedTuple):
    """Images that are already kept (an earlier run's, or a reference set): their hashes, source
    (``fixed.SOURCES``), labels (the ids that duplicates name) as an Arrow string array, and
    whether each is flat (met at distance 0 only; False where unknown: hashes without images)."""

    keys: np.ndarray  # (n, hash_bytes) uint8
    source: np.ndarray  # (n,) uint64
    labels: pa.Array
    flat: np.ndarray  # (n,) bool

    def take(self, index) -> "Fixed":
        return Fixed(self.keys[index], self.source[index], take_labels(self.labels, index), self.flat[index])


class Named(NamedTuple):
    """New images within k of a fixed one: the new id, the distance, the fixed image's source
    and label (what the new image's records name)."""

    new: np.ndarray  # uint64
    distance: np.ndarray  # uint32
    source: np.ndarray  # uint64
    labels: pa.Array

    def take(self, index) -> "Named":
        return Named(self.new[index], self.distance[index], self.source[index], take_labels(self.labels, index))

    def best(self) -> "Named":
        """One row per new image: the first source (a reference before an earlier run), then
        the nearest, then the smallest label: the same whatever the runner and the order."""
        if not len(self.new):
            return self
        import pyarrow.compute as pc

        table = pa.table({"new": self.new, "source": self.source, "distance": self.distance, "label": self.labels})
        order = pc.sort_indices(table, sort_keys=[("new", "ascending"), ("source", "ascending"),
                                                  ("distance", "ascending"), ("label", "ascending")]).to_numpy()
        new = self.new[order]
        return self.take(order[np.r_[True, new[1:] != new[:-1]]])
