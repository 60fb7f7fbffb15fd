"""``report.html``: a self-contained page with the counts, which threshold fits the images (the
histogram of distances to the nearest other image and example pairs, ``report_distances``), the
largest duplicate groups as thumbnails (the kept image marked, each duplicate's distance), what
matched a reference or an earlier run, and the failures with their reasons. Thumbnails are
inline JPEGs that the browser decodes lazily (``loading="lazy"``).

Two halves:
* :class:`CollectReportData`, inside the pipeline, finds the largest groups by counting
  duplicates per kept id (a shuffle of ids only), samples at most ``per_group`` members of each
  before any image is decoded (combiner lifting keeps the shuffle small even for a group of
  millions of blank images), makes the thumbnails, and writes ``report/*.jsonl``; with
  ``report_distances.CollectDistances`` ``report/distances.json``, the distance histogram of a
  bounded sample.
* :func:`write_report`, in the launcher after the run, renders those rows and the summary.
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import Dict, Iterable, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_phash import DUPLICATE_OF_FIELD, ERROR_FIELD, PHash
from beam_phash.records import DISTANCE_FIELD, MATCHED_FIELD, BadRecord, image_bytes
from pipelines import report_distances

THUMB_SIDE = 160


def thumbnail(data) -> Optional[str]:
    """A small JPEG as a data: URI, or None when Pillow cannot read the image."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))  # DCT-scaled decode for JPEG
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a thumbnail is decoration, never a failure
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def hex_distance(a: Optional[str], b: Optional[str]) -> Optional[int]:
    if not a or not b or len(a) != len(b):
        return None
    return PHash.from_hex(a) - PHash.from_hex(b)


class _Fields:
    def __init__(self, id_field: str, image_field: str, hash_field: str, ids_are_paths: bool = False):
        self.id, self.image, self.hash = id_field, image_field, hash_field
        self.ids_are_paths = ids_are_paths

    def id_of(self, record: dict) -> Optional[str]:
        value = record.get(self.id)
        return None if value is None else str(value)

    def without_image(self, record: dict) -> dict:
        """The record without its image bytes, when they can be read again from its id (a path)."""
        return {k: v for k, v in record.items() if k != self.image}

    def thumb(self, record: dict) -> Optional[str]:
        try:
            if self.ids_are_paths and self.image not in record:
                with FileSystems.open(self.id_of(record)) as f:
                    return thumbnail(f.read())
            return thumbnail(image_bytes(record, self.image))
        except (BadRecord, OSError, ValueError, TypeError):
            return None

    def member(self, record: dict, kept: bool, keeper_hash: Optional[str] = None) -> dict:
        thumb = self.thumb(record)
        distance = record.get(DISTANCE_FIELD)  # near-duplicate mode (dihedral-aware)
        if distance is None:
            distance = 0 if kept else hex_distance(record.get(self.hash), keeper_hash)
        return {"id": self.id_of(record), "hash": record.get(self.hash), "kept": kept,
                "distance": distance,
                "thumb": thumb}


def _build_group(element, sizes: Dict[str, int], fields: _Fields) -> Iterable[str]:
    keeper_id, grouped = element
    kept = list(grouped["kept"])
    samples = [r for batch in grouped["dups"] for r in batch]
    if kept:
        keeper = fields.member(kept[0], kept=True)
    elif samples:
        # Kept before this run: in exact mode a named backend answers with the id an earlier run
        # kept (without saying so: --state's matches say "state" and are listed apart), and this
        # run has no record of it. Exact mode matches
        # identical hashes only (dihedral runs are near-duplicate mode), so the keeper's hash is
        # its duplicates'. Its thumbnail is read from its id when that is a path still there.
        keeper = {**fields.member({fields.id: keeper_id}, kept=True), "earlier": True,
                  "hash": samples[0].get(fields.hash)}
    else:
        return
    members = [keeper]
    members += [fields.member(r, kept=False, keeper_hash=keeper["hash"])
                for r in sorted(samples, key=lambda r: fields.id_of(r) or "")]
    yield json.dumps({"keeper": keeper_id, "size": 1 + sizes.get(keeper_id, 0), "members": members})


