"""Hashing: ``HashImages`` turns records into batches of :class:`~beam_phash.records.Hashed`
(one ``hash_images`` call per batch: Rust, GIL released, all cores) and failed records, from a
:class:`HashConfig` that validates itself. Every dedup path starts here."""
from __future__ import annotations

import collections
import concurrent.futures
import numbers
import time
from dataclasses import dataclass
from typing import Iterable, List, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa

from beam_phash._native import (
    ALGORITHMS,
    DEFAULT_MAX_PIXELS,
    FLAT_QUALITY,
    MAX_HASH_SIZE,
    MAX_THREADS,
    MIN_HASH_SIZE,
    InternalError,
    PHash,
    hash_bits,
    hash_images,
    parse_hex_hashes,
)
from beam_phash.checks import int_in, text
from beam_phash.failures import TALLY, CheckFailures, FailureThreshold, Tally
from beam_phash.metrics import DedupMetrics
from beam_phash.windowed import in_window
from beam_phash.records import (
    ERROR_FIELD,
    FAILED,
    WRITTEN_FIELDS,
    QUALITY_FIELD,
    BadRecord,
    Hashed,
    encodable_image,
    field_of,
    hash_bytes,
    image_bytes,
    not_a_record,
    record_id,
    surrogate_owner,
    with_fields,
)


def failed_output(record, reason: str, hash_field: str, image_field: str, metrics: DedupMetrics,
                  measured: bool = False):
    """A record that could not be hashed, for the ``failed`` tag: no hash, the reason in ``error``.
    ``measured``: this run measures each image's quality (it hashes images), so a quality the
    record carries (an earlier run's output fed back) is not passed on as if it were this run's."""
    metrics.failed.inc()
    out = with_fields(record, **{hash_field: None, ERROR_FIELD: reason})
    if measured:
        out.pop(QUALITY_FIELD, None)
    return beam.pvalue.TaggedOutput(FAILED, encodable_image(out, image_field))


