"""On-disk state of one bucket of the Ray backend: Parquet snapshots plus a change log.

Layout, in ``<state_dir>/bucket-00003/``::

    snapshot-000007.parquet   every entry claimed before log 7 was started
    log-000007.arrows         entries claimed since (Arrow IPC stream, one batch per claim call)
    log-000008.arrows         a later log (the actor restarted: a new log, no new snapshot)

Loading takes the newest snapshot that is intact and replays every log of its generation or
later, in order. So the state survives the actor process dying at any instant:

* a snapshot is written to a temporary file, flushed to disk, then renamed; a snapshot that is
  torn anyway (a copied or damaged file) fails to read, or fails its row count or digest check
  (the digest covers every hash, owner and label), and the previous one is used, with its logs,
  which are kept until the next snapshot;
* each log batch is written before the claim call answers, so every answered claim is on disk
  (in the OS cache: it survives the process, and after ``snapshot()`` also the machine); a batch
  torn by a crash mid-write was never answered, and Beam's retry of that call claims it again.

Entries are (hash, owner, label): the raw hash, the 64-bit owner digest and the keeper's id.
Nothing here unpickles: snapshots and logs are plain Arrow data.

Runs commit. A one-run backend (the transform's own, on bounded input) names its run in every
log it writes and in the snapshots it takes, and commits once every record went through it, by
creating ``<state_dir>/commits/<run>`` (:func:`commit_run`). Loading leaves out what runs that
never committed claimed, except the loader's own (an actor restarted mid-run): a run that failed
or was stopped adds nothing, and its rerun keeps its records whatever ids they have now. A
snapshot such a run took holds the committed entries first, then its own from row
``beam_phash.run_from`` (entries keep their insertion order). Logs and snapshots that name no run
(a named backend's, a stream's, and every file written before runs committed) are committed as
they are written.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
from typing import List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from beam_phash import state_manifest
from beam_phash._native import HASH_VERSION, hash_bits
from beam_phash.records import hash_bytes

log = logging.getLogger(__name__)

#: 2: the digest covers the labels too (format 1's covered the hashes and owners only).
FORMAT = "2"
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{6})\.parquet$")
_LOG_RE = re.compile(r"^log-(\d{6})\.arrows$")
_META_ROWS = b"beam_phash.rows"
_META_DIGEST = b"beam_phash.digest"
_META_FORMAT = b"beam_phash.format"
#: The hash version the entries were computed with (the manifest pins it for the whole directory).
_META_HASH_VERSION = b"beam_phash.hash_version"
#: The run whose claims a log holds, or whose claims a snapshot holds from row ``_META_RUN_FROM``.
_META_RUN = b"beam_phash.run"
_META_RUN_FROM = b"beam_phash.run_from"


class StateError(RuntimeError):
    """A bucket's state on disk cannot be used; the message names the bucket and the files."""


def bucket_dir(state_dir: str, bucket: int) -> str:
    return os.path.join(state_dir, f"{state_manifest.BUCKET_PREFIX}{bucket:05d}")


def commit_folder(state_dir: str) -> str:
    """The folder of commit markers (``DIR/commits``), made durably if it is not there."""
    folder = os.path.join(state_dir, state_manifest.COMMITS)
    if not os.path.isdir(folder):
        os.makedirs(folder, exist_ok=True)
        state_manifest.fsync_dir(state_dir)
    return folder


def commit_run(state_dir: str, run: str) -> None:
    """Commit ``run``'s claims: from now on every load replays them. Durable (the marker and its
    folder are synced) and idempotent."""
    folder = commit_folder(state_dir)
    with open(os.path.join(folder, run), "w") as f:
        f.flush()
        os.fsync(f.fileno())
    state_manifest.fsync_dir(folder)


def committed_runs(state_dir: str) -> set:
    """The runs that committed to ``state_dir``."""
    try:
        return set(os.listdir(os.path.join(state_dir, state_manifest.COMMITS)))
    except FileNotFoundError:
        return set()


