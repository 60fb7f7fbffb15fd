"""Turning a backend's answer ("who claimed this hash first") into kept/duplicate outputs.
Shared by both backends, so they label records identically."""
from __future__ import annotations

from typing import Optional

import apache_beam as beam

from beam_phash.metrics import DedupMetrics
from beam_phash.records import DUPLICATE_OF_FIELD, DUPLICATES, SURROGATE_PREFIX, with_fields


def emit(record: dict, owner: str, first_owner: str, metrics: DedupMetrics):
    """The record is kept when it is the hash's first claimant (or a retry of it)."""
    if first_owner == owner:
        metrics.kept.inc()
        return record
    metrics.duplicates.inc()
    keeper: Optional[str] = None if first_owner.startswith(SURROGATE_PREFIX) else first_owner
    return beam.pvalue.TaggedOutput(DUPLICATES, with_fields(record, **{DUPLICATE_OF_FIELD: keeper}))
