"""Parquet files -> pyarrow tables (or dict rows), one row group at a time.

Beam's ``parquetio.ReadAll*`` matches each matched file's name again as a pattern, so a file
named ``part[1].parquet`` (or with ``*`` or ``?``) is never read: its own name matches another
file, or none. Here each file is opened by the path it was matched as (``FileSystems.open``), and
its row groups are spread over the workers in spans of about 64 MiB, as Beam's reader splits a
file at row groups.
"""
from __future__ import annotations

from typing import List, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.input_paths import BadName, InputPaths, open_stored


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


class ReadRowGroupsDoFn(beam.DoFn):
    """``(path, start, stop)`` -> a table per row group (``columns`` only, when given), or their
    rows as dicts (``rows``), as ``parquetio.ReadAllFromParquet`` yields them; with ``row_ids``,
    a last column of that name holds each row's :func:`row_id`."""

    def __init__(self, columns: Optional[List[str]], rows: bool, row_ids: Optional[str] = None):
        self._columns = columns
        self._rows = rows
        self._row_ids = row_ids

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
                if self._rows:
                    yield from table.to_pylist()
                else:
                    yield table


class ReadParquet(beam.PTransform):
    """The pipeline's root -> the Parquet files ``patterns`` match, as pyarrow tables, one per row
    group, or (``rows``) as one dict per row; ``row_ids``: see :class:`ReadRowGroupsDoFn`."""

    def __init__(self, patterns: List[str], columns: Optional[List[str]] = None, rows: bool = False,
                 row_ids: Optional[str] = None):
        super().__init__()
        self._patterns = patterns
        self._columns = columns
        self._rows = rows
        self._row_ids = row_ids

    def expand(self, pbegin):
        return (pbegin
                | "Files" >> InputPaths(self._patterns)
                | "RowGroups" >> beam.FlatMap(row_groups)
                | "SpreadRowGroups" >> beam.Reshuffle()
                | "ReadRowGroups" >> beam.ParDo(ReadRowGroupsDoFn(self._columns, self._rows, self._row_ids)))
