"""Dedup against what came before: near-duplicate ``state_dir`` across runs, and a reference set
(``reference=``, ``--reference``) in exact and near mode, against a brute-force oracle; the
state's crash safety and the refusals of a state or reference that cannot be used."""
import io
import json
import os
import random
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from PIL import Image

import beam_phash
from beam_phash import ImagePhashDedup
from beam_phash.near import state as near_state
from beam_phash.near.fixed import STATE, fixed_batch
from conftest import PHOTOS
from test_near_dup import MULTI, _random_hashes
from tagged import tagged

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ORDER = {"reference": 0, "state": 1}


def _words(hashes):
    return np.frombuffer(b"".join(hashes), dtype=np.uint64).reshape(len(hashes), -1)


def oracle(records, k, fixed=()):
    """Brute force. ``records``: (id, hash bytes); ``fixed``: (label, hash bytes, source). A
    record within k of a fixed hash is its duplicate: the first source, then the nearest (any
    label at that source and distance is right); the others are kept greedily by id, each
    dropped one naming its nearest kept (ties: the smaller id). Returns {id: None (kept),
    ("input", keeper, d) or (source, {labels}, d)}."""
    decided = {}
    good = sorted(records)
    if fixed:
        fw = _words([h for _, h, _ in fixed])
        order = np.array([SOURCE_ORDER[s] for _, _, s in fixed])
    rest = []
    for rid, h in good:
        if fixed:
            d = np.bitwise_count(fw ^ _words([h])).sum(axis=1)
            within = np.flatnonzero(d <= k)
            if len(within):
                best = min((order[i], d[i]) for i in within)
                labels = {fixed[i][0] for i in within if (order[i], d[i]) == best}
                decided[rid] = ({0: "reference", 1: "state"}[best[0]], labels, int(best[1]))
                continue
        rest.append((rid, h))
    kept = []
    words = _words([h for _, h in rest]) if rest else None
    for i, (rid, _) in enumerate(rest):
        if kept:
            d = np.bitwise_count(words[kept] ^ words[i]).sum(axis=1)
            j = int(np.argmin(d))
            if d[j] <= k:
                decided[rid] = ("input", rest[kept[j]][0], int(d[j]))
                continue
        decided[rid] = None
        kept.append(i)
    return decided


def check_against(expected, failed=()):
    def _check(tagged_records):
        got = {}
        for tag, r in tagged_records:
            assert r["id"] not in got, f"{r['id']} emitted twice"
            if tag == "failed":
                got[r["id"]] = "failed"
            elif tag == "kept":
                got[r["id"]] = None
            else:
                got[r["id"]] = (r.get("matched"), r["duplicate_of"], r.get("distance"))
        assert {i for i, v in got.items() if v == "failed"} == set(failed)
        for rid, want in expected.items():
            have = got.get(rid, "missing")
            if want is None or want[0] == "input":
                assert have == want, (rid, have, want)
            else:
                source, labels, d = want
                assert have != "missing" and have is not None and have[0] == source and have[2] == d \
                    and have[1] in labels, (rid, have, want)
        assert set(got) - {"failed"} >= set(expected)
    return _check


def run_pipeline(records, k, options=(), reference=None, **kwargs):
    p = TestPipeline(options=PipelineOptions(list(options)))
    dedup = ImagePhashDedup(max_distance=k, **kwargs)
    if reference is not None:
        dedup = dedup.with_reference(p | "References" >> beam.Create(reference, reshuffle=False),
                                     hash_column=kwargs.get("hash_column"))
    outputs = p | beam.Create(records, reshuffle=False) | dedup.with_outputs()
    return p, outputs


def _flip(h: bytes, count: int, rng: random.Random) -> bytes:
    x = int.from_bytes(h, "little")
    for bit in rng.sample(range(256), count):
        x ^= 1 << bit
    return x.to_bytes(32, "little")