def _schema(width: int) -> pa.Schema:
    return pa.schema([("hash", pa.binary(width)), ("owner", pa.uint64()), ("label", pa.string())])


def _table(width: int, hashes: bytes, owners: bytes, labels: List[str]) -> pa.Table:
    n = len(labels)
    return pa.Table.from_arrays([
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(hashes)]),
        pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(owners)]),
        pa.array(labels, pa.string()),
    ], schema=_schema(width))


_LOG_DIGEST = b"beam_phash.digest"
_CONTINUATION = b"\xff\xff\xff\xff"
#: Bounds on one logged batch's message (one claim call: at most 1,000,000 entries of at most
#: 128-byte hashes and their labels); a length beyond them is damage, not a cut-short write.
_MAX_METADATA = 1 << 20
_MAX_BODY = 1 << 32


def _torn(data: bytes, at: int) -> bool:
    """Whether a log's bytes from ``at`` (where its intact messages end) are the start of one
    message cut short, as an interrupted write leaves it (those bytes are right, only too few),
    rather than damage: a message that is whole but unreadable, or bytes that are not the start
    of a message."""
    rest = data[at:]
    if len(rest) < 8:
        return _CONTINUATION.startswith(rest[:4])
    if rest[:4] != _CONTINUATION:
        return False
    size = int.from_bytes(rest[4:8], "little", signed=True)
    if not 0 <= size <= _MAX_METADATA:
        return False  # no batch of ours has such metadata: a damaged length
    if 8 + size > len(rest):
        return _nothing_whole_after(rest)  # its metadata is cut short
    try:
        pa.ipc.read_message(pa.BufferReader(rest))
    except (pa.ArrowInvalid, OSError, EOFError) as e:
        body = re.search(r"Expected to be able to read (\d+) bytes", str(e))
        # its body is cut short
        return body is not None and int(body.group(1)) <= _MAX_BODY and _nothing_whole_after(rest)
    return False  # a whole message, and yet unreadable


def _nothing_whole_after(rest: bytes) -> bool:
    """Whether no whole message starts after the first one in ``rest``: a cut-short write is
    the log's last; a damaged length makes the messages after it look like its own bytes."""
    at = rest.find(_CONTINUATION, 8)
    while at != -1:
        try:
            pa.ipc.read_message(pa.BufferReader(rest[at:]))
            return False
        except (pa.ArrowInvalid, OSError, EOFError):
            pass
        at = rest.find(_CONTINUATION, at + 1)
    return True


def _digest(columns: Tuple[bytes, bytes, List[str]], labels: pa.Array, run: Optional[bytes] = None,
            run_from: Optional[int] = 0) -> str:
    """The digest of a snapshot or a logged batch: of its entries, and of the run its entries
    from ``run_from`` belong to (a log batch's: all of them)."""
    packed = list(columns[:2]) + ([] if run is None else [f"{run_from}:".encode() + run])
    return state_manifest.digest(packed, labels)


def _rows(columns: Tuple[bytes, bytes, List[str]], start: int, stop: Optional[int]) -> Tuple[bytes, bytes, List[str]]:
    """Rows ``start:stop`` of a table's columns."""
    hashes, owners, labels = columns
    if start == 0 and (stop is None or stop >= len(labels)):
        return columns
    width = len(hashes) // len(labels)
    stop = len(labels) if stop is None else stop
    return hashes[start * width:stop * width], owners[start * 8:stop * 8], labels[start:stop]


def _columns(table: pa.Table) -> Tuple[bytes, bytes, List[str]]:
    """A table's (packed hashes, packed owners, labels)."""
    if table.num_rows == 0:
        return b"", b"", []
    hash_col = table.column("hash").combine_chunks()
    width = hash_col.type.byte_width
    raw = np.frombuffer(hash_col.buffers()[1], dtype=np.uint8)
    hashes = raw[hash_col.offset * width:(hash_col.offset + len(hash_col)) * width].tobytes()
    owners = table.column("owner").to_numpy().astype("<u8").tobytes()
    return hashes, owners, table.column("label").to_pylist()


