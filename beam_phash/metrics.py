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
        # Near-duplicate dedup: distinct images, pairs within max_distance, candidate pairs
        # compared by popcount, runs of >= 1024 equal band values brute-forced (degenerate,
        # near-uniform hashes), and images that have a neighbour (the global union-find's size).
        self.near_images = Metrics.counter(NAMESPACE, "near_images")
        self.near_dup_pairs = Metrics.counter(NAMESPACE, "near_dup_pairs")
        self.near_candidates = Metrics.counter(NAMESPACE, "near_candidates")
        self.near_big_runs = Metrics.counter(NAMESPACE, "near_big_runs")
        self.near_graph_images = Metrics.counter(NAMESPACE, "near_graph_images")
        # The reference set: references hashed (or parsed), and those that could not be; the
        # duplicates that matched a reference or an earlier run's state (not inputs: see records).
        self.references = Metrics.counter(NAMESPACE, "references")
        self.reference_failed = Metrics.counter(NAMESPACE, "reference_failed")
        self.reference_matches = Metrics.counter(NAMESPACE, "reference_matches")
        self.state_matches = Metrics.counter(NAMESPACE, "state_matches")
        # Images whose quality is under FLAT_QUALITY (blank, flat): matched by identical hash only.
        self.flat_images = Metrics.counter(NAMESPACE, "flat_images")
        # Inputs the Rust code failed on (a caught panic: a bug, see failures.py); also in failed.
        self.internal_errors = Metrics.counter(NAMESPACE, "internal_errors")
