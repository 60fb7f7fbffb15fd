"""Keys that more than one input file holds, and the id each record is deduplicated under.

A dataset's keys are unique within its folder, not across folders: img2dataset numbers every
run's keys from ``000000000``, in its shards and in its Parquet files alike. So:

* within a folder, a key that several shards hold is one sample's, the first shard's by path. A
  pre-pass lists each shard's keys (its member names) and finds them
  (:class:`FindRepeatedKeys`), by a shuffle of keys, one list per file and bucket, never one
  element per key;
* across folders, keys are not compared. When the input's files lie in more than one folder, a
  record of any folder but the first by path is deduplicated under ``KEY (FILE)`` (:func:`dedup_id`):
  two runs' photos under one key are two records, a photo both runs fetched is one keeper, and
  nothing the size of the input is held anywhere. Such ids compare as text by their key first
  (" (" sorts before every character but a space and ``!"#$%&'``), and a key alone comes before
  the same key with a file: where near-duplicate mode keeps the smallest id, it keeps the
  smallest key, and of one key the first folder's, however the paths were spelt.
"""
from __future__ import annotations

import posixpath
import zlib
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam

from pipelines.input_paths import BadName, identity

#: The record field that holds its id for dedup (``ImagePhashDedup``'s ``id_field``) when the
#: input's files lie in several folders (:func:`dedup_id`). The outputs write it as their
#: ``dedup_id`` column, beside the id (or key) column, which holds the id as it is.
DEDUP_ID = "__dedup_id__"
#: Keys per bucket of the shuffle, about: few elements, small groups.
KEYS_PER_BUCKET = 50_000

Lister = Callable[[str], Iterable[str]]
Repeated = Dict[Tuple[str, str], str]


def folder_of(path: str) -> str:
    """The folder a file lies in, one name however it is spelt (``./a/x.tar`` is in ``a/``)."""
    return posixpath.dirname(identity(path))


def ranked(path: str) -> Tuple[str, str]:
    """Files rank by path, however each is spelt (``./a/y.tar`` after ``a/x.tar``)."""
    return identity(path), path


def first_folder(paths: Iterable[str]) -> Optional[str]:
    """The folder of the first of ``paths`` by path, when they lie in more than one folder (their
    records are then deduplicated under :func:`dedup_id`), else None."""
    paths = list(paths)
    if len({folder_of(p) for p in paths}) < 2:
        return None
    return folder_of(min(paths, key=ranked))


def id_file(path: str, first: str) -> Optional[str]:
    """What the ids of file ``path``'s records name beside their keys, the input's first folder
    being ``first``: nothing in that folder, else the file's absolute path (a URL as it is), one
    name however the path was spelt. Once per file: each record's id is then :func:`dedup_id`."""
    return None if folder_of(path) == first else identity(path)


def dedup_id(key: str, file: Optional[str]) -> str:
    """The id a record whose key (or id) is ``key`` is deduplicated under: its key, or with its
    file's :func:`id_file`, ``KEY (FILE)``."""
    return key if file is None else f"{key} ({file})"


def first_holders(element) -> Iterable[Tuple[Tuple[str, str], str]]:
    """``((file, key), first file)`` for every key of ``(bucket, [(file, keys)])`` that more than
    one file of a folder holds: each of them but the first by path, mapped to that first one."""
    _, lists = element
    holders: Dict[Tuple[str, str], List[str]] = {}
    for path, keys in lists:
        folder = folder_of(path)
        for key in keys:
            holders.setdefault((folder, key), []).append(path)
    for (_, key), paths in holders.items():
        if len(paths) > 1:
            paths = sorted(set(paths), key=ranked)
            for path in paths[1:]:
                yield (path, key), paths[0]


def keys_by_bucket(path: str, buckets: int, lister: Lister) -> Iterator[Tuple[int, Tuple[str, List[str]]]]:
    """A file's keys, as one ``(bucket, (file, keys))`` element per bucket (``zlib.crc32`` of the
    key, the same in every process): the shuffle moves lists, not one element per key."""
    by_bucket: Dict[int, List[str]] = {}
    if isinstance(path, BadName):
        return  # its read says why it is not read
    for key in lister(path):
        by_bucket.setdefault(zlib.crc32(key.encode("utf-8", "surrogateescape")) % buckets, []).append(key)
    for bucket, keys in by_bucket.items():
        yield bucket, (path, keys)


def in_process(paths: List[str], lister: Lister) -> Repeated:
    """What :class:`FindRepeatedKeys` finds, in this process."""
    return dict(first_holders((0, [(p, list(lister(p))) for p in paths])))


class FindRepeatedKeys(beam.PTransform):
    """File paths -> ``((file, key), first file)`` of :func:`first_holders`, the keys listed by
    ``lister``. ``expected_keys`` sets the number of buckets shuffled."""

    def __init__(self, lister: Lister, expected_keys: int = 0):
        super().__init__()
        self._lister = lister
        self._buckets = max(1, min(1 << 16, expected_keys // KEYS_PER_BUCKET))

    def expand(self, paths):
        return (paths
                | "ListKeys" >> beam.FlatMap(keys_by_bucket, self._buckets, self._lister)
                | "GroupBuckets" >> beam.GroupByKey()
                | "FirstHolders" >> beam.FlatMap(first_holders))
