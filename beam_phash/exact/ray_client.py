"""The client of the Ray backend: the one place that creates bucket actors (``ray_actor``) and
calls ``.remote()`` on them (:func:`get_or_create_bucket`, :class:`RayDedupBackend`).

Actor faults. With a ``state_dir`` each bucket logs what it stores before answering and
snapshots to Parquet (``store``); Ray restarts a dead bucket actor, which reloads its
state from disk, and retries the calls that were in flight, so the pipeline's output is as if
nothing happened. Without one, the state of a dead bucket is gone: the calls fail with a
:class:`BackendError` naming the bucket, and the bucket is never silently recreated empty (the
backend records in Ray's KV store which buckets it created).
"""
from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import ray

from beam_phash.exact import ray_cluster, ray_private
from beam_phash.exact.ray_actor import BucketActor, bucket_label
from beam_phash.records import keeper_label
from beam_phash.routing import bucket_of


def owner_digests(owners: Sequence[str]) -> np.ndarray:
    """64-bit owner ids: the first 8 bytes of BLAKE2b of each owner string. Two different ids
    collide with probability 2^-64 per pair, and only matter when they also share a hash."""
    return np.array([int.from_bytes(hashlib.blake2b(o.encode(), digest_size=8).digest(), "little")
                     for o in owners], dtype="<u8")


class PendingClaims:
    """Claims of one batch that were sent to the bucket actors and not collected yet."""

    def __init__(self, count: int):
        self.calls: Dict[object, tuple] = {}
        self.result: List[Optional[str]] = [None] * count


class BackendError(RuntimeError):
    """A bucket actor is unreachable or died; the message names the bucket."""


def bucket_actor_name(backend_name: str, bucket: int, state_dir: Optional[str] = None) -> str:
    """The actor's name; with a state directory it also names the directory (by digest), so a
    live backend of the same name without it, or with another, is never mistaken for it."""
    name = f"{backend_name}.bucket-{bucket:05d}"
    if state_dir:
        name += ".state-" + hashlib.blake2b(state_dir.encode(), digest_size=6).hexdigest()
    return name


MAX_RESTARTS = 10


def _created_key(backend_name: str, bucket: int) -> bytes:
    return f"{backend_name}/bucket-{bucket:05d}".encode()


def get_or_create_bucket(backend_name: str, bucket: int, state_dir: Optional[str] = None,
                         namespace: str = ray_cluster.NAMESPACE):
    """The one way to obtain a bucket actor: by name, in a namespace, created if missing.

    Detached, so the actor outlives the Beam worker that happened to create it; the pipeline
    releases it at the end (unless the backend was named by the user, see ImagePhashDedup).
    With a ``state_dir`` Ray restarts a dead actor (which reloads from disk) and retries its
    calls. Without one, a bucket that existed and died is lost, and asking for it again raises
    :class:`BackendError` instead of handing out an empty bucket.
    """
    name = bucket_actor_name(backend_name, bucket, state_dir)
    if state_dir is None:
        try:
            return ray.get_actor(name, namespace=namespace)
        except ValueError:
            pass
        if ray_private.kv_get(_created_key(backend_name, bucket), namespace):
            raise BackendError(
                f"{bucket_label(backend_name, bucket)} was lost: its actor died and "
                "the hashes it held died with it. Rerun the pipeline; give it a state_dir "
                "(--state) to survive actor faults")
    actor = BucketActor.options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        lifetime="detached",
        num_cpus=0,
        # Restarts are bounded: an actor that dies again and again (say, OOM while reloading)
        # ends in a BackendError instead of a pipeline waiting for ever.
        max_restarts=MAX_RESTARTS if state_dir else 0,
        max_task_retries=-1 if state_dir else 0,
    ).remote(backend_name, bucket, state_dir)
    if state_dir is None:
        ray_private.kv_put(_created_key(backend_name, bucket), b"1", namespace)
    return actor


class RayDedupBackend:
    """Client of one backend (``backend_name``) of ``num_buckets`` actors.

    Picklable configuration; :meth:`connect` (called from ``DoFn.setup``) joins the cluster.
    """

    def __init__(self, address: str, backend_name: str, num_buckets: int, max_in_flight: int = 16,
                 state_dir: Optional[str] = None):
        self.address = address
        self.backend_name = backend_name
        self.num_buckets = num_buckets
        self.max_in_flight = max_in_flight
        self.state_dir = state_dir
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
            actor = self._actors[bucket] = get_or_create_bucket(self.backend_name, bucket, self.state_dir)
        return actor

    def claim(self, hashes: Sequence[bytes], owners: Sequence[str]) -> List[Optional[str]]:
        """For each hash: None where this owner is its keeper (its first claimant, or a retry of
        it), else the keeper's id ("" where the keeper had no id)."""
        return self.collect(self.submit(hashes, owners))

    def submit(self, hashes: Sequence[bytes], owners: Sequence[str]) -> "PendingClaims":
        """Send a batch's claims and return without waiting for them (unless more than
        ``max_in_flight`` calls are out): one call per bucket the batch touches."""
        pending = PendingClaims(len(owners))
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
                [keeper_label(owners[i]) for i in idxs])
            pending.calls[ref] = (bucket, idxs)
        return pending

    def collect(self, pending: "PendingClaims") -> List[Optional[str]]:
        """Wait for a submitted batch; the answers of :meth:`claim`, in input order."""
        self._collect(pending, num_returns=len(pending.calls))
        return pending.result

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
                    f"{bucket_label(self.backend_name, bucket)} failed: "
                    f"{type(e).__name__}: {e}") from e
            for i, keeper in zip(idxs, keepers):
                pending.result[i] = keeper

    def stats(self) -> List[Dict[str, int]]:
        """Per bucket: hashes held, seen-set bytes, resident memory of the actor process."""
        return ray.get([self._actor(b).stats.remote() for b in range(self.num_buckets)])

    def start_buckets(self) -> None:
        """Create every bucket actor now, without waiting for them: their processes then start
        while Beam starts the pipeline, instead of when the first hashes arrive."""
        for bucket in range(self.num_buckets):
            self._actor(bucket)

    def _existing(self) -> Dict[int, object]:
        """The bucket actors that exist now (without creating any)."""
        found = {}
        for bucket in range(self.num_buckets):
            try:
                found[bucket] = ray.get_actor(bucket_actor_name(self.backend_name, bucket, self.state_dir),
                                              namespace=ray_cluster.NAMESPACE)
            except ValueError:
                continue  # never created (or lost)
        return found

    def snapshot(self) -> List[str]:
        """Snapshot every bucket to the state directory (no-op without one); the paths written."""
        if not self.state_dir:
            return []
        refs = {bucket: actor.snapshot.remote() for bucket, actor in self._existing().items()}
        paths = []
        for bucket, ref in refs.items():
            try:
                path = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise BackendError(f"{bucket_label(self.backend_name, bucket)} could not snapshot: "
                                   f"{type(e).__name__}: {e}") from e
            if path:
                paths.append(path)
        return paths

    def release(self) -> None:
        """Kill this backend's bucket actors (their state is gone, except what was snapshotted)."""
        for actor in self._existing().values():
            ray.kill(actor, no_restart=True)
        for bucket in range(self.num_buckets):
            ray_private.kv_del(_created_key(self.backend_name, bucket), ray_cluster.NAMESPACE)
        self._actors.clear()