def _top(n: int, key, smallest: bool = False) -> beam.PTransform:
    """The n largest (or smallest) elements by key, as one list, through a CombineGlobally.
    (Beam's Top.Of in the global window emits a list from every bundle's finish_bundle, empty
    bundles included; the BundleBasedDirectRunner runs such a bundle after the GroupByKey behind
    it has fired and fails on an assertion.)"""
    return beam.CombineGlobally(beam.combiners.TopCombineFn(n, key=key, reverse=smallest))


def _of_this_run(record: dict) -> bool:
    """A duplicate of a record kept in this run (not of a reference or an earlier run)."""
    return record.get(MATCHED_FIELD) in (None, "input")


class CollectReportData(beam.PTransform):
    """(kept, duplicates, failed) -> ``DIR/report/groups.jsonl``, ``failures.jsonl``,
    ``matches.jsonl``, and with ``distances`` (the keyword arguments of
    ``report_distances.CollectDistances`` but the thumbnails) ``distances.json``. Returns what
    its writes output, for steps that wait for them."""

    def __init__(self, output: str, *, id_field: str, image_field: str, hash_field: str,
                 max_groups: int = 12, per_group: int = 8, max_failures: int = 200,
                 distances: Optional[dict] = None, ids_are_paths: bool = False):
        super().__init__()
        self._output = output
        self._fields = _Fields(id_field, image_field, hash_field, ids_are_paths)
        self._distances = distances
        self._max_groups = max_groups
        self._per_group = per_group
        self._max_failures = max_failures

    def expand(self, outputs):
        kept, dups, failed = outputs[:3]
        fields = self._fields
        if fields.ids_are_paths:
            # The report knows which records it shows only once the run is over, so every record
            # waits until then (on the DirectRunner, in memory). When the id is the image's path,
            # the bytes are dropped here, in the step that made the record, and the few shown
            # are read again for their thumbnails.
            kept = kept | "KeptWithoutImages" >> beam.Map(fields.without_image)
            dups = dups | "DuplicatesWithoutImages" >> beam.Map(fields.without_image)
        # Groups are of this run's keepers; matches of a reference or an earlier run are listed
        # apart. (Each step reads the duplicates directly: a filter step between them and the
        # group steps made Flink's fuser (job server 2.62) reject the Ray backend's pipeline.)
        written = [dups
         | "OfEarlier" >> beam.Filter(lambda r: r.get(MATCHED_FIELD) in ("reference", "state"))
         | "FirstMatches" >> _top(self._max_groups * self._per_group,
                                  key=lambda r: (r.get(MATCHED_FIELD), fields.id_of(r) or ""), smallest=True)
         | "MatchRows" >> beam.FlatMap(lambda rows: [json.dumps({
             **fields.member(r, kept=False), "matched": r.get(MATCHED_FIELD),
             "duplicate_of": r.get(DUPLICATE_OF_FIELD)}) for r in rows])
         | "WriteMatches" >> _write_jsonl(self._output, "matches")]
        top = (dups
               | "KeeperIds" >> beam.Map(lambda r: r.get(DUPLICATE_OF_FIELD) if _of_this_run(r) else None)
               | "WithKeeperId" >> beam.Filter(lambda k: k is not None)
               | "GroupSizes" >> beam.combiners.Count.PerElement()
               | "LargestGroups" >> _top(self._max_groups, key=lambda kv: (kv[1], kv[0]))
               | "AsDict" >> beam.Map(dict))
        sizes = beam.pvalue.AsSingleton(top)
        kept_members = (kept
                        | "KeepersOfTop" >> beam.Filter(lambda r, s: fields.id_of(r) in s, sizes)
                        | "KeyKeepers" >> beam.Map(lambda r: (fields.id_of(r), r)))
        dup_samples = (dups
                       | "DupsOfTop" >> beam.Filter(lambda r, s: _of_this_run(r) and r.get(DUPLICATE_OF_FIELD) in s, sizes)
                       | "KeyDups" >> beam.Map(lambda r: (r[DUPLICATE_OF_FIELD], r))
                       | "SamplePerGroup" >> beam.combiners.Sample.FixedSizePerKey(self._per_group))
        written.append(({"kept": kept_members, "dups": dup_samples})
         | "JoinGroups" >> beam.CoGroupByKey()
         | "Thumbnails" >> beam.FlatMap(_build_group, sizes, fields)
         | "WriteGroups" >> _write_jsonl(self._output, "groups"))
        written.append(failed
         | "FailureRows" >> beam.Map(lambda r: {"id": fields.id_of(r), "error": r.get(ERROR_FIELD)})
         | "FirstFailures" >> _top(self._max_failures, key=lambda r: r["id"] or "", smallest=True)
         | "FailureLines" >> beam.FlatMap(lambda rows: [json.dumps(r) for r in rows])
         | "WriteFailures" >> _write_jsonl(self._output, "failures"))
        if self._distances is not None:
            written.append((kept, dups) | "Distances" >> report_distances.CollectDistances(
                self._output, hash_field=fields.hash, id_field=fields.id, thumb_of=fields.thumb, **self._distances))
        return tuple(written)


