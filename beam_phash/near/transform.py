"""``NearDedup``: near-duplicate dedup of hashed records on Beam shuffles, over packed batches.

Input: lists of :class:`~beam_phash.hash_dofn.Hashed`. Output: the kept records and, tagged
``duplicates``, the dropped ones with ``duplicate_of`` (a kept record within ``max_distance``
bits) and ``distance``. Image bytes never enter the stages between ``Pack`` and ``JoinFates``;
every element there is a packed batch (``batches``), thousands of images per element.

1. ``Pack``: each record keyed by its image key (hash, and variants with dihedral) for the final
   join; its (key, rank, owner) packed per exact partition (a digest of the key).
2. ``GroupExact``/``Collapse``: per exact partition, identical keys become one image with a
   compact id (partition << 40 | index); its best-ranked record represents it.
3. ``BandSplit``/``GroupBand``/``Search``: per group of bands of the layout (or per band,
   sub-block and sub-block prefix with ``band_partition_bits``), the Rust banded search finds the
   pairs within k that qualify first there (exact recall, each pair once), and reduces them to a
   spanning forest.
4. ``GroupForests``/``Components``: the one global step, a union-find over the forests' edges in
   compact form: 12 bytes per image that has a neighbour (ids and parents), plus one forest batch.
5. ``JoinComponents``/``Attach``: images with a neighbour and the edges, keyed by the partition
   of their component; ``GroupComponents``/``Resolve``: greedy keep-by-rank per set of whole
   components, in Rust.
6. ``JoinFates``/``Apply``: each dropped image's fate goes back to its records by key.

Fixed images (``fixed.py``: an earlier run's kept hashes from ``state``, and a reference set)
join at step 3 as packed batches; the search names the best fixed image near each new image, and
``Attach`` drops that new image as its duplicate: it leaves the graph. With ``state``, ``Apply`` also emits the kept hashes, which
``NearState.commit`` adds to the state directory once every record has its fate.

Memory: no step holds the whole graph. A band partition holds its images (ids, hashes) and the
edges it found; the global step 12 bytes per image with a neighbour; a resolve partition its
components' images and edges.
"""
from __future__ import annotations

from typing import Optional

import apache_beam as beam

from beam_phash._native import near_layout
from beam_phash.near import dofns
from beam_phash.near.policy import check_keep
from beam_phash.near.state import NearState

#: The band layout's default count of images (``near_layout``'s own default).
DEFAULT_COUNT = 1_000_000
from beam_phash.records import DUPLICATES, KEPT


