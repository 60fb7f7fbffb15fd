"""A shuffled dataset of real photos with 1-4 copies each, bad records mixed in, and the
brute-force oracle that any dedup output must agree with."""
from __future__ import annotations

import io
import random
from collections import defaultdict

from PIL import Image

import beam_phash
from conftest import PHOTOS


def make_records(seed: int = 0, with_ids: bool = True) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for n, path in enumerate(PHOTOS):
        data = path.read_bytes()
        copies = 1 + n % 4  # 1..4 copies per photo
        for c in range(copies):
            variant = data
            if c == 1:  # a byte-different copy (PNG re-encode of the same pixels)
                buf = io.BytesIO()
                Image.open(io.BytesIO(data)).save(buf, "PNG")
                variant = buf.getvalue()
            elif c == 2:
                variant = {"bytes": data, "path": path.name}  # Hugging Face image layout
            elif c == 3:
                variant = bytearray(data)
            records.append({"id": f"{path.stem}#{c}", "image": variant, "n": n})
    bad = [
        {"id": "bad-missing"},
        {"id": "bad-none", "image": None},
        {"id": "bad-type", "image": "not bytes"},
        {"id": "bad-empty", "image": b""},
        {"id": "bad-garbage-1", "image": b"garbage one"},
        {"id": "bad-garbage-2", "image": b"garbage two"},
        {"id": "bad-truncated", "image": PHOTOS[0].read_bytes()[:2000]},
        {"id": "bad-hf-dict", "image": {"path": "x.jpg"}},
        {"id": "bad-hf-path", "image": {"bytes": None, "path": "x.jpg"}},
    ]
    records += bad
    rng.shuffle(records)
    if not with_ids:
        for r in records:
            del r["id"]
    return records


def _bytes(value):
    if isinstance(value, dict):
        value = value.get("bytes")
    return value


def oracle(records, **hash_kwargs):
    """Brute force: hash every record alone; group ids by hash; failed = unhashable records."""
    groups = defaultdict(set)
    failed = set()
    for r in records:
        data = _bytes(r.get("image"))
        try:
            if not isinstance(data, (bytes, bytearray, memoryview)) or not data:
                raise beam_phash.ImageDecodeError("not an image")
            h = beam_phash.hash_image(data, **hash_kwargs).hex()
        except beam_phash.ImageDecodeError:
            failed.add(r["id"])
            continue
        groups[h].add(r["id"])
    return dict(groups), failed


def check_outputs(records, hash_field="image_phash", **hash_kwargs):
    """A matcher for [(tag, record), ...]: exactly one kept per hash group, every duplicate points
    at the kept record of its own group, every failure is reported with a reason."""
    groups, failed = oracle(records, **hash_kwargs)
    group_of = {i: h for h, ids in groups.items() for i in ids}

    def _check(tagged):
        kept = [r for t, r in tagged if t == "kept"]
        dups = [r for t, r in tagged if t == "duplicates"]
        bad = [r for t, r in tagged if t == "failed"]
        assert len(kept) + len(dups) + len(bad) == len(records), "records were lost or invented"
        kept_ids = [r["id"] for r in kept]
        assert len(kept_ids) == len(set(kept_ids)), "a record was emitted twice"
        kept_by_group = defaultdict(list)
        for r in kept:
            assert r[hash_field] == group_of[r["id"]], r["id"]
            kept_by_group[r[hash_field]].append(r["id"])
        assert set(kept_by_group) == set(groups), "a unique image was lost"
        assert all(len(v) == 1 for v in kept_by_group.values()), "two records kept for one hash"
        for r in dups:
            assert r[hash_field] == group_of[r["id"]]
            assert r["duplicate_of"] == kept_by_group[r[hash_field]][0], r
        assert {r["id"] for r in bad} == failed
        for r in bad:
            assert r[hash_field] is None and r["error"], r
    return _check
