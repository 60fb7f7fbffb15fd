"""``--write-shards DIR``: the kept samples as new WebDataset shards ``DIR/00000.tar`` ...

Every member is written back under its original name (``KEY.SUFFIX``) with its original bytes,
but when the input's shards lie in several folders (two datasets, numbered alike, see
:mod:`pipelines.repeated_keys`): a sample of any folder but the first is written as ``KEY_TAG``
(:func:`written_key`), so that no two samples of ``DIR`` share a key.
Writes are safe under bundle retries, the way Beam's file sinks are:

1. ``WritePartsDoFn`` writes each bundle's samples into temporary tars
   ``DIR/.tmp-<run>/<uuid>.tar``, starting a new one before a sample would take one past the
   target size (a sample larger than the target is a part alone), and
   emits a description of each part (path, bytes, samples, first key, where its members end)
   only from ``finish_bundle``, once the parts are closed. A bundle that fails leaves parts
   nobody reports; its retry writes parts with new names.
2. ``FinalizeShardsDoFn`` gets the list of every reported part in one element (after a
   ``GroupByKey``), sorts it by first key, and packs consecutive parts into shards of at most
   the target size: a part that is a shard alone is renamed to ``{:05d}.tar``; smaller parts are
   concatenated (their members, then one end-of-archive marker). Then the temporary directory,
   with any part of a failed attempt, is deleted. Names are dense: ``00000.tar`` to ``N-1``.
   The finalize step is idempotent: a shard already in place whose parts are (partly) gone is
   skipped; one whose parts are all there is made again, identically.

``DIR/kept_keys/*.parquet`` (columns ``key`` and ``shard``, as read) lists every kept sample, for users who filter
shards themselves (``webdataset``'s ``.select``); it is written by ``parquet_write``.
"""
from __future__ import annotations

import hashlib
import io
import posixpath
import re
import tarfile
import time
import uuid
from typing import Iterable, List, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.parquet_write import WriteParquet
from pipelines.temp_parts import ensure_dir, global_output, remove_tree, tmp_dir
from pipelines.repeated_keys import DEDUP_ID, folder_of
from pipelines.webdataset_read import IMAGE, IMAGE_MEMBER, KEY, MEMBER_BYTES, MEMBERS, SHARD, member_name, stored_as

DEFAULT_SHARD_MB = 256.0
KEPT_KEYS = "kept_keys"
END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)
COPY_CHUNK = 8 << 20


class Part(NamedTuple):
    path: str
    first_key: str
    samples: int
    members_end: int  # bytes of member data; the end-of-archive marker follows


def shard_name(out_dir: str, index: int) -> str:
    return FileSystems.join(out_dir, f"{index:05d}.tar")


#: The names this writer gives shards (five digits or more: 100000.tar follows 99999.tar), and
#: the names of a shard while its parts are concatenated (renamed once complete).
SHARD_NAME = re.compile(r"[0-9]{5,}\.tar")
PARTIAL_SUFFIX = ".partial"
PARTIAL_NAME = re.compile(SHARD_NAME.pattern + re.escape(PARTIAL_SUFFIX))


def written_shards(out_dir: str, partial: bool = False) -> list:
    """The metadata of the shards (``partial``: the unfinished shards) in ``out_dir``."""
    name = PARTIAL_NAME if partial else SHARD_NAME
    pattern = FileSystems.join(out_dir, "*.tar" + (PARTIAL_SUFFIX if partial else ""))
    return [m for m in FileSystems.match([pattern])[0].metadata_list
            if name.fullmatch(posixpath.basename(m.path.rstrip("/")))]