class BucketStore:
    """Reads and writes one bucket's directory. Used by one actor at a time. ``run``: the run
    this store logs the claims of, committed by :func:`commit_run` (None: its claims are
    committed as they are logged)."""

    def __init__(self, state_dir: str, bucket: int, name: str, run: Optional[str] = None):
        self.path = bucket_dir(state_dir, bucket)
        self.name = name  # for messages: "bucket 3 of backend 'x'"
        self._state_dir = state_dir
        self.run = run
        #: After :meth:`load`: the index of the first chunk of this store's own run (the chunks
        #: before it are committed).
        self.own_from = 0
        os.makedirs(self.path, exist_ok=True)
        # One store per bucket directory at a time, for as long as this process lives (the OS
        # drops the lock when it dies, so a restarted actor takes over at once).
        self._lock = open(os.path.join(self.path, ".lock"), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise StateError(f"{self.name}: {self.path} is in use by another backend (one pipeline at "
                             "a time per state directory; the bucket actors of a pipeline that failed hold "
                             "it until release() is called on its ImagePhashDedup or ExactDedup, or its "
                             "Ray stops)") from None
        self._writer: Optional[pa.ipc.RecordBatchStreamWriter] = None
        self._sink = None
        self._gen = 0  # generation of the log being written (and of the next snapshot - 1)
        self._base = 0  # generation of the newest snapshot known to be intact (0: none)
        self.logged_since_snapshot = 0

    def _files(self, pattern: re.Pattern) -> List[Tuple[int, str]]:
        found = []
        for entry in os.listdir(self.path):
            m = pattern.match(entry)
            if m:
                found.append((int(m.group(1)), os.path.join(self.path, entry)))
        return sorted(found)

    # -- loading ---------------------------------------------------------------------------

    def load(self, committed: Optional[set] = None) -> Tuple[Optional[int], List[Tuple[bytes, bytes, List[str]]]]:
        """(hash width or None, entry chunks to replay in order): the committed entries, then
        this store's own run's (from chunk ``own_from``); those of runs that never committed are
        left out. ``committed``: :func:`committed_runs`, read by the caller once for many
        buckets (None: read here). Starts a new log generation."""
        snapshots = self._files(_SNAPSHOT_RE)
        logs = self._files(_LOG_RE)
        if committed is None:
            committed = committed_runs(self._state_dir)
        if self.run is not None and self.run in committed:
            # The same built pipeline run again (its run is named when it is built): its claims
            # would count as committed as soon as they are made.
            raise StateError(f"{self.name}: run {self.run} already ran and committed to {self._state_dir}; a "
                             "pipeline with a state directory runs once: build it again to run it again")
        chunks: List[Tuple[bytes, bytes, List[str]]] = []
        own_from: Optional[int] = None  # the first chunk of this store's own run's claims

        def add(columns: Tuple[bytes, bytes, List[str]], run: Optional[str], path: str) -> None:
            nonlocal own_from
            if run is not None and run in committed:
                run = None
            if run is not None and run != self.run:
                return  # claimed by a run that failed or was stopped
            if run is None and own_from is not None:
                raise StateError(f"{self.name}: {path} holds claims committed after those of this very "
                                 f"run ({self.run}); two runs used {self.path} at once")
            if run is not None and own_from is None:
                own_from = len(chunks)
            chunks.append(columns)

        width: Optional[int] = None
        base = 0
        for gen, path in reversed(snapshots):
            try:
                width, columns, run, run_from = self._read_snapshot(path)
            except StateError as e:
                log.warning("%s", e)
                continue
            if run is None:
                add(columns, None, path)
            else:
                add(_rows(columns, 0, run_from), None, path)  # entries committed when it was taken
                add(_rows(columns, run_from, None), run, path)  # entries of the run that took it
            base = gen
            break
        else:
            # A bucket's first log (generation 0) goes only once a snapshot replaced it: without an
            # intact snapshot, the logs must reach back to it, or claims were lost.
            if (snapshots or logs) and (not logs or logs[0][0] > 0):
                raise StateError(f"{self.name}: no intact snapshot in {self.path} and the logs do not "
                                 "reach back to the start; the state cannot be rebuilt")
        for gen, path in logs:
            if gen < base:
                continue
            log_width, batches, run = self._read_log(path)
            width = width or log_width
            for batch in batches:
                add(batch, run, path)
        self._gen = max([g for g, _ in snapshots + logs], default=-1) + 1
        self._base = base
        self.own_from = len(chunks) if own_from is None else own_from
        return width, chunks

    def _read_snapshot(self, path: str) -> Tuple[int, Tuple[bytes, bytes, List[str]], Optional[str], int]:
        """(hash width, its entries, the run that took it or None, the row its run's entries
        start at)."""
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for damaged files
            raise StateError(f"{self.name}: snapshot {path} is torn or unreadable ({type(e).__name__}); "
                             "not used") from None
        meta = table.schema.metadata or {}
        columns = _columns(table)
        rows, digest = meta.get(_META_ROWS), meta.get(_META_DIGEST)
        run, run_from = meta.get(_META_RUN), meta.get(_META_RUN_FROM)
        try:
            run_from = None if run_from is None else int(run_from)
        except ValueError:
            run_from = -1
        if (meta.get(_META_FORMAT) != FORMAT.encode() or rows is None or int(rows) != table.num_rows
                or digest is None or (run is None) != (run_from is None)
                or (run_from is not None and not 0 <= run_from <= table.num_rows)
                or digest.decode() != _digest(columns, table.column("label"), run, run_from)):
            raise StateError(f"{self.name}: snapshot {path} fails its row count or digest check; not used")
        return table.schema.field("hash").type.byte_width, columns, run and run.decode(), run_from or 0

    def _read_log(self, path: str) -> Tuple[Optional[int], List[Tuple[bytes, bytes, List[str]]], Optional[str]]:
        """(hash width, the log's batches, the run whose claims it holds or None). A log that cannot be opened or read is an error naming it; only a
        log whose bytes end in an incomplete batch (the tail a crash tore off) loses that tail.
        A batch that fails its digest (logs written since 2026-12-03 carry one per batch), or
        bytes that break before the end, are damage: an error, since every claim after them was
        answered."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise StateError(f"{self.name}: log {path} cannot be read ({e}); its claims would be "
                             "lost, so the bucket does not start") from None
        batches, width, tag = [], None, None
        source = pa.BufferReader(data)
        read = 0  # bytes of the log's intact messages
        try:
            reader = pa.ipc.open_stream(source)
            width = reader.schema.field("hash").type.byte_width
            tag = (reader.schema.metadata or {}).get(_META_RUN)  # under each batch's digest
            read = source.tell()
            while True:
                try:
                    batch, meta = reader.read_next_batch_with_custom_metadata()
                except StopIteration:
                    break
                batch.validate(full=True)  # offsets and lengths within the buffers: ArrowInvalid
                table = pa.Table.from_batches([batch])
                columns = _columns(table)
                expected = (meta or {}).get(_LOG_DIGEST)
                if expected is not None and expected != _digest(columns, table.column("label"), tag).encode():
                    raise StateError(f"{self.name}: log {path} is damaged (batch {len(batches) + 1} fails its "
                                     "digest); its claims would be lost, so the bucket does not start")
                batches.append(columns)
                read = source.tell()
        except (pa.ArrowInvalid, OSError, EOFError) as e:
            if not _torn(data, read):
                raise StateError(f"{self.name}: log {path} is damaged after batch {len(batches)} "
                                 f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); the claims after it "
                                 "would be lost, so the bucket does not start") from None
            # Bytes that end inside the last message: that batch was never answered, and
            # everything before it stands.
            log.warning("%s: log %s ends in a torn batch (%s); replayed %d batches before it",
                        self.name, path, type(e).__name__, len(batches))
        try:
            run = None if tag is None else tag.decode()
        except UnicodeDecodeError:
            raise StateError(f"{self.name}: log {path} is damaged (its run is not text); its claims would be "
                             "lost, so the bucket does not start") from None
        return width, batches, run

    # -- writing ---------------------------------------------------------------------------

    def append(self, width: int, hashes: bytes, owners: bytes, labels: List[str]) -> None:
        """Log newly claimed entries; written through to the OS before the claim answers."""
        if not labels:
            return
        if self._writer is None:
            # "x": never truncate a log that exists (it would be another writer's).
            self._sink = open(os.path.join(self.path, f"log-{self._gen:06d}.arrows"), "xb")
            schema = _schema(width)
            if self.run is not None:
                schema = schema.with_metadata({_META_RUN: self.run})
            self._writer = pa.ipc.new_stream(self._sink, schema)
        table = _table(width, hashes, owners, labels)
        (batch,) = table.to_batches()
        self._writer.write_batch(batch, custom_metadata={
            _LOG_DIGEST: _digest((hashes, owners, labels), table.column("label"),
                                 None if self.run is None else self.run.encode())})
        self._sink.flush()
        self.logged_since_snapshot += len(labels)

    def _close_log(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def snapshot(self, width: int, hashes: bytes, owners: bytes, labels: List[str],
                 committed: Optional[int] = None) -> str:
        """Write every entry as the next snapshot generation, durably, then drop what it
        supersedes (keeping one generation back). Returns the snapshot's path. ``committed``:
        how many of the entries (the first ones) were committed before this store's run (None:
        all of them)."""
        self._close_log()
        self._gen += 1
        path = os.path.join(self.path, f"snapshot-{self._gen:06d}.parquet")
        table = _table(width, hashes, owners, labels)
        run = run_from = None
        if self.run is not None and committed is not None and committed < len(labels):
            run, run_from = self.run.encode(), committed
        table = table.replace_schema_metadata({
            _META_FORMAT: FORMAT, _META_ROWS: str(len(labels)),
            _META_DIGEST: _digest((hashes, owners, labels), table.column("label"), run, run_from),
            _META_HASH_VERSION: str(HASH_VERSION),
            **({} if run is None else {_META_RUN: run, _META_RUN_FROM: str(run_from)})})
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        state_manifest.fsync_dir(self.path)
        # Keep the snapshot this store last loaded or wrote (known intact) and the logs after it,
        # the fallback should the new one ever be found torn; older files are superseded twice.
        for gen, old in self._files(_SNAPSHOT_RE) + self._files(_LOG_RE):
            if gen < self._base:
                os.remove(old)
        self._base = self._gen
        self.logged_since_snapshot = 0
        return path

    def close(self) -> None:
        self._close_log()
        self._lock.close()


def _manifest_for(num_buckets: int, algorithm: str, hash_size: int) -> dict:
    return {"format": FORMAT, **state_manifest.pins(state_manifest.EXACT, algorithm, hash_size),
            "num_buckets": num_buckets}


def check_state_dir(state_dir: str, num_buckets: int, algorithm: str, hash_size: int) -> None:
    """Raise ValueError if ``state_dir`` holds state of another layout, or lost some of its
    buckets (read only)."""
    have = state_manifest.read(state_dir)
    if have is None:
        state_manifest.check_without_manifest(state_dir)
        return
    state_manifest.check(state_dir, _manifest_for(num_buckets, algorithm, hash_size), have)
    if have.get("seeding"):
        return  # made by a first run that stopped before it seeded every bucket: nothing claimed
    # Every bucket's folder is made before the manifest says "seeded" (prepare_state_dir), and loading an
    # absent one would start that bucket empty: the hashes it held would be kept again. Since
    # "seeded" directories, each folder also starts with an empty snapshot and always holds a
    # snapshot or a log after that: an emptied folder lost its files.
    missing = [b for b in range(num_buckets) if not _has_state(bucket_dir(state_dir, b), have.get("seeded", False))]
    if missing and len(missing) < num_buckets:
        names = ", ".join(os.path.basename(bucket_dir(state_dir, b)) for b in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(f"state directory {state_dir} lacks {names}{more} of its {num_buckets} buckets, "
                         "or their files: the hashes kept there would be kept again; restore the folder(s), "
                         "or start a new state directory")
    if have.get(state_manifest.COMMITS) and not os.path.isdir(os.path.join(state_dir, state_manifest.COMMITS)):
        # Without it every run would look uncommitted: their claims left out, and dropped for good
        # by the next snapshot.
        raise ValueError(f"state directory {state_dir} lacks its {state_manifest.COMMITS}/ folder, which says "
                         "which runs' claims count (a copy without it?): their hashes would be kept again; "
                         "restore the folder, or start a new state directory")


def _has_state(path: str, seeded: bool) -> bool:
    """Whether a bucket's folder is there, and (``seeded``) holds a snapshot or a log."""
    if not os.path.isdir(path):
        return False
    return not seeded or any(_SNAPSHOT_RE.match(e) or _LOG_RE.match(e) for e in os.listdir(path))


