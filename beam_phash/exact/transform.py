"""``ExactDedup``: first seen wins among records with the same hash, through a backend."""
from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from beam_phash import state_manifest
from beam_phash.exact.config import RayBackend, StateBackend
from beam_phash.exact.ray_dofns import CLAIMED, FinishBackend, RayDedupDoFn
from beam_phash.exact.state_backend import StateDedupDoFn, key_by_hash
from beam_phash.exact.store import check_state_dir, prepare_state_dir
from beam_phash.hashing import HashConfig
from beam_phash.records import DUPLICATES, KEPT
from beam_phash.run_end import RunEnd, claim_state_dir

_REMOTE_RUNNERS = ("DataflowRunner",)


class ExactDedup(RunEnd, beam.PTransform):
    """Batches of ``Hashed`` -> (kept records, duplicates naming the keeper's id). The first
    claimant of a hash is kept; a retried record is recognised as the keeper by its id.

    ``ExactDedup(RayBackend(num_buckets=16), hashing)`` or ``ExactDedup(StateBackend(), hashing)``;
    ``hashing`` is the ``HashConfig`` the records were hashed with: every hash is checked against
    it, and a Ray ``state_dir`` pins its algorithm and hash size (so there it is required).
    Without it, hashes of any one width are deduplicated.

    With a ``state_dir`` and no ``backend_name``, on bounded input, the run's claims are committed
    to the directory once every record went through the backend (and the steps given to
    :meth:`after` are done): a run that fails or is stopped before then adds nothing to it. To
    commit only once the outputs are written, build it :meth:`with_deferred_commit` and call
    :meth:`commit` with the writes' results.
    """

    def __init__(self, backend: Union[RayBackend, StateBackend] = RayBackend(),
                 hashing: Optional[HashConfig] = None, label: Optional[str] = None):
        super().__init__(label)
        if not isinstance(backend, (RayBackend, StateBackend)):
            raise ValueError(f"backend must be a RayBackend or a StateBackend, got {backend!r}")
        if hashing is not None and not isinstance(hashing, HashConfig):
            raise ValueError(f"hashing must be the HashConfig the records were hashed with, got {hashing!r}")
        if hashing is not None and hashing.dihedral:
            raise ValueError("dihedral=True hashes are deduplicated by NearDedup (exact mode matches one hash)")
        self.backend = backend
        self.hashing = hashing
        if isinstance(backend, RayBackend) and backend.state_dir is not None:
            if hashing is None:
                raise ValueError("ExactDedup with a state_dir needs hashing=, the HashConfig the records were "
                                 "hashed with: the state directory pins its algorithm and hash size")
            check_state_dir(backend.state_dir, backend.num_buckets, hashing.algorithm, hashing.hash_size)
            state_manifest.check_writable(backend.state_dir, create=False)
        self._hash_bytes = None if hashing is None else hashing.hash_bytes
        self._unnamed = []  # the clients of the one-run backends this transform built
        self._init_end()

    def release(self) -> None:
        """Kill the bucket actors of the one-run (unnamed) Ray backends this transform built, as
        a successful run does at its end. For a pipeline that failed on a Ray cluster that
        outlives it: its actors live on (detached), holding their buckets' locks on the state
        directory, so a rerun would be refused as "in use by another backend". A bounded run
        that failed before its end never committed what they claimed, and the next run leaves it
        out. A no-op for named backends, Beam state, and an embedded Ray that is gone.
        (A cluster that does not answer within seconds is a ConnectionError: the pipeline may
        have failed for that very reason.)

        With a state directory the buckets are snapshotted first, as a run's end does: a stream's
        backend is released only here, and its claims (committed as answered: a stream has no end
        to commit at) were until now in the buckets' logs alone, written through to the OS but not
        to the disk (a snapshot that fails is logged, and the logs still hold the claims)."""
        from beam_phash.exact.ray_client import BackendError

        for client in self._unnamed:
            connected = client.connect(timeout=5.0)
            if connected.state_dir:
                try:
                    connected.snapshot()
                except BackendError as e:
                    logging.getLogger(__name__).warning("releasing %s without a snapshot: %s", connected.backend_name, e)
            connected.release()
        self._unnamed.clear()

    def _client(self, pipeline, bounded: bool):
        from beam_phash.exact import ray_cluster
        from beam_phash.exact.ray_client import RayDedupBackend

        b = self.backend
        runner = str(pipeline.options.view_as(StandardOptions).runner or "")
        if b.ray_address is None and any(r in runner for r in _REMOTE_RUNNERS):
            raise ValueError(f"backend='ray' on {runner} needs ray_address= of a cluster the workers "
                             "can reach (or use backend='state')")
        address = ray_cluster.resolve_address(b.ray_address)
        name = b.backend_name or f"run-{uuid.uuid4().hex[:16]}"
        state_dir = None
        if b.state_dir is not None:
            state_dir = os.path.abspath(b.state_dir)
            prepare_state_dir(state_dir, b.num_buckets, self.hashing.algorithm, self.hashing.hash_size)
        # A one-run backend on bounded input commits its claims at the end (FinishBackend); a named
        # one serves many pipelines, and a stream never ends: theirs are committed as answered.
        run = name if state_dir is not None and b.backend_name is None and bounded else None
        if state_dir is not None and b.backend_name is None:
            claim_state_dir(pipeline, state_dir)
        client = RayDedupBackend(address, name, b.num_buckets, b.max_in_flight, state_dir, b.num_actors, run)
        if b.backend_name is None:
            self._unnamed.append(client)
        if b.ray_address is None and not client.starting:
            # The launcher is connected to this Ray: check the layout and start the actors now.
            client.connect().start_actors()
        # (An embedded Ray still starting is joined by the claiming step, while it hashes.)
        return client

    def expand(self, hashed):
        b = self.backend
        end = None  # the run's end: its state's commit, its one-run backend's release
        committed = None  # (nothing to commit at the end)
        if isinstance(b, RayBackend):
            client = self._client(hashed.pipeline, hashed.is_bounded)
            if client.run is not None:  # a one-run backend with a state_dir, on bounded input
                committed = client.committed
            deduped = hashed | "DedupWithRay" >> beam.ParDo(
                # Which run kept a keeper: known to a one-run backend, unless a stream's state_dir
                # (committed as answered) makes its own earlier claims look like the state's.
                RayDedupDoFn(client, b.claim_batch, self._hash_bytes,
                             matched=b.backend_name is None and (b.state_dir is None or hashed.is_bounded))
            ).with_outputs(DUPLICATES, CLAIMED, main=KEPT)
            if (b.backend_name is None or b.state_dir is not None) and hashed.is_bounded:
                # A stream has no end: its backend is released by `release()` (its state_dir kept
                # by the buckets' logs, written through before each answer).
                claimed, before = deduped[CLAIMED], self._after
                end = lambda after, label: claimed | label >> FinishBackend(  # noqa: E731
                    client, b.backend_name is None, (*before, *after))
        else:
            if hashed.windowing.windowfn.is_merging():
                # Before a shuffle merges them, each record of a session is in a window of its
                # own, so state per key and window would see every record as the first: Beam's
                # Java SDK refuses state there, and Python's runners ran it without a word.
                raise ValueError("backend='state' keeps its seen hashes in Beam state, which merging windows "
                                 "(Sessions) do not support: use backend='ray' or near-duplicate mode, or window "
                                 "the records into fixed or sliding windows first")
            deduped = (hashed
                       | "KeyByHash" >> beam.FlatMap(key_by_hash, self._hash_bytes).with_output_types(Tuple[bytes, Any])
                       | "DedupWithState" >> beam.ParDo(StateDedupDoFn()).with_outputs(DUPLICATES, main=KEPT))
        self._end(hashed.pipeline, end, "FinishBackend", committed, (deduped[KEPT], deduped[DUPLICATES]))
        return deduped[KEPT], deduped[DUPLICATES]
