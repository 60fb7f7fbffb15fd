"""The job's inputs: image files, Parquet files with an image column, or WebDataset shards, as
dict records.

All are read through Beam's filesystems (``fileio.MatchAll`` and ``FileSystems.open``), so any
filesystem Beam knows (local, ``gs://``, ``s3://`` with those extras) works. :func:`resolve`
checks everything at start, so that configuration errors stop the job before it runs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_phash.hashed_as import HASHED_AS, hashed_as  # noqa: F401 - HASHED_AS: the outputs' writer's, the tests'
from beam_phash.records import ERROR_FIELD, FAILED, QUALITY_FIELD, hash_bytes
from pipelines import webdataset_read as wds
# img2dataset's status columns and a failed row's reason: one wording for Parquet input,
# references and shard sidecars.
from pipelines.webdataset_read import ERROR_MESSAGE_COLUMN, STATUS_COLUMN, status_reason
from pipelines.errors import ConfigError
from pipelines.input_items import located, refuse_other_format, unread
from pipelines.input_paths import BadName, InputPaths, Listing, StoredFiles, carried, identity, literal, open_stored
from pipelines.parquet_read import ReadParquet, holds_paths, with_binary_bytes
from pipelines.repeated_keys import DEDUP_ID, first_folder

FORMATS = ("files", "parquet", "webdataset")
#: img2dataset's Parquet: the image column is named after the format, the id is ``key``.
DETECTED_IMAGE_COLUMNS = ("jpg", "png", "webp", "jpeg")
DETECTED_ID_COLUMN = "key"


@dataclass
class InputSpec:
    """What to read, checked: the patterns that matched, and for Parquet the input schema."""

    fmt: str
    patterns: List[str]
    given: List[str] = field(default_factory=list)  # the inputs as given (the summary shows them)
    image_column: str = "image"
    id_column: str = "id"
    schema: Optional[pa.Schema] = None  # Parquet only
    matched: int = 0
    columns: List[str] = field(default_factory=list)
    rows: Optional[int] = None  # Parquet: the row count, from the footers
    hash_column: Optional[str] = None  # references: the column of hex hashes, if any
    status_column: Optional[str] = None  # Parquet from img2dataset: rows not "success" fail unread
    image_exts: Tuple[str, ...] = wds.DEFAULT_IMAGE_EXTS  # WebDataset: image member suffixes
    sidecar_columns: Tuple[str, ...] = ()  # WebDataset: columns joined from the shards' Parquet
    join_sidecar: bool = True  # WebDataset: join the sidecar Parquet when a shard has one
    total_bytes: int = 0  # WebDataset: the shards' total size
    # WebDataset: keys repeated across the shards of a folder, found by the launcher (local shards:
    # a few small ones, or any when the pipeline runs in its process)
    repeated_keys: Optional[Dict[Tuple[str, str], str]] = None
    # Input (shards, or Parquet with an id column) in files of more than one folder: the first
    # folder by path. Each record's id for dedup is then made as it is read (``DEDUP_ID``): its
    # id in that folder, ``ID (FILE)`` in the others (``repeated_keys.dedup_id``)
    first_folder: Optional[str] = None
    # Image files and WebDataset: every matched path, as the launcher listed them, for the pipeline
    # to read instead of matching again, when it runs in the launcher's process (``in_process``)
    # or reads its inputs by name (the patterns would be these names, each matched alone)
    paths: Optional[List[str]] = None
    in_process: bool = False  # the pipeline runs on one worker in the launcher's process
    # Hidden files the inputs' wildcards matched and that were passed over (``.DS_Store``,
    # macOS's ``._NAME``), by identity, each as the part of its path that shows it: not read,
    # not counted, said at the start and in the summary
    hidden: Dict[str, str] = field(default_factory=dict)
    # Subfolders of local folders given as inputs, which a folder's listing does not read and
    # no other input reads from: said at the start and counted in the summary
    subfolders: List[str] = field(default_factory=list)
    # Parquet without an id column (``id``, or img2dataset's ``key``): the id column is made as
    # each row is read, ``FILE#ROW`` (``parquet_read.row_id``)
    row_ids: bool = False
    # Parquet input: an id its first file's first row group holds twice, said at the start
    # (:func:`repeated_id`): rows of one folder that share an id are taken as retries of one record
    repeated_id: Optional[str] = None
    # Parquet read for its hash column: how the job that wrote it hashed (HASHED_AS in its
    # schema's metadata: algorithm, hash_size, hash_version), when it says
    hashed_as: Optional[Dict[str, Any]] = None

    @property
    def dedup_id(self) -> str:
        """The field that holds each record's id for dedup: the id column, or for input in files
        of several folders ``repeated_keys.DEDUP_ID``."""
        return self.id_column if self.first_folder is None else DEDUP_ID

    def listing(self) -> Optional[Listing]:
        """The launcher's listing for the pipeline to read (``paths``), if any: spread over the
        workers unless the pipeline runs in this process."""
        return None if self.paths is None else Listing(self.paths, spread=not self.in_process)


#: The hash column of the job's Parquet outputs (kept/, duplicates/).
OUTPUT_HASH_COLUMN = "image_phash"


def earlier_output_hint(columns) -> str:
    """For Parquet input read as images that holds the job's hash column (an earlier run's
    kept/ or duplicates/, whose image files' bytes are not kept): how to dedup it again."""
    if OUTPUT_HASH_COLUMN not in columns:
        return ""
    return f" (an earlier run's output? dedup its hashes with --hash-column {OUTPUT_HASH_COLUMN})"