def prepare_state_dir(state_dir: str, num_buckets: int, algorithm: str, hash_size: int) -> None:
    """Create ``state_dir`` with its manifest (the layout every later run must match)."""
    check_state_dir(state_dir, num_buckets, algorithm, hash_size)
    state_manifest.check_writable(state_dir)
    have = state_manifest.read(state_dir)
    width = hash_bytes(hash_bits(algorithm, hash_size))
    pinned = _manifest_for(num_buckets, algorithm, hash_size)
    if have is None or have.get("seeding"):
        # The manifest first, saying the buckets are being seeded: a first run stopped meanwhile
        # (seeding 65,536 buckets takes minutes) leaves a directory the next run finishes, not
        # one with buckets and no manifest, which would be refused.
        state_manifest.write(state_dir, {**pinned, "seeding": True})
        _seed_missing(state_dir, num_buckets, width)
        # Pinned settings are checked against every later run; "seeded" only says what the
        # folders hold (directories written before it have empty folders for unused buckets).
        have = {**pinned, "seeded": True}
        state_manifest.write(state_dir, have)
    elif have.get("seeded"):
        # Every folder gone (the check passed, so it is all or none): the directory starts empty,
        # seeded again, or the folders of buckets this run leaves unused would look lost later.
        _seed_missing(state_dir, num_buckets, width)
    if not have.get(state_manifest.COMMITS):
        # The folder of commit markers, made with the state and named in the manifest, so that a
        # copy without it is refused (check_state_dir). A directory made before 2026-12-05 gets
        # it here, as it is (a run may already have committed into it).
        commit_folder(state_dir)
        state_manifest.write(state_dir, {**have, state_manifest.COMMITS: True})


def _seed_missing(state_dir: str, num_buckets: int, width: int) -> None:
    """Seed every bucket without state."""
    for b in range(num_buckets):
        if not _has_state(bucket_dir(state_dir, b), True):
            _seed(state_dir, b, width)


def _seed(state_dir: str, bucket: int, width: int) -> None:
    """Give a bucket its first state: an empty snapshot."""
    store = BucketStore(state_dir, bucket, f"bucket {bucket}")
    try:
        store.snapshot(width, b"", b"", [])
    finally:
        store.close()
