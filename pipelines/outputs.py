"""The job's Parquet outputs: ``kept/``, ``duplicates/`` and ``failed/`` under the output dir.

Rows keep the input's columns (for image files: ``id``, the path; the bytes stay in the files)
and add the hash; duplicate rows add ``duplicate_of``, failed rows ``error``. Input in files of
several folders adds ``dedup_id``, the id each row was deduplicated under, which
``duplicate_of`` names (``repeated_keys.dedup_id``). Written by
``parquet_write``, which writes to temporary files and renames them when the write finalizes, so
a retried bundle never leaves a partial or doubled file behind.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import apache_beam as beam
import pyarrow as pa

from beam_phash import DUPLICATE_OF_FIELD, ERROR_FIELD
from beam_phash.records import DISTANCE_FIELD, MATCHED_FIELD, QUALITY_FIELD
from pipelines.inputs import HASHED_AS, InputSpec
from pipelines.parquet_write import WriteParquet
from pipelines.repeated_keys import DEDUP_ID

#: The outputs' column of the id each row was deduplicated under, with input in several folders.
DEDUP_ID_COLUMN = "dedup_id"

OUTPUTS = ("kept", "duplicates", "failed")
REFERENCE_FAILED = "reference_failed"


def schemas(spec: InputSpec, hash_field: str, near_duplicates: bool = False,
            quality: bool = True, made: Optional[Dict[str, Any]] = None) -> Dict[str, pa.Schema]:
    """The Parquet schema of each output (near-duplicate mode, or a reference, adds the
    duplicates' distance; images hashed here, ``quality``, their quality score). ``made``: how
    the hashes were made (algorithm, hash_size, hash_version), said in the metadata of the
    outputs that carry them (``inputs.HASHED_AS``), so that a later run reading them as a
    reference or a hash column can refuse hashes made otherwise."""
    if spec.fmt == "files":
        base = pa.schema([("id", pa.string())])
    else:
        base = spec.schema.remove_metadata()
    if writes_dedup_ids(spec):  # (replacing an input's column of that name: an earlier run's)
        at = base.get_field_index(DEDUP_ID_COLUMN)
        column = pa.field(DEDUP_ID_COLUMN, pa.string())
        base = base.append(column) if at < 0 else base.set(at, column)
    with_hash = base if hash_field in base.names else base.append(pa.field(hash_field, pa.string()))
    if quality and QUALITY_FIELD not in with_hash.names:
        with_hash = with_hash.append(pa.field(QUALITY_FIELD, pa.int32()))
    duplicates = with_hash.append(pa.field(DUPLICATE_OF_FIELD, pa.string()))
    if near_duplicates:
        duplicates = duplicates.append(pa.field(DISTANCE_FIELD, pa.int32()))
    duplicates = duplicates.append(pa.field(MATCHED_FIELD, pa.string()))
    failed = with_hash.append(pa.field(ERROR_FIELD, pa.string()))
    if made is not None:
        said = {HASHED_AS: json.dumps({"field": hash_field, **made}, sort_keys=True).encode()}
        with_hash, duplicates, failed = (s.with_metadata(said) for s in (with_hash, duplicates, failed))
    return {
        "kept": with_hash,
        "duplicates": duplicates,
        "failed": failed,
        REFERENCE_FAILED: pa.schema([("id", pa.string()), (ERROR_FIELD, pa.string())]),
    }


def writes_dedup_ids(spec: InputSpec) -> bool:
    """Whether the outputs' ``dedup_id`` is this run's: with input in several folders, unless
    the input's own column of that name is its id column (an earlier run's, read again with
    ``--id-column dedup_id``), which is kept as it is."""
    return spec.first_folder is not None and spec.id_column != DEDUP_ID_COLUMN


def _projector(names: List[str], dedup_ids: bool = False):
    """Keep exactly the schema's columns; ids may be ints in the input, duplicate_of is a string.
    With ``dedup_ids``, ``dedup_id`` is the record's id for dedup."""
    def project(record: dict) -> dict:
        row = {n: record.get(n) for n in names}
        if dedup_ids and DEDUP_ID in record:
            row[DEDUP_ID_COLUMN] = record[DEDUP_ID]
        if row.get(DUPLICATE_OF_FIELD) is not None:
            row[DUPLICATE_OF_FIELD] = str(row[DUPLICATE_OF_FIELD])
        return row
    return project


def _reference_failed_row(id_column: str):
    def row(record: dict) -> dict:
        found = record.get(id_column)
        return {"id": None if found is None else str(found), ERROR_FIELD: record.get(ERROR_FIELD)}
    return row


class WriteOutputs(beam.PTransform):
    """Writes (kept, duplicates, failed, reference_failed) as Parquet files
    ``output/NAME/part-*.parquet``; ``reference_failed`` only with a reference."""

    def __init__(self, spec: InputSpec, output: str, hash_field: str, near_duplicates: bool = False,
                 reference: bool = False, quality: bool = True, made: Optional[Dict[str, Any]] = None):
        super().__init__()
        self._spec = spec
        self._reference = reference
        self._output = output
        self._schemas = schemas(spec, hash_field, near_duplicates, quality, made)

    def expand(self, outputs):
        """``outputs``: (kept, duplicates, failed, reference_failed)."""
        names = OUTPUTS + ((REFERENCE_FAILED,) if self._reference else ())
        rows = {name: _projector(self._schemas[name].names, writes_dedup_ids(self._spec)) for name in OUTPUTS}
        rows[REFERENCE_FAILED] = _reference_failed_row(self._spec.dedup_id)
        return dict(zip(names, outputs)) | "Parquet" >> WriteParquet(
            self._output, {name: self._schemas[name] for name in names}, rows)
