"""The stages of near-duplicate dedup (see ``transform`` for the data flow). Each works on a
packed batch and hands the heavy work to one Rust kernel."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from beam_phash._native import (
    Components,
    collapse_heads,
    near_fields,
    near_resolve,
    near_search,
    spanning_forest,
)
from beam_phash.metrics import DedupMetrics
from beam_phash.near.batches import (
    FIXED_BIT,
    PARTITION_SHIFT,
    U64,
    Assigned,
    Classes,
    Edges,
    Fixed,
    Flat,
    Images,
    Members,
    Named,
    Ranked,
    concat,
    partition_of_ids,
    u8,
    u32s,
    u64s,
)
from beam_phash.near.fixed import INPUT, SOURCES, STATE, fixed_batch, named_by_partition
from beam_phash.near.policy import primary_rank
from beam_phash.routing import bucket_of, rows_by_bucket
from beam_phash.records import DISTANCE_FIELD, MATCHED_FIELD, Hashed, check_hashes, emit, keeper_label
from beam_phash.strings import pack_owners
from beam_phash.windowed import in_window

ROWS = "rows"
CLASSES = "classes"
NAMED = "named"
FATES = "fates"
KEPT_ROWS = "kept_rows"
#: The rank of a fixed image: before every record of this run.
FIXED_RANK = (-1, "", b"")
#: Ranked rows per element, at most (a bundle's rows for one partition are sent together).
FLUSH_ROWS = 16384
#: The last byte of an image key: a flat image's, or another's (``Ranked``).
FLAT_KEY, PLAIN_KEY = b"\x01", b"\x00"


def sub_blocks(start: int, width: int, radius: int) -> List[Tuple[int, int]]:
    """The radius + 1 sub-blocks (start, width) of a band, as rust_ext/src/near/layout.rs cuts them."""
    parts = radius + 1
    return [(start + width * j // parts, width * (j + 1) // parts - width * j // parts) for j in range(parts)]


def _split(ids: np.ndarray) -> Iterable[Tuple[int, slice]]:
    """(partition, slice) of ascending ids, partition by partition."""
    parts = partition_of_ids(ids)
    bounds = np.flatnonzero(np.diff(parts)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(ids)]):
        yield int(parts[lo]), slice(int(lo), int(hi))


class PackDoFn(beam.DoFn):
    """Hashed batches -> every record keyed by its image key (hash, variants, flat flag: see
    ``Ranked``) for the final join, with its rank and owner; and the (key, rank, owner) rows
    packed per exact partition on ``rows``. With ``carry``, each batch comes with its timestamp
    and window (``windowed.with_window``), and each record carries them on to ``ApplyDoFn``
    (windowed input; in the global window they would only cost each record's pickling)."""

    def __init__(self, keep: str, partitions: int, hash_bytes: int, dihedral: bool, carry: bool = False):
        self._keep = keep
        self._partitions = partitions
        self._hash_bytes = hash_bytes
        self._variants = 8 if dihedral else 0
        self._carry = carry

    def start_bundle(self):
        self._buffers: Dict[int, Tuple[List[bytes], List[int], List[str], List[bool]]] = {}

    def _flush(self, p: int):
        keys, primary, owners, flat = self._buffers.pop(p)
        width = len(keys[0])
        rows = Ranked(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), width),
                      np.array(primary, dtype=U64), owners, np.array(flat, dtype=bool))
        return p, rows

    def process(self, element):
        batch, where = (element[0], element[1:]) if self._carry else (element, ())
        check_hashes(batch, self._hash_bytes, self._variants, "NearDedup")
        image_keys = [h.hash + b"".join(h.variants) + (FLAT_KEY if h.flat else PLAIN_KEY) for h in batch]
        # The exact partition: by the key's own bits, as the Ray backend routes (routing.py).
        for h, key, p in zip(batch, image_keys, bucket_of(image_keys, self._partitions)):
            primary = primary_rank(self._keep, h.pixels)
            yield key, (primary, h.owner, h.record, *where)
            keys, ranks, owners, flat = self._buffers.setdefault(int(p), ([], [], [], []))
            keys.append(key)
            ranks.append(primary)
            owners.append(h.owner)
            flat.append(h.flat)
            if len(keys) >= FLUSH_ROWS:
                yield beam.pvalue.TaggedOutput(ROWS, self._flush(int(p)))

    def finish_bundle(self):
        for p in sorted(self._buffers):
            yield beam.pvalue.TaggedOutput(
                ROWS, WindowedValue(self._flush(p), GlobalWindow().max_timestamp(), [GlobalWindow()]))


