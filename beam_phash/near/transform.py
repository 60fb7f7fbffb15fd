"""``NearDedup``: near-duplicate dedup of hashed records on Beam shuffles, over packed batches.

Input: lists of :class:`~beam_phash.records.Hashed`. Output: the kept records and, tagged
``duplicates``, the dropped ones with ``duplicate_of`` (a kept record within ``max_distance``
bits) and ``distance``. Image bytes never enter the stages between ``Pack`` and ``JoinFates``;
every element there is a packed batch (``batches``), thousands of images per element.

1. ``Pack``: each record keyed by its image key (hash, variants with dihedral, and whether it is
   flat) for the final join; its (key, rank, owner) packed per exact partition (a digest of the
   key).
2. ``GroupExact``/``Collapse``: per exact partition, identical keys become one image with a
   compact id (partition << 40 | index); its best-ranked record represents it.
3. ``BandSplit``/``GroupBand``/``Search``: per group of bands of the layout (or per band,
   sub-block and sub-block prefix with ``band_partition_bits``), the Rust banded search finds the
   pairs within k that qualify first there (exact recall, each pair once), and reduces them to a
   spanning forest: only the forest leaves the partition. Flat images take part in the first
   band only, at distance 0.
4. ``GroupForests``/``Components``: the one global step, a union-find over the forests' edges in
   compact form: 12 bytes per image that has a neighbour (ids and parents), plus one forest batch.
5. ``JoinComponents``/``Attach``: images with a neighbour and their component, keyed by the
   partition of that component; ``GroupComponents``/``Resolve``: greedy keep-by-rank per set of
   whole components, in Rust, each image compared by popcount with its component's kept images
   (no edges: a pair of one component within k is always an edge, the search's recall being
   exact).
6. ``JoinFates``/``Apply``: each dropped image's fate goes back to its records by key.

Fixed images (``fixed.py``: an earlier run's kept hashes from ``state``, and a reference set)
join at step 3 as packed batches; the search names the best fixed image near each new image, and
``Attach`` drops that new image as its duplicate: it leaves the graph. With ``state``, ``Apply`` also emits the kept hashes, which
``CommitState`` adds to the state directory once every record has its fate.

Memory: no step holds the whole graph, and no shuffle carries more edges than images. A band
partition holds its images (ids, hashes), a union-find over them (4 bytes each) and at most 1M
pairs found but not yet joined per band searched at once; the global step 12 bytes per image with a neighbour; a resolve
partition its components' images. A tight group of c images (every two within k) still costs
its band partition c^2 / 2 pair checks of time, but no memory per pair.
"""
from __future__ import annotations

import copy
import os
import uuid
from typing import Any, Optional

import apache_beam as beam

from beam_phash import state_manifest
from beam_phash._native import near_layout
from beam_phash.checks import bounded, int_in
from beam_phash.hashing import HashConfig
from beam_phash.near import dofns
from beam_phash.near.config import NearConfig
from beam_phash.near.policy import recommended_max_distance
from beam_phash.near.state import CommitState, NearState, open_state
from beam_phash.records import DUPLICATES, KEPT
from beam_phash.run_end import RunEnd, claim_state_dir
from beam_phash.windowed import with_window

#: The band layout's default count of images (``near_layout``'s own default).
DEFAULT_COUNT = 1_000_000


