"""The reference set (``reference=``, ``--reference``): images that every input record is checked
against, and that are never output, never deduplicated among themselves and never counted as
inputs. A record within ``max_distance`` of a reference (equal hash in exact mode) is a duplicate
naming it, with ``matched="reference"``.

``HashReference`` turns the reference elements into packed fixed batches (``near.batches.Fixed``):
dict records (the image in ``image_field``, or a hex hash in ``hash_column``), or pyarrow
Tables/RecordBatches with those columns (``parquetio.ReadAllFromParquetBatched``), so that a large
set of hashes is never one Python object per hash. A reference that cannot be hashed goes to its
own failed output, with the reason; so does every row of a table whose schema says its hashes
were made with another algorithm, hash size or hash version (``hashed_as``: an earlier run's
``kept/`` output says so).

Near-duplicate mode hands the batches to ``NearDedup`` as fixed images. Exact mode uses
``MatchReference``: a join on the hash, before the backend.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_phash._native import FLAT_QUALITY, PHash, collapse_heads, hash_images, parse_hex_column, parse_hex_hashes
from beam_phash.checks import bounded
from beam_phash.hashed_as import hashed_as, unlike
from beam_phash.hashing import HashConfig, given_flat
from beam_phash.metrics import DedupMetrics
from beam_phash.near.batches import Fixed, concat, take_labels, u8, u32s
from beam_phash.near.fixed import REFERENCE, SOURCES, PackFixedDoFn, fixed_batch
from beam_phash.records import (
    DISTANCE_FIELD,
    DUPLICATES,
    ERROR_FIELD,
    MATCHED_FIELD,
    QUALITY_FIELD,
    BadRecord,
    Hashed,
    emit,
    field_of,
    image_bytes,
    printable_id,
    record_id,
)
from beam_phash.routing import rows_by_bucket
from beam_phash.strings import pack_labels
from beam_phash.windowed import in_window, with_window

REFERENCE_FAILED = "reference_failed"


class HashReferenceDoFn(beam.DoFn):
    """Lists of reference elements (dicts, or Arrow tables) -> ``Fixed`` batches; references that
    cannot be hashed go to ``reference_failed`` as ``{id_field: id, "error": reason}``."""

    def __init__(self, config: HashConfig):
        self._c = config  # its hash_column: the references' hex hashes, if they have them
        self._width = config.hash_bytes
        self._metrics = DedupMetrics()

    def _failed(self, label: str, reason: str):
        self._metrics.reference_failed.inc()
        return beam.pvalue.TaggedOutput(REFERENCE_FAILED, {self._c.id_field or "id": label or None, ERROR_FIELD: reason})

    def _blobs(self, records: list) -> list:
        """Each record's image bytes, or the reason it has none (a str)."""
        blobs = []
        for r in records:
            if field_of(r, ERROR_FIELD):  # failed while it was read: that reason
                blobs.append(str(r[ERROR_FIELD]))
                continue
            try:
                blobs.append(image_bytes(r, self._c.image_field))
            except BadRecord as e:
                blobs.append(str(e))
        return blobs

    def _hash(self, labels: List[str], blobs: list) -> Iterable:
        """Images (bytes-likes, or None with a reason string) -> one Fixed batch and failures."""
        good, keys, flat = [], [], []
        todo = [i for i, b in enumerate(blobs) if not isinstance(b, str)]
        for i, b in enumerate(blobs):
            if isinstance(b, str):
                yield self._failed(labels[i], b)
        results = hash_images([blobs[i] for i in todo], algorithm=self._c.algorithm, hash_size=self._c.hash_size,
                              threads=self._c.threads, max_pixels=self._c.max_pixels) if todo else []
        for i, result in zip(todo, results):
            if isinstance(result, PHash):
                good.append(i)
                keys.append(bytes(result))
                flat.append(result.quality < FLAT_QUALITY)
            else:
                yield self._failed(labels[i], str(result))
        if good:
            yield self._batch(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(good), self._width),
                              [labels[i] for i in good], flat)

    def _batch(self, keys: np.ndarray, labels, flat=None) -> Fixed:
        """A reference batch; ``flat`` is known for images only (hashes from a column: not flat)."""
        self._metrics.references.inc(len(keys))
        return fixed_batch(keys, REFERENCE, labels, flat)

    def _parsed(self, labels, packed: bytes, bad: np.ndarray, reasons: List[str], flat: np.ndarray) -> Iterable:
        keys = np.frombuffer(packed, dtype=np.uint8).reshape(-1, self._width)
        for i, reason in zip(bad, reasons):
            yield self._failed(str(labels[int(i)]), f"{self._c.hash_column}: {reason}")
        good = np.setdiff1d(np.arange(len(keys)), bad)
        if len(good):
            if isinstance(labels, pa.Array):
                labels = take_labels(labels, good)
            else:
                labels = [labels[i] for i in good]
            yield self._batch(keys[good], labels, flat[good])

    def _table(self, table) -> Iterable:
        names = table.schema.names
        n = table.num_rows
        if self._c.id_field and self._c.id_field in names:
            labels = table.column(self._c.id_field)
            labels = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
            if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
                labels = labels.cast(pa.large_string())
            else:  # str(id), as for dict references and inputs (Arrow's cast writes 1.0 as "1")
                labels = pa.array([None if v is None else str(v) for v in labels.to_pylist()], pa.large_string())
        else:
            labels = pa.array([""] * n, pa.large_string())
        if self._c.hash_column is not None:
            said = hashed_as(table.schema, self._c.hash_column)
            why = None if said is None else unlike(said, self._c.algorithm, self._c.hash_size)
            if why is not None:  # an earlier run's output of another algorithm, size or version
                for label in labels.fill_null("").to_pylist():
                    yield self._failed(label, f"{self._c.hash_column}: {why}")
                return
            # (a table without the column: each row fails as a dict reference without the field)
            column = table.column(self._c.hash_column) if self._c.hash_column in names else pa.nulls(n, pa.string())
            column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            offsets, data = pack_labels(column)  # the Arrow buffers as they are; nulls are marked apart
            valid = column.is_valid().to_numpy(zero_copy_only=False).astype(np.uint8)
            packed, bad, reasons = parse_hex_column(u8(offsets), data, self._c.bits, valid)
            flat = np.zeros(n, dtype=bool)
            if QUALITY_FIELD in names:  # an earlier run's kept/ carries each image's quality
                quality = table.column(QUALITY_FIELD)
                if pa.types.is_integer(quality.type) or pa.types.is_floating(quality.type):
                    flat = pc.fill_null(pc.less(quality, FLAT_QUALITY), False).to_numpy(zero_copy_only=False)
            yield from self._parsed(labels.fill_null(""), packed, u32s(bad), reasons, flat)
            return
        # A row with an error (an img2dataset failed download, say) fails with that reason.
        errors = table.column(ERROR_FIELD).to_pylist() if ERROR_FIELD in names else [None] * n
        if self._c.image_field in names:
            images = [{self._c.image_field: value, ERROR_FIELD: error}
                      for value, error in zip(table.column(self._c.image_field).to_pylist(), errors)]
        else:  # each row fails as a dict reference without the field does
            images = [{ERROR_FIELD: error} for error in errors]
        yield from self._hash([s or "" for s in labels.to_pylist()], self._blobs(images))

    def process(self, batch: list) -> Iterable:
        records, labels = [], []
        for element in batch:
            if isinstance(element, (pa.Table, pa.RecordBatch)):
                yield from self._table(element)  # (Arrow's strings are UTF-8: every id is text)
                continue
            try:
                labels.append(record_id(element, self._c.id_field) or "")
            except BadRecord as e:
                yield self._failed(printable_id(str(field_of(element, self._c.id_field))), str(e))
                continue
            records.append(element)
        if not records:
            return
        if self._c.hash_column is not None:
            values = [field_of(r, self._c.hash_column) for r in records]
            packed, errors = parse_hex_hashes(values, self._c.bits)
            bad = np.array([i for i, e in enumerate(errors) if e is not None], dtype=np.int64)
            flat = np.array([given_flat(r) for r in records], dtype=bool)
            yield from self._parsed(labels, packed, bad, [e for e in errors if e is not None], flat)
            return
        yield from self._hash(labels, self._blobs(records))