def _write_jsonl(output: str, name: str) -> beam.PTransform:
    """Lines to ``DIR/report/NAME-00000-of-00001.jsonl``; with no lines, no file (Beam's S3 writer
    cannot complete an empty one), which ``_read_jsonl`` reads as no rows."""
    return beam.io.WriteToText(FileSystems.join(output, "report", name), file_name_suffix=".jsonl",
                               num_shards=1, skip_if_empty=True)


def _read_jsonl(output: str, name: str) -> List[dict]:
    pattern = FileSystems.join(output, "report", f"{name}*.jsonl")
    rows: List[dict] = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            rows += [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip()]
    return rows


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table.counts td{padding:.2em 1em}.ok{color:#070}.bad{color:#b00}
.group{border:1px solid #ccc;border-radius:6px;margin:1em 0;padding:.6em}
.members{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0;width:170px;font-size:12px;word-break:break-all}
.histogram rect.kept{fill:#2a6}.histogram rect.dropped{fill:#b8c8d8}.histogram text{font-size:11px}
.histogram line.auto{stroke:#d60;stroke-dasharray:4 3}.histogram line.run{stroke:#06c}
.histogram text.auto{fill:#d60}.histogram text.run{fill:#06c}.hint{font-weight:bold}
.pairs{display:flex;flex-wrap:wrap;gap:1em}.pair{border:1px solid #ccc;border-radius:6px;padding:.4em}
figure img,.noimg{width:160px;height:160px;object-fit:contain;background:#f4f4f4;border:3px solid transparent}
figure.kept img{border-color:#2a2}.noimg{display:flex;align-items:center;justify-content:center}
.tag{font-weight:bold;color:#2a2}
table.failed{border-collapse:collapse}table.failed td{border-top:1px solid #ddd;padding:.2em .6em}
"""


def _figure(m: dict, caption: Optional[str] = None) -> str:
    img = (f'<img src="{m["thumb"]}" alt="{html.escape(str(m.get("id")))}" loading="lazy" decoding="async">'
           if m.get("thumb")
           else '<div class="noimg">no preview</div>')
    distance = m.get("distance")
    label = (f'<span class="tag">{"KEPT BEFORE THIS RUN" if m.get("earlier") else "KEPT"}</span>' if m["kept"]
             else f'distance {"?" if distance is None else distance}')
    if caption is not None:
        label = html.escape(caption)
    return (f'<figure class="{"kept" if m["kept"] else "dup"}">{img}'
            f'<figcaption>{label}<br>{html.escape(str(m.get("id")))}</figcaption></figure>')


def _matches_section(summary: dict, matches: List[dict]) -> List[str]:
    """What matched the reference or an earlier run (state), and the references that failed."""
    e = html.escape
    ref = summary.get("reference")
    state = summary.get("state_matches") or 0
    if ref is None and not state:
        return []
    parts = ["<h2>Matched before this run</h2><table class='counts'>"]
    if ref is not None:
        parts.append(f"<tr><td>references</td><td>{ref.get('references')}</td></tr>"
                     f"<tr><td>inputs that matched the reference</td><td>{ref.get('matches')}</td></tr>"
                     f"<tr><td>references that could not be hashed</td><td>{ref.get('failed')}</td></tr>")
    if summary.get("state_dir"):
        parts.append(f"<tr><td>inputs that matched earlier runs (state)</td><td>{state}</td></tr>")
    parts.append("</table>")
    if matches:
        parts.append("<div class='members'>" + "".join(
            _figure({**m, "kept": False}, f"{m['matched']}: {m.get('duplicate_of')}"
                                          + ("" if m.get("distance") is None else f", distance {m['distance']}"))
            for m in sorted(matches, key=lambda m: (m["matched"], str(m["id"])))) + "</div>")
    failures = (ref or {}).get("failures") or []
    if failures:
        parts.append("<h3>References that could not be hashed</h3><table class='failed'>"
                     + "".join(f"<tr><td>{e(str(f.get('id')))}</td><td>{e(str(f.get('error')))}</td></tr>"
                               for f in failures) + "</table>")
    return parts


def render(summary: dict, groups: List[dict], failures: List[dict], matches: List[dict] = (),
           distances: Optional[dict] = None) -> str:
    e = html.escape
    groups = sorted(groups, key=lambda g: (-g["size"], g["keeper"]))
    adds = summary.get("adds_up")
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(summary.get(k)))}</td></tr>"
                   for k in ("inputs", "kept", "duplicates", "failed", "wall_seconds",
                             "images_per_second", "algorithm", "hash_size", "bits", "backend",
                             "max_distance", "dihedral", "keep"))
    k = summary.get("max_distance") or 0
    if k or summary.get("dihedral"):
        alike = f"within {k} bits" + (", rotated or mirrored included" if summary.get("dihedral") else "")
        kind = "near-duplicate"
    else:
        alike, kind = "with the same hash", "duplicate"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>beam-phash report</title>",
        f"<style>{_STYLE}</style></head><body><h1>beam-phash dedup report</h1>",
        f"<table class='counts'>{rows}</table>",
        f"<p class='{'ok' if adds else 'bad'}'>inputs = kept + duplicates + failed: "
        f"{'yes' if adds else 'NO'}</p>",
    ]
    parts += report_distances.section(distances, _figure)
    parts += _matches_section(summary, list(matches))
    parts += [f"<h2>Largest {kind} groups ({len(groups)} shown)</h2>"]
    if not groups:
        parts.append("<p>No duplicates found.</p>" if not summary.get("duplicates") else
                     "<p>No groups among this run's keepers: every duplicate matched a reference or an "
                     "earlier run.</p>")
    for g in groups:
        shown = len(g["members"])
        more = f", {g['size'] - shown} more not shown" if g["size"] > shown else ""
        when = " before this run" if g["members"][0].get("earlier") else ""
        parts.append(f"<div class='group'><div>{g['size']} records {e(alike)} "
                     f"(kept{when}: {e(str(g['keeper']))}{more})</div><div class='members'>"
                     + "".join(_figure(m) for m in g["members"]) + "</div></div>")
    total_failed = summary.get("failed", len(failures))
    parts.append(f"<h2>Failures ({total_failed}"
                 f"{', first ' + str(len(failures)) + ' shown' if total_failed > len(failures) else ''})</h2>")
    if failures:
        parts.append("<table class='failed'><tr><th>id</th><th>reason</th></tr>"
                     + "".join(f"<tr><td>{e(str(f['id']))}</td><td>{e(str(f['error']))}</td></tr>"
                               for f in sorted(failures, key=lambda f: f["id"] or ""))
                     + "</table>")
    else:
        parts.append("<p>None.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(output: str, summary: dict) -> str:
    """Render ``DIR/report.html`` from the pipeline's report rows; returns its path."""
    page = render(summary, _read_jsonl(output, "groups"), _read_jsonl(output, "failures"),
                  _read_jsonl(output, "matches"), report_distances.read_stats(output))
    path = FileSystems.join(output, "report.html")
    with FileSystems.create(path) as f:
        f.write(page.encode("utf-8"))
    return path
