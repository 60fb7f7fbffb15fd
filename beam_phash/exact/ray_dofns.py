"""The Beam steps of the Ray backend: claiming hashes from the bucket actors, and finishing the
backend once every record went through it."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable, List, Optional

import apache_beam as beam

from beam_phash.metrics import DedupMetrics
from beam_phash.records import MATCHED_FIELD, Hashed, check_hashes, emit
from beam_phash.windowed import in_window

#: The ``RayDedupDoFn`` output that counts the records whose claims were answered, one count
#: per input batch: the end-of-run barrier sums it.
CLAIMED = "claimed"

if TYPE_CHECKING:  # pickled configuration; the client is imported where it connects
    from beam_phash.exact.ray_client import RayDedupBackend


class RayDedupDoFn(beam.DoFn):
    """Claims hashes from the bucket actors: one call per bucket per ``claim_batch`` records. The
    client connects in ``setup()``, never in ``__init__``, so the DoFn pickles as plain
    configuration.

    Input batches are gathered until they hold ``claim_batch`` records (a Ray call costs about
    half a millisecond of client time, so fewer, larger calls), then their claims are sent; the
    answers of the previous send are collected and emitted meanwhile, so the bucket actors work
    while the next batches are hashed. Each output keeps its own input's timestamp and window. A
    bundle that fails after sending claims is safe to retry: claims are idempotent. Besides the
    kept and duplicate records, it emits to ``CLAIMED`` each input batch's size once the batch's
    answers are in.

    ``matched``: whether duplicates say which run kept their keeper (``matched`` "input" or
    "state"); a named backend's cannot tell the runs that used it apart."""

    def __init__(self, backend: RayDedupBackend, claim_batch: int = 1024, hash_bytes: Optional[int] = None,
                 matched: bool = True):
        self._backend = backend
        self._matched = matched
        self._claim_batch = claim_batch
        self._hash_bytes = hash_bytes
        self._width: Optional[int] = None  # without hash_bytes: the first hash's, held to for the rest
        self._metrics = DedupMetrics()

    def setup(self):
        # Connecting (and, for an embedded Ray, waiting for it to come up) overlaps with hashing
        # the first batches; the first claim waits for it.
        self._connected = self._backend.connect_soon()

    def start_bundle(self):
        self._gathered: list = []  # (batch, timestamp, window) not sent yet
        self._gathered_records = 0
        self._pending = None  # sent, answers not collected yet

    def process(self, batch: List[Hashed], timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterable:
        if self._hash_bytes is not None:
            check_hashes(batch, self._hash_bytes, 0, "ExactDedup")
        elif batch:
            if self._width is None:
                self._width = len(batch[0].hash)
            other = next((h for h in batch if len(h.hash) != self._width), None)
            if other is not None:
                raise ValueError(
                    f"ExactDedup without a HashConfig takes hashes of one width, and received {self._width}-byte "
                    f"and {len(other.hash)}-byte hashes (id {other.owner!r}): give it the HashConfig the records "
                    "were hashed with")
        self._gathered.append((batch, timestamp, window))
        self._gathered_records += len(batch)
        if self._gathered_records >= self._claim_batch:
            yield from self._send()

    def finish_bundle(self) -> Iterable:
        if self._gathered:
            yield from self._send()
        if self._pending is not None:
            previous, self._pending = self._pending, None
            yield from self._finish(previous)
        # A bundle that claimed nothing (every record failed to hash, or none came) still waits
        # for the connection its setup started: left running, it would create actors after the
        # backend is released, or block the process's exit in Ray's actor registration once the
        # launcher has stopped an embedded Ray under it.
        self._wait_connected()

    def teardown(self):
        self._wait_connected()

    def _wait_connected(self) -> None:
        if getattr(self, "_connected", None) is not None:
            connected, self._connected = self._connected, None
            connected.result()

    def _send(self) -> Iterable:
        items, self._gathered, self._gathered_records = self._gathered, [], 0
        hashed = [h for batch, _, _ in items for h in batch]
        self._wait_connected()
        sent = (items, self._backend.submit([h.hash for h in hashed], [h.owner for h in hashed]))
        previous, self._pending = self._pending, sent
        if previous is not None:
            yield from self._finish(previous)

    def _finish(self, sent) -> Iterable:
        items, pending = sent
        waited = time.perf_counter()
        keepers = self._backend.collect(pending)
        # Time spent waiting for answers (the calls overlap with hashing the next batches).
        self._metrics.backend_call_latency_ms.update(int((time.perf_counter() - waited) * 1000))
        start = 0
        for batch, timestamp, window in items:
            end = start + len(batch)
            yield from in_window(self._route(batch, keepers[start:end], pending.earlier[start:end]), timestamp, window)
            start = end

    def _route(self, batch: List[Hashed], keepers: List[Optional[str]], earlier) -> Iterable:
        for h, keeper, state in zip(batch, keepers, earlier.tolist()):
            fields = {MATCHED_FIELD: "state" if state else "input"} if self._matched else {}
            yield emit(h.record, keeper, self._metrics, **fields)
        yield beam.pvalue.TaggedOutput(CLAIMED, len(batch))


class FinishBackendDoFn(beam.DoFn):
    """Runs once, after every record went through the backend (and the steps it waits on): snapshots
    the buckets to the state directory (if any), kills the bucket actors unless the backend is
    named, then commits the run's claims there."""

    def __init__(self, backend: RayDedupBackend, release: bool):
        self._backend = backend
        self._release = release

    def setup(self):
        self._backend.connect()

    def process(self, _claimed, *_waited_on):
        self._backend.snapshot()
        if self._release:
            # Before the commit: a release that fails then fails the run uncommitted. (A retry
            # snapshots the live actors only, none after a release, and commits.)
            self._backend.release()
        self._backend.commit()
        return []


class FinishBackend(beam.PTransform):
    """The claiming step's counts -> the backend's end (:class:`FinishBackendDoFn`), once every
    record went through it and ``after`` (PCollections in the global window) are done. The sum
    is the barrier: it exists only once every record's claim was answered. Only the counts leave
    the claiming step's stage (combiner lifting), never the records, whose image bytes the kept
    and duplicate outputs carry."""

    def __init__(self, backend: RayDedupBackend, release: bool, after=()):
        super().__init__()
        self._backend = backend
        self._release = release
        self._after = tuple(after)

    def expand(self, claimed):
        return (claimed
                | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                | "CountClaimed" >> beam.CombineGlobally(sum)
                | "Finish" >> beam.ParDo(FinishBackendDoFn(self._backend, self._release),
                                         *(beam.pvalue.AsList(step) for step in self._after)))
