"""The hashing step: one ``hash_images`` call (Rust, GIL released, all cores) per batch."""
from __future__ import annotations

import time
from typing import Iterable, List, NamedTuple, Optional

import apache_beam as beam

from beam_phash._native import FLAT_QUALITY, InternalError, PHash, hash_images, parse_hex_hashes
from beam_phash.failures import TALLY, Tally
from beam_phash.metrics import DedupMetrics
from beam_phash.records import (
    ERROR_FIELD,
    FAILED,
    QUALITY_FIELD,
    BadRecord,
    encodable_image,
    image_bytes,
    record_id,
    surrogate_owner,
    with_fields,
)


def failed_output(record, reason: str, hash_field: str, image_field: str, metrics: DedupMetrics):
    """A record that could not be hashed, for the ``failed`` tag: no hash, the reason in ``error``."""
    metrics.failed.inc()
    out = with_fields(record, **{hash_field: None, ERROR_FIELD: reason})
    return beam.pvalue.TaggedOutput(FAILED, encodable_image(out, image_field))


class Hashed(NamedTuple):
    """A record that hashed: its raw hash, the id that claims it, and the output record."""

    hash: bytes
    owner: str
    record: dict
    pixels: int = 0  # width x height of the upright image
    variants: tuple = ()  # the 8 dihedral hashes, with dihedral=True
    flat: bool = False  # quality under FLAT_QUALITY: near-duplicate dedup matches it exactly only


class HashBatchDoFn(beam.DoFn):
    """Consumes lists of records (from BatchElements) and emits, per input batch, one list of
    ``Hashed`` on the main output; records that cannot be hashed go to the ``failed`` tag with an
    ``error`` reason and ``hash_field=None``; and the batch's ``failures.Tally`` on ``tally``."""

    def __init__(self, *, algorithm: str, hash_size: int, image_field: str, hash_field: str,
                 id_field: Optional[str], threads: Optional[int], max_pixels: int,
                 dihedral: bool = False):
        self._algorithm = algorithm
        self._hash_size = hash_size
        self._image_field = image_field
        self._hash_field = hash_field
        self._id_field = id_field
        self._threads = threads
        self._max_pixels = max_pixels
        self._dihedral = dihedral
        self._metrics = DedupMetrics()

    def _failed(self, record, reason: str):
        return failed_output(record, reason, self._hash_field, self._image_field, self._metrics)

    def process(self, batch: List[dict]) -> Iterable:
        self._metrics.inputs.inc(len(batch))
        blobs, pending = [], []
        for record in batch:
            try:
                blobs.append(image_bytes(record, self._image_field))
                pending.append(record)
            except BadRecord as e:
                yield self._failed(record, str(e))
        failed, internal = len(batch) - len(blobs), 0
        if not blobs:
            yield beam.pvalue.TaggedOutput(TALLY, Tally(len(batch), failed, 0))
            return
        started = time.perf_counter()
        results = hash_images(blobs, algorithm=self._algorithm, hash_size=self._hash_size,
                              threads=self._threads, max_pixels=self._max_pixels, dihedral=self._dihedral)
        self._metrics.hash_batch_latency_ms.update(int((time.perf_counter() - started) * 1000))
        self._metrics.hash_batch_size.update(len(blobs))
        out: List[Hashed] = []
        for record, data, result in zip(pending, blobs, results):
            if not isinstance(result, PHash):
                if isinstance(result, InternalError):
                    internal += 1
                    self._metrics.internal_errors.inc()
                else:
                    failed += 1
                yield self._failed(record, str(result))
                continue
            owner = record_id(record, self._id_field) or surrogate_owner(data)
            kept = encodable_image(with_fields(record, **{self._hash_field: result.hex(), QUALITY_FIELD: result.quality}),
                                   self._image_field)
            variants = tuple(bytes(v) for v in result.variants) if self._dihedral else ()
            flat = result.quality < FLAT_QUALITY
            if flat:
                self._metrics.flat_images.inc()
            out.append(Hashed(bytes(result), owner, kept, result.width * result.height, variants, flat))
        yield beam.pvalue.TaggedOutput(TALLY, Tally(len(batch), failed, internal))
        if out:
            yield out


class ParseHashesDoFn(beam.DoFn):
    """Like :class:`HashBatchDoFn`, for records that already carry their hash as hex in
    ``hash_column`` (written by an earlier run, or by another tool): nothing is decoded. A missing
    value, bad hex, or a hash of another width goes to ``failed`` with the reason. Image sizes are
    unknown, so ``keep="largest"`` falls back to the smallest id."""

    def __init__(self, *, bits: int, hash_column: str, hash_field: str, image_field: str,
                 id_field: Optional[str]):
        self._bits = bits
        self._hash_column = hash_column
        self._hash_field = hash_field
        self._image_field = image_field
        self._id_field = id_field
        self._width = (bits + 7) // 8
        self._metrics = DedupMetrics()

    def process(self, batch: List[dict]) -> Iterable:
        self._metrics.inputs.inc(len(batch))
        values = [r.get(self._hash_column) if isinstance(r, dict) else None for r in batch]
        packed, errors = parse_hex_hashes(values, self._bits)
        yield beam.pvalue.TaggedOutput(TALLY, Tally(len(batch), sum(e is not None for e in errors), 0))
        out: List[Hashed] = []
        for i, (record, error) in enumerate(zip(batch, errors)):
            if error is not None:
                yield failed_output(record, f"{self._hash_column}: {error}", self._hash_field,
                                    self._image_field, self._metrics)
                continue
            h = packed[i * self._width:(i + 1) * self._width]
            owner = record_id(record, self._id_field) or surrogate_owner(h)
            kept = encodable_image(with_fields(record, **{self._hash_field: h.hex()}), self._image_field)
            out.append(Hashed(h, owner, kept))
        if out:
            yield out