@pytest.mark.parametrize("k1,k2,options,with_reference,extra", [
    (16, 16, (), False, {}),
    (12, 20, MULTI, True, {}),
    (16, 16, (), True, {"band_partition_bits": 2, "partitions": 3}),
])
def test_second_run_drops_what_the_first_kept(tmp_path, k1, k2, options, with_reference, extra):
    rng = random.Random(k1 * 100 + k2)
    first = [(f"a{i:04d}", h) for i, h in enumerate(_random_hashes(500, 256, k1, seed=k1))]
    second_hashes = []
    for i in range(500):
        roll = rng.random()
        if roll < 0.35:  # a near copy (sometimes exactly k2 or k2 + 1 bits) of anything run 1 saw
            second_hashes.append(_flip(rng.choice(first)[1], rng.choice([0, 3, k2, k2 + 1]), rng))
        elif roll < 0.55 and second_hashes:  # near copies among the new records
            second_hashes.append(_flip(rng.choice(second_hashes), rng.randint(0, k2), rng))
        else:
            second_hashes.append(rng.getrandbits(256).to_bytes(32, "little"))
    second = [(f"b{i:04d}", h) for i, h in enumerate(second_hashes)]
    state = str(tmp_path / "state")

    expected1 = oracle(first, k1)
    records1 = [{"id": i, "h": h.hex()} for i, h in first]
    random.Random(1).shuffle(records1)
    p, outputs = run_pipeline(records1, k1, options, hash_column="h", state_dir=state)
    assert_that(tagged(outputs), check_against(expected1))
    p.run().wait_until_finish()
    manifest = json.load(open(os.path.join(state, "manifest.json")))
    kept1 = [(i, h) for i, h in first if expected1[i] is None]
    assert manifest["rows"] == len(kept1) and manifest["generation"] == 1

    fixed = [(i, h, "state") for i, h in kept1]
    reference = None
    if with_reference:  # references near some of run 1's keepers: a reference wins over the state
        ref_hashes = [_flip(h, rng.randint(0, 4), rng) for _, h in rng.sample(kept1, 40)]
        ref_hashes += [rng.getrandbits(256).to_bytes(32, "little") for _ in range(20)]
        fixed += [(f"ref{i:03d}", h, "reference") for i, h in enumerate(ref_hashes)]
        reference = [{"id": f"ref{i:03d}", "h": h.hex()} for i, h in enumerate(ref_hashes)]
        reference.append({"id": "ref-bad", "h": "not hex"})
    expected2 = oracle(second, k2, fixed)
    kinds = {v[0] for v in expected2.values() if v}
    assert {"input", "state"} <= kinds and (not with_reference or "reference" in kinds)
    assert any(v and v[0] == "state" and v[2] == k2 for v in expected2.values())
    records2 = [{"id": i, "h": h.hex()} for i, h in second]
    random.Random(2).shuffle(records2)
    p, outputs = run_pipeline(records2, k2, options, reference=reference, hash_column="h", state_dir=state, **extra)
    assert_that(tagged(outputs), check_against(expected2), label="Second")
    if with_reference:
        assert_that(outputs.reference_failed | beam.Map(lambda r: (r["id"], r["error"].split(":")[0])),
                    lambda rows: rows == [("ref-bad", "h")] or pytest.fail(str(rows)), label="BadReference")
    p.run().wait_until_finish()
    manifest = json.load(open(os.path.join(state, "manifest.json")))
    assert manifest["generation"] == 2
    assert manifest["rows"] == len(kept1) + sum(v is None for v in expected2.values())


