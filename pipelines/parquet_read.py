"""Parquet files -> pyarrow tables (or dict rows), one row group at a time.

Beam's ``parquetio.ReadAll*`` matches each matched file's name again as a pattern, so a file
named ``part[1].parquet`` (or with ``*`` or ``?``) is never read: its own name matches another
file, or none. Here each file is opened by the path it was matched as (``FileSystems.open``), and
its row groups are spread over the workers in spans of about 64 MiB, as Beam's reader splits a
file at row groups.

A Hugging Face ``Image`` column whose rows hold only a path (``{bytes: null, path: P}``, as
``datasets``' ``Dataset.to_parquet`` writes a dataset of local files: it does not embed them, as
``push_to_hub`` does) has each such row's bytes read from ``P`` (:func:`with_path_images`).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_phash.records import ERROR_FIELD, FAILED
from pipelines.input_paths import BadName, InputPaths, StoredFiles, open_stored


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


def holds_paths(t: pa.DataType) -> bool:
    """Whether an image column of type ``t`` is Hugging Face's ``Image`` layout, a struct with
    ``bytes`` and a text ``path``."""
    if not pa.types.is_struct(t) or t.get_field_index("bytes") < 0 or t.get_field_index("path") < 0:
        return False
    path = t.field("path").type
    return pa.types.is_string(path) or pa.types.is_large_string(path) or pa.types.is_string_view(path)


def image_file(path: str, source: str) -> str:
    """Where an image's ``path`` points: itself when absolute or a URI (``gs://``, ``s3://``),
    else the same path under the folder of ``source``, the Parquet file that holds it (the same
    on every worker, whatever its working folder)."""
    if FileSystems.get_scheme(path) is not None or os.path.isabs(path):
        return path
    return FileSystems.join(FileSystems.split(source)[0], path)


def with_path_images(table: pa.Table, column: str, source: str,
                     files: StoredFiles) -> Tuple[pa.Table, Dict[int, str]]:
    """``table`` with the bytes of each row of ``column`` that holds a path and no bytes read from
    that file (:func:`image_file`), and the rows whose file could not be read, by row, with the
    reason (their bytes stay null). A table without such rows is returned as it is."""
    if column not in table.column_names or not holds_paths(table.schema.field(column).type):
        return table, {}
    images = table.column(column).combine_chunks()
    fields = images.flatten()  # each child in the struct's rows, a null struct null in each
    names = [f.name for f in images.type]
    data, paths = fields[names.index("bytes")], fields[names.index("path")]
    wanted = pc.and_(pc.and_(data.is_null(), paths.is_valid()), pc.not_equal(paths, ""))
    rows = pc.indices_nonzero(pc.fill_null(wanted, False)).to_pylist()
    if not rows:
        return table, {}
    read: List[Optional[bytes]] = []
    failed: Dict[int, str] = {}
    for row, path in zip(rows, paths.take(rows).to_pylist()):
        where = image_file(path, source)
        try:
            read.append(files.read(where))
        except Exception as e:  # noqa: BLE001 - any filesystem's error: the row says which
            read.append(None)
            shown = repr(path) if where == path else f"{path!r} (in the Parquet file's folder: {where})"
            failed[row] = (f"the row's image has no bytes and its path {shown} cannot be read: "
                           f"{type(e).__name__}: {e}")
    mask = pc.fill_null(wanted, False)
    fields[names.index("bytes")] = pc.replace_with_mask(data, mask, pa.array(read, data.type))
    filled = pa.StructArray.from_arrays(fields, fields=list(images.type), mask=images.is_null())
    return table.set_column(table.column_names.index(column), table.schema.field(column), filled), failed


class ReadRowGroupsDoFn(beam.DoFn):
    """``(path, start, stop)`` -> a table per row group (``columns`` only, when given), or their
    rows as dicts (``rows``), as ``parquetio.ReadAllFromParquet`` yields them; with ``row_ids``,
    a last column of that name holds each row's :func:`row_id`. With ``image_paths`` (the image
    column), rows that hold a path and no bytes get the file's bytes (:func:`with_path_images`);
    one whose file cannot be read goes to ``FAILED`` with the reason in ``error`` (as rows), or
    has it in an ``error`` column (as tables, null in the other rows)."""

    def __init__(self, columns: Optional[List[str]], rows: bool, row_ids: Optional[str] = None,
                 image_paths: Optional[str] = None):
        self._columns = columns
        self._rows = rows
        self._row_ids = row_ids
        self._image_paths = image_paths

    def setup(self):
        self._files = StoredFiles()

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
                failed: Dict[int, str] = {}
                if self._image_paths is not None:
                    table, failed = with_path_images(table, self._image_paths, path, self._files)
                if not self._rows:
                    if failed:
                        reasons = pa.array([failed.get(n) for n in range(table.num_rows)], pa.string())
                        table = table.append_column(ERROR_FIELD, reasons)
                    yield table
                    continue
                for n, record in enumerate(table.to_pylist()):
                    if n in failed:
                        record[ERROR_FIELD] = failed[n]
                        yield beam.pvalue.TaggedOutput(FAILED, record)
                    else:
                        yield record


class ReadParquet(beam.PTransform):
    """The pipeline's root -> the Parquet files ``patterns`` match, as pyarrow tables, one per row
    group, or (``rows``) as ``(records, failed)``, one dict per row; ``row_ids``, ``image_paths``:
    see :class:`ReadRowGroupsDoFn`."""

    def __init__(self, patterns: List[str], columns: Optional[List[str]] = None, rows: bool = False,
                 row_ids: Optional[str] = None, image_paths: Optional[str] = None):
        super().__init__()
        self._patterns = patterns
        self._columns = columns
        self._rows = rows
        self._row_ids = row_ids
        self._image_paths = image_paths

    def expand(self, pbegin):
        groups = (pbegin
                  | "Files" >> InputPaths(self._patterns)
                  | "RowGroups" >> beam.FlatMap(row_groups)
                  | "SpreadRowGroups" >> beam.Reshuffle())
        read = beam.ParDo(ReadRowGroupsDoFn(self._columns, self._rows, self._row_ids, self._image_paths))
        if not self._rows:
            return groups | "ReadRowGroups" >> read
        rows = groups | "ReadRowGroups" >> read.with_outputs(FAILED, main="records")
        return rows.records, rows[FAILED]