class CollapseDoFn(beam.DoFn):
    """One exact partition: records with an identical key become one image, ranked by its best
    record. Emits the images (ids, hashes, variants) for the band search, and on ``classes``
    their ranks and owners for the resolution. Flat images stay out of the search at k: they
    match their identical copies here, and the other images and the fixed ones at distance 0
    (emitted as ``Flat``)."""

    def __init__(self, hash_bytes: int, dihedral: bool):
        self._hash_bytes = hash_bytes
        self._dihedral = dihedral
        self._metrics = DedupMetrics()

    def _images(self, ids: np.ndarray, keys: np.ndarray) -> Images:
        hb = self._hash_bytes
        variants = keys[:, hb:9 * hb].reshape(len(ids), 8, hb) if self._dihedral else None
        return Images(ids, np.ascontiguousarray(keys[:, :hb]), None if variants is None else np.ascontiguousarray(variants))

    def process(self, element: Tuple[int, Iterable[Ranked]]):
        p, batches = element
        rows = concat(Ranked, batches)
        offsets, blob = pack_owners(rows.owners)
        key_bytes = rows.keys.shape[1]
        heads = u32s(collapse_heads(u8(rows.keys), key_bytes, u8(rows.primary), u8(offsets), blob))
        ids = (U64(p) << U64(PARTITION_SHIFT)) | np.arange(len(heads), dtype=U64)
        keys = rows.keys[heads]
        self._metrics.near_images.inc(len(heads))
        yield beam.pvalue.TaggedOutput(CLASSES, (p, Classes(ids, keys, rows.primary[heads], [rows.owners[i] for i in heads])))
        flat = rows.flat[heads]  # the key holds the flag, so identical keys share it
        yield self._images(ids[~flat], keys[~flat])
        if flat.any():
            yield Flat(self._images(ids[flat], keys[flat]))


class BandSplitDoFn(beam.DoFn):
    """A batch of images (or of fixed images) -> one copy per band group (keyed (group, -1, 0);
    group g holds bands g, g + groups, ...); with ``prefix_bits`` > 0, per band, sub-block and
    prefix of the sub-block instead (keyed (band, sub-block, prefix)), each image going to the
    prefixes of its hash and variants. Flat images, matched at distance 0 only, go to the first
    band alone (where every identical pair qualifies first)."""

    def __init__(self, layout: Sequence[Tuple[int, int, int]], hash_bytes: int, prefix_bits: int,
                 groups: int):
        self._layout = [tuple(b) for b in layout]
        self._bits = self._layout[-1][0] + self._layout[-1][1]  # the bands cover every bit
        self._hash_bytes = hash_bytes
        self._prefix_bits = prefix_bits
        self._groups = groups

    def process(self, images):
        flat = isinstance(images, Flat)
        if self._prefix_bits == 0:
            for group in range(1 if flat else self._groups):
                yield (group, -1, 0), images
            return
        if isinstance(images, Fixed):
            entries, slots = images.keys, 1
        else:
            some = images.images if flat else images
            entries = some.hashes if some.variants is None else np.concatenate(
                [some.hashes[:, None, :], some.variants], axis=1)
            slots = 1 if some.variants is None else 9
        parts = [(band, j, s, min(self._prefix_bits, w))
                 for band, (start, width, radius) in enumerate(self._layout[:1] if flat else self._layout)
                 for j, (s, w) in enumerate(sub_blocks(start, width, radius)[:1] if flat else sub_blocks(start, width, radius))]
        fields = u64s(near_fields(u8(entries), hash_bytes=self._hash_bytes, bits=self._bits,
                                  fields=[(s, w) for _, _, s, w in parts])).reshape(-1, slots, len(parts))
        for f, (band, j, _, _) in enumerate(parts):
            prefixes = fields[:, :, f]
            for value in np.unique(prefixes):
                yield (band, j, int(value)), images.take(np.flatnonzero((prefixes == value).any(axis=1)))


