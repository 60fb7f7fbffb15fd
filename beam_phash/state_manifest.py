"""The manifest of a state directory (``state_dir=``, ``--state``): what every later run must
match, and for near-duplicate state also the committed segments.

Both modes pin the algorithm, the hash size and the hash version (``HASH_VERSION``: hashes of
another version would silently miss duplicates). The mode is pinned too: exact mode keeps Ray
bucket snapshots and logs, near-duplicate mode Parquet segments of kept hashes, and one directory
holds one of them. A manifest written before the mode and version were recorded is exact mode's,
of hash version 1.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable, Optional

import pyarrow as pa

from beam_phash._native import HASH_VERSION
from beam_phash.strings import pack_labels

MANIFEST = "manifest.json"
EXACT = "exact"
NEAR = "near"
#: What each mode keeps beside its manifest: a folder per bucket and the runs' commit marks
#: (exact), segments under runs/ (near).
BUCKET_PREFIX = "bucket-"
COMMITS = "commits"
RUNS = "runs"
_MODE_USE = {EXACT: "exact dedup (max_distance=0, backend='ray')",
             NEAR: "near-duplicate dedup (max_distance >= 1 or dihedral=True)"}


def digest(columns: Iterable[bytes], labels: pa.Array) -> str:
    """The digest a state file (an exact-mode snapshot, a near-duplicate segment) records of its
    entries: the packed fixed-width columns in order, then every label (offsets and UTF-8
    bytes). A file whose entries differ from it in any byte is not used."""
    d = hashlib.blake2b(digest_size=16)
    for column in columns:
        d.update(column)
    offsets, blob = pack_labels(labels)
    d.update(offsets.astype("<u8").tobytes())
    d.update(blob.tobytes())
    return d.hexdigest()


def pins(mode: str, algorithm: str, hash_size: int) -> dict:
    return {"mode": mode, "algorithm": algorithm, "hash_size": hash_size, "hash_version": HASH_VERSION}


def read(state_dir: str) -> Optional[dict]:
    """The manifest, or None when there is none; ValueError when it cannot be read."""
    path = os.path.join(state_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            have = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(have, dict) or ("mode" not in have and "num_buckets" not in have):
        # (Only exact mode's manifests, which name their buckets, were written without a mode.)
        raise ValueError(f"{path} is not a state manifest")
    have.setdefault("mode", EXACT)
    have.setdefault("hash_version", 1)
    return have


def check_without_manifest(state_dir: str) -> None:
    """ValueError when ``state_dir``, which has no manifest, holds either mode's state (a lost
    manifest, a partial copy). Read as a new directory, the hashes kept there would be kept
    again, and near-duplicate mode's next commit would delete its segments as uncommitted.
    Both modes write the manifest before any state file."""
    if not os.path.isdir(state_dir):
        return
    entries = os.listdir(state_dir)
    held = []
    if any(e.startswith(BUCKET_PREFIX) for e in entries):
        held.append(f"exact-mode buckets ({BUCKET_PREFIX}*/)")
    runs = os.path.join(state_dir, RUNS)
    if os.path.isdir(runs) and os.listdir(runs):
        held.append(f"near-duplicate segments ({RUNS}/)")
    if held:
        raise ValueError(f"state directory {state_dir} holds {' and '.join(held)} but no {MANIFEST}; not "
                         "using it: restore the manifest, or use another directory")


def check(state_dir: str, want: dict, have: Optional[dict]) -> None:
    """Raise ValueError naming every pinned setting where ``have`` (a manifest) differs."""
    if have is None:
        return
    if have.get("mode") != want["mode"]:
        raise ValueError(f"state directory {state_dir} holds the state of {_MODE_USE.get(have.get('mode'), have.get('mode'))}; "
                         f"this run is {_MODE_USE[want['mode']]}, which keeps its state in another layout: "
                         "use another directory")
    diff = [f"{k}={have.get(k)!r} (this run: {v!r})" for k, v in want.items() if have.get(k) != v]
    if diff:
        raise ValueError(f"state directory {state_dir} was written with {', '.join(diff)}; use the "
                         "same settings, or another directory")


def write(state_dir: str, manifest: dict) -> None:
    """Replace the manifest atomically and durably: a temporary file, fsync, rename, fsync the
    directory. A reader sees the old manifest or the new one, never a mix."""
    path = os.path.join(state_dir, MANIFEST)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(state_dir)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(state_dir: str, create: bool = True) -> None:
    """ValueError unless ``state_dir`` can be created and written. ``create``: make it and write
    a probe file in it (at the run's start); else only check, without touching the file system,
    that it or its nearest existing parent is writable (when a transform is built)."""
    if not create:
        probe = state_dir
        while not os.path.exists(probe):
            parent = os.path.dirname(os.path.abspath(probe))
            if parent == probe:
                break
            probe = parent
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"state directory {state_dir} is not writable ({probe} is not)")
        return
    try:
        os.makedirs(state_dir, exist_ok=True)
        probe = os.path.join(state_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"state directory {state_dir} is not writable: {e}") from None
