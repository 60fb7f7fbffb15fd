"""Turning a backend's answer ("who claimed this hash first") into kept/duplicate outputs.
Shared by both backends, so they label records identically."""
from __future__ import annotations

from typing import Optional

import apache_beam as beam

from beam_phash.metrics import DedupMetrics
from beam_phash.records import DUPLICATE_OF_FIELD, DUPLICATES, MATCHED_FIELD, with_fields


def emit(record: dict, keeper: Optional[str], metrics: DedupMetrics, **fields):
    """``keeper`` is the backend's answer: None where this record is its hash's keeper (its first
    claimant, or a retry of it), else the keeper's id ("" for a keeper without an id). A
    duplicate also gets ``fields``."""
    if keeper is None:
        metrics.kept.inc()
        return record
    metrics.duplicates.inc()
    matched = fields.get(MATCHED_FIELD)
    if matched == "reference":
        metrics.reference_matches.inc()
    elif matched == "state":
        metrics.state_matches.inc()
    return beam.pvalue.TaggedOutput(DUPLICATES, with_fields(record, **{DUPLICATE_OF_FIELD: keeper or None}, **fields))