def _photo_records():
    """Each test photo, a half-size re-encoded copy, and a byte copy; ids say which."""
    records = []
    for p in PHOTOS:
        data = p.read_bytes()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        buf = io.BytesIO()
        img.resize((img.width // 2, img.height // 2)).save(buf, "JPEG", quality=75)
        records += [{"id": p.stem, "image": data}, {"id": f"{p.stem}~half", "image": buf.getvalue()},
                    {"id": f"{p.stem}~copy", "image": data}]
    return records


@pytest.mark.parametrize("k", [0, 24])
def test_reference_images_exact_and_near(k):
    records = _photo_records()
    random.Random(k).shuffle(records)
    refs = [{"id": f"ref:{p.stem}", "image": p.read_bytes()} for p in PHOTOS[:4]]
    refs.append({"id": "ref:broken", "image": b"\xff\xd8 truncated"})
    hashes = {r["id"]: bytes(beam_phash.hash_image(r["image"])) for r in records}
    fixed = [(r["id"], bytes(beam_phash.hash_image(r["image"])), "reference") for r in refs[:-1]]
    if k:
        expected = oracle(list(hashes.items()), k, fixed)
    else:  # exact mode: equal hashes only; keepers are first-seen, so only the reference matches are pinned
        fw = {h: {l for l, fh, _ in fixed if fh == h} for _, h, _ in fixed}
        expected = {i: ("reference", fw[h], 0) for i, h in hashes.items() if h in fw}
    assert sum(1 for v in expected.values() if v and v[0] == "reference") >= 8
    if k:  # near mode: the references as one Arrow table, as ReadAllFromParquetBatched gives them
        import pyarrow as pa
        refs = [pa.table({"id": [r["id"] for r in refs], "image": [r["image"] for r in refs]})]
    p, outputs = run_pipeline(records, k, reference=refs, **({} if k else {"backend": "state"}))
    assert_that(tagged(outputs), check_against(expected))
    assert_that(outputs.reference_failed | beam.Map(lambda r: r["id"]),
                lambda ids: ids == ["ref:broken"] or pytest.fail(str(ids)), label="BadReference")
    p.run().wait_until_finish()


@pytest.mark.parametrize("ids", [[1.0, 2.5], [True, False], [b"r\xff", b"s"], [7, None]],
                         ids=["float", "bool", "binary", "int"])
@pytest.mark.parametrize("k", [0, 4])
def test_reference_ids_from_a_table_are_str_of_the_id_as_from_dicts(ids, k):
    """Arrow's cast to text writes 1.0 as "1" and True as "true", and fails on bytes that are not
    UTF-8; a reference id is str(id) whether the reference is a dict or a table row."""
    import pyarrow as pa
    photos = [p.read_bytes() for p in PHOTOS[:2]]
    records = [{"id": f"in{i}", "image": b} for i, b in enumerate(photos)]
    refs = [pa.table({"id": ids, "image": photos})]
    p, outputs = run_pipeline(records, k, reference=refs, **({} if k else {"backend": "state"}))
    want = sorted(("" if i is None else str(i)) for i in ids)
    assert_that(outputs.duplicates | beam.Map(lambda r: r["duplicate_of"] or ""),
                lambda got: sorted(got) == want or pytest.fail(f"{sorted(got)} != {want}"))
    p.run().wait_until_finish()


def test_reference_hashes_in_exact_mode():
    rng = random.Random(5)
    hashes = [rng.getrandbits(256).to_bytes(32, "little") for _ in range(60)]
    records = [{"id": f"r{i:03d}", "h": hashes[i % 40].hex()} for i in range(80)]
    reference = [{"id": f"z{i}", "h": hashes[i].hex()} for i in range(0, 40, 3)]
    reference += [{"id": f"a{i}", "h": hashes[i].hex()} for i in range(0, 40, 9)]  # same hash, smaller label
    refs = {}
    for r in reference:
        refs.setdefault(r["h"], set()).add(r["id"])
    expected = {r["id"]: ("reference", {min(refs[r["h"]])}, 0) for r in records if r["h"] in refs}

    def check(tagged_records):
        check_against(expected)(tagged_records)
        others = {}
        for tag, r in tagged_records:
            if r["id"] not in expected:
                others.setdefault(r["h"], []).append((tag, r.get("duplicate_of")))
        for h, rows in others.items():  # first seen wins among the rest: one kept per hash
            kept = [t for t, _ in rows if t == "kept"]
            assert len(kept) == 1, (h, rows)
    p, outputs = run_pipeline(records, 0, reference=reference, hash_column="h", backend="state")
    assert_that(tagged(outputs), check)
    p.run().wait_until_finish()


def test_dihedral_with_a_reference():
    records = []
    for p in PHOTOS[:5]:
        img = Image.open(p).convert("RGB")
        for name, t in (("flip", Image.Transpose.FLIP_LEFT_RIGHT), ("rot", Image.Transpose.ROTATE_90),
                        ("rot180", Image.Transpose.ROTATE_180)):
            buf = io.BytesIO()
            img.transpose(t).save(buf, "JPEG", quality=90)
            records.append({"id": f"{p.stem}~{name}", "image": buf.getvalue()})
    for p in PHOTOS[5:]:
        records.append({"id": p.stem, "image": p.read_bytes()})
    refs = [{"id": f"ref:{p.stem}", "image": p.read_bytes()} for p in PHOTOS[:5]]
    k = 28
    fixed = [(r["id"], beam_phash.hash_image(r["image"]), "reference") for r in refs]
    expected = {}
    mine = {r["id"]: beam_phash.hash_image(r["image"], dihedral=True) for r in records}
    for rid, h in mine.items():  # one-sided: the input's variants against the reference's hash
        d = {label: min(v - fh for v in h.variants) for label, fh, _ in fixed}
        best = min(d.values())
        if best <= k:
            expected[rid] = ("reference", {l for l, x in d.items() if x == best}, best)
    assert len(expected) >= 12, expected
    p, outputs = run_pipeline(records, k, reference=refs, dihedral=True)
    assert_that(tagged(outputs), check_against(expected))
    p.run().wait_until_finish()


def _manifest(state):
    return json.load(open(os.path.join(state, "manifest.json")))


def _run_against_state(state, records, earlier) -> int:
    """Run ``records`` (hash column ``h``) at k = 8 against ``state``, which holds ``earlier`` as
    s0, s1, ..., and check them against the oracle; returns how many the oracle keeps."""
    expected = oracle([(r["id"], bytes.fromhex(r["h"])) for r in records], 8,
                      [(f"s{i}", h, "state") for i, h in enumerate(earlier)])
    p, outputs = run_pipeline(records, 8, hash_column="h", state_dir=state)
    assert_that(tagged(outputs), check_against(expected))
    p.run().wait_until_finish()
    return sum(1 for v in expected.values() if v is None)


def _seed_state(state, hashes, labels, bits=256, algorithm="phash", hash_size=16):
    manifest = near_state.open_state(state, algorithm, hash_size, bits, create=True)
    keys = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), -1)
    entry = near_state.write_segment(state, "seed", 0, fixed_batch(keys, STATE, labels))
    near_state.commit(state, "seed", manifest["generation"], manifest, [entry])