def tar_bytes(members: List[tuple]) -> int:
    """What ``members`` take in a tar: a header and the data padded to blocks, each (a PAX header
    for a long name adds a little)."""
    block = tarfile.BLOCKSIZE
    return sum(block + -(-len(data) // block) * block for _, data in members)


def written_key(record: dict) -> str:
    """The key a sample is written under: its own, or for a sample of any folder but the input's
    first (its ``DEDUP_ID`` is then not its key), ``KEY_TAG``, ``TAG`` the first 8 hex digits of
    the SHA-256 of its shard's folder: the same in every retry and on every worker."""
    key = record[KEY]
    if record.get(DEDUP_ID, key) == key:
        return key
    return f"{key}_{hashlib.sha256(folder_of(record[SHARD]).encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def sample_members(record: dict, key: str) -> List[tuple]:
    """``(name, bytes)`` of a sample record's members, in the order they had in the input, named
    for ``key`` (its :func:`written_key`)."""
    image_member = record.get(IMAGE_MEMBER)
    others = record.get(MEMBER_BYTES) or {}
    out, seen = [], {}
    for suffix in record.get(MEMBERS) or []:
        seen[suffix] = seen.get(suffix, 0) + 1
        stored = stored_as(suffix, seen[suffix])
        data = record[IMAGE] if stored == image_member else others[stored]
        if isinstance(data, memoryview):
            data = data.tobytes()
        out.append((member_name(key, suffix), bytes(data)))
    return out


class _PartWriter:
    def __init__(self, directory: str, mtime: int):
        self.path = FileSystems.join(directory, f"{uuid.uuid4().hex}.tar")
        self._file = FileSystems.create(self.path, mime_type="application/x-tar",
                                        compression_type=CompressionTypes.UNCOMPRESSED)
        self._tar = tarfile.open(fileobj=self._file, mode="w|", format=tarfile.PAX_FORMAT)
        self._mtime = mtime
        self.first_key: Optional[str] = None
        self.samples = 0

    def add(self, members: List[tuple], key: str) -> None:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = self._mtime
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        if self.first_key is None:
            self.first_key = key
        self.samples += 1

    @property
    def size(self) -> int:
        return self._tar.offset

    def close(self) -> Part:
        members_end = self._tar.offset
        self._tar.close()  # the end-of-archive marker, padded to a record
        self._file.close()
        return Part(self.path, self.first_key or "", self.samples, members_end)


class WritePartsDoFn(beam.DoFn):
    """Kept sample records -> temporary tars; emits a :class:`Part` per closed tar in
    ``finish_bundle`` (never before the bundle's writes are complete)."""

    def __init__(self, directory: str, target_bytes: int, mtime: int):
        self._directory = directory
        self._target = target_bytes
        self._mtime = mtime

    def start_bundle(self):
        self._writer: Optional[_PartWriter] = None
        self._closed: List[Part] = []

    def process(self, record: dict):
        key = written_key(record)
        members = sample_members(record, key)
        if self._writer is not None and self._writer.size + tar_bytes(members) > self._target:
            # Never past the target with a sample added: one larger than it is a part alone.
            self._closed.append(self._writer.close())
            self._writer = None
        if self._writer is None:
            ensure_dir(self._directory)
            self._writer = _PartWriter(self._directory, self._mtime)
        self._writer.add(members, key)
        if self._writer.size >= self._target:
            self._closed.append(self._writer.close())
            self._writer = None
        return ()

    def finish_bundle(self):
        if self._writer is not None:
            self._closed.append(self._writer.close())
            self._writer = None
        for part in self._closed:
            yield global_output(part)
        self._closed = []


def plan(parts: List[Part], target_bytes: int) -> List[List[Part]]:
    """Consecutive parts (sorted by first key) packed into shards of at most ``target_bytes``
    of members (a part alone may be larger)."""
    shards: List[List[Part]] = []
    size = 0
    for part in sorted(parts, key=lambda p: (p.first_key, p.path)):
        if part.samples == 0:
            continue
        if shards and size + part.members_end <= target_bytes:
            shards[-1].append(part)
            size += part.members_end
        else:
            shards.append([part])
            size = part.members_end
    return shards


def _concatenate(parts: List[Part], target: str) -> None:
    tmp = target + PARTIAL_SUFFIX
    with FileSystems.create(tmp, mime_type="application/x-tar",
                            compression_type=CompressionTypes.UNCOMPRESSED) as out:
        written = 0
        for part in parts:
            with FileSystems.open(part.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                left = part.members_end
                while left:
                    chunk = f.read(min(COPY_CHUNK, left))
                    if not chunk:
                        raise IOError(f"{part.path} is shorter than its {part.members_end} bytes of members")
                    out.write(chunk)
                    left -= len(chunk)
                    written += len(chunk)
        out.write(END_OF_ARCHIVE)
        written += len(END_OF_ARCHIVE)
        record = tarfile.RECORDSIZE
        if written % record:
            out.write(b"\0" * (record - written % record))
    FileSystems.rename([tmp], [target])


class FinalizeShardsDoFn(beam.DoFn):
    """All parts in one element -> the final shards; emits ``(shard path, samples)``."""

    def __init__(self, out_dir: str, directory: str, target_bytes: int):
        self._out_dir = out_dir
        self._directory = directory
        self._target = target_bytes

    def process(self, element) -> Iterable:
        _, parts = element
        for index, group in enumerate(plan(list(parts), self._target)):
            target = shard_name(self._out_dir, index)
            present = [p.path for p in group if FileSystems.exists(p.path)]
            if len(present) < len(group) and FileSystems.exists(target):
                pass  # a retry of this step: this shard was finished before its parts went
            elif len(group) == 1:
                FileSystems.rename([group[0].path], [target])
            else:
                _concatenate(group, target)
            yield target, sum(p.samples for p in group)
        remove_tree(self._directory)


class WriteShards(beam.PTransform):
    """Kept sample records -> ``out_dir/{:05d}.tar`` and ``out_dir/kept_keys/*.parquet``.
    Returns what the two finalizing steps output: ``(shard path, samples)`` per shard, and the
    kept keys' files."""

    def __init__(self, out_dir: str, shard_mb: Optional[float] = None):
        super().__init__()
        self._out_dir = out_dir
        self._target = max(1, int((DEFAULT_SHARD_MB if shard_mb is None else shard_mb) * 2**20))
        self._directory = tmp_dir(out_dir)
        self._mtime = int(time.time())

    def expand(self, kept):
        directory = self._directory
        keys = {KEPT_KEYS: kept} | "WriteKeptKeys" >> WriteParquet(
            self._out_dir, {KEPT_KEYS: pa.schema([(KEY, pa.string()), (SHARD, pa.string())])},
            rows={KEPT_KEYS: lambda r: {KEY: r.get(KEY), SHARD: r.get(SHARD)}})
        shards = (kept
                  | "WriteParts" >> beam.ParDo(WritePartsDoFn(directory, self._target, self._mtime))
                  | "OneKey" >> beam.Map(lambda part: (None, part))
                  | "AllParts" >> beam.GroupByKey()
                  | "Finalize" >> beam.ParDo(FinalizeShardsDoFn(self._out_dir, directory, self._target)))
        return shards, keys
