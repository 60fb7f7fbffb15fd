"""``ImagePhashDedup``: perceptual-hash deduplication of image records, composed of
``HashImages`` (``hashing``), then ``ExactDedup`` (``exact``) or ``NearDedup`` (``near``), with an
optional reference set (``reference``)."""
from __future__ import annotations

import copy
import dataclasses
from typing import NamedTuple, Optional, Union

import apache_beam as beam

from beam_phash._native import DEFAULT_MAX_PIXELS
from beam_phash.checks import int_in, text
from beam_phash.exact.config import RayBackend, StateBackend
from beam_phash.exact.transform import ExactDedup
from beam_phash.failures import DEFAULT_MAX_INTERNAL, FailureThreshold
from beam_phash.hashing import HashConfig, HashImages
from beam_phash.near.config import NearConfig
from beam_phash.near.policy import recommended_max_distance
from beam_phash.near.transform import NearDedup
from beam_phash.reference import REFERENCE_FAILED, HashReference, MatchReference

BACKENDS = ("ray", "state")


class _Outputs(NamedTuple):
    kept: beam.PCollection
    duplicates: beam.PCollection
    failed: beam.PCollection


class DedupOutputs(_Outputs):
    """What ``ImagePhashDedup(...).with_outputs()`` returns: a NamedTuple that unpacks as
    ``kept, duplicates, failed = ...`` (inputs = kept + duplicates + failed), and, as an
    attribute, ``reference_failed``: the references that could not be hashed (``{id, error}``;
    empty without a reference), which are not inputs.

    Beam rebuilds a NamedTuple given as a transform's input from its three fields, so inside
    such a transform ``reference_failed`` is None: pass it on explicitly."""

    def __new__(cls, kept, duplicates, failed, reference_failed=None):
        self = super().__new__(cls, kept, duplicates, failed)
        self.reference_failed = reference_failed
        return self

    def _replace(self, **fields) -> "DedupOutputs":
        reference_failed = fields.pop("reference_failed", self.reference_failed)
        return DedupOutputs(*super()._replace(**fields), reference_failed)


def _given(config_class, values: dict) -> list:
    """The names among ``values`` whose value is not ``config_class``'s default: arguments given
    for a part that does not run, which are refused rather than ignored."""
    return [name for name, value in values.items() if value != getattr(config_class, name)]


def _ray_only_error(names: list) -> ValueError:
    return ValueError(f"{', '.join(names)} appl{'ies' if len(names) == 1 else 'y'} to exact mode with "
                      "backend='ray' only")