class SearchDoFn(beam.DoFn):
    """One band partition (a band group, or a sub-block prefix of one band): a spanning forest of
    the pairs within k it finds (``near_dup_pairs`` counts each pair of the whole search in one
    partition only), and the new images near a fixed one on ``named``. The pairs themselves go
    no further: ``Resolve`` compares each image with its component's kept ones, so a tight group
    of c images ships fewer than c edges per partition, not c^2 / 2."""

    def __init__(self, bits: int, max_distance: int, layout, hash_bytes: int, prefix_bits: int,
                 groups: int):
        self._bits = bits
        self._k = max_distance
        self._layout = [tuple(b) for b in layout]
        self._hash_bytes = hash_bytes
        self._prefix_bits = prefix_bits
        self._groups = groups
        self._metrics = DedupMetrics()

    def _search(self, images: Images, band, fixed: int, max_distance: int, forest: bool, **kwargs) -> Edges:
        a, b, d, candidates, big_runs, pairs = near_search(
            u8(images.hashes), u8(images.ids), hash_bytes=self._hash_bytes, bits=self._bits,
            max_distance=max_distance, layout=self._layout, band=band,
            variants=None if images.variants is None else u8(images.variants), fixed=fixed, forest=forest, **kwargs)
        self._metrics.near_candidates.inc(candidates)
        self._metrics.near_big_runs.inc(big_runs)
        if forest:
            self._metrics.near_dup_pairs.inc(pairs)
        return Edges(u64s(a), u64s(b), u32s(d))

    def _search_part(self, images: Images, fixed_keys: Optional[np.ndarray], part: int, sub: int, prefix: int,
                     max_distance: int, forest: bool = False) -> Edges:
        """The pairs of this partition within ``max_distance``: among the new images (with
        ``forest`` a spanning forest of them, counted in ``near_dup_pairs``) and from them to the
        fixed ones (hashes ``fixed_keys``, after the new images, with local ids: their rows). At
        distance 0 the first band finds every pair (BandSplit sends flat images there alone)."""
        n_fixed = 0 if fixed_keys is None else len(fixed_keys)
        if n_fixed:
            images = Images(np.concatenate([images.ids, FIXED_BIT | np.arange(n_fixed, dtype=U64)]),
                            np.concatenate([images.hashes, fixed_keys]), images.variants)
        if sub >= 0:
            w = sub_blocks(*self._layout[part])[sub][1]
            return self._search(images, part, n_fixed, max_distance, forest, sub=sub,
                                prefix_bits=min(self._prefix_bits, w), prefix=prefix)
        if max_distance == 0 and part != 0:
            return Edges.empty()  # the first group's first band finds them all
        # every band of the group, in parallel on the worker's cores
        bands = [0] if max_distance == 0 else list(range(part, len(self._layout), self._groups))
        return self._search(images, bands, n_fixed, max_distance, forest)

    @staticmethod
    def _named(mixed: Edges, fixed: Fixed, rows_of: Optional[np.ndarray] = None):
        """The pairs to fixed images, named; ``rows_of``: the rows of ``fixed`` that were searched
        (all when None), so that no part of a large fixed batch is copied but its keys."""
        if len(mixed.a):
            rows = (mixed.b & ~FIXED_BIT).astype(np.int64)
            if rows_of is not None:
                rows = rows_of[rows]
            for p, named in named_by_partition(mixed.a, mixed.distance, rows, fixed):
                yield beam.pvalue.TaggedOutput(NAMED, (p, named))

    def _zero(self, new: List[Images], flat: List[Images], fixed, part: int, sub: int, prefix: int):
        """The pairs with a flat end, at distance 0 (in the first band's partitions, where
        BandSplit sends the flat images): flat images against the other images and every fixed
        one, and the other images against the flat fixed ones. Yields the named pairs; returns
        the edges."""
        flat_rows = np.zeros(0, dtype=np.int64) if fixed is None else np.flatnonzero(fixed.flat)
        if not (new or flat) or not (flat or len(flat_rows)):
            return Edges.empty()
        if flat:  # against every fixed image
            keys, rows_of = (None if fixed is None else fixed.keys), None
        else:  # against the flat ones
            keys, rows_of = fixed.keys[flat_rows], flat_rows
        edges, mixed = self._search_part(concat(Images, new + flat), keys, part, sub, prefix, 0).split_fixed()
        yield from self._named(mixed, fixed, rows_of)
        if not flat:
            return Edges.empty()
        flat_ids = concat(Images, flat).ids
        return edges.take(np.isin(edges.a, flat_ids) | np.isin(edges.b, flat_ids))

    def process(self, element: Tuple[Tuple[int, int, int], Iterable]):
        (part, sub, prefix), batches = element
        new, fixed, flat = [], [], []
        for batch in batches:
            if isinstance(batch, Fixed):
                fixed.append(batch)
            elif isinstance(batch, Flat):
                flat.append(batch.images)
            elif len(batch.ids):
                new.append(batch)
        fixed = concat(Fixed, fixed) if fixed else None
        found = []
        if part == 0 and sub <= 0:
            zero = yield from self._zero(new, flat, fixed, part, sub, prefix)
            self._metrics.near_dup_pairs.inc(len(zero.a))
            found.append(zero)
        if new:
            # fixed images are never paired with each other; a flat one is met at distance 0 only
            keys, rows_of = (None if fixed is None else fixed.keys), None
            if fixed is not None and fixed.flat.any():  # the others' keys (a copy only then)
                rows_of = np.flatnonzero(~fixed.flat)
                keys = fixed.keys[rows_of] if len(rows_of) else None
            edges, mixed = self._search_part(concat(Images, new), keys, part, sub, prefix, self._k,
                                             forest=True).split_fixed()
            yield from self._named(mixed, fixed, rows_of)
            found.append(edges)
        edges = concat(Edges, found) if found else Edges.empty()
        if not len(edges.a):
            return
        # The kernel's forest and the flat images' pairs: one forest of them.
        forest = u64s(spanning_forest(u8(edges.a), u8(edges.b))).astype(np.intp)
        yield edges.take(forest)


