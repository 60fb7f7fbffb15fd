"""The Ray DedupBackend: bucket actors holding "hash -> first owner", and the one client that
talks to them. Only :class:`RayDedupBackend` calls ``.remote()``.

Actor methods are idempotent: ``claim`` stores an owner only for a new hash and always answers
with the stored one, so a call that Ray or Beam repeats gives the same answer.

Actor faults. With a ``state_dir`` each bucket logs what it stores before answering and
snapshots to Parquet (``bucket_store``); Ray restarts a dead bucket actor, which reloads its
state from disk, and retries the calls that were in flight, so the pipeline's output is as if
nothing happened. Without one, the state of a dead bucket is gone: the calls fail with a
:class:`BackendError` naming the bucket, and the bucket is never silently recreated empty (the
backend records in Ray's KV store which buckets it created).
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import ray

from beam_phash import ray_cluster, ray_private
from beam_phash._native import SeenSet
from beam_phash.records import keeper_label
from beam_phash.routing import bucket_of


def owner_digests(owners: Sequence[str]) -> np.ndarray:
    """64-bit owner ids: the first 8 bytes of BLAKE2b of each owner string. Two different ids
    collide with probability 2^-64 per pair, and only matter when they also share a hash."""
    return np.array([int.from_bytes(hashlib.blake2b(o.encode(), digest_size=8).digest(), "little")
                     for o in owners], dtype="<u8")


def resident_bytes() -> int:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class PendingClaims:
    """Claims of one batch that were sent to the bucket actors and not collected yet."""

    def __init__(self, count: int):
        self.calls: Dict[object, tuple] = {}
        self.result: List[Optional[str]] = [None] * count


def bucket_label(backend_name: str, bucket: int) -> str:
    """How every message names a bucket: "bucket 3 of dedup backend 'run-...'"."""
    return f"bucket {bucket} of dedup backend {backend_name!r}"


class BackendError(RuntimeError):
    """A bucket actor is unreachable or died; the message names the bucket."""


@ray.remote
class BucketActor:
    """One bucket of the seen-set: a Rust :class:`beam_phash.SeenSet` holding, per hash, the
    64-bit owner digest of the record that claimed it first and that record's id (about
    54 bytes + the id's length per hash, instead of ~290 for a Python dict)."""

    def __init__(self, backend_name: str, bucket: int, state_dir: Optional[str] = None,
                 snapshot_every: int = 1_000_000):
        self._name = bucket_label(backend_name, bucket)
        self._seen: Optional[SeenSet] = None
        self._store = None  # a BucketStore with a state_dir
        self._snapshot_every = snapshot_every
        if state_dir:
            from beam_phash.bucket_store import BucketStore  # pyarrow: only for a state_dir

            # Also what a restart after a crash runs: the state comes back from disk.
            self._store = BucketStore(state_dir, bucket, self._name)
            width, chunks = self._store.load()
            if width:
                self._seen = SeenSet(width, keep_labels=True)
                for hashes, owners, labels in chunks:
                    self._seen.claim(hashes, np.frombuffer(owners, dtype="<u8"), labels)

    def claim(self, packed: bytes, width: int, owners: bytes, labels: List[str]) -> List[Optional[str]]:
        """Per hash: None where the caller's owner is the first claimant (or a retry of it), else
        the first claimant's label. Idempotent: the same call again gives the same answer."""
        if self._seen is None:
            self._seen = SeenSet(width, keep_labels=True)
        elif self._seen.hash_bytes != width:
            raise ValueError(f"{self._name} holds {self._seen.hash_bytes}-byte hashes, got "
                             f"{width}-byte hashes: a backend serves one algorithm and hash_size")
        owner_ids = np.frombuffer(owners, dtype="<u8")
        answers = self._seen.claim(packed, owner_ids, labels)
        if self._store is not None:
            self._log(packed, width, owner_ids, labels, answers)
        return answers

    def _log(self, packed: bytes, width: int, owner_ids: np.ndarray, labels: List[str],
             answers: List[Optional[str]]) -> None:
        """Write the entries this call stored (or a retry re-stored) to the log, before answering."""
        mine = np.fromiter((a is None for a in answers), dtype=bool, count=len(answers))
        if not mine.any():
            return
        hashes = np.frombuffer(packed, dtype=np.uint8).reshape(-1, width)[mine].tobytes()
        self._store.append(width, hashes, owner_ids[mine].tobytes(),
                           [label for label, m in zip(labels, mine) if m])
        if self._store.logged_since_snapshot >= max(self._snapshot_every, len(self._seen)):
            self.snapshot()  # bounds the log a restart replays

    def snapshot(self) -> Optional[str]:
        """Write the whole bucket as a Parquet snapshot (crash-safe); the path, or None when there
        is no state directory or nothing held. Idempotent."""
        if self._store is None or self._seen is None:
            return None
        hashes, owners, labels = self._seen.entries()
        return self._store.snapshot(self._seen.hash_bytes, hashes, owners, labels)

    def stats(self) -> Dict[str, int]:
        """Hashes held, the seen-set's bytes, this actor process's resident memory and its pid."""
        return {"hashes": 0 if self._seen is None else len(self._seen),
                "nbytes": 0 if self._seen is None else self._seen.nbytes,
                "rss": resident_bytes(), "pid": os.getpid()}


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
