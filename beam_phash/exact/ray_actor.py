"""The Ray bucket actor: one bucket of the exact-dedup seen-set, "hash -> first owner", held in
a Rust :class:`beam_phash.SeenSet`, with a state directory logged and snapshotted by
``store.BucketStore``. Only the client (``ray_client``) creates and calls it.

Its methods are idempotent: ``claim`` stores an owner only for a new hash and always answers with
the stored one, so a call that Ray or Beam repeats gives the same answer.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

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
            from beam_phash.exact.store import BucketStore  # pyarrow: only for a state_dir

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