class HashReference(beam.PTransform):
    """Reference elements -> ``Fixed`` batches (main) and failed references (``reference_failed``),
    hashed as ``config`` says (its ``hash_column``: the references' own hex hashes)."""

    def __init__(self, config: HashConfig):
        super().__init__()
        self._config = config

    def expand(self, references):
        return (references
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._config.batch_size)
                | "Hash" >> beam.ParDo(HashReferenceDoFn(self._config)).with_outputs(
                    REFERENCE_FAILED, main="fixed"))


class KeyRecordsDoFn(beam.DoFn):
    """Hashed batches, each with the timestamp and window it came in, in the global window ->
    each record keyed by its hash, and per bundle the distinct hashes of each exact partition
    (``keys``)."""

    def __init__(self, partitions: int):
        self._partitions = partitions

    def start_bundle(self):
        self._keys: List[bytes] = []

    def process(self, element: Tuple[List[Hashed], object, object]):
        batch, timestamp, window = element
        for h in batch:
            self._keys.append(h.hash)
            yield h.hash, (h, timestamp, window)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        if not self._keys:
            return
        keys = np.unique(np.frombuffer(b"".join(self._keys), dtype=np.uint8).reshape(len(self._keys), -1), axis=0)
        for p, rows in rows_by_bucket(keys, self._partitions):
            yield beam.pvalue.TaggedOutput("keys", WindowedValue(
                (p, keys[rows]), GlobalWindow().max_timestamp(), [GlobalWindow()]))