class ComponentsDoFn(beam.DoFn):
    """The one global step: all spanning forests -> the component of every image with a
    neighbour (12 bytes per such image, see rust_ext/src/near/forest.rs), per exact partition."""

    def __init__(self):
        self._metrics = DedupMetrics()

    def process(self, element: Tuple[int, Iterable[Edges]]):
        _, forests = element
        components = Components()
        for f in forests:  # pass 1: the ids
            components.add_ids(u8(f.a))
            components.add_ids(u8(f.b))
        for f in forests:  # pass 2: the edges
            components.union(u8(f.a), u8(f.b))
        ids, comps = (u64s(x) for x in components.components())
        self._metrics.near_graph_images.inc(len(ids))
        for p, part in _split(ids):
            yield p, Assigned(ids[part], comps[part])


class AttachDoFn(beam.DoFn):
    """One exact partition: its images that have a neighbour, with their component (its smallest
    id), re-keyed by the partition of that component. Images within k of a fixed image are
    dropped here, as duplicates of it (on ``fates``), and leave the graph: they are never kept,
    so they decide nothing for their neighbours."""

    def process(self, element):
        _, joined = element
        assigned = list(joined["assigned"])
        named = list(joined["named"])
        if not assigned and not named:
            return
        classes = concat(Classes, joined[CLASSES])
        blocked = np.zeros(0, dtype=U64)
        if named:
            named = concat(Named, named).best()  # the best over every search that found one
            blocked = named.new
            rows = np.searchsorted(classes.ids, named.new)
            for i, row in enumerate(rows):
                yield beam.pvalue.TaggedOutput(FATES, (classes.keys[row].tobytes(), [
                    (int(named.distance[i]), FIXED_RANK, named.labels[i].as_py(), SOURCES[int(named.source[i])])]))
        if not assigned:
            return
        ids, comps = concat(Assigned, assigned)
        if len(blocked):
            keep = ~np.isin(ids, blocked)
            ids, comps = ids[keep], comps[keep]
        rows = np.searchsorted(classes.ids, ids)
        nodes = classes.take(rows)
        node_parts = partition_of_ids(comps)
        for q in np.unique(node_parts):
            index = np.flatnonzero(node_parts == q)
            yield int(q), Members(nodes.take(index), comps[index])


