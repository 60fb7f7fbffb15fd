"""Records that failed before they reached the dedup transform: a broken shard, a sample without
an image, a repeated key, an img2dataset row whose download failed.

They are written with the transform's failed records, shaped like them (``hash_field`` None,
``error`` the reason), and counted as the transform counts its own: each is one ``inputs`` and
one ``failed`` in the ``beam_phash`` namespace, so ``inputs = kept + duplicates + failed`` holds
for the whole job.
"""
from __future__ import annotations

import apache_beam as beam

from beam_phash.metrics import DedupMetrics
from beam_phash.records import ERROR_FIELD


class CountReadFailuresDoFn(beam.DoFn):
    def __init__(self, hash_field: str):
        self._hash_field = hash_field

    def setup(self):
        self._metrics = DedupMetrics()

    def process(self, record: dict):
        self._metrics.inputs.inc()
        self._metrics.failed.inc()
        out = dict(record)
        out[self._hash_field] = None
        out.setdefault(ERROR_FIELD, "unreadable input")
        yield out


def with_read_failures(outputs, read_failed, hash_field: str):
    """``DedupOutputs`` whose ``failed`` also holds the (counted) read failures."""
    counted = read_failed | "CountReadFailures" >> beam.ParDo(CountReadFailuresDoFn(hash_field))
    failed = (outputs.failed, counted) | "AllFailed" >> beam.Flatten()
    return outputs._replace(failed=failed)
