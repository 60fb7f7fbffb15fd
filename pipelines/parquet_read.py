"""Parquet files -> pyarrow tables (or dict rows), one row group at a time.

Beam's ``parquetio.ReadAll*`` matches each matched file's name again as a pattern, so a file
named ``part[1].parquet`` (or with ``*`` or ``?``) is never read: its own name matches another
file, or none. Here each file is opened by the path it was matched as (``FileSystems.open``), and
its row groups are spread over the workers, as Beam's reader splits a file at row groups.
"""
from __future__ import annotations

from typing import List, Optional

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.input_paths import BadName, InputPaths


def _open(path):
    # A Parquet file is read as it is, whatever its name ends with (.gz would be decompressed).
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def row_groups(path):
    """``path`` -> ``(path, index)`` for each of its row groups."""
    if isinstance(path, BadName):
        raise ValueError(path.reason("Parquet file"))
    with _open(path) as f:
        count = pq.ParquetFile(f).num_row_groups
    for index in range(count):
        yield path, index


class ReadRowGroupDoFn(beam.DoFn):
    """``(path, index)`` -> that row group's table (``columns`` only, when given), or its rows as
    dicts (``rows``), as ``parquetio.ReadAllFromParquet`` yields them."""

    def __init__(self, columns: Optional[List[str]], rows: bool):
        self._columns = columns
        self._rows = rows

    def process(self, element):
        path, index = element
        with _open(path) as f:
            table = pq.ParquetFile(f).read_row_group(index, columns=self._columns)
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
                | "ReadRowGroups" >> beam.ParDo(ReadRowGroupDoFn(self._columns, self._rows)))
