"""The Ray DedupBackend: bucket actors holding "hash -> first owner", and the one client that
talks to them. Only :class:`RayDedupBackend` calls ``.remote()``.

Actor methods are idempotent: ``claim`` stores an owner only for a new hash and always answers
with the stored one, so a call that Ray or Beam repeats gives the same answer.
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import ray

from beam_phash import ray_cluster
from beam_phash._native import SeenSet
from beam_phash.records import SURROGATE_PREFIX
from beam_phash.routing import bucket_of


def owner_digests(owners: Sequence[str]) -> np.ndarray:
    """64-bit owner ids: the first 8 bytes of BLAKE2b of each owner string. Two different ids
    collide with probability 2^-64 per pair, and only matter when they also share a hash."""
    return np.array([int.from_bytes(hashlib.blake2b(o.encode(), digest_size=8).digest(), "little")
                     for o in owners], dtype="<u8")


def _label(owner: str) -> str:
    """What a bucket stores as the keeper's id: the record id, or "" for an id-less record."""
    return "" if owner.startswith(SURROGATE_PREFIX) else owner


def resident_bytes() -> int:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class PendingClaims:
    """Claims of one batch that were sent to the bucket actors and not collected yet."""

    def __init__(self, owners: Sequence[str]):
        self.owners = owners
        self.calls: Dict[object, tuple] = {}
        self.result: List[Optional[str]] = [None] * len(owners)


class BackendError(RuntimeError):
    """A bucket actor is unreachable or died; the message names the bucket."""


@ray.remote
class BucketActor:
    """One bucket of the seen-set: a Rust :class:`beam_phash.SeenSet` holding, per hash, the
    64-bit owner digest of the record that claimed it first and that record's id (about
    54 bytes + the id's length per hash, instead of ~290 for a Python dict)."""

    def __init__(self, backend_name: str, bucket: int):
        self._backend_name = backend_name
        self._bucket = bucket
        self._seen: Optional[SeenSet] = None

    def claim(self, packed: bytes, width: int, owners: bytes, labels: List[str]) -> List[Optional[str]]:
        """Per hash: None where the caller's owner is the first claimant (or a retry of it), else
        the first claimant's label. Idempotent: the same call again gives the same answer."""
        if self._seen is None:
            self._seen = SeenSet(width, keep_labels=True)
        elif self._seen.hash_bytes != width:
            raise ValueError(f"bucket {self._bucket} of backend {self._backend_name!r} holds "
                             f"{self._seen.hash_bytes}-byte hashes, got {width}-byte hashes: a named "
                             "backend serves one algorithm and hash_size")
        return self._seen.claim(packed, np.frombuffer(owners, dtype="<u8"), labels)

    def stats(self) -> Dict[str, int]:
        """Hashes held, the seen-set's bytes, and this actor process's resident memory."""
        return {"hashes": 0 if self._seen is None else len(self._seen),
                "nbytes": 0 if self._seen is None else self._seen.nbytes,
                "rss": resident_bytes()}


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
        """For each hash, the owner that claimed it first (the caller's own owner if it is new;
        ``SURROGATE_PREFIX`` alone where the first claimant had no id)."""
        return self.collect(self.submit(hashes, owners))

    def submit(self, hashes: Sequence[bytes], owners: Sequence[str]) -> "PendingClaims":
        """Send a batch's claims and return without waiting for them (unless more than
        ``max_in_flight`` calls are out): one call per bucket the batch touches."""
        pending = PendingClaims(owners)
        if not hashes:
            return pending
        width = len(hashes[0])
        digests = owner_digests(owners)
        buckets = bucket_of(hashes, self.num_buckets)
        order = np.argsort(buckets, kind="stable")
        bounds = np.flatnonzero(np.diff(buckets[order])) + 1
        for idxs in np.split(order, bounds):
            if len(pending.calls) >= self.max_in_flight:
                self._collect(pending, num_returns=1)
            bucket = int(buckets[idxs[0]])
            ref = self._actor(bucket).claim.remote(
                b"".join(hashes[i] for i in idxs), width, digests[idxs].tobytes(),
                [_label(owners[i]) for i in idxs])
            pending.calls[ref] = (bucket, idxs)
        return pending

    def collect(self, pending: "PendingClaims") -> List[str]:
        """Wait for a submitted batch; the answers of :meth:`claim`, in input order."""
        self._collect(pending, num_returns=len(pending.calls))
        return pending.result  # type: ignore[return-value]

    def _collect(self, pending: "PendingClaims", num_returns: int) -> None:
        if not pending.calls:
            return
        done, _ = ray.wait(list(pending.calls), num_returns=num_returns)
        for ref in done:
            bucket, idxs = pending.calls.pop(ref)
            try:
                keepers = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise BackendError(
                    f"bucket {bucket} of dedup backend {self.backend_name!r} failed: "
                    f"{type(e).__name__}: {e}") from e
            for i, keeper in zip(idxs, keepers):
                pending.result[i] = pending.owners[i] if keeper is None else (keeper or SURROGATE_PREFIX)

    def stats(self) -> List[Dict[str, int]]:
        """Per bucket: hashes held, seen-set bytes, resident memory of the actor process."""
        return ray.get([self._actor(b).stats.remote() for b in range(self.num_buckets)])

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
