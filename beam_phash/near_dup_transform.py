"""Near-duplicate dedup as Beam shuffles: exact groups, band groups, verification, resolution.

Input: lists of :class:`~beam_phash.hash_dofn.Hashed` (from the hashing step). Output: the kept
records and, tagged ``duplicates``, the dropped ones with ``duplicate_of`` (a kept record within
``max_distance`` bits) and ``distance``. The stages (see ``near_dup`` for the guarantees):

1. ``GroupExact``: records with an identical hash (and identical dihedral variants) collapse to
   one graph node, the best ranked of them; the others follow it.
2. ``GroupByBand``: each node under each of its k+1 band keys (per variant with dihedral);
   ``VerifyBand`` checks the pairs of each group by popcount and emits the edges within k bits.
3. ``Resolve``: the edges, on one worker, greedy by rank: which nodes are dropped, for whom.
4. ``Followers``/``Apply``: the decisions go back to every record by its node key (its id and
   a digest of its hashes, so two images that share an id are still judged apart).

Nodes without any near neighbour never reach stage 3, so its memory is that of the
near-duplicate graph (the images that have a neighbour, and their edges), not of the input.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import apache_beam as beam

from beam_phash import near_dup
from beam_phash.hash_dofn import Hashed
from beam_phash.metrics import DedupMetrics
from beam_phash.outcome import emit
from beam_phash.records import DISTANCE_FIELD, DUPLICATES, KEPT, keeper_label

_FOLLOWERS = "followers"


class NodesAndRecords(beam.DoFn):
    """Each hashed record: (node key, record) on the main output, and its graph node keyed by its
    exact hash (with the variants) on ``nodes``."""

    def __init__(self, keep: str):
        self._keep = keep

    def process(self, batch: List[Hashed]) -> Iterable:
        for h in batch:
            key = near_dup.node_key(h.owner, h.hash, h.variants)
            yield key, h.record
            node = near_dup.Node(key, near_dup.rank_of(self._keep, h.pixels, key), h.hash, h.variants)
            yield beam.pvalue.TaggedOutput("nodes", (h.hash + b"".join(h.variants), node))


class ExactGroup(beam.DoFn):
    """One node per distinct hash: the best ranked; the others follow it (distance 0)."""

    def process(self, element: Tuple[bytes, Iterable[near_dup.Node]]) -> Iterable:
        _, nodes = element
        nodes = sorted(set(nodes), key=lambda n: n.rank)
        head = nodes[0]
        yield head
        for other in nodes[1:]:
            if other.key != head.key:
                yield beam.pvalue.TaggedOutput(_FOLLOWERS, (head.key, other.key))


class VerifyBand(beam.DoFn):
    """The edges of one band group; counts the groups over the cap."""

    def __init__(self, max_distance: int, max_group: int, window: int):
        self._k = max_distance
        self._max_group = max_group
        self._window = window
        self._metrics = DedupMetrics()

    def process(self, element: Tuple[bytes, Iterable[near_dup.Node]]) -> Iterable[near_dup.Edge]:
        _, nodes = element
        nodes = list(nodes)
        if len(nodes) < 2:
            return
        edges, overflow = near_dup.verify_group(nodes, self._k, self._max_group, self._window)
        if overflow:
            self._metrics.band_groups_capped.inc()
            self._metrics.band_group_records_capped.inc(len(nodes))
        self._metrics.near_dup_pairs.inc(len(edges))
        yield from edges


class Resolve(beam.DoFn):
    """All edges at once: (dropped node, (kept node, distance)) for every dropped node."""

    def process(self, element: Tuple[int, Iterable[near_dup.Edge]]) -> Iterable:
        _, edges = element
        yield from near_dup.resolve(edges).items()


def _follow(element: Tuple[str, dict]) -> Iterable[Tuple[str, Tuple[str, int]]]:
    """A node's followers share its fate: dropped for its keeper, or duplicates of it."""
    head, joined = element
    decision: Optional[Tuple[str, int]] = next(iter(joined["decision"]), None)
    if decision is not None:
        yield head, decision
    for follower in joined[_FOLLOWERS]:
        yield follower, decision if decision is not None else (head, 0)


class Apply(beam.DoFn):
    """Every record gets its owner's decision: kept, or a duplicate with ``distance``."""

    def __init__(self):
        self._metrics = DedupMetrics()

    def process(self, element: Tuple[str, dict]) -> Iterable:
        _, joined = element
        decision = next(iter(joined["decision"]), None)
        for record in joined["records"]:
            if decision is None:
                yield emit(record, None, self._metrics)
            else:
                keeper, distance = decision
                yield emit(record, keeper_label(near_dup.owner_of(keeper)), self._metrics,
                           **{DISTANCE_FIELD: distance})


class NearDupDedup(beam.PTransform):
    """Hashed batches -> kept records (main) and duplicates (tag ``duplicates``)."""

    def __init__(self, max_distance: int, bits: int, keep: str = "largest",
                 max_band_group: int = 5000, overflow_window: int = 64, label: Optional[str] = None):
        super().__init__(label)
        self._k = max_distance
        self._bands = near_dup.band_edges(bits, max_distance)
        self._keep = keep
        self._max_group = max_band_group
        self._window = overflow_window

    def expand(self, batches):
        split = (batches
                 | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                 | "NodesAndRecords" >> beam.ParDo(NodesAndRecords(self._keep)).with_outputs(
                     "nodes", main="records"))
        exact = (split.nodes
                 | "GroupExact" >> beam.GroupByKey()
                 | "OnePerHash" >> beam.ParDo(ExactGroup()).with_outputs(_FOLLOWERS, main="heads"))
        bands = self._bands
        edges = (exact.heads
                 | "BandKeys" >> beam.FlatMap(lambda node: ((key, node) for key in near_dup.band_keys(node, bands)))
                 | "GroupByBand" >> beam.GroupByKey()
                 | "VerifyBand" >> beam.ParDo(VerifyBand(self._k, self._max_group, self._window)))
        dropped_heads = (edges
                         | "OneGraph" >> beam.Map(lambda e: (0, e))
                         | "GroupGraph" >> beam.GroupByKey()
                         | "Resolve" >> beam.ParDo(Resolve()))
        decisions = ({"decision": dropped_heads, _FOLLOWERS: exact[_FOLLOWERS]}
                     | "JoinFollowers" >> beam.CoGroupByKey()
                     | "Follow" >> beam.FlatMap(_follow))
        return ({"records": split.records, "decision": decisions}
                | "JoinDecisions" >> beam.CoGroupByKey()
                | "Apply" >> beam.ParDo(Apply()).with_outputs(DUPLICATES, main=KEPT))