class NearDedup(RunEnd, beam.PTransform):
    """Hashed batches -> kept records (main) and duplicates (tag ``duplicates``).

    ``NearDedup(NearConfig(max_distance=16), hashing=HashConfig(...))``: ``config`` says how
    (see :class:`NearConfig`), ``hashing`` what the hashes are (algorithm, size, and whether the
    records carry their 8 dihedral variants). With one search group per band group
    (``search_partitions``), or with fixed images (a state or a reference) one group holding
    every band, searched on all the worker's cores.

    Args:
      config: the near-duplicate settings; ``max_distance="auto"`` is resolved here.
      hashing: the ``HashConfig`` the records were hashed with.
      fixed: a PCollection of ``batches.Fixed`` (a reference set), or None.
    """

    def __init__(self, config: NearConfig = NearConfig(), hashing: HashConfig = HashConfig(),
                 fixed=None, label: Optional[str] = None):
        super().__init__(label)
        if not isinstance(config, NearConfig):
            raise ValueError(f"config must be a NearConfig, got {config!r}")
        if not isinstance(hashing, HashConfig):
            raise ValueError(f"hashing must be the HashConfig the records were hashed with, got {hashing!r}")
        self.config = config
        self.hashing = hashing
        self._fixed = fixed
        self._init_end()
        self._bits = hashing.bits
        self.max_distance = (recommended_max_distance(hashing.algorithm, hashing.hash_size)
                             if config.max_distance == "auto" else config.max_distance)
        int_in("max_distance", self.max_distance, 0, self._bits - 1)
        self._hash_bytes = hashing.hash_bytes
        self._dihedral = hashing.dihedral
        self._keep = config.keep
        self._partitions = config.partitions
        self._prefix_bits = config.band_partition_bits
        if config.state_dir is not None:  # refused now, not when the pipeline is built
            open_state(config.state_dir, hashing.algorithm, hashing.hash_size, self._bits, create=False)
            state_manifest.check_writable(config.state_dir, create=False)

    def with_fixed(self, fixed) -> "NearDedup":
        """The same transform, with ``fixed`` (a PCollection of ``batches.Fixed``, a reference
        set) already kept: inputs within k of one are its duplicates."""
        other = copy.copy(self)
        other._fixed = fixed
        return other

    def _open_state(self, pipeline) -> Optional[NearState]:
        if self.config.state_dir is None:
            return None
        state_dir = os.path.abspath(self.config.state_dir)
        claim_state_dir(pipeline, state_dir)
        manifest = open_state(state_dir, self.hashing.algorithm, self.hashing.hash_size, self._bits, create=True)
        return NearState(state_dir, manifest, uuid.uuid4().hex, self._partitions)

    def _plan(self, state: Optional[NearState]):
        """The band layout and the number of search groups, from the expected count (and the
        state's rows)."""
        fixed, expected = self._fixed, self.config.expected_count
        with_fixed = fixed is not None or (state is not None and bool(state.manifest["segments"]))
        count = None
        if expected is not None or with_fixed:
            count = (expected or DEFAULT_COUNT) * (9 if self._dihedral else 1)
            count += 0 if state is None else state.manifest["rows"]
        layout = near_layout(self._bits, self.max_distance, count)
        # Fixed images are many and cheap to search (never paired with each other), costly to
        # copy: then one group holds every band, searched in parallel on the worker's cores.
        groups = 1 if with_fixed else min(self.config.search_partitions, len(layout))
        return layout, groups

    def _fixed_batches(self, pipeline, state: Optional[NearState]):
        """Fixed batches from the state and the reference, or None. A state is read even when
        it has no segments yet: its check (``CheckState``) then still comes before the search,
        so a refused run gives no record a fate on a new state directory either."""
        sources = []
        if state is not None:
            sources.append(pipeline | "ReadState" >> state)
        if self._fixed is not None:
            sources.append(self._fixed)
        if not sources:
            return None
        batches = sources[0] if len(sources) == 1 else tuple(sources) | "AllFixed" >> beam.Flatten()
        return batches | "FixedWindow" >> beam.WindowInto(beam.window.GlobalWindows())

    def expand(self, hashed):
        bounded(hashed, "near-duplicate mode (max_distance > 0 or dihedral)")
        state = self._open_state(hashed.pipeline)
        self.layout, self._search_partitions = self._plan(state)
        # The search spans every window: it runs in the global window, and on windowed input each
        # record goes out in its own window again (with_window / ApplyDoFn), as exact mode's
        # reference join does.
        windowing = hashed.windowing
        carry = not isinstance(windowing.windowfn, beam.window.GlobalWindows)
        batches = hashed | "CarryWindow" >> beam.Map(with_window).with_output_types(Any) if carry else hashed
        packed = (batches
                  | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                  | "Pack" >> beam.ParDo(dofns.PackDoFn(self._keep, self._partitions, self._hash_bytes, self._dihedral,
                                                        carry)).with_outputs(dofns.ROWS, main="records"))
        collapsed = (packed[dofns.ROWS]
                     | "GroupExact" >> beam.GroupByKey()
                     | "Collapse" >> beam.ParDo(dofns.CollapseDoFn(self._hash_bytes, self._dihedral)).with_outputs(
                         dofns.CLASSES, main="images"))
        fixed = self._fixed_batches(hashed.pipeline, state)
        images = collapsed.images
        if fixed is not None:
            images = (images, fixed) | "WithFixed" >> beam.Flatten()
        searched = (images
                    | "BandSplit" >> beam.ParDo(dofns.BandSplitDoFn(
                        self.layout, self._hash_bytes, self._prefix_bits, self._search_partitions))
                    | "GroupBand" >> beam.GroupByKey()
                    | "Search" >> beam.ParDo(dofns.SearchDoFn(
                        self._bits, self.max_distance, self.layout, self._hash_bytes, self._prefix_bits,
                        self._search_partitions)).with_outputs(
                        dofns.NAMED, main="forest"))
        assigned = (searched.forest
                    | "OneGraph" >> beam.Map(lambda forest: (0, forest))
                    | "GroupForests" >> beam.GroupByKey()
                    | "Components" >> beam.ParDo(dofns.ComponentsDoFn()))
        joined = {dofns.CLASSES: collapsed[dofns.CLASSES], "assigned": assigned, "named": searched[dofns.NAMED]}
        attached = (joined
                    | "JoinComponents" >> beam.CoGroupByKey()
                    | "Attach" >> beam.ParDo(dofns.AttachDoFn()).with_outputs(dofns.FATES, main="nodes"))
        resolved = (attached.nodes
                    | "GroupComponents" >> beam.GroupByKey()
                    | "Resolve" >> beam.ParDo(dofns.ResolveDoFn(self._hash_bytes, self._dihedral, self.max_distance)))
        fates = (resolved, attached[dofns.FATES]) | "AllFates" >> beam.Flatten()
        applied = ({"records": packed.records, "fate": fates}
                   | "JoinFates" >> beam.CoGroupByKey()
                   | "Apply" >> beam.ParDo(dofns.ApplyDoFn(
                       self._hash_bytes if state is not None else 0, self._partitions)).with_outputs(
                       DUPLICATES, dofns.KEPT_ROWS, main=KEPT))
        end = None
        if state is not None:
            kept_rows, before = applied[dofns.KEPT_ROWS], self._after
            end = lambda after, label: kept_rows | label >> CommitState(state, (*before, *after))  # noqa: E731
        kept, duplicates = applied[KEPT], applied[DUPLICATES]
        self._end(hashed.pipeline, end, "CommitState", None if state is None else state.committed, (kept, duplicates))
        kept._windowing = duplicates._windowing = windowing
        return kept, duplicates