class ResolveDoFn(beam.DoFn):
    """Whole components -> the fate of each dropped image: (its key, its kept neighbours as
    (distance, rank, owner), the keeper first). The Rust kernel compares each image, in rank
    order, with the images kept so far in its component (by the search's distance: variants with
    dihedral, distance 0 with a flat end); images within k of a fixed image have left already."""

    def __init__(self, hash_bytes: int, dihedral: bool, max_distance: int):
        self._hash_bytes = hash_bytes
        self._dihedral = dihedral
        self._k = max_distance

    def process(self, element):
        _, parts = element
        parts = list(parts)
        nodes = concat(Classes, [m.nodes for m in parts])
        components = np.concatenate([m.components for m in parts])
        offsets, blob = pack_owners(nodes.owners)
        dropped, keepers, distances = (u32s(x) for x in near_resolve(
            u8(components), u8(nodes.primary), u8(offsets), blob, u8(nodes.keys),
            hash_bytes=self._hash_bytes, dihedral=self._dihedral, max_distance=self._k))
        if not len(dropped):
            return
        starts = np.flatnonzero(np.r_[True, dropped[1:] != dropped[:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(dropped)]):
            near = [(int(distances[i]), (int(nodes.primary[keepers[i]]), nodes.owners[keepers[i]],
                                         nodes.keys[keepers[i]].tobytes()), nodes.owners[keepers[i]], INPUT)
                    for i in range(lo, hi)]
            yield nodes.keys[dropped[lo]].tobytes(), near


class ApplyDoFn(beam.DoFn):
    """The records of one image key and its fate. A record is kept when its image is and it is
    the best-ranked record of the key (or has that record's owner); otherwise it is a duplicate of
    the nearest image kept before it in rank order: the key's best record at distance 0, or, when
    the image was dropped, its nearest kept neighbour ranked before the record (a fixed image, when
    it is within k of one). With ``hash_bytes`` set, the kept images' hashes and labels also go,
    packed per bundle and keyed by exact partition, to ``kept_rows`` (for the state). A record
    that carries its batch's timestamp and window (``PackDoFn``'s ``carry``) goes out in them."""

    def __init__(self, hash_bytes: int = 0, partitions: int = 1):
        self._hash_bytes = hash_bytes
        self._partitions = partitions
        self._metrics = DedupMetrics()

    def start_bundle(self):
        self._kept: Tuple[List[bytes], List[str], List[bool]] = ([], [], [])

    def process(self, element):
        key, joined = element
        fate = next(iter(joined["fate"]), None)
        records = list(joined["records"])
        head = min((primary, owner) for primary, owner, *_ in records)[1]
        for primary, owner, record, *where in records:
            if fate is None:
                decision = None if owner == head else (head, 0, INPUT)
            else:
                rank = (primary, owner, key)
                decision = next((keeper, d, source) for d, keeper_rank, keeper, source in fate if keeper_rank < rank)
            if decision is None:
                if self._hash_bytes:
                    self._kept[0].append(key[:self._hash_bytes])
                    self._kept[1].append(keeper_label(owner))
                    self._kept[2].append(key[-1:] == FLAT_KEY)
                out = emit(record, None, self._metrics)
            else:
                keeper, distance, source = decision
                out = emit(record, keeper_label(keeper) if source == INPUT else keeper, self._metrics,
                           **{DISTANCE_FIELD: distance, MATCHED_FIELD: source})
            if where:
                yield from in_window([out], *where)
            else:
                yield out

    def finish_bundle(self):
        hashes, labels, flat = self._kept
        if not hashes:
            return
        keys = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), self._hash_bytes)
        batch = fixed_batch(keys, STATE, labels, flat)
        for p, rows in rows_by_bucket(keys, self._partitions):
            yield beam.pvalue.TaggedOutput(KEPT_ROWS, WindowedValue(
                (p, batch.take(rows)), GlobalWindow().max_timestamp(), [GlobalWindow()]))
