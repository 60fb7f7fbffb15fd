"""Rows written as Parquet files ``DIR/NAME/part-00000-of-00002.parquet`` ..., several outputs
finalized together, in the stage that makes the rows.

Beam's ``WriteToParquet`` costs a dozen transforms and three stages per output; the job writes
three or four outputs, and on a 10,000-image local run building and scheduling them weighed
more than the writing. This writer is one step per output plus one finalize step for all of
them, and it is safe under bundle retries the way Beam's file sinks are:

1. ``WritePartsDoFn`` writes each bundle's rows into a temporary file
   ``DIR/.tmp-<run>/NAME-<uuid>.parquet`` and emits the part (name, path, rows) only from
   ``finish_bundle``, once the file is closed. A bundle that fails leaves a part nobody reports;
   its retry writes a part with a new name.
2. ``FinalizeDoFn`` runs once, with every reported part as a side input, and
   renames each output's parts to ``DIR/NAME/part-{i:05d}-of-{n:05d}.parquet``, in the order of
   their temporary names. An output with no rows gets one empty file with its schema, as with
   ``WriteToParquet``, so every output can be read. Then the temporary directory, with any part
   of a failed attempt, is deleted. It is idempotent: a part already renamed is skipped.
"""
from __future__ import annotations

import uuid
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.temp_parts import ensure_dir, global_output, remove_tree, tmp_dir

#: Rows converted to Arrow at a time.
BATCH_ROWS = 1000
#: Arrow bytes buffered before they are written as one row group.
ROW_GROUP_BYTES = 64 << 20


class Part(NamedTuple):
    name: str
    path: str
    rows: int


def final_name(directory: str, name: str, index: int, count: int) -> str:
    return FileSystems.join(directory, name, f"part-{index:05d}-of-{count:05d}.parquet")


class _PartWriter:
    """One temporary Parquet file; rows go in as dicts, row groups of about ROW_GROUP_BYTES."""

    def __init__(self, directory: str, name: str, schema: pa.Schema):
        self.name = name
        self.path = FileSystems.join(directory, f"{name}-{uuid.uuid4().hex}.parquet")
        self._schema = schema
        self._file = FileSystems.create(self.path, mime_type="application/octet-stream",
                                        compression_type=CompressionTypes.UNCOMPRESSED)
        self._writer = pq.ParquetWriter(self._file, schema)
        self._rows: List[dict] = []
        self._batches: List[pa.RecordBatch] = []
        self._buffered = 0
        self.count = 0

    def add(self, row: dict) -> None:
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= BATCH_ROWS:
            self._convert()
            if self._buffered >= ROW_GROUP_BYTES:
                self._flush()

    def _convert(self) -> None:
        if self._rows:
            batch = pa.RecordBatch.from_pylist(self._rows, schema=self._schema)
            self._batches.append(batch)
            self._buffered += batch.nbytes
            self._rows = []

    def _flush(self) -> None:
        if self._batches:
            self._writer.write_table(pa.Table.from_batches(self._batches, schema=self._schema))
            self._batches, self._buffered = [], 0

    def close(self) -> Part:
        self._convert()
        self._flush()
        self._writer.close()
        self._file.close()
        return Part(self.name, self.path, self.count)


class WritePartsDoFn(beam.DoFn):
    """Records of one output -> a temporary Parquet file per bundle, its :class:`Part` emitted in
    ``finish_bundle`` (never before the file is complete). ``row`` makes a record a row of the
    schema."""

    def __init__(self, directory: str, name: str, schema: pa.Schema, row: Callable[[dict], dict]):
        self._directory = directory
        self._name = name
        self._schema = schema
        self._row = row

    def start_bundle(self):
        self._writer: Optional[_PartWriter] = None

    def process(self, record: dict):
        if self._writer is None:
            ensure_dir(self._directory)
            self._writer = _PartWriter(self._directory, self._name, self._schema)
        self._writer.add(self._row(record))
        return ()

    def finish_bundle(self):
        if self._writer is not None:
            writer, self._writer = self._writer, None
            yield global_output(writer.close())


def _write_empty(path: str, schema: pa.Schema) -> None:
    with FileSystems.create(path, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        pq.write_table(schema.empty_table(), f)


class FinalizeDoFn(beam.DoFn):
    """Runs once, with every part as a side input: the final files of every output; emits
    ``(name, rows)``."""

    def __init__(self, out_dir: str, directory: str, schemas: Dict[str, pa.Schema]):
        self._out_dir = out_dir
        self._directory = directory
        self._schemas = schemas

    def process(self, _start, parts: List[Part]) -> Iterable:
        by_name: Dict[str, List[Part]] = {name: [] for name in self._schemas}
        for part in parts:
            by_name[part.name].append(part)
        for name, found in by_name.items():
            found.sort(key=lambda p: p.path)
            ensure_dir(FileSystems.join(self._out_dir, name))
            if not found:
                target = final_name(self._out_dir, name, 0, 1)
                if not FileSystems.exists(target):
                    _write_empty(target, self._schemas[name])
            for index, part in enumerate(found):
                target = final_name(self._out_dir, name, index, len(found))
                if FileSystems.exists(part.path):  # else renamed by an earlier attempt of this step
                    FileSystems.rename([part.path], [target])
            yield name, sum(p.rows for p in found)
        remove_tree(self._directory)


class WriteParquet(beam.PTransform):
    """``{name: PCollection of dicts}`` -> ``out_dir/name/part-*.parquet`` for every name of
    ``schemas`` (a name with no input, or no rows, gets one empty file). ``rows`` may give a
    name the function that makes a record one row of its schema (default: the schema's fields of
    the record). Returns a PCollection of ``(name, rows written)``."""

    def __init__(self, out_dir: str, schemas: Dict[str, pa.Schema],
                 rows: Optional[Dict[str, Callable[[dict], dict]]] = None):
        super().__init__()
        self._out_dir = out_dir
        self._schemas = schemas
        self._rows = rows or {}
        self._directory = tmp_dir(out_dir)

    def expand(self, pcolls: dict):
        directory = self._directory
        parts = []
        for name, pcoll in pcolls.items():
            names = self._schemas[name].names
            row = self._rows.get(name) or (lambda record, names=names: {n: record.get(n) for n in names})
            title = name.title().replace("_", "")
            parts.append(pcoll | f"Write{title}" >> beam.ParDo(
                WritePartsDoFn(directory, name, self._schemas[name], row)))
        # Finalized from one element of its own, so that it runs, and writes the empty files,
        # even when no bundle wrote a part.
        all_parts = parts | "Parts" >> beam.Flatten(pipeline=self.pipeline)
        return (self.pipeline
                | "Start" >> beam.Create([None])
                | "Finalize" >> beam.ParDo(FinalizeDoFn(self._out_dir, directory, self._schemas),
                                           beam.pvalue.AsList(all_parts)))
