"""Near-duplicate state across runs (``state_dir=`` with ``max_distance``, ``--state DIR``):
the hashes every earlier run with the same directory kept, with their ids.

Layout::

    DIR/manifest.json                       pins (mode, algorithm, hash size, hash version),
                                            the generation, and the committed segments with
                                            their row counts and digests
    DIR/runs/<run>/part-00003.parquet       one run's kept hashes of exact partition 3

A run reads the segments its launcher found in the manifest, as packed batches, and they join
the band search as fixed images (``fixed``). It writes its own kept hashes as new segments
(each a temporary file, fsync, rename: a retried bundle rewrites the same file), then one
commit step replaces the manifest atomically, listing them. A run that dies before that adds
nothing: files of uncommitted runs are never read, and the next commit removes them. A commit
refuses to land when another run committed since this one read the manifest (one run at a time
per directory), so nothing a run kept is ever silently lost from the state.

Compaction: each run adds up to one segment per exact partition, and every segment costs each
later run a read. A run that finds ``COMPACT_RUNS`` runs' worth of segments (``COMPACT_RUNS x
partitions``) writes the rows it read back, with its own, as one segment per partition, and its
commit replaces the segment list instead of adding to it; the earlier runs' folders are removed
after the manifest no longer names them. The state's rows are read by every run anyway, so
rewriting them once every few runs adds at most a ``1 / COMPACT_RUNS`` share of writes.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import uuid
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_phash import checks, state_manifest
from beam_phash._native import HASH_VERSION
from beam_phash.state_manifest import RUNS
from beam_phash.near.batches import Fixed, concat
from beam_phash.near.fixed import STATE, PackFixedDoFn, fixed_batch

FORMAT = "beam_phash.near-state/1"
#: Rows per batch read from a segment.
READ_ROWS = 1 << 20
_META_ROWS = b"beam_phash.rows"
_META_DIGEST = b"beam_phash.digest"
#: The hash version of the segment's hashes (the manifest pins it for the whole directory).
_META_HASH_VERSION = b"beam_phash.hash_version"
#: The column of flat flags (a flat image is met at distance 0 only); absent in older segments.
FLAT = "flat"


class StateError(RuntimeError):
    """The state cannot be used or updated; the message says why and what to do."""


def _digest(keys: np.ndarray, labels: pa.Array, flat: Optional[np.ndarray]) -> str:
    """The segment's digest: of its hashes, its flat flags when it has them (segments written
    before the flags have none, and hold no flat image), and its labels."""
    flags = [] if flat is None else [np.asarray(flat, dtype=np.uint8).tobytes()]
    return state_manifest.digest([np.ascontiguousarray(keys).tobytes(), *flags], labels)


def open_state(state_dir: str, algorithm: str, hash_size: int, bits: int, create: bool) -> dict:
    """Check ``state_dir`` against this run's settings and return its manifest (a new, empty one
    when there is none). With ``create``, also make the directory and check that it is writable.
    Raises ValueError."""
    want = {**state_manifest.pins(state_manifest.NEAR, algorithm, hash_size), "bits": bits}
    checks.state_dir(state_dir)
    have = state_manifest.read(state_dir) if os.path.isdir(state_dir) else None
    if have is None:
        state_manifest.check_without_manifest(state_dir)
    state_manifest.check(state_dir, want, have)
    if have is not None:
        _check_shape(state_dir, have)
    if create:
        state_manifest.check_writable(state_dir)
    if have is None:
        have = {"format": FORMAT, **want, "generation": 0, "rows": 0, "segments": []}
        if create:  # before any segment, so that segments without a manifest mean a lost one
            state_manifest.write(state_dir, have)
    return have


def _check_shape(state_dir: str, manifest: dict) -> None:
    """ValueError unless the manifest has the fields a run reads (a damaged or hand-edited one
    would fail later, inside the pipeline, or be read as empty)."""
    segments = manifest.get("segments")
    fine = (isinstance(manifest.get("generation"), int) and isinstance(manifest.get("rows"), int)
            and isinstance(segments, list)
            and all(isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("rows"), int)
                    and isinstance(e.get("digest"), str) for e in segments)
            and manifest["rows"] == sum(e["rows"] for e in segments))
    if not fine:
        raise ValueError(f"state directory {state_dir}: {state_manifest.MANIFEST} is damaged (its generation, "
                         "rows or segments are missing or inconsistent); not using it")


class ReadSegmentDoFn(beam.DoFn):
    """A committed segment -> its rows as fixed batches (source ``state``), after checking its
    row count and digest against the manifest. A damaged segment fails the run: using the state
    without it would keep copies of images an earlier run kept."""

    def __init__(self, state_dir: str, generation: int):
        self._dir = state_dir
        self._generation = generation

    def process(self, segment: dict) -> Iterable[Fixed]:
        path = os.path.join(self._dir, segment["path"])
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for damaged files
            # A run that committed since (a compaction) removes the segments it replaced.
            _check_generation(state_manifest.read(self._dir) or {}, self._dir, self._generation,
                              "since this pipeline was built")
            raise StateError(f"state segment {path} is missing or unreadable ({e}); the state in "
                             f"{self._dir} is damaged") from None
        keys = _keys(table)
        labels = table.column("label").combine_chunks()
        flat = (table.column(FLAT).combine_chunks().to_numpy(zero_copy_only=False).astype(bool)
                if FLAT in table.schema.names else None)
        if len(keys) != segment["rows"] or _digest(keys, labels, flat) != segment["digest"]:
            raise StateError(f"state segment {path} fails its row count or digest check; the state "
                             f"in {self._dir} is damaged")
        for lo in range(0, len(keys), READ_ROWS):
            yield fixed_batch(keys[lo:lo + READ_ROWS], STATE, labels.slice(lo, READ_ROWS),
                              None if flat is None else flat[lo:lo + READ_ROWS])


def _keys(table: pa.Table) -> np.ndarray:
    column = table.column("hash").combine_chunks()
    width = column.type.byte_width
    raw = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    return raw[column.offset * width:(column.offset + len(column)) * width].reshape(len(column), width)


def write_segment(state_dir: str, run: str, part: int, rows: Fixed) -> dict:
    """Write one segment of kept hashes (temporary file, fsync, rename) and return its manifest
    entry. The rows are sorted by hash and label first: a retried write gets its rows in another
    order, and must write the very bytes (and digest) of the attempt whose entry is committed,
    whichever attempt renames last."""
    width = rows.keys.shape[1]
    n = len(rows.keys)
    hashes = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(np.ascontiguousarray(rows.keys).tobytes())])
    labels = rows.labels.cast(pa.large_string())
    order = pc.sort_indices(pa.table({"hash": hashes, "label": labels}),
                            sort_keys=[("hash", "ascending"), ("label", "ascending")])
    at = order.to_numpy()
    keys, labels, flat = rows.keys[at], labels.take(order), np.asarray(rows.flat)[at]
    digest = _digest(keys, labels, flat)
    table = pa.Table.from_arrays([hashes.take(order), labels, pa.array(flat, pa.bool_())],
                                 names=["hash", "label", FLAT]).replace_schema_metadata({
        _META_ROWS: str(n), _META_DIGEST: digest, _META_HASH_VERSION: str(HASH_VERSION)})
    rel = os.path.join(RUNS, run, f"part-{part:05d}.parquet")
    path = os.path.join(state_dir, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"  # attempts on two machines may share a process id
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    state_manifest.fsync_dir(os.path.dirname(path))
    return {"path": rel, "rows": n, "digest": digest}


def _landed(manifest: dict, run: str) -> bool:
    mine = os.path.join(RUNS, run) + os.sep
    return any(s["path"].startswith(mine) for s in manifest.get("segments", []))


def check_unchanged(state_dir: str, run: str, generation: int) -> None:
    """Before a run writes its segments: StateError when the state is not the one the pipeline
    was built on (another run committed since), or when this very run already committed (the
    same built pipeline run again: its segment names would overwrite the committed ones)."""
    have = state_manifest.read(state_dir) or {}
    if _landed(have, run):
        raise StateError(f"this pipeline already ran and committed its kept hashes to {state_dir}; "
                         "build the pipeline again (a new ImagePhashDedup) for each run")
    _check_generation(have, state_dir, generation, "since this pipeline was built")


def _check_generation(have: dict, state_dir: str, generation: int, when: str) -> None:
    """StateError when another run committed to ``state_dir`` after this one read ``generation``."""
    if have.get("generation", 0) != generation:
        raise StateError(
            f"state directory {state_dir} changed {when} (generation {have.get('generation')}, this "
            f"run read {generation}): another run committed to it. Run one job at a time per state "
            "directory, each built after the last one finished; this run's kept hashes were not added")


#: A run rewrites the state as one run's segments when it holds this many runs' worth
#: (``COMPACT_RUNS x partitions`` segments).
COMPACT_RUNS = 8

#: Held while a commit reads, checks and replaces the manifest; taken over when older than this.
COMMIT_LOCK = "commit.lock"
LOCK_STALE_SECONDS = 120.0
LOCK_WAIT_SECONDS = 60.0


@contextlib.contextmanager
def _commit_lock(state_dir: str):
    """One commit at a time: the manifest is read, checked and replaced under an exclusive
    lock file, so two runs that finish together cannot both think they came first. A lock left
    by a commit that died (older than ``LOCK_STALE_SECONDS``; a commit takes well under one) is
    taken over."""
    path = os.path.join(state_dir, COMMIT_LOCK)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                if time.time() - os.stat(path).st_mtime > LOCK_STALE_SECONDS:
                    os.remove(path)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                raise StateError(f"state directory {state_dir} is locked by another run's commit "
                                 f"({path}, for {LOCK_WAIT_SECONDS:g} s); run one job at a time per "
                                 "state directory") from None
            time.sleep(0.05)
    try:
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.close(fd)
        yield
    finally:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def commit(state_dir: str, run: str, generation: int, manifest: dict, segments: List[dict],
           replace: bool = False) -> Optional[int]:
    """Add a run's segments to the manifest, atomically; the new generation, or None when this
    run's commit already landed. StateError when another run committed since ``generation``.
    With ``replace`` (a compacting run, whose segments hold every row of the state it read as
    well as its own), they replace the committed segments instead."""
    segments = sorted(segments, key=lambda s: s["path"])
    os.makedirs(state_dir, exist_ok=True)
    with _commit_lock(state_dir):
        have = state_manifest.read(state_dir) or manifest
        if _landed(have, run):
            return None
        _check_generation(have, state_dir, generation, "while this run ran")
        rows = sum(s["rows"] for s in segments)
        if replace and rows < int(have.get("rows", 0)):
            raise StateError(f"this run's compacted segments hold {rows} rows, fewer than the "
                             f"{have.get('rows')} of the state in {state_dir} they replace; not committed")
        new = dict(have)
        new["segments"] = segments if replace else list(have.get("segments", [])) + segments
        new["rows"] = rows if replace else int(have.get("rows", 0)) + rows
        new["generation"] = generation + 1
        state_manifest.write(state_dir, new)
        _remove_uncommitted(state_dir, new)
    return new["generation"]


class WriteSegmentDoFn(beam.DoFn):
    """One exact partition of this run's kept hashes -> a segment file and its manifest entry,
    once the state is checked to be the one the pipeline was built on (:func:`check_unchanged`)."""

    def __init__(self, state_dir: str, run: str, generation: int):
        self._dir = state_dir
        self._run = run
        self._generation = generation

    def process(self, element: Tuple[int, Iterable[Fixed]]):
        p, batches = element
        check_unchanged(self._dir, self._run, self._generation)
        yield 0, write_segment(self._dir, self._run, p, concat(Fixed, batches))


class CommitDoFn(beam.DoFn):
    """All of this run's segments -> the new manifest, atomically (see :func:`commit`)."""

    def __init__(self, state_dir: str, run: str, generation: int, manifest: dict, replace: bool):
        self._dir = state_dir
        self._run = run
        self._generation = generation
        self._manifest = manifest
        self._replace = replace

    def process(self, element: Tuple[int, Iterable[dict]], *_waited_on):
        _, segments = element
        generation = commit(self._dir, self._run, self._generation, self._manifest, list(segments),
                            self._replace)
        yield from [] if generation is None else [generation]


