"""The two deduplication steps: through the Ray DedupBackend, or with Beam state."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import WindowedValue

from beam_phash import outcome
from beam_phash.hash_dofn import Hashed
from beam_phash.metrics import DedupMetrics

if TYPE_CHECKING:  # the state backend must not need Ray on its workers
    from beam_phash.ray_backend import RayDedupBackend


class RayDedupDoFn(beam.DoFn):
    """One backend call per bucket per input batch. The client connects in ``setup()``, never in
    ``__init__``, so the DoFn pickles as plain configuration.

    Pipelined: a batch's claims are sent, and the previous batch's answers are collected and
    emitted, so the bucket actors work while the next batch is hashed and routed. Each output
    keeps its own input's timestamp and window. A bundle that fails after sending claims is
    safe to retry: claims are idempotent."""

    def __init__(self, backend: RayDedupBackend):
        self._backend = backend
        self._metrics = DedupMetrics()

    def setup(self):
        self._backend.connect()

    def start_bundle(self):
        self._pending = None

    def process(self, batch: List[Hashed], timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterable:
        sent = (batch, self._backend.submit([h.hash for h in batch], [h.owner for h in batch]),
                timestamp, window)
        previous, self._pending = self._pending, sent
        if previous is not None:
            yield from self._finish(previous)

    def finish_bundle(self) -> Iterable:
        if self._pending is not None:
            previous, self._pending = self._pending, None
            yield from self._finish(previous)

    def _finish(self, sent) -> Iterable:
        batch, pending, timestamp, window = sent
        waited = time.perf_counter()
        keepers = self._backend.collect(pending)
        # Time spent waiting for answers (the calls overlap with hashing the next batch).
        self._metrics.backend_call_latency_ms.update(int((time.perf_counter() - waited) * 1000))
        for out in self._route(batch, keepers):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))
            else:
                yield WindowedValue(out, timestamp, [window])

    def _route(self, batch: List[Hashed], keepers: List[Optional[str]]) -> Iterable:
        for h, keeper in zip(batch, keepers):
            yield outcome.emit(h.record, keeper, self._metrics)


class StateDedupDoFn(beam.DoFn):
    """Keyed by raw hash; keeps the first claimant's id in state. Runs wherever the runner
    supports state (DirectRunner, Flink, Dataflow) and needs no server. State commits with the
    bundle, so a retried bundle sees the state as it was before it."""

    FIRST_OWNER = ReadModifyWriteStateSpec("first_owner", StrUtf8Coder())

    def __init__(self):
        self._metrics = DedupMetrics()

    def process(self, element: Tuple[bytes, Tuple[str, dict]],
                first_owner=beam.DoFn.StateParam(FIRST_OWNER)) -> Iterable:
        _, (owner, record) = element
        first = first_owner.read()
        if first is None:
            first_owner.write(owner)
            first = owner
        yield outcome.emit(record, None if first == owner else outcome.keeper_label(first), self._metrics)


def key_by_hash(batch: List[Hashed]) -> Iterable[Tuple[bytes, Tuple[str, dict]]]:
    for h in batch:
        yield h.hash, (h.owner, h.record)


class FinishBackendDoFn(beam.DoFn):
    """Runs once, after every record went through the backend: snapshots the buckets to the
    state directory (if any), then kills the bucket actors unless the backend is named."""

    def __init__(self, backend: RayDedupBackend, release: bool):
        self._backend = backend
        self._release = release

    def setup(self):
        self._backend.connect()

    def process(self, _count):
        self._backend.snapshot()
        if self._release:
            self._backend.release()
        return []
