"""Reading the main job's output directory back, in a form two runs can be compared by."""
from __future__ import annotations

import glob
import json
import pathlib
from collections import defaultdict

import pyarrow.parquet as pq


def read(out, name: str) -> list[dict]:
    files = sorted(glob.glob(f"{out}/{name}/*.parquet"))
    assert files, f"no {name} shards in {out}"
    return pq.read_table(files).to_pylist() if files else []


def basename(path) -> str:
    return str(path).rsplit("/", 1)[-1]


def normalized(out) -> dict:
    """What any correct run must agree on, whichever copy of a group it kept: the hash groups
    (hash -> ids of kept + duplicates), the failed ids, and one keeper per group."""
    kept, dups, failed = read(out, "kept"), read(out, "duplicates"), read(out, "failed")
    groups = defaultdict(set)
    for r in kept + dups:
        groups[r["image_phash"]].add(basename(r["id"]))
    keepers = defaultdict(list)
    for r in kept:
        keepers[r["image_phash"]].append(r["id"])
    assert all(len(v) == 1 for v in keepers.values()), "two records kept for one hash"
    for r in dups:
        assert r["duplicate_of"] == keepers[r["image_phash"]][0], r
    return {"groups": {h: frozenset(ids) for h, ids in groups.items()},
            "failed": frozenset(basename(r["id"]) for r in failed),
            "summary": {k: v for k, v in json.loads(pathlib.Path(out, "summary.json").read_text()).items()
                        if k in ("inputs", "kept", "duplicates", "failed", "adds_up")}}