class NearDedup(beam.PTransform):
    """Hashed batches -> kept records (main) and duplicates (tag ``duplicates``).

    Args:
      max_distance: k; pairs within k bits are near-duplicates.
      bits: the true bit count of the hashes.
      hash_bytes: bytes per hash (``ceil(bits / 8)``).
      dihedral: the records carry the 8 dihedral variant hashes.
      keep: ``"largest"`` or ``"smallest_id"`` (see ``policy``).
      partitions: exact and resolve partitions (parallelism of those stages).
      band_partition_bits: 0: the bands are searched in ``search_partitions`` groups, each
        holding every distinct hash; b > 0: one partition per band, sub-block and b-bit
        sub-block prefix (for inputs too large for one worker).
      search_partitions: with ``band_partition_bits`` = 0, how many band groups are searched in
        parallel; each is one copy of the hashes through the shuffle. With fixed images (a
        state or a reference) one group holds every band, searched on all the worker's cores.
      expected_count: about how many distinct images, for the band layout's cost model
        (references included; the state's rows are added).
      fixed: a PCollection of ``batches.Fixed`` (a reference set), or None.
      state: a :class:`NearState`: its images are fixed too, and this run's kept ones are
        added to it.
    """

    def __init__(self, max_distance: int, bits: int, hash_bytes: int, dihedral: bool = False,
                 keep: str = "largest", partitions: int = 16, band_partition_bits: int = 0,
                 search_partitions: int = 4, expected_count: Optional[int] = None,
                 fixed=None, state: Optional[NearState] = None, label: Optional[str] = None):
        super().__init__(label)
        self._fixed = fixed
        self._state = state
        self._k = max_distance
        self._bits = bits
        self._hash_bytes = hash_bytes
        self._dihedral = dihedral
        self._keep = check_keep(keep)
        self._partitions = partitions
        self._prefix_bits = band_partition_bits
        with_fixed = fixed is not None or (state is not None and bool(state.manifest["segments"]))
        self._with_fixed = with_fixed
        count = None
        if expected_count is not None or with_fixed:
            count = (expected_count or DEFAULT_COUNT) * (9 if dihedral else 1)
            count += 0 if state is None else state.manifest["rows"]
        self.layout = near_layout(bits, max_distance, count)
        # Fixed images are many and cheap to search (never paired with each other), costly to
        # copy: then one group holds every band, searched in parallel on the worker's cores.
        self._search_partitions = 1 if with_fixed else min(search_partitions, len(self.layout))

    def _fixed_batches(self, pipeline):
        """Fixed batches from the state and the reference, or None."""
        sources = []
        if self._state is not None and self._state.manifest["segments"]:
            sources.append(pipeline | "ReadState" >> self._state)
        if self._fixed is not None:
            sources.append(self._fixed)
        if not sources:
            return None
        batches = sources[0] if len(sources) == 1 else tuple(sources) | "AllFixed" >> beam.Flatten()
        return batches | "FixedWindow" >> beam.WindowInto(beam.window.GlobalWindows())

    def expand(self, hashed):
        packed = (hashed
                  | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                  | "Pack" >> beam.ParDo(dofns.PackDoFn(self._keep, self._partitions)).with_outputs(
                      dofns.ROWS, main="records"))
        collapsed = (packed[dofns.ROWS]
                     | "GroupExact" >> beam.GroupByKey()
                     | "Collapse" >> beam.ParDo(dofns.CollapseDoFn(self._hash_bytes, self._dihedral, self._with_fixed)).with_outputs(
                         dofns.CLASSES, main="images"))
        fixed = self._fixed_batches(hashed.pipeline)
        images = collapsed.images
        if fixed is not None:
            images = (images, fixed) | "WithFixed" >> beam.Flatten()
        searched = (images
                    | "BandSplit" >> beam.ParDo(dofns.BandSplitDoFn(
                        self.layout, self._hash_bytes, self._prefix_bits, self._search_partitions))
                    | "GroupBand" >> beam.GroupByKey()
                    | "Search" >> beam.ParDo(dofns.SearchDoFn(
                        self._bits, self._k, self.layout, self._hash_bytes, self._prefix_bits,
                        self._search_partitions)).with_outputs(
                        dofns.FOREST, dofns.NAMED, main="edges"))
        assigned = (searched[dofns.FOREST]
                    | "OneGraph" >> beam.Map(lambda forest: (0, forest))
                    | "GroupForests" >> beam.GroupByKey()
                    | "Components" >> beam.ParDo(dofns.ComponentsDoFn()))
        joined = {dofns.CLASSES: collapsed[dofns.CLASSES], "assigned": assigned, "edges": searched.edges,
                  "named": searched[dofns.NAMED]}
        attached = (joined
                    | "JoinComponents" >> beam.CoGroupByKey()
                    | "Attach" >> beam.ParDo(dofns.AttachDoFn()).with_outputs(dofns.FATES, main="nodes"))
        resolved = (attached.nodes
                    | "GroupComponents" >> beam.GroupByKey()
                    | "Resolve" >> beam.ParDo(dofns.ResolveDoFn()))
        fates = (resolved, attached[dofns.FATES]) | "AllFates" >> beam.Flatten()
        applied = ({"records": packed.records, "fate": fates}
                   | "JoinFates" >> beam.CoGroupByKey()
                   | "Apply" >> beam.ParDo(dofns.ApplyDoFn(
                       self._hash_bytes if self._state is not None else 0, self._partitions)).with_outputs(
                       DUPLICATES, dofns.KEPT_ROWS, main=KEPT))
        if self._state is not None:
            _ = self._state.commit(applied[dofns.KEPT_ROWS])
        return applied[KEPT], applied[DUPLICATES]