class MatchKeysDoFn(beam.DoFn):
    """One exact partition: the input hashes and the reference rows -> (hash, reference label)
    for each input hash equal to a reference's (the reference with the smallest label)."""

    def process(self, element):
        _, joined = element
        keys = list(joined["keys"])
        fixed = list(joined["fixed"])
        if not keys or not fixed:
            return
        rows = concat(Fixed, fixed)
        offsets, blob = pack_labels(rows.labels)
        width = rows.keys.shape[1]
        heads = u32s(collapse_heads(u8(rows.keys), width, u8(rows.source), u8(offsets), blob))
        ref = np.ascontiguousarray(rows.keys[heads]).view(f"V{width}").ravel()  # ascending
        mine = np.unique(np.concatenate(keys), axis=0)
        wanted = np.ascontiguousarray(mine).view(f"V{width}").ravel()
        at = np.minimum(np.searchsorted(ref, wanted), len(ref) - 1)
        for i in np.flatnonzero(ref[at] == wanted):
            head = int(heads[at[i]])
            yield mine[i].tobytes(), (rows.labels[head].as_py(), SOURCES[int(rows.source[head])])


class ApplyMatchesDoFn(beam.DoFn):
    """Records of one hash and its reference match, if any: matched records are duplicates of
    the reference; the others go on (as one-record batches) to the backend."""

    def __init__(self):
        self._metrics = DedupMetrics()

    def process(self, element: Tuple[bytes, dict]):
        _, joined = element
        match = next(iter(joined["match"]), None)
        for h, timestamp, window in joined["records"]:
            if match is None:
                out = [h]
            else:
                label, source = match
                out = emit(h.record, label, self._metrics, **{DISTANCE_FIELD: 0, MATCHED_FIELD: source})
            yield from in_window([out], timestamp, window)


class MatchReference(beam.PTransform):
    """Exact mode: Hashed batches -> the records whose hash no reference has (main, as Hashed
    batches) and the duplicates of a reference (``duplicates``)."""

    def __init__(self, fixed, partitions: int = 16):
        super().__init__()
        self._fixed = fixed
        self._partitions = partitions

    def expand(self, hashed):
        bounded(hashed, "a reference in exact mode (with_reference)")
        # The reference is one set for every window: the join runs in the global window, and
        # each record goes on in its own window again (as Beam's Reshuffle carries them).
        windowing = hashed.windowing
        keyed = (hashed
                 | "CarryWindow" >> beam.Map(with_window).with_output_types(Any)
                 | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                 | "KeyRecords" >> beam.ParDo(KeyRecordsDoFn(self._partitions)).with_outputs("keys", main="records"))
        fixed = (self._fixed
                 | "ReferenceWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                 | "PackReference" >> beam.ParDo(PackFixedDoFn(self._partitions)))
        matches = ({"keys": keyed.keys, "fixed": fixed}
                   | "JoinReference" >> beam.CoGroupByKey()
                   | "MatchKeys" >> beam.ParDo(MatchKeysDoFn()))
        out = ({"records": keyed.records, "match": matches}
               | "JoinMatches" >> beam.CoGroupByKey()
               | "ApplyMatches" >> beam.ParDo(ApplyMatchesDoFn()).with_outputs(DUPLICATES, main="unmatched"))
        unmatched, duplicates = out.unmatched, out[DUPLICATES]
        unmatched._windowing = duplicates._windowing = windowing
        return unmatched, duplicates
