"""The Ray bucket actor: one process hosting several buckets of the exact-dedup seen-set,
"hash -> first owner", each held in a Rust :class:`beam_phash.SeenSet`, and with a state
directory logged and snapshotted per bucket by ``store.BucketStore`` (so the on-disk layout is one
directory per bucket, whatever the number of actors). Only the client (``ray_client``) creates
and calls it.

Its methods are idempotent: ``claim`` stores an owner only for a new hash and always answers with
the stored one, so a call that Ray or Beam repeats gives the same answer.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import ray

from beam_phash._native import SeenSet


def resident_bytes() -> int:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def bucket_label(backend_name: str, bucket: int) -> str:
    """How every message names a bucket: "bucket 3 of dedup backend 'run-...'"."""
    return f"bucket {bucket} of dedup backend {backend_name!r}"


class _Bucket:
    """One bucket: its seen-set (created by the first claim, or loaded) and, with a state
    directory, its store. With a ``run`` its claims are that run's, committed when the run ends
    (``store.commit_run``); the entries it loaded from committed runs come first in the
    seen-set, ``committed`` of them."""

    def __init__(self, backend_name: str, bucket: int, state_dir: Optional[str], snapshot_every: int,
                 run: Optional[str] = None, committed: Optional[set] = None):
        self.name = bucket_label(backend_name, bucket)
        self.seen: Optional[SeenSet] = None
        self.store = None
        self.committed = 0
        self._snapshot_every = snapshot_every
        if state_dir:
            from beam_phash.exact.store import BucketStore  # pyarrow: only for a state_dir

            # Also what a restart after a crash runs: the state comes back from disk.
            self.store = BucketStore(state_dir, bucket, self.name, run)
            width, chunks = self.store.load(committed)
            if width:
                self.seen = SeenSet(width, keep_labels=True)
                own_from = self.store.own_from
                self._replay(chunks[:own_from])
                self.committed = len(self.seen)
                self._replay(chunks[own_from:])

    def _replay(self, chunks) -> None:
        for hashes, owners, labels in chunks:
            self.seen.claim(hashes, np.frombuffer(owners, dtype="<u8"), labels)

    def claim(self, packed: bytes, width: int, owner_ids: np.ndarray, labels: List[str]) -> Tuple[List[Optional[str]], np.ndarray]:
        """The answers, and per hash whether its keeper came from the committed state (an
        earlier run)."""
        if self.seen is None:
            self.seen = SeenSet(width, keep_labels=True)
        elif self.seen.hash_bytes != width:
            raise ValueError(f"{self.name} holds {self.seen.hash_bytes}-byte hashes, got "
                             f"{width}-byte hashes: a backend serves one algorithm and hash_size")
        answers, entries = self.seen.claim_entries(packed, owner_ids, labels)
        if self.store is not None:
            self._log(packed, width, owner_ids, labels, answers)
        entries = np.frombuffer(entries, dtype="<i8")
        return answers, (entries >= 0) & (entries < self.committed)

    def _log(self, packed: bytes, width: int, owner_ids: np.ndarray, labels: List[str],
             answers: List[Optional[str]]) -> None:
        """Write the entries this call stored (or a retry re-stored) to the log, before answering."""
        mine = np.fromiter((a is None for a in answers), dtype=bool, count=len(answers))
        if not mine.any():
            return
        hashes = np.frombuffer(packed, dtype=np.uint8).reshape(-1, width)[mine].tobytes()
        self.store.append(width, hashes, owner_ids[mine].tobytes(),
                          [label for label, m in zip(labels, mine) if m])
        if self.store.logged_since_snapshot >= max(self._snapshot_every, len(self.seen)):
            self.snapshot()  # bounds the log a restart replays

    def snapshot(self) -> Optional[str]:
        if self.store is None or self.seen is None:
            return None
        hashes, owners, labels = self.seen.entries()
        return self.store.snapshot(self.seen.hash_bytes, hashes, owners, labels, self.committed)


@ray.remote
class BucketActor:
    """Several buckets of the seen-set in one process: per bucket, a Rust
    :class:`beam_phash.SeenSet` holding, per hash, the 64-bit owner digest of the record that
    claimed it first and that record's id (about 54 bytes + the id's length per hash, instead of
    ~290 for a Python dict)."""

    def __init__(self, backend_name: str, buckets: Sequence[int], state_dir: Optional[str] = None,
                 snapshot_every: int = 1_000_000, run: Optional[str] = None):
        committed = None
        if state_dir:
            from beam_phash.exact.store import committed_runs  # pyarrow: only for a state_dir

            committed = committed_runs(state_dir)  # once for all the buckets
        self._buckets: Dict[int, _Bucket] = {
            b: _Bucket(backend_name, b, state_dir, snapshot_every, run, committed) for b in buckets}

    def claim(self, packed: bytes, width: int, owners: bytes, labels: List[str],
              buckets: bytes) -> Tuple[List[Optional[str]], bytes]:
        """Per hash, in input order: None where the caller's owner is the first claimant (or a
        retry of it), else the first claimant's label; and, as one byte per hash, 1 where that
        keeper was in the committed state when the bucket was loaded (kept by an earlier run),
        else 0. ``buckets`` holds each hash's bucket as little-endian uint32. Idempotent: the
        same call again gives the same answer."""
        rows = np.frombuffer(packed, dtype=np.uint8).reshape(-1, width)
        owner_ids = np.frombuffer(owners, dtype="<u8")
        of = np.frombuffer(buckets, dtype="<u4")
        present = np.unique(of)
        if len(present) == 1:  # the common case with one bucket per actor: no regrouping
            answers, earlier = self._hosted(int(present[0])).claim(packed, width, owner_ids, labels)
            return answers, earlier.astype(np.uint8).tobytes()
        answers: List[Optional[str]] = [None] * len(labels)
        earlier = np.zeros(len(labels), dtype=np.uint8)
        for bucket in present:
            idxs = np.flatnonzero(of == bucket)
            got, earlier[idxs] = self._hosted(int(bucket)).claim(
                rows[idxs].tobytes(), width, owner_ids[idxs], [labels[i] for i in idxs])
            for i, answer in zip(idxs.tolist(), got):
                answers[i] = answer
        return answers, earlier.tobytes()

    def _hosted(self, bucket: int) -> _Bucket:
        hosted = self._buckets.get(bucket)
        if hosted is None:
            raise ValueError(f"bucket {bucket} is not hosted by this actor (it hosts {sorted(self._buckets)})")
        return hosted

    def snapshot(self) -> List[str]:
        """Write each hosted bucket as a Parquet snapshot (crash-safe); the paths written (none
        without a state directory, or for an empty bucket). Idempotent."""
        return [path for path in (b.snapshot() for b in self._buckets.values()) if path]

    def stats(self) -> List[Dict[str, int]]:
        """Per hosted bucket: its number, the hashes held, the seen-set's bytes, and this actor
        process's resident memory and pid."""
        rss, pid = resident_bytes(), os.getpid()
        return [{"bucket": b, "hashes": 0 if h.seen is None else len(h.seen),
                 "nbytes": 0 if h.seen is None else h.seen.nbytes, "rss": rss, "pid": pid}
                for b, h in sorted(self._buckets.items())]