def test_a_segment_from_before_the_flat_flags_is_read_as_before(tmp_path):
    """Segments written before the flat column (hashes and labels only, their digest over those)
    still pass their check and are matched at k; the next run's segment has the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beam_phash import state_manifest

    state = str(tmp_path / "state")
    rng = random.Random(5)
    hashes = [rng.getrandbits(256).to_bytes(32, "little") for _ in range(20)]
    manifest = near_state.open_state(state, "phash", 16, 256, create=True)
    keys = np.frombuffer(b"".join(hashes[:10]), dtype=np.uint8).reshape(10, 32)
    labels = pa.array([f"s{i}" for i in range(10)], pa.large_string())
    os.makedirs(os.path.join(state, "runs", "old"))
    pq.write_table(pa.table({"hash": pa.array(list(map(bytes, keys)), pa.binary(32)), "label": labels}),
                   os.path.join(state, "runs", "old", "part-00000.parquet"))
    entry = {"path": os.path.join("runs", "old", "part-00000.parquet"), "rows": 10,
             "digest": state_manifest.digest([keys.tobytes()], labels)}
    near_state.commit(state, "old", manifest["generation"], manifest, [entry])
    # copies 3 bits from each earlier hash, and 10 new hashes
    near = [int.from_bytes(h, "little") ^ 0b10101 for h in hashes[:10]]
    records = [{"id": f"r{i:02d}", "h": h.hex()} for i, h in
               enumerate([n.to_bytes(32, "little") for n in near] + hashes[10:])]
    assert _run_against_state(state, records, hashes[:10]) == 10
    newest = pq.read_table(os.path.join(state, _manifest(state)["segments"][-1]["path"]))
    assert newest.column_names == ["hash", "label", "flat"] and not any(newest.column("flat").to_pylist())


def test_a_run_that_dies_adds_nothing_and_damage_is_refused(tmp_path):
    state = str(tmp_path / "state")
    rng = random.Random(3)
    hashes = [rng.getrandbits(256).to_bytes(32, "little") for _ in range(30)]
    _seed_state(state, hashes[:10], [f"s{i}" for i in range(10)])
    manifest = _manifest(state)
    # A run that died after writing a segment, before its commit: never read, removed later.
    keys = np.frombuffer(b"".join(hashes[10:20]), dtype=np.uint8).reshape(10, 32)
    near_state.write_segment(state, "dead", 0, fixed_batch(keys, STATE, [f"d{i}" for i in range(10)]))
    records = [{"id": f"r{i:02d}", "h": h.hex()} for i, h in enumerate(hashes)]
    assert _run_against_state(state, records, hashes[:10]) == 20
    assert not os.path.exists(os.path.join(state, "runs", "dead"))
    assert _manifest(state)["rows"] == 30 and _manifest(state)["generation"] == manifest["generation"] + 1
    import pyarrow.parquet as pq
    seg_meta = pq.read_schema(os.path.join(state, _manifest(state)["segments"][-1]["path"])).metadata
    assert seg_meta[b"beam_phash.hash_version"] == str(beam_phash._native.HASH_VERSION).encode()
    # A commit on a stale generation is refused: another run committed meanwhile.
    with pytest.raises(near_state.StateError, match="changed while this run ran"):
        near_state.commit(state, "late", manifest["generation"], manifest, [])
    # A damaged segment fails the run instead of silently forgetting what it held.
    seg = os.path.join(state, _manifest(state)["segments"][0]["path"])
    with open(seg, "r+b") as f:
        f.truncate(os.path.getsize(seg) // 2)
    p, outputs = run_pipeline(records, 8, hash_column="h", state_dir=state)
    with pytest.raises(Exception, match="damaged"):
        p.run().wait_until_finish()


def _sink(outputs, folder):
    """Every output record of ``outputs`` as an empty file named by its id in ``folder``."""
    _ = tagged(outputs) | "Sink" >> beam.Map(lambda tr, d=str(folder): open(os.path.join(d, tr[1]["id"]), "w").close())


def test_one_built_pipeline_run_twice_is_refused_before_it_writes(tmp_path):
    """The run id and the state's generation are fixed when the pipeline is built: run again
    (a notebook, a template), its segments would overwrite the ones it committed, and the state
    it matched against is the old one. The second run fails before writing; the state stands."""
    state = str(tmp_path / "state")
    rng = random.Random(11)
    hashes = [rng.getrandbits(256).to_bytes(32, "little") for _ in range(50)]
    records = [{"id": f"r{i:02d}", "h": h.hex()} for i, h in enumerate(hashes)]
    p, _ = run_pipeline(records[:20], 8, hash_column="h", state_dir=state)
    p.run().wait_until_finish()
    committed = _manifest(state)
    files = {seg["path"]: open(os.path.join(state, seg["path"]), "rb").read() for seg in committed["segments"]}
    with pytest.raises(Exception, match="already ran and committed"):
        p.run().wait_until_finish()
    assert _manifest(state) == committed
    # Before it writes its outputs too: no record of a refused run reaches a sink.
    sink = tmp_path / "sink"
    sink.mkdir()
    p, outputs = run_pipeline(records[20:25], 8, hash_column="h", state_dir=state)
    _sink(outputs, sink)
    p.run().wait_until_finish()
    assert len(os.listdir(sink)) == 5
    for name in os.listdir(sink):
        os.remove(sink / name)
    with pytest.raises(Exception, match="already ran and committed"):
        p.run().wait_until_finish()
    assert os.listdir(sink) == []
    committed = _manifest(state)
    assert {path: open(os.path.join(state, path), "rb").read() for path in files} == files
    # Built again, the pipeline reads the state as it is now.
    expected = oracle([(r["id"], bytes.fromhex(r["h"])) for r in records[:40]], 8,
                      [(r["id"], bytes.fromhex(r["h"]), "state") for r in records[:25]])
    p, outputs = run_pipeline(records[:40], 8, hash_column="h", state_dir=state)
    assert_that(tagged(outputs), check_against(expected))
    p.run().wait_until_finish()
    assert _manifest(state)["rows"] == 40
    # A pipeline built before another run committed is refused before it writes, too.
    stale, outputs = run_pipeline(records[40:45], 8, hash_column="h", state_dir=state)
    _sink(outputs, sink)
    p, _ = run_pipeline(records[45:], 8, hash_column="h", state_dir=state)
    p.run().wait_until_finish()
    with pytest.raises(Exception, match="changed since this pipeline was built"):
        stale.run().wait_until_finish()
    assert _manifest(state)["rows"] == 45
    assert os.listdir(sink) == []
    # The same on a new state directory, which has no segments to read yet: the first run built
    # on it is refused before any record has its fate, whether run twice or built before another.
    fresh = str(tmp_path / "fresh")
    stale, outputs = run_pipeline(records[:5], 8, hash_column="h", state_dir=fresh)
    _sink(outputs, sink)
    p, _ = run_pipeline(records[:5], 8, hash_column="h", state_dir=fresh)
    p.run().wait_until_finish()
    with pytest.raises(Exception, match="changed since this pipeline was built"):
        stale.run().wait_until_finish()
    assert os.listdir(sink) == []
    again, outputs = run_pipeline(records[5:10], 8, hash_column="h", state_dir=str(tmp_path / "fresh2"))
    _sink(outputs, sink)
    again.run().wait_until_finish()
    for name in os.listdir(sink):
        os.remove(sink / name)
    with pytest.raises(Exception, match="already ran and committed"):
        again.run().wait_until_finish()
    assert os.listdir(sink) == []


def test_two_commits_at_once_cannot_both_land(tmp_path, monkeypatch):
    """The manifest is read, checked and replaced under a lock: a commit that read it while
    another was between its read and its write cannot also land (both did, one run's segments
    then gone from the manifest and its folder deleted by the other's cleanup)."""
    import threading

    state = str(tmp_path / "state")
    manifest = near_state.open_state(state, "phash", 16, 256, create=True)
    rng = random.Random(12)
    entries = {}
    for run in ("a", "b"):
        keys = np.frombuffer(b"".join(rng.getrandbits(256).to_bytes(32, "little") for _ in range(5)),
                             dtype=np.uint8).reshape(5, 32)
        entries[run] = near_state.write_segment(state, run, 0, fixed_batch(keys, STATE, [run + str(i) for i in range(5)]))
    real_read, first_read, go = near_state.state_manifest.read, threading.Event(), threading.Event()

    def slow_read(directory):
        out = real_read(directory)
        if threading.current_thread().name == "a":
            first_read.set()
            go.wait(5)
        return out

    monkeypatch.setattr(near_state.state_manifest, "read", slow_read)
    results = {}

    def run(name):
        try:
            results[name] = near_state.commit(state, name, manifest["generation"], manifest, [entries[name]])
        except near_state.StateError as e:
            results[name] = e

    a = threading.Thread(target=run, args=("a",), name="a")
    a.start()
    assert first_read.wait(5)
    b = threading.Thread(target=run, args=("b",), name="b")
    b.start()
    b.join(1.0)  # b waits for a's lock (before the fix, b landed meanwhile)
    go.set()
    a.join(10)
    b.join(10)
    assert results["a"] == manifest["generation"] + 1, results
    assert isinstance(results["b"], near_state.StateError), results
    landed = _manifest(state)
    assert [s["path"] for s in landed["segments"]] == [entries["a"]["path"]]
    assert os.path.exists(os.path.join(state, entries["a"]["path"]))
    assert not os.path.exists(os.path.join(state, near_state.COMMIT_LOCK))


def test_a_state_that_cannot_be_used_is_refused(tmp_path):
    near = str(tmp_path / "near")
    _seed_state(near, [bytes(32)], ["x"])
    with pytest.raises(ValueError, match="hash_size=16"):
        ImagePhashDedup(max_distance=4, hash_size=8, state_dir=near)
    with pytest.raises(ValueError, match="algorithm='phash'"):
        ImagePhashDedup(max_distance=4, algorithm="dhash", state_dir=near)
    with pytest.raises(ValueError, match="exact dedup"):
        ImagePhashDedup(state_dir=near)  # exact mode, Ray backend: another layout
    manifest = _manifest(near)
    manifest["hash_version"] = beam_phash._native.HASH_VERSION + 1
    json.dump(manifest, open(os.path.join(near, "manifest.json"), "w"))
    with pytest.raises(ValueError, match="hash_version"):
        ImagePhashDedup(max_distance=4, state_dir=near)
    exact = str(tmp_path / "exact")
    from beam_phash.exact.store import prepare_state_dir
    prepare_state_dir(exact, 16, "phash", 16)
    with pytest.raises(ValueError, match="near-duplicate"):
        ImagePhashDedup(max_distance=4, state_dir=exact)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        ImagePhashDedup(max_distance=4, state_dir=str(blocker / "state"))
    with pytest.raises(ValueError, match="reference must be a PCollection"):
        ImagePhashDedup(reference=["not", "a", "pcollection"])


def test_a_near_state_whose_manifest_is_lost_or_damaged_is_refused_and_kept(tmp_path):
    """Segments without their manifest (a partial copy, a deleted file): refused at construction,
    and nothing is deleted; a manifest that is not one, or lacks its segments, is named damaged
    instead of read as another mode's or failing inside the pipeline."""
    near = str(tmp_path / "near")
    _seed_state(near, [bytes(32)], ["x"])
    os.remove(os.path.join(near, "manifest.json"))
    with pytest.raises(ValueError, match="holds near-duplicate segments .* but no manifest.json"):
        ImagePhashDedup(max_distance=4, state_dir=near)
    with pytest.raises(ValueError, match="but no manifest.json"):
        run_pipeline([{"id": "a", "h": bytes(32).hex()}], 8, hash_column="h", state_dir=near)
    # nor is it taken by exact mode for a new directory (its buckets beside the orphaned segments)
    with pytest.raises(ValueError, match="holds near-duplicate segments .* but no manifest.json"):
        ImagePhashDedup(state_dir=near)
    assert os.listdir(os.path.join(near, "runs")) == ["seed"]
    from beam_phash.exact.store import prepare_state_dir
    exact = str(tmp_path / "exact")
    prepare_state_dir(exact, 4, "phash", 16)
    os.remove(os.path.join(exact, "manifest.json"))
    for mode in ({"num_buckets": 4}, {"max_distance": 4}):
        with pytest.raises(ValueError, match=r"holds exact-mode buckets \(bucket-\*/\) but no manifest.json"):
            ImagePhashDedup(state_dir=exact, **mode)
    for damaged in ({}, {"mode": "near", "algorithm": "phash", "hash_size": 16, "bits": 256,
                         "hash_version": beam_phash._native.HASH_VERSION, "generation": 1, "rows": 1}):
        json.dump(damaged, open(os.path.join(near, "manifest.json"), "w"))
        with pytest.raises(ValueError, match="is not a state manifest|is damaged"):
            ImagePhashDedup(max_distance=4, state_dir=near)
    # A new directory has its manifest before any run writes a segment.
    fresh = str(tmp_path / "fresh")
    run_pipeline([{"id": "a", "h": bytes(32).hex()}], 8, hash_column="h", state_dir=fresh)
    assert _manifest(fresh)["segments"] == [] and _manifest(fresh)["generation"] == 0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.dedup_images", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_cli_reference_and_state(tmp_path):
    sample = os.path.join(ROOT, "pipelines", "sample_data")
    refdir = tmp_path / "refs"
    refdir.mkdir()
    for name in ("skagen.jpg", "sunset.jpg", "not_an_image.jpg"):
        (refdir / name).write_bytes(open(os.path.join(sample, name), "rb").read())
    out = tmp_path / "out"
    r = _cli("--output", str(out), "--max-distance", "auto", "--reference", str(refdir),
             "--state", str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    summary = json.load(open(out / "summary.json"))
    ref = summary["reference"]
    # skagen, its byte copy, sunset and its PNG copy match; the broken reference is listed.
    assert (ref["references"], ref["matches"], ref["failed"]) == (2, 4, 1), ref
    assert ref["failures"][0]["id"].endswith("not_an_image.jpg") and ref["failures"][0]["error"]
    assert summary["adds_up"] and summary["inputs"] == 16
    page = open(out / "report.html").read()
    assert "inputs that matched the reference</td><td>4<" in page
    import pyarrow.parquet as pq
    dups = pq.read_table(out / "duplicates").to_pylist()
    assert sorted(d["matched"] for d in dups).count("reference") == 4
    # Run 2 with the same state, no reference: what run 1 kept matches the state; the images that
    # matched the reference were never kept, so one of each of their two groups is kept now.
    out2 = tmp_path / "out2"
    r = _cli("--output", str(out2), "--max-distance", "auto", "--state", str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    summary2 = json.load(open(out2 / "summary.json"))
    assert summary2["kept"] == 2 and summary2["state_matches"] == summary["kept"] + summary["duplicates"] - 4
    # Run 1's kept/ as a reference, exact mode with the Ray backend: its hash column is found and used.
    out3 = tmp_path / "out3"
    r = _cli("--output", str(out3), "--reference", str(out / "kept"))
    assert r.returncode == 0, r.stderr
    summary3 = json.load(open(out3 / "summary.json"))
    assert summary3["reference"]["hash_column"] == "image_phash"
    assert summary3["reference"]["references"] == summary["kept"]
    assert summary3["reference"]["matches"] >= summary["kept"] and summary3["adds_up"]


@pytest.mark.parametrize("args,message", [
    (["--reference", "/nonexistent/refs"], "--reference '/nonexistent/refs' matched no files"),
    (["--reference", "KEPT", "--reference-id-column", "nope"], "--reference-id-column 'nope' is not a column"),
    (["--reference", "KEPT", "--reference-hash-column", "nope"], "--reference-hash-column 'nope' is not a column"),
    (["--max-distance", "8", "--state", "FILE/state"], "is not writable"),
])
def test_cli_refuses_a_bad_reference_or_state(tmp_path, args, message):
    kept = tmp_path / "kept"
    kept.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": ["a"], "image_phash": ["00" * 32]}), kept / "part.parquet")
    (tmp_path / "file").write_text("x")
    args = [a.replace("KEPT", str(kept)).replace("FILE", str(tmp_path / "file")) for a in args]
    r = _cli("--output", str(tmp_path / "out"), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("beam-phash:")]
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_reference_tables_parse_hashes_in_bulk_and_report_bad_ones():
    import pyarrow as pa
    from beam_phash.hashing import HashConfig
    from beam_phash.reference import REFERENCE_FAILED, HashReferenceDoFn

    good = "0f" * 32
    table = pa.table({"id": ["a", "b", "c", None, "e"],
                      "h": [good, "zz" * 32, None, "ff" * 32, good[:10]]})
    step = HashReferenceDoFn(HashConfig(hash_column="h"))
    out = list(step.process([table]))
    failed = sorted((o.value["id"], o.value["error"]) for o in out if getattr(o, "tag", None) == REFERENCE_FAILED)
    assert [f[0] for f in failed] == ["b", "c", "e"]
    assert "not hex" in failed[0][1] and "missing hash" in failed[1][1] and "64 hex digits" in failed[2][1]
    batches = [o for o in out if not hasattr(o, "tag")]
    assert len(batches) == 1 and batches[0].labels.to_pylist() == ["a", ""]
    assert batches[0].keys.tobytes() == bytes.fromhex(good) + bytes.fromhex("ff" * 32)


def test_the_report_measures_a_state_match_to_the_earlier_image(tmp_path):
    """Run 2 holds copies of run 1's photos only (under other names): each matched the state at
    0 bits and has no copy in run 2. The report's histogram puts them at 0, not at the distance
    to an unrelated picture of this run."""
    from pipelines import dedup_images

    for run in ("a", "b"):
        os.makedirs(tmp_path / run)
        for i, photo in enumerate(PHOTOS[:3]):
            with open(photo, "rb") as src, open(tmp_path / run / f"{run}{i}.jpg", "wb") as dst:
                dst.write(src.read())
    for run in ("a", "b"):
        assert dedup_images.main(["--input", str(tmp_path / run), "--output", str(tmp_path / f"out-{run}"),
                                  "--max-distance", "8", "--state", str(tmp_path / "state")]) == 0
    stats = json.load(open(tmp_path / "out-b" / "report" / "distances.json"))
    assert stats["dropped"][0] == 3 and sum(stats["dropped"]) == 3 and sum(stats["kept"]) == 0


def test_the_report_shows_exact_mode_duplicates_of_an_earlier_run_as_its_groups(tmp_path):
    """A named Ray backend names the id an earlier pipeline kept and sets no ``matched`` (it
    does not tell the pipelines that used it apart): the report shows such a group with its keeper marked as
    kept before this run (its thumbnail read from its path), not "No duplicates found"."""
    from pipelines.report import CollectReportData, write_report

    earlier, copy, other = (str(tmp_path / n) for n in ("earlier.jpg", "copy.jpg", "other.jpg"))
    for path, photo in ((earlier, PHOTOS[0]), (copy, PHOTOS[0]), (other, PHOTOS[1])):
        with open(photo, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
    h = "ab" * 32
    kept = [{"id": other, "image_phash": "cd" * 32}]
    dups = [{"id": copy, "image_phash": h, "duplicate_of": earlier}]
    out = str(tmp_path / "out")
    with TestPipeline() as p:
        outputs = tuple(p | name >> beam.Create(rows, reshuffle=False)
                        for name, rows in (("Kept", kept), ("Dups", dups), ("Failed", [])))
        _ = outputs | CollectReportData(out, id_field="id", image_field="image", hash_field="image_phash",
                                        ids_are_paths=True)
    page = open(write_report(out, {"inputs": 2, "kept": 1, "duplicates": 1, "failed": 0})).read()
    groups = page[page.index("Largest duplicate groups (1 shown)"):page.index("<h2>Failures")]
    assert f"kept before this run: {earlier}" in groups and "KEPT BEFORE THIS RUN" in groups
    assert "distance 0<br>" in groups and groups.count("data:image/jpeg;base64,") == 2
    assert "No duplicates found" not in page


def test_a_run_whose_commit_is_refused_leaves_no_outputs(tmp_path, monkeypatch, capsys):
    """Near-duplicate mode writes its outputs before the state's commit: when the commit is
    refused (another run committed), those outputs were judged against an old state and must not
    stay looking like a result; the log stays."""
    from pipelines import dedup_images

    def refused(*args, **kwargs):
        raise near_state.StateError("state directory changed while this run ran (test)")

    monkeypatch.setattr(near_state, "commit", refused)
    out = tmp_path / "out"
    assert dedup_images.main(["--max-distance", "8", "--state", str(tmp_path / "state"), "--output", str(out),
                              "--no-report"]) == 1
    assert "changed while this run ran" in capsys.readouterr().err
    left = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert left and all(path.startswith("logs" + os.sep) for path in left), left


def test_a_retried_segment_write_writes_the_same_rows_whatever_their_order(tmp_path):
    """A retried bundle gets its rows in another order; whichever attempt renames its file last,
    the file must match the manifest entry the commit took from the other attempt."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(13)
    keys = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    keys[7] = keys[3]  # one hash under two labels
    labels = [f"id{i}" for i in range(50)]
    flat = rng.random(50) < 0.2
    entries, tables = [], []
    for attempt, order in enumerate([np.arange(50), rng.permutation(50)]):
        state = str(tmp_path / f"attempt{attempt}")
        entries.append(near_state.write_segment(state, "run", 0, fixed_batch(
            keys[order], STATE, [labels[i] for i in order], flat[order])))
        tables.append(pq.read_table(os.path.join(state, entries[-1]["path"])))
    assert entries[0] == entries[1]
    assert tables[0].equals(tables[1])
    assert sorted(tables[0].column("label").to_pylist()) == sorted(labels)


def test_a_state_of_many_runs_is_compacted_by_the_next_run(tmp_path, monkeypatch):
    """Every run adds up to one segment per exact partition, and every later run reads each one.
    A run that finds ``COMPACT_RUNS`` runs' worth writes the rows it read back with its own, one
    segment per partition, and its commit replaces the list: the ids and flat flags of earlier
    runs stay, their folders go, and later runs still drop what any earlier run kept."""
    import pyarrow.parquet as pq

    monkeypatch.setattr(near_state, "COMPACT_RUNS", 2)
    state = str(tmp_path / "state")
    rng = random.Random(21)
    hashes = [rng.getrandbits(256).to_bytes(32, "little") for _ in range(120)]
    # The seed: one flat image (matched at distance 0 only), and 9 others, in one segment.
    manifest = near_state.open_state(state, "phash", 16, 256, create=True)
    keys = np.frombuffer(b"".join(hashes[:10]), dtype=np.uint8).reshape(10, 32)
    flat = np.arange(10) == 0
    entry = near_state.write_segment(state, "seed", 0, fixed_batch(keys, STATE, [f"s{i}" for i in range(10)], flat))
    near_state.commit(state, "seed", manifest["generation"], manifest, [entry])
    earlier = [(f"s{i}", h, "state") for i, h in enumerate(hashes[:10])]
    flat_copy = _flip(hashes[0], 1, rng)  # 1 bit from the flat image: kept, not its duplicate
    compacted = []
    for run in range(4):
        lo = 10 + 25 * run
        fresh = hashes[lo:lo + 20]
        copies = [_flip(h, rng.choice([0, 3, 8]), rng) for _, h, _ in rng.sample(earlier[1:], 5)]
        records = [{"id": f"r{run}-{i:02d}", "h": h.hex()} for i, h in enumerate(fresh + copies)]
        if run == 0:
            records.append({"id": "r0-flat", "h": flat_copy.hex()})
        rng.shuffle(records)
        before = _manifest(state)
        compacting = len(before["segments"]) >= 2 * 2
        expected = oracle([(r["id"], bytes.fromhex(r["h"])) for r in records], 8,
                          [(label, h, "state") for label, h, _ in earlier if label != "s0"])
        if run == 0:
            assert expected["r0-flat"] is None
        if compacting:  # built on the state the compaction replaces: refused, not read as damage
            stale, _ = run_pipeline(records, 8, hash_column="h", state_dir=state, partitions=2)
        p, outputs = run_pipeline(records, 8, MULTI if run == 2 else (), hash_column="h", state_dir=state,
                                  partitions=2)
        assert_that(tagged(outputs), check_against(expected))
        p.run().wait_until_finish()
        if compacting:
            with pytest.raises(Exception, match="changed since this pipeline was built"):
                stale.run().wait_until_finish()
        kept = [(r["id"], bytes.fromhex(r["h"]), "state") for r in records if expected[r["id"]] is None]
        earlier += kept
        after = _manifest(state)
        assert after["rows"] == before["rows"] + len(kept)
        runs = {s["path"].split(os.sep)[1] for s in after["segments"]}
        assert set(os.listdir(os.path.join(state, "runs"))) == runs
        if compacting:
            compacted.append(run)
            assert len(runs) == 1 and len(after["segments"]) <= 2, after["segments"]
        else:
            assert runs > {s["path"].split(os.sep)[1] for s in before["segments"]}
    assert compacted == [2]
    tables = [pq.read_table(os.path.join(state, s["path"])) for s in _manifest(state)["segments"]]
    labels = [label for t in tables for label in t.column("label").to_pylist()]
    flags = [f for t in tables for f in t.column("flat").to_pylist()]
    assert sorted(labels) == sorted(label for label, _, _ in earlier)
    assert [label for label, f in zip(labels, flags) if f] == ["s0"]
