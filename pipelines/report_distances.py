"""The report's answer to "which threshold?": each image's distance to its nearest other image.

Inside the pipeline, :class:`CollectDistances`:
1. ``PackSample``: kept and duplicate records -> packed batches per bundle (hash rows, a sampling
   key per record, whether it was kept, the ids as an Arrow array); never one Python object per
   hash past the bundle.
2. ``Sample``: one bounded, deterministic sample of at most ``SAMPLE_SIZE`` records (those whose
   id digests are smallest), merged as numpy arrays: a random sample of the run when it is larger.
3. ``Distances``: on the sample, with the near-duplicate kernels (identical hashes collapse to
   one row, then ``near_search`` over every band of a layout for the report's range finds each
   pair within it): the histogram of every sampled image's distance to its nearest other image,
   kept and dropped apart, up to about twice the ``auto`` threshold; a few example pairs at
   spread distances; and how many kept images have another kept image within ``auto``, with how
   many of them ``--max-distance auto`` would drop (one spanning-forest edge per image merged).
4. ``PairThumbnails``: the example pairs' records (found by id, a side input of a few ids) get
   their thumbnails.

Writes ``report/distances.json`` (one step writes it whole, with the thumbnails); :func:`section`
renders it into report.html, and :func:`hint` into the job's output.
"""
from __future__ import annotations

import hashlib
import json
import html
from typing import Callable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from beam_phash._native import FLAT_QUALITY, near_layout, near_search, parse_hex_hashes, spanning_forest
from beam_phash.near.batches import U64, take_labels, u8, u32s, u64s
from beam_phash.near.policy import RECOMMENDED_MAX_DISTANCE
from beam_phash.records import DISTANCE_FIELD, QUALITY_FIELD, hash_bytes