class ImagePhashDedup(beam.PTransform):
    """Drop records whose image has the same perceptual hash as an earlier one (exact mode), or
    one within ``max_distance`` bits of a kept one (near-duplicate mode).

    ``records | ImagePhashDedup()`` gives the kept records plus the failed ones (``hash_field``
    None, ``error`` set). ``records | ImagePhashDedup().with_outputs()`` gives a
    :class:`DedupOutputs` ``(kept, duplicates, failed)`` with ``.reference_failed``. Always: inputs = kept
    + duplicates + failed. Duplicates carry ``duplicate_of``, ``distance`` (near-duplicate mode or
    a reference match) and ``matched`` (``"input"``, ``"state"`` or ``"reference"``; none from a
    named Ray backend, which does not tell its pipelines apart, unless a reference matched).

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
      num_buckets: number of Ray buckets; hashes are routed by their own bits, and a
        ``state_dir`` keeps one directory per bucket.
      num_actors: number of Ray actor processes hosting the buckets (each hosts
        ``num_buckets / num_actors`` of them); None: one per CPU of the cluster, at most
        ``num_buckets``. A named backend keeps the number it started with.
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
        then the smallest id; the default) or ``"smallest_id"``. Exact mode keeps the first
        record of each hash to reach the backend, and refuses ``keep``.
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
                 backend: Optional[str] = None, num_buckets: int = RayBackend.num_buckets,
                 ray_address: Optional[str] = None, id_field: Optional[str] = "id", *,
                 num_actors: Optional[int] = None, backend_name: Optional[str] = None,
                 state_dir: Optional[str] = None, batch_size: int = 128,
                 claim_batch: int = RayBackend.claim_batch, max_in_flight: int = RayBackend.max_in_flight,
                 hash_threads: Optional[int] = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_distance: Union[int, str] = 0, dihedral: bool = False, keep: Optional[str] = None,
                 hash_column: Optional[str] = None, partitions: int = 16,
                 band_partition_bits: int = NearConfig.band_partition_bits,
                 search_partitions: int = NearConfig.search_partitions,
                 expected_count: Optional[int] = NearConfig.expected_count,
                 reference: Optional[beam.PCollection] = None,
                 reference_hash_column: Optional[str] = None, label: Optional[str] = None):
        super().__init__(label)
        # checked whatever the backend, as every argument is
        ray_numbers = {"num_buckets": num_buckets, "claim_batch": claim_batch, "max_in_flight": max_in_flight}
        RayBackend.check_numbers(**ray_numbers)
        if hash_column is not None and not id_field:  # (references carry hashes without ids: fine)
            raise ValueError("hash_column needs an id_field: without image bytes, records of one hash "
                             "could not be told from retries of one record")
        # Each part validates itself; what is checked here is how they combine.
        self.hashing = HashConfig(algorithm=algorithm, hash_size=hash_size, image_field=image_field,
                                  hash_field=hash_field, id_field=id_field, batch_size=batch_size,
                                  threads=hash_threads, max_pixels=max_pixels, dihedral=dihedral,
                                  hash_column=hash_column)
        if max_distance == "auto":
            max_distance = recommended_max_distance(algorithm, hash_size)
        near = NearConfig(max_distance, keep="largest" if keep is None else keep, partitions=partitions,
                          band_partition_bits=band_partition_bits,
                          search_partitions=search_partitions, expected_count=expected_count,
                          state_dir=state_dir)
        # The Ray backend's numbers, when given (they have defaults): refused where no Ray backend
        # runs, as its other arguments are, rather than ignored.
        ray_only = _given(RayBackend, ray_numbers)
        if max_distance > 0 or dihedral:
            if any(v is not None for v in (backend, ray_address, backend_name, num_actors)):
                raise ValueError("near-duplicate dedup (max_distance >= 1 or dihedral=True) runs on Beam's "
                                 "shuffles: backend, ray_address, backend_name and num_actors do not apply")
            if ray_only:
                raise _ray_only_error(ray_only)
            self.dedup: Union[ExactDedup, NearDedup] = NearDedup(near, self.hashing)
        else:
            if keep is not None:
                raise ValueError("keep applies to near-duplicate dedup (max_distance >= 1 or dihedral=True); "
                                 "exact mode keeps the first record of each hash to reach the backend")
            given = _given(NearConfig, {"band_partition_bits": band_partition_bits,
                                        "search_partitions": search_partitions, "expected_count": expected_count})
            if given:
                raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to near-duplicate "
                                 "dedup (max_distance >= 1 or dihedral=True), which searches bands; exact mode has none")
            if backend not in (None,) + BACKENDS:
                raise ValueError(f"backend must be 'ray' or 'state', got {backend!r}")
            if backend == "state":
                if any(v is not None for v in (ray_address, backend_name, state_dir, num_actors)):
                    raise ValueError("ray_address, backend_name, state_dir and num_actors apply only to "
                                     "backend='ray'")
                if ray_only:
                    raise _ray_only_error(ray_only)
                config: Union[RayBackend, StateBackend] = StateBackend()
            else:
                config = RayBackend(num_buckets=num_buckets, num_actors=num_actors, ray_address=ray_address, backend_name=backend_name,
                                    state_dir=state_dir, claim_batch=claim_batch, max_in_flight=max_in_flight)
            self.dedup = ExactDedup(config, self.hashing)
        self.partitions = partitions
        self.failure_threshold = FailureThreshold()
        self.reference = None
        self.reference_hash_column = None
        self._split_outputs = False
        if reference is not None:
            self._set_reference(reference, reference_hash_column)
        elif reference_hash_column is not None:
            text("reference_hash_column", reference_hash_column)
            raise ValueError("reference_hash_column needs reference=")

    # The configuration, as attributes (the documented ones and what the job reads).
    hash_size = property(lambda self: self.hashing.hash_size)
    algorithm = property(lambda self: self.hashing.algorithm)
    image_field = property(lambda self: self.hashing.image_field)
    hash_field = property(lambda self: self.hashing.hash_field)
    id_field = property(lambda self: self.hashing.id_field)
    hash_column = property(lambda self: self.hashing.hash_column)
    dihedral = property(lambda self: self.hashing.dihedral)
    bits = property(lambda self: self.hashing.bits)
    near_duplicates = property(lambda self: isinstance(self.dedup, NearDedup))
    max_distance = property(lambda self: self.dedup.max_distance if self.near_duplicates else 0)
    backend = property(lambda self: None if self.near_duplicates else (
        "ray" if isinstance(self.dedup.backend, RayBackend) else "state"))

    def release(self) -> None:
        """After a pipeline with the Ray backend failed on a Ray cluster that outlives it: kill
        its bucket actors, which would hold the state directory's locks (see
        :meth:`ExactDedup.release`). A no-op in other modes."""
        if not self.near_duplicates:
            self.dedup.release()

    def with_outputs(self) -> "ImagePhashDedup":
        """The same transform, returning :class:`DedupOutputs`."""
        other = copy.copy(self)
        other._split_outputs = True
        return other

    def with_deferred_commit(self) -> "ImagePhashDedup":
        """The same transform, leaving the commit of its run to the state directory (and the
        release of its one-run Ray backend) to :meth:`commit`, which must then be called once it
        is applied: ``dedup.commit(written)``, with the results of the steps that write its
        outputs, so that a run whose writes fail commits nothing."""
        other = copy.copy(self)
        other.dedup = self.dedup.with_deferred_commit()
        return other

    def commit(self, *after: beam.PCollection, label: Optional[str] = None) -> None:
        """The run's commit (see :meth:`with_deferred_commit`), once ``after`` (PCollections in the
        global window, such as what a write's finalizing step outputs) are done, and the failure
        check passed. Once per application (see :meth:`RunEnd.commit`)."""
        self.dedup.commit(*after, label=label)

    def committed(self) -> bool:
        """Whether the run of this transform's last application committed to its state directory
        (``state_dir``; see :meth:`RunEnd.committed`): after a failure or Ctrl-C that came later,
        its outputs are the ones the state now holds as kept, so a caller that cleans up a failed
        run's outputs keeps them. False without a state directory, and before the transform is
        applied; for a near-duplicate run that kept no new image (nothing to commit: the state is
        left as it was), unless it compacts the state; and for a named backend or a stream, which
        commit each claim as it is answered: with a ``state_dir`` their claims are in it whatever
        this says, and a rerun keeps their records only under the same ids."""
        return self.dedup.committed()

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
        other = copy.copy(self)
        other._set_reference(reference, hash_column)
        return other

    def _set_reference(self, reference, hash_column: Optional[str]) -> None:
        if not isinstance(reference, beam.PCollection):
            raise ValueError(f"reference must be a PCollection of reference records, got {type(reference).__name__}")
        text("reference_hash_column", hash_column, optional=True)
        if hash_column is not None and hash_column == self.hashing.id_field:
            raise ValueError(f"reference_hash_column and id_field must differ, both are {hash_column!r}")
        self.reference = reference
        self.reference_hash_column = hash_column

    def expand(self, records):
        if not isinstance(records, beam.PCollection):  # `p | ImagePhashDedup()`: Beam's error names none
            raise ValueError("ImagePhashDedup applies to a PCollection of records (records | ImagePhashDedup(...)), "
                             f"got {type(records).__name__}")
        hashing = HashImages(self.hashing, self.failure_threshold)
        hashed, failed = records | "HashImages" >> hashing
        fixed, reference_failed = self._reference(failed)
        matched = []  # exact mode: duplicates of a reference
        if self.near_duplicates:
            dedup = self.dedup if fixed is None else self.dedup.with_fixed(fixed)
            kept, duplicates = hashed | "NearDuplicates" >> dedup.after(hashing.checked)
        else:
            unique = hashed
            if fixed is not None:
                unique, by_reference = hashed | "MatchReference" >> MatchReference(fixed, self.partitions)
                matched.append(by_reference)
            kept, duplicates = unique | "Exact" >> self.dedup.after(hashing.checked)
        if matched:
            duplicates = (duplicates, *matched) | "AllDuplicates" >> beam.Flatten()
        if self._split_outputs:
            return DedupOutputs(kept, duplicates, failed, reference_failed)
        return (kept, failed) | "KeptAndFailed" >> beam.Flatten()

    def _reference(self, failed):
        """(the reference as fixed batches or None, the references that failed)."""
        if self.reference is None:
            # Empty, and produced by a step with an input: portable runners (Flink) reject the
            # identity step an empty Create adds inside a composite.
            return None, failed | "NoReferenceFailures" >> beam.Filter(lambda _: False)
        config = dataclasses.replace(self.hashing, hash_column=self.reference_hash_column, dihedral=False)
        out = self.reference | "HashReference" >> HashReference(config)
        return out.fixed, out[REFERENCE_FAILED]
