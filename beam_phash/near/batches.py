"""Packed values that cross the near-duplicate shuffles: numpy arrays, thousands per element.

Never one Python object per hash: an element holds a batch of images (``Images``), of ranked
records (``Ranked``), of edges (``Edges``) or of component assignments (``Assigned``). Owners
(record ids) travel as a list of ``str`` per batch and are packed to UTF-8 for the kernels.
"""
from __future__ import annotations

from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

U64 = np.uint64
#: A class id is (exact partition << PARTITION_SHIFT) | index in that partition.
PARTITION_SHIFT = 40


def u8(a: np.ndarray) -> np.ndarray:
    """A contiguous uint8 view (what the kernels take)."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


def u64s(buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype=U64)


def u32s(buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint32)


def pack_owners(owners: Sequence[str]) -> Tuple[np.ndarray, bytes]:
    """(uint64 offsets, UTF-8 blob) of the owners, for the kernels."""
    encoded = [o.encode("utf-8", "surrogatepass") for o in owners]
    offsets = np.zeros(len(encoded) + 1, dtype=U64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return offsets, b"".join(encoded)


def concat(cls, parts: Iterable):
    """One ``cls`` batch from several: array fields concatenated, list fields joined, fields
    that are None in every part stay None."""
    parts = list(parts)
    fields = []
    for name in cls._fields:
        values = [getattr(p, name) for p in parts]
        if values[0] is None:
            fields.append(None)
        elif isinstance(values[0], list):
            fields.append([x for v in values for x in v])
        else:
            fields.append(np.concatenate(values))
    return cls(*fields)


def partition_of_ids(ids: np.ndarray) -> np.ndarray:
    return (ids >> U64(PARTITION_SHIFT)).astype(np.int64)


class Ranked(NamedTuple):
    """Records with their key (hash, then the 8 variant hashes with dihedral), rank and owner."""

    keys: np.ndarray  # (n, key_bytes) uint8
    primary: np.ndarray  # (n,) uint64
    owners: List[str]



class Images(NamedTuple):
    """Distinct images for the band search: ids, hashes and (dihedral) variants."""

    ids: np.ndarray  # (n,) uint64
    hashes: np.ndarray  # (n, hash_bytes) uint8
    variants: Optional[np.ndarray]  # (n, 8, hash_bytes) uint8 or None

    def take(self, mask: np.ndarray) -> "Images":
        return Images(self.ids[mask], self.hashes[mask], None if self.variants is None else self.variants[mask])


class Classes(NamedTuple):
    """The distinct images of one exact partition with their best rank: ids, keys, primary, owner."""

    ids: np.ndarray
    keys: np.ndarray
    primary: np.ndarray
    owners: List[str]

    def take(self, index: np.ndarray) -> "Classes":
        return Classes(self.ids[index], self.keys[index], self.primary[index], [self.owners[i] for i in index])


class Edges(NamedTuple):
    """Pairs of image ids within k, with their distance."""

    a: np.ndarray  # uint64
    b: np.ndarray  # uint64
    distance: np.ndarray  # uint32

    def take(self, mask) -> "Edges":
        return Edges(self.a[mask], self.b[mask], self.distance[mask])

    @staticmethod
    def empty() -> "Edges":
        return Edges(np.zeros(0, U64), np.zeros(0, U64), np.zeros(0, np.uint32))


class Assigned(NamedTuple):
    """Image ids (ascending) and their component: the smallest id in it."""

    ids: np.ndarray
    components: np.ndarray
