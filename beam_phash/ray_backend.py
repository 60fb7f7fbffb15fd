"""The Ray DedupBackend: bucket actors holding "hash -> first owner", and the one client that
talks to them. Only :class:`RayDedupBackend` calls ``.remote()``.

Actor methods are idempotent: ``claim`` stores an owner only for a new hash and always answers
with the stored one, so a call that Ray or Beam repeats gives the same answer.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import ray

from beam_phash import ray_cluster
from beam_phash.routing import bucket_of


class BackendError(RuntimeError):
    """A bucket actor is unreachable or died; the message names the bucket."""


@ray.remote
class BucketActor:
    """One bucket of the seen-set: raw hash bytes -> id of the record that claimed it first."""

    def __init__(self, backend_name: str, bucket: int):
        self._backend_name = backend_name
        self._bucket = bucket
        self._first: Dict[bytes, str] = {}

    def claim(self, packed: bytes, width: int, owners: List[str]) -> List[str]:
        first = self._first
        return [first.setdefault(packed[i * width:(i + 1) * width], owner)
                for i, owner in enumerate(owners)]

    def size(self) -> int:
        return len(self._first)


def bucket_actor_name(backend_name: str, bucket: int) -> str:
    return f"{backend_name}.bucket-{bucket:05d}"


def get_or_create_bucket(backend_name: str, bucket: int, namespace: str = ray_cluster.NAMESPACE):
    """The one way to obtain a bucket actor: by name, in a namespace, created if missing.

    Detached, so the actor outlives the Beam worker that happened to create it; the pipeline
    releases it at the end (unless the backend was named by the user, see ImagePhashDedup).
    """
    return BucketActor.options(
        name=bucket_actor_name(backend_name, bucket),
        namespace=namespace,
        get_if_exists=True,
        lifetime="detached",
        num_cpus=0,
    ).remote(backend_name, bucket)


class RayDedupBackend:
    """Client of one backend (``backend_name``) of ``num_buckets`` actors.

    Picklable configuration; :meth:`connect` (called from ``DoFn.setup``) joins the cluster.
    """

    def __init__(self, address: str, backend_name: str, num_buckets: int, max_in_flight: int = 16):
        self.address = address
        self.backend_name = backend_name
        self.num_buckets = num_buckets
        self.max_in_flight = max_in_flight
        self._actors: Dict[int, object] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_actors"] = {}
        return state

    def connect(self) -> "RayDedupBackend":
        ray_cluster.connect(self.address)
        return self

    def _actor(self, bucket: int):
        actor = self._actors.get(bucket)
        if actor is None:
            actor = self._actors[bucket] = get_or_create_bucket(self.backend_name, bucket)
        return actor

    def claim(self, hashes: Sequence[bytes], owners: Sequence[str]) -> List[str]:
        """For each hash, the owner that claimed it first (the caller's own owner if it is new).

        Groups the batch by bucket, makes one call per bucket, at most ``max_in_flight`` at once.
        """
        if not hashes:
            return []
        width = len(hashes[0])
        buckets = bucket_of(hashes, self.num_buckets)
        order = np.argsort(buckets, kind="stable")
        bounds = np.flatnonzero(np.diff(buckets[order])) + 1
        result: List[Optional[str]] = [None] * len(hashes)
        pending: Dict[object, tuple] = {}
        for idxs in np.split(order, bounds):
            if len(pending) >= self.max_in_flight:
                self._collect(pending, result, num_returns=1)
            bucket = int(buckets[idxs[0]])
            ref = self._actor(bucket).claim.remote(
                b"".join(hashes[i] for i in idxs), width, [owners[i] for i in idxs])
            pending[ref] = (bucket, idxs)
        self._collect(pending, result, num_returns=len(pending))
        return result  # type: ignore[return-value]

    def _collect(self, pending: dict, result: list, num_returns: int) -> None:
        done, _ = ray.wait(list(pending), num_returns=num_returns)
        for ref in done:
            bucket, idxs = pending.pop(ref)
            try:
                firsts = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise BackendError(
                    f"bucket {bucket} of dedup backend {self.backend_name!r} failed: "
                    f"{type(e).__name__}: {e}") from e
            for i, first in zip(idxs, firsts):
                result[i] = first

    def sizes(self) -> List[int]:
        """Number of distinct hashes held by each bucket."""
        return ray.get([self._actor(b).size.remote() for b in range(self.num_buckets)])

    def release(self) -> None:
        """Kill this backend's bucket actors (their state is gone)."""
        for bucket in range(self.num_buckets):
            try:
                actor = ray.get_actor(bucket_actor_name(self.backend_name, bucket),
                                      namespace=ray_cluster.NAMESPACE)
            except ValueError:
                continue  # never created
            ray.kill(actor, no_restart=True)
        self._actors.clear()
