"""``ImagePhashDedup``: perceptual-hash deduplication of image records, first seen wins."""
from __future__ import annotations

import copy
import os
import re
import uuid
from typing import Any, NamedTuple, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from beam_phash._native import (
    ALGORITHMS,
    DEFAULT_MAX_PIXELS,
    MAX_HASH_SIZE,
    MIN_HASH_SIZE,
    hash_bits,
)
from beam_phash import state_manifest
from beam_phash.bucket_store import check_state_dir, prepare_state_dir
from beam_phash.dedup_dofns import FinishBackendDoFn, RayDedupDoFn, StateDedupDoFn, key_by_hash
from beam_phash.failures import DEFAULT_MAX_INTERNAL, TALLY, CheckFailures, FailureThreshold
from beam_phash.hash_dofn import HashBatchDoFn, ParseHashesDoFn
from beam_phash.near.policy import check_keep, recommended_max_distance
from beam_phash.near.state import NearState, open_state
from beam_phash.near.transform import NearDedup
from beam_phash.records import DUPLICATES, FAILED, KEPT, WRITTEN_FIELDS
from beam_phash.reference import REFERENCE_FAILED, HashReference, MatchReference

BACKENDS = ("ray", "state")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_REMOTE_RUNNERS = ("DataflowRunner",)


