"""The job's Parquet outputs: ``kept/``, ``duplicates/`` and ``failed/`` under the output dir.

Rows keep the input's columns (for image files: ``id``, the path; the bytes stay in the files)
and add the hash; duplicate rows add ``duplicate_of``, failed rows ``error``. Written with Beam's
``WriteToParquet``, which writes to temporary files and renames them when the write finalizes, so
a retried bundle never leaves a partial or doubled shard behind.
"""
from __future__ import annotations

from typing import Dict, List

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_phash import DUPLICATE_OF_FIELD, ERROR_FIELD
from beam_phash.records import DISTANCE_FIELD, MATCHED_FIELD, QUALITY_FIELD
from pipelines.inputs import InputSpec

OUTPUTS = ("kept", "duplicates", "failed")
REFERENCE_FAILED = "reference_failed"


def schemas(spec: InputSpec, hash_field: str, near_duplicates: bool = False,
            quality: bool = True) -> Dict[str, pa.Schema]:
    """The Parquet schema of each output (near-duplicate mode, or a reference, adds the
    duplicates' distance; images hashed here, ``quality``, their quality score)."""
    if spec.fmt == "files":
        base = pa.schema([("id", pa.string())])
    else:
        base = spec.schema.remove_metadata()
    with_hash = base if hash_field in base.names else base.append(pa.field(hash_field, pa.string()))
    if quality and QUALITY_FIELD not in with_hash.names:
        with_hash = with_hash.append(pa.field(QUALITY_FIELD, pa.int32()))
    duplicates = with_hash.append(pa.field(DUPLICATE_OF_FIELD, pa.string()))
    if near_duplicates:
        duplicates = duplicates.append(pa.field(DISTANCE_FIELD, pa.int32()))
    duplicates = duplicates.append(pa.field(MATCHED_FIELD, pa.string()))
    return {
        "kept": with_hash,
        "duplicates": duplicates,
        "failed": with_hash.append(pa.field(ERROR_FIELD, pa.string())),
        REFERENCE_FAILED: pa.schema([("id", pa.string()), (ERROR_FIELD, pa.string())]),
    }


def _projector(names: List[str]):
    """Keep exactly the schema's columns; ids may be ints in the input, duplicate_of is a string."""
    def project(record: dict) -> dict:
        row = {n: record.get(n) for n in names}
        if row.get(DUPLICATE_OF_FIELD) is not None:
            row[DUPLICATE_OF_FIELD] = str(row[DUPLICATE_OF_FIELD])
        return row
    return project


class WriteOutputs(beam.PTransform):
    """Writes (kept, duplicates, failed, reference_failed) as Parquet shards
    under ``output``; ``reference_failed`` only with a reference."""

    def __init__(self, spec: InputSpec, output: str, hash_field: str, near_duplicates: bool = False,
                 reference: bool = False, quality: bool = True):
        super().__init__()
        self._spec = spec
        self._reference = reference
        self._output = output
        self._schemas = schemas(spec, hash_field, near_duplicates, quality)

    def expand(self, outputs):
        """``outputs``: (kept, duplicates, failed, reference_failed)."""
        written = {}
        id_column = self._spec.id_column
        failed_refs = outputs[3] | "ReferenceFailedRows" >> beam.Map(
            lambda r: {"id": None if r.get(id_column) is None else str(r.get(id_column)), ERROR_FIELD: r.get(ERROR_FIELD)})
        names = OUTPUTS + ((REFERENCE_FAILED,) if self._reference else ())
        for name, pcoll in zip(names, tuple(outputs[:3]) + (failed_refs,)):
            schema = self._schemas[name]
            title = name.title().replace("_", "")
            written[name] = (
                pcoll
                | f"Project{title}" >> beam.Map(_projector(schema.names))
                | f"Write{title}" >> beam.io.WriteToParquet(
                    FileSystems.join(self._output, name, "part"), schema, file_name_suffix=".parquet"))
        return written
