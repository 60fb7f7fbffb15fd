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


class ReadRowGroupsDoFn(beam.DoFn):
    """``(path, start, stop)`` -> a table per row group (``columns`` only, when given), or their
    rows as dicts (``rows``), as ``parquetio.ReadAllFromParquet`` yields them."""

    def __init__(self, columns: Optional[List[str]], rows: bool):
        self._columns = columns
        self._rows = rows

    def process(self, element):
        path, start, stop = element
        with open_stored(path) as f:
            source = pq.ParquetFile(f)
            for index in range(start, stop):
                table = source.read_row_group(index, columns=self._columns)
                if self._rows:
                    yield from table.to_pylist()
                else:
                    yield table


class ReadParquet(beam.PTransform):
    """The pipeline's root -> the Parquet files ``patterns`` match, as pyarrow tables, one per row
    group, or (``rows``) as one dict per row."""

    def __init__(self, patterns: List[str], columns: Optional[List[str]] = None, rows: bool = False):
        super().__init__()
        self._patterns = patterns
        self._columns = columns
        self._rows = rows

    def expand(self, pbegin):
        return (pbegin
                | "Files" >> InputPaths(self._patterns)
                | "RowGroups" >> beam.FlatMap(row_groups)
                | "SpreadRowGroups" >> beam.Reshuffle()
                | "ReadRowGroups" >> beam.ParDo(ReadRowGroupsDoFn(self._columns, self._rows)))
