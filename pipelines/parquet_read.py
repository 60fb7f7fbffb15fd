"""Parquet files -> pyarrow tables (or dict rows), one row group at a time.

Beam's ``parquetio.ReadAll*`` matches each matched file's name again as a pattern, so a file
named ``part[1].parquet`` (or with ``*`` or ``?``) is never read: its own name matches another
file, or none. Here each file is opened by the path it was matched as (``FileSystems.open``), and
its row groups are spread over the workers in spans of about 64 MiB, as Beam's reader splits a
file at row groups.

A Hugging Face ``Image`` column whose rows hold only a path (``{bytes: null, path: P}``, as
``datasets``' ``Dataset.to_parquet`` writes a dataset of local files: it does not embed them, as
``push_to_hub`` does) has each such row's bytes read from ``P`` (:func:`with_path_images`), on
whichever worker a reshuffle gives a few such rows to (``PATH_ROWS``).
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_phash.records import ERROR_FIELD, FAILED
from pipelines.input_paths import BadName, InputPaths, StoredFiles, open_stored
from pipelines.repeated_keys import DEDUP_ID, dedup_id, id_file


#: About how many bytes of row groups one element reads (Beam's Parquet source splits files
#: at 64 MiB too): a file is opened, and its footer parsed, once per span, not once per row
#: group (a footer grows with the row groups, so that would be quadratic in them).
SPAN_BYTES = 64 << 20


def row_groups(path):
    """``path`` -> ``(path, start, stop)``: its row groups in spans of about ``SPAN_BYTES``."""
    if isinstance(path, BadName):
        raise ValueError(path.reason("Parquet file"))
    with open_stored(path) as f:
        meta = pq.ParquetFile(f).metadata
    start, size = 0, 0
    for index in range(meta.num_row_groups):
        size += meta.row_group(index).total_byte_size
        if size >= SPAN_BYTES:
            yield path, start, index + 1
            start, size = index + 1, 0
    if start < meta.num_row_groups:
        yield path, start, meta.num_row_groups


def row_id(path: str, row: int) -> str:
    """The id of a row of a Parquet file without an id column: ``FILE#ROW``, its file's path as
    matched and its row number from 0 (the same in every read, so retries are safe)."""
    return f"{path}#{row}"


def with_dedup_ids(table: pa.Table, path: str, column: str, first: str) -> pa.Table:
    """``table`` with a last column ``DEDUP_ID``: each row's id for dedup (``str`` of its id, as
    the dedup reads one, with its file outside the ``first`` folder; ``repeated_keys.dedup_id``)."""
    file = id_file(path, first)
    ids = [None if v is None else dedup_id(str(v), file) for v in table.column(column).to_pylist()]
    return table.append_column(DEDUP_ID, pa.array(ids, pa.string()))


#: Rows whose image is read from its path go to the workers in tables of at most this many: the
#: files of a row group (of up to a million paths, as pyarrow writes them) are read by every
#: worker, and an element holds this many images at most.
PATH_ROWS = 32
#: ReadRowGroupsDoFn's output of such tables, ``(Parquet file, table)``.
TO_READ = "to_read"


def holds_paths(t: pa.DataType) -> bool:
    """Whether an image column of type ``t`` is Hugging Face's ``Image`` layout, a struct with
    ``bytes`` (binary, or all null: pyarrow's type for a column of nulls) and a text ``path``."""
    if not pa.types.is_struct(t) or t.get_field_index("bytes") < 0 or t.get_field_index("path") < 0:
        return False
    data, path = t.field("bytes").type, t.field("path").type
    return (pa.types.is_binary(data) or pa.types.is_large_binary(data) or pa.types.is_null(data)) and (
        pa.types.is_string(path) or pa.types.is_large_string(path))


def with_binary_bytes(t: pa.DataType) -> pa.DataType:
    """An image struct type whose ``bytes`` are all null (:func:`holds_paths`) with binary
    ``bytes``, the type the bytes read from the paths take; any other type as it is."""
    if not pa.types.is_struct(t) or t.get_field_index("bytes") < 0 or not pa.types.is_null(t.field("bytes").type):
        return t
    return pa.struct([f.with_type(pa.binary()) if f.name == "bytes" else f for f in t])


def path_rows(table: pa.Table, column: str) -> List[int]:
    """The rows of ``table`` whose ``column`` holds a path and no bytes (:func:`holds_paths`)."""
    if not table.num_rows or column not in table.column_names or not holds_paths(table.schema.field(column).type):
        return []
    images = table.column(column)
    data, paths = pc.struct_field(images, "bytes"), pc.struct_field(images, "path")
    wanted = pc.and_(pc.and_(pc.is_valid(images), pc.is_null(data)), pc.not_equal(paths, ""))
    # (numpy, not pc.indices_nonzero, which crashes on a chunked array of no chunks: pyarrow 25)
    return np.flatnonzero(pc.fill_null(wanted, False).to_numpy()).tolist()


def image_file(path: str, source: str) -> str:
    """Where an image's ``path`` points: itself when absolute or a URI (``gs://``, ``s3://``),
    else the same path under the folder of ``source``, the Parquet file that holds it (the same
    on every worker, whatever its working folder), ``..`` taken away as a shell takes it."""
    if FileSystems.get_scheme(path) is not None or os.path.isabs(path):
        return path
    joined = FileSystems.join(FileSystems.split(source)[0], path)
    scheme, sep, rest = joined.partition("://")
    if not sep:
        return os.path.normpath(joined)
    # An object store reads 'a/../b' as that key: '.' and '..' are taken away in the key, never
    # past the bucket ('..' that would leave it: the path as joined), and '//' kept (a key's own).
    bucket, _, key = rest.partition("/")
    kept: List[str] = []
    for part in key.split("/"):
        if part == "..":
            if not kept:
                return joined
            kept.pop()
        elif part != ".":
            kept.append(part)
    return f"{scheme}://{bucket}/{'/'.join(kept)}"


def with_path_images(table: pa.Table, column: str, source: str,
                     files: StoredFiles) -> Tuple[pa.Table, Dict[int, str]]:
    """``table`` with the bytes of each row of ``column`` that holds a path and no bytes
    (:func:`path_rows`) read from that file (:func:`image_file`), and the rows whose file could not
    be read, by row, with the reason (their bytes stay null). A table without such rows is
    returned as it is. Every image of the table is held at once: give it a few rows."""
    rows = path_rows(table, column)
    if not rows:
        return table, {}
    images = table.column(column).combine_chunks()
    kind = with_binary_bytes(images.type)
    fields = [f.cast(kind.field(i).type) for i, f in enumerate(images.flatten())]
    at = kind.get_field_index("bytes")
    read: List[Optional[bytes]] = []
    failed: Dict[int, str] = {}
    for row, path in zip(rows, pc.struct_field(images, "path").take(rows).to_pylist()):
        where = image_file(path, source)
        try:
            read.append(files.read(where))
        except Exception as e:  # noqa: BLE001 - any filesystem's error: the row says which
            read.append(None)
            shown = repr(path) if where == path else f"{path!r} (in the Parquet file's folder: {where})"
            failed[row] = (f"the row's image has no bytes and its path {shown} cannot be read: "
                           f"{type(e).__name__}: {e}")
    mask = np.zeros(len(images), dtype=bool)
    mask[rows] = True
    fields[at] = pc.replace_with_mask(fields[at], pa.array(mask), pa.array(read, fields[at].type))
    filled = pa.StructArray.from_arrays(fields, fields=list(kind), mask=images.is_null())
    return table.set_column(table.column_names.index(column), pa.field(column, kind), filled), failed


def emitted(table: pa.Table, failed: Dict[int, str], rows: bool) -> Iterable:
    """A table read (its rows that failed, ``failed``, by row with the reason) as the reader
    yields it: the table, with an ``error`` column when some failed (null in the others), or
    (``rows``) a dict per row, those that failed to ``FAILED`` with the reason in ``error``."""
    if not rows:
        if failed:
            table = table.append_column(ERROR_FIELD, pa.array([failed.get(n) for n in range(table.num_rows)], pa.string()))
        yield table
        return
    for n, record in enumerate(table.to_pylist()):
        if n in failed:
            record[ERROR_FIELD] = failed[n]
            yield beam.pvalue.TaggedOutput(FAILED, record)
        else:
            yield record


class ReadRowGroupsDoFn(beam.DoFn):
    """``(path, start, stop)`` -> a table per row group (``columns`` only, when given), or their
    rows as dicts (``rows``), as ``parquetio.ReadAllFromParquet`` yields them; with ``row_ids``,
    a last column of that name holds each row's :func:`row_id`. With ``image_paths`` (the image
    column), rows that hold a path and no bytes go to ``TO_READ`` instead, in tables of
    ``PATH_ROWS``, for :class:`ReadPathImagesDoFn`. With ``dedup_ids`` (the id column and the
    input's first folder), a last column ``DEDUP_ID`` holds each row's id for dedup
    (:func:`with_dedup_ids`)."""

    def __init__(self, columns: Optional[List[str]], rows: bool, row_ids: Optional[str] = None,
                 image_paths: Optional[str] = None, dedup_ids: Optional[Tuple[str, str]] = None):
        self._columns = columns
        self._rows = rows
        self._row_ids = row_ids
        self._image_paths = image_paths
        self._dedup_ids = dedup_ids

    def process(self, element):
        path, start, stop = element
        columns = self._columns if self._row_ids is None or self._columns is None else [
            c for c in self._columns if c != self._row_ids]
        with open_stored(path) as f:
            source = pq.ParquetFile(f)
            row = sum(source.metadata.row_group(index).num_rows for index in range(start))
            for index in range(start, stop):
                table = source.read_row_group(index, columns=columns)
                if self._row_ids is not None:
                    ids = pa.array([row_id(path, n) for n in range(row, row + table.num_rows)], pa.string())
                    table = table.append_column(self._row_ids, ids)
                    row += table.num_rows
                if self._dedup_ids is not None:
                    table = with_dedup_ids(table, path, *self._dedup_ids)
                unread = path_rows(table, self._image_paths) if self._image_paths is not None else []
                for at in range(0, len(unread), PATH_ROWS):  # taken: a few rows' own buffers
                    yield beam.pvalue.TaggedOutput(TO_READ, (path, table.take(unread[at:at + PATH_ROWS])))
                if unread:
                    if len(unread) == table.num_rows:
                        continue
                    kept = np.ones(table.num_rows, dtype=bool)
                    kept[unread] = False
                    table = table.filter(pa.array(kept))
                yield from emitted(table, {}, self._rows)


class ReadPathImagesDoFn(beam.DoFn):
    """``(Parquet file, table)`` of rows whose image holds only a path -> the table with the
    files' bytes (:func:`with_path_images`), as :func:`emitted` yields it."""

    def __init__(self, image_paths: str, rows: bool):
        self._image_paths = image_paths
        self._rows = rows

    def setup(self):
        self._files = StoredFiles()

    def process(self, element):
        source, table = element
        table, failed = with_path_images(table, self._image_paths, source, self._files)
        yield from emitted(table, failed, self._rows)


class ReadParquet(beam.PTransform):
    """The pipeline's root -> the Parquet files ``patterns`` match, as pyarrow tables, one per row
    group, or (``rows``) as ``(records, failed)``, one dict per row; ``row_ids``, ``image_paths``,
    ``dedup_ids``: see :class:`ReadRowGroupsDoFn`."""

    def __init__(self, patterns: List[str], columns: Optional[List[str]] = None, rows: bool = False,
                 row_ids: Optional[str] = None, image_paths: Optional[str] = None,
                 dedup_ids: Optional[Tuple[str, str]] = None):
        super().__init__()
        self._patterns = patterns
        self._columns = columns
        self._rows = rows
        self._row_ids = row_ids
        self._image_paths = image_paths
        self._dedup_ids = dedup_ids

    def expand(self, pbegin):
        groups = (pbegin
                  | "Files" >> InputPaths(self._patterns)
                  | "RowGroups" >> beam.FlatMap(row_groups)
                  | "SpreadRowGroups" >> beam.Reshuffle())
        read = beam.ParDo(ReadRowGroupsDoFn(self._columns, self._rows, self._row_ids, self._image_paths,
                                            self._dedup_ids))
        if self._image_paths is None:
            if not self._rows:
                return groups | "ReadRowGroups" >> read
            records = groups | "ReadRowGroups" >> read
            # Empty, and produced by a step with an input (portable runners reject an empty Create).
            return records, records | "NoReadFailures" >> beam.Filter(lambda _: False)
        read = groups | "ReadRowGroups" >> read.with_outputs(TO_READ, main="main")
        filled = (read[TO_READ]
                  | "SpreadPathRows" >> beam.Reshuffle()
                  | "ReadPathImages" >> beam.ParDo(ReadPathImagesDoFn(self._image_paths, self._rows)).with_outputs(
                      FAILED, main="main"))
        every = (read.main, filled.main) | "WithPathImages" >> beam.Flatten()
        return (every, filled[FAILED]) if self._rows else every