def _widened(schema: pa.Schema, other: pa.Schema, first: str, path: str) -> pa.Schema:
    """The output schema that holds the values of both files: a column of ints in one and floats
    in the other is written as floats, one all null in the first as the other's type. Types that
    no value converts between (strings and ints) are a ConfigError naming both files."""
    def plain(s: pa.Schema) -> pa.Schema:  # a dictionary column (a pandas categorical) as its values
        return pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                          for f in s.remove_metadata()])

    try:
        return pa.unify_schemas([plain(schema), plain(other)], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as e:
        raise ConfigError(f"{path!r} and {first!r} hold a column in types that do not convert: "
                          f"{' '.join(str(e).split())}") from None


def _parquet_footer(path: str) -> Tuple[pa.Schema, int]:
    """A Parquet file's schema and row count, from its footer, read as the workers read the
    file: as stored, whatever its name's suffix (``open_stored``)."""
    try:
        with open_stored(path) as f:
            parquet = pq.ParquetFile(f)
            return parquet.schema_arrow, parquet.metadata.num_rows
    except Exception as e:  # noqa: BLE001 - not Parquet, unreadable
        raise ConfigError(f"cannot read the Parquet schema of {path!r}: {e}") from None


def _is_text(t: pa.DataType) -> bool:
    """Strings as any writer stores them: string, large_string (polars), or a dictionary of
    them (a pandas categorical)."""
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_image_type(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return True
    return holds_paths(t) or pa.types.is_struct(t) and any(
        t.field(i).name == "bytes" and _is_image_type(t.field(i).type) for i in range(t.num_fields))


def _first_values(path: str, column: str) -> Optional[pa.ChunkedArray]:
    """``column`` of the first row group of ``path`` (read as stored, as ``_parquet_footer`` reads
    it), or None when the file has no row group."""
    with open_stored(path) as f:
        pf = pq.ParquetFile(f)
        if pf.metadata.num_row_groups == 0:
            return None
        return pf.read_row_group(0, columns=[column]).column(0)


def _repeat(ids: pa.ChunkedArray) -> Optional[Tuple[Any, int, int, str]]:
    """A value ``ids`` holds twice, the first two places it is at, and how many others repeat."""
    counts = pc.value_counts(ids.drop_null())
    many = counts.filter(pc.greater(counts.field("counts"), 1))
    if not len(many):
        return None
    value = many.field("values")[0]
    first, second = np.flatnonzero(pc.fill_null(pc.equal(ids, value), False).to_numpy())[:2]
    others = f", and {len(many) - 1} other value{'s' if len(many) > 2 else ''}" if len(many) > 1 else ""
    return value.as_py(), int(first), int(second), others


def repeated_id(paths: List[str], column: str) -> Optional[str]:
    """An id ``column`` holds twice in the first row group of ``paths[0]`` (a label given as
    ``--id-column``), as ``'cat' (rows 0 and 3 of FILE)``, or None. One row group is read, so a
    column unique there may still repeat elsewhere; one that repeats there is never unique."""
    ids = _first_values(paths[0], column)
    found = None if ids is None else _repeat(ids)
    if found is None:
        return None
    value, first, second, others = found
    return f"{value!r} (rows {first} and {second} of {paths[0]}{others})"


def _sample_hex(path: str, column: str) -> Optional[str]:
    """The first non-null value of a hash column (from the file's first row group)."""
    values = _first_values(path, column)
    values = values.drop_null() if values is not None else []
    return values[0].as_py() if len(values) else None


def resolve(inputs: List[str], fmt: str, image_column: str = "image",
            id_column: str = "id", hash_column: Optional[str] = None,
            hash_bits: Optional[int] = None, flag: str = "--input",
            image_exts: Tuple[str, ...] = wds.DEFAULT_IMAGE_EXTS, join_sidecar: bool = True,
            reserved: Tuple[str, ...] = (), in_process: bool = False,
            checked: frozenset = frozenset()) -> InputSpec:
    """Match every input and, for Parquet, check the columns (with ``hash_column``: that it holds
    hex hashes of ``hash_bits`` bits, instead of the image column). Raises ConfigError, naming
    the options as ``flag`` (``--input``, or ``--reference`` for ``--reference-image-column``...).

    Parquet: when the default columns (``image``, ``id``) are missing, img2dataset's are detected
    (``jpg``/``png``/``webp``, ``key``); with its ``status`` and ``error_message`` columns, rows
    whose status is not ``success`` become failed records without being decoded.
    WebDataset: ``reserved`` names the fields the job writes, which sidecar columns cannot be;
    ``in_process``: the pipeline will run on one worker in this process, which then reads the
    files or shards listed here (``paths``) instead of matching them again. ``checked``: items
    already looked into for an earlier run's output (``reference_spec`` locates them first)."""
    column_flag = "--" if flag == "--input" else flag + "-"
    if fmt not in FORMATS:
        raise ConfigError(f"{flag}-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    patterns, paths, sizes, files = [], [], {}, {}
    by_name = False
    passed: Dict[str, str] = {}  # hidden files passed over, by identity, each as shown
    folders: Dict[str, str] = {}  # subfolders of local folders, by identity, as spelt
    for item in inputs:
        pattern, matched, dropped, hidden_paths, subfolders = located(item, fmt, flag, checked)
        for folder in subfolders:
            folders.setdefault(identity(folder), folder)
        # Entries Beam's listing drops, and the rest of a folder that holds hidden files, are
        # read by name: counted among the inputs, never silently left out or taken.
        by_name = by_name or dropped
        for path, part in hidden_paths.items():
            passed.setdefault(identity(path), part)
        if fmt == "files" and flag == "--input":
            refuse_other_format(item, matched)
        if fmt == "webdataset" and pattern != item:
            # A folder: its shards, .tar or compressed (.tar.gz...), read by name when it holds
            # other files too (img2dataset's sidecars and statistics).
            shards = {p: matched[p] for p in wds.shards_among(matched)}
            if not shards:
                raise ConfigError(f"{flag} {item!r} holds no WebDataset shards ({', '.join(wds.SHARD_SUFFIXES)}) "
                                  f"among its {len(matched)} file(s); is {flag}-format right?")
            by_name = by_name or len(shards) != len(matched)
            matched = shards
        else:
            # A glob over img2dataset's folder (DIR/*) also matches the statistics beside each
            # shard or Parquet file, and a shard's Parquet sidecar: not data, so the rest is
            # read by name.
            beside = _img2dataset_extras(matched, fmt)
            if beside & matched.keys():
                matched = {p: size for p, size in matched.items() if p not in beside}
                by_name = True
        paths += matched
        sizes.update(matched)
        patterns.append(pattern)
        for path in matched:
            files.setdefault(identity(path), path)
    listed = sorted(files.values())
    by_name = by_name or len(listed) != len(paths)
    if by_name:
        # Overlapping inputs (DIR and DIR/*.jpg, or DIR and ./DIR/x.jpg) must not read a file
        # twice: read the matched files by name instead, each once, by the spelling that came
        # first (only then, as a list of names can be long), each name as a pattern matching it
        # alone (`part[1].parquet` would match part1.parquet, not itself).
        paths, patterns = listed, [literal(p) for p in listed]
    spec = InputSpec(fmt, patterns, list(inputs), image_column, id_column, matched=len(paths),
                     in_process=in_process, hidden={i: part for i, part in passed.items() if i not in files},
                     subfolders=unread(folders, files))
    if (in_process or by_name) and fmt in ("files", "webdataset"):
        # (Matched by name on the workers, an entry Beam's listing drops, a link to nothing, would
        # be an empty match, which fails the run.)
        spec.paths = listed
    if fmt == "files":
        spec.columns = ["id"]
        return spec
    if fmt == "webdataset":
        spec.total_bytes = sum(sizes[p] for p in listed)
        return _resolve_shards(spec, paths, image_exts, join_sidecar, reserved, check_keys=flag == "--input",
                               in_process=in_process)
    schema, rows = _parquet_footer(paths[0])
    names = schema.names
    made = {paths[0]: hashed_as(schema, hash_column)} if hash_column else {}
    # Every file's footer first: the column types checked below are the files' unified ones (a
    # column all null in the first file takes the next one's type).
    for other in paths[1:]:
        other_schema, other_rows = _parquet_footer(other)
        if set(other_schema.names) != set(names):
            raise ConfigError(f"{other!r} has other columns than {paths[0]!r}")
        if hash_column:
            made[other] = hashed_as(other_schema, hash_column)
        schema = _widened(schema, other_schema, paths[0], other)
        rows += other_rows
    said = {json.dumps(m, sort_keys=True): path for path, m in made.items() if m is not None}
    if len(said) > 1:
        (a, first_path), (b, other_path) = list(said.items())[:2]
        raise ConfigError(f"{first_path!r} and {other_path!r} hold hashes made differently ({a}, {b}): "
                          f"give {flag} files of one run")
    if said and all(m is not None for m in made.values()):
        spec.hashed_as = json.loads(next(iter(said)))
    elif said:  # some files say, others not: the silent ones may hold anything
        silent = next(path for path, m in made.items() if m is None)
        raise ConfigError(f"{silent!r} does not say how its hashes were made, where {next(iter(said.values()))!r} "
                          f"does: give {flag} files of one run")
    if not hash_column and image_column == "image" and image_column not in names:
        found = [c for c in DETECTED_IMAGE_COLUMNS if c in names and _is_image_type(schema.field(c).type)]
        if found:
            image_column = spec.image_column = found[0]
    if id_column == "id" and id_column not in names and DETECTED_ID_COLUMN in names:
        id_column = spec.id_column = DETECTED_ID_COLUMN
    # No id of its own (a Hugging Face export): each row's is FILE#ROW, made as it is read.
    spec.row_ids = id_column == "id" and id_column not in names
    if STATUS_COLUMN in names and ERROR_MESSAGE_COLUMN in names and _is_text(schema.field(STATUS_COLUMN).type):
        spec.status_column = STATUS_COLUMN
    needed = ((f"{column_flag}hash-column", hash_column),) if hash_column else ((f"{column_flag}image-column", image_column),)
    for option, column in needed + (() if spec.row_ids else ((f"{column_flag}id-column", id_column),)):
        if column not in names:
            hint = earlier_output_hint(names) if not hash_column and flag == "--input" else ""
            raise ConfigError(f"{option} {column!r} is not a column of {paths[0]!r} "
                              f"(columns: {', '.join(names)}){hint}")
    if hash_column:
        if not pa.types.is_string(schema.field(hash_column).type) and not pa.types.is_large_string(
                schema.field(hash_column).type):
            raise ConfigError(f"{column_flag}hash-column {hash_column!r} has type {schema.field(hash_column).type}; "
                              "expected strings of hex digits")
        sample = _sample_hex(paths[0], hash_column)
        want = 2 * hash_bytes(hash_bits)
        if sample is not None and len(sample.strip()) != want:
            raise ConfigError(f"{column_flag}hash-column {hash_column!r} holds hashes of {len(sample.strip())} hex digits "
                              f"({len(sample.strip()) * 4} bits); the configured algorithm and hash size give "
                              f"{hash_bits} bits ({want} hex digits)")
    elif not _is_image_type(schema.field(image_column).type):
        raise ConfigError(f"{column_flag}image-column {image_column!r} has type {schema.field(image_column).type}; "
                          "expected binary or a struct with a binary 'bytes' field")
    if not hash_column:  # bytes all null (paths only, as pyarrow types them) are written as the bytes read
        at = schema.get_field_index(image_column)
        schema = schema.set(at, schema.field(at).with_type(with_binary_bytes(schema.field(at).type)))
    if not spec.row_ids and flag == "--input":
        spec.repeated_id = repeated_id(paths, id_column)
        spec.first_folder = first_folder(paths)
    if spec.row_ids:
        schema = schema.append(pa.field(id_column, pa.string()))
    spec.schema = schema
    spec.columns = schema.names
    spec.rows = rows
    return spec


def _resolve_shards(spec: InputSpec, paths: List[str], image_exts: Tuple[str, ...],
                    join_sidecar: bool, reserved: Tuple[str, ...], check_keys: bool = True,
                    in_process: bool = False) -> InputSpec:
    """WebDataset (``spec.total_bytes`` set): the output schema (the sample fields, then the
    first shard's sidecar columns);
    with ``check_keys``, for a few small local shards (any local shards ``in_process``, see
    ``webdataset_read.LOCAL_KEY_CHECK_SHARDS``), the keys repeated across them."""
    exts = tuple(e.strip().lower().lstrip(".") for e in image_exts if e.strip())
    if not exts:
        raise ConfigError("--image-ext needs at least one suffix")
    spec.image_exts = exts
    spec.image_column, spec.id_column = wds.IMAGE, wds.KEY
    spec.join_sidecar = join_sidecar
    few = len(paths) <= wds.LOCAL_KEY_CHECK_SHARDS and spec.total_bytes <= wds.LOCAL_KEY_CHECK_BYTES
    named = [p for p in paths if not isinstance(carried(p), BadName)]
    if check_keys and len(paths) > 1 and (few or in_process) and not any("://" in p for p in paths):
        # (a shard whose name is not UTF-8 is not read: its keys hold no other shard's back)
        spec.repeated_keys = wds.repeated_keys(named)
    if check_keys:
        spec.first_folder = first_folder(named)
    fields = [pa.field(wds.KEY, pa.string()), pa.field(wds.SHARD, pa.string()),
              pa.field(wds.MEMBERS, pa.list_(pa.string())), pa.field(wds.IMAGE_MEMBER, pa.string())]
    sidecar = wds.sidecar_path(paths[0])
    if join_sidecar and FileSystems.exists(sidecar):
        # The first shard's sidecar, and the other local sidecars' footers too (cheap). One that
        # cannot be read (cut short by a killed download) is its shard's reader's to report, as
        # a failed record; its samples are still read.
        others = [] if any("://" in p for p in paths) else [
            other for other in map(wds.sidecar_path, paths[1:]) if os.path.exists(other)]
        schema, first = None, None
        for path in [sidecar, *others]:
            try:
                found, _ = _parquet_footer(path)
            except ConfigError:
                continue
            schema, first = (found, path) if schema is None else (_widened(schema, found, first, path), first)
        taken = set(wds.OWN_FIELDS) | set(reserved)
        for f in schema.remove_metadata() if schema is not None else ():
            if f.name not in taken:
                # A column that is all null in the first shard may hold strings in the next ones.
                fields.append(f.with_type(pa.string()) if pa.types.is_null(f.type) else f)
                spec.sidecar_columns += (f.name,)
    spec.schema = pa.schema(fields)
    spec.columns = [f.name for f in fields]
    return spec


def _img2dataset_extras(matched, fmt: str) -> set:
    """The files img2dataset writes beside each of its shards (``NNNNN.parquet``, the sidecar,
    and ``NNNNN_stats.json``) or Parquet files (``NNNNN_stats.json``) among ``matched``."""
    if fmt == "webdataset":
        return {other for p in wds.shards_among(matched) for other in (wds.sidecar_path(p), wds.stats_path(p))}
    if fmt == "parquet":
        return {p[:-len(".parquet")] + wds.STATS_SUFFIX for p in matched if p.endswith(".parquet")}
    return set()


def estimated_samples(spec: InputSpec) -> int:
    """About how many samples shards hold: 100 KiB a sample (web images and their metadata)."""
    return max(spec.matched, spec.total_bytes // 102400)


def split_status(record: dict, status_column: str):
    """img2dataset rows: "success" rows go on to be hashed, others to ``FAILED`` with their status
    and error message as the reason."""
    status = record.get(status_column)
    if status == "success":
        yield record
        return
    failed = dict(record)
    failed[ERROR_FIELD] = status_reason(status_column, status, record.get(ERROR_MESSAGE_COLUMN))
    yield beam.pvalue.TaggedOutput(FAILED, failed)


def with_status_reasons(table: pa.Table, status_column: str) -> pa.Table:
    """An img2dataset reference table: its status and error message columns become the error
    column (null for "success" rows), which the reference hashing reports a row by instead of
    its missing image."""
    # Columnar, as status_reason words it for one record (a null status reads "None", as there).
    status = table.column(status_column).cast(pa.string())
    message = pc.fill_null(table.column(ERROR_MESSAGE_COLUMN).cast(pa.string()), "")
    message = pc.if_else(pc.equal(message, ""), "no error message", message)
    text = pc.binary_join_element_wise(f"{status_column} ", pc.fill_null(status, "None"), ": ", message, "")
    success = pc.fill_null(pc.equal(status, "success"), False)
    reasons = pc.if_else(success, pa.scalar(None, pa.string()), text)
    table = table.drop_columns([status_column, ERROR_MESSAGE_COLUMN])
    if ERROR_FIELD in table.column_names:  # a "success" row whose image could not be read: that reason
        return table.set_column(table.column_names.index(ERROR_FIELD), ERROR_FIELD,
                                pc.coalesce(reasons, table.column(ERROR_FIELD)))
    return table.append_column(ERROR_FIELD, reasons)


class ReadFileDoFn(beam.DoFn):
    """A path -> a record ``{id_field: path, image_field: bytes}``, or to ``FAILED`` with the
    reason when the file cannot be read (gone since it was listed, no permission)."""

    def __init__(self, id_field: str, image_field: str):
        self._id_field = id_field
        self._image_field = image_field

    def setup(self):
        self._files = StoredFiles()

    def process(self, path: str):
        if isinstance(path, BadName):
            yield beam.pvalue.TaggedOutput(FAILED, {self._id_field: path.shown, self._image_field: None,
                                                    ERROR_FIELD: path.reason("file")})
            return
        try:
            data = self._files.read(path)
        except Exception as e:  # noqa: BLE001 - any filesystem's error: the record says which
            yield beam.pvalue.TaggedOutput(FAILED, {self._id_field: path, self._image_field: None,
                                                    ERROR_FIELD: f"cannot read the file: {type(e).__name__}: {e}"})
            return
        yield {self._id_field: path, self._image_field: data}


class ReadFiles(beam.PTransform):
    """Image files -> ``(records, failed)``: one record per file matched by ``patterns``, its
    path the id; ``listing``: see :class:`~pipelines.input_paths.InputPaths`."""

    def __init__(self, patterns: List[str], id_field: str = "id", image_field: str = "image",
                 listing: Optional[Listing] = None):
        super().__init__()
        self._patterns = patterns
        self._id_field = id_field
        self._image_field = image_field
        self._listing = listing

    def expand(self, pbegin):
        paths = pbegin | "Files" >> InputPaths(self._patterns, self._listing)
        read = paths | "ReadFiles" >> beam.ParDo(ReadFileDoFn(self._id_field, self._image_field)).with_outputs(
            FAILED, main="records")
        return read.records, read[FAILED]


def image_paths(spec: InputSpec) -> Optional[str]:
    """The image column of Parquet input whose rows may hold a path instead of bytes (Hugging
    Face's ``Image`` layout: ``parquet_read.holds_paths``), else None."""
    if spec.hash_column is not None or spec.schema is None or spec.image_column not in spec.schema.names:
        return None
    return spec.image_column if holds_paths(spec.schema.field(spec.image_column).type) else None


class ReadImageRecords(beam.PTransform):
    """Reads the inputs of an :class:`InputSpec`: ``(records, failed)``, the dict records (image
    bytes in ``image_column``) and those that failed while reading (with ``error``: a broken
    shard, a sample without an image, a failed img2dataset download), which are not hashed.
    Files and shards are read from the launcher's listing when the spec has one (``paths``)."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        self._spec = spec

    def expand(self, pbegin):
        spec = self._spec
        if spec.fmt == "files":
            return pbegin | "ReadFiles" >> ReadFiles(spec.patterns, listing=spec.listing())
        if spec.fmt == "webdataset":
            read = pbegin | "ReadShards" >> wds.ReadShards(
                spec.patterns, spec.image_exts, spec.sidecar_columns, spec.join_sidecar,
                check_repeated_keys=spec.matched > 1, expected_samples=estimated_samples(spec),
                repeated=spec.repeated_keys, listing=spec.listing(), first_folder=spec.first_folder)
            return read.records, read[FAILED]
        records, unreadable = pbegin | "ReadParquet" >> ReadParquet(
            spec.patterns, rows=True, row_ids=spec.id_column if spec.row_ids else None, image_paths=image_paths(spec),
            dedup_ids=None if spec.first_folder is None else (spec.id_column, spec.first_folder))
        if spec.status_column is None:
            return records, unreadable
        split = records | "SplitStatus" >> beam.FlatMap(split_status, spec.status_column).with_outputs(
            FAILED, main="records")
        return split.records, (unreadable, split[FAILED]) | "ReadFailures" >> beam.Flatten()


def reference_spec(references: List[str], fmt: str, image_column: str, id_column: str,
                   hash_column: Optional[str], hash_column_default: str, hash_bits: int,
                   image_column_given: bool = False, in_process: bool = False) -> InputSpec:
    """Resolve ``--reference``: ``fmt`` "auto" is Parquet when every matched file ends in
    ``.parquet``, WebDataset when they are shards (``.tar``, or compressed: ``.tar.gz``...;
    with their ``.parquet`` sidecars), else image files; shards or Parquet among other files are
    refused. Parquet without an explicit hash column uses ``hash_column_default`` (the job's own
    hash column, as in an earlier run's ``kept/``) when it is there, else the image column;
    ``image_column_given`` (``--reference-image-column``): the image column, whatever other
    columns the files have. ``in_process``: as for :func:`resolve` (the pipeline then reads the
    references from this listing, as it reads the inputs)."""
    detected: Optional[List[str]] = None  # patterns for resolve(), one per given item or file
    first: Optional[str] = None
    checked = set()  # items located here: resolve() need not look into them again
    passed: Dict[str, str] = {}  # hidden files the detection passed over (as InputSpec.hidden)
    if fmt == "auto":
        founds = {item: located(item, "files", "--reference") for item in references}
        matched = {item: list(found.matched) for item, found in founds.items()}
        checked.update(references)
        # resolve() is given what detection kept: it cannot see what detection passed over
        listed = {identity(p) for paths in matched.values() for p in paths}
        passed = {identity(p): part for found in founds.values() for p, part in found.hidden.items()
                  if identity(p) not in listed}
        # img2dataset writes NNNNN_stats.json beside each shard or Parquet file: not data
        data = {item: [p for p in paths if not p.endswith(wds.STATS_SUFFIX)] or paths
                for item, paths in matched.items()}
        paths = [p for item in references for p in data[item]]
        shards = wds.shards_among(paths)
        if all(p.endswith(".parquet") for p in paths):
            fmt, wanted, folder = "parquet", data, ".parquet"
        elif shards and all(wds.is_shard(p) or p.endswith(".parquet") for p in paths):
            fmt, folder = "webdataset", ".tar"  # shards, with their sidecars
            wanted = {item: wds.shards_among(found) for item, found in data.items()}
            sidecars = {wds.sidecar_path(p) for found in wanted.values() for p in found}
            others = [p for p in paths if p.endswith(".parquet") and p not in sidecars]
            if others:
                raise ConfigError(f"--reference mixes WebDataset shards with Parquet files that are not their "
                                  f"sidecars ({others[0]!r}): give references of one format")
        elif shards:
            others = [p for p in paths if not wds.is_shard(p) and not p.endswith(".parquet")]
            raise ConfigError(f"--reference mixes WebDataset shards ({shards[0]!r}) with other files ({others[0]!r}), "
                              "which would be read as images, the shards failing as ones: give references of one "
                              "format, or set --reference-format (webdataset reads the shards only)")
        elif any(p.endswith(".parquet") for p in paths):
            tables = [p for p in paths if p.endswith(".parquet")]
            others = [p for p in paths if not p.endswith(".parquet")]
            raise ConfigError(f"--reference mixes Parquet files ({tables[0]!r}) with other files ({others[0]!r}), "
                              "which would be read as images, the Parquet failing as one: give references of "
                              "one format, or set --reference-format")
        else:
            fmt = "files"
        if fmt != "files":
            for item in references:
                if not wanted[item]:
                    raise ConfigError(f"--reference {item!r} holds no {fmt} files, where the other references "
                                      "are: give references of one format")
            first = next(p for item in references for p in wanted[item])
            # By name: a glob such as DIR/* would match the statistics too, and a folder means
            # DIR/*.tar, which misses compressed shards. A folder whose files its own pattern
            # matches stays one pattern (listed once); other matches become literal patterns, so
            # that `[` in a file's name is not read as a wildcard.
            detected = [pattern for item in references for pattern in (
                [item] if os.path.isdir(item) and all(p.endswith(folder) for p in wanted[item])
                else [literal(p) for p in wanted[item]])]
    if fmt == "parquet" and hash_column is None and not image_column_given:
        if first is None:
            first = next(iter(located(references[0], "parquet", "--reference", frozenset(checked)).matched))
            checked.add(references[0])
        schema, _ = _parquet_footer(first)
        if hash_column_default in schema.names and image_column not in schema.names:
            hash_column = hash_column_default
        elif hash_column_default in schema.names and pa.types.is_string(schema.field(hash_column_default).type):
            hash_column = hash_column_default  # hashes already there: no decoding
    if fmt in ("files", "webdataset") and hash_column is not None:
        raise ConfigError("--reference-hash-column applies to Parquet references")
    if fmt == "webdataset":
        spec = resolve(detected or references, fmt, flag="--reference", join_sidecar=False, in_process=in_process,
                       checked=frozenset(checked))
    else:
        spec = resolve(detected or references, fmt, image_column, id_column, hash_column, hash_bits,
                       flag="--reference", in_process=in_process, checked=frozenset(checked))
        spec.hash_column = hash_column
    spec.given = list(references)
    for i, part in passed.items():
        spec.hidden.setdefault(i, part)
    return spec


#: The field that holds a Parquet reference's hashes once read (``ReadReference``), when their
#: own column's name is taken (``reference_hash_field``).
REFERENCE_HASH = "reference_hash"


def reference_hash_field(spec: InputSpec, id_field: str) -> Optional[str]:
    """The field a Parquet reference's hashes are read into (None without a hash column): their
    column's own name, so that a hash the transform cannot parse is failed under the name the user
    gave; ``REFERENCE_HASH`` when that name is the job's id field (the reference's ids are read
    into it) or the quality column (read beside the hashes)."""
    if spec.hash_column is None:
        return None
    return REFERENCE_HASH if spec.hash_column in (id_field, QUALITY_FIELD) else spec.hash_column


class ReadReference(beam.PTransform):
    """Reads the references of an :class:`InputSpec` with the input's readers (files and shards
    from the launcher's listing when the spec has one, as the inputs): image files as
    dict records, Parquet as pyarrow tables (one per row group, only the id and the
    image or hash column), with the id and image columns renamed to the transform's fields."""

    def __init__(self, spec: InputSpec, id_field: str, image_field: str):
        super().__init__()
        self._spec = spec
        self._id_field = id_field
        self._image_field = image_field

    def expand(self, pbegin):
        spec = self._spec
        id_field, image_field = self._id_field, self._image_field
        if spec.fmt == "files":
            # A file that could not be read reaches the reference hashing without an image, and
            # is listed in reference_failed/ with the reason.
            return (pbegin | "ReadFiles" >> ReadFiles(spec.patterns, id_field, image_field, listing=spec.listing())
                    | "AllFiles" >> beam.Flatten())
        if spec.fmt == "webdataset":
            # The sidecars are read for what they say of the samples (none of their columns is
            # joined): a failed download, or a sample listed but lost, is a failed reference.
            read = pbegin | "ReadShards" >> wds.ReadShards(spec.patterns, spec.image_exts, join_sidecar=True,
                                                            check_repeated_keys=False, listing=spec.listing())
            # A sample that could not be read reaches the reference hashing without an image, and
            # is listed in reference_failed/ with the reader's reason.
            samples = (read.records, read[FAILED]) | "AllSamples" >> beam.Flatten()
            return samples | "ToRecords" >> beam.Map(
                lambda r: {id_field: r[wds.KEY], image_field: r.get(wds.IMAGE),
                           **({ERROR_FIELD: r[ERROR_FIELD]} if ERROR_FIELD in r else {})})
        value = spec.hash_column or spec.image_column
        renamed = {spec.id_column: id_field, value: reference_hash_field(spec, id_field) or image_field}
        # img2dataset's rows whose download failed: failed references with their status, as
        # such input rows are failed records with it (hashes from a column have no status).
        status = spec.status_column if spec.hash_column is None else None
        columns = [spec.id_column, value] + ([status, ERROR_MESSAGE_COLUMN] if status else [])
        if spec.hash_column is not None and QUALITY_FIELD not in columns:
            # An earlier run's kept/ says which hashes are of flat images (matched exactly only);
            # a file without the column is read without it.
            columns.append(QUALITY_FIELD)

        def rename(table):
            if status:
                table = with_status_reasons(table, status)
            return table.rename_columns([renamed.get(n, n) for n in table.schema.names])
        return (pbegin
                | "ReadParquet" >> ReadParquet(spec.patterns, columns=columns,
                                               row_ids=spec.id_column if spec.row_ids else None,
                                               image_paths=image_paths(spec))
                | "Rename" >> beam.Map(rename))