class HashBatchDoFn(beam.DoFn):
    """Consumes lists of records (from BatchElements) and emits, per input batch, one list of
    ``Hashed`` on the main output; records that cannot be hashed go to the ``failed`` tag with an
    ``error`` reason and ``hash_field=None``; and the batch's ``failures.Tally`` on ``tally``.

    Each batch is hashed in a background thread (``hash_images`` releases the GIL and runs on all
    cores) while this thread goes on reading and batching the next one and passing the previous
    one's results on: one batch in flight, so Beam's per-record work overlaps with the hashing
    instead of following it. Each output keeps its own input's timestamp and window; whatever is
    in flight is emitted by ``finish_bundle``, so a bundle never ends with a batch unsent."""

    def __init__(self, config: HashConfig):
        self._c = config
        self._metrics = DedupMetrics()

    def setup(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="beam-phash-hash")

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)

    def start_bundle(self):
        self._in_flight: collections.deque = collections.deque()

    def _failed(self, record, reason: str):
        return failed_output(record, reason, self._c.hash_field, self._c.image_field, self._metrics, measured=True)

    def process(self, batch: List[dict], timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterable:
        self._metrics.inputs.inc(len(batch))
        blobs, pending = [], []  # pending: (record, its id or None)
        for record in batch:
            try:
                data = image_bytes(record, self._c.image_field)
                owner = record_id(record, self._c.id_field)
            except BadRecord as e:
                yield self._failed(record, str(e))
                continue
            blobs.append(data)
            pending.append((record, owner))
        if not blobs:
            yield beam.pvalue.TaggedOutput(TALLY, Tally(len(batch), len(batch), 0))
            return
        hashing = self._pool.submit(self._hash, blobs)
        self._in_flight.append((hashing, len(batch), pending, blobs, timestamp, window))
        while len(self._in_flight) > 1:
            yield from self._emit(self._in_flight.popleft())

    def finish_bundle(self) -> Iterable:
        while self._in_flight:
            yield from self._emit(self._in_flight.popleft())

    def _hash(self, blobs: list) -> tuple:
        """(the results, the milliseconds they took), in the pool's thread: its metric updates
        would be lost there (Beam keeps the metrics context per thread), so ``_emit`` makes them."""
        started = time.perf_counter()
        results = hash_images(blobs, algorithm=self._c.algorithm, hash_size=self._c.hash_size,
                              threads=self._c.threads, max_pixels=self._c.max_pixels, dihedral=self._c.dihedral)
        return results, int((time.perf_counter() - started) * 1000)

    def _emit(self, flight) -> Iterable:
        hashing, size, pending, blobs, timestamp, window = flight
        results, millis = hashing.result()
        self._metrics.hash_batch_latency_ms.update(millis)
        self._metrics.hash_batch_size.update(len(blobs))
        yield from in_window(self._outputs(size, pending, blobs, results), timestamp, window)

    def _outputs(self, size: int, pending: List[dict], blobs: list, results: list) -> Iterable:
        failed, internal = size - len(blobs), 0
        out: List[Hashed] = []
        for (record, owner), data, result in zip(pending, blobs, results):
            if not isinstance(result, PHash):
                if isinstance(result, InternalError):
                    internal += 1
                    self._metrics.internal_errors.inc()
                else:
                    failed += 1
                yield self._failed(record, str(result))
                continue
            if owner is None:  # only a missing or None id: "" is an id, ranked as the hash column ranks it
                owner = surrogate_owner(data)
            kept = encodable_image(with_fields(record, **{self._c.hash_field: result.hex(), QUALITY_FIELD: result.quality}),
                                   self._c.image_field)
            variants = tuple(bytes(v) for v in result.variants) if self._c.dihedral else ()
            flat = result.quality < FLAT_QUALITY
            if flat:
                self._metrics.flat_images.inc()
            out.append(Hashed(bytes(result), owner, kept, result.width * result.height, variants, flat))
        yield beam.pvalue.TaggedOutput(TALLY, Tally(size, failed, internal))
        if out:
            yield out


def given_flat(record) -> bool:
    """Whether a record that carries its hash is of a flat image, by the ``image_quality`` it
    carries too (an earlier run's kept/ has it); without one, not flat."""
    quality = field_of(record, QUALITY_FIELD)
    # numbers.Real: numpy's scalars too (a record from a DataFrame); bool is no quality
    return isinstance(quality, numbers.Real) and not isinstance(quality, bool) and quality < FLAT_QUALITY


class ParseHashesDoFn(beam.DoFn):
    """Like :class:`HashBatchDoFn`, for records that already carry their hash as hex in
    ``hash_column`` (written by an earlier run, or by another tool): nothing is decoded. A missing
    value, bad hex, or a hash of another width goes to ``failed`` with the reason. Image sizes are
    unknown, so ``keep="largest"`` falls back to the smallest id."""

    def __init__(self, config: HashConfig):
        self._c = config
        self._width = config.hash_bytes
        self._metrics = DedupMetrics()

    def process(self, batch: List[dict]) -> Iterable:
        self._metrics.inputs.inc(len(batch))
        values = [field_of(r, self._c.hash_column) for r in batch]
        packed, errors = parse_hex_hashes(values, self._c.bits)
        out: List[Hashed] = []
        for i, (record, error) in enumerate(zip(batch, errors)):
            reason = not_a_record(record)
            if reason is not None or error is not None:
                yield failed_output(record, reason or f"{self._c.hash_column}: {error}", self._c.hash_field,
                                    self._c.image_field, self._metrics)
                continue
            h = packed[i * self._width:(i + 1) * self._width]
            try:
                owner = record_id(record, self._c.id_field)
            except BadRecord as e:
                yield failed_output(record, str(e), self._c.hash_field, self._c.image_field, self._metrics)
                continue
            if owner is None:  # no bytes to tell it from a copy by: every record of a hash would look alike
                yield failed_output(record, f"no {self._c.id_field!r}: a record that carries its hash in "
                                    f"{self._c.hash_column!r} needs an id", self._c.hash_field,
                                    self._c.image_field, self._metrics)
                continue
            kept = encodable_image(with_fields(record, **{self._c.hash_field: h.hex()}), self._c.image_field)
            flat = given_flat(record)
            if flat:
                self._metrics.flat_images.inc()
            out.append(Hashed(h, owner, kept, flat=flat))
        # Every record that could not be used counts, those without an id too.
        yield beam.pvalue.TaggedOutput(TALLY, Tally(len(batch), len(batch) - len(out), 0))
        if out:
            yield out


@dataclass(frozen=True)
class HashConfig:
    """How records are hashed (see ``ImagePhashDedup`` for each argument). Validates itself."""

    algorithm: str = "phash"
    hash_size: int = 16
    image_field: str = "image"
    hash_field: str = "image_phash"
    id_field: Optional[str] = "id"
    batch_size: int = 128
    threads: Optional[int] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    dihedral: bool = False
    hash_column: Optional[str] = None

    def __post_init__(self):
        int_in("hash_size", self.hash_size, MIN_HASH_SIZE, MAX_HASH_SIZE)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {self.algorithm!r}")
        if not isinstance(self.dihedral, bool):
            raise ValueError(f"dihedral must be True or False, got {self.dihedral!r}")
        text("hash_column", self.hash_column, optional=True)
        if self.hash_column is not None and self.dihedral:
            raise ValueError("dihedral=True needs the images (their rotations are hashed); "
                             "it cannot be used with hash_column")
        text("image_field", self.image_field)
        text("hash_field", self.hash_field)
        text("id_field", self.id_field, optional=True)
        if self.hash_field == self.image_field:
            raise ValueError(f"hash_field and image_field must differ, both are {self.hash_field!r}")
        if self.hash_field == self.id_field:
            raise ValueError(f"hash_field and id_field must differ, both are {self.hash_field!r}")
        if self.hash_column is not None and self.hash_column == self.id_field:
            # every record of a hash would carry one id, and look like a retry of its keeper
            raise ValueError(f"hash_column and id_field must differ, both are {self.hash_column!r}")
        if self.image_field == self.id_field and self.hash_column is None:  # images are read
            raise ValueError(f"image_field and id_field must differ, both are {self.image_field!r}")
        for name in ("hash_field", "image_field", "id_field"):
            if getattr(self, name) in WRITTEN_FIELDS:
                raise ValueError(f"{name} {getattr(self, name)!r} is a field the transform writes "
                                 f"({', '.join(sorted(WRITTEN_FIELDS))})")
        int_in("batch_size", self.batch_size, 1, 100_000)
        int_in("max_pixels", self.max_pixels, 1, (1 << 63) - 1)  # what the Rust core takes
        if self.threads is not None:
            int_in("hash_threads", self.threads, 1, MAX_THREADS)

    @property
    def bits(self) -> int:
        """The true bit count of the hashes."""
        return hash_bits(self.algorithm, self.hash_size)

    @property
    def hash_bytes(self) -> int:
        """Bytes of one packed hash."""
        return hash_bytes(self.bits)


class HashedOutputs(NamedTuple):
    """What ``HashImages`` returns: batches of ``Hashed``, and the records that failed (with
    ``error``, ``hash_field`` None)."""

    hashed: beam.PCollection
    failed: beam.PCollection


def rows(element) -> Iterable:
    """An input element's records: the rows of a pyarrow Table or RecordBatch (what
    ``parquetio.ReadAllFromParquetBatched`` gives), as dicts; any other element is one record."""
    if isinstance(element, (pa.Table, pa.RecordBatch)):
        return element.to_pylist()
    return (element,)


class HashImages(beam.PTransform):
    """Records -> :class:`HashedOutputs`: batches of ``Hashed`` and the failed records. With
    ``config.hash_column`` the records' hex hashes are parsed instead (nothing is decoded). A
    run whose failures pass ``failure_threshold`` fails (see ``failures``). Once applied,
    ``checked`` is the check's output: steps that must not run in a failed run (a state's
    commit) wait for it."""

    def __init__(self, config: HashConfig = HashConfig(),
                 failure_threshold: FailureThreshold = FailureThreshold(), label: Optional[str] = None):
        super().__init__(label)
        if not isinstance(config, HashConfig):
            raise ValueError(f"config must be a HashConfig, got {config!r}")
        if not isinstance(failure_threshold, FailureThreshold):
            raise ValueError(f"failure_threshold must be a FailureThreshold, got {failure_threshold!r}")
        self.config = config
        self.failure_threshold = failure_threshold

    def expand(self, records):
        c = self.config
        batches = records | "Rows" >> beam.FlatMap(rows) | "Batch" >> beam.BatchElements(
            min_batch_size=min(16, c.batch_size), max_batch_size=c.batch_size)
        step = ParseHashesDoFn(c) if c.hash_column is not None else HashBatchDoFn(c)
        hashed = batches | ("ParseHashes" if c.hash_column else "Hash") >> beam.ParDo(step).with_outputs(
            FAILED, TALLY, main="hashed")
        self.checked = hashed[TALLY] | "CheckFailures" >> CheckFailures(self.failure_threshold)
        return HashedOutputs(hashed.hashed, hashed[FAILED])