def _int_in(name: str, value, low: int, high: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _field(name: str, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


class DedupOutputs(NamedTuple):
    """What ``ImagePhashDedup(...).with_outputs()`` returns. inputs = kept + duplicates + failed;
    ``reference_failed`` holds the references that could not be hashed (``{id, error}``; empty
    without ``reference``), which are not inputs."""

    kept: beam.PCollection
    duplicates: beam.PCollection
    failed: beam.PCollection
    reference_failed: beam.PCollection


class ImagePhashDedup(beam.PTransform):
    """Drop records whose image has the same perceptual hash as an earlier one (exact mode), or
    one within ``max_distance`` bits of a kept one (near-duplicate mode).

    ``records | ImagePhashDedup()`` gives the kept records plus the failed ones (``hash_field``
    None, ``error`` set). ``records | ImagePhashDedup().with_outputs()`` gives a
    :class:`DedupOutputs` ``(kept, duplicates, failed, reference_failed)``. Always: inputs = kept
    + duplicates + failed. Duplicates carry ``duplicate_of``, ``distance`` (near-duplicate mode or
    a reference match) and ``matched`` (``"input"``, ``"state"`` or ``"reference"``).

    Exact mode (``max_distance=0``, the default): first seen wins, through a backend.
    Near-duplicate mode (``max_distance >= 1`` or ``dihedral=True``): runs on Beam's shuffles
    (no backend). No two kept records lie within ``max_distance`` bits; every duplicate names a
    kept record within ``max_distance`` bits (``duplicate_of``, ``distance``); the kept set does
    not depend on the runner, the parallelism or the input order (see ``keep``). Recall is exact:
    every pair within ``max_distance`` is found (banded search, see ``beam_phash/near``).

    Args:
      hash_size: 16 by default; 8 is faster and coarser, 32 more precise (see the README's bit table).
      image_field: the field holding the image bytes, or a dict with a ``"bytes"`` key.
      hash_field: where the hex hash is stored on output records.
      algorithm: one of ``beam_phash.ALGORITHMS``.
      backend: exact mode: ``"ray"`` (bucket actors, the default) or ``"state"`` (a Beam
        stateful DoFn, no server).
      num_buckets: number of Ray bucket actors; hashes are routed by their own bits.
      ray_address: None (reuse this process's Ray or start an embedded one on 127.0.0.1),
        ``"auto"``, or ``"host:port"`` of a running cluster.
      id_field: unique record id. The backend remembers which id claimed each hash first, so a
        retried record is still recognised as the keeper. Records without one are identified by a
        digest of their image bytes (byte-identical copies without ids are then all kept).
      backend_name: reuse a named Ray backend across pipelines; its actors are then kept alive
        after the pipeline, so a later pipeline dedups against everything this one saw. Without
        it each pipeline gets a fresh backend that is released when the pipeline ends.
      state_dir: a directory (local, or a shared file system every worker sees) that carries
        what earlier pipelines kept: a later pipeline with the same ``state_dir`` drops
        everything within ``max_distance`` of those (incremental dedup), then adds what it kept.
        Exact mode (``backend="ray"``): the bucket actors' seen-set, a Parquet snapshot per
        bucket plus a change log; a bucket actor that dies mid-run is restarted and reloaded.
        Near-duplicate mode: Parquet segments of kept hashes, read as fixed images (see
        ``beam_phash/near/state.py``); duplicates of them have ``matched="state"``. The first
        run pins the mode, algorithm, hash_size and hash version (and, exact mode,
        num_buckets); a run with other settings is refused. ``max_distance`` may change.
      batch_size: records per ``hash_images`` call (upper bound).
      claim_batch: Ray backend: records gathered (from several hashing batches) per round of
        calls to the bucket actors, one call per bucket.
      max_in_flight: bound on concurrent bucket-actor calls per worker.
      hash_threads: Rust threads per hashing call (None: all cores).
      max_pixels: images larger than this fail with a reason instead of being decoded.
      max_distance: 0 for exact dedup; k >= 1 drops records within k bits of a kept one;
        ``"auto"``: the measured threshold for the algorithm and hash size (README table).
      dihedral: also treat rotated (90/180/270) and mirrored copies as duplicates.
      keep: near-duplicate mode, which record of a group is kept: ``"largest"`` (most pixels,
        then the smallest id) or ``"smallest_id"``.
      hash_column: dedup records that already carry their hash as hex in this field (an earlier
        run's ``hash_field``, or another tool's), without decoding images. A missing value, bad
        hex or another width makes a failed record. ``keep="largest"`` then has no sizes and
        keeps the smallest id; ``dihedral`` needs images.
      partitions: near-duplicate mode, the number of partitions of the exact and resolve stages.
      band_partition_bits: near-duplicate mode, 0 (bands searched in ``search_partitions``
        groups, each holding every distinct hash) or b > 0 to cut each band into 2^b partitions
        per sub-block, for inputs too large for one worker.
      search_partitions: near-duplicate mode with ``band_partition_bits=0``: how many groups of
        bands are searched in parallel (each one copy of the hashes through the shuffle); with a
        state or a reference, one group whose bands are searched on all the worker's cores.
      expected_count: near-duplicate mode, about how many records (references included), for
        the band layout's cost model (default: 1M); a state's rows are added.
      reference: a PCollection of reference images, in either mode: dict records like the
        input's (``image_field``, ``id_field``), or pyarrow Tables/RecordBatches with those
        columns (``parquetio.ReadAllFromParquetBatched``). Every input within ``max_distance`` of
        one (equal hash in exact mode) is a duplicate naming it, ``matched="reference"``.
        References are never output, never deduplicated against each other, and not inputs;
        those that cannot be hashed go to ``reference_failed``.
      reference_hash_column: the references carry hex hashes in this field/column (an earlier
        run's ``kept/`` output) instead of images.
    """

    def __init__(self, hash_size: int = 16, image_field: str = "image",
                 hash_field: str = "image_phash", algorithm: str = "phash",
                 backend: Optional[str] = None, num_buckets: int = 16, ray_address: Optional[str] = None,
                 id_field: Optional[str] = "id", *, backend_name: Optional[str] = None,
                 state_dir: Optional[str] = None, batch_size: int = 128, claim_batch: int = 1024,
                 max_in_flight: int = 16,
                 hash_threads: Optional[int] = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_distance: Union[int, str] = 0, dihedral: bool = False, keep: str = "largest",
                 hash_column: Optional[str] = None, partitions: int = 16, band_partition_bits: int = 0,
                 search_partitions: int = 4, expected_count: Optional[int] = None,
                 reference: Optional[beam.PCollection] = None,
                 reference_hash_column: Optional[str] = None, label: Optional[str] = None):
        super().__init__(label)
        _int_in("hash_size", hash_size, MIN_HASH_SIZE, MAX_HASH_SIZE)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {algorithm!r}")
        bits = hash_bits(algorithm, hash_size)
        if max_distance == "auto":
            max_distance = recommended_max_distance(algorithm, hash_size)
        _int_in("max_distance", max_distance, 0, bits - 1)
        if not isinstance(dihedral, bool):
            raise ValueError(f"dihedral must be True or False, got {dihedral!r}")
        check_keep(keep)
        _int_in("partitions", partitions, 1, 1 << 20)
        _int_in("band_partition_bits", band_partition_bits, 0, 16)
        _int_in("search_partitions", search_partitions, 1, 4096)
        if expected_count is not None:
            _int_in("expected_count", expected_count, 1)
        _field("hash_column", hash_column, optional=True)
        if hash_column is not None and dihedral:
            raise ValueError("dihedral=True needs the images (their rotations are hashed); "
                             "it cannot be used with hash_column")
        near = max_distance > 0 or dihedral
        if near and (backend is not None or ray_address is not None or backend_name is not None):
            raise ValueError("near-duplicate dedup (max_distance >= 1 or dihedral=True) runs on Beam's "
                             "shuffles: backend, ray_address and backend_name do not apply")
        if reference is not None and not isinstance(reference, beam.PCollection):
            raise ValueError(f"reference must be a PCollection of reference records, got {type(reference).__name__}")
        _field("reference_hash_column", reference_hash_column, optional=True)
        if reference_hash_column is not None and reference is None:
            raise ValueError("reference_hash_column needs reference=")
        if backend is None:
            backend = "ray"
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'ray' or 'state', got {backend!r}")
        _field("image_field", image_field)
        _field("hash_field", hash_field)
        _field("id_field", id_field, optional=True)
        if hash_field == image_field:
            raise ValueError(f"hash_field and image_field must differ, both are {hash_field!r}")
        if hash_field == id_field:
            raise ValueError(f"hash_field and id_field must differ, both are {hash_field!r}")
        for name, value in (("hash_field", hash_field), ("image_field", image_field), ("id_field", id_field)):
            if value in WRITTEN_FIELDS:
                raise ValueError(f"{name} {value!r} is a field the transform writes "
                                 f"({', '.join(sorted(WRITTEN_FIELDS))})")
        _int_in("num_buckets", num_buckets, 1, 65536)
        _int_in("batch_size", batch_size, 1, 100_000)
        _int_in("claim_batch", claim_batch, 1, 1_000_000)
        _int_in("max_in_flight", max_in_flight, 1)
        _int_in("max_pixels", max_pixels, 1)
        if hash_threads is not None:
            _int_in("hash_threads", hash_threads, 1)
        if ray_address is not None:
            _field("ray_address", ray_address)
        if backend_name is not None and (not isinstance(backend_name, str) or not _NAME_RE.match(backend_name)):
            raise ValueError("backend_name must be 1-100 characters of letters, digits, '_', '.', '-', "
                             f"starting with a letter or digit; got {backend_name!r}")
        if backend == "state" and (ray_address is not None or backend_name is not None or state_dir is not None):
            raise ValueError("ray_address, backend_name and state_dir apply only to backend='ray'")
        if state_dir is not None:
            _field("state_dir", state_dir)
            if os.path.exists(state_dir) and not os.path.isdir(state_dir):
                raise ValueError(f"state_dir {state_dir!r} exists and is not a directory")
            if near:
                open_state(state_dir, algorithm, hash_size, bits, create=False)
            else:
                check_state_dir(state_dir, num_buckets, algorithm, hash_size)
            state_manifest.check_writable(state_dir, create=False)
        self.hash_size = hash_size
        self.image_field = image_field
        self.hash_field = hash_field
        self.algorithm = algorithm
        self.backend = backend
        self.num_buckets = num_buckets
        self.ray_address = ray_address
        self.id_field = id_field
        self.backend_name = backend_name
        self.state_dir = state_dir
        self.batch_size = batch_size
        self.claim_batch = claim_batch
        self.max_in_flight = max_in_flight
        self.hash_threads = hash_threads
        self.max_pixels = max_pixels
        self.max_distance = max_distance
        self.dihedral = dihedral
        self.keep = keep
        self.hash_column = hash_column
        self.partitions = partitions
        self.band_partition_bits = band_partition_bits
        self.search_partitions = search_partitions
        self.expected_count = expected_count
        self.reference = reference
        self.reference_hash_column = reference_hash_column
        self.bits = bits
        self.near_duplicates = near
        self._split_outputs = False
        self.failure_threshold = FailureThreshold()

    def with_outputs(self) -> "ImagePhashDedup":
        """The same transform, returning :class:`DedupOutputs`."""
        other = copy.copy(self)
        other._split_outputs = True
        return other

    def with_failure_threshold(self, decode: Optional[float] = None,
                               internal: Optional[float] = DEFAULT_MAX_INTERNAL) -> "ImagePhashDedup":
        """The same transform, failing the run (``FailureThresholdError``) when more than the
        fraction ``decode`` of the inputs could not be hashed, or more than ``internal`` hit an
        internal error (see ``failures``). Default: no limit for decode failures, 0.001 for
        internal errors."""
        other = copy.copy(self)
        other.failure_threshold = FailureThreshold(decode, internal)
        return other

    def with_reference(self, reference: beam.PCollection, hash_column: Optional[str] = None) -> "ImagePhashDedup":
        """The same transform, deduplicating against ``reference`` too (see ``reference=``):
        ``records | ImagePhashDedup(max_distance=16).with_reference(eval_records)``."""
        if not isinstance(reference, beam.PCollection):
            raise ValueError(f"reference must be a PCollection of reference records, got {type(reference).__name__}")
        _field("reference_hash_column", hash_column, optional=True)
        other = copy.copy(self)
        other.reference = reference
        other.reference_hash_column = hash_column
        return other

    def _ray_backend(self, pipeline):
        from beam_phash import ray_cluster
        from beam_phash.ray_backend import RayDedupBackend

        runner = str(pipeline.options.view_as(StandardOptions).runner or "")
        if self.ray_address is None and any(r in runner for r in _REMOTE_RUNNERS):
            raise ValueError(f"backend='ray' on {runner} needs ray_address= of a cluster the workers "
                             "can reach (or use backend='state')")
        address = ray_cluster.resolve_address(self.ray_address)
        name = self.backend_name or f"run-{uuid.uuid4().hex[:16]}"
        state_dir = None
        if self.state_dir is not None:
            state_dir = os.path.abspath(self.state_dir)
            prepare_state_dir(state_dir, self.num_buckets, self.algorithm, self.hash_size)
        backend = RayDedupBackend(address, name, self.num_buckets, self.max_in_flight, state_dir)
        if self.ray_address is None:
            backend.start_buckets()  # the launcher is connected to this Ray: start them early
        return backend

    def expand(self, records):
        batches = records | "BatchForHashing" >> beam.BatchElements(
            min_batch_size=min(16, self.batch_size), max_batch_size=self.batch_size)
        if self.hash_column is not None:
            label, step = "ParseHashes", ParseHashesDoFn(
                bits=self.bits, hash_column=self.hash_column, hash_field=self.hash_field,
                image_field=self.image_field, id_field=self.id_field)
        else:
            label, step = "HashImages", HashBatchDoFn(
                algorithm=self.algorithm, hash_size=self.hash_size, image_field=self.image_field,
                hash_field=self.hash_field, id_field=self.id_field, threads=self.hash_threads,
                max_pixels=self.max_pixels, dihedral=self.dihedral)
        hashed = batches | label >> beam.ParDo(step).with_outputs(FAILED, TALLY, main="hashed")
        _ = hashed[TALLY] | "CheckFailures" >> CheckFailures(self.failure_threshold)
        fixed, reference_failed = self._reference(hashed[FAILED])
        matched = []  # exact mode: duplicates of a reference
        if self.near_duplicates:
            state = None
            if self.state_dir is not None:
                state_dir = os.path.abspath(self.state_dir)
                manifest = open_state(state_dir, self.algorithm, self.hash_size, self.bits, create=True)
                state = NearState(state_dir, manifest, uuid.uuid4().hex)
            deduped = hashed.hashed | "NearDuplicates" >> NearDedup(
                self.max_distance, self.bits, (self.bits + 7) // 8, dihedral=self.dihedral, keep=self.keep,
                partitions=self.partitions, band_partition_bits=self.band_partition_bits,
                search_partitions=self.search_partitions, expected_count=self.expected_count,
                fixed=fixed, state=state)
            kept, duplicates = deduped
        else:
            unique = hashed.hashed
            if fixed is not None:
                unique, by_reference = hashed.hashed | "MatchReference" >> MatchReference(fixed, self.partitions)
                matched.append(by_reference)
            kept, duplicates = self._exact(records.pipeline, unique)
        if matched:
            duplicates = (duplicates, *matched) | "AllDuplicates" >> beam.Flatten()
        failed = hashed[FAILED]
        if self._split_outputs:
            return DedupOutputs(kept, duplicates, failed, reference_failed)
        return (kept, failed) | "KeptAndFailed" >> beam.Flatten()

    def _reference(self, failed):
        """(the reference as fixed batches or None, the references that failed)."""
        if self.reference is None:
            # Empty, and produced by a step with an input: portable runners (Flink) reject the
            # identity step an empty Create adds inside a composite.
            return None, failed | "NoReferenceFailures" >> beam.Filter(lambda _: False)
        out = self.reference | "HashReference" >> HashReference(
            self.batch_size, algorithm=self.algorithm, hash_size=self.hash_size, bits=self.bits,
            image_field=self.image_field, id_field=self.id_field, hash_column=self.reference_hash_column,
            threads=self.hash_threads, max_pixels=self.max_pixels)
        return out.fixed, out[REFERENCE_FAILED]

    def _exact(self, pipeline, hashed):
        """Exact mode through the backend: (kept, duplicates)."""
        if self.backend == "ray":
            backend = self._ray_backend(pipeline)
            deduped = hashed | "DedupWithRay" >> beam.ParDo(
                RayDedupDoFn(backend, self.claim_batch)).with_outputs(DUPLICATES, main=KEPT)
            if self.backend_name is None or self.state_dir is not None:
                # Barrier: the count exists only once every record went through the backend.
                _ = ((deduped[KEPT], deduped[DUPLICATES])
                     | "AllDeduped" >> beam.Flatten()
                     | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
                     | "CountDeduped" >> beam.combiners.Count.Globally()
                     | "FinishBackend" >> beam.ParDo(FinishBackendDoFn(
                         backend, release=self.backend_name is None)))
        else:
            deduped = (hashed
                       | "KeyByHash" >> beam.FlatMap(key_by_hash).with_output_types(Tuple[bytes, Any])
                       | "DedupWithState" >> beam.ParDo(StateDedupDoFn()).with_outputs(DUPLICATES, main=KEPT))
        return deduped[KEPT], deduped[DUPLICATES]