#: Records in the histogram's sample, at most: 500,000 hashes are 16 MiB of 256-bit rows, and
#: their search within twice the auto threshold takes seconds (200,000 random hashes with 10%
#: copies: 0.5 s on this 2-core machine).
SAMPLE_SIZE = 500_000
#: Records per packed batch out of ``PackSample``.
FLUSH_ROWS = 16384
#: What CollectDistances writes under OUTPUT/report/: the statistics and the pairs' thumbnails.
DISTANCES_FILE = "distances.json"
#: ``Sample.dropped_at`` of a kept record.
NOT_DROPPED = np.iinfo(np.uint32).max
#: Example pairs are picked near these fractions of the range.
PAIR_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def distance_range(algorithm: str, hash_size: int, bits: int, max_distance: int) -> Tuple[Optional[int], int]:
    """(the ``auto`` threshold, or None when none was measured for the hash; the histogram's
    range: about twice that threshold, or of ``max_distance``, or of bits / 16, below the bit
    count and at least ``max_distance``)."""
    auto = RECOMMENDED_MAX_DISTANCE.get((algorithm, hash_size))
    base = auto if auto is not None else (max_distance or max(1, bits // 16))
    return auto, max(1, min(bits - 1, max(2 * base, max_distance)))


class Sample(NamedTuple):
    """Sampled records: hashes (n, hash_bytes) uint8, sampling keys uint64 (a digest of the id),
    kept flags, ids (an Arrow string array); ``seen`` records were offered, ``flat`` of them left
    out (flat pictures match identical hashes only); ``dropped_at`` (uint32): a duplicate's
    distance to the image it was dropped for, which may lie outside the sample or the run (an
    earlier run's, with ``--state``, or a reference), ``NOT_DROPPED`` for a kept record."""

    hashes: np.ndarray
    order: np.ndarray
    kept: np.ndarray
    ids: pa.Array
    seen: int
    flat: int
    dropped_at: np.ndarray

    @staticmethod
    def empty(hash_bytes: int) -> "Sample":
        return Sample(np.zeros((0, hash_bytes), np.uint8), np.zeros(0, U64), np.zeros(0, bool),
                      pa.array([], pa.large_string()), 0, 0, np.zeros(0, np.uint32))

    def smallest(self, size: int) -> "Sample":
        """The ``size`` records with the smallest sampling keys, in key order: the same sample
        and order whatever order the records came in."""
        rows = np.argsort(self.order, kind="stable")[:size]
        return Sample(self.hashes[rows], self.order[rows], self.kept[rows], take_labels(self.ids, rows),
                      self.seen, self.flat, self.dropped_at[rows])


def _merge(parts: List[Sample], size: Optional[int] = None) -> Sample:
    """One ``Sample`` of the parts' records (the ``size`` of them with the smallest keys)."""
    merged = Sample(np.concatenate([p.hashes for p in parts]), np.concatenate([p.order for p in parts]),
                    np.concatenate([p.kept for p in parts]),
                    pa.concat_arrays([p.ids.cast(pa.large_string()) for p in parts]),
                    sum(p.seen for p in parts), sum(p.flat for p in parts),
                    np.concatenate([p.dropped_at for p in parts]))
    return merged if size is None else merged.smallest(size)


def record_id(record: dict, id_field: str) -> str:
    value = record.get(id_field)
    return "" if value is None else str(value)


def _id_order(ids: List[str]) -> np.ndarray:
    """The sampling key of each id: 8 bytes of BLAKE2b, so the sample is the same on every run."""
    return np.frombuffer(b"".join(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8,
                                                  person=b"report").digest() for i in ids), dtype="<u8").astype(U64)


class PackSampleDoFn(beam.DoFn):
    """Kept (or duplicate) records -> ``Sample`` batches of their hashes, per bundle. A duplicate
    without a ``distance`` (exact mode) has its keeper's very hash: 0 bits."""

    def __init__(self, hash_field: str, id_field: str, bits: int, kept: bool):
        self._hash_field, self._id_field, self._bits, self._kept = hash_field, id_field, bits, kept

    def start_bundle(self):
        self._hexes: List[str] = []
        self._ids: List[str] = []
        self._dropped_at: List[int] = []
        self._flat = 0

    def _flush(self) -> Sample:
        packed, errors = parse_hex_hashes(self._hexes, self._bits)
        good = np.array([e is None for e in errors], dtype=bool)
        hashes = np.frombuffer(packed, np.uint8).reshape(len(self._hexes), hash_bytes(self._bits))[good]
        ids = [i for i, ok in zip(self._ids, good) if ok]
        dropped_at = np.array(self._dropped_at, np.uint32)[good]
        batch = Sample(hashes, _id_order(ids), np.full(len(ids), self._kept), pa.array(ids, pa.large_string()),
                       len(ids) + self._flat, self._flat, dropped_at)
        self.start_bundle()
        return batch

    def process(self, record: dict):
        quality = record.get(QUALITY_FIELD)
        if quality is not None and quality < FLAT_QUALITY:
            self._flat += 1
            return
        self._hexes.append(record.get(self._hash_field))
        self._ids.append(record_id(record, self._id_field))
        self._dropped_at.append(NOT_DROPPED if self._kept else record.get(DISTANCE_FIELD) or 0)
        if len(self._hexes) >= FLUSH_ROWS:
            yield self._flush()

    def finish_bundle(self):
        if self._hexes or self._flat:
            yield WindowedValue(self._flush(), GlobalWindow().max_timestamp(), [GlobalWindow()])


class SampleFn(beam.CombineFn):
    """``Sample`` batches -> one ``Sample`` of at most ``size`` records, merged as arrays."""

    def __init__(self, size: int, hash_bytes: int):
        self._size, self._hash_bytes = size, hash_bytes

    def create_accumulator(self):
        return Sample.empty(self._hash_bytes)

    def add_input(self, acc, batch):
        parts = [acc, batch]
        # Trimmed once the rows outgrow twice the sample: the sorting is amortised over batches.
        return _merge(parts, self._size if len(acc.order) + len(batch.order) > 2 * self._size else None)

    def merge_accumulators(self, accs):
        return _merge(list(accs), self._size)

    def extract_output(self, acc):
        return acc.smallest(self._size)


def nearest(hashes: np.ndarray, bits: int, limit: int):
    """Each row's distance to its nearest other row, ``limit + 1`` when none lies within
    ``limit`` bits; identical rows are at 0. Returns (that per row, the distinct rows, each row's
    index among them, and the pairs of distinct rows within ``limit``: a, b, distance)."""
    distinct, inverse, counts = np.unique(hashes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    a = b = np.zeros(0, np.intp)
    d = np.zeros(0, np.uint32)
    if len(distinct) > 1:
        layout = near_layout(bits, limit, len(distinct))
        found = near_search(u8(distinct), u8(np.arange(len(distinct), dtype=U64)), hash_bytes=hashes.shape[1],
                            bits=bits, max_distance=limit, layout=layout, band=list(range(len(layout))))
        a, b, d = u64s(found[0]).astype(np.intp), u64s(found[1]).astype(np.intp), u32s(found[2])
    best = np.full(len(distinct), limit + 1, np.uint32)
    np.minimum.at(best, a, d)
    np.minimum.at(best, b, d)
    per_row = np.where(counts[inverse] > 1, 0, best[inverse]).astype(np.uint32)
    return per_row, distinct, inverse, (a, b, d)


def _example_pairs(inverse: np.ndarray, pairs, limit: int, far: Optional[Tuple[int, int, int]]):
    """A few pairs of sampled records at distances spread over [0, limit], by increasing
    distance, and one pair beyond it (two unrelated pictures): (row a, row b, distance). For each
    of ``PAIR_FRACTIONS`` of the range, the first pair at the distance nearest to it that no
    other example has; at 0, two records of one hash."""
    a, b, d = pairs
    first = np.full(inverse.max() + 1 if len(inverse) else 0, -1, np.intp)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]  # a record of each distinct hash
    repeated = np.flatnonzero(np.bincount(inverse) > 1) if len(inverse) else np.zeros(0, np.intp)
    chosen = []
    free = np.ones(len(d), bool)
    for fraction in PAIR_FRACTIONS:
        target = round(limit * fraction)
        if target == 0 and len(repeated):
            rows = np.flatnonzero(inverse == repeated[0])[:2]
            chosen.append((int(rows[0]), int(rows[1]), 0))
        elif free.any():
            gap = np.where(free, np.abs(d.astype(np.int64) - target), np.iinfo(np.int64).max)
            i = int(np.argmin(gap))  # the first of the nearest
            free &= d != d[i]
            chosen.append((int(first[a[i]]), int(first[b[i]]), int(d[i])))
    chosen.sort(key=lambda pair: pair[2])
    if far is not None:
        chosen.append((int(first[far[0]]), int(first[far[1]]), far[2]))
    return chosen


def _far_pair(distinct: np.ndarray, limit: int) -> Optional[Tuple[int, int, int]]:
    """Two distinct hashes more than ``limit`` bits apart (among the first 64), or None."""
    if len(distinct) < 2:
        return None
    d = np.bitwise_count(distinct[1:65] ^ distinct[0]).sum(axis=1)
    beyond = np.flatnonzero(d > limit)
    return None if not len(beyond) else (0, int(beyond[0]) + 1, int(d[beyond[0]]))


def kept_near(distinct_kept: np.ndarray, pairs, threshold: int) -> Tuple[int, int]:
    """(distinct kept hashes with another kept one within ``threshold``, how many of them a
    near-duplicate run at ``threshold`` would drop: one per edge of a spanning forest, so exact
    when each group lies within ``threshold`` of the image it keeps)."""
    a, b, d = pairs
    both = distinct_kept[a] & distinct_kept[b] & (d <= threshold)
    if not both.any():
        return 0, 0
    a, b = a[both].astype(U64), b[both].astype(U64)
    return len(np.union1d(a, b)), len(u64s(spanning_forest(u8(a), u8(b))))


def distance_stats(sample: Sample, bits: int, limit: int, auto: Optional[int], max_distance: int,
                   sample_size: int = SAMPLE_SIZE) -> dict:
    """The histogram, the example pairs (by sample row) and the kept images near each other. A
    duplicate's nearest image is at most the one it was dropped for, wherever that lies."""
    per_row, distinct, inverse, pairs = nearest(sample.hashes, bits, limit)
    per_row = np.minimum(per_row, np.minimum(sample.dropped_at, limit + 1)).astype(np.uint32)
    distinct_kept = np.zeros(len(distinct), bool)
    distinct_kept[inverse[sample.kept]] = True
    near, would_drop = kept_near(distinct_kept, pairs, auto if auto is not None else max_distance)
    examples = _example_pairs(inverse, pairs, limit, _far_pair(distinct, limit))
    ids = sample.ids.to_pylist() if len(examples) else []
    return {
        "sampled": len(sample.order), "seen": sample.seen, "flat": sample.flat, "sample_size": sample_size,
        "limit": limit, "auto": auto, "max_distance": max_distance,
        "kept": np.bincount(per_row[sample.kept], minlength=limit + 2).tolist(),
        "dropped": np.bincount(per_row[~sample.kept], minlength=limit + 2).tolist(),
        "kept_near": near, "would_drop": would_drop if auto is not None else None,
        "pairs": [{"distance": dist, "a": ids[i], "b": ids[j], "kept_a": bool(sample.kept[i]),
                   "kept_b": bool(sample.kept[j])} for i, j, dist in examples],
    }


def _write_json(stats: dict, path: str, images: List[dict]) -> None:
    """One file, written whole by one step (a retry writes the same file again)."""
    with FileSystems.create(path) as f:
        f.write(json.dumps({**stats, "images": sorted(images, key=lambda i: i["id"])}).encode("utf-8"))


def read_stats(output: str) -> Optional[dict]:
    """What ``CollectDistances`` wrote under ``output``, or None (no report data)."""
    path = FileSystems.join(output, "report", DISTANCES_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


class CollectDistances(beam.PTransform):
    """(kept, duplicates) -> ``report/distances.json`` (see the module docs), with the example
    pairs' thumbnails under ``images`` (``thumb_of(record)``: a data URI or None)."""

    def __init__(self, output: str, *, hash_field: str, id_field: str, algorithm: str, hash_size: int,
                 bits: int, max_distance: int, thumb_of: Callable[[dict], Optional[str]],
                 sample_size: int = SAMPLE_SIZE):
        super().__init__()
        self._output = output
        self._hash_field, self._id_field, self._bits = hash_field, id_field, bits
        self._auto, self._limit = distance_range(algorithm, hash_size, bits, max_distance)
        self._max_distance = max_distance
        self._thumb_of = thumb_of
        self._sample_size = sample_size

    def expand(self, outputs):
        kept, dups = outputs
        fields = (self._hash_field, self._id_field, self._bits)
        bits, limit, auto, k, size = self._bits, self._limit, self._auto, self._max_distance, self._sample_size
        stats = ((kept | "PackKeptSample" >> beam.ParDo(PackSampleDoFn(*fields, kept=True)),
                  dups | "PackDupSample" >> beam.ParDo(PackSampleDoFn(*fields, kept=False)))
                 | "AllSampled" >> beam.Flatten()
                 | "Sample" >> beam.CombineGlobally(SampleFn(size, hash_bytes(bits)))
                 | "Distances" >> beam.Map(lambda s: distance_stats(s, bits, limit, auto, k, size)))
        pair_ids = beam.pvalue.AsSingleton(
            stats | "PairIds" >> beam.Map(lambda s: {i for p in s["pairs"] for i in (p["a"], p["b"])}))
        id_field, thumb_of = self._id_field, self._thumb_of
        thumbs = ((kept, dups)
                  | "AllHashed" >> beam.Flatten()
                  | "PairRecords" >> beam.Filter(lambda r, ids: record_id(r, id_field) in ids, pair_ids)
                  | "PairThumbnails" >> beam.Map(lambda r: {"id": record_id(r, id_field), "thumb": thumb_of(r)})
                  | "AllThumbnails" >> beam.combiners.ToList())
        path = FileSystems.join(self._output, "report", DISTANCES_FILE)
        return stats | "WriteDistances" >> beam.Map(_write_json, path, beam.pvalue.AsSingleton(thumbs))


_BAR, _HEIGHT = 16, 160


def _histogram_svg(stats: dict) -> str:
    """Stacked bars per distance (kept dark, dropped light, the count on top), then apart the bar
    "beyond the range", with the ``auto`` threshold and this run's ``max_distance`` marked."""
    kept, dropped, limit = stats["kept"], stats["dropped"], stats["limit"]
    top = max([k + d for k, d in zip(kept, dropped)] + [1])
    x_of = [30 + (i + (i > limit)) * _BAR for i in range(len(kept))]  # a gap before "beyond"
    parts = [f'<svg class="histogram" width="{x_of[-1] + 60}" height="{_HEIGHT + 70}" role="img" '
             f'aria-label="images by distance to their nearest other image">']
    for i, (k, d) in enumerate(zip(kept, dropped)):
        x, label = x_of[i], (f"beyond {limit}" if i > limit else str(i))
        for value, below, cls in ((d, 0, "dropped"), (k, d, "kept")):
            if value:
                h, y = _HEIGHT * value / top, _HEIGHT * (1 - (value + below) / top) + 20
                parts.append(f'<rect class="{cls}" x="{x}" y="{y:.1f}" width="{_BAR - 2}" height="{h:.1f}">'
                             f'<title>{label} bits: {value} {cls}</title></rect>')
        if k + d:
            parts.append(f'<text x="{x + _BAR / 2 - 1}" y="{_HEIGHT * (1 - (k + d) / top) + 17:.1f}" '
                         f'text-anchor="middle">{k + d}</text>')
        if (i % 4 == 0 and i <= limit - 2) or i >= limit:
            parts.append(f'<text x="{x + _BAR / 2 - 1}" y="{_HEIGHT + 35}" text-anchor="middle">'
                         f'{">" + str(limit) if i > limit else i}</text>')
    for value, cls, name in ((stats.get("auto"), "auto", "auto"), (stats.get("max_distance"), "run", "this run")):
        if value:
            x = x_of[value] + _BAR - 1  # right after the bar of the last distance it merges
            y = _HEIGHT + (50 if cls == "auto" else 60)
            parts.append(f'<line class="{cls}" x1="{x}" y1="10" x2="{x}" y2="{_HEIGHT + 22}"/>'
                         f'<text class="{cls}" x="{x + 3}" y="{y}">{name}: {value} bits</text>')
    parts.append("</svg>")
    return "".join(parts)


def section(stats: Optional[dict], figure: Callable[[dict, str], str]) -> List[str]:
    """The report's "Which threshold?" section from :func:`read_stats`: the histogram, what
    ``auto`` would add, and the example pairs side by side (``figure(member, caption)`` draws one
    thumbnail)."""
    if not stats:
        return []
    e = html.escape
    limit, auto = stats["limit"], stats.get("auto")
    sampled = (f"a sample of {stats['sampled']:,} of the {stats['seen'] - stats['flat']:,} hashed images "
               f"(the {stats['sample_size']:,} at most whose id digests are smallest; an image's nearest "
               "neighbour may lie outside it, so distances read larger than in the whole run)"
               if stats["sampled"] < stats["seen"] - stats["flat"] else f"all {stats['sampled']:,} hashed images")
    parts = [
        "<h2 id='threshold'>Which threshold? Distance to the nearest other image</h2>",
        f"<p>For {e(sampled)}: the bits between each image's hash and the nearest other one (for a "
        "dropped image, the one it was dropped for at most, which may be an earlier run's or a reference), up to "
        f"{limit} bits{f', twice the measured auto threshold of {auto}' if auto else ''}. Copies (resized, "
        "re-encoded, lightly edited) lie at small distances, different pictures far beyond; a good "
        "threshold lies in the gap. Dark: kept; light: dropped as duplicates"
        + (f"; {stats['flat']:,} flat images (matched by identical hash only) left out" if stats["flat"] else "")
        + ".</p>",
    ]
    if stats["sampled"] < 2:
        return parts[:1] + ["<p>Fewer than two hashed images: no distances to show.</p>"]
    parts.append(_histogram_svg(stats))
    note = hint(stats)
    if note:
        parts.append(f"<p class='hint'>{e(note)}</p>")
    if stats["pairs"]:
        thumbs = {m["id"]: m for m in stats.get("images", [])}
        parts.append("<h3>Example pairs</h3><div class='pairs'>")
        for p in stats["pairs"]:
            verdict = ("within auto" if auto is not None and p["distance"] <= auto else
                       "beyond auto" if auto is not None else "")
            caption = f"{p['distance']} bits" + (f" ({verdict})" if verdict else "")
            parts.append(f"<div class='pair'><div>{e(caption)}</div><div class='members'>"
                         + "".join(figure({**thumbs.get(p[end], {"id": p[end]}), "kept": p[f"kept_{end}"]},
                                          f"{'kept' if p[f'kept_{end}'] else 'dropped'}")
                                   for end in ("a", "b")) + "</div></div>")
        parts.append("</div>")
    return parts


def hint(stats: Optional[dict], caught: Optional[int] = None, dihedral: bool = False) -> Optional[str]:
    """What ``--max-distance auto`` would add, when kept images lie that close to each other (led
    by what this run ``caught``, when given, with rotated and mirrored copies when ``dihedral``);
    None when nothing."""
    if not stats or not stats.get("kept_near") or stats.get("auto") is None:
        return None
    k = stats.get("max_distance") or 0
    of = f" (in a sample of {stats['sampled']:,})" if stats["sampled"] < stats["seen"] - stats["flat"] else ""
    how = "Exact hashes" if not k else f"Within {k} bits"
    turned = " (rotated and mirrored copies included)" if dihedral else ""
    led = "" if caught is None else f"{how}{turned} caught {caught} duplicates. "
    return (f"{led}{stats['kept_near']} kept images lie within {stats['auto']} bits (the --max-distance auto "
            f"threshold) of another kept image{of}: likely resized or re-encoded copies; --max-distance auto "
            f"would drop about {stats['would_drop']} more.")
