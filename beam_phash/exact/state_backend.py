"""The state backend of exact dedup: records keyed by their raw hash, the first claimant's id in
Beam state. Runs wherever the runner supports state (DirectRunner, Flink, Dataflow) and needs no
server; its workers never import Ray."""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from beam_phash.metrics import DedupMetrics
from beam_phash.records import MATCHED_FIELD, Hashed, check_hashes, emit, keeper_label


class StateDedupDoFn(beam.DoFn):
    """Keyed by raw hash; keeps the keeper's owner (the first claimant) in state. Runs wherever the runner
    supports state (DirectRunner, Flink, Dataflow) and needs no server. State commits with the
    bundle, so a retried bundle sees the state as it was before it."""

    KEEPER = ReadModifyWriteStateSpec("keeper", StrUtf8Coder())

    def __init__(self):
        self._metrics = DedupMetrics()

    def process(self, element: Tuple[bytes, Tuple[str, dict]],
                keeper=beam.DoFn.StateParam(KEEPER)) -> Iterable:
        _, (owner, record) = element
        first = keeper.read()
        if first is None:
            keeper.write(owner)
            first = owner
        yield emit(record, None if first == owner else keeper_label(first), self._metrics, **{MATCHED_FIELD: "input"})


def key_by_hash(batch: List[Hashed], hash_bytes: Optional[int] = None) -> Iterable[Tuple[bytes, Tuple[str, dict]]]:
    """Each record by its hash; with ``hash_bytes``, every hash checked to be that wide."""
    if hash_bytes is not None:
        check_hashes(batch, hash_bytes, 0, "ExactDedup")
    for h in batch:
        yield h.hash, (h.owner, h.record)
