"""The report's distance figures (pipelines/report_distances.py): nearest-neighbour distances from
the banded search against brute force, the bounded sample, what `auto` would add, and the
histogram's range."""
import numpy as np
import pyarrow as pa
import pytest

from pipelines import report_distances as rd

BITS = 256


def _flip(row: np.ndarray, bits, rng) -> np.ndarray:
    out = row.copy()
    for b in rng.choice(BITS, size=bits, replace=False):
        out[b // 8] ^= 1 << (b % 8)
    return out


def _brute_nearest(hashes: np.ndarray, limit: int) -> np.ndarray:
    d = np.bitwise_count(hashes[:, None, :] ^ hashes[None, :, :]).sum(axis=2)
    np.fill_diagonal(d, BITS + 1)
    best = d.min(axis=1)
    return np.where(best > limit, limit + 1, best)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nearest_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(300, BITS // 8), dtype=np.uint8)
    copies = [_flip(base[i], int(rng.integers(0, 40)), rng) for i in rng.integers(0, 300, size=150)]
    exact = base[rng.integers(0, 300, size=20)]  # identical hashes: nearest at 0
    hashes = np.concatenate([base, np.stack(copies), exact])[rng.permutation(470)]
    per_row, distinct, inverse, (a, b, d) = rd.nearest(hashes, BITS, 32)
    assert (per_row == _brute_nearest(hashes, 32)).all()
    assert (distinct[inverse] == hashes).all()
    assert (np.bitwise_count(distinct[a] ^ distinct[b]).sum(axis=1) == d).all() and (d <= 32).all()


def _sample(n: int, seed: int, kept: bool = True) -> rd.Sample:
    rng = np.random.default_rng(seed)
    ids = [f"img-{seed}-{i}" for i in range(n)]
    return rd.Sample(rng.integers(0, 256, size=(n, 32), dtype=np.uint8), rd._id_order(ids),
                     np.full(n, kept), pa.array(ids, pa.large_string()), n + 1, 1,
                     np.full(n, rd.NOT_DROPPED if kept else 0, np.uint32))


def test_the_sample_is_the_smallest_keys_however_it_is_merged():
    parts = [_sample(700, s) for s in range(6)]
    fn = rd.SampleFn(1000, 32)
    one = fn.extract_output(fn.merge_accumulators([fn.add_input(fn.create_accumulator(), p) for p in parts]))
    acc = fn.create_accumulator()
    for p in reversed(parts):
        acc = fn.add_input(acc, p)
    other = fn.extract_output(acc)
    everything = rd._merge(parts)
    smallest = np.sort(everything.order)[:1000]
    for s in (one, other):
        assert len(s.order) == 1000 and (np.sort(s.order) == smallest).all()
        assert (s.seen, s.flat) == (6 * 701, 6)
        row = {i: h for i, h in zip(everything.ids.to_pylist(), everything.hashes)}
        assert all((row[i] == h).all() for i, h in zip(s.ids.to_pylist(), s.hashes))


def test_kept_images_near_each_other_and_what_auto_would_drop():
    rng = np.random.default_rng(7)
    a, b, c = rng.integers(0, 256, size=(3, 32), dtype=np.uint8)
    b1 = _flip(b, 5, rng)
    rows = [a, _flip(a, 3, rng), b, b1, _flip(b1, 6, rng), c, a]  # the last: a dropped exact copy
    kept = np.array([True] * 6 + [False])
    ids = [f"i{n}" for n in range(7)]
    dropped_at = np.where(kept, rd.NOT_DROPPED, 0).astype(np.uint32)
    sample = rd.Sample(np.stack(rows), rd._id_order(ids), kept, pa.array(ids, pa.large_string()), 7, 0, dropped_at)
    stats = rd.distance_stats(sample, BITS, 32, 16, 0)
    # a and its 3-bit copy; b, b1 and b1's copy (11 bits from b at most): 5 kept images, 3 to drop
    assert (stats["kept_near"], stats["would_drop"]) == (5, 3)
    assert stats["kept"][-1] == 1 and sum(stats["kept"]) == 6 and stats["dropped"][0] == 1
    assert stats["kept"][0] == 1  # a itself, whose exact copy was dropped
    assert [p["distance"] for p in stats["pairs"]][0] == 0 and stats["pairs"][-1]["distance"] > 32
    assert rd.hint(stats, caught=1).startswith("Exact hashes caught 1 duplicates. 5 kept images lie within 16 bits")
    assert rd.hint(stats, caught=3, dihedral=True).startswith(
        "Exact hashes (rotated and mirrored copies included) caught 3 duplicates.")
    assert rd.hint(stats).endswith("--max-distance auto would drop about 3 more.")


def test_a_duplicate_is_no_further_than_the_image_it_was_dropped_for():
    """A duplicate of an image outside the run (an earlier run's, with --state, or a reference)
    or outside the sample has no near neighbour in it: its distance is the one it was dropped at
    (0 in exact mode, whose records carry none), never that to an unrelated picture."""
    rng = np.random.default_rng(11)
    kept_rows = rng.integers(0, 256, size=(3, 32), dtype=np.uint8)
    outside = rng.integers(0, 256, size=(2, 32), dtype=np.uint8)  # copies of images not in the run
    hexes = [r.tobytes().hex() for r in (*kept_rows, *outside, _flip(kept_rows[0], 4, rng))]
    dups = [{"id": "d0", "image_phash": hexes[3]},  # exact mode: no distance
            {"id": "d1", "image_phash": hexes[4], "distance": 6, "matched": "state"},
            {"id": "d2", "image_phash": hexes[5], "distance": 4, "matched": "input"}]
    parts = []
    for records, kept in (([{"id": f"k{i}", "image_phash": h} for i, h in enumerate(hexes[:3])], True), (dups, False)):
        fn = rd.PackSampleDoFn("image_phash", "id", BITS, kept=kept)
        fn.start_bundle()
        for r in records:
            assert not list(fn.process(r))
        parts += [b.value for b in fn.finish_bundle()]
    stats = rd.distance_stats(rd._merge(parts), BITS, 32, 16, 0)
    assert stats["dropped"][0] == 1 and stats["dropped"][6] == 1 and stats["dropped"][4] == 1
    assert sum(stats["dropped"]) == 3 and stats["kept"][4] == 1 and stats["kept"][33] == 2


@pytest.mark.parametrize("algorithm, size, bits, k, expected", [
    ("phash", 16, 256, 0, (16, 32)),
    ("phash", 8, 64, 0, (4, 8)),
    ("phash", 16, 256, 40, (16, 40)),
    ("ahash", 16, 256, 0, (None, 32)),
    ("ahash", 16, 256, 10, (None, 20)),
])
def test_the_histogram_reaches_twice_the_auto_threshold(algorithm, size, bits, k, expected):
    assert rd.distance_range(algorithm, size, bits, k) == expected


def test_no_hashed_images_give_an_empty_section():
    stats = rd.distance_stats(rd.Sample.empty(32), BITS, 32, 16, 0)
    assert (stats["sampled"], sum(stats["kept"]), stats["pairs"], stats["kept_near"]) == (0, 0, [], 0)
    assert rd.section(stats, lambda m, c: "") == [
        "<h2 id='threshold'>Which threshold? Distance to the nearest other image</h2>",
        "<p>Fewer than two hashed images: no distances to show.</p>"]
    assert rd.hint(stats, caught=0) is None


def test_the_pipeline_step_samples_a_large_run_and_says_so(tmp_path):
    """CollectDistances on Beam: 40 records (4 flat ones left out), a sample of 12 of the 36; the
    example pairs' records get thumbnails; the section says it is a sample and how big."""
    import json

    import apache_beam as beam

    from conftest import DATA
    from pipelines.report import _Fields, _figure

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, size=(20, 32), dtype=np.uint8)
    hashes = np.concatenate([base, np.stack([_flip(h, 3, rng) for h in base])])
    photo = (DATA / "pool.jpg").read_bytes()
    records = [{"id": f"r{i}", "image": photo, "image_phash": h.tobytes().hex(), "image_quality": 5 if i < 4 else 50}
               for i, h in enumerate(hashes)]
    fields = _Fields("id", "image", "image_phash")
    with beam.Pipeline() as p:
        kept = p | "Kept" >> beam.Create(records[:30])
        dups = p | "Dups" >> beam.Create(records[30:])
        _ = (kept, dups) | rd.CollectDistances(str(tmp_path), hash_field="image_phash", id_field="id",
                                               algorithm="phash", hash_size=16, bits=BITS, max_distance=0,
                                               thumb_of=fields.thumb, sample_size=12)
    stats = json.loads((tmp_path / "report" / "distances.json").read_text())
    assert (stats["sampled"], stats["seen"], stats["flat"], stats["sample_size"]) == (12, 40, 4, 12)
    images = stats["images"]
    assert {i["id"] for i in images} == {x for pr in stats["pairs"] for x in (pr["a"], pr["b"])} != set()
    assert all(i["thumb"].startswith("data:image/jpeg;base64,") for i in images)
    page = "".join(rd.section(stats, _figure))
    assert "For a sample of 12 of the 36 hashed images (the 12 at most" in page
    assert "4 flat images (matched by identical hash only) left out" in page
    assert page.count("<img ") == 2 * len(stats["pairs"])
