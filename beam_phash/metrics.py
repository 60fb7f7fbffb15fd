"""All Beam metrics of beam-phash, under one namespace."""
from __future__ import annotations

from apache_beam.metrics import Metrics

NAMESPACE = "beam_phash"


class DedupMetrics:
    """Counters and distributions. Invariant: inputs == kept + duplicates + failed."""

    def __init__(self) -> None:
        self.inputs = Metrics.counter(NAMESPACE, "inputs")
        self.kept = Metrics.counter(NAMESPACE, "kept")
        self.duplicates = Metrics.counter(NAMESPACE, "duplicates")
        self.failed = Metrics.counter(NAMESPACE, "failed")
        self.hash_batch_latency_ms = Metrics.distribution(NAMESPACE, "hash_batch_latency_ms")
        self.hash_batch_size = Metrics.distribution(NAMESPACE, "hash_batch_size")
        self.backend_call_latency_ms = Metrics.distribution(NAMESPACE, "backend_call_latency_ms")
        # Near-duplicate dedup: pairs found within max_distance, and band groups over the cap
        # (and their members), where only a window of neighbours was checked.
        self.near_dup_pairs = Metrics.counter(NAMESPACE, "near_dup_pairs")
        self.band_groups_capped = Metrics.counter(NAMESPACE, "band_groups_capped")
        self.band_group_records_capped = Metrics.counter(NAMESPACE, "band_group_records_capped")