def _remove_uncommitted(state_dir: str, manifest: dict) -> None:
    """Run folders that no committed segment names: runs that died before their commit."""
    committed = {s["path"].split(os.sep)[1] for s in manifest["segments"]}
    runs = os.path.join(state_dir, RUNS)
    for run in os.listdir(runs) if os.path.isdir(runs) else []:
        if run not in committed:
            shutil.rmtree(os.path.join(runs, run), ignore_errors=True)
        else:
            for name in os.listdir(os.path.join(runs, run)):
                if name.endswith(".tmp"):
                    os.remove(os.path.join(runs, run, name))


class CheckStateDoFn(beam.DoFn):
    """The state's segments (one list) -> each segment, once the state is checked to be the one
    the pipeline was built on (:func:`check_unchanged`)."""

    def __init__(self, state_dir: str, run: str, generation: int):
        self._dir = state_dir
        self._run = run
        self._generation = generation

    def process(self, segments: List[dict]) -> Iterable[dict]:
        check_unchanged(self._dir, self._run, self._generation)
        yield from segments


class NearState(beam.PTransform):
    """Reads the committed state as fixed batches (``expand`` on a pipeline begin), and
    :class:`CommitState` writes a run's kept rows (keyed by exact partition): added as new segments, or,
    when the state holds ``COMPACT_RUNS`` runs' worth of segments, with the rows read, replacing
    them (``compact``)."""

    def __init__(self, state_dir: str, manifest: dict, run: str, partitions: int):
        super().__init__()
        self.state_dir = state_dir
        self.manifest = manifest
        self.run = run
        self.partitions = partitions
        self.compact = len(manifest["segments"]) >= COMPACT_RUNS * partitions
        self.rows_read = None  # once expanded: the state's rows, as fixed batches

    def committed(self) -> bool:
        """Whether this run's commit landed: its segments are in the state's manifest (a run that
        kept nothing has none, and leaves the state as it was)."""
        return _landed(state_manifest.read(self.state_dir) or {}, self.run)

    def expand(self, pbegin):
        # The segments as one element, checked before they are read: the search waits for the
        # state's rows, so a built pipeline run again, or one built before another run committed,
        # fails before any record has its fate (the commit checks again, for a run that commits
        # meanwhile).
        self.rows_read = (pbegin
                      | "Segments" >> beam.Create([self.manifest["segments"]], reshuffle=False)
                      | "CheckState" >> beam.ParDo(CheckStateDoFn(self.state_dir, self.run, self.manifest["generation"]))
                      | "Reshuffle" >> beam.Reshuffle()
                      | "ReadSegments" >> beam.ParDo(ReadSegmentDoFn(self.state_dir, self.manifest["generation"])))
        return self.rows_read


class CommitState(beam.PTransform):
    """A run's kept rows -> its segments, written and committed to the state (``state``, the
    :class:`NearState` the run read) once ``after`` (PCollections in the global window) are done."""

    def __init__(self, state: NearState, after=()):
        super().__init__()
        self._state = state
        self._after = tuple(after)

    def expand(self, kept_rows):
        state = self._state
        if state.compact:  # the state was read (``NearState.expand``): it has segments
            kept_rows = (kept_rows, state.rows_read | "RepackState" >> beam.ParDo(PackFixedDoFn(state.partitions))
                         ) | "WithStateRows" >> beam.Flatten()
        generation = state.manifest["generation"]
        return (kept_rows
                | "GroupKeptRows" >> beam.GroupByKey()
                | "WriteSegments" >> beam.ParDo(WriteSegmentDoFn(state.state_dir, state.run, generation))
                | "GroupSegments" >> beam.GroupByKey()
                | "Commit" >> beam.ParDo(CommitDoFn(state.state_dir, state.run, generation, state.manifest, state.compact),
                                         *(beam.pvalue.AsList(step) for step in self._after)))
